// The parameter panel: reading it into the parameters that run, writing parameters back (defaults, history),
// the seed's controls and the img2img upload. What the panel shows is exactly what the graph gets.

import { inputName, uploadImage, viewUrl } from "./api.js";
import { formatNumber, t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const FIELDS = ["model", "prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler", "width", "height",
  "batch", "denoise"];

export const state = {
  defaults: null,
  limits: null,  // numeric field -> {type, min, max, step}: the schema of the node input it sets (lab.py form_limits)
  lastSeed: null,  // the seed the last run actually used
  init: null,  // the uploaded img2img image {filename, subfolder, type}, or null
  nativeSizes: {},  // model -> the image side it was trained at (lab.py native_sizes)
  secondsPerPixelStep: null,  // measured on the last generation here: its time / (steps x pixels x batch)
};

const SLOW_FACTOR = 4;  // more pixels than 4x the native size's: warn before running
const SLOW_SECONDS = 30;  // or, once a run has been timed here, an estimate above this

function fill(select, values) {
  select.replaceChildren(...values.map((v) => new Option(v, v)));
}

export function setup(options, onChange) {
  // The starting prompt is in the interface's language: the embedded model reads English and French alike.
  state.defaults = { ...options.defaults, prompt: t("form.default_prompt") };
  fill($("f-model"), options.models);
  fill($("f-sampler"), options.samplers);
  fill($("f-scheduler"), options.schedulers);
  setLimits(options.limits);
  state.nativeSizes = options.native_sizes || {};
  write(state.defaults);
  for (const id of ["f-model", "f-width", "f-height", "f-batch", "f-steps"]) $(id).addEventListener("input", showSize);
  $("f-model").addEventListener("change", useNativeSize);
  $("f-denoise").addEventListener("input", showDenoise);
  $("seed-random").addEventListener("click", () => setSeed(-1));
  $("seed-last").addEventListener("click", () => state.lastSeed !== null && setSeed(state.lastSeed));
  $("seed-lock").addEventListener("change", lockSeed);
  $("reset").addEventListener("click", () => { write(state.defaults); clearInit(); onChange?.(); });
  $("f-init").addEventListener("change", uploadInit);
  $("init-clear").addEventListener("click", clearInit);
  $("params").addEventListener("change", () => onChange?.());
}

/**
 * Each numeric field takes what the node input it sets takes (KSampler: seed, steps, cfg, denoise;
 * EmptyLatentImage: width, height, batch), as the server's schemas say. Two things are the page's own: seed -1
 * draws a random seed here, and a JavaScript number holds whole numbers exactly only up to 2^53 - 1.
 */
function setLimits(limits) {
  const seed = { ...limits.seed, min: -1, max: Math.min(limits.seed.max, Number.MAX_SAFE_INTEGER) };
  state.limits = { ...limits, seed };
  for (const [name, { type, min, max, step }] of Object.entries(state.limits)) {
    const input = $(`f-${name}`);
    input.min = min;
    input.max = max;
    input.step = step ?? (type === "INT" ? 1 : "any");
  }
}

function setSeed(value) {
  if ($("seed-lock").checked) return;
  $("f-seed").value = value;
}

function lockSeed() {
  // Locking a random seed keeps the one the last image used, so "lock" always means "this image's noise".
  const locked = $("seed-lock").checked;
  if (locked && Number($("f-seed").value) === -1 && state.lastSeed !== null) $("f-seed").value = state.lastSeed;
  $("f-seed").readOnly = locked;
  $("seed-random").disabled = locked;
  $("seed-last").disabled = locked;
}

function showDenoise() {
  const value = Number($("f-denoise").value);
  $("denoise-out").textContent = formatNumber(value, 2);
  $("f-denoise").disabled = !state.init;
  $("f-denoise").title = state.init ? "" : t("form.denoise_needs_image");
}

async function uploadInit() {
  const file = $("f-init").files[0];
  if (!file) return;
  state.init = await uploadImage(file);
  $("init-thumb").src = viewUrl(state.init);
  $("init-thumb").hidden = false;
  $("init-clear").hidden = false;
  if (Number($("f-denoise").value) >= 1) $("f-denoise").value = 0.6;
  showDenoise();
}

export function clearInit() {
  state.init = null;
  $("f-init").value = "";
  $("init-thumb").hidden = true;
  $("init-clear").hidden = true;
  $("f-denoise").value = 1;
  showDenoise();
}

/** The parameters as they will run, or an Error naming the first bad field (in the page's language). */
export function read() {
  const p = {};
  for (const name of FIELDS) {
    const input = $(`f-${name}`);
    const raw = input.value.trim();
    const limit = state.limits[name];
    if (limit) {
      const value = Number(raw);
      const { min: lo, max: hi, step } = limit;
      const whole = limit.type === "INT";
      if (raw === "" || !Number.isFinite(value) || value < lo || value > hi || (whole && !Number.isInteger(value))) {
        input.focus();
        throw new Error(t(whole ? "err.integer" : "err.number", { field: t(`form.${name}`), lo, hi }));
      }
      if (whole && step > 1 && value % step) {  // width and height: the latent is 8x smaller
        input.focus();
        throw new Error(t("err.multiple", { field: t(`form.${name}`), step, value }));
      }
      p[name] = value;
    } else {
      p[name] = input.value;
    }
  }
  if (!state.init) p.denoise = 1;
  return p;
}

/**
 * A model just chosen: the size becomes the one it was trained at (SDXL 1024, SD 2.x 768-v 768, SD1.x 512, the
 * embedded model 128), the size its family's defaults assume; SDXL's size conditioning follows the image's size.
 */
function useNativeSize() {
  const native = state.nativeSizes[$("f-model").value];
  if (native) $("f-width").value = $("f-height").value = String(native);
  showSize();
}

/**
 * Under the size fields: the model's native size, what happens above it (the UNet never saw a larger latent and
 * repeats its objects over it), and a warning before a size that will take long here: at least the ratio of
 * pixels (attention grows faster than that), in seconds once a run here has been timed.
 */
export function showSize() {
  const native = state.nativeSizes[$("f-model").value];
  const w = Number($("f-width").value), h = Number($("f-height").value);
  const batch = Number($("f-batch").value) || 1, steps = Number($("f-steps").value) || 1;
  $("size-native").hidden = !native;
  if (!native) return;
  const above = w > native || h > native;
  $("size-native").textContent = `${t("size.native", { n: native })}${above ? ` ${t("size.above")}` : ""}`;
  $("size-native").dataset.above = String(above);
  const factor = (w * h) / (native * native);
  const seconds = state.secondsPerPixelStep ? state.secondsPerPixelStep * w * h * batch * steps : null;
  const slow = seconds === null ? factor >= SLOW_FACTOR : seconds > SLOW_SECONDS;
  $("size-warning").hidden = !slow || !Number.isFinite(factor);
  $("size-warning").textContent = slow ? [
    t("size.slow", { factor: formatNumber(factor, 0), n: native }),
    seconds === null ? "" : t("size.eta", { seconds: formatNumber(seconds, 0) }),
  ].join(" ").trim() : "";
}

/** Time one finished generation (not from the cache) for the estimates of showSize. */
export function timed(params, seconds) {
  state.secondsPerPixelStep = seconds / (params.steps * params.width * params.height * params.batch);
  showSize();
}

/** The init image's name for LoadImage, or null for txt2img. */
export function initImage() {
  return state.init ? inputName(state.init) : null;
}

/** Put parameters into the panel (defaults, or an image from the history). */
export function write(params) {
  for (const name of FIELDS) {
    if (params[name] === undefined) continue;
    const input = $(`f-${name}`);
    if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === String(params[name]))) {
      input.append(new Option(params[name], params[name]));  // a model or sampler this server may no longer list
    }
    if (name === "seed" && $("seed-lock").checked) continue;
    input.value = params[name];
  }
  showDenoise();
  showSize();
  $("f-prompt").dispatchEvent(new Event("input"));  // what reads the prompt live (unknown words, tokens) follows
}

/** Restore an img2img image by its input name (from the history). */
export function writeInit(name) {
  if (!name) return clearInit();
  const slash = name.lastIndexOf("/");
  state.init = { filename: name.slice(slash + 1), subfolder: slash > 0 ? name.slice(0, slash) : "", type: "input" };
  $("init-thumb").src = viewUrl(state.init);
  $("init-thumb").hidden = false;
  $("init-clear").hidden = false;
  showDenoise();
}

/** The seed to run with: the panel's, or a fresh random one for -1 (shown back, so nothing is hidden). */
export function drawSeed(params) {
  if (params.seed !== -1) return params.seed;
  return Math.floor(Math.random() * 2 ** 32);
}
