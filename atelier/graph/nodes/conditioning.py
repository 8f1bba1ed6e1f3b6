"""Conditioning: a prompt -> the CONDITIONING the UNet attends to; combining entries and placing them in areas."""

from __future__ import annotations

import dataclasses
import logging

import torch

from atelier.errors import InputError
from atelier.graph.kit import MAX_RESOLUTION, ClipModel, Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.pipeline import Cond, SizeConditioning

log = logging.getLogger(__name__)


class CLIPTextEncode(Node):
    SCHEMA = NodeSchema(
        name="CLIPTextEncode",
        display_name="CLIP Text Encode (Prompt)",
        category="conditioning",
        description="Encodes a prompt with the text encoder into the conditioning the UNet attends to. "
        "`embedding:name` (weighted like a word: `(embedding:name:1.2)`) puts a textual-inversion embedding from "
        "models/embeddings in the prompt.",
        inputs=[
            Input("text", "STRING", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
            Input("clip", "CLIP", tooltip="The CLIP model used for encoding the text."),
        ],
        outputs=[Output("CONDITIONING", tooltip="The prompt's token vectors, (1, 77 x chunks, width).")],
    )

    def run(self, ctx: NodeContext, text: str, clip: ClipModel) -> tuple:
        unknown: list[str] = []
        cond = clip.conditioning(text, unknown)  # SDXL: both towers read the text; sizes come from the latent
        if unknown:  # shown with the node's output, as well as logged: a missing embedding is not silent
            names = ", ".join(f"embedding:{name}" for name in unknown)
            return {"ui": {"warnings": [f"{names} matched no file in models/embeddings and was left out."]},
                    "result": ([cond],)}  # fmt: skip
        return ([cond],)


def _size_input(name: str, default: int, tooltip: str) -> Input:
    return Input(name, "INT", default=default, min=0, max=MAX_RESOLUTION, tooltip=tooltip)


def _require_sdxl(clip: ClipModel, node: str, base: bool = False) -> None:
    if not clip.is_sdxl:
        raise InputError(f"{node}'s clip is not an SDXL text encoder; expected the CLIP of an SDXL checkpoint.")
    if base and clip.text_encoder.clip_l is None:
        raise InputError(f"{node}'s clip is the SDXL refiner's, which reads one text; use CLIPTextEncodeSDXLRefiner.")


class CLIPTextEncodeSDXL(Node):
    SCHEMA = NodeSchema(
        name="CLIPTextEncodeSDXL",
        display_name="CLIP Text Encode (SDXL)",
        category="advanced/conditioning",
        description="Encodes a prompt for SDXL with each of its two text encoders reading its own text (text_g: "
        "OpenCLIP bigG, text_l: CLIP-L), and sets the sizes SDXL is conditioned on (Podell et al. 2023, "
        "micro-conditioning): the image's original size, the crop's corner and the target size.",
        inputs=[
            Input("clip", "CLIP", tooltip="The SDXL text encoders (the base checkpoint's CLIP)."),
            _size_input("width", 1024, "The original width the model is told the image had, in pixels."),
            _size_input("height", 1024, "The original height the model is told the image had, in pixels."),
            _size_input("crop_w", 0, "Left edge of the crop taken from the original, in pixels (0: uncropped)."),
            _size_input("crop_h", 0, "Top edge of the crop taken from the original, in pixels (0: uncropped)."),
            _size_input("target_width", 1024, "The width of the image being made, in pixels."),
            _size_input("target_height", 1024, "The height of the image being made, in pixels."),
            Input("text_g", "STRING", multiline=True, dynamic_prompts=True,
                  tooltip="The text for OpenCLIP ViT-bigG, the larger encoder (and the pooled vector)."),
            Input("text_l", "STRING", multiline=True, dynamic_prompts=True,
                  tooltip="The text for CLIP ViT-L, the smaller encoder."),
        ],
        outputs=[
            Output("CONDITIONING", tooltip="The prompt's token vectors (1, 77 x chunks, 2048), its pooled vector, "
                   "the sizes.")
        ],
    )

    def run(
        self,
        ctx: NodeContext,
        clip: ClipModel,
        width: int,
        height: int,
        crop_w: int,
        crop_h: int,
        target_width: int,
        target_height: int,
        text_g: str,
        text_l: str,
    ) -> tuple:
        _require_sdxl(clip, "CLIPTextEncodeSDXL", base=True)
        cond = clip.conditioning(text_g, text_l=text_l)  # the shorter text is padded with empty chunks
        sizes = SizeConditioning(width, height, crop_w, crop_h, target_width, target_height)
        return ([dataclasses.replace(cond, sizes=sizes)],)


class CLIPTextEncodeSDXLRefiner(Node):
    SCHEMA = NodeSchema(
        name="CLIPTextEncodeSDXLRefiner",
        display_name="CLIP Text Encode (SDXL Refiner)",
        category="advanced/conditioning",
        description="Encodes a prompt for the SDXL refiner (OpenCLIP bigG alone) with the aesthetic score and the "
        "original size it is conditioned on: the refiner learned to make images that score higher when told so.",
        inputs=[
            Input("ascore", "FLOAT", default=6.0, min=0.0, max=1000.0, step=0.01,
                  tooltip="The aesthetic score the image should have (LAION's aesthetic predictor, 0 to 10): about 6 "
                  "for the positive prompt, 2.5 for the negative."),
            _size_input("width", 1024, "The original width the model is told the image had, in pixels."),
            _size_input("height", 1024, "The original height the model is told the image had, in pixels."),
            Input("text", "STRING", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
            Input("clip", "CLIP", tooltip="The SDXL refiner's text encoder."),
        ],
        outputs=[
            Output("CONDITIONING", tooltip="The prompt's token vectors, its pooled vector, the score, the size.")
        ],
    )

    def run(self, ctx: NodeContext, ascore: float, width: int, height: int, text: str, clip: ClipModel) -> tuple:
        _require_sdxl(clip, "CLIPTextEncodeSDXLRefiner")
        cond = clip.conditioning(text)
        return ([dataclasses.replace(cond, sizes=SizeConditioning(width, height, aesthetic_score=ascore))],)


class CLIPSetLastLayer(Node):
    SCHEMA = NodeSchema(
        name="CLIPSetLastLayer",
        display_name="CLIP Set Last Layer",
        category="conditioning",
        description="Stops the text encoder early (clip skip): the prompt's vectors come from a layer before "
        "the last, as some fine-tuned models were trained.",
        inputs=[
            Input("clip", "CLIP", tooltip="The text encoder to stop early."),
            Input(
                "stop_at_clip_layer",
                "INT",
                default=-1,
                min=-24,
                max=-1,
                step=1,
                tooltip="The layer whose output is the conditioning, counted from the end: -1 the last, -2 the one "
                "before. Past the first layer, the first is used.",
            ),
        ],
        outputs=[Output("CLIP", tooltip="The same text encoder, stopping at the chosen layer.")],
    )

    def run(self, ctx: NodeContext, clip: ClipModel, stop_at_clip_layer: int) -> tuple:
        layers = clip.layers
        skip = min(-stop_at_clip_layer, layers)  # -1 = the last layer = clip skip 1
        return (dataclasses.replace(clip, clip_skip=skip),)


class ConditioningCombine(Node):
    SCHEMA = NodeSchema(
        name="ConditioningCombine",
        display_name="Conditioning (Combine)",
        category="conditioning",
        description="Joins two conditionings into one: at every step the UNet predicts with each entry and the "
        "predictions are averaged, weighted by their strength and area.",
        inputs=[
            Input("conditioning_1", "CONDITIONING", tooltip="The first conditioning."),
            Input("conditioning_2", "CONDITIONING", tooltip="The second conditioning, appended after the first."),
        ],
        outputs=[Output("CONDITIONING", tooltip="The entries of both, in order.")],
    )

    def run(self, ctx: NodeContext, conditioning_1: list[Cond], conditioning_2: list[Cond]) -> tuple:
        return (conditioning_1 + conditioning_2,)


class ConditioningSetArea(Node):
    SCHEMA = NodeSchema(
        name="ConditioningSetArea",
        display_name="Conditioning (Set Area)",
        category="conditioning",
        description="Limits a conditioning to a rectangle of the image: combined with others, each prompt paints "
        "its own area (area composition).",
        inputs=[
            Input("conditioning", "CONDITIONING", tooltip="The conditioning to place."),
            Input("width", "INT", default=64, min=64, max=MAX_RESOLUTION, step=8, tooltip="Area width in pixels."),
            Input("height", "INT", default=64, min=64, max=MAX_RESOLUTION, step=8, tooltip="Area height in pixels."),
            Input(
                "x",
                "INT",
                default=0,
                min=0,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="Left edge of the area, in pixels from the image's left.",
            ),
            Input(
                "y",
                "INT",
                default=0,
                min=0,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="Top edge of the area, in pixels from the image's top.",
            ),
            Input(
                "strength",
                "FLOAT",
                default=1.0,
                min=0.0,
                max=10.0,
                step=0.01,
                tooltip="The weight of this conditioning's prediction where areas overlap.",
            ),
        ],
        outputs=[Output("CONDITIONING", tooltip="The same entries, each limited to the area.")],
    )

    def run(
        self, ctx: NodeContext, conditioning: list[Cond], width: int, height: int, x: int, y: int, strength: float
    ) -> tuple:
        area = (height // 8, width // 8, y // 8, x // 8)
        return ([dataclasses.replace(c, area=area, strength=strength) for c in conditioning],)


def _first_context(conditioning: list[Cond], node: str) -> torch.Tensor:
    """The context of a conditioning's first entry: ConditioningAverage and ConditioningConcat read only that one
    (ComfyUI warns and does the same)."""
    if not conditioning:
        raise InputError(f"{node}'s conditioning_from is empty; expected at least one entry (a CLIPTextEncode).")
    if len(conditioning) > 1:
        log.warning("%s: conditioning_from has %d entries; only the first is used", node, len(conditioning))
    return conditioning[0].context


class ConditioningAverage(Node):
    SCHEMA = NodeSchema(
        name="ConditioningAverage",
        display_name="Conditioning (Average)",
        category="conditioning",
        description="Mixes two prompts' token vectors, position by position: strength * to + (1 - strength) * from. "
        "The shorter is padded with zeros (or the longer cut) to the length of conditioning_to.",
        inputs=[
            Input("conditioning_to", "CONDITIONING", tooltip="The conditioning whose entries are mixed (and kept)."),
            Input("conditioning_from", "CONDITIONING", tooltip="The conditioning mixed in; only its first entry."),
            Input(
                "conditioning_to_strength",
                "FLOAT",
                default=1.0,
                min=0.0,
                max=1.0,
                step=0.01,
                tooltip="The share of conditioning_to: 1 keeps it alone, 0 gives conditioning_from.",
            ),
        ],
        outputs=[Output("CONDITIONING", tooltip="The entries of conditioning_to with mixed vectors.")],
    )

    def run(
        self,
        ctx: NodeContext,
        conditioning_to: list[Cond],
        conditioning_from: list[Cond],
        conditioning_to_strength: float,
    ) -> tuple:
        source = _first_context(conditioning_from, "ConditioningAverage")  # (1, T', D)
        pooled_from = conditioning_from[0].pooled
        out = []
        for cond in conditioning_to:
            t = cond.context.shape[1]
            other = source[:, :t].to(cond.context)
            if other.shape[1] < t:  # pad the shorter prompt with zero vectors
                other = torch.cat([other, other.new_zeros(1, t - other.shape[1], other.shape[2])], dim=1)
            mixed = cond.context * conditioning_to_strength + other * (1.0 - conditioning_to_strength)
            pooled = cond.pooled
            if pooled is not None and pooled_from is not None:  # SDXL: the pooled vectors mix the same way
                pooled = pooled * conditioning_to_strength + pooled_from.to(pooled) * (1.0 - conditioning_to_strength)
            out.append(dataclasses.replace(cond, context=mixed, pooled=pooled))
        return (out,)


class ConditioningConcat(Node):
    SCHEMA = NodeSchema(
        name="ConditioningConcat",
        display_name="Conditioning (Concat)",
        category="conditioning",
        description="Appends one prompt's token vectors after another's: the UNet attends to both at once, as one "
        "longer prompt (77 + 77 tokens).",
        inputs=[
            Input("conditioning_to", "CONDITIONING", tooltip="The conditioning whose entries are extended (and kept)."),
            Input("conditioning_from", "CONDITIONING", tooltip="The tokens appended; only its first entry."),
        ],
        outputs=[Output("CONDITIONING", tooltip="The entries of conditioning_to, each with the tokens appended.")],
    )

    def run(self, ctx: NodeContext, conditioning_to: list[Cond], conditioning_from: list[Cond]) -> tuple:
        source = _first_context(conditioning_from, "ConditioningConcat")
        return ([dataclasses.replace(c, context=torch.cat([c.context, source.to(c.context)], dim=1))
                 for c in conditioning_to],)  # fmt: skip


class ConditioningSetTimestepRange(Node):
    SCHEMA = NodeSchema(
        name="ConditioningSetTimestepRange",
        display_name="ConditioningSetTimestepRange",
        category="advanced/conditioning",
        description="Limits a conditioning to part of the sampling: from start to end, as fractions of the way from "
        "pure noise (0) to the last step (1). Combined with another, one prompt can set the composition and the "
        "other the details.",
        inputs=[
            Input("conditioning", "CONDITIONING", tooltip="The conditioning to limit."),
            Input(
                "start",
                "FLOAT",
                default=0.0,
                min=0.0,
                max=1.0,
                step=0.001,
                tooltip="Where it starts to count: 0 at the first step.",
            ),
            Input(
                "end",
                "FLOAT",
                default=1.0,
                min=0.0,
                max=1.0,
                step=0.001,
                tooltip="Where it stops counting: 1 at the last step.",
            ),
        ],
        outputs=[Output("CONDITIONING", tooltip="The same entries, used only between start and end.")],
    )

    def run(self, ctx: NodeContext, conditioning: list[Cond], start: float, end: float) -> tuple:
        return ([dataclasses.replace(c, start_percent=start, end_percent=end) for c in conditioning],)


class ConditioningZeroOut(Node):
    SCHEMA = NodeSchema(
        name="ConditioningZeroOut",
        display_name="ConditioningZeroOut",
        category="advanced/conditioning",
        description="Sets every token vector (and SDXL's pooled vector) to zero: a negative that is not even the "
        "empty prompt, which some models were trained with.",
        inputs=[Input("conditioning", "CONDITIONING", tooltip="The conditioning to zero.")],
        outputs=[Output("CONDITIONING", tooltip="The same entries with all-zero vectors.")],
    )

    def run(self, ctx: NodeContext, conditioning: list[Cond]) -> tuple:
        # SDXL's pooled vector is zeroed too, as ComfyUI does; the sizes stay.
        return ([dataclasses.replace(c, context=torch.zeros_like(c.context),
                                     pooled=None if c.pooled is None else torch.zeros_like(c.pooled))
                 for c in conditioning],)  # fmt: skip
