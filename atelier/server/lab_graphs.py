"""The graphs behind the lab's views, and the name of every output a view reads.

Each lab view is an API prompt queued like the node editor's (POST /api/prompt). The page never picks an output by
its node id: with each graph comes `roles`, a map from what an output is to the node that makes it,

    {"image": "9", "channels": "21", "channel_stats": "22"}        (the latent view)

and the page reads a run's outputs only through that map (`output(run, role)` in web/lab/ui.js). The map travels
with the prompt into the history (extra_data.atelier_lab.roles), so the gallery finds its images the same way. A
graph may be renumbered and no view notices; ComfyUI's /api/history is left exactly as the node editor reads it.

The roles of each view:

    generate      image
    filmstrip     noisy_frames, predicted_frames (one PreviewImage per step), noisy_animation, predicted_animation
    convergence   euler/predicted_frames, euler/predicted_animation, and the same two for euler_ancestral
    latent        image, channels (4 grey images), channel_stats (text)
    attention     image (the first word's generation), attention_map/0, attention_map/1, ... in the words' order

`PARAM_INPUTS` says which node input each numeric parameter of the lab's form becomes, so the form takes its
limits from those inputs' schemas rather than from a copy of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from atelier.errors import InputError
from atelier.generation import IMAGE_NODE, GenerationParams, api_graph

VIEWS = ("generate", "filmstrip", "convergence", "latent", "attention")
MAX_ATTENTION_WORDS = 8

# The lab's numeric parameters and the (node, input) each one sets in generation.api_graph.
PARAM_INPUTS = {
    "seed": ("KSampler", "seed"),
    "steps": ("KSampler", "steps"),
    "cfg": ("KSampler", "cfg"),
    "denoise": ("KSampler", "denoise"),
    "width": ("EmptyLatentImage", "width"),
    "height": ("EmptyLatentImage", "height"),
    "batch": ("EmptyLatentImage", "batch_size"),
}


@dataclasses.dataclass(frozen=True)
class LabGraph:
    prompt: dict[str, Any]  # API format: {node_id: {"class_type", "inputs"}}
    roles: dict[str, str]  # what an output is -> the id of the node that makes it


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


def _preview(images: list) -> dict:
    return {"class_type": "PreviewImage", "inputs": {"images": images}}


def view_graph(
    params: GenerationParams,
    view: str,
    init_image: str | None = None,
    words: list[str] | None = None,
    prefix: str = "lab",
) -> LabGraph:
    """The API prompt behind one lab view: the classic graph (generation.api_graph) with its output end swapped.

    - generate: the classic graph as is (KSampler -> VAEDecode -> SaveImage).
    - filmstrip: the KSampler becomes AtelierFilmStripSampler; its noisy and predicted frames are previewed one
      by one and saved as two animated WebPs.
    - convergence: two film-strip samplers on the same noise, euler and euler_ancestral; predicted frames of both.
    - latent: the classic graph, plus AtelierLatentChannels on the sampled latent (4 grey images and their stats).
    - attention: one AtelierCrossAttentionMap per word (each generates with euler/normal and records attention).
    """
    if view not in VIEWS:
        raise InputError(f"view {view!r} is not known; expected one of {', '.join(VIEWS)}.")
    g = api_graph(params, init_image=init_image, filename_prefix=prefix)
    if view == "generate":
        return LabGraph(g, {"image": IMAGE_NODE})
    if view in ("filmstrip", "convergence"):
        return _film_strips(g, params, view, prefix)
    if view == "latent":
        return _latent_channels(g)
    return _attention_maps(g, params, words)


def _film_strips(g: dict, params: GenerationParams, view: str, prefix: str) -> LabGraph:
    """One AtelierFilmStripSampler per sampler in place of the KSampler, VAEDecode and SaveImage."""
    sampler_inputs = dict(g["3"]["inputs"])
    del g["3"], g["8"], g[IMAGE_NODE]
    samplers = [params.sampler] if view == "filmstrip" else ["euler", "euler_ancestral"]
    roles = {}
    for n, name in enumerate(samplers):
        node = str(20 + 10 * n)
        own = "" if view == "filmstrip" else f"{name}/"  # convergence tells its two samplers' outputs apart
        g[node] = {
            "class_type": "AtelierFilmStripSampler",
            "inputs": {**sampler_inputs, "sampler_name": name, "vae": ["4", 2]},
        }
        frames, animation = str(21 + 10 * n), str(22 + 10 * n)
        g[frames] = _preview([node, 2])
        g[animation] = _animation([node, 2], f"{prefix}/{name}_predicted")
        roles[f"{own}predicted_frames"], roles[f"{own}predicted_animation"] = frames, animation
        if view == "filmstrip":
            frames, animation = str(23 + 10 * n), str(24 + 10 * n)
            g[frames] = _preview([node, 1])
            g[animation] = _animation([node, 1], f"{prefix}/{name}_noisy")
            roles["noisy_frames"], roles["noisy_animation"] = frames, animation
    return LabGraph(_sorted(g), roles)


def _latent_channels(g: dict) -> LabGraph:
    """The classic graph, plus AtelierLatentChannels on the KSampler's latent."""
    g["20"] = {
        "class_type": "AtelierLatentChannels",
        "inputs": {"samples": ["3", 0], "normalize": "shared symmetric"},
    }
    g["21"] = _preview(["20", 0])
    g["22"] = {"class_type": "PreviewAny", "inputs": {"source": ["20", 1]}}
    return LabGraph(_sorted(g), {"image": IMAGE_NODE, "channels": "21", "channel_stats": "22"})


def _attention_maps(g: dict, params: GenerationParams, words: list[str] | None) -> LabGraph:
    """The checkpoint loader and one AtelierCrossAttentionMap per word; the first word's image is previewed."""
    words = [w.strip() for w in (words or []) if isinstance(w, str) and w.strip()]
    if not words:
        raise InputError("The attention view needs at least one word of the prompt to map.")
    if len(words) > MAX_ATTENTION_WORDS:
        raise InputError(f"The attention view maps at most {MAX_ATTENTION_WORDS} words at once, got {len(words)}.")
    g = {"4": g["4"]}
    roles = {}
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
        g[str(21 + 10 * n)] = _preview([node, 1])
        roles[f"attention_map/{n}"] = str(21 + 10 * n)
    g["19"] = _preview(["20", 0])
    return LabGraph(_sorted(g), {"image": "19", **roles})


def _sorted(g: dict) -> dict:
    """Nodes in the order of their ids, as api_graph writes them."""
    return dict(sorted(g.items(), key=lambda kv: int(kv[0])))
