// Talking to the Atelier server with ComfyUI's protocol, as the node editor does:
//   POST /api/prompt        queue an API-format graph; the answer holds its prompt_id
//   WebSocket /ws           progress, executed (node outputs), errors, and binary preview frames
//   GET /api/history/{id}   what a finished prompt produced (also read when a socket message was missed)
//   GET /api/view?...       the image files named in node outputs
// plus the lab's own routes under /atelier/lab/ (atelier/server/lab.py).

/** A sentence from the server (English), with the key and params of its translation when it sent them. */
export class ServerError extends Error {
  constructor(message, key = null, params = {}) {
    super(message);
    this.key = key;
    this.params = params;
  }
}
export class Interrupted extends Error {}

const clientId = (sessionStorage.getItem("atelier.lab.client") || crypto.randomUUID());
sessionStorage.setItem("atelier.lab.client", clientId);

// ---- plain requests ----

async function readError(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (body.error && typeof body.error === "string") return new ServerError(body.error, body.message_key, body.params);
    if (body.error && body.error.message && body.message_key) {  // a sentence the lab has in its languages (queue full)
      return new ServerError(body.error.message, body.message_key, body.params);
    }
    if (body.error && body.error.message) {
      // A rejected prompt: the general message plus the first node's first problem.
      const nodes = Object.values(body.node_errors || {});
      const detail = nodes.length ? nodes[0].errors?.[0] : null;
      return new ServerError(detail ? `${body.error.message}: ${detail.message} (${detail.details || ""})` : body.error.message);
    }
  } catch { /* not JSON: plain-text sentence */ }
  return new ServerError(text || `${resp.status} ${resp.statusText}`);
}

export async function getJSON(url) {
  let resp;
  try {
    resp = await fetch(url);
  } catch {
    throw new ServerError("offline");
  }
  if (!resp.ok) throw await readError(resp);
  return resp.json();
}

export async function postJSON(url, body, method = "POST") {
  let resp;
  try {
    resp = await fetch(url, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch {
    throw new ServerError("offline");
  }
  if (!resp.ok) throw await readError(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

/** PUT a JSON body (replace what the server keeps at `url`); returns the answer's JSON. */
export function putJSON(url, body) {
  return postJSON(url, body, "PUT");
}

/** Upload an image file into input/ (POST /api/upload/image); returns its file reference. */
export async function uploadImage(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("type", "input");
  form.append("overwrite", "true");
  const resp = await fetch("/api/upload/image", { method: "POST", body: form });
  if (!resp.ok) throw await readError(resp);
  const ref = await resp.json();  // {name, subfolder, type}
  return { filename: ref.name, subfolder: ref.subfolder || "", type: ref.type || "input" };
}

/** The URL of an output file reference {filename, subfolder, type}. */
export function viewUrl(ref) {
  const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder || "", type: ref.type || "output" });
  return `/api/view?${q}`;
}

/** The name LoadImage reads for an input reference ("photo.png" or "sub/photo.png"). */
export function inputName(ref) {
  return ref.subfolder ? `${ref.subfolder}/${ref.filename}` : ref.filename;
}

/**
 * One entry of GET /api/history, by name. ComfyUI keeps a queued prompt as the tuple [number, prompt_id, prompt,
 * extra_data, outputs_to_execute]: this is the one place of the page that knows those positions. `lab` is what the
 * lab queued with the prompt (extra_data.atelier_lab: kind, params, init_image, roles), null for other prompts.
 */
export function historyEntry(h) {
  const [, promptId, prompt, extra = {}] = h.prompt || [];
  const lab = extra.atelier_lab || null;
  // Entries queued before the lab recorded roles are plain generations: their one output is the image.
  const roles = lab?.roles || (lab ? { image: Object.keys(h.outputs || {})[0] } : {});
  return {
    promptId, prompt, lab, roles,
    workflow: extra.extra_pnginfo?.workflow,
    outputs: h.outputs || {},
    completed: Boolean(h.status?.completed),
  };
}

// ---- the live channel ----

const running = new Map();  // prompt_id -> handlers of the run in flight
let socket = null;
let queueRemaining = 0;
let waits = {};  // prompt_id -> its place in the queue, from the latest status message

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws?clientId=${clientId}`);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
  });
  socket.addEventListener("message", (event) => {
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      onMessage(message);
      notices.get(message.type)?.(message.data);  // a message about no prompt (classroom.js)
    } else onBinary(event.data);
  });
  socket.addEventListener("close", () => setTimeout(connect, 1000));  // the server restarted: try again
}

function onMessage({ type, data }) {
  if (type === "status") {
    queueRemaining = data.status?.exec_info?.queue_remaining ?? 0;
    // Where our prompts wait (Atelier's scheduler): {prompts: {id: {position, starts_in, done_in}}}, absent when
    // nothing of ours waits.
    waits = data.status?.atelier_wait?.prompts || {};
    for (const run of running.values()) {
      run.onQueue?.(queueRemaining);
      if (!run.started && waits[run.promptId]) run.onWait?.(waits[run.promptId]);
    }
    return;
  }
  const run = running.get(data?.prompt_id);
  if (!run) return;
  if (type === "execution_start") run.started = true, run.onStart?.();
  else if (type === "execution_cached") run.cached = data.nodes || [];
  else if (type === "progress") run.onProgress?.(data.value, data.max, data.node);
  else if (type === "executed") run.outputs[data.node] = data.output, run.onExecuted?.(data.node, data.output);
  else if (type === "execution_success") finish(data.prompt_id);
  else if (type === "execution_error") {
    run.fail(new ServerError(data.exception_message || data.exception_type, data.message_key, data.params));
  }
  else if (type === "atelier_retry") run.onRetry?.(data.reason);  // its worker was lost: the batch runs again
  else if (type === "execution_interrupted") run.fail(new Interrupted("interrupted"));
}

function onBinary(buffer) {
  // [u32 event][...]: event 4 = [u32 n][n bytes JSON metadata][image], event 1 = [u32 format][image]
  const view = new DataView(buffer);
  const event = view.getUint32(0);
  let meta = {}, offset = 8, mime = "image/jpeg";
  if (event === 4) {
    const n = view.getUint32(4);
    meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, n)));
    offset = 8 + n;
    mime = meta.image_type || mime;
  } else if (event === 1) {
    mime = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
  } else return;
  const run = meta.prompt_id ? running.get(meta.prompt_id) : [...running.values()][0];
  if (!run?.onPreview) return;
  run.onPreview(URL.createObjectURL(new Blob([buffer.slice(offset)], { type: mime })), meta.node_id);
}

async function finish(promptId) {
  const run = running.get(promptId);
  if (!run) return;
  // The history is the record: it holds every output and message even if the socket's were lost, as they are
  // when a prompt answered from the cache ends before this page has heard its id back from POST /api/prompt.
  try {
    const found = await getJSON(`/api/history/${promptId}`);
    const entry = found[promptId];
    if (entry) {
      Object.assign(run.outputs, entry.outputs);
      const cached = (entry.status?.messages || []).find(([kind]) => kind === "execution_cached");
      if (cached) run.cached = cached[1].nodes || [];
    }
  } catch { /* keep what the socket delivered */ }
  run.done({ promptId, outputs: run.outputs, cached: run.cached || [], stopRequested: Boolean(run.stopRequested) });
}

/**
 * Queue a prompt and wait for it. Resolves with {promptId, outputs: {node_id: ui}, cached: [node ids]}; rejects
 * with ServerError (rejected graph, node error) or Interrupted. `handlers`: onQueue(n), onWait({position,
 * starts_in, done_in}) while it waits, onStart(), onRetry(reason) (its worker was lost: it runs again), onProgress(v,
 * max, node), onPreview(url, node), onExecuted(node, output).
 */
export async function runPrompt(prompt, extraData = {}, handlers = {}) {
  if (!socket) connect();
  // The lab shows the sampler's live previews, so it asks for them: the server's default, as ComfyUI's, is none.
  const body = { prompt, client_id: clientId, extra_data: { preview_method: "auto", ...extraData } };
  const queued = await postJSON("/api/prompt", body);
  const promptId = queued.prompt_id;
  return new Promise((resolve, reject) => {
    const run = { ...handlers, outputs: {}, started: false };
    const poll = setInterval(async () => {  // a safety net for a lost socket: the history says how it ended
      try {
        const found = await getJSON(`/api/history/${promptId}`);
        const entry = found[promptId];
        if (!entry) return;
        if (entry.status?.completed) finish(promptId);
        else {
          const msgs = entry.status?.messages || [];
          const interrupted = msgs.some(([kind]) => kind === "execution_interrupted");
          const err = msgs.find(([kind]) => kind === "execution_error");
          run.fail(interrupted ? new Interrupted("interrupted") : new ServerError(err?.[1]?.exception_message || "error"));
        }
      } catch { /* the server is busy or restarting: try again later */ }
    }, 3000);
    const end = () => { clearInterval(poll); running.delete(promptId); };
    run.done = (result) => { end(); resolve(result); };
    run.fail = (error) => { end(); reject(error); };
    run.promptId = promptId;
    running.set(promptId, run);
    handlers.onQueued?.(promptId, queueRemaining);
    if (waits[promptId]) handlers.onWait?.(waits[promptId]);  // the status sent while the prompt was queued
  });
}

/**
 * Stop our prompts, and say so only once the server has: a pending prompt is taken off the queue (then GET
 * /api/queue no longer lists it, nor the history), the running one is asked to stop and ends when the server
 * reports execution_interrupted (on the socket, or in the history the poll reads). Meanwhile each run hears
 * onStopping(), and a run that finishes before the stop lands resolves as usual, with stopRequested set.
 */
export async function interrupt() {
  const runs = [...running.values()];
  for (const run of runs) {
    run.stopRequested = true;
    run.onStopping?.();
  }
  await postJSON("/api/queue", { delete: runs.map((r) => r.promptId) }).catch(() => {});
  let queue = null;
  try {
    queue = await getJSON("/api/queue");
  } catch { /* not known: ask every run to stop */ }
  const ids = (items) => new Set((items || []).map((item) => item[1]));  // queue tuples [number, prompt_id, ...]
  const pending = ids(queue?.queue_pending), current = ids(queue?.queue_running);
  for (const run of runs) {
    if (!queue || current.has(run.promptId)) {
      await postJSON("/api/interrupt", { prompt_id: run.promptId }).catch(() => {});
    } else if (!pending.has(run.promptId)) {
      const found = await getJSON(`/api/history/${run.promptId}`).catch(() => ({}));
      if (!found[run.promptId]) run.fail(new Interrupted("dequeued"));  // removed before it started
    }
  }
}

/** Forget cached node outputs so that the next prompt really runs every node again (POST /api/free). */
export async function forgetCache() {
  await postJSON("/api/free", { free_memory: true });
}

// ---- messages about no prompt: the instructor's exercise, in classroom mode (classroom.js) ----

const notices = new Map();  // message type -> handler(data)

/** Call `handler(data)` for every socket message of `type` ("atelier_exercise"). */
export function onNotice(type, handler) {
  notices.set(type, handler);
}

connect();
