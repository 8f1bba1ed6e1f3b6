// Classroom mode: the exercise the instructor sends to everyone ("tout le monde : graine 42, CFG 1 / 7 / 30").
//
// It arrives on the socket as {"type": "atelier_exercise", "data": exercise} (atelier/server/instructor.py), and
// is read from GET /atelier/classroom/exercise when the page opens and every POLL_MS after (a socket that was
// closed a while misses messages). exercise = {id, title, settings: {seed, cfg, ...}, vary: "cfg" | null,
// values: [1, 7, 30]}. Its settings go into the form; its card shows them and a Run button that makes one image
// per value, each queued with {kind: "class", exercise: id, value} so the instructor's page finds the class's
// results of this exercise and lines them up. Outside classroom mode the route answers 404 and nothing happens.

import { getJSON, onNotice } from "./api.js";
import { fillSlot, slots } from "./exercises.js";
import * as form from "./form.js";
import { formatNumber, t } from "./i18n.js";
import { runView } from "./runner.js";
import { busy, hideMessage, images, showMessage } from "./ui.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 15000;
let exercise = null;  // the one shown, or null
let showExercises = () => {};

function shownValue(value) {
  return typeof value === "number" ? formatNumber(value) : String(value);
}

/** "Seed 42, Steps 3; CFG: 1 / 7 / 30" in the page's words. */
function summary(ex) {
  const fixed = Object.entries(ex.settings).map(([name, value]) =>
    `${t(`form.${name}`)} ${typeof value === "string" && name.includes("prompt") ? `“${value}”` : shownValue(value)}`);
  const varied = ex.vary ? `${t(`form.${ex.vary}`)} ${ex.values.map(shownValue).join(" / ")}` : "";
  return [fixed.join(", "), varied].filter(Boolean).join(" ; ");
}

function label(ex, value) {
  return ex.vary ? `${t(`form.${ex.vary}`)} ${shownValue(value)}` : t("class.one");
}

function draw() {
  const card = $("ex-class");
  card.hidden = !exercise;
  if (!exercise) return;
  card.dataset.exercise = exercise.id;
  card.querySelector(".class-name").textContent = exercise.title ? `· ${exercise.title}` : "";
  card.querySelector(".class-text").textContent = t("class.text", { summary: summary(exercise) });
}

/** A new exercise (or none): into the form and the card; `announce` says so and opens the exercises' tab. */
function receive(next, announce) {
  if (JSON.stringify(next) === JSON.stringify(exercise)) return;
  exercise = next;
  draw();
  if (!exercise) return;
  form.write(exercise.settings);
  $("ex-class").querySelector(".out").replaceChildren();
  if (announce) {
    showMessage(t("class.received", { summary: summary(exercise) }), "info");
    showExercises();
  }
}

async function run(out) {
  const ex = exercise;
  const base = { ...form.read(), ...ex.settings };  // the instructor's settings hold, the rest is the learner's
  base.seed = form.drawSeed(base);
  const values = ex.vary ? ex.values : [null];
  const labels = values.map((value) => label(ex, value));
  const figs = slots(out, labels);
  for (let i = 0; i < values.length; i++) {
    const params = ex.vary ? { ...base, [ex.vary]: values[i] } : base;
    const result = await runView(params, {
      label: labels[i],
      init: form.initImage(),
      prefix: "lab/class",
      record: { kind: "class", exercise: ex.id, value: values[i] },
    });
    const [first] = images(result, "image");
    fillSlot(figs[i], first, result.fromCache);
  }
}

async function poll() {
  try {
    receive((await getJSON("/atelier/classroom/exercise")).exercise, true);
  } catch { /* the server restarts: the next poll will tell */ }
}

/** Start listening for the instructor's exercises; `show()` opens the exercises' tab. */
export async function setup(show) {
  let first;
  try {
    first = await getJSON("/atelier/classroom/exercise");
  } catch {
    return;  // not in classroom mode
  }
  showExercises = show;
  const button = $("ex-class").querySelector(".run");
  button.addEventListener("click", () => {
    hideMessage();
    busy(button, () => run($("ex-class").querySelector(".out")));
  });
  onNotice("atelier_exercise", (data) => receive(data, true));
  receive(first.exercise, false);
  setInterval(poll, POLL_MS);
}

export function languageChanged() {
  draw();
}
