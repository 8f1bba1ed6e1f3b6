"""Conditioning: a prompt -> the CONDITIONING the UNet attends to; combining entries and placing them in areas."""

from __future__ import annotations

import dataclasses

from atelier.errors import InputError
from atelier.graph.kit import MAX_RESOLUTION, ClipModel, Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.limits import check_prompt_text
from atelier.pipeline import Cond, encode_prompt


class CLIPTextEncode(Node):
    SCHEMA = NodeSchema(
        name="CLIPTextEncode",
        display_name="CLIP Text Encode (Prompt)",
        category="conditioning",
        description="Encodes a prompt with the text encoder into the conditioning the UNet attends to.",
        inputs=[
            Input("text", "STRING", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
            Input("clip", "CLIP", tooltip="The CLIP model used for encoding the text."),
        ],
        outputs=[Output("CONDITIONING", tooltip="The prompt's token vectors, (1, 77 x chunks, width).")],
    )

    def run(self, ctx: NodeContext, text: str, clip: ClipModel) -> tuple:
        context = encode_prompt(clip.text_encoder, clip.tokenizer, text, clip.clip_skip)
        return ([Cond(context)],)

    @classmethod
    def validate_inputs(cls, text: str | None) -> bool | str:
        """Refuse a prompt too long to encode (limits.py) before it is queued; linked text is checked when run."""
        try:
            check_prompt_text(text or "")
        except InputError as error:
            return str(error)
        return True


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
        layers = clip.text_encoder.config.layers
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
