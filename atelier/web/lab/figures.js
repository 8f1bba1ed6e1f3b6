// Every figure of the lab can be saved as a PNG with its parameters, for the learner's notes. A small "PNG" button
// is added to each picture (img or canvas in a figure) and each chart (svg.chart) as soon as a view draws it. The
// file is drawn here, in the page: an image or canvas as it is, a chart rendered from its SVG with the page's
// styles copied onto its elements. The parameters go twice into the file: in its name (seed, steps, CFG, sampler)
// and in PNG tEXt chunks ("parameters": the panel's settings as text, "atelier": the same as JSON, "caption").

import { t } from "./i18n.js";
import { errorText, showMessage } from "./ui.js";

const MARK = "pngSave";  // dataset flag: this figure has its button

// ---- PNG tEXt chunks (PNG spec, section 11.3.4.3): length, "tEXt", keyword NUL text, CRC-32 ----

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** One tEXt chunk. tEXt is Latin-1: other characters are written as \u escapes so that nothing is lost. */
function textChunk(keyword, text) {
  const latin1 = text.replace(/[^\x00-\xff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
  const data = new Uint8Array(keyword.length + 1 + latin1.length);
  for (let i = 0; i < keyword.length; i++) data[i] = keyword.charCodeAt(i);
  for (let i = 0; i < latin1.length; i++) data[keyword.length + 1 + i] = latin1.charCodeAt(i);
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  chunk.set([0x74, 0x45, 0x58, 0x74], 4);  // "tEXt"
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
  return chunk;
}

/** The PNG `bytes` with text chunks inserted right after IHDR (8-byte signature + 25-byte IHDR chunk). */
export function withText(bytes, texts) {
  const chunks = Object.entries(texts).map(([k, v]) => textChunk(k, v));
  const size = bytes.length + chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(size);
  out.set(bytes.subarray(0, 33));
  let at = 33;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  out.set(bytes.subarray(33), at);
  return out;
}

// ---- drawing a figure onto a canvas ----

const SVG_STYLE = ["fill", "stroke", "stroke-width", "stroke-dasharray", "opacity", "font-size", "font-family", "font-weight"];

/** An SVG chart as a standalone picture: the page's CSS does not reach an <img>, so each element gets its style. */
function svgImage(svg) {
  const copy = svg.cloneNode(true);
  const source = [svg, ...svg.querySelectorAll("*")], target = [copy, ...copy.querySelectorAll("*")];
  source.forEach((node, i) => {
    const style = getComputedStyle(node);
    target[i].setAttribute("style", SVG_STYLE.map((p) => `${p}:${style.getPropertyValue(p)}`).join(";"));
  });
  const box = svg.viewBox.baseVal;
  copy.setAttribute("width", box.width * 2);
  copy.setAttribute("height", box.height * 2);
  copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  const url = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(new XMLSerializer().serializeToString(copy))}`;
  return loadImage(url);
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(t("fig.unreadable")));
    img.src = src;
  });
}

async function canvasOf(target) {
  if (target instanceof HTMLCanvasElement) return target;
  const img = target instanceof SVGElement ? await svgImage(target) : await loadImage(target.currentSrc || target.src);
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth || img.width;
  canvas.height = img.naturalHeight || img.height;
  const ctx = canvas.getContext("2d");
  if (target instanceof SVGElement) {
    ctx.fillStyle = "#fff";  // charts are drawn on the page's white
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  return canvas;
}

// ---- file name and parameters ----

function parametersText(p, caption) {
  return [
    caption,
    `${p.prompt}`,
    p.negative ? `Negative prompt: ${p.negative}` : null,
    `Steps: ${p.steps}, Sampler: ${p.sampler}, Schedule type: ${p.scheduler}, CFG scale: ${p.cfg}, Seed: ${p.seed}, ` +
      `Size: ${p.width}x${p.height}, Denoising strength: ${p.denoise}, Model: ${p.model}`,
  ].filter(Boolean).join("\n");
}

/** "atelier-convergence-seed42-20steps-cfg7.5-euler.png": what ran, readable in a folder of notes. */
export function fileName(kind, p) {
  const safe = (s) => String(s).replace(/[^\w.-]+/g, "_");
  return `atelier-${safe(kind)}-seed${safe(p.seed)}-${safe(p.steps)}steps-cfg${safe(p.cfg)}-${safe(p.sampler)}.png`;
}

async function save(target, kind, caption, params) {
  const canvas = await canvasOf(target);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const bytes = withText(new Uint8Array(await blob.arrayBuffer()), {
    parameters: parametersText(params, caption),
    atelier: JSON.stringify({ figure: kind, caption, params }),
  });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  a.download = fileName(kind, params);
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// ---- the buttons ----

/** Which part of the lab a figure belongs to: the card or view around it ("ex-cfg", "view-convergence", ...). */
function kindOf(node) {
  const home = node.closest("article[id], section[id]");
  return home ? home.id.replace(/^(panel|view)-/, "") : "figure";
}

function addButton(holder, target, readParams) {
  if (holder.dataset[MARK]) return;
  holder.dataset[MARK] = "true";
  const params = readParams();  // the panel as it was when the figure was drawn: the settings that made it
  const caption = holder.querySelector("figcaption")?.textContent || target.getAttribute?.("aria-label") || "";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "png-save small ghost";
  button.textContent = t("fig.save");
  button.title = t("fig.save_title");
  button.dataset.i18n = "fig.save";
  button.dataset.i18nTitle = "fig.save_title";
  button.addEventListener("click", () => {
    save(target, kindOf(holder), caption, params).catch((error) => showMessage(errorText(error)));
  });
  if (holder === target) holder.after(button);
  else holder.append(button);
}

function scan(root, readParams) {
  for (const fig of root.querySelectorAll(".main figure.fig:not(.pending)")) {
    const target = fig.querySelector("img, canvas");
    if (target) addButton(fig, target, readParams);
  }
  for (const chart of root.querySelectorAll(".main svg.chart")) addButton(chart, chart, readParams);
}

/** Watch the main area: every figure that a view, an exercise or a result draws gets its button. */
export function setup(readParams) {
  const main = document.querySelector(".main");
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => {
      pending = false;
      scan(document, readParams);
    });
  }).observe(main, { childList: true, subtree: true, attributes: true, attributeFilter: ["class"] });
  scan(document, readParams);
}
