"""ControlNet: a ControlNet file -> CONTROL_NET; applying it with a hint image to a CONDITIONING (models/controlnet.py).

Applying copies the conditioning's entries with one more `AppliedControlNet` in their `control` tuple: nothing is
computed until a sampler runs, where each entry's ControlNets add their residuals to the UNet at every step of
their window. Applying twice stacks two ControlNets (their residuals add up), as in ComfyUI.
"""

from __future__ import annotations

import dataclasses

import torch

from atelier import device as devices
from atelier.graph.kit import Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.models.checkpoint import unet_parameters
from atelier.models.controlnet import AppliedControlNet, ControlNet, load_controlnet
from atelier.pipeline import Cond, DiffusionModel

STRENGTH = Input(
    "strength",
    "FLOAT",
    default=1.0,
    min=0.0,
    max=10.0,
    step=0.01,
    tooltip="How much of the ControlNet's residuals is added to the UNet (0: none, the conditioning is unchanged).",
)
HINT = Input(
    "image",
    "IMAGE",
    tooltip="The hint: edges, a pose, a depth map... resized to the image being made (centre crop).",
)


class ControlNetLoader(Node):
    SCHEMA = NodeSchema(
        name="ControlNetLoader",
        display_name="Load ControlNet Model",
        category="loaders",
        description="Loads a ControlNet for SD1.x from models/controlnet: a single file in the original layout "
        "(input_hint_block, zero_convs) or diffusers' (controlnet_cond_embedding), or a diffusers folder.",
        inputs=[Input("control_net_name", "COMBO", options=(), tooltip="The ControlNet, from models/controlnet.")],
        outputs=[Output("CONTROL_NET", tooltip="A copy of the UNet's encoder that reads a hint image.")],
    )

    def run(self, ctx: NodeContext, control_net_name: str) -> tuple:
        path = self.env.models.resolve("controlnet", control_net_name)
        device = devices.pick_device(self.env.device)
        # A ControlNet copies its UNet's encoder: a small model's is small, and stays in fp32 as its UNet does.
        dtype = devices.pick_dtype(device, self.env.dtype, unet_parameters(path))
        return (load_controlnet(path, device=device, dtype=dtype),)


class DiffControlNetLoader(Node):
    SCHEMA = NodeSchema(
        name="DiffControlNetLoader",
        display_name="Load ControlNet Model (diff)",
        category="loaders",
        description="Loads a ControlNet from models/controlnet for this model: a difference ControlNet (stored "
        "minus the SD1.5 UNet it was trained from) gets the model's own UNet weights added, which carries the "
        "control over to a fine-tune; any other ControlNet loads as with Load ControlNet Model.",
        inputs=[
            Input("model", "MODEL", tooltip="The model whose UNet a difference ControlNet is added to."),
            Input("control_net_name", "COMBO", options=(), tooltip="The ControlNet, from models/controlnet."),
        ],
        outputs=[Output("CONTROL_NET", tooltip="A copy of the UNet's encoder that reads a hint image.")],
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, control_net_name: str) -> tuple:
        # The UNet's own weights: LoRA patches, which Atelier applies only while sampling, are not in them
        # (ComfyUI adds the patched weights).
        path = self.env.models.resolve("controlnet", control_net_name)
        device = devices.pick_device(self.env.device)
        dtype = model.dtype if self.env.dtype in (None, "auto") else devices.pick_dtype(device, self.env.dtype)
        return (load_controlnet(path, device=device, dtype=dtype, base=model.unet),)


def _apply(
    conditioning: list[Cond], network: ControlNet, image: torch.Tensor, strength: float, start: float, end: float
) -> list[Cond]:
    control = AppliedControlNet(network, image, strength, start, end)
    return [dataclasses.replace(cond, control=(*cond.control, control)) for cond in conditioning]


class ControlNetApply(Node):
    SCHEMA = NodeSchema(
        name="ControlNetApply",
        display_name="Apply ControlNet (OLD)",
        category="conditioning/controlnet",
        description="Steers the UNet with a ControlNet and a hint image while it reads this conditioning, for "
        "every step. Apply ControlNet (with positive and negative, and a step window) is the newer node.",
        inputs=[
            Input("conditioning", "CONDITIONING", tooltip="The conditioning the ControlNet goes with."),
            Input("control_net", "CONTROL_NET", tooltip="The ControlNet, from Load ControlNet Model."),
            HINT,
            STRENGTH,
        ],
        outputs=[Output("CONDITIONING", tooltip="The same conditioning, with the ControlNet attached.")],
    )

    def run(
        self, ctx: NodeContext, conditioning: list[Cond], control_net: ControlNet, image: torch.Tensor, strength: float
    ) -> tuple:
        if strength == 0:
            return (conditioning,)
        return (_apply(conditioning, control_net, image, strength, 0.0, 1.0),)


def _percent(name: str, default: float, tooltip: str) -> Input:
    return Input(name, "FLOAT", default=default, min=0.0, max=1.0, step=0.001, tooltip=tooltip)


class ControlNetApplyAdvanced(Node):
    SCHEMA = NodeSchema(
        name="ControlNetApplyAdvanced",
        display_name="Apply ControlNet",
        category="conditioning/controlnet",
        description="Steers the UNet with a ControlNet and a hint image, for both the positive and the negative "
        "conditioning, during a window of the sampling (start and end as fractions of the schedule).",
        inputs=[
            Input("positive", "CONDITIONING", tooltip="What the image should show."),
            Input("negative", "CONDITIONING", tooltip="What guidance steers away from."),
            Input("control_net", "CONTROL_NET", tooltip="The ControlNet, from Load ControlNet Model."),
            HINT,
            STRENGTH,
            _percent("start_percent", 0.0, "Where in the sampling the ControlNet starts (0: the first step)."),
            _percent("end_percent", 1.0, "Where it stops (1: the last step); ending early leaves details free."),
            Input(
                "vae",
                "VAE",
                optional=True,
                tooltip="Only for ControlNets that read a latent hint (not SD1.x's); accepted and unused here.",
            ),
        ],
        outputs=[
            Output("CONDITIONING", "positive", tooltip="The positive conditioning with the ControlNet attached."),
            Output("CONDITIONING", "negative", tooltip="The negative conditioning with the ControlNet attached."),
        ],
    )

    def run(
        self,
        ctx: NodeContext,
        positive: list[Cond],
        negative: list[Cond],
        control_net: ControlNet,
        image: torch.Tensor,
        strength: float,
        start_percent: float,
        end_percent: float,
        vae: object = None,
    ) -> tuple:
        if strength == 0:
            return positive, negative
        return tuple(_apply(c, control_net, image, strength, start_percent, end_percent) for c in (positive, negative))
