"""ComfyUI core nodes that Atelier knows by name but cannot run yet: GLIGEN, style models, ...

Why list nodes that do nothing? Two reasons.

1. The official editor (comfyui-frontend-package, since 1.27) assumes ComfyUI's model loaders exist. On the first
   combo widget named ckpt_name, vae_name or lora_name it maps model folders to loader nodes (LoraLoader,
   UpscaleModelLoader, ControlNetLoader, ...) and reads `nodeDef.name` of each; a loader missing from
   /object_info makes that throw, and the Load Checkpoint node is drawn without its ckpt_name widget.
2. A workflow saved with ComfyUI that uses one of them should open in the editor as it was drawn, and queueing it
   should say plainly what is missing ("Load Style Model (StyleModelLoader) is not supported by Atelier
   yet ..."), instead of the generic "node not found".

Each class below copies ComfyUI's input names and order (so `widgets_values` map correctly) and refuses in
`validate_inputs`, which the validator reports as `custom_validation_failed` before anything runs. Their
category is empty: the editor treats such nodes as deprecated and leaves them out of its node library.

    registry = default_registry(models, files, extra_nodes=UNSUPPORTED_NODES)
"""

from __future__ import annotations

from typing import Any

from atelier.errors import AtelierError
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output


class NotSupportedYet:
    """A node Atelier cannot run: `validate_inputs` (defined per class, naming one input so that the validator
    reports exactly one error) returns `refusal()`."""

    SCHEMA: NodeSchema
    WHY = ""  # what the node would do, for the sentence

    @classmethod
    def refusal(cls) -> str:
        title = (cls.SCHEMA.display_name or cls.SCHEMA.name).removesuffix(" (not in Atelier yet)")
        return (
            f"{title} ({cls.SCHEMA.name}) is not supported by Atelier yet: it {cls.WHY}; "
            "bypass or delete it to run the rest of the graph."
        )

    def run(self, ctx: NodeContext, **inputs: Any) -> tuple:
        raise AtelierError(self.refusal())


def _schema(name: str, title: str, inputs: list[Input], outputs: list[Output]) -> NodeSchema:
    return NodeSchema(
        name=name,
        display_name=f"{title} (not in Atelier yet)",
        category="",  # = deprecated for the editor: hidden from the node library, still drawn when loaded
        description="A ComfyUI node that Atelier does not support yet; it is listed so that workflows open.",
        inputs=inputs,
        outputs=outputs,
    )


def _file(name: str) -> Input:
    return Input(name, "COMBO", options=())


def _strength(name: str) -> Input:
    return Input(name, "FLOAT", default=1.0, min=-100.0, max=100.0, step=0.01)


class ImageOnlyCheckpointLoader(NotSupportedYet):
    SCHEMA = _schema(
        "ImageOnlyCheckpointLoader",
        "Image Only Checkpoint Loader (img2vid model)",
        [_file("ckpt_name")],
        [Output("MODEL"), Output("CLIP_VISION"), Output("VAE")],
    )
    WHY = "would load an image-to-video model (Stable Video Diffusion)"

    @classmethod
    def validate_inputs(cls, ckpt_name: str) -> str:
        return cls.refusal()


class StyleModelLoader(NotSupportedYet):
    SCHEMA = _schema("StyleModelLoader", "Load Style Model", [_file("style_model_name")], [Output("STYLE_MODEL")])
    WHY = "would load a style adapter that conditions on an image"

    @classmethod
    def validate_inputs(cls, style_model_name: str) -> str:
        return cls.refusal()


class GLIGENLoader(NotSupportedYet):
    SCHEMA = _schema("GLIGENLoader", "GLIGENLoader", [_file("gligen_name")], [Output("GLIGEN")])
    WHY = "would load GLIGEN, which places objects in boxes"

    @classmethod
    def validate_inputs(cls, gligen_name: str) -> str:
        return cls.refusal()


UNSUPPORTED_NODES: tuple[type[NotSupportedYet], ...] = (
    ImageOnlyCheckpointLoader,
    StyleModelLoader,
    GLIGENLoader,
)
