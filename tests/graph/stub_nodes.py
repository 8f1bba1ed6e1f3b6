"""Stub nodes for the graph tests: small integer arithmetic standing in for loaders, samplers and savers.

They follow the same contract as the real SD nodes (schema.py) and record what they do in a shared `Journal`, so a
test can tell which nodes ran, with what, and how often.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import ClassVar

from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Input, NodeContext, NodeOutput, NodeSchema, Output


@dataclass
class Journal:
    runs: list[tuple[str, str]] = field(default_factory=list)  # (node_id, class name), in run order
    saved: list = field(default_factory=list)  # what Save received
    started: threading.Event = field(default_factory=threading.Event)  # set when Slow begins

    def ran(self, class_name: str | None = None) -> list[str]:
        return [n for n, c in self.runs if class_name is None or c == class_name]


JOURNAL = Journal()
CHECKPOINTS = ["a.safetensors", "b.safetensors"]  # the "files on disk" behind the dynamic combo


def _log(ctx: NodeContext, name: str) -> None:
    JOURNAL.runs.append((ctx.node_id, name))


class Constant:
    SCHEMA = NodeSchema(
        name="Constant",
        display_name="Integer constant",
        category="stub",
        description="Outputs its value.",
        inputs=[Input("value", "INT", default=0, min=-1000, max=1000, tooltip="The number to output.")],
        outputs=[Output("INT", name="value", tooltip="The same number.")],
    )

    def run(self, ctx: NodeContext, value: int) -> tuple:
        _log(ctx, "Constant")
        return (value,)


class Loader:
    """Stands in for CheckpointLoaderSimple: a dynamic combo of files, three outputs."""

    SCHEMA = NodeSchema(
        name="Loader",
        category="stub/loaders",
        inputs=[Input("ckpt_name", "COMBO", options=lambda: CHECKPOINTS, tooltip="Checkpoint file.")],
        outputs=[Output("MODEL"), Output("CLIP"), Output("VAE")],
    )

    def run(self, ctx: NodeContext, ckpt_name: str) -> tuple:
        _log(ctx, "Loader")
        return (f"model:{ckpt_name}", f"clip:{ckpt_name}", f"vae:{ckpt_name}")


class Encode:
    """Stands in for CLIPTextEncode."""

    SCHEMA = NodeSchema(
        name="Encode",
        category="stub",
        inputs=[Input("text", "STRING", default="", multiline=True, dynamic_prompts=True), Input("clip", "CLIP")],
        outputs=[Output("CONDITIONING")],
    )

    def run(self, ctx: NodeContext, text: str, clip: str) -> tuple:
        _log(ctx, "Encode")
        return (f"cond({text})",)


class Add:
    SCHEMA = NodeSchema(
        name="Add",
        category="stub",
        inputs=[Input("a", "INT", default=0), Input("b", "INT", default=0, min=-10, max=10)],
        outputs=[Output("INT", name="sum")],
    )

    def run(self, ctx: NodeContext, a: int, b: int) -> tuple:
        _log(ctx, "Add")
        return (a + b,)


class Sampler:
    """KSampler-like: a seed with control_after_generate, steps, a sampler combo, a cfg float, progress per step."""

    SCHEMA = NodeSchema(
        name="Sampler",
        category="stub/sampling",
        inputs=[
            Input("model", "MODEL"),
            Input("seed", "INT", default=0, min=0, max=2**64 - 1, control_after_generate=True),
            Input("steps", "INT", default=3, min=1, max=100),
            Input("cfg", "FLOAT", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
            Input("sampler_name", "COMBO", options=["euler", "heun"]),
            Input("positive", "CONDITIONING"),
            Input("latent", "INT", force_input=True),
            Input("denoise", "FLOAT", default=1.0, min=0.0, max=1.0, step=0.01, optional=True),
        ],
        outputs=[Output("LATENT")],
    )

    def run(self, ctx: NodeContext, model, seed, steps, cfg, sampler_name, positive, latent, denoise=1.0) -> tuple:
        _log(ctx, "Sampler")
        for step in range(steps):
            ctx.check_interrupt()
            ctx.progress(step + 1, steps)
        return (f"latent({latent},seed={seed},steps={steps},{sampler_name},{positive})",)


class Save:
    """An output node with a UI result and the hidden inputs SaveImage uses."""

    SCHEMA = NodeSchema(
        name="Save",
        category="stub/image",
        output_node=True,
        inputs=[
            Input("images", "*"),
            Input("filename_prefix", "STRING", default="Atelier"),
            Input("prompt", "PROMPT", hidden=True),
            Input("extra_pnginfo", "EXTRA_PNGINFO", hidden=True),
        ],
    )

    def run(self, ctx: NodeContext, images, filename_prefix: str, prompt=None, extra_pnginfo=None) -> NodeOutput:
        _log(ctx, "Save")
        JOURNAL.saved.append(images)
        return NodeOutput(
            ui={"images": [{"filename": f"{filename_prefix}_{images}", "subfolder": "", "type": "output"}]}
        )


class Fail:
    SCHEMA = NodeSchema(name="Fail", category="stub", inputs=[Input("value", "INT")], outputs=[Output("INT")])

    def run(self, ctx: NodeContext, value: int) -> tuple:
        _log(ctx, "Fail")
        raise ValueError(f"cannot handle {value}")


class Range:
    """A list output: [start, start+1, ..., start+count-1] as separate items."""

    SCHEMA = NodeSchema(
        name="Range",
        category="stub",
        inputs=[Input("start", "INT", default=0), Input("count", "INT", default=3, min=0)],
        outputs=[Output("INT", is_list=True)],
    )

    def run(self, ctx: NodeContext, start: int, count: int) -> tuple:
        _log(ctx, "Range")
        return (list(range(start, start + count)),)


class Sum:
    """INPUT_IS_LIST: receives whole lists."""

    SCHEMA = NodeSchema(
        name="Sum", category="stub", input_is_list=True, inputs=[Input("values", "INT")], outputs=[Output("INT")]
    )

    def run(self, ctx: NodeContext, values: list) -> tuple:
        _log(ctx, "Sum")
        return (sum(values),)


class Collect:
    """An output node that records every item it receives (once per list item)."""

    SCHEMA = NodeSchema(
        name="Collect", category="stub", output_node=True, inputs=[Input("value", "*")], outputs=[Output("*")]
    )

    def run(self, ctx: NodeContext, value) -> dict:
        _log(ctx, "Collect")
        JOURNAL.saved.append(value)
        return {"ui": {"text": [str(value)]}, "result": (value,)}


class Slow:
    """Loops until interrupted (checking once per step), signalling when it has started."""

    SCHEMA = NodeSchema(name="Slow", category="stub", inputs=[Input("value", "INT")], outputs=[Output("INT")])

    def run(self, ctx: NodeContext, value: int) -> tuple:
        _log(ctx, "Slow")
        JOURNAL.started.set()
        for _ in range(2000):
            ctx.check_interrupt()
            threading.Event().wait(0.005)
        return (value,)


class FileReader:
    """Has is_changed (think: a file hash); `value` NaN means always re-run."""

    SCHEMA = NodeSchema(
        name="FileReader", category="stub", inputs=[Input("path", "STRING", default="")], outputs=[Output("STRING")]
    )
    versions: ClassVar[dict[str, float]] = {}

    @classmethod
    def is_changed(cls, path: str) -> float:
        return cls.versions.get(path, 0.0)

    def run(self, ctx: NodeContext, path: str) -> tuple:
        _log(ctx, "FileReader")
        return (f"contents of {path}",)


class Even:
    """Custom validation: only even numbers."""

    SCHEMA = NodeSchema(
        name="Even", category="stub", inputs=[Input("value", "INT", default=0, max=10)], outputs=[Output("INT")]
    )

    @classmethod
    def validate_inputs(cls, value: int) -> bool | str:
        return True if value % 2 == 0 else f"{value} is odd"

    def run(self, ctx: NodeContext, value: int) -> tuple:
        _log(ctx, "Even")
        return (value,)


class Flags:
    """BOOLEAN and FLOAT coercion, optional input and an image_upload combo."""

    SCHEMA = NodeSchema(
        name="Flags",
        category="stub",
        inputs=[
            Input("image", "COMBO", options=["x.png", "y.png"], image_upload=True),
            Input("enabled", "BOOLEAN", default=True),
            Input("scale", "FLOAT", default=1.0),
            Input("extra", "INT", optional=True, force_input=True),
        ],
        outputs=[Output("IMAGE"), Output("MASK")],
    )

    def run(self, ctx: NodeContext, image: str, enabled: bool, scale: float, extra: int | None = None) -> tuple:
        _log(ctx, "Flags")
        return (f"{image}:{enabled}:{scale}:{extra}", "mask")


ALL = [Constant, Loader, Encode, Add, Sampler, Save, Fail, Range, Sum, Collect, Slow, FileReader, Even, Flags]


def stub_registry() -> NodeRegistry:
    return NodeRegistry(ALL)


def reset() -> Journal:
    JOURNAL.runs.clear()
    JOURNAL.saved.clear()
    JOURNAL.started.clear()
    FileReader.versions.clear()
    FileReader.versions["nan"] = math.nan
    return JOURNAL
