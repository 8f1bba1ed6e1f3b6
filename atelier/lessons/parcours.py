"""Le parcours: its steps, a learner's progress through them, and (module 2) whether a graph has the expected wires.

Steps. STEPS lists the parcours' step ids in the order the lab shows them (web/lab/parcours.js holds the same list
with what each step opens; a test keeps the two equal). A learner's progress is {step id: {"done": bool, "opened":
ms}}: the lab keeps it in the browser and, so that an instructor can follow the class, sends it to the server
(server/lab.py, kept per learner in the store); `clean_progress` checks what arrives, `progress_summary` says how
far a learner is: steps done out of STEPS, and the current step (the first one not done).

Module 2: does the graph a learner ran in the node editor have the structure the step asks for?

A graph is an API prompt, {node_id: {"class_type", "inputs"}}, where a linked input is [source_id, output_index].
The checks read it as a workshop instructor would, wire by wire, and name each wire that is missing:

    txt2img  (rebuild, puzzle)   CheckpointLoaderSimple -MODEL-> KSampler.model
                                 CheckpointLoaderSimple -CLIP-> CLIPTextEncode (x2) -> KSampler.positive / .negative
                                 EmptyLatentImage -> KSampler.latent_image
                                 KSampler -> VAEDecode.samples, CheckpointLoaderSimple -VAE-> VAEDecode.vae
                                 VAEDecode -> SaveImage (or PreviewImage)
    img2img                      the same, with LoadImage -> VAEEncode -> KSampler.latent_image and denoise < 1

A missing wire is returned as its name (e.g. "sampler_positive"): the page says it in the learner's language.
Node ids, positions and widget values other than denoise are free: two learners' graphs rarely share ids.
"""

from __future__ import annotations

from typing import Any

from atelier.errors import InputError

STEPS = (
    "th-noise", "th-latent", "th-clip", "th-scheduler",  # theory
    "m1-stability", "m1-variability", "m1-cfg", "m1-steps", "m1-xy", "m1-samplers",  # module 1, in the lab
    "m2-rebuild", "m2-puzzle", "m2-img2img",  # module 2, in the node editor
)  # fmt: skip
CHECKS = ("txt2img", "img2img")
CHECKPOINT_OUTPUTS = {"MODEL": 0, "CLIP": 1, "VAE": 2}  # CheckpointLoaderSimple's outputs, in order


def clean_progress(raw: Any) -> dict[str, dict]:
    """A learner's progress as the lab sends it, checked: {step id: {"done": bool, "opened": ms}} with known ids.

    Raises InputError (one sentence) for anything else, so a hand-made request cannot store junk."""
    if not isinstance(raw, dict):
        raise InputError("steps must be an object {step id: {done, opened}}.")
    progress: dict[str, dict] = {}
    for step, record in raw.items():
        if step not in STEPS:
            raise InputError(f"step {step!r} is not a step of the parcours; expected one of {', '.join(STEPS)}.")
        if not isinstance(record, dict) or set(record) - {"done", "opened"}:
            raise InputError(f"step {step!r} must be {{done: true|false, opened: ms}}.")
        done, opened = record.get("done", False), record.get("opened")
        if not isinstance(done, bool):
            raise InputError(f"done of step {step!r} must be true or false.")
        if opened is not None and (isinstance(opened, bool) or not isinstance(opened, int) or not 0 <= opened < 2**53):
            raise InputError(f"opened of step {step!r} must be a time in ms since the epoch.")
        progress[step] = {"done": done} | ({"opened": opened} if opened is not None else {})
    return progress


def progress_summary(progress: dict[str, dict]) -> dict[str, Any]:
    """How far a learner is: {"done": n, "total": len(STEPS), "steps": [done ids, in order], "current": the first
    step not done (None when all are)}. Extra steps count like the others: the table shows them all."""
    done = [step for step in STEPS if progress.get(step, {}).get("done")]
    current = next((step for step in STEPS if step not in done), None)
    return {"done": len(done), "total": len(STEPS), "steps": done, "current": current}


def _source(prompt: dict[str, Any], value: Any) -> tuple[str | None, int | None]:
    """(class_type, output index) of what a linked input is wired to; (None, None) for a widget value."""
    if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
        return prompt[str(value[0])].get("class_type"), value[1]
    return None, None


def _wired(prompt: dict, node: dict, input_name: str, class_type: str, output: int = 0) -> bool:
    return _source(prompt, node.get("inputs", {}).get(input_name)) == (class_type, output)


def missing_wires(prompt: dict[str, Any], check: str) -> list[str]:
    """The wires of `check` ("txt2img" or "img2img") that `prompt` lacks; [] when its structure is the expected one.

    The graph passes when one of its KSamplers has every wire: extra nodes (a preview, a second pass) are fine."""
    if check not in CHECKS:
        raise ValueError(f"check {check!r} is not known; expected one of {', '.join(CHECKS)}.")
    samplers = [n for n in prompt.values() if isinstance(n, dict) and n.get("class_type") == "KSampler"]
    if not samplers:
        return ["sampler"]
    best: list[str] | None = None
    for sampler in samplers:
        missing = _missing_around(prompt, sampler, check)
        if best is None or len(missing) < len(best):
            best = missing
    return best or []


def _missing_around(prompt: dict, sampler: dict, check: str) -> list[str]:
    inputs = sampler.get("inputs", {})
    missing = []
    if not _wired(prompt, sampler, "model", "CheckpointLoaderSimple", CHECKPOINT_OUTPUTS["MODEL"]):
        missing.append("sampler_model")
    for side in ("positive", "negative"):
        encoder = _node_of(prompt, inputs.get(side))
        if encoder is None or encoder.get("class_type") != "CLIPTextEncode":
            missing.append(f"sampler_{side}")
        elif not _wired(prompt, encoder, "clip", "CheckpointLoaderSimple", CHECKPOINT_OUTPUTS["CLIP"]):
            missing.append(f"{side}_clip")
    if inputs.get("positive") is not None and inputs.get("positive") == inputs.get("negative"):
        missing.append("two_prompts")  # one text encoder wired to both: guidance then has nothing to push from
    latent = _node_of(prompt, inputs.get("latent_image"))
    if check == "txt2img":
        if latent is None or latent.get("class_type") != "EmptyLatentImage":
            missing.append("empty_latent")
    else:
        if latent is None or latent.get("class_type") != "VAEEncode":
            missing.append("vae_encode")
        else:
            if not _wired(prompt, latent, "pixels", "LoadImage", 0):
                missing.append("load_image")
            if not _wired(prompt, latent, "vae", "CheckpointLoaderSimple", CHECKPOINT_OUTPUTS["VAE"]):
                missing.append("encode_vae")
        denoise = inputs.get("denoise", 1.0)
        if not isinstance(denoise, (int, float)) or not 0 < denoise < 1:
            missing.append("denoise")
    sampler_id = next(k for k, v in prompt.items() if v is sampler)
    decoders = [
        n
        for n in prompt.values()
        if n.get("class_type") == "VAEDecode"
        and _source(prompt, n.get("inputs", {}).get("samples"))[0] is not None
        and str(n["inputs"]["samples"][0]) == sampler_id
    ]
    if not decoders:
        missing.append("decode")
        return missing
    decoder = decoders[0]
    if not _wired(prompt, decoder, "vae", "CheckpointLoaderSimple", CHECKPOINT_OUTPUTS["VAE"]):
        missing.append("decode_vae")
    decoder_id = next(k for k, v in prompt.items() if v is decoder)
    shown = any(
        n.get("class_type") in ("SaveImage", "PreviewImage")
        and isinstance(n.get("inputs", {}).get("images"), list)
        and str(n["inputs"]["images"][0]) == decoder_id
        for n in prompt.values()
    )
    if not shown:
        missing.append("save")
    return missing


def _node_of(prompt: dict, value: Any) -> dict | None:
    """The node a linked input is wired to, or None."""
    if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
        return prompt[str(value[0])]
    return None
