"""The lab: a plain page at /lab/ for the workshop, and the few routes only it needs under /atelier/lab/.

Generations in the lab go through the same ComfyUI protocol as the node editor (POST /api/prompt, /ws, /api/view,
/api/history): the lab asks this module for the graph of its parameters, queues it, and shows what comes back.
The routes below answer the questions a graph cannot: how a prompt is cut into tokens, which sigmas a scheduler
visits, where words (and images) sit in the text encoder's space, what the VAE keeps of an image, and whether two
images are the same pixel for pixel.

    GET  /lab/                          the page (atelier/web/lab/: index.html, lab.css, *.js, i18n/*.json)
    GET  /atelier/lab/options           models, samplers, schedulers and the teaching defaults
    POST /atelier/lab/graph             {params, view?, init_image?, words?} -> {prompt (API), workflow (editor)}
    POST /atelier/lab/workflow          {prompt} -> {workflow}: any API prompt, laid out for the node editor
    GET  /atelier/lab/tokens?text=      the prompt's tokens, ids and 77-token windows
    GET  /atelier/lab/schedules?steps=&scheduler=&denoise=   sigma per step for every scheduler
    POST /atelier/lab/concepts          {words, images?} -> 2-D map (PCA) of text and image embeddings
    POST /atelier/lab/vae-roundtrip     {image: file ref} -> reconstruction, 4 latent channels, compression figures
    POST /atelier/lab/compare           {a, b: file refs} -> pixel difference of two images

The models these routes need (the embedded model's text encoder, VAE and image encoder, ~10 MB in all) are
loaded on first use and kept; the UNet is not kept, since only the prompt queue samples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from aiohttp import web
from PIL import Image, ImageOps

from atelier.errors import AtelierError, InputError
from atelier.server.files import UnsafePathError, safe_join
from atelier.server.frontend import MIME_TYPES, NO_CACHE
from atelier.server.security import page_policy
from atelier.server.state import error_text, state

LAB_ROOT = Path(__file__).resolve().parent.parent / "web" / "lab"
API = "/atelier/lab"
EMBEDDED = "embedded.safetensors"  # models.library.EMBEDDED_NAME, without importing torch at server start
MAX_WORDS = 40  # concept map: words and phrases per request
MAX_IMAGES = 12  # concept map: images per request
MAX_TEXT = 2000  # characters of a prompt for the token view
VAE_MAX_SIDE = 512  # the VAE round trip shrinks larger uploads (a CPU must answer in seconds)

# What the lab starts with: small and quick on a laptop CPU, and each value the plain textbook one.
TEACHING_DEFAULTS = {
    "model": EMBEDDED,
    "prompt": "a red circle on the left",
    "negative": "",
    "seed": 42,
    "steps": 20,
    "cfg": 7.5,
    "sampler": "euler",
    "scheduler": "normal",
    "width": 128,
    "height": 128,
    "batch": 1,
    "denoise": 1.0,
}

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------------------
# The models behind the routes, loaded once
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LabModels:
    text_encoder: Any  # models.clip.CLIPTextEncoder
    tokenizer: Any  # models.tokenizer.CLIPTokenizer
    vae: Any  # models.vae.VAE
    image_encoder: Any | None  # world.encoders.ImageEncoder, None when the extras file is missing


_models: LabModels | None = None
_tokenizer: Any = None
_lock = threading.Lock()


def lab_models() -> LabModels:
    """The embedded model's text encoder, tokenizer, VAE and image encoder (fp32, CPU), loaded on first call."""
    global _models
    with _lock:
        if _models is None:
            _models = _load_models()
        return _models


def _load_models() -> LabModels:
    import torch
    from safetensors.torch import load_file

    from atelier.models.checkpoint import load_checkpoint
    from atelier.models.library import EMBEDDED_EXTRAS_PATH, embedded_model_path
    from atelier.world.encoders import ImageEncoder

    ckpt = load_checkpoint(embedded_model_path(), device="cpu", dtype=torch.float32)
    image_encoder = None
    if EMBEDDED_EXTRAS_PATH.is_file():
        prefix = "image_encoder."
        weights = {
            k[len(prefix) :]: v.float() for k, v in load_file(str(EMBEDDED_EXTRAS_PATH)).items() if k.startswith(prefix)
        }
        if weights:
            image_encoder = ImageEncoder(ckpt.text_encoder_config.projection_dim)
            image_encoder.load_state_dict(weights)
            image_encoder.eval()
    return LabModels(ckpt.text_encoder, ckpt.tokenizer, ckpt.vae, image_encoder)


def tokenizer() -> Any:
    """The CLIP tokenizer alone (no weights): the token view answers without loading any model."""
    global _tokenizer
    with _lock:
        if _tokenizer is None:
            from atelier.models.tokenizer import CLIPTokenizer

            _tokenizer = CLIPTokenizer.from_default()
        return _tokenizer


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run torch work off the event loop, so the page and the WebSocket stay live meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# --------------------------------------------------------------------------------------------------------------
# Request helpers
# --------------------------------------------------------------------------------------------------------------


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise InputError("The request body is not valid JSON; expected a JSON object.") from None
    if not isinstance(body, dict):
        raise InputError("The request body must be a JSON object.")
    return body


def _int_arg(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {raw!r}.") from None
    if not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {value}.")
    return value


def _open_ref(request: web.Request, ref: Any, what: str) -> Image.Image:
    """An RGB image from a file reference {"filename", "subfolder", "type"} (input, output or temp)."""
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise InputError(f"The {what} must be a file reference {{filename, subfolder, type}}, got {ref!r}.")
    path = state(request).files.path({"type": "input", "subfolder": "", **ref})
    if not path.is_file():
        raise InputError(f"The {what} {ref['filename']!r} does not exist in {ref.get('type', 'input')}/.")
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def _handler(fn: Callable) -> Callable:
    """Turn a user's mistake (AtelierError) into a 400 JSON {"error": sentence}; anything else is a bug (500)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except UnsafePathError as ex:
            return _bad(str(ex), ex.status)
        except AtelierError as ex:
            return _bad(str(ex))

    return wrapped


# --------------------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------------------


async def lab_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/lab/")


async def lab_file(request: web.Request) -> web.StreamResponse:
    relative = request.match_info.get("path") or "index.html"
    try:
        path = safe_join(LAB_ROOT, relative, what="file")
    except UnsafePathError as ex:
        return error_text(ex.status, str(ex))
    if not path.is_file():
        return error_text(404, f"No lab file {relative!r}.")
    mime = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(path, headers={"Content-Type": mime, "Content-Security-Policy": page_policy(), **NO_CACHE})


# --------------------------------------------------------------------------------------------------------------
# Options and graphs
# --------------------------------------------------------------------------------------------------------------


def _choices(request: web.Request, node: str, input_name: str, fallback: list[str]) -> list[str]:
    """A combo's options as the node editor sees them (the registry may hold stub nodes in tests)."""
    registry = state(request).registry
    if node not in registry:
        return fallback
    for inp in registry.require(node).SCHEMA.inputs:
        if inp.name == input_name:
            return inp.choices()
    return fallback


@_handler
async def options(request: web.Request) -> web.Response:
    from atelier.sampling.samplers import SAMPLERS
    from atelier.sampling.schedules import SCHEDULERS

    return web.json_response(
        {
            "models": _choices(request, "CheckpointLoaderSimple", "ckpt_name", [EMBEDDED]),
            "samplers": list(SAMPLERS),
            "schedulers": list(SCHEDULERS),
            "defaults": TEACHING_DEFAULTS,
            "node_types": sorted(state(request).registry),
        }
    )


def generation_params(raw: Any) -> Any:
    """GenerationParams from the page's JSON, checked (one sentence for the first bad value)."""
    from atelier.generation import GenerationParams

    if not isinstance(raw, dict):
        raise InputError("params must be a JSON object of generation parameters.")
    fields = {f.name: f for f in dataclasses.fields(GenerationParams)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise InputError(f"Unknown generation parameter {unknown[0]!r}; expected some of {', '.join(fields)}.")
    values = {**TEACHING_DEFAULTS, **raw}
    values = {k: v for k, v in values.items() if k in fields}
    for name in ("seed", "steps", "width", "height", "batch"):
        value = values[name]
        if isinstance(value, float) and value.is_integer():
            values[name] = int(value)
    params = GenerationParams(**values)
    params.check()
    if params.seed == -1:
        raise InputError("Seed -1 (random) is drawn by the page before queuing; the graph needs the seed itself.")
    return params


def ui_workflow(request: web.Request, prompt: dict) -> dict:
    from atelier.graph.workflow import api_to_ui

    return api_to_ui(prompt, state(request).registry)


VIEWS = ("generate", "filmstrip", "convergence", "latent", "attention")


def _animation(images: list, filename_prefix: str) -> dict:
    """A SaveAnimatedWEBP node: the frames of a film strip as one animated picture (6 frames/s)."""
    return {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": images,
            "filename_prefix": filename_prefix,
            "fps": 6.0,
            "lossless": False,
            "quality": 90,
            "method": "default",
        },
    }


def view_graph(
    params: Any, view: str, init_image: str | None = None, words: list[str] | None = None, prefix: str = "lab"
) -> dict:
    """The API prompt behind one lab view: the classic graph (generation.api_graph) with its output end swapped.

    - generate: the classic graph as is (KSampler -> VAEDecode -> SaveImage).
    - filmstrip: the KSampler becomes AtelierFilmStripSampler; its noisy and predicted frames are previewed one
      by one and saved as two animated WebPs.
    - convergence: two film-strip samplers on the same noise, euler and euler_ancestral; predicted frames of both.
    - latent: the classic graph, plus AtelierLatentChannels on the sampled latent (4 grey images and their stats).
    - attention: one AtelierCrossAttentionMap per word (each generates with euler/normal and records attention).
    """
    from atelier.generation import api_graph

    if view not in VIEWS:
        raise InputError(f"view {view!r} is not known; expected one of {', '.join(VIEWS)}.")
    g = api_graph(params, init_image=init_image, filename_prefix=prefix)
    if view == "generate":
        return g
    sampler_inputs = dict(g["3"]["inputs"])
    if view in ("filmstrip", "convergence"):
        del g["3"], g["8"], g["9"]
        samplers = [params.sampler] if view == "filmstrip" else ["euler", "euler_ancestral"]
        for n, name in enumerate(samplers):
            node = str(20 + 10 * n)
            g[node] = {
                "class_type": "AtelierFilmStripSampler",
                "inputs": {**sampler_inputs, "sampler_name": name, "vae": ["4", 2]},
            }
            g[str(21 + 10 * n)] = {"class_type": "PreviewImage", "inputs": {"images": [node, 2]}}
            g[str(22 + 10 * n)] = _animation([node, 2], f"{prefix}/{name}_predicted")
            if view == "filmstrip":
                g[str(23 + 10 * n)] = {"class_type": "PreviewImage", "inputs": {"images": [node, 1]}}
                g[str(24 + 10 * n)] = _animation([node, 1], f"{prefix}/{name}_noisy")
    elif view == "latent":
        g["20"] = {
            "class_type": "AtelierLatentChannels",
            "inputs": {"samples": ["3", 0], "normalize": "shared symmetric"},
        }
        g["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
        g["22"] = {"class_type": "PreviewAny", "inputs": {"source": ["20", 1]}}
    elif view == "attention":
        words = [w.strip() for w in (words or []) if isinstance(w, str) and w.strip()]
        if not words:
            raise InputError("The attention view needs at least one word of the prompt to map.")
        if len(words) > 8:
            raise InputError(f"The attention view maps at most 8 words at once, got {len(words)}.")
        g = {"4": g["4"]}
        for n, word in enumerate(words):
            node = str(20 + 10 * n)
            g[node] = {
                "class_type": "AtelierCrossAttentionMap",
                "inputs": {
                    "model": ["4", 0],
                    "clip": ["4", 1],
                    "vae": ["4", 2],
                    "text": params.prompt,
                    "word": word,
                    "seed": params.seed,
                    "steps": params.steps,
                    "cfg": params.cfg,
                    "width": params.width,
                    "height": params.height,
                },
            }
            g[str(21 + 10 * n)] = {"class_type": "PreviewImage", "inputs": {"images": [node, 1]}}
        g["19"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    return dict(sorted(g.items(), key=lambda kv: int(kv[0])))


@_handler
async def graph(request: web.Request) -> web.Response:
    body = await _body(request)
    params = generation_params(body.get("params"))
    init_image = body.get("init_image")
    if init_image is not None and (not isinstance(init_image, str) or not init_image):
        raise InputError("init_image must be the name of an uploaded image in input/, e.g. 'photo.png'.")
    if init_image is None and params.denoise < 1.0:
        raise InputError("Denoise below 1 needs an init image (img2img); upload one or set denoise to 1.")
    words = body.get("words")
    if words is not None and not isinstance(words, list):
        raise InputError("words must be a list of words of the prompt.")
    prefix = body.get("filename_prefix") or "lab"
    if not isinstance(prefix, str):
        raise InputError("filename_prefix must be text, e.g. 'lab'.")
    prompt = view_graph(params, str(body.get("view") or "generate"), init_image, words, prefix)
    return web.json_response({"prompt": prompt, "workflow": ui_workflow(request, prompt)})


@_handler
async def workflow(request: web.Request) -> web.Response:
    body = await _body(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, dict) or not prompt:
        raise InputError("prompt must be an API-format graph {node_id: {class_type, inputs}}.")
    return web.json_response({"workflow": ui_workflow(request, prompt)})


# --------------------------------------------------------------------------------------------------------------
# Text: tokens and the 77-token window
# --------------------------------------------------------------------------------------------------------------


def token_report(text: str) -> dict:
    """The tokens of a prompt as the text encoder gets them, window by window.

    The text encoder reads 77 positions: <start>, 75 text tokens, <end>, padding. Longer prompts are not cut here:
    they are split into several windows, encoded one by one and joined (ComfyUI's rule), so words after the 75th
    token are read without the words before them. `over` says how many tokens spill past the first window.
    """
    from atelier.models.tokenizer import parse_prompt_weights

    tok = tokenizer()
    tokens = []
    for segment, weight in parse_prompt_weights(text):
        tokens += [{"text": piece, "id": token_id, "weight": weight} for piece, token_id in tok.pieces(segment)]
    windows = []
    for chunk in tok.tokenize_weighted(text):
        windows.append([{"id": i, "text": tok.token_text(i), "weight": w} for i, w in chunk])
    text_slots = tok.window - 2
    return {
        "tokens": tokens,
        "count": len(tokens),
        "window": tok.window,
        "text_slots": text_slots,
        "over": max(0, len(tokens) - text_slots),
        "windows": windows,
        "start_id": tok.start_id,
        "end_id": tok.end_id,
    }


@_handler
async def tokens(request: web.Request) -> web.Response:
    text = request.query.get("text", "")
    if len(text) > MAX_TEXT:
        raise InputError(f"text is {len(text)} characters long; the token view reads at most {MAX_TEXT}.")
    return web.json_response(await _in_thread(token_report, text))


# --------------------------------------------------------------------------------------------------------------
# Schedules: sigma per step
# --------------------------------------------------------------------------------------------------------------


def schedule_report(steps: int, current: str, denoise: float) -> dict:
    """Every scheduler's sigmas for `steps` steps on SD's training schedule (the embedded model's too)."""
    from atelier.sampling.denoisers import DiscreteSchedule
    from atelier.sampling.schedules import SCHEDULERS, sigmas_for

    if current not in SCHEDULERS:
        raise InputError(f"Scheduler {current!r} is not known; expected one of {', '.join(SCHEDULERS)}.")
    schedule = DiscreteSchedule.scaled_linear()
    curves = {name: [round(float(s), 5) for s in sigmas_for(name, schedule, steps, denoise)] for name in SCHEDULERS}
    return {
        "steps": steps,
        "current": current,
        "denoise": denoise,
        "sigma_max": float(schedule.sigma_max),
        "sigma_min": float(schedule.sigma_min),
        "schedulers": curves,
    }


@_handler
async def schedules(request: web.Request) -> web.Response:
    steps = _int_arg(request.query, "steps", 20, 1, 1000)
    raw = request.query.get("denoise", "1")
    try:
        denoise = float(raw)
    except ValueError:
        raise InputError(f"denoise must be a number from 0 to 1, got {raw!r}.") from None
    if not 0.0 < denoise <= 1.0:
        raise InputError(f"denoise must be a number above 0 and at most 1, got {denoise}.")
    return web.json_response(schedule_report(steps, request.query.get("scheduler", "normal"), denoise))


# --------------------------------------------------------------------------------------------------------------
# Concept map: text (and image) embeddings projected to 2-D
# --------------------------------------------------------------------------------------------------------------


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """(N, D) -> (N, 2) coordinates on the two directions of largest variance, and the share of variance of each.

    Principal component analysis: centre the points, take the SVD X = U S V^T; the first two rows of V^T are the
    directions along which the points spread most, and X V[:, :2] = U[:, :2] S[:2] are the coordinates.
    """
    centred = vectors - vectors.mean(axis=0, keepdims=True)  # (N, D)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coords = u[:, :2] * s[:2]  # (N, <=2)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    variance = s**2
    share = (variance[:2] / variance.sum()).tolist() if variance.sum() > 0 else [0.0, 0.0]
    return coords, share + [0.0] * (2 - len(share))


def concept_map(words: list[str], images: list[Image.Image], image_labels: list[str]) -> dict:
    """Unit-length embeddings of each word (the text encoder's `projected` output, the space CLIP training shares
    with the image encoder) and of each image, their cosine similarities, and a 2-D PCA of them all."""
    import torch
    import torch.nn.functional as F

    m = lab_models()
    vectors = []
    with torch.no_grad():
        if words:
            ids = torch.tensor([m.tokenizer(w) for w in words])  # (W, 77)
            projected = m.text_encoder(ids).projected
            if projected is None:
                raise InputError("This text encoder has no projection, so its words cannot be placed on the map.")
            vectors.append(F.normalize(projected.float(), dim=-1))  # (W, D)
        if images:
            if m.image_encoder is None:
                raise InputError("The embedded model's image encoder is missing, so images cannot be placed.")
            batch = []
            for img in images:
                side = 128  # the image encoder was trained on 128x128 scenes
                small = ImageOps.fit(img, (side, side), Image.Resampling.LANCZOS)
                batch.append(torch.from_numpy(np.asarray(small, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
            vectors.append(F.normalize(m.image_encoder(torch.stack(batch)).float(), dim=-1))  # (I, D)
    emb = torch.cat(vectors).numpy()  # (N, D), unit rows
    similarity = emb @ emb.T  # (N, N) cosine similarity
    coords, share = pca_2d(emb)
    labels = [*words, *image_labels]
    kinds = ["text"] * len(words) + ["image"] * len(images)
    points = []
    for n, (label, kind) in enumerate(zip(labels, kinds, strict=True)):
        others = [(float(similarity[n, j]), j) for j in range(len(labels)) if j != n]
        best = max(others) if others else (1.0, n)
        points.append(
            {
                "label": label,
                "kind": kind,
                "x": float(coords[n, 0]),
                "y": float(coords[n, 1]),
                "nearest": labels[best[1]],
                "nearest_similarity": round(best[0], 4),
            }
        )
    return {"points": points, "explained": share, "similarity": np.round(similarity, 4).tolist(), "dim": emb.shape[1]}


@_handler
async def concepts(request: web.Request) -> web.Response:
    body = await _body(request)
    words = body.get("words", [])
    refs = body.get("images", [])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise InputError("words must be a list of words or short phrases.")
    if not isinstance(refs, list):
        raise InputError("images must be a list of file references {filename, subfolder, type}.")
    words = [w.strip() for w in words if w.strip()]
    if len(words) > MAX_WORDS or len(refs) > MAX_IMAGES:
        raise InputError(f"The concept map takes at most {MAX_WORDS} words and {MAX_IMAGES} images at once.")
    if len(words) + len(refs) < 3:
        raise InputError("Give at least 3 words or images in all: a map of fewer points shows nothing.")
    images = [_open_ref(request, ref, "image") for ref in refs]
    labels = [str(ref.get("label") or ref["filename"]) for ref in refs]
    return web.json_response(await _in_thread(concept_map, words, images, labels))


# --------------------------------------------------------------------------------------------------------------
# VAE round trip and latent channels
# --------------------------------------------------------------------------------------------------------------


def channel_image(channel: np.ndarray) -> Image.Image:
    """One latent channel (h, w) as a grey image, scaled so -3..3 (about +-3 standard deviations) spans 0..255."""
    return Image.fromarray(((np.clip(channel, -3, 3) + 3) / 6 * 255).round().astype(np.uint8), mode="L")


def vae_roundtrip(image: Image.Image, save: Callable[[Image.Image, str], dict]) -> dict:
    """Encode an image to the latent (posterior mean), decode it back, and measure what was lost.

    The latent has 4 numbers per 8x8 block of pixels where the image has 3 x 64: 48 times fewer numbers.
    """
    import torch

    from atelier.pipeline import decode, encode

    m = lab_models()
    scale = min(1.0, VAE_MAX_SIDE / max(image.size))
    width, height = (max(8, int(image.width * scale) // 8 * 8), max(8, int(image.height * scale) // 8 * 8))
    original = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(original, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    latent = encode(m.vae, pixels)  # (1, 4, H/8, W/8), raw
    back = decode(m.vae, latent)  # (1, 3, H, W) in [-1, 1]
    rebuilt = ((back[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    source = np.asarray(original, dtype=np.uint8)
    error = rebuilt.astype(np.float64) - source.astype(np.float64)
    mse = float((error**2).mean())
    scaled = latent[0].numpy() * m.vae.config.scaling_factor  # what the UNet sees: about unit variance
    pixel_values, latent_values = source.size, scaled.size
    return {
        "original": save(original, "lab_vae_in"),
        "reconstruction": save(Image.fromarray(rebuilt), "lab_vae_out"),
        "channels": [save(channel_image(c), f"lab_latent_c{i}") for i, c in enumerate(scaled)],
        "channel_stats": [{"mean": float(c.mean()), "std": float(c.std())} for c in scaled],
        "image_shape": [3, height, width],
        "latent_shape": list(scaled.shape),
        "pixel_values": pixel_values,
        "latent_values": latent_values,
        "ratio_values": pixel_values / latent_values,
        "ratio_bytes_fp16": pixel_values / (latent_values * 2),  # 8-bit pixels vs 16-bit latent numbers
        "mean_abs_error": float(np.abs(error).mean()),
        "psnr_db": 10 * math.log10(255**2 / mse) if mse > 0 else float("inf"),
    }


@_handler
async def vae_roundtrip_route(request: web.Request) -> web.Response:
    body = await _body(request)
    image = _open_ref(request, body.get("image"), "image")
    files = state(request).files

    def save(img: Image.Image, prefix: str) -> dict:
        return files.save_image(img, prefix, "temp")

    return web.json_response(await _in_thread(vae_roundtrip, image, save))


# --------------------------------------------------------------------------------------------------------------
# Are two images the same?
# --------------------------------------------------------------------------------------------------------------


def compare_images(a: Image.Image, b: Image.Image) -> dict:
    """Pixel difference of two images of one size: max and mean |a - b| over the 8-bit RGB values."""
    if a.size != b.size:
        raise InputError(f"The two images differ in size ({a.width}x{a.height} and {b.width}x{b.height}).")
    x, y = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    diff = np.abs(x - y)  # (H, W, 3)
    return {
        "identical": bool(diff.max() == 0),
        "max_abs": int(diff.max()),
        "mean_abs": float(diff.mean()),
        "differing_pixels": int((diff.max(axis=2) > 0).sum()),
        "pixels": a.width * a.height,
    }


@_handler
async def compare(request: web.Request) -> web.Response:
    body = await _body(request)
    a, b = _open_ref(request, body.get("a"), "image a"), _open_ref(request, body.get("b"), "image b")
    return web.json_response(compare_images(a, b))


def setup(app: web.Application) -> None:
    """Mount the page and its routes (before the editor's catch-all static route)."""
    app.router.add_get("/lab", lab_redirect)
    app.router.add_get("/lab/", lab_file)
    app.router.add_get("/lab/{path:.+}", lab_file)
    app.router.add_get(f"{API}/options", options)
    app.router.add_post(f"{API}/graph", graph)
    app.router.add_post(f"{API}/workflow", workflow)
    app.router.add_get(f"{API}/tokens", tokens)
    app.router.add_get(f"{API}/schedules", schedules)
    app.router.add_post(f"{API}/concepts", concepts)
    app.router.add_post(f"{API}/vae-roundtrip", vae_roundtrip_route)
    app.router.add_post(f"{API}/compare", compare)
