// The workshop exercises: one click each, every parameter of the panel held fixed but the one that varies,
// results side by side with their labels. Plus the XY grid over any two parameters.

import { forgetCache, postJSON, viewUrl } from "./api.js";
import * as form from "./form.js";
import { formatNumber, t } from "./i18n.js";
import { runView } from "./runner.js";
import { busy, el, hideMessage, images } from "./ui.js";
import { colourSwap, wordsOf } from "./world.js";

const $ = (id) => document.getElementById(id);

// Axes of the XY grid: how to read a value typed by the learner and how it changes the parameters.
const AXES = {
  seed: { parse: wholeNumber, apply: (p, v) => ({ ...p, seed: v }) },
  steps: { parse: wholeNumber, apply: (p, v) => ({ ...p, steps: v }) },
  cfg: { parse: number, apply: (p, v) => ({ ...p, cfg: v }) },
  sampler: { parse: String, apply: (p, v) => ({ ...p, sampler: v }) },
  scheduler: { parse: String, apply: (p, v) => ({ ...p, scheduler: v }) },
  denoise: { parse: number, apply: (p, v) => ({ ...p, denoise: v }) },
  prompt: { parse: String, apply: null },  // search/replace: the first value is searched, each value replaces it
};
const MAX_CELLS = 25;

function number(text) {
  const value = Number(text);
  if (text === "" || !Number.isFinite(value)) throw new Error(t("err.list_number", { value: text }));
  return value;
}

function wholeNumber(text) {
  const value = number(text);
  if (!Number.isInteger(value)) throw new Error(t("err.list_integer", { value: text }));
  return value;
}

/**
 * The values typed in the field `id`, each read by `parse` and, when `field` is a numeric parameter, checked
 * against what its node input takes (form.state.limits): a step count of 0 is refused here, in the page's words.
 */
function list(id, parse, field = null) {
  const values = $(id).value.split(",").map((s) => s.trim()).filter(Boolean).map(parse);
  if (!values.length) throw new Error(t("err.list_empty"));
  const limit = form.state.limits[field];
  if (limit) {
    const bad = values.find((v) => v < limit.min || v > limit.max);
    const key = limit.type === "INT" ? "err.integer" : "err.number";
    if (bad !== undefined) throw new Error(t(key, { field: t(`form.${field}`), lo: limit.min, hi: limit.max }));
  }
  return values;
}

/** The panel's parameters with the seed fixed once (a random seed is drawn once for the whole exercise). */
function baseParams() {
  const params = form.read();
  params.seed = form.drawSeed(params);
  form.state.lastSeed = params.seed;
  return params;
}

/** A row of labelled slots, filled in as the runs finish. */
export function slots(out, labels) {
  const figures = labels.map((label) =>
    el("figure.fig.pending", { dataset: { label } }, el("div.slot", {}, "…"), el("figcaption", {}, label)));
  out.replaceChildren(el("div.strip", {}, figures));
  return figures;
}

export function fillSlot(fig, ref, fromCache = false) {
  fig.classList.remove("pending");
  fig.querySelector(".slot").replaceWith(el("img", { src: viewUrl(ref), alt: fig.dataset.label }));
  fig.dataset.fromCache = String(fromCache);
  if (fromCache) fig.append(el("small.cache-note", {}, t("ex.from_cache")));  // beside the caption, which names the run
}

async function generateInto(fig, params, label) {
  const result = await runView(params, { label, init: form.initImage(), prefix: "lab/exercise" });
  const [first] = images(result, "image");
  fillSlot(fig, first, result.fromCache);
  return { ...result, ref: first };
}

function compare(a, b) {
  return postJSON("/atelier/lab/compare", { a: a.ref, b: b.ref });
}

function verdict(diff) {
  const key = diff.identical ? "ex.identical" : "ex.different";
  return el("p.verdict", { dataset: { identical: String(diff.identical), maxDiff: String(diff.max_abs) } },
    t(key, { max: diff.max_abs, mean: formatNumber(diff.mean_abs, 2), n: formatNumber(diff.differing_pixels), total: formatNumber(diff.pixels) }));
}

// ---- 1. Stability: the same seed twice, every node really recomputed ----

async function stability(out) {
  const p = baseParams();
  const labels = [1, 2].map((n) => t("ex.stability.run", { n, seed: p.seed }));
  const figs = slots(out, labels);
  const runs = [];
  for (let i = 0; i < 2; i++) {
    await forgetCache();  // or the second run would be answered from the node cache without sampling
    runs.push(await generateInto(figs[i], p, labels[i]));
  }
  const diff = await compare(runs[0], runs[1]);
  out.append(verdict(diff), el("p.help", {}, t("ex.stability.cache", { n: runs[1].cached.length })));
}

// ---- 2. Variability: one word changed ----

async function variability(out) {
  const p = baseParams();
  const from = $("ex-var-from").value.trim(), to = $("ex-var-to").value.trim();
  const pattern = new RegExp(`\\b${from.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\b`, "u");
  if (!from || !pattern.test(p.prompt)) throw new Error(t("err.word_missing", { word: from }));
  const changed = { ...p, prompt: p.prompt.replace(pattern, to) };
  const figs = slots(out, [`“${p.prompt}”`, `“${changed.prompt}”`]);
  const a = await generateInto(figs[0], p, from);
  const b = await generateInto(figs[1], changed, to);
  out.append(verdict(await compare(a, b)), el("p.help", {}, t("ex.variability.after", { seed: p.seed })));
}

/**
 * The replace fields follow the prompt and the language until the learner types in them: the prompt's first
 * colour swapped for another ("rouge" -> "bleu", "verte" -> "bleue"), else its first word and the language's "blue".
 */
const variabilityDefaults = { edited: false };

export function suggestReplacement() {
  if (variabilityDefaults.edited) return;
  const prompt = $("f-prompt").value;
  const swap = colourSwap(prompt) || { from: wordsOf(prompt).find((w) => w.length > 3) || "", to: t("ex.variability.to_default") };
  $("ex-var-from").value = swap.from;
  $("ex-var-to").value = swap.to;
}

// ---- 3 and 4: one parameter over a list of values ----

async function sweep(out, listId, field, parse, labelKey) {
  const p = baseParams();
  const values = list(listId, parse, field);
  const labels = values.map((value) => t(labelKey, { value }));
  const figs = slots(out, labels);
  for (let i = 0; i < values.length; i++) {
    await generateInto(figs[i], { ...p, [field]: values[i] }, labels[i]);
  }
  out.append(el("p.help", {}, t(`ex.${field}.after`, { seed: p.seed })));
}

// ---- XY grid ----

function axisValues(axis, id) {
  return list(id, AXES[axis].parse, axis);
}

function applyAxis(params, axis, values, index) {
  if (axis !== "prompt") return AXES[axis].apply(params, values[index]);
  const [search] = values;
  if (!params.prompt.includes(search)) throw new Error(t("err.word_missing", { word: search }));
  return { ...params, prompt: params.prompt.split(search).join(values[index]) };
}

async function xyGrid(out) {
  const p = baseParams();
  const xAxis = $("xy-x").value, yAxis = $("xy-y").value;
  if (xAxis === yAxis) throw new Error(t("err.same_axes"));
  const xs = axisValues(xAxis, "xy-x-values"), ys = axisValues(yAxis, "xy-y-values");
  if (xs.length * ys.length > MAX_CELLS) throw new Error(t("err.too_many_cells", { n: xs.length * ys.length, max: MAX_CELLS }));
  const cells = ys.map((_, j) => xs.map((_, i) => applyAxis(applyAxis(p, xAxis, xs, i), yAxis, ys, j)));
  const head = el("tr", {}, el("th", { scope: "col" }, `${t(`axis.${yAxis}`)} ↓ · ${t(`axis.${xAxis}`)} →`),
    xs.map((x) => el("th", { scope: "col" }, String(x))));
  const figs = [];
  const rows = ys.map((y, j) => el("tr", {}, el("th", { scope: "row" }, String(y)), xs.map((x) => {
    const fig = el("figure.fig.pending", { dataset: { label: `${x} / ${y}` } }, el("div.slot", {}, "…"));
    figs.push([fig, j]);
    return el("td", {}, fig);
  })));
  out.replaceChildren(el("table.xy", { style: `--columns: ${xs.length}` }, el("thead", {}, head), el("tbody", {}, rows)));
  for (let j = 0; j < ys.length; j++) {
    for (let i = 0; i < xs.length; i++) {
      const label = `${t(`axis.${xAxis}`)} ${xs[i]} · ${t(`axis.${yAxis}`)} ${ys[j]}`;
      await generateInto(figs[j * xs.length + i][0], cells[j][i], label);
    }
  }
}

// ---- wiring ----

export function setup(options) {
  const runs = {
    "ex-stability": stability,
    "ex-variability": variability,
    "ex-cfg": (out) => sweep(out, "ex-cfg-list", "cfg", number, "ex.cfg.label"),
    "ex-steps": (out) => sweep(out, "ex-steps-list", "steps", wholeNumber, "ex.steps.label"),
    "ex-xy": xyGrid,
  };
  for (const [id, run] of Object.entries(runs)) {
    const card = $(id);
    const button = card.querySelector(".run");
    button.addEventListener("click", () => {
      hideMessage();
      busy(button, async () => {
        await run(card.querySelector(".out"));
        document.dispatchEvent(new CustomEvent("atelier:ran", { detail: id }));  // the parcours ticks its step
      });
    });
  }
  for (const id of ["ex-var-from", "ex-var-to"]) {
    $(id).addEventListener("input", () => { variabilityDefaults.edited = true; });
  }
  $("f-prompt").addEventListener("input", suggestReplacement);
  suggestReplacement();
  for (const [select, chosen] of [["xy-x", "cfg"], ["xy-y", "seed"]]) {
    $(select).replaceChildren(...Object.keys(AXES).map((axis) => {
      const option = new Option(axis, axis);
      option.dataset.i18n = `axis.${axis}`;
      return option;
    }));
    $(select).value = chosen;
  }
  void options;
}
