// Le parcours: the workshop's path through Atelier, step by step. Theory first (four short screens), then module
// 1's exercises in this page, then module 2's graphs in the node editor. Every step has an instruction, a button
// that opens the right place with the right settings, and a check that says when it is done:
//   - theory: the learner says they have read it (and may open the view that shows it);
//   - module 1: the exercise or view ran to the end (exercises.js and inside.js send "atelier:ran");
//   - module 2: the newest graph the learner ran in the editor has the expected wires (GET /atelier/lab/parcours/check).
// Progress is kept in this browser (localStorage), one record per learner's browser.

import { getJSON } from "./api.js";
import { t } from "./i18n.js";
import * as inside from "./inside.js";
import { el, errorText } from "./ui.js";

const $ = (id) => document.getElementById(id);
const STORE = "atelier.parcours";

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
    return JSON.parse(localStorage.getItem(STORE)) || {};
  } catch {
    return {};
  }
}

let progress = load();  // {step id: {done: true} | {opened: ms}}
let openEditor = null;
let selectTab = null;

function save() {
  localStorage.setItem(STORE, JSON.stringify(progress));
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
export function setup(hooks) {
  openEditor = hooks.openInEditor;
  selectTab = hooks.selectTab;
  document.addEventListener("atelier:ran", (event) => {
    const step = STEPS.find((s) => s.card === event.detail || s.ran === event.detail);
    if (step && !progress[step.id]?.done) mark(step.id);
  });
  // The editor runs in another tab: coming back to this one re-reads the progress another tab may have saved.
  window.addEventListener("storage", (event) => {
    if (event.key === STORE) {
      progress = load();
      render();
    }
  });
  $("parcours-reset").addEventListener("click", () => {
    progress = {};
    save();
    render();
  });
  render();
}
