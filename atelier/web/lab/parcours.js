// Le parcours: the workshop's path through Atelier, step by step. Theory first (four short screens), then module
// 1's exercises in this page, then module 2's graphs in the node editor. Every step has an instruction, a button
// that opens the right place with the right settings, and a check that says when it is done:
//   - theory: the learner says they have read it (and may open the view that shows it);
//   - module 1: the exercise or view ran to the end (exercises.js and inside.js send "atelier:ran");
//   - module 2: the newest graph the learner ran in the editor has the expected wires (GET /atelier/lab/parcours/check).
// Progress is kept in this browser (localStorage) and on the server (PUT /atelier/lab/parcours/progress, one record
// per learner in classroom mode), so that the instructor's page can show how far each learner is, and a learner
// who changes browser or comes back after a restart finds their steps. On start the two are merged (a step done in
// either is done). The server answers with `owner`, the learner's id, which names this browser's record: two
// learners who share a browser keep their own.

import { getJSON, putJSON } from "./api.js";
import { t } from "./i18n.js";
import * as inside from "./inside.js";
import { el, errorText } from "./ui.js";

const $ = (id) => document.getElementById(id);
const SERVER = "/atelier/lab/parcours/progress";
let store = "atelier.parcours";  // + "." + the learner's id in classroom mode (sync)

// kind: theory | lab (an exercise card or a look-inside view) | editor (a template, checked on the server)
const STEPS = [
  { id: "th-noise", part: "theory", view: "filmstrip" },
  { id: "th-latent", part: "theory", view: "latent" },
  { id: "th-clip", part: "theory", view: "text" },
  { id: "th-scheduler", part: "theory", view: "schedules" },
  { id: "m1-stability", part: "module1", card: "ex-stability" },
  { id: "m1-variability", part: "module1", card: "ex-variability" },
  { id: "m1-cfg", part: "module1", card: "ex-cfg" },
  { id: "m1-steps", part: "module1", card: "ex-steps" },
  { id: "m1-xy", part: "module1", card: "ex-xy", extra: true },
  { id: "m1-samplers", part: "module1", view: "convergence", ran: "view-convergence", extra: true },
  { id: "m2-rebuild", part: "module2", template: null, check: "txt2img" },
  { id: "m2-puzzle", part: "module2", template: "atelier_puzzle", check: "txt2img" },
  { id: "m2-img2img", part: "module2", template: "atelier_img2img", check: "img2img", extra: true },
];
const PARTS = ["theory", "module1", "module2"];

// An empty graph for "rebuild": the learner places the seven nodes themselves (double-click on the canvas).
const EMPTY_WORKFLOW = { last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [], config: {}, extra: {}, version: 0.4 };

function load() {
  try {
    return JSON.parse(localStorage.getItem(store)) || {};
  } catch {
    return {};
  }
}

let progress = {};  // {step id: {done: true} | {opened: ms}}, read on setup
let openEditor = null;
let selectTab = null;

/** Keep the progress here and on the server; the server's copy is the instructor's view, so a failure is said. */
function save() {
  localStorage.setItem(store, JSON.stringify(progress));
  putJSON(SERVER, { steps: progress }).then(
    () => { delete $("parcours-count").dataset.unsaved; },
    () => { $("parcours-count").dataset.unsaved = "true"; $("parcours-count").title = t("pc.unsaved"); });
}

/** Union of two progress records: a step done in either is done, the latest opening is kept. */
function merge(a, b) {
  const out = {};
  for (const id of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (!STEPS.some((s) => s.id === id)) continue;  // a step of an older parcours
    const done = Boolean(a[id]?.done || b[id]?.done);
    const opened = Math.max(a[id]?.opened || 0, b[id]?.opened || 0);
    out[id] = opened ? { done, opened } : { done };
  }
  return out;
}

/** Read the server's record (and this learner's browser record), merge them, and send back what the server lacks. */
async function sync() {
  let server;
  try {
    server = await getJSON(SERVER);
  } catch {
    progress = load();  // the server is away: this browser's record only
    return;
  }
  if (server.owner) store = `atelier.parcours.${server.owner}`;
  progress = merge(load(), server.steps);
  if (JSON.stringify(progress) !== JSON.stringify(server.steps)) save();
  else localStorage.setItem(store, JSON.stringify(progress));
}

function mark(id, done = true) {
  progress[id] = { ...progress[id], done };
  save();
  render();
}

/** Open the place of a step, with the panel back at the teaching defaults where the step runs something. */
async function open(step) {
  if (step.card) {
    $("reset").click();  // the teaching defaults, as the "defaults" button
    selectTab($("tab-exercises"));
    $(step.card).scrollIntoView({ block: "center" });
    $(step.card).classList.add("flash");
    setTimeout(() => $(step.card).classList.remove("flash"), 1500);
  } else if (step.view) {
    if (step.part !== "theory") $("reset").click();  // the teaching defaults, as the "defaults" button
    if (step.id === "m1-samplers") $("conv-steps").value = "40";  // enough steps to see one settle
    selectTab($("tab-inside"));
    inside.showView(step.view);
  } else {
    progress[step.id] = { ...progress[step.id], opened: Date.now() };
    save();
    const workflow = step.template ? await getJSON(`/templates/${step.template}.json`) : EMPTY_WORKFLOW;
    openEditor(workflow);
    render();
  }
}

/** Module 2: ask the server whether the newest graph run from the editor has the step's wires. */
async function check(step, status) {
  status.textContent = t("pc.checking");
  try {
    const since = progress[step.id]?.opened || 0;
    const r = await getJSON(`/atelier/lab/parcours/check?check=${step.check}&since=${since}`);
    if (r.done) {
      mark(step.id);
      return;
    }
    status.dataset.state = "missing";
    status.textContent = r.ran
      ? t("pc.missing", { wires: r.missing.map((w) => t(`pc.wire.${w}`)).join(" ; ") })
      : t("pc.not_ran");
  } catch (error) {
    status.textContent = errorText(error);
  }
}

function stepCard(step, number) {
  const done = Boolean(progress[step.id]?.done);
  const status = el("p.step-status", { dataset: { state: done ? "done" : "todo" } }, done ? t("pc.done") : "");
  const buttons = [el("button.primary", { type: "button", class: "open", onclick: () => open(step) }, t(`pc.open.${step.part}`))];
  if (step.part === "theory") {
    buttons.push(el("button", { type: "button", class: "read", onclick: () => mark(step.id, !done) }, t(done ? "pc.unread" : "pc.read")));
  } else if (step.check) {
    buttons.push(el("button", { type: "button", class: "check", onclick: () => check(step, status) }, t("pc.check")));
  }
  return el("article.step", { id: `pc-${step.id}`, dataset: { step: step.id, done: String(done) } },
    el("h4", {}, `${number}. ${t(`pc.${step.id}.title`)}`, step.extra ? el("small.extra", {}, ` · ${t("pc.extra")}`) : null),
    el("div.step-text", {}, t(`pc.${step.id}.text`).split("\n").map((line) => el("p", {}, line))),
    el("div.row.wrap", {}, buttons), status);
}

export function render() {
  const box = $("parcours-steps");
  if (!box) return;
  const done = STEPS.filter((s) => progress[s.id]?.done).length;
  $("parcours-progress").value = done;
  $("parcours-progress").max = STEPS.length;
  $("parcours-count").textContent = t("pc.count", { done, total: STEPS.length });
  let number = 0;
  box.replaceChildren(...PARTS.map((part) => el("section.part", { dataset: { part } },
    el("h3", {}, t(`pc.part.${part}`)),
    STEPS.filter((s) => s.part === part).map((s) => stepCard(s, ++number)))));
}

/** `openInEditor(workflow)` and `selectTab(tab)` come from lab.js, which owns the editor link and the tabs. */
export async function setup(hooks) {
  openEditor = hooks.openInEditor;
  selectTab = hooks.selectTab;
  document.addEventListener("atelier:ran", (event) => {
    const step = STEPS.find((s) => s.card === event.detail || s.ran === event.detail);
    if (step && !progress[step.id]?.done) mark(step.id);
  });
  // The editor runs in another tab: coming back to this one re-reads the progress another tab may have saved.
  window.addEventListener("storage", (event) => {
    if (event.key === store) {
      progress = load();
      render();
    }
  });
  $("parcours-reset").addEventListener("click", () => {
    progress = {};
    save();
    render();
  });
  await sync();
  render();
}
