"""Constants as nodes: ComfyUI's String, String (Multiline), Int, Float and Boolean (comfy_extras/nodes_primitive.py).

Each holds one value typed in its widget and hands it on, so that one number or text can feed several inputs
(widgets turned into sockets) and be changed in one place. They are real nodes that the prompt carries, unlike the
editor's PrimitiveNode, which never leaves the editor (graph/workflow.py puts its value into each input it feeds).
ComfyUI's newer templates and subgraphs use them for the values shown on a subgraph.
"""

from __future__ import annotations

import sys
from typing import Any

from atelier.graph.kit import Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output

TOOLTIP = "The value to hand on."


def _primitive(name: str, title: str, value: Input, output: str) -> NodeSchema:
    return NodeSchema(
        name=name,
        display_name=title,
        category="utils/primitive",
        description=f"Holds one {title.lower()} value and hands it on to every input it is linked to.",
        inputs=[value],
        outputs=[Output(output, tooltip="The value, unchanged.")],
    )


class _Constant(Node):
    def run(self, ctx: NodeContext, value: Any) -> tuple:
        return (value,)


class PrimitiveString(_Constant):
    SCHEMA = _primitive("PrimitiveString", "String", Input("value", "STRING", default="", tooltip=TOOLTIP), "STRING")


class PrimitiveStringMultiline(_Constant):
    SCHEMA = _primitive(
        "PrimitiveStringMultiline",
        "String (Multiline)",
        Input("value", "STRING", default="", multiline=True, tooltip=TOOLTIP),
        "STRING",
    )


class PrimitiveInt(_Constant):
    SCHEMA = _primitive(
        "PrimitiveInt",
        "Int",
        Input(
            "value", "INT", default=0, min=-sys.maxsize, max=sys.maxsize, control_after_generate=True, tooltip=TOOLTIP
        ),
        "INT",
    )


class PrimitiveFloat(_Constant):
    SCHEMA = _primitive(
        "PrimitiveFloat",
        "Float",
        Input("value", "FLOAT", default=0.0, min=-sys.maxsize, max=sys.maxsize, step=0.1, tooltip=TOOLTIP),
        "FLOAT",
    )


class PrimitiveBoolean(_Constant):
    SCHEMA = _primitive(
        "PrimitiveBoolean", "Boolean", Input("value", "BOOLEAN", default=False, tooltip=TOOLTIP), "BOOLEAN"
    )


PRIMITIVE_NODES: tuple[type[Node], ...] = (
    PrimitiveString,
    PrimitiveStringMultiline,
    PrimitiveInt,
    PrimitiveFloat,
    PrimitiveBoolean,
)
