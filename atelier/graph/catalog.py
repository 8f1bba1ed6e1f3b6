"""The catalog: every node Atelier ships, bound to one environment in a `NodeRegistry`.

The one module of graph/ that imports all the node modules; imports go one way, and nothing in graph/ imports this:

    kit.py  <-  nodes/*.py (the core nodes), teaching.py  <-  catalog.py  <-  the server, the CLI, tests

    registry = default_registry(models_root, files=OutputFiles(DataDir("atelier-data")))

Nodes need files and models; `default_registry` binds each node class to one `NodeEnvironment` (a subclass per
node with `env` set, and its file-list combos pointing at the environment's folders), so no registry holds global
state and tests can build one per temporary folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from atelier.graph.kit import Node, NodeEnvironment
from atelier.graph.nodes.compose import COMPOSE_NODES
from atelier.graph.nodes.conditioning import (
    CLIPSetLastLayer,
    CLIPTextEncode,
    CLIPTextEncodeSDXL,
    CLIPTextEncodeSDXLRefiner,
    ConditioningAverage,
    ConditioningCombine,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetTimestepRange,
    ConditioningZeroOut,
)
from atelier.graph.nodes.controlnet import (
    ControlNetApply,
    ControlNetApplyAdvanced,
    ControlNetLoader,
    DiffControlNetLoader,
)
from atelier.graph.nodes.custom_sampling import CUSTOM_SAMPLING_NODES
from atelier.graph.nodes.image import (
    ImageScale,
    ImageScaleBy,
    ImageScaleToTotalPixels,
    LoadImage,
    LoadImageMask,
    PreviewImage,
    SaveImage,
    SaveImageWebsocket,
)
from atelier.graph.nodes.inpaint import ImagePadForOutpaint, SetLatentNoiseMask, VAEEncodeForInpaint
from atelier.graph.nodes.latent import (
    EmptyLatentImage,
    LatentUpscale,
    LatentUpscaleBy,
    RepeatLatentBatch,
    VAEDecode,
    VAEEncode,
)
from atelier.graph.nodes.loaders import (
    CheckpointLoaderSimple,
    CLIPLoader,
    DualCLIPLoader,
    LoraLoader,
    LoraLoaderModelOnly,
    UNETLoader,
    VAELoader,
)
from atelier.graph.nodes.masks import MASK_NODES
from atelier.graph.nodes.model_merging import MODEL_MERGING_NODES
from atelier.graph.nodes.preprocessors import Canny, ScribbleFromEdges
from atelier.graph.nodes.primitives import PRIMITIVE_NODES
from atelier.graph.nodes.sampling import KSampler, KSamplerAdvanced, ModelSamplingDiscrete
from atelier.graph.nodes.strings import STRING_NODES
from atelier.graph.nodes.upscale import ImageUpscaleWithModel, UpscaleModelLoader
from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Options
from atelier.graph.teaching import TEACHING_NODES
from atelier.models.paths import ModelPaths

# ComfyUI's core nodes that Atelier runs, in the order /object_info lists them.
CORE_NODES: tuple[type[Node], ...] = (
    CheckpointLoaderSimple,
    VAELoader,
    UNETLoader,
    CLIPLoader,
    DualCLIPLoader,
    LoraLoader,
    LoraLoaderModelOnly,
    UpscaleModelLoader,
    ControlNetLoader,
    DiffControlNetLoader,
    CLIPTextEncode,
    CLIPSetLastLayer,
    CLIPTextEncodeSDXL,
    CLIPTextEncodeSDXLRefiner,
    ConditioningCombine,
    ConditioningSetArea,
    ControlNetApply,
    ControlNetApplyAdvanced,
    EmptyLatentImage,
    RepeatLatentBatch,
    LatentUpscale,
    LatentUpscaleBy,
    SetLatentNoiseMask,
    KSampler,
    KSamplerAdvanced,
    ModelSamplingDiscrete,
    VAEDecode,
    VAEEncode,
    VAEEncodeForInpaint,
    LoadImage,
    LoadImageMask,
    ImageScale,
    ImageScaleBy,
    ImageScaleToTotalPixels,
    ImagePadForOutpaint,
    ImageUpscaleWithModel,
    Canny,
    ScribbleFromEdges,
    SaveImage,
    PreviewImage,
    SaveImageWebsocket,
    # conditioning arithmetic (nodes/conditioning.py)
    ConditioningAverage,
    ConditioningConcat,
    ConditioningSetTimestepRange,
    ConditioningZeroOut,
    *COMPOSE_NODES,  # latent and image tools (nodes/compose.py)
    *MASK_NODES,  # masks made, inverted, combined, feathered, grown (nodes/masks.py)
    *MODEL_MERGING_NODES,  # ModelMergeSimple, CheckpointSave (nodes/model_merging.py)
    *CUSTOM_SAMPLING_NODES,  # the custom-sampling graph (nodes/custom_sampling.py)
    *PRIMITIVE_NODES,  # String, Int, Float, Boolean constants (nodes/primitives.py)
    *STRING_NODES,  # join, cut, replace, compare and search texts (nodes/strings.py)
)


def _input_images(env: NodeEnvironment) -> Options:
    return env.files.input_images if env.files is not None else list


# Combo inputs whose options depend on the environment (files on disk), by (node name, input name): each entry
# gives the function that lists them, evaluated again on every /object_info.
_DYNAMIC_OPTIONS = {
    ("CheckpointLoaderSimple", "ckpt_name"): lambda env: env.checkpoint_names,
    ("VAELoader", "vae_name"): lambda env: lambda: env.models.list("vae"),
    ("UNETLoader", "unet_name"): lambda env: lambda: env.models.list("diffusion_models"),
    ("CLIPLoader", "clip_name"): lambda env: lambda: env.models.list("text_encoders"),
    ("DualCLIPLoader", "clip_name1"): lambda env: lambda: env.models.list("text_encoders"),
    ("DualCLIPLoader", "clip_name2"): lambda env: lambda: env.models.list("text_encoders"),
    ("LoraLoader", "lora_name"): lambda env: lambda: env.models.list("loras"),
    ("LoraLoaderModelOnly", "lora_name"): lambda env: lambda: env.models.list("loras"),
    ("UpscaleModelLoader", "model_name"): lambda env: lambda: env.models.list("upscale_models"),
    ("ControlNetLoader", "control_net_name"): lambda env: lambda: env.models.list("controlnet"),
    ("DiffControlNetLoader", "control_net_name"): lambda env: lambda: env.models.list("controlnet"),
    ("LoadImage", "image"): _input_images,
    ("LoadImageMask", "image"): _input_images,
}


def bind(node_cls: type[Node], env: NodeEnvironment) -> type[Node]:
    """A subclass of `node_cls` that sees `env`, with its file- and model-list combos pointing at it."""
    schema = node_cls.SCHEMA
    inputs = [
        dataclasses.replace(i, options=_DYNAMIC_OPTIONS[(schema.name, i.name)](env))
        if (schema.name, i.name) in _DYNAMIC_OPTIONS
        else i
        for i in schema.inputs
    ]
    return type(node_cls.__name__, (node_cls,), {"env": env, "SCHEMA": dataclasses.replace(schema, inputs=inputs)})


def default_registry(
    models: ModelPaths | Path | str,
    files: Any,
    device: str | None = None,
    dtype: str | None = None,
    extra_nodes: tuple[type, ...] = (),
    fast: bool | None = None,
    precision: str = "native",
    compile: str = "auto",
) -> NodeRegistry:
    """Every core node, the teaching nodes (graph/teaching.py) and `extra_nodes`, bound to one set of model
    folders and one file API."""
    paths = models if isinstance(models, ModelPaths) else ModelPaths(Path(models))
    env = NodeEnvironment(paths, files, device, dtype, fast, precision, compile)
    registry = NodeRegistry()
    for node_cls in (*CORE_NODES, *TEACHING_NODES, *extra_nodes):
        registry.add(bind(node_cls, env))
    return registry
