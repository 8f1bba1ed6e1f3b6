// One place that turns parameters into a queued graph and reports its progress: every button of the lab that
// generates (Generate, the exercises, the look-inside views) goes through `runView`.

import { postJSON, runPrompt } from "./api.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
let active = 0;

export function isBusy() {
  return active > 0;
}

function setProgress(value, max, text) {
  $("progress").max = max || 1;
  $("progress").value = value;
  $("progress-text").textContent = text;
}

/** The graph (API prompt) and the editor workflow for parameters and a view, from the server (lab.py). */
export async function buildGraph(params, view = "generate", extra = {}) {
  return postJSON("/atelier/lab/graph", { params, view, ...extra });
}

/**
 * Build, queue and wait for one view's graph. Returns {prompt, roles, workflow, outputs, cached, params}: read its
 * outputs by role with ui.js `output(run, role)`. `label` names the run in the progress line ("CFG 7");
 * onPreview(url) gets the live step previews. `record` goes into the history with the roles (api.js historyEntry).
 */
export async function runView(params, { view = "generate", init = null, words = null, label = "", prefix = "lab",
  onPreview = null, onExecuted = null, record = null } = {}) {
  const { prompt, roles, workflow } = await buildGraph(params, view, { init_image: init, words, filename_prefix: prefix });
  const extra = { extra_pnginfo: { workflow } };
  if (record) extra.atelier_lab = { ...record, params, init_image: init, roles };
  active += 1;
  $("stop").disabled = false;
  const name = label ? `${label} · ` : "";
  let stopping = false;  // Stop was pressed: the line says so until the server reports how the run ended
  setProgress(0, 1, `${name}${t("run.queued")}`);
  try {
    const result = await runPrompt(prompt, extra, {
      onQueued: (_, ahead) => ahead > 0 && setProgress(0, 1, `${name}${t("run.waiting", { n: ahead })}`),
      onWait: ({ position, starts_in: startsIn }) => {
        const wait = startsIn == null ? "" : t("run.wait_seconds", { s: Math.max(1, Math.round(startsIn)) });
        setProgress(0, 1, `${name}${t("run.position", { n: position })}${wait}`);
      },
      onStart: () => setProgress(0, 1, `${name}${t("run.started")}`),
      onRetry: () => setProgress(0, 1, `${name}${t("server.worker_retry")}`),
      onProgress: (value, max) => !stopping && setProgress(value, max, `${name}${t("run.step", { value, max })}`),
      onStopping: () => {
        stopping = true;
        $("progress-text").textContent = `${name}${t("run.stopping")}`;
      },
      onPreview,
      onExecuted,
    });
    // Every node answered from the node cache: the same graph ran before, so nothing was computed again.
    const fromCache = Object.keys(prompt).every((node) => result.cached.includes(node));
    const done = result.stopRequested ? "run.done_before_stop" : fromCache ? "run.from_cache" : "run.done";
    setProgress(1, 1, `${name}${t(done)}`);
    return { prompt, roles, workflow, params, ...result, fromCache };
  } catch (error) {
    setProgress(0, 1, "");
    throw error;
  } finally {
    active -= 1;
    if (!active) $("stop").disabled = true;
  }
}
