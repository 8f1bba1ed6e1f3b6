// "Look inside": eight views of what happens between the prompt and the picture. Each uses the parameters of
// the panel; the ones that sample run a graph of teaching nodes (atelier/graph/teaching.py) through the queue.

import { getJSON, historyEntry, postJSON, uploadImage, viewUrl } from "./api.js";
import * as form from "./form.js";
import { formatNumber, t } from "./i18n.js";
import { lineChart, scatter } from "./plot.js";
import { runView } from "./runner.js";
import { busy, el, errorText, figure, hideMessage, images, output, showMessage } from "./ui.js";

const $ = (id) => document.getElementById(id);
const STOP_WORDS = new Set(("a an the of on in at to and with is there image picture drawing " +
  "un une le la les l de du des d sur sous à au aux et avec il y a image dessin").split(" "));
const TEACHING_NODES = ["AtelierFilmStripSampler", "AtelierLatentChannels", "AtelierCrossAttentionMap",
  "SaveAnimatedWEBP", "PreviewAny"];
let nodeTypes = new Set();
let shownView = "filmstrip";

function needsTeaching(out) {
  const missing = TEACHING_NODES.filter((n) => !nodeTypes.has(n));
  if (missing.length) throw new Error(t("err.no_teaching", { nodes: missing.join(", ") }));
  void out;
}

/** The panel's parameters for a look-inside run: one image (the teaching nodes film the first of a batch). */
function viewParams() {
  const params = form.read();
  params.seed = form.drawSeed(params);
  form.state.lastSeed = params.seed;
  return { ...params, batch: 1 };
}

async function sigmasFor(params) {
  const q = new URLSearchParams({ steps: params.steps, scheduler: params.scheduler, denoise: params.denoise });
  return (await getJSON(`/atelier/lab/schedules?${q}`)).schedulers[params.scheduler];
}

function download(ref, label) {
  return el("a.button.small", { href: viewUrl(ref), download: ref.filename }, label);
}

// ---- Film strip ----

async function filmstrip(out) {
  needsTeaching(out);
  const params = viewParams();
  const result = await runView(params, { view: "filmstrip", init: form.initImage(), label: t("in.filmstrip.title") });
  const sigmas = await sigmasFor(params);
  const noisy = images(result, "noisy_frames"), predicted = images(result, "predicted_frames");
  const [noisyAnim] = images(result, "noisy_animation"), [predAnim] = images(result, "predicted_animation");
  const row = (frames, key) => el("div.filmrow", {},
    el("h4", {}, t(key)),
    el("div.strip.film", { dataset: { frames: frames.length } }, frames.map((ref, i) =>
      figure(ref, t("in.filmstrip.frame", { n: i + 1, sigma: sigmas[i] === undefined ? "?" : formatNumber(sigmas[i], 3) })))));
  out.replaceChildren(
    row(noisy, "in.filmstrip.noisy"), row(predicted, "in.filmstrip.predicted"),
    el("div.anims", {},
      el("figure.fig.anim", {}, el("img", { src: viewUrl(noisyAnim), alt: t("in.filmstrip.noisy") }),
        el("figcaption", {}, t("in.filmstrip.noisy"), " ", download(noisyAnim, t("in.download_webp")))),
      el("figure.fig.anim", {}, el("img", { src: viewUrl(predAnim), alt: t("in.filmstrip.predicted") }),
        el("figcaption", {}, t("in.filmstrip.predicted"), " ", download(predAnim, t("in.download_webp"))))),
    el("p.help", {}, t("in.filmstrip.after", { steps: params.steps, sampler: params.sampler, seed: params.seed })));
}

// ---- Sampler convergence: Euler vs Euler a, frame by frame in step ----

/** The frames (URLs) as RGBA pixel arrays, all of the first frame's size. */
async function pixelsOf(urls) {
  const frames = await Promise.all(urls.map((src) => new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = reject;
    img.src = src;
  })));
  const canvas = document.createElement("canvas");
  canvas.width = frames[0].naturalWidth;
  canvas.height = frames[0].naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const pixels = frames.map((img) => {
    ctx.drawImage(img, 0, 0);
    return ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  });
  return { pixels, width: canvas.width, height: canvas.height };
}

/** Mean absolute difference (0-255) of the colour channels of two RGBA arrays. */
function meanChange(a, b) {
  let sum = 0;
  for (let k = 0; k < a.length; k += 4) {
    sum += Math.abs(a[k] - b[k]) + Math.abs(a[k + 1] - b[k + 1]) + Math.abs(a[k + 2] - b[k + 2]);
  }
  return sum / ((a.length / 4) * 3);
}

/** Mean absolute change between consecutive frames: [NaN, |f1 - f0|, |f2 - f1|, ...]. */
function changes(pixels) {
  return [NaN, ...pixels.slice(1).map((p, i) => meanChange(p, pixels[i]))];
}

// Changes below this (in 0-255 levels) are drawn at it: a log axis has no 0, and 8-bit frames cannot tell less.
const CHANGE_FLOOR = 0.01;
const MOVED_GAIN = 20;  // how much "what moved" amplifies the difference so that a change of a few levels shows

/**
 * "What moved": for every pixel, the change summed over the steps from `from` to the last (the path it travelled),
 * x MOVED_GAIN, as a picture (black = nothing moved). The change of a settled sampler is a hundredth of a level per
 * step, invisible in the frames themselves; summed and amplified, Euler's picture stays dark while Euler a's lights
 * up where its fresh noise keeps redrawing the picture.
 */
function movedPicture({ pixels, width, height }, from) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(width, height);
  const path = new Float32Array(width * height * 3);
  for (let i = from + 1; i < pixels.length; i++) {
    const a = pixels[i - 1], b = pixels[i];
    for (let k = 0, j = 0; k < a.length; k += 4, j += 3) {
      for (let c = 0; c < 3; c++) path[j + c] += Math.abs(b[k + c] - a[k + c]);
    }
  }
  for (let k = 0, j = 0; k < out.data.length; k += 4, j += 3) {
    for (let c = 0; c < 3; c++) out.data[k + c] = Math.min(255, path[j + c] * MOVED_GAIN);
    out.data[k + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  return canvas;
}

let player = null;

async function convergence(out) {
  needsTeaching(out);
  const steps = Number($("conv-steps").value);
  if (!Number.isInteger(steps) || steps < 2 || steps > 200) throw new Error(t("err.integer", { field: t("form.steps"), lo: 2, hi: 200 }));
  const params = { ...viewParams(), steps };
  const result = await runView(params, { view: "convergence", init: form.initImage(), label: t("in.convergence.title") });
  const runs = ["euler", "euler_ancestral"].map((name) => ({
    name, frames: images(result, `${name}/predicted_frames`).map(viewUrl),
    anim: images(result, `${name}/predicted_animation`)[0],
  }));
  const n = Math.min(...runs.map((r) => r.frames.length));
  const slider = el("input", { type: "range", min: 1, max: n, value: n, "aria-label": t("in.convergence.frame") });
  const label = el("output", {});
  const pictures = runs.map((r) => el("img", { src: r.frames[n - 1], alt: r.name }));
  const show = (i) => {
    slider.value = i;
    label.textContent = t("in.convergence.step", { n: i, total: n });
    runs.forEach((r, k) => { pictures[k].src = r.frames[i - 1]; });
  };
  const play = el("button", { type: "button" }, t("in.convergence.play"));
  if (player) clearInterval(player);
  player = null;
  play.addEventListener("click", () => {
    if (player) {
      clearInterval(player);
      player = null;
      play.textContent = t("in.convergence.play");
      return;
    }
    play.textContent = t("in.convergence.pause");
    let i = Number(slider.value) >= n ? 0 : Number(slider.value);
    player = setInterval(() => { i = (i % n) + 1; show(i); }, 160);
  });
  slider.addEventListener("input", () => show(Number(slider.value)));
  out.replaceChildren(
    el("div.pair", {}, runs.map((r, k) => el("figure.fig.big", { dataset: { sampler: r.name } }, pictures[k],
      el("figcaption", {}, t(`in.convergence.${r.name}`), " ", download(r.anim, t("in.download_webp")))))),
    el("div.row.player", {}, play, slider, label));
  show(n);
  const frames = await Promise.all(runs.map((r) => pixelsOf(r.frames)));
  const curves = frames.map((f) => changes(f.pixels));
  const colours = ["#1a5fb4", "#b3391b"];
  // The second half of the steps: Euler's guesses have settled there (a hundredth of a level per step), while
  // Euler a adds fresh noise at every step (sigma_up, Karras et al. 2022 eq. 5 of the ancestral step) and its
  // guesses keep moving. Both are drawn on a log axis: on a linear one the first steps' big changes hide the rest.
  const half = Math.floor(n / 2);
  const tail = (values) => values.slice(half + 1).reduce((a, b) => a + b, 0) / Math.max(1, values.length - half - 1);
  const [eulerTail, ancestralTail] = curves.map(tail);
  const ratio = ancestralTail / Math.max(eulerTail, CHANGE_FLOOR);
  const moved = frames.map((f, k) => el("figure.fig.moved", { dataset: { sampler: runs[k].name } },
    movedPicture(f, half - 1), el("figcaption", {}, t("in.convergence.moved_caption", {
      name: t(`in.convergence.${runs[k].name}`), from: half, to: n, gain: MOVED_GAIN }))));
  out.append(
    lineChart(runs.map((r, k) => ({ name: t(`in.convergence.${r.name}`),
      values: curves[k].map((v) => (Number.isFinite(v) ? Math.max(v, CHANGE_FLOOR) : v)), color: colours[k] })),
    { height: 240, log: true, xLabel: t("in.step"), yLabel: t("in.convergence.change"), title: t("in.convergence.change") }),
    el("h4", {}, t("in.convergence.moved_title")),
    el("div.moved-pair.moved", {}, moved),  // not a .pair: that holds the two players
    el("p.verdict", { dataset: { ratio: ratio.toFixed(2), euler: eulerTail.toFixed(4), ancestral: ancestralTail.toFixed(4) } },
      t("in.convergence.after", {
        from: half + 1, to: n, euler: formatNumber(eulerTail, 3), ancestral: formatNumber(ancestralTail, 3),
        ratio: formatNumber(ratio, 1), seed: params.seed,
      })));
}

// ---- Latent space ----

async function latent(out) {
  needsTeaching(out);
  const params = viewParams();
  const result = await runView(params, { view: "latent", init: form.initImage(), label: t("in.latent.title") });
  const [image] = images(result, "image");
  const channels = images(result, "channels");
  const stats = statsText(output(result, "channel_stats").text?.[0] || "");
  out.replaceChildren(
    el("div.strip", {}, figure(image, t("in.latent.image", { w: params.width, h: params.height })),
      channels.map((ref, i) => figure(ref, t("in.latent.channel", { n: i, w: params.width / 8, h: params.height / 8 }),
        { class: "fig channel" }))),
    el("pre.stats", {}, stats),
    el("p.help", {}, t("in.latent.after", { n: formatNumber((params.width * params.height * 3) / ((params.width / 8) * (params.height / 8) * 4)) })));
}

/**
 * The Latent Channels node's statistics (graph/teaching.py AtelierLatentChannels: English lines for the node editor,
 * "latent (4, 16, 16) ..." then "channel c: mean +m  std s  min +a  max +b") in the page's language and number style.
 * Text of any other shape is shown as it came.
 */
function statsText(text) {
  const [head, ...lines] = text.split("\n");
  const shape = /^latent (\([\d, ]+\))/.exec(head || "");
  const number = String.raw`([+-]?[\d.]+)`;
  const line = new RegExp(String.raw`^channel (\d+): mean ${number}\s+std ${number}\s+min ${number}\s+max ${number}$`);
  const rows = lines.map((l) => line.exec(l.trim()));
  if (!shape || rows.some((r) => !r)) return text;
  const signed = (v) => formatNumber(Number(v), 3, true), plain = (v) => formatNumber(Number(v), 3);
  return [t("in.latent.stats_head", { shape: shape[1] }), ...rows.map(([, n, mean, std, min, max]) =>
    t("in.latent.stats_line", { n, mean: signed(mean), std: plain(std), min: signed(min), max: signed(max) }))].join("\n");
}

// ---- VAE round trip ----

// Below this PSNR the reconstruction has visibly lost the picture: images of the embedded model's world come back
// at 30-39 dB (world/dataset.py render_item, seed 0, items 0-3), a photo or a noise picture near 10 dB.
const VAE_OUTSIDE_DB = 20;

async function vaeRoundtrip(out) {
  const file = $("vae-file").files[0];
  if (!file) return;
  out.replaceChildren(el("p.placeholder", {}, t("in.working")));
  const ref = await uploadImage(file);
  const r = await postJSON("/atelier/lab/vae-roundtrip", { image: ref });
  const [c, h, w] = r.image_shape, [lc, lh, lw] = r.latent_shape;
  out.replaceChildren(
    el("div.strip", {}, figure(r.original, t("in.vae.original", { w, h })),
      figure(r.reconstruction, t("in.vae.reconstruction")),
      r.channels.map((ref, i) => figure(ref, t("in.latent.channel", { n: i, w: lw, h: lh }), { class: "fig channel" }))),
    el("p.figures", { dataset: { ratio: String(r.ratio_values) } }, t("in.vae.ratio", {
      c, h, w, pixels: formatNumber(r.pixel_values), lc, lh, lw, latents: formatNumber(r.latent_values),
      ratio: formatNumber(r.ratio_values, 0), bytes: formatNumber(r.ratio_bytes_fp16, 0),
    })),
    el("p.figures", {}, t("in.vae.error", { psnr: Number.isFinite(r.psnr_db) ? formatNumber(r.psnr_db, 1) : "∞", mae: formatNumber(r.mean_abs_error, 2) })),
    r.psnr_db < VAE_OUTSIDE_DB ? el("p.warning.vae-outside", {}, t("in.vae.outside", { psnr: formatNumber(r.psnr_db, 1) })) : "",
    el("p.help", {}, t("in.vae.world")));
}

// ---- Text: tokens and the 77-token window ----

let tokenTimer = null;

async function tokens(out) {
  const prompt = $("f-prompt").value;
  const r = await getJSON(`/atelier/lab/tokens?${new URLSearchParams({ text: prompt })}`);
  const chips = r.tokens.map((tok, i) => el("span.token", { dataset: { id: tok.id }, title: `id ${tok.id}` },
    el("b", {}, tok.text), el("small", {}, String(tok.id)), i >= r.text_slots ? el("em", {}, "!") : null));
  const windows = r.windows.map((win, k) => el("div.window", {},
    el("h4", {}, t("in.text.window", { n: k + 1, of: r.windows.length, size: r.window })),
    el("div.cells", {}, win.map((cell, i) => {
      const kind = i === 0 ? "start" : cell.id === r.end_id ? "end" : "text";
      return el(`span.cell.${kind}`, { title: `${i}: ${cell.text} (${cell.id})` }, kind === "text" ? cell.text : kind === "start" ? "⟨s⟩" : "·");
    }))));
  const warn = r.over > 0 ? el("p.warning", { role: "status" }, t("in.text.over", { count: r.count, slots: r.text_slots, over: r.over, windows: r.windows.length })) : null;
  const unknown = r.unknown_embeddings.map((name) => `embedding:${name}`).join(", ");
  const missing = unknown ? el("p.warning", { role: "status" }, t("in.text.unknown_embedding", { names: unknown })) : null;
  out.replaceChildren(
    el("p.figures", { dataset: { count: r.count } }, t("in.text.count", { count: r.count, slots: r.text_slots })),
    ...[warn, missing].filter(Boolean), el("div.tokens", {}, chips), ...windows,  // replaceChildren writes null as "null"
    el("p.help", {}, t("in.text.after")));
}

// ---- Attention ----

function defaultWords() {
  const words = $("f-prompt").value.toLowerCase().split(/[^\p{L}\p{N}'-]+/u).filter((w) => w && !STOP_WORDS.has(w));
  return [...new Set(words)].slice(0, 4).join(", ");
}

async function attention(out) {
  needsTeaching(out);
  const params = viewParams();
  const words = $("att-words").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (!words.length) throw new Error(t("err.list_empty"));
  const result = await runView(params, { view: "attention", words, label: t("in.attention.title") });
  const [image] = images(result, "image");
  const maps = words.map((word, k) => ({ word, ref: images(result, `attention_map/${k}`)[0] }));
  out.replaceChildren(
    el("div.strip", {}, figure(image, t("in.attention.image")),
      maps.map(({ word, ref }) => figure(ref, `“${word}”`, { class: "fig heat", dataset: { word } }))),
    el("p.help", {}, t("in.attention.after", { seed: params.seed, steps: params.steps })));
}

// ---- Schedules ----

async function schedules(out) {
  const steps = Number($("f-steps").value) || 20;
  const scheduler = $("f-scheduler").value;
  const q = new URLSearchParams({ steps, scheduler });
  const r = await getJSON(`/atelier/lab/schedules?${q}`);
  const series = Object.entries(r.schedulers).map(([name, values]) => ({ name, values, highlight: name === scheduler }));
  const chosen = r.schedulers[scheduler];
  out.replaceChildren(
    lineChart(series, { log: $("sched-log").checked, xLabel: t("in.step"), yLabel: "σ", title: t("in.schedules.title") }),
    el("p.figures", { dataset: { scheduler } }, t("in.schedules.chosen", { scheduler, steps, values: chosen.map((s) => formatNumber(s, 3)).join(" → ") })),
    el("p.help", {}, t("in.schedules.after", { max: formatNumber(r.sigma_max, 2), min: formatNumber(r.sigma_min, 3) })));
}

// ---- Concept map ----

async function recentImages(limit = 6) {
  const history = await getJSON("/api/history?max_items=50");
  return Object.values(history).map(historyEntry).reverse().filter((entry) => entry.lab && entry.completed)
    .map((entry) => ({ ...images(entry, "image")[0], label: `🖼 ${entry.lab.params.prompt}` }))
    .filter((ref) => ref.filename).slice(0, limit);
}

async function concepts(out) {
  const words = $("concept-words").value.split(",").map((s) => s.trim()).filter(Boolean);
  const images = $("concept-images").checked ? await recentImages() : [];
  const r = await postJSON("/atelier/lab/concepts", { words, images });
  const pairs = r.points.map((p) => el("li", {}, el("b", {}, p.label), ` → ${p.nearest} (${formatNumber(p.nearest_similarity, 2)})`));
  out.replaceChildren(
    el("div.concepts", {},
      scatter(r.points, { title: t("in.concepts.title") }),
      el("div", {}, el("h4", {}, t("in.concepts.nearest")), el("ul.nearest", {}, pairs))),
    el("p.help", {}, t("in.concepts.after", { dim: r.dim, a: formatNumber(r.explained[0] * 100, 0), b: formatNumber(r.explained[1] * 100, 0) })));
}

// ---- wiring ----

const RUNS = { filmstrip, convergence, latent, attention, concepts };

export function showView(name) {
  shownView = name;
  for (const button of document.querySelectorAll(".subnav button")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === name));
  }
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  refresh();
}

/** Views that follow the panel live (tokens, schedules) are redrawn when it changes. */
function refresh() {
  const out = $(`view-${shownView}`).querySelector(".out");
  const live = { text: tokens, schedules }[shownView];
  if (live) live(out).catch((error) => out.replaceChildren(el("p.placeholder", {}, errorText(error))));
}

export function shown() {
  if (!$("att-words").value) $("att-words").value = defaultWords();
  refresh();
}

export function paramsChanged() {
  if (!$("panel-inside").hidden) refresh();
}

export function languageChanged() {
  if (!$("panel-inside").hidden) refresh();
}

export function setup(options) {
  nodeTypes = new Set(options.node_types);
  for (const button of document.querySelectorAll(".subnav button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  for (const [name, run] of Object.entries(RUNS)) {
    const view = $(`view-${name}`);
    const button = view.querySelector(".run");
    button.addEventListener("click", () => {
      hideMessage();
      busy(button, async () => {
        await run(view.querySelector(".out"));
        document.dispatchEvent(new CustomEvent("atelier:ran", { detail: `view-${name}` }));  // the parcours ticks its step
      });
    });
  }
  $("vae-file").addEventListener("change", () => {
    hideMessage();
    vaeRoundtrip($("view-vae").querySelector(".out")).catch((error) => showMessage(errorText(error)));
  });
  $("sched-log").addEventListener("change", refresh);
  $("f-prompt").addEventListener("input", () => {
    clearTimeout(tokenTimer);
    tokenTimer = setTimeout(paramsChanged, 250);
  });
  $("concept-words").value = t("in.concepts.default");
}
