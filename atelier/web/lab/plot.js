// Two small SVG charts, no library: lines (sigma per step, change per step) and a labelled scatter (concepts).

import { formatNumber } from "./i18n.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function ticks(lo, hi, count = 5) {
  const raw = (hi - lo) / count || 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toPrecision(6)));
  return out;
}

/**
 * Lines: series = [{name, values: [y per x], highlight?}]. Options: width, height, log (y axis), xLabel, yLabel.
 * On a log axis, y <= 0 is left out (every sigma schedule ends at 0).
 */
export function lineChart(series, { width = 720, height = 340, log = false, xLabel = "", yLabel = "", title = "" } = {}) {
  const m = { left: 56, right: 150, top: 24, bottom: 40 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title });
  const xs = Math.max(...series.map((s) => s.values.length - 1), 1);
  const all = series.flatMap((s) => s.values).filter((v) => (log ? v > 0 : Number.isFinite(v)));
  let lo = log ? Math.log10(Math.min(...all)) : Math.min(0, ...all);
  let hi = log ? Math.log10(Math.max(...all)) : Math.max(...all) * 1.05;
  if (log) [lo, hi] = [Math.floor(lo), Math.ceil(hi)];
  if (hi <= lo) hi = lo + 1;
  const px = (i) => m.left + ((width - m.left - m.right) * i) / xs;
  const py = (v) => height - m.bottom - ((height - m.top - m.bottom) * ((log ? Math.log10(v) : v) - lo)) / (hi - lo);

  const yTicks = log ? Array.from({ length: hi - lo + 1 }, (_, k) => 10 ** (lo + k)) : ticks(lo, hi);
  for (const v of yTicks) {
    root.append(svg("line", { x1: m.left, x2: width - m.right, y1: py(v), y2: py(v), class: "grid" }));
    root.append(svg("text", { x: m.left - 6, y: py(v) + 4, "text-anchor": "end", class: "tick" }, formatNumber(Number(v.toPrecision(3)))));
  }
  for (const i of ticks(0, xs, Math.min(10, xs))) {
    root.append(svg("text", { x: px(i), y: height - m.bottom + 16, "text-anchor": "middle", class: "tick" }, String(i)));
  }
  root.append(svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom, class: "axis" }));
  root.append(svg("line", { x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom, class: "axis" }));
  root.append(svg("text", { x: (m.left + width - m.right) / 2, y: height - 6, "text-anchor": "middle", class: "label" }, xLabel));
  root.append(svg("text", { x: 8, y: 14, class: "label" }, yLabel));

  const ordered = [...series.filter((s) => !s.highlight), ...series.filter((s) => s.highlight)];
  for (const s of ordered) {
    const points = s.values.map((v, i) => [i, v]).filter(([, v]) => (log ? v > 0 : Number.isFinite(v)));
    const d = points.map(([i, v], k) => `${k ? "L" : "M"}${px(i).toFixed(1)},${py(v).toFixed(1)}`).join("");
    root.append(svg("path", { d, class: s.highlight ? "line hl" : "line", "data-name": s.name, style: s.color ? `stroke:${s.color}` : "" }));
    if (s.highlight) for (const [i, v] of points) root.append(svg("circle", { cx: px(i), cy: py(v), r: 3, class: "dot" }));
  }
  series.forEach((s, row) => {
    const y = m.top + 6 + row * 17;
    root.append(svg("line", { x1: width - m.right + 12, x2: width - m.right + 30, y1: y, y2: y,
      class: s.highlight ? "line hl" : "line", style: s.color ? `stroke:${s.color}` : "" }));
    root.append(svg("text", { x: width - m.right + 36, y: y + 4, class: s.highlight ? "legend hl" : "legend" }, s.name));
  });
  return root;
}

/** Scatter of labelled points [{label, x, y, kind}], equal scales on both axes so distances mean something. */
export function scatter(points, { width = 720, height = 440, title = "" } = {}) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title });
  const pad = 50;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const span = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys), 1e-6);
  const cx = (Math.max(...xs) + Math.min(...xs)) / 2, cy = (Math.max(...ys) + Math.min(...ys)) / 2;
  const scale = Math.min(width - 2 * pad, height - 2 * pad) / span;
  const px = (x) => width / 2 + (x - cx) * scale, py = (y) => height / 2 - (y - cy) * scale;
  root.append(svg("line", { x1: 0, x2: width, y1: py(cy), y2: py(cy), class: "grid" }));
  root.append(svg("line", { x1: px(cx), x2: px(cx), y1: 0, y2: height, class: "grid" }));
  for (const p of points) {
    const g = svg("g", { class: `pt ${p.kind}`, "data-label": p.label });
    if (p.kind === "image") g.append(svg("rect", { x: px(p.x) - 5, y: py(p.y) - 5, width: 10, height: 10 }));
    else g.append(svg("circle", { cx: px(p.x), cy: py(p.y), r: 5 }));
    g.append(svg("text", { x: px(p.x) + 8, y: py(p.y) + 4 }, p.label));
    g.append(svg("title", {}, `${p.label}`));
    root.append(g);
  }
  return root;
}
