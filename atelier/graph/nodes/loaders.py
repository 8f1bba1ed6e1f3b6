"""Loaders: a checkpoint file -> MODEL, CLIP and VAE; a VAE file -> VAE; a LoRA file -> patched MODEL and CLIP;
split files, one network each (ComfyUI's models/diffusion_models and models/text_encoders) -> MODEL or CLIP."""

from __future__ import annotations

import dataclasses
import logging

import torch

from atelier.errors import AtelierError
from atelier.graph.kit import ClipModel, Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.models.detect import FAMILY_NAMES
from atelier.models.embeddings import EmbeddingFolder
from atelier.models.library import latent_rgb
from atelier.models.lora import WeightPatch, load_lora, text_configs
from atelier.pipeline import DiffusionModel, fit_latent_to_rgb

log = logging.getLogger(__name__)


class CheckpointLoaderSimple(Node):
    SCHEMA = NodeSchema(
        name="CheckpointLoaderSimple",
        display_name="Load Checkpoint",
        category="loaders",
        description="Loads a diffusion model checkpoint: the UNet (MODEL), the text encoder (CLIP) and the VAE. "
        "Stable Diffusion 1.x, 2.x (768-v models predict velocity) and SDXL base and refiner are read from the "
        "file itself; SD 2.x and SDXL prompts are read at the text encoder's penultimate layer, as ComfyUI does.",
        inputs=[Input("ckpt_name", "COMBO", options=(), tooltip="The checkpoint to load.")],
        outputs=[
            Output("MODEL", tooltip="The denoising UNet."),
            Output("CLIP", tooltip="The text encoder that turns prompts into conditioning."),
            Output("VAE", tooltip="The autoencoder between images and latents."),
        ],
    )

    def run(self, ctx: NodeContext, ckpt_name: str) -> tuple:
        from atelier.models.checkpoint import load_checkpoint

        path = self.env.checkpoint_path(ckpt_name)
        ckpt = load_checkpoint(path, device=self.env.device, dtype=self.env.dtype)
        if self.env.fast is not False and ckpt.device.type == "cuda":  # imported here: torch.compile costs ~1 s
            from atelier.models.fast import FastOptions, accelerate

            ckpt = accelerate(
                ckpt, enabled=self.env.fast, options=FastOptions(compile=self.env.compile, precision=self.env.precision)
            )
            log.info("%s: fast path on; its first image compiles for a while (--no-fast: readable modules)", ckpt_name)
        stored = latent_rgb(path)
        preview = torch.tensor(stored) if stored is not None else fit_latent_to_rgb(ckpt.vae, size=32)
        model = DiffusionModel(ckpt.unet, ckpt.vae.config.scaling_factor, preview=preview)
        # Textual inversions: one vector set for one-tower families, one per tower for SDXL (models/embeddings.py).
        embeddings = EmbeddingFolder.for_text_encoder(self.env.models, ckpt.text_encoder)
        clip = ClipModel(ckpt.text_encoder, ckpt.tokenizer, clip_skip=ckpt.clip_skip, embeddings=embeddings)
        return model, clip, ckpt.vae


class VAELoader(Node):
    SCHEMA = NodeSchema(
        name="VAELoader",
        display_name="Load VAE",
        category="loaders",
        description="Loads a standalone VAE from models/vae, to decode and encode with it instead of the "
        "checkpoint's own.",
        inputs=[Input("vae_name", "COMBO", options=(), tooltip="The VAE file to load, from models/vae.")],
        outputs=[
            Output("VAE", tooltip="The autoencoder between images and latents (latents are 8x smaller per side).")
        ],
    )

    def run(self, ctx: NodeContext, vae_name: str) -> tuple:
        from atelier.models.checkpoint import load_vae

        return (load_vae(self.env.models.resolve("vae", vae_name), device=self.env.device, dtype=self.env.dtype),)


# --------------------------------------------------------------------------------------------------------------
# Split files: the UNet and the text encoder each in a file of its own, as ComfyUI's newer templates ship models
# --------------------------------------------------------------------------------------------------------------

# ComfyUI's CLIPLoader types, each the family whose text side it builds; Atelier runs those of SPLIT_FAMILIES.
# ComfyUI's stable_diffusion type covers SD 1.x, 2.x and the SDXL refiner: the tower in the file decides (CLIP-L,
# ViT-H or bigG: comfy/sd.py detect_te_model). "sd2" is Atelier's own, for a ViT-H whose shapes do not say so.
CLIP_TYPES = {
    "stable_diffusion": "sd1",
    "sd2": "sd2",
    "stable_cascade": "stable_cascade",
    "sd3": "sd3",
    "stable_audio": "stable_audio",
    "mochi": "mochi",
    "ltxv": "ltxv",
    "pixart": "pixart",
    "cosmos": "cosmos",
    "lumina2": "lumina2",
    "wan": "wan",
    "hidream": "hidream",
    "chroma": "chroma",
    "ace": "ace",
    "omnigen2": "omnigen2",
    "qwen_image": "qwen_image",
    "hunyuan_image": "hunyuan_image",
}
DUAL_CLIP_TYPES = {
    "sdxl": "sdxl",
    "sd3": "sd3",
    "flux": "flux",
    "hunyuan_video": "hunyuan_video",
    "hidream": "hidream",
    "hunyuan_image": "hunyuan_image",
}
DEVICE_INPUT = Input(
    "device",
    "COMBO",
    options=["default", "cpu"],
    optional=True,
    tooltip="Where the text encoder runs: Atelier's device (default) or the CPU.",
)


def _refuse_family(node: str, kind: str, family: str, runs: tuple[str, ...]) -> str | bool:
    """True when `family` is one of those `runs` (what this node builds), else the sentence validation reports."""
    if family in runs:
        return True
    return (
        f"{node}'s type {kind!r} builds the text encoder of {FAMILY_NAMES.get(family, family)}; Atelier runs "
        "Stable Diffusion 1.x, 2.x and SDXL (CLIPLoader's types 'stable_diffusion' and 'sd2', DualCLIPLoader's "
        "type 'sdxl')."
    )


class UNETLoader(Node):
    SCHEMA = NodeSchema(
        name="UNETLoader",
        display_name="Load Diffusion Model",
        category="advanced/loaders",
        description="Loads a diffusion model (the UNet) alone, from models/diffusion_models (or models/unet): "
        "Stable Diffusion 1.x, 2.x or SDXL base or refiner, in ComfyUI's layout or diffusers'. Its family is read "
        "off its weights; an SD 2.x file predicts velocity when a .yaml beside it says so or its weights look like "
        "the 768-v model's, as ComfyUI guesses (ModelSamplingDiscrete overrides it). Pair it with CLIPLoader and "
        "VAELoader.",
        inputs=[
            Input("unet_name", "COMBO", options=(), tooltip="The diffusion model file, from models/diffusion_models."),
            Input(
                "weight_dtype",
                "COMBO",
                options=["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],
                tooltip="Storage precision of the weights. Atelier keeps its device's precision (default); the fp8 "
                "choices load the same way and say so in the log.",
            ),
        ],
        outputs=[Output("MODEL", tooltip="The denoising UNet.")],
    )

    def run(self, ctx: NodeContext, unet_name: str, weight_dtype: str) -> tuple:
        from atelier.models.checkpoint import load_diffusion_model
        from atelier.models.detect import latent_scale
        from atelier.models.weights import WeightsFile

        if weight_dtype != "default":
            log.info(
                "%s: weight_dtype %s is not used by Atelier; the weights keep the device's precision.",
                unet_name,
                weight_dtype,
            )
        path = self.env.models.resolve("diffusion_models", unet_name)
        unet, _, family = load_diffusion_model(path, device=self.env.device, dtype=self.env.dtype)
        # Without its VAE the latent scale is the family's (or the one Atelier stored in the file), and the live
        # preview map is the one stored in the file, if any: there is no VAE here to fit one on.
        stored = latent_rgb(path)
        scale = latent_scale(family, WeightsFile(path).index.metadata)
        return (DiffusionModel(unet, scale, preview=torch.tensor(stored) if stored is not None else None),)


class CLIPLoader(Node):
    SCHEMA = NodeSchema(
        name="CLIPLoader",
        display_name="Load CLIP",
        category="advanced/loaders",
        description="Loads a text encoder alone, from models/text_encoders (or models/clip). Type stable_diffusion "
        "reads the tower in the file, as ComfyUI does: CLIP ViT-L/14 (SD 1.x), OpenCLIP ViT-H/14 (SD 2.x) or "
        "ViT-bigG/14 (the SDXL refiner's); type sd2 says ViT-H outright. SD 2.x and SDXL prompts are read at the "
        "penultimate layer, as from their whole checkpoints.",
        inputs=[
            Input("clip_name", "COMBO", options=(), tooltip="The text encoder file, from models/text_encoders."),
            Input(
                "type",
                "COMBO",
                options=list(CLIP_TYPES),
                tooltip="Which model family's text encoder it is (stable_diffusion: SD 1.x, 2.x or the SDXL refiner, "
                "told by the file; sd2: the OpenCLIP ViT-H of SD 2.x).",
            ),
            DEVICE_INPUT,
        ],
        outputs=[Output("CLIP", tooltip="The text encoder that turns prompts into conditioning.")],
    )

    def run(self, ctx: NodeContext, clip_name: str, type: str, device: str = "default") -> tuple:
        from atelier.models.single_file import is_big_g, is_vit_h, text_tower_shapes

        path = self.env.models.resolve("text_encoders", clip_name)
        shapes = text_tower_shapes(path)
        if type == "sd2" or is_vit_h(shapes):
            return (_load_family_clip(self.env, {"clip_h": path}, device),)
        if is_big_g(shapes):
            return (_load_family_clip(self.env, {"clip_g": path}, device),)  # the SDXL refiner's tower
        return (_load_clip(self.env, clip_name, device),)

    @classmethod
    def validate_inputs(cls, type: str) -> bool | str:
        return _refuse_family("CLIPLoader", type, CLIP_TYPES.get(type, type), ("sd1", "sd2"))


class DualCLIPLoader(Node):
    SCHEMA = NodeSchema(
        name="DualCLIPLoader",
        display_name="DualCLIPLoader",
        category="advanced/loaders",
        description="Loads the two text encoders of a family that has two. Type sdxl: CLIP ViT-L (clip_l) and "
        "OpenCLIP ViT-bigG (clip_g), in either order (each is told by its shapes, as ComfyUI does), giving the "
        "CLIP an SDXL checkpoint gives. SD3 and Flux (CLIP and T5) are not run by Atelier.",
        inputs=[
            Input("clip_name1", "COMBO", options=(), tooltip="The first text encoder file."),
            Input("clip_name2", "COMBO", options=(), tooltip="The second text encoder file."),
            Input("type", "COMBO", options=list(DUAL_CLIP_TYPES), tooltip="Which model family's text encoders."),
            DEVICE_INPUT,
        ],
        outputs=[Output("CLIP", tooltip="The two text encoders, as one CLIP.")],
    )

    def run(self, ctx: NodeContext, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple:
        refusal = self.validate_inputs(type)
        if refusal is not True:
            raise AtelierError(str(refusal))  # validation refuses it first; a direct call, here
        from atelier.models.single_file import is_big_g, text_tower_shapes

        paths = [self.env.models.resolve("text_encoders", name) for name in (clip_name1, clip_name2)]
        first, second = (is_big_g(text_tower_shapes(p)) for p in paths)
        if first is None and second is None:
            first, second = False, True  # shapes of no published tower (test sizes): clip_l first, as ComfyUI lists
        big_g = [not second if first is None else first, not first if second is None else second]
        if big_g[0] == big_g[1]:
            which = "OpenCLIP ViT-bigG" if big_g[0] else "CLIP ViT-L"
            raise AtelierError(
                f"DualCLIPLoader got two {which} text encoders ({clip_name1}, {clip_name2}); type sdxl needs one "
                "CLIP ViT-L (clip_l) and one OpenCLIP ViT-bigG (clip_g)."
            )
        towers = {"clip_g" if g else "clip_l": p for g, p in zip(big_g, paths, strict=True)}
        return (_load_family_clip(self.env, towers, device),)

    @classmethod
    def validate_inputs(cls, type: str) -> bool | str:
        family = DUAL_CLIP_TYPES.get(type, type)
        return _refuse_family("DualCLIPLoader", type, family, ("sdxl",))


def _load_clip(env, clip_name: str, device: str) -> ClipModel:
    from atelier.models.checkpoint import load_text_encoder

    path = env.models.resolve("text_encoders", clip_name)
    where = "cpu" if device == "cpu" else env.device
    dtype = None if device == "cpu" else env.dtype  # the CPU's own precision (fp32) when moved there
    text_encoder, tokenizer, config = load_text_encoder(path, device=where, dtype=dtype)
    return ClipModel(text_encoder, tokenizer, embeddings=EmbeddingFolder(env.models, config.width))


def _load_family_clip(env, towers: dict, device: str) -> ClipModel:
    """SD 2.x's or SDXL's CLIP from split tower files: what CheckpointLoaderSimple gives for the whole file (the
    penultimate layer; textual inversions are read, SDXL's with one vector set per tower)."""
    from atelier.models.checkpoint import load_family_text_encoder

    where = "cpu" if device == "cpu" else env.device
    dtype = None if device == "cpu" else env.dtype
    text_encoder, tokenizer, _ = load_family_text_encoder(towers, device=where, dtype=dtype)
    embeddings = EmbeddingFolder.for_text_encoder(env.models, text_encoder)
    return ClipModel(text_encoder, tokenizer, clip_skip=2, embeddings=embeddings)


# --------------------------------------------------------------------------------------------------------------
# LoRA: the same networks, with a patch added to the list each MODEL / CLIP carries (nothing is copied)
# --------------------------------------------------------------------------------------------------------------

LORA_NAME_INPUT = Input("lora_name", "COMBO", options=(), tooltip="The LoRA file, from models/loras.")
STRENGTH_MODEL_INPUT = Input(
    "strength_model",
    "FLOAT",
    default=1.0,
    min=-100.0,
    max=100.0,
    step=0.01,
    tooltip="How strongly to modify the diffusion model: W + strength x change (0: unchanged, negative: the opposite).",
)


def _with_lora(model: DiffusionModel, clip: ClipModel | None, path, strength_model: float, strength_clip: float):
    """`model` and `clip` with the LoRA at `path` appended to their patch lists (a strength of 0 adds nothing)."""
    text_config = text_configs(clip.text_encoder) if clip is not None else None  # SDXL: both towers'
    lora = load_lora(path, model.unet.config, text_config)  # refuses a file of another family in one sentence
    if lora.unmatched:
        log.warning("%s", lora.summary())
    if strength_model != 0.0:
        model = dataclasses.replace(model, patches=(*model.patches, WeightPatch(lora.unet, strength_model, lora.name)))
    if clip is not None and strength_clip != 0.0:
        patch = WeightPatch(lora.text_encoder, strength_clip, lora.name)
        clip = dataclasses.replace(clip, patches=(*clip.patches, patch))
    return model, clip


class LoraLoader(Node):
    SCHEMA = NodeSchema(
        name="LoraLoader",
        display_name="Load LoRA",
        category="loaders",
        description="Applies a LoRA (or LoCon, LoHa, LoKr, DoRA) file to the diffusion model and the text encoder. "
        "The weights are patched only while a sampler or a text encoder runs and restored exactly afterwards, so "
        "loaders can be chained and the checkpoint is never copied.",
        inputs=[
            Input("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
            Input("clip", "CLIP", tooltip="The CLIP model the LoRA will be applied to."),
            LORA_NAME_INPUT,
            STRENGTH_MODEL_INPUT,
            Input(
                "strength_clip",
                "FLOAT",
                default=1.0,
                min=-100.0,
                max=100.0,
                step=0.01,
                tooltip="How strongly to modify the CLIP model (0: unchanged).",
            ),
        ],
        outputs=[
            Output("MODEL", tooltip="The diffusion model with the LoRA in its patch list."),
            Output("CLIP", tooltip="The CLIP model with the LoRA in its patch list."),
        ],
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        clip: ClipModel,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
    ) -> tuple:
        path = self.env.models.resolve("loras", lora_name)
        return _with_lora(model, clip, path, strength_model, strength_clip)


class LoraLoaderModelOnly(Node):
    SCHEMA = NodeSchema(
        name="LoraLoaderModelOnly",
        display_name="LoraLoaderModelOnly",
        category="loaders",
        description="Applies a LoRA file to the diffusion model alone (its text-encoder part, if any, is left out).",
        inputs=[
            Input("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
            LORA_NAME_INPUT,
            STRENGTH_MODEL_INPUT,
        ],
        outputs=[Output("MODEL", tooltip="The diffusion model with the LoRA in its patch list.")],
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, lora_name: str, strength_model: float) -> tuple:
        path = self.env.models.resolve("loras", lora_name)
        return (_with_lora(model, None, path, strength_model, 0.0)[0],)
