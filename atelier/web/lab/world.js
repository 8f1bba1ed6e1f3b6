// What the embedded model can draw (GET /atelier/lab/vocabulary, lessons/vocabulary.py): its world's objects,
// colours, sizes, places and backgrounds as buttons that write a prompt in its training captions' grammar, and,
// under the prompt, the words it never read in training. For any other model the server says nothing, nor do we.

import { getJSON } from "./api.js";
import { language, t } from "./i18n.js";
import { el, errorText, showMessage } from "./ui.js";

const $ = (id) => document.getElementById(id);
const REQUIRED = ["objects", "colours"];  // every training caption names its object's kind and colour
const PARAM = { objects: "kind", colours: "colour", sizes: "size", places: "cell", backgrounds: "background" };

let world = null;  // {known, categories, choices, words: Set} for the model and language shown
let chosen = {};  // category -> the world name picked
let picks = 0;  // the number of the latest pick: an earlier pick's answer arriving after it must not write the prompt

/** The words of a text as the text encoder tells them apart (lessons/vocabulary.py words_of). */
export function wordsOf(text) {
  return text.normalize("NFC").toLowerCase().match(/\p{L}+/gu) || [];
}

/** The prompt's words the model never read in training, each once; [] when we do not know the model. */
export function unknownWords(text) {
  if (!world?.known) return [];
  return [...new Set(wordsOf(text).filter((w) => !world.words.has(w)))];
}

/** Load what the model of the panel knows, in the interface language, and redraw. */
export async function load() {
  const q = new URLSearchParams({ lang: language(), model: $("f-model").value });
  const answer = await getJSON(`/atelier/lab/vocabulary?${q}`);
  world = { ...answer, words: new Set(answer.words || []) };
  render();
  markUnknown();
}

function render() {
  $("world").hidden = !world.known;
  if (!world.known) return;
  const missing = REQUIRED.filter((c) => !chosen[c]);
  const hint = missing.length < REQUIRED.length && missing.length
    ? el("p.help.world-hint", {}, t("world.pick_also", { what: t(`world.${missing[0]}`) })) : null;
  $("world-choices").replaceChildren(hint || "", ...world.categories.map((category) => el("div.world-row", {},
    el("h4", {}, t(`world.${category}`)),
    el("div.chips", { dataset: { category } }, world.choices[category].map(({ name, label }) => el("button.chip", {
      type: "button",
      dataset: { name },
      "aria-pressed": String(chosen[category] === name),
      onclick: () => pick(category, name).catch((error) => showMessage(errorText(error))),
    }, label))))));
}

async function pick(category, name) {
  chosen = { ...chosen, [category]: chosen[category] === name && !REQUIRED.includes(category) ? undefined : name };
  render();
  if (!REQUIRED.every((c) => chosen[c])) return;
  const q = new URLSearchParams({ lang: language() });
  for (const [category, param] of Object.entries(PARAM)) if (chosen[category]) q.set(param, chosen[category]);
  const mine = ++picks;
  const { prompt } = await getJSON(`/atelier/lab/compose?${q}`);
  if (mine !== picks) return;  // quick clicks: answers may come back out of order
  $("f-prompt").value = prompt;
  $("f-prompt").dispatchEvent(new Event("input", { bubbles: true }));
  $("params").dispatchEvent(new Event("change"));
}

/** Under the prompt: which of its words the model never saw (it reads them as noise and draws its own world). */
export function markUnknown() {
  const unknown = unknownWords($("f-prompt").value);
  const box = $("prompt-unknown");
  box.hidden = !unknown.length;
  box.replaceChildren(...(unknown.length ? [t("world.unknown"), " ",
    ...unknown.flatMap((word, i) => [i ? ", " : "", el("mark", {}, word)]), " ", t("world.unknown_after")] : []));
  box.dataset.words = unknown.join(" ");
}

export function setup() {
  $("f-prompt").addEventListener("input", markUnknown);
  $("f-model").addEventListener("change", () => { chosen = {}; return load(); });
  return load();
}

/**
 * A word of `prompt` to replace with another that the model knows, for the variability exercise: its first colour
 * word, swapped for blue (red when it is blue) in the same form ("verte" -> "bleue"). null when the prompt names no
 * colour of the world, or the model is not ours.
 */
export function colourSwap(prompt) {
  if (!world?.known) return null;
  const colours = world.choices.colours;
  for (const word of wordsOf(prompt)) {
    const from = colours.find((c) => c.forms.includes(word));
    if (!from) continue;
    const to = colours.find((c) => c.name === (from.name === "blue" ? "red" : "blue"));
    const form = from.forms.indexOf(word);
    return { from: word, to: to.forms[Math.min(form, to.forms.length - 1)] };
  }
  return null;
}
