"""Teaching nodes: windows onto what the core nodes do, for the node editor (category "atelier").

Each node answers one question a workshop asks about the classic graph:

    AtelierFilmStripSampler   what happens between the noise and the picture?       (every step, as images)
    AtelierLatentChannels     what is a latent?                                      (its 4 channels, as greys)
    AtelierTokenInspector     what does the text encoder actually read?              (the 77-token window)
    AtelierCrossAttentionMap  where in the picture does a word act?                  (cross-attention heat map)
    AtelierSigmaSchedule      which noise levels does a scheduler visit?             (a plot of the sigmas)

plus two nodes with ComfyUI's own names and inputs, so film strips and tables can be seen in the editor:
SaveAnimatedWEBP (an IMAGE batch as an animated WebP) and PreviewAny (shows any value as text; the official
editor draws a text box for that node name only).

They are ordinary nodes (see schema.py): they call atelier/pipeline.py like the core nodes do, and the sampling
ones reuse the KSampler's own loop (`kit.run_sampler`), so progress, previews and Cancel behave the same. What
tokens, sigmas and latent channels they show is computed in atelier/lessons/, as the lab's page computes it; the
nodes only turn it into IMAGE, STRING and MASK outputs.
"""

from __future__ import annotations

import io
import json
import math
from datetime import datetime
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from atelier.errors import InputError
from atelier.graph.filename_patterns import server_variables
from atelier.graph.kit import (
    CFG_INPUT,
    KSAMPLER_INPUTS,
    MAX_RESOLUTION,
    SEED_INPUT,
    STEPS_INPUT,
    ClipModel,
    InterruptFlag,
    Node,
    run_sampler,
)
from atelier.graph.schema import Input, NodeContext, NodeOutput, NodeSchema, Output
from atelier.imaging import bchw_signed_to_bhwc_unit, bhwc_unit_to_pil, pil_to_bhwc_unit, uint8_to_unit
from atelier.lessons.channels import NORMALIZE, channel_greys, channel_stats
from atelier.lessons.schedules import compare_schedulers
from atelier.lessons.tokens import read_tokens, word_positions
from atelier.models.attention import capture_cross_attention, token_heatmaps
from atelier.pipeline import Cond, DiffusionModel, SamplerSettings, Step, decode, latent_preview
from atelier.plots import line_chart
from atelier.sampling.schedules import SCHEDULERS

CATEGORY = "atelier"
DECODE_BATCH = 8  # film-strip frames decoded by the VAE at once: all of a short strip, bounded memory for long ones


# --------------------------------------------------------------------------------------------------------------
# Latents -> pictures
# --------------------------------------------------------------------------------------------------------------


def nearest_up(image: torch.Tensor, factor: int) -> torch.Tensor:
    """IMAGE (B, H, W, C) -> (B, factor*H, factor*W, C), each pixel repeated: big, sharp latent pixels."""
    return image.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def latents_to_images(
    latents: torch.Tensor, vae: Any, model: DiffusionModel, interrupt: InterruptFlag | None = None
) -> torch.Tensor:
    """RAW latents (N, 4, h, w) -> IMAGE (N, 8h, 8w, 3): the VAE decoder when given (in batches of DECODE_BATCH,
    `interrupt` asked before each), else the model's linear latent -> RGB map (`pipeline.fit_latent_to_rgb`),
    enlarged 8x by nearest neighbour."""
    if vae is not None:
        chunks = latents.split(DECODE_BATCH)
        return torch.cat([bchw_signed_to_bhwc_unit(decode(vae, chunk, interrupt=interrupt)) for chunk in chunks])
    if model.preview is None:
        raise InputError("This model has no latent -> RGB preview map; connect a VAE to the vae input.")
    rgb = uint8_to_unit(latent_preview(latents, model.preview.float()))  # (N, h, w, 3)
    return nearest_up(rgb, 8)


# --------------------------------------------------------------------------------------------------------------
# 1. Film strip: every step of the sampler
# --------------------------------------------------------------------------------------------------------------


class AtelierFilmStripSampler(Node):
    """The KSampler, keeping a picture of every step: the noisy latent it started from and the model's guess."""

    SCHEMA = NodeSchema(
        name="AtelierFilmStripSampler",
        display_name="Film Strip Sampler",
        category=CATEGORY,
        description=(
            "A KSampler that films itself. At every step the sampler holds a noisy latent x at noise level sigma "
            "and asks the model for its guess of the clean latent (the predicted x0, 'denoised'); the step then "
            "moves x part of the way towards that guess and the noise level drops. 'noisy' shows x at every step "
            "and 'predicted' the guess: early guesses are blurry averages of everything the prompt could be, later "
            "ones sharpen, and the last guess is the final image. Only the first image of a batch is filmed."
        ),
        inputs=[
            *KSAMPLER_INPUTS,
            Input(
                "vae",
                "VAE",
                optional=True,
                tooltip="Decodes the frames properly. Without it, frames use the model's cheap linear latent -> "
                "RGB map (blocky: one colour per latent pixel).",
            ),
        ],
        outputs=[
            Output("LATENT", name="latent", tooltip="The denoised latent, exactly as the KSampler gives it."),
            Output(
                "IMAGE",
                name="noisy",
                tooltip="The noisy latent x that each step started from, divided by sqrt(1 + sigma^2): the "
                "noisy image x_t of DDPM, which is what the UNet is fed. One frame per step.",
            ),
            Output(
                "IMAGE",
                name="predicted",
                tooltip="The model's prediction of the final latent (x0) at each step. One frame per step.",
            ),
        ],
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: list[Cond],
        negative: list[Cond],
        latent_image: dict,
        denoise: float = 1.0,
        vae: Any = None,
    ) -> tuple:
        noisy: list[torch.Tensor] = []  # (1, 4, h, w) per step, SCALED latents
        predicted: list[torch.Tensor] = []

        def film(step: Step) -> None:
            # x has standard deviation ~sqrt(1 + sigma^2); dividing by it gives the variance-preserving view
            # x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise (Karras et al. 2022, c_in of table 1).
            noisy.append(step.x[:1].float().cpu() / math.sqrt(1.0 + step.sigma**2))
            predicted.append(step.denoised[:1].float().cpu())

        settings = SamplerSettings(seed, steps, cfg, sampler_name, scheduler, denoise)
        latent = run_sampler(ctx, model, latent_image, positive, negative, settings, also_on_step=film)
        if not predicted:  # denoise 0: no step was taken, the strip is the input itself
            noisy.append(latent["samples"][:1].float() * model.latent_scale)
            predicted.append(noisy[-1])
        # Both strips go through the decoder together (DECODE_BATCH frames at a time), back in RAW latent units.
        frames = torch.cat(noisy + predicted) / model.latent_scale  # (2N, 4, h, w)
        images = latents_to_images(frames, vae, model, InterruptFlag(ctx))
        return latent, images[: len(noisy)], images[len(noisy) :]


# --------------------------------------------------------------------------------------------------------------
# 2. Latent channels
# --------------------------------------------------------------------------------------------------------------


def channel_images(latent: torch.Tensor, normalize: str) -> torch.Tensor:
    """One latent (C, h, w) -> C grey IMAGEs (C, 8h, 8w, 3): lessons/channels.py's greys, each latent pixel an 8x8
    square."""
    grey = channel_greys(latent, normalize)  # (C, h, w) in [0, 1]
    return nearest_up(grey[..., None].expand(-1, -1, -1, 3), 8)


class AtelierLatentChannels(Node):
    SCHEMA = NodeSchema(
        name="AtelierLatentChannels",
        display_name="Latent Channels",
        category=CATEGORY,
        description=(
            "Shows what a latent is: not an image but 4 numbers per 8x8 block of pixels, which the VAE decoder "
            "turns back into colours. Each channel of the first latent of the batch becomes one grey picture, "
            "enlarged 8x so every latent pixel is a visible square. Some channels follow brightness, others "
            "colour; no channel is 'red' or 'green' on its own."
        ),
        inputs=[
            Input("samples", "LATENT", tooltip="The latent to look at (RAW VAE units, as every LATENT socket)."),
            Input(
                "normalize",
                "COMBO",
                options=list(NORMALIZE),
                tooltip="shared symmetric: 0 is mid-grey everywhere and channels share one scale, so they can "
                "be compared. per channel: each stretched from its min to its max (more detail).",
            ),
        ],
        outputs=[
            Output("IMAGE", name="channels", tooltip="One grey image per latent channel, 8x the latent's size."),
            Output("STRING", name="stats", tooltip="Mean, standard deviation, min and max of every channel."),
        ],
    )

    def run(self, ctx: NodeContext, samples: dict, normalize: str = "shared symmetric") -> tuple:
        z = samples["samples"][0]  # (C, h, w)
        lines = [f"latent {tuple(z.shape)} (channels, height, width), RAW VAE units"]
        for c, stats in enumerate(channel_stats(z)):
            lines.append(
                f"channel {c}: mean {stats.mean:+.3f}  std {stats.std:.3f}  min {stats.min:+.3f}  max {stats.max:+.3f}"
            )
        return channel_images(z, normalize), "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# 3. Token inspector
# --------------------------------------------------------------------------------------------------------------


def token_table(tokenizer: Any, text: str) -> str:
    """A readable table of what the text encoder reads for `text` (lessons/tokens.py): one row per position of
    each 77-token window; window k holds positions 77k .. 77k + 76 of the conditioning tensor."""
    prompt = read_tokens(tokenizer, text)
    windows, size, room = prompt.windows, prompt.size, prompt.text_slots
    total = sum(prompt.counts)
    lines = [
        f"{total} text tokens in {len(windows)} window(s) of {size} positions: <start>, up to {room} text "
        f"tokens, <end>, then padding with <end>. Text is lowercased before tokenizing."
    ]
    if len(windows) > 1:
        dropped = tokenizer.decode([t.id for t in prompt.cut])
        lines.append(
            f"WARNING: the prompt is longer than one window ({total} > {room} tokens): Atelier and ComfyUI "
            f"encode each window separately and join them, but a single-window tool would cut the text"
            + (f' and drop "{dropped}".' if dropped else ".")
        )
    width = max(len("piece"), *(len(t.text) for window in windows for t in window))
    for k, (window, count) in enumerate(zip(windows, prompt.counts, strict=True)):
        early = " (closed early to keep a short weighted group whole)" if k < len(windows) - 1 and count < room else ""
        lines.append(f"--- window {k + 1} of {len(windows)}: positions {k * size}-{k * size + size - 1}{early} ---")
        lines.append(f"{'pos':>5}  {'piece':<{width}}  {'id':>5}  weight")
        for i, token in enumerate(window[: count + 2]):
            lines.append(f"{k * size + i:>5}  {token.text:<{width}}  {token.id:>5}  {token.weight:.2f}")
        first_pad, last = k * size + count + 2, k * size + size - 1
        if first_pad <= last:
            lines.append(f"{f'{first_pad}-{last}':>5}  padding: <|endoftext|> x {last - first_pad + 1}")
    return "\n".join(lines)


class AtelierTokenInspector(Node):
    SCHEMA = NodeSchema(
        name="AtelierTokenInspector",
        display_name="Token Inspector",
        category=CATEGORY,
        description=(
            "Shows the prompt as the text encoder reads it: byte-pair tokens (common words are one token, rare "
            "ones several pieces), each with its vocabulary id and its weight from (word:1.2) syntax, inside "
            "CLIP's fixed window of 77 positions. Connect the text output to a Preview Any node to read it in "
            "the editor."
        ),
        inputs=[
            Input("clip", "CLIP", tooltip="The text encoder whose tokenizer is used."),
            Input("text", "STRING", multiline=True, dynamic_prompts=True, tooltip="The prompt to inspect."),
        ],
        outputs=[Output("STRING", name="table", tooltip="The token table, one row per position.")],
        output_node=True,
    )

    def run(self, ctx: NodeContext, clip: ClipModel, text: str) -> NodeOutput:
        table = token_table(clip.tokenizer, text)
        return NodeOutput(result=(table,), ui={"text": [table]})


# --------------------------------------------------------------------------------------------------------------
# 4. Cross-attention map
# --------------------------------------------------------------------------------------------------------------


def hot_colours(heat: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] (...) -> RGB (..., 3) on a black-red-yellow-white ("hot") scale."""
    return torch.stack([(3 * heat).clamp(0, 1), (3 * heat - 1).clamp(0, 1), (3 * heat - 2).clamp(0, 1)], dim=-1)


class AtelierCrossAttentionMap(Node):
    SCHEMA = NodeSchema(
        name="AtelierCrossAttentionMap",
        display_name="Cross-Attention Map",
        category=CATEGORY,
        description=(
            "Generates an image and shows where one word of the prompt acted. Inside the UNet every latent "
            "pixel attends to the 77 prompt tokens (cross-attention, Rombach et al. 2022): softmax(QK^T/sqrt(d)) "
            "says how much of each token's meaning a pixel takes in. Those weights are recorded in the "
            "conditional pass of every step, averaged over heads, layers and steps, and the word's tokens are "
            "summed (as in DAAM, Tang et al. 2022). Sampler euler, scheduler normal, negative prompt empty."
        ),
        inputs=[
            Input("model", "MODEL", tooltip="The denoising UNet."),
            Input("clip", "CLIP", tooltip="The text encoder (and its tokenizer, to find the word's tokens)."),
            Input("vae", "VAE", tooltip="Decodes the generated image."),
            Input(
                "text",
                "STRING",
                multiline=True,
                dynamic_prompts=True,
                default="a big red circle on the left",
                tooltip="The prompt to generate.",
            ),
            Input(
                "word",
                "STRING",
                default="red",
                tooltip="The word of the prompt to map; several tokens (a rare word, or several words) are "
                "summed. Case does not matter.",
            ),
            SEED_INPUT,
            STEPS_INPUT,
            CFG_INPUT,
            Input("width", "INT", default=512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image width in pixels."),
            Input("height", "INT", default=512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image height in pixels."),
        ],
        outputs=[
            Output("IMAGE", name="image", tooltip="The generated image."),
            Output(
                "IMAGE",
                name="overlay",
                tooltip="The word's heat map stretched from its own min (black) to its max (white), over the image.",
            ),
            Output(
                "MASK",
                name="heatmap",
                tooltip="The raw heat map: at each pixel, the share of attention (0 to 1) the word's tokens "
                "received, averaged over steps and layers. Not rescaled.",
            ),
        ],
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        clip: ClipModel,
        vae: Any,
        text: str,
        word: str,
        seed: int,
        steps: int,
        cfg: float,
        width: int,
        height: int,
    ) -> tuple:
        positions = word_positions(clip.tokenizer, text, word)  # fails before any sampling
        positive, negative = clip.encode(text), clip.encode("")  # (1, T, D) each
        h, w = height // 8, width // 8
        total = torch.zeros(positive.shape[1], h, w)  # (T, h, w): summed per-token maps
        folded = 0

        with capture_cross_attention(model.unet, average_heads=True) as maps:

            def fold(step: Step) -> None:
                # The maps of this step's denoiser call(s). CFG batches [cond; uncond] (guidance.py), and with
                # cfg 1 there is only cond: either way image 0 of the batch is the conditional pass of image 0.
                nonlocal folded
                total.add_(token_heatmaps(maps, (h, w))[0].cpu())  # (T, h, w), averaged over layers
                folded += 1
                maps.clear()

            settings = SamplerSettings(seed, steps, cfg, "euler", "normal", 1.0)
            latent = {"samples": torch.zeros(1, 4, h, w)}
            out = run_sampler(ctx, model, latent, [Cond(positive)], [Cond(negative)], settings, also_on_step=fold)

        image = bchw_signed_to_bhwc_unit(decode(vae, out["samples"], interrupt=InterruptFlag(ctx)))  # (1, H, W, 3)
        heat = total[positions].sum(dim=0) / max(folded, 1)  # (h, w): the word's share of attention
        heat = F.interpolate(heat[None, None], size=image.shape[1:3], mode="bilinear", align_corners=False)[0]
        heat = heat.clamp(0, 1)  # (1, H, W)
        # For the eye only: stretched to [0, 1], so even a word that gets little attention shows where it got most.
        scaled = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-8)
        overlay = 0.4 * image + 0.6 * hot_colours(scaled)  # (1, H, W, 3)
        return image, overlay.clamp(0, 1), heat


# --------------------------------------------------------------------------------------------------------------
# 5. Sigma schedule plot
# --------------------------------------------------------------------------------------------------------------

PLOT_SIZE = (800, 480)


def plot_sigmas(curves: dict[str, list[float]], chosen: str, log_scale: bool, title: str) -> Image.Image:
    """Sigma against step: every scheduler faint, `chosen` bold with a dot per step, a legend.

    On a log axis sigma = 0 (the end of every schedule) cannot be drawn; those points are left out.
    """
    series = {name: (list(range(len(values))), values) for name, values in curves.items()}
    return line_chart(
        series,
        title=title,
        x_label="step",
        y_label="sigma (log scale)" if log_scale else "sigma",
        log_y=log_scale,
        size=PLOT_SIZE,
        highlight=chosen,
        note="sigma = 0 not drawn" if log_scale else "",
    )


class AtelierSigmaSchedule(Node):
    SCHEMA = NodeSchema(
        name="AtelierSigmaSchedule",
        display_name="Sigma Schedule",
        category=CATEGORY,
        description=(
            "Plots the noise levels (sigmas) a scheduler makes the sampler visit, one per step, from pure noise "
            "down to 0, with every other scheduler drawn faintly for comparison. Sampling is the same walk "
            "whatever the scheduler; only where the steps land changes: karras and exponential spend more steps "
            "at low noise (details), normal and simple spread them evenly over the model's timesteps. With denoise "
            "below 1 (img2img) only the end of a longer schedule is kept."
        ),
        inputs=[
            Input("model", "MODEL", tooltip="The model whose training noise schedule the sigmas come from."),
            Input("steps", "INT", default=20, min=1, max=1000, tooltip="Sampling steps."),
            Input("scheduler", "COMBO", options=list(SCHEDULERS), tooltip="The scheduler to draw in colour."),
            Input(
                "denoise",
                "FLOAT",
                default=1.0,
                min=0.0,
                max=1.0,
                step=0.01,
                tooltip="1 for txt2img; less starts part-way down (img2img).",
            ),
            Input(
                "log_scale",
                "BOOLEAN",
                default=True,
                tooltip="Log axis for sigma: the many small sigmas at the end become visible.",
            ),
        ],
        outputs=[
            Output("IMAGE", name="plot", tooltip="The plot, 800 x 480."),
            Output("STRING", name="sigmas", tooltip="The chosen scheduler's sigmas, one per line."),
        ],
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        steps: int,
        scheduler: str,
        denoise: float = 1.0,
        log_scale: bool = True,
    ) -> tuple:
        comparison = compare_schedulers(model.schedule, steps, scheduler, denoise)
        values = comparison.sigmas
        title = f"{scheduler}, {steps} steps, denoise {denoise:g}: sigma {values[0]:.3f} -> {values[-1]:g}"
        plot = pil_to_bhwc_unit(plot_sigmas(comparison.curves, scheduler, log_scale, title))
        lines = [f"{scheduler}, {steps} steps, denoise {denoise:g}: {len(values)} sigmas"]
        lines += [f"{i:>4}  {sigma:.6f}" for i, sigma in enumerate(values)]
        return plot, "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# 6. Showing results: ComfyUI's SaveAnimatedWEBP and PreviewAny
# --------------------------------------------------------------------------------------------------------------

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}  # libwebp's effort: 0 fast .. 6 small files


def animated_webp(
    frames: list[Image.Image], fps: float, lossless: bool, quality: int, method: str, exif: Image.Exif | None = None
) -> bytes:
    """The frames as one animated WebP file (each shown 1000/fps ms, looping)."""
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=int(1000.0 / fps),
        lossless=lossless,
        quality=quality,
        method=WEBP_METHODS[method],
        exif=exif or Image.Exif(),
    )
    return buffer.getvalue()


class SaveAnimatedWEBP(Node):
    SCHEMA = NodeSchema(
        name="SaveAnimatedWEBP",
        display_name="Save Animated WEBP",
        category="image/animation",
        description="Saves a batch of images as one animated WebP in the output folder: plays a film strip.",
        inputs=[
            Input("images", "IMAGE", tooltip="The frames, in order (a batch)."),
            Input(
                "filename_prefix",
                "STRING",
                default="ComfyUI",
                tooltip="The prefix for the file to save; may hold a subfolder (e.g. 'atelier/strip').",
            ),
            Input("fps", "FLOAT", default=6.0, min=0.01, max=1000.0, step=0.01, tooltip="Frames per second."),
            Input("lossless", "BOOLEAN", default=True, tooltip="Exact pixels (bigger file) or lossy compression."),
            Input("quality", "INT", default=80, min=0, max=100, tooltip="Lossy quality, or lossless effort."),
            Input("method", "COMBO", options=list(WEBP_METHODS), tooltip="Compression effort: slower = smaller."),
            Input("prompt", "PROMPT", hidden=True),
            Input("extra_pnginfo", "EXTRA_PNGINFO", hidden=True),
        ],
        output_node=True,
    )

    def run(
        self,
        ctx: NodeContext,
        images: torch.Tensor,
        filename_prefix: str = "ComfyUI",
        fps: float = 6.0,
        lossless: bool = True,
        quality: int = 80,
        method: str = "default",
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> NodeOutput:
        if method not in WEBP_METHODS:
            raise InputError(f"method must be one of {', '.join(WEBP_METHODS)}, got {method!r}.")
        # The graph goes into EXIF as ComfyUI writes it, so the editor can reopen the workflow from the file:
        # tag 0x0110 (Model) = "prompt:<json>", then 0x010F (Make), 0x010E, ... = "<key>:<json>".
        exif = Image.Exif()
        if prompt is not None:
            exif[0x0110] = "prompt:" + json.dumps(prompt)
        for tag, (key, value) in zip(range(0x010F, 0, -1), (extra_pnginfo or {}).items(), strict=False):
            exif[tag] = f"{key}:{json.dumps(value)}"
        frames = bhwc_unit_to_pil(images)
        data = animated_webp(frames, fps, lossless, quality, method, exif)
        prefix = server_variables(filename_prefix, images.shape[2], images.shape[1], datetime.now())  # as ComfyUI
        ref = self.env.files.write(data, prefix, "webp", "output")
        return NodeOutput(result=(), ui={"images": [ref], "animated": [len(frames) != 1]})


def preview_text(value: Any) -> str:
    """Any value as readable text: strings as they are, numbers and booleans with str(), tensors by shape and
    range, lists and dicts as JSON (a LATENT shows its "samples" tensor that way), other objects by type name."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, torch.Tensor):
        if value.numel() == 0:
            return f"tensor {tuple(value.shape)} {value.dtype}"
        v = value.float()
        return f"tensor {tuple(value.shape)} {value.dtype}, min {v.min():.4g}, max {v.max():.4g}, mean {v.mean():.4g}"
    if isinstance(value, list | tuple | dict):
        return json.dumps(
            value,
            indent=2,
            default=lambda v: preview_text(v) if isinstance(v, torch.Tensor) else f"<{type(v).__name__}>",
        )
    return f"<{type(value).__name__}>"


class PreviewAny(Node):
    SCHEMA = NodeSchema(
        name="PreviewAny",
        display_name="Preview Any",
        category="utils",
        description="Shows any value as text in the editor: a token table, sigmas, a number.",
        inputs=[Input("source", "*", tooltip="The value to show.")],
        output_node=True,
    )

    def run(self, ctx: NodeContext, source: Any = None) -> NodeOutput:
        return NodeOutput(result=(), ui={"text": [preview_text(source)]})


TEACHING_NODES: tuple[type[Node], ...] = (
    AtelierFilmStripSampler,
    AtelierLatentChannels,
    AtelierTokenInspector,
    AtelierCrossAttentionMap,
    AtelierSigmaSchedule,
    SaveAnimatedWEBP,
    PreviewAny,
)
