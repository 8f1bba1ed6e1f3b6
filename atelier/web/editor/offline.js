// The editor stays on this machine: a request to another site is refused here, quietly, before it is made.
// (Served by atelier/server/frontend.py, listed by /api/extensions.)
//
// The ComfyUI frontend (1.58) has remote calls that no setting turns off, read from its bundle:
// - a workflow that gives a model a download URL (properties.models or the workflow's `models`: [{name, url,
//   directory}]) and whose file is missing makes the missing-models check send `fetch(url, {method: "HEAD"})` to
//   huggingface.co or civitai.com for the file's size (missingModelMetadata-*.js, fetchHeadMetadata);
// - the right-hand panel ("View details" of a missing model) looks the workflow's node packs up in the Comfy
//   registry, `GET https://api.comfy.org/nodes?node_id=comfy-core` through axios, i.e. XMLHttpRequest
//   (useWorkflowPacks);
// - its error reporter posts to sentry.io.
// The page's Content-Security-Policy (connect-src 'self') already refuses all of them, but Chromium reports each
// refusal as a console error, which buries the learner's real errors. Here they fail the way a refused request
// fails (fetch rejects with a TypeError, an XMLHttpRequest fires "error"), which the bundle already handles: the
// missing model is still listed with its name and folder (checkpoints, loras...), only its download size is
// unknown. One console.info per site says what was not asked. The policy stays as it is, the second lock.

const here = window.location.origin;
const toldAbout = new Set();

function elsewhere(url) {
  let target;
  try {
    target = new URL(String(url), document.baseURI);
  } catch {
    return null; // not a URL the browser could fetch either: let the real call fail as it would
  }
  const web = target.protocol === "http:" || target.protocol === "https:";
  return web && target.origin !== here ? target : null;
}

function refuse(target) {
  if (!toldAbout.has(target.host)) {
    toldAbout.add(target.host);
    console.info(`[Atelier] The editor works offline: nothing is sent to ${target.host}.`);
  }
}

const pageFetch = window.fetch.bind(window);
window.fetch = function fetchHereOnly(resource, options) {
  const target = elsewhere(resource instanceof Request ? resource.url : resource);
  if (target) {
    refuse(target);
    return Promise.reject(new TypeError(`Atelier works offline: ${target.host} was not asked.`));
  }
  return pageFetch(resource, options);
};

const open = XMLHttpRequest.prototype.open;
const send = XMLHttpRequest.prototype.send;
const refusedTarget = new WeakMap(); // request -> the other site's URL it was opened for

XMLHttpRequest.prototype.open = function openHereOnly(method, url, ...rest) {
  const target = elsewhere(url);
  if (target) refusedTarget.set(this, target);
  else refusedTarget.delete(this);
  return open.call(this, method, url, ...rest);
};

XMLHttpRequest.prototype.send = function sendHereOnly(body) {
  const target = refusedTarget.get(this);
  if (!target) return send.call(this, body);
  refuse(target);
  // What a network failure looks like to the caller (axios rejects with "Network Error" on "error").
  setTimeout(() => {
    this.dispatchEvent(new ProgressEvent("error"));
    this.dispatchEvent(new ProgressEvent("loadend"));
  });
};
