// Small DOM helpers shared by the views: building elements, labelled figures, the message bar.

import { has, t } from "./i18n.js";
import { Interrupted, viewUrl } from "./api.js";

/** el("p.note", {title: "x"}, "text", child...) -> <p class="note" title="x">text child</p> */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A figure with an image (a file reference or a URL) and a caption. */
export function figure(src, caption, extra = {}) {
  const url = typeof src === "string" ? src : viewUrl(src);
  return el("figure.fig", extra, el("img", { src: url, alt: caption, loading: "lazy" }), el("figcaption", {}, caption));
}

/** Show a message in the bar at the top (kind: "error" or "info"). */
export function showMessage(text, kind = "error") {
  const bar = document.getElementById("message");
  document.getElementById("message-text").textContent = text;
  bar.dataset.kind = kind;
  bar.hidden = false;
}

export function hideMessage() {
  document.getElementById("message").hidden = true;
}

/** The sentence for an error, in the page's language where we know it. */
export function errorText(error) {
  if (error instanceof Interrupted) return t(error.message === "dequeued" ? "err.dequeued" : "err.interrupted");
  if (error?.message === "offline") return t("err.offline");
  if (error?.key && has(`server.${error.key}`)) return t(`server.${error.key}`, error.params);
  return t("err.prefix", { message: error?.message || String(error) });
}

/** A button's busy state while `work` runs; errors go to the message bar. Returns the work's result or null. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } catch (error) {
    showMessage(errorText(error), error instanceof Interrupted ? "info" : "error");
    return null;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/**
 * What a run's graph produced under the name `role` ("image", "channels", ...): the output of the node that the
 * server named so with the graph (atelier/server/lab_graphs.py). `run` is a result of runView or a historyEntry,
 * both {outputs: {node_id: ui}, roles: {role: node_id}}. The one place of the page that turns a role into a node id.
 */
export function output(run, role) {
  const node = run.roles?.[role];
  if (node === undefined) {
    throw new Error(`No output is named ${role}; this graph names ${Object.keys(run.roles || {}).join(", ") || "none"}.`);
  }
  return run.outputs[node] || {};
}

/** The image file references of the output named `role`: [{filename, subfolder, type}]. */
export function images(run, role) {
  return output(run, role).images || [];
}
