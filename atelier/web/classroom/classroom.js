// The instructor's page: the class's wall, the queue, an exercise for everyone and its results side by side.
// Everything comes from GET /atelier/classroom/state (atelier/server/instructor.py), read again every few seconds
// and whenever the queue changes (the socket's `status` messages); the buttons post to the routes beside it.
// The words live in i18n/<lang>.json, read by the lab's own i18n module.

import { apply, formatNumber, language, preferredLanguage, setLanguage, t, has } from "/lab/i18n.js";

const API = "/atelier/classroom";
const POLL_MS = 3000;
const VARIED = ["", "cfg", "steps", "seed", "sampler", "scheduler"];  // "": vary nothing
const $ = (id) => document.getElementById(id);

let latest = null;  // the last state the server sent
let shown = "";  // its JSON, to redraw only what changed
const confirming = new Set();  // learner ids whose Remove button was clicked once

// ---- small helpers ----

/** el("p.note", {title: "x"}, "text", child...) -> <p class="note" title="x">text child</p> */
function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function viewUrl(ref) {
  const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder || "", type: ref.type || "output" });
  return `/api/view?${q}`;
}

function showMessage(text, kind = "error") {
  $("message-text").textContent = text;
  $("message").dataset.kind = kind;
  $("message").hidden = false;
}

/** The sentence of a failed request: the page's own string for its key, else the server's English. */
async function failure(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (body.message_key && has(`server.${body.message_key}`)) {
      const params = { ...body.params };
      if (params.field) params.field = t(`field.${params.field}`);
      return t(`server.${body.message_key}`, params);
    }
    if (typeof body.error === "string") return t("err.prefix", { message: body.error });
  } catch { /* plain text */ }
  return t("err.prefix", { message: text || resp.statusText });
}

async function send(method, path, body = undefined) {
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new Error(t("err.offline"));
  }
  if (!resp.ok) throw new Error(await failure(resp));
  return resp.json();
}

/** "seed 42 · CFG 7 · 20 steps · euler" from what is known of an image's parameters. */
function paramsLine(p) {
  const parts = [];
  if (p.seed !== undefined) parts.push(`${t("field.seed")} ${p.seed}`);
  if (p.cfg !== undefined) parts.push(`CFG ${formatNumber(p.cfg)}`);
  if (p.steps !== undefined) parts.push(t("wall.steps", { n: p.steps }));
  if (p.sampler) parts.push(p.sampler);
  if (p.scheduler) parts.push(p.scheduler);
  return parts.join(" · ");
}

function valueLabel(param, value) {
  if (param === "cfg") return `CFG ${formatNumber(value)}`;
  return `${t(`field.${param}`)} ${typeof value === "number" ? formatNumber(value) : value}`;
}

// ---- drawing the state ----

function drawJoin(state) {
  $("join-url").textContent = state.join_url;
  $("join-url").href = state.join_url;
  $("join-code").textContent = state.join_code;
}

function drawQueue(queue) {
  $("pause").textContent = t(queue.paused ? "queue.resume" : "queue.pause");
  $("pause").dataset.paused = String(queue.paused);
  $("pause").disabled = !queue.can_pause;
  $("pause-unavailable").hidden = queue.can_pause;
  $("paused").hidden = !queue.paused;
  const entries = [...queue.running, ...queue.waiting];
  $("queue-empty").hidden = entries.length > 0;
  $("queue-list").replaceChildren(...entries.map((entry) => {
    const what = entry.params.prompt !== undefined ? `“${entry.params.prompt}” · ${paramsLine(entry.params)}`
      : t(`queue.from_${entry.source}`);
    const status = entry.running ? t("queue.running")
      : entry.starts_in != null ? t("queue.starts_in", { s: Math.max(1, Math.round(entry.starts_in)) }) : t("queue.waiting");
    const images = entry.images > 1 ? ` · ${t("queue.images", { n: entry.images })}` : "";
    return el("li", { dataset: { running: String(entry.running), promptId: entry.prompt_id } },
      el("strong", {}, entry.name), ` — ${what}${images} `, el("em", {}, `(${status})`));
  }));
}

// Who runs the batches: each Ray worker (device, models it holds, busy or idle, images made), or this server alone.
function drawWorkers(workers) {
  $("workers-list").replaceChildren(...(workers || []).map((w) => {
    const state = w.loading ? t("workers.loading", { model: w.loading }) : t(w.busy ? "workers.busy" : "workers.idle");
    const pid = w.pid ? ` · pid ${w.pid}` : "";
    return el("tr", { dataset: { busy: String(w.busy), worker: String(w.worker) } },
      el("td", {}, `#${w.worker}${pid}`), el("td", {}, w.device),
      el("td", {}, w.loaded.length ? w.loaded.join(", ") : t("workers.none")),
      el("td", {}, state), el("td", {}, String(w.images_done)));
  }));
}

function learnerCard(learner) {
  const latestImage = learner.latest;
  const remove = el("button.small.danger", {
    type: "button",
    dataset: { learner: learner.id },
    onclick: () => removeLearner(learner),
  }, t(confirming.has(learner.id) ? "wall.confirm_remove" : "wall.remove"));
  const picture = latestImage
    ? el("img", { src: viewUrl(latestImage.image), alt: latestImage.params.prompt || learner.name, loading: "lazy" })
    : el("div.empty", {}, t("wall.no_image"));
  const lines = latestImage ? [
    latestImage.params.prompt !== undefined ? el("p.params", {}, `“${latestImage.params.prompt}”`) : null,
    el("p.params", {}, paramsLine(latestImage.params) || t("wall.editor_graph")),
  ] : [];
  const queued = learner.queued ? el("p.params", {}, t("wall.queued", { n: learner.queued })) : null;
  return el("article.learner", { dataset: { learner: learner.id, name: learner.name } },
    el("h3", {}, el("span", {}, learner.name), remove), picture, lines, queued);
}

function drawWall(state) {
  $("wall-count").textContent = `(${state.learners.length})`;
  $("wall-empty").hidden = state.learners.length > 0;
  $("wall").replaceChildren(...state.learners.map(learnerCard));
  $("removed").hidden = !state.removed.length;
  $("removed").textContent = t("wall.removed", { names: state.removed.map((r) => r.name).join(", ") });
}

/** Le parcours: one row per learner, steps done out of all and the step they are on (the first not done). */
function drawParcours(state) {
  const head = el("tr", {}, ["parcours.learner", "parcours.done", "parcours.current"].map((k) => el("th", { scope: "col" }, t(k))));
  const rows = state.learners.map(({ name, parcours: p }) => el("tr", { dataset: { name, done: String(p.done) } },
    el("th", { scope: "row" }, name),
    el("td", {}, el("progress", { max: p.total, value: p.done }), " ", el("span.count", {}, t("parcours.count", p))),
    el("td.current", { dataset: { step: p.current || "" } }, p.current ? t(`step.${p.current}`) : t("parcours.finished"))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 3 }, t("parcours.none"))));
  $("parcours").replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

function drawResults(state) {
  const exercise = state.exercise;
  $("results-section").hidden = !exercise;
  if (!exercise) return;
  $("results-name").textContent = exercise.title ? `· ${exercise.title}` : "";
  $("results-summary").textContent = exerciseSummary(exercise);
  const columns = exercise.vary ? exercise.values.map((v) => valueLabel(exercise.vary, v)) : [t("results.image")];
  const head = el("tr", {}, el("th", {}, t("results.learner")), columns.map((c) => el("th", { scope: "col" }, c)));
  const rows = state.results.map((row) => el("tr", { dataset: { name: row.name } }, el("th", { scope: "row" }, row.name),
    row.cells.map((cell, i) => el("td", {}, cell
      ? el("figure", { dataset: { value: String(exercise.values[i] ?? "") } },
        el("img", { src: viewUrl(cell.image), alt: `${row.name} · ${columns[i]}` }))
      : el("div.missing", {}, "…")))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: columns.length + 1 }, t("results.none"))));
  $("results").replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

function exerciseSummary(exercise) {
  const fixed = Object.entries(exercise.settings).map(([k, v]) => `${t(`field.${k}`)} ${typeof v === "number" ? formatNumber(v) : `“${v}”`}`);
  if (exercise.vary) fixed.push(`${t(`field.${exercise.vary}`)} ${exercise.values.map((v) => typeof v === "number" ? formatNumber(v) : v).join(" / ")}`);
  return t("results.summary", { settings: fixed.join(", ") });
}

function draw(state) {
  latest = state;
  drawJoin(state);
  drawQueue(state.queue);
  drawWorkers(state.workers);
  $("add-worker").hidden = !state.can_add_worker;
  drawWall(state);
  drawParcours(state);
  drawResults(state);
  document.body.dataset.learners = String(state.learners.length);
}

async function refresh() {
  try {
    const resp = await fetch(`${API}/state`);
    if (!resp.ok) throw new Error(await failure(resp));
    const text = await resp.text();
    if (text !== shown) {
      shown = text;
      draw(JSON.parse(text));
    }
  } catch (error) {
    showMessage(error.message);
  }
}

// ---- actions ----

async function togglePause() {
  const paused = latest?.queue.paused;
  try {
    await send("POST", `${API}/${paused ? "resume" : "pause"}`);
  } catch (error) {
    showMessage(error.message);
  }
  await refresh();
}

async function addWorker() {
  $("add-worker").disabled = true;  // starting an actor takes a few seconds
  try {
    await send("POST", `${API}/workers`);
  } catch (error) {
    showMessage(error.message);
  }
  $("add-worker").disabled = false;
  await refresh();
}

async function removeLearner(learner) {
  if (!confirming.has(learner.id)) {  // a first click asks, a second one removes (no blocking dialog)
    confirming.add(learner.id);
    if (latest) drawWall(latest);
    return;
  }
  confirming.delete(learner.id);
  try {
    const result = await send("POST", `${API}/remove`, { learner: learner.id });
    showMessage(t("wall.removed_one", { name: learner.name, n: result.cancelled.length + result.interrupted.length }), "info");
  } catch (error) {
    showMessage(error.message);
  }
  await refresh();
}

/** The exercise the form describes: only the fields filled in are fixed; "Vary" takes a list of values. */
function readExercise() {
  const settings = {};
  const prompt = $("ex-prompt").value.trim();
  if (prompt) settings.prompt = prompt;
  for (const name of ["seed", "steps", "cfg"]) {
    const raw = $(`ex-${name}`).value.trim();
    if (raw === "") continue;
    const value = Number(raw);
    if (!Number.isFinite(value)) throw new Error(t("err.not_number", { field: t(`field.${name}`), value: raw }));
    settings[name] = value;
  }
  for (const name of ["sampler", "scheduler"]) if ($(`ex-${name}`).value) settings[name] = $(`ex-${name}`).value;
  const exercise = { title: $("ex-title").value.trim(), settings };
  const vary = $("ex-vary").value;
  if (vary) {
    const texts = $("ex-values").value.split(/[,/;]/).map((s) => s.trim()).filter(Boolean);
    const numeric = ["cfg", "steps", "seed"].includes(vary);
    const values = texts.map((text) => {
      if (!numeric) return text;
      const value = Number(text.replace(",", "."));
      if (!Number.isFinite(value)) throw new Error(t("err.not_number", { field: t(`field.${vary}`), value: text }));
      return value;
    });
    if (!values.length) throw new Error(t("err.no_values"));
    delete settings[vary];  // the varied parameter takes each value in turn
    exercise.vary = { param: vary, values };
  }
  return exercise;
}

async function pushExercise(event) {
  event.preventDefault();
  try {
    const exercise = await send("POST", `${API}/exercise`, readExercise());
    showMessage(t("ex.sent", { summary: exerciseSummary(exercise) }), "info");
  } catch (error) {
    showMessage(error.message);
  }
  await refresh();
}

async function clearExercise() {
  try {
    await send("DELETE", `${API}/exercise`);
  } catch (error) {
    showMessage(error.message);
  }
  await refresh();
}

// ---- the socket: a refresh as soon as the queue changes ----

function listen() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.addEventListener("message", (event) => {
    if (typeof event.data === "string" && JSON.parse(event.data).type === "status") refresh();
  });
  socket.addEventListener("close", () => setTimeout(listen, 2000));
}

// ---- start ----

async function fillChoices() {
  const keep = (select, values) => select.replaceChildren(new Option(t("ex.keep"), ""), ...values.map((v) => new Option(v, v)));
  try {
    const options = await send("GET", "/atelier/lab/options");
    keep($("ex-sampler"), options.samplers);
    keep($("ex-scheduler"), options.schedulers);
  } catch (error) {
    showMessage(error.message);
  }
  $("ex-sampler").options[0].dataset.i18n = "ex.keep";
  $("ex-scheduler").options[0].dataset.i18n = "ex.keep";
  $("ex-vary").replaceChildren(...VARIED.map((v) => {
    const option = new Option(v, v);
    option.dataset.i18n = v ? `field.${v}` : "ex.vary_none";
    return option;
  }));
  $("ex-vary").value = "cfg";
  $("ex-values").value = "1, 7, 30";
}

async function main() {
  await setLanguage(preferredLanguage());
  $("lang").textContent = language() === "fr" ? "EN" : "FR";
  $("lang").addEventListener("click", async () => {
    await setLanguage(language() === "fr" ? "en" : "fr");
    $("lang").textContent = language() === "fr" ? "EN" : "FR";
    if (latest) draw(latest);
  });
  $("message-close").addEventListener("click", () => { $("message").hidden = true; });
  $("pause").addEventListener("click", togglePause);
  $("add-worker").addEventListener("click", addWorker);
  $("exercise-form").addEventListener("submit", pushExercise);
  $("ex-clear").addEventListener("click", clearExercise);
  await fillChoices();
  apply(document);
  await refresh();
  setInterval(refresh, POLL_MS);
  listen();
  document.body.dataset.ready = "true";  // for tests: the first state is drawn and the handlers attached
}

main();
