// Every word the page shows lives in i18n/<lang>.json, one file per language. The HTML carries English text
// as a fallback and names its key: data-i18n (text), data-i18n-title (tooltip), data-i18n-placeholder.

const LANGS = ["en", "fr"];
let strings = {};
let lang = "en";

/** The language to start with: the one chosen last time, else French when the browser prefers it. */
export function preferredLanguage() {
  const saved = localStorage.getItem("atelier.lab.lang");
  if (LANGS.includes(saved)) return saved;
  const first = (navigator.languages?.[0] || navigator.language || "en").toLowerCase();
  return first.startsWith("fr") ? "fr" : "en";
}

export async function setLanguage(next) {
  const resp = await fetch(`i18n/${next}.json`);
  strings = await resp.json();
  lang = next;
  localStorage.setItem("atelier.lab.lang", next);
  document.documentElement.lang = next;
  apply(document);
}

export function language() {
  return lang;
}

/** Whether the current language has a string for `key`. */
export function has(key) {
  return key in strings;
}

/** The string for `key` with {name} placeholders filled from `vars`; the key itself when missing. */
export function t(key, vars = {}) {
  const text = strings[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** Put the current language's text into every element under `root` that names a key. */
export function apply(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
}

/**
 * A number as the interface language writes it (7,5 in French, 7.5 in English), with `digits` decimals when given
 * and its sign always shown when `signed`.
 */
export function formatNumber(value, digits = null, signed = false) {
  const options = digits === null ? {} : { minimumFractionDigits: digits, maximumFractionDigits: digits };
  if (signed) options.signDisplay = "always";
  return new Intl.NumberFormat(lang === "fr" ? "fr-FR" : "en-US", options).format(value);
}
