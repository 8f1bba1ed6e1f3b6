"""Model merging and saving: two UNets blended weight by weight, and a MODEL, CLIP and VAE written back as one
checkpoint file."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch
from safetensors.torch import save

from atelier.errors import AtelierError, InputError
from atelier.graph.kit import ClipModel, Node
from atelier.graph.schema import Input, NodeContext, NodeOutput, NodeSchema, Output
from atelier.models.lora import Adapter, FullDiff, WeightPatch, patched
from atelier.pipeline import DiffusionModel


def _effective_weights(model: DiffusionModel) -> dict[str, torch.Tensor]:
    """Every UNet weight of `model` as it samples (its LoRAs and earlier merges applied), copied in float32."""
    with patched(model.unet, model.patches):
        return {name: p.detach().float().clone() for name, p in model.unet.named_parameters()}


class ModelMergeSimple(Node):
    SCHEMA = NodeSchema(
        name="ModelMergeSimple",
        display_name="ModelMergeSimple",
        category="advanced/model_merging",
        description="Blends two UNets of the same architecture weight by weight: ratio * model1 + (1 - ratio) * "
        "model2. The checkpoint files are not changed; the blend is applied while the merged model samples.",
        inputs=[
            Input("model1", "MODEL", tooltip="The first model; the result keeps its schedule and latent scale."),
            Input("model2", "MODEL", tooltip="The model blended in."),
            Input(
                "ratio",
                "FLOAT",
                default=1.0,
                min=0.0,
                max=1.0,
                step=0.01,
                tooltip="The share of model1: 1 keeps it alone, 0 gives model2's weights.",
            ),
        ],
        outputs=[Output("MODEL", tooltip="The blended model.")],
    )

    def run(self, ctx: NodeContext, model1: DiffusionModel, model2: DiffusionModel, ratio: float) -> tuple:
        if ratio == 1.0:
            return (model1,)
        first, second = _effective_weights(model1), _effective_weights(model2)
        shapes = {name: tuple(w.shape) for name, w in first.items()}
        if shapes != {name: tuple(w.shape) for name, w in second.items()}:
            raise InputError("ModelMergeSimple's model2 has other weights than model1; expected two UNets of the same "
                             "architecture (two SD1.5 checkpoints, say).")  # fmt: skip
        # As a patch applied after model1's own (ComfyUI's add_patches with strength_model = ratio): the weight W1
        # model1 samples with moves by (1 - ratio) * (W2 - W1), which lands on ratio * W1 + (1 - ratio) * W2.
        adapters = {name: Adapter(FullDiff(second[name] - first[name])) for name in first}
        merge = WeightPatch(adapters, 1.0 - ratio, "ModelMergeSimple")
        return (dataclasses.replace(model1, patches=(*model1.patches, merge)),)


class CheckpointSave(Node):
    SCHEMA = NodeSchema(
        name="CheckpointSave",
        display_name="Save Checkpoint",
        category="advanced/model_merging",
        description="Writes the MODEL, CLIP and VAE as one .safetensors checkpoint in the output folder (LoRAs and "
        "merges applied), in the original SD layout that Load Checkpoint, ComfyUI and A1111 read.",
        inputs=[
            Input("model", "MODEL", tooltip="The UNet to save, with its LoRAs and merges."),
            Input("clip", "CLIP", tooltip="The text encoder to save, with its LoRAs."),
            Input("vae", "VAE", tooltip="The VAE to save."),
            Input(
                "filename_prefix",
                "STRING",
                default="checkpoints/ComfyUI",
                tooltip="The prefix for the file in the output folder; may hold a subfolder (checkpoints/merged).",
            ),
            Input("prompt", "PROMPT", hidden=True),
            Input("extra_pnginfo", "EXTRA_PNGINFO", hidden=True),
        ],
        output_node=True,
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        clip: ClipModel,
        vae: Any,
        filename_prefix: str = "checkpoints/ComfyUI",
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> NodeOutput:
        from atelier.models.checkpoint import checkpoint_state

        metadata = {}
        if prompt is not None:  # as ComfyUI: the graph that made the file, in its metadata
            metadata["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            metadata[key] = json.dumps(value)
        with patched(model.unet, model.patches), patched(clip.text_encoder, clip.patches):
            state, meta = checkpoint_state(model.unet, vae, clip.text_encoder, metadata)
            # On the CPU the state shares the weights' memory, which the patches leave when the block ends: copy.
            state = {name: tensor.clone() for name, tensor in state.items()}
        data = save(state, metadata=meta)
        ref = self.env.files.write(data, filename_prefix, "safetensors", "output", claim=ctx.will_write)
        return NodeOutput(result=(), ui={"checkpoints": [ref]})

    @classmethod
    def validate_inputs(cls, filename_prefix: str | None = "checkpoints/ComfyUI") -> bool | str:
        """Refuse a prefix no file can be written with (NUL, absolute, '..', too long) before the prompt is queued."""
        try:
            cls.env.files.check_prefix(filename_prefix or "", "output")
        except AtelierError as error:
            return str(error)
        return True


MODEL_MERGING_NODES: tuple[type[Node], ...] = (ModelMergeSimple, CheckpointSave)
