// The lab's entry point: language, tabs, the Generate button, the result, the history gallery and the way to
// the node editor. The exercises and the look-inside views live in exercises.js and inside.js; the instructor's
// exercise (classroom mode) in classroom.js.

import { getJSON, historyEntry, interrupt, postJSON, viewUrl } from "./api.js";
import * as form from "./form.js";
import { apply, formatNumber, language, preferredLanguage, setLanguage, t } from "./i18n.js";
import { runView } from "./runner.js";
import { busy, el, errorText, hideMessage, images, showMessage } from "./ui.js";
import * as classroom from "./classroom.js";
import * as exercises from "./exercises.js";
import * as inside from "./inside.js";
import * as figures from "./figures.js";
import * as parcours from "./parcours.js";
import * as world from "./world.js";

const $ = (id) => document.getElementById(id);
const current = { result: null };  // the last generation: {params, prompt, workflow, outputs, roles}

// ---- tabs (arrow keys move between them, as in any tab list) ----

function selectTab(tab) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (tab.id === "tab-history") loadHistory();
  if (tab.id === "tab-inside") inside.shown();
  if (tab.id === "tab-parcours") parcours.render();
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
      next.focus();
      selectTab(next);
    });
  }
  selectTab($("tab-result"));  // the parcours tab comes first in the row, the result is what opens
}

// ---- generate ----

function paramsTable(p, seedNote = "") {
  const rows = [
    ["form.model", p.model], ["form.prompt", p.prompt || "—"], ["form.negative", p.negative || "—"],
    ["form.seed", `${p.seed}${seedNote}`], ["form.steps", p.steps], ["form.cfg", formatNumber(p.cfg)],
    ["form.sampler", p.sampler], ["form.scheduler", p.scheduler], ["result.size", `${p.width} × ${p.height}`],
    ["form.batch", p.batch],
  ];
  if (p.denoise < 1) rows.push(["form.denoise", formatNumber(p.denoise)]);
  return rows.flatMap(([key, value]) => [el("dt", {}, t(key)), el("dd", {}, String(value))]);
}

function showResult(result) {
  current.result = result;
  const refs = images(result, "image");
  $("result-images").classList.toggle("batch", refs.length > 1);  // a batch in a grid, not one image per row
  $("result-images").replaceChildren(...refs.map((ref, i) =>
    el("figure.fig.big", {}, el("img", { src: viewUrl(ref), alt: t("result.image_alt", { n: i + 1 }) }),
      el("figcaption", {}, refs.length > 1 ? t("result.batch_item", { n: i + 1, seed: result.params.seed }) : ""))));
  $("result-params").replaceChildren(...paramsTable(result.params));
  const note = [result.fromCache ? t("result.from_cache") : "", result.params.cfg === 1 ? t("result.cfg1") : ""]
    .filter(Boolean).join(" ");
  $("result-note").textContent = note;
  $("result-note").hidden = !note;
  if (refs.length) {
    $("download").href = viewUrl(refs[0]);
    $("download").setAttribute("download", refs[0].filename);
    $("download").hidden = false;
  }
  $("open-editor").hidden = false;
}

async function generate(event) {
  event?.preventDefault();
  hideMessage();
  let params;
  try {
    params = form.read();
  } catch (error) {
    showMessage(error.message);
    return;
  }
  params.seed = form.drawSeed(params);
  await busy($("generate"), async () => {
    // The live preview has no picture until the first step's: a waiting slot stands in for it (no broken image).
    const live = el("img.live", { alt: t("result.preview_alt"), hidden: true });
    const wait = el("div.slot.live-wait", {}, "…");
    $("result-images").classList.remove("batch");
    $("result-images").replaceChildren(el("figure.fig.big", {}, wait, live, el("figcaption", {}, t("result.preview"))));
    let result;
    const start = performance.now();
    try {
      result = await runView(params, {
        init: form.initImage(),
        record: { kind: "generate" },
        onPreview: (url) => {
          if (live.src.startsWith("blob:")) URL.revokeObjectURL(live.src);
          live.src = url;
          live.hidden = false;
          wait.remove();
        },
      });
    } catch (error) {
      $("result-images").replaceChildren(); // stopped or failed: no half-made picture stays on screen
      throw error;
    }
    form.state.lastSeed = params.seed;
    if (!result.fromCache) form.timed(params, (performance.now() - start) / 1000);
    showResult(result);
  });
}

// ---- the node editor ----

/**
 * Open the exact graph of the result in the node editor. The editor (ComfyUI frontend 1.27) restores, on load,
 * the workflow kept in localStorage["workflow"] under the name in "Comfy.PreviousWorkflow" (per-tab copies in
 * sessionStorage win, so ours are cleared). This page and the editor share an origin, hence that storage.
 */
export function openInEditor(workflow) {
  localStorage.setItem("atelier.open_workflow", JSON.stringify(workflow));  // read by web/editor/default_graph.js
  localStorage.setItem("workflow", JSON.stringify(workflow));
  localStorage.setItem("Comfy.PreviousWorkflow", t("editor.workflow_name"));
  for (const key of Object.keys(sessionStorage)) {
    if (key.startsWith("workflow:") || key.startsWith("Comfy.PreviousWorkflow:")) sessionStorage.removeItem(key);
  }
  window.open("/", "_blank");
}

// ---- history ----

async function loadHistory() {
  const box = $("history");
  try {
    const history = await getJSON("/api/history?max_items=200");
    const entries = Object.values(history).map(historyEntry)
      .filter((entry) => entry.lab?.kind === "generate" && entry.completed)
      .reverse();  // newest first
    if (!entries.length) {
      box.replaceChildren(el("p.placeholder", {}, t("hist.empty")));
      return;
    }
    box.replaceChildren(...entries.map(historyItem));
  } catch (error) {
    box.replaceChildren(el("p.placeholder", {}, errorText(error)));
  }
}

function historyItem(entry) {
  const p = entry.lab.params;
  const [first] = images(entry, "image");
  const caption = `${p.prompt} · ${t("form.seed")} ${p.seed} · ${p.steps} · CFG ${formatNumber(p.cfg)} · ${p.sampler}`;
  return el("button.hist", {
    type: "button",
    title: t("hist.restore"),
    onclick: () => {
      form.write(p);
      form.writeInit(entry.lab.init_image);
      form.state.lastSeed = p.seed;
      showResult({ ...entry, params: p });
      selectTab($("tab-result"));
      showMessage(t("hist.restored"), "info");
    },
  }, first ? el("img", { src: viewUrl(first), alt: p.prompt }) : null, el("span", {}, caption));
}

// ---- start ----

async function main() {
  await setLanguage(preferredLanguage());
  $("lang").textContent = language() === "fr" ? "EN" : "FR";
  $("lang").addEventListener("click", async () => {
    await setLanguage(language() === "fr" ? "en" : "fr");
    $("lang").textContent = language() === "fr" ? "EN" : "FR";
    if (current.result) showResult(current.result);
    form.showSize();
    inside.languageChanged();
    await world.load().catch((error) => showMessage(errorText(error)));
    exercises.suggestReplacement();
    parcours.render();
    classroom.languageChanged();
  });
  $("message-close").addEventListener("click", hideMessage);
  setupTabs();
  let options;
  try {
    options = await getJSON("/atelier/lab/options");
  } catch (error) {
    showMessage(errorText(error));
    return;
  }
  form.setup(options, () => inside.paramsChanged());
  $("params").addEventListener("submit", generate);
  $("stop").addEventListener("click", () => interrupt());
  $("open-editor").addEventListener("click", async () => {
    const result = current.result;
    const workflow = result.workflow || (await postJSON("/atelier/lab/workflow", { prompt: result.prompt })).workflow;
    openInEditor(workflow);
  });
  inside.setup(options);
  await world.setup().catch((error) => showMessage(errorText(error)));
  exercises.setup(options);
  await parcours.setup({ openInEditor, selectTab });  // reads the progress the server keeps
  figures.setup(() => { try { return form.read(); } catch { return {}; } });  // a half-typed field: no parameters
  await classroom.setup(() => selectTab($("tab-exercises")));  // classroom mode: the instructor's exercise
  apply(document);
  document.body.dataset.ready = "true";  // for tests: options are loaded and handlers attached
}

main();
