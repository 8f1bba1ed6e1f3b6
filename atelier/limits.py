"""What one request may cost: limits far above what workflows ask, so that no single prompt can hold the shared
worker for hours or ask for more memory than the machine has.

Each check runs before the work starts and raises `InputError` with one sentence that names the input and the
limit:

    check_image_batch(batch, height, width)     nodes that allocate latents or images (EmptyLatentImage, the
                                                upscales, RepeatLatentBatch, ...), pipeline.decode and encode
    check_sampling_cost(latent_shape, steps)    where sampling starts (pipeline.sample, after denoise and cuts)
    check_prompt_text(text)                     where text is tokenized and encoded (pipeline.encode_prompt)

Where the cost is known from the prompt's constants, validation refuses it before the prompt is queued
(EmptyLatentImage's and CLIPTextEncode's `validate_inputs`); sizes that arrive through links are refused when
their node runs.

The schedulers are bounded too: denoise < 1 schedules steps / denoise steps and keeps the tail (ComfyUI's rule),
at most MAX_SCHEDULE_STEPS of them (sampling/schedules.py).

The numbers. SD1.x is trained at 512x512 and sampled in 20-50 steps; a 2048x2048 batch of 8 at 150 steps (5.0e9
pixel-steps, hours on a CPU, minutes on a GPU) is well inside every limit. What is refused is absurd: a batch of
4096 at 16384x16384 (a 275 GB latent), a schedule of 6e9 steps, a 1 MB prompt (90 s and 2.8 GB to encode).
"""

from __future__ import annotations

from collections.abc import Sequence

from atelier.errors import InputError

MAX_STEPS = 10_000  # the KSampler's steps maximum, as in ComfyUI
MAX_SCHEDULE_STEPS = 100_000  # steps / denoise: 20 steps may go down to denoise 0.0002 (the editor steps by 0.01)
MAX_BATCH_PIXELS = 2**27  # 134 Mpx per latent or image batch (2048x2048 x 32, 512x512 x 512); 1.6 GB as an IMAGE
MAX_IMAGE_PIXELS = 4096 * 4096  # per image the UNet denoises: self-attention's cost grows with its square
MAX_PIXEL_STEPS = 2 * 10**10  # batch x pixels x steps of one sampling run
MAX_PROMPT_CHARACTERS = 20_000  # a 1,500-word prompt has about 9,000; each 75 tokens cost one text-encoder pass
MAX_TEXT_CHARACTERS = 1_000_000  # what a text node may make: 20 Concatenates of one prompt would double it 20 times
REGEX_SECONDS = 1.0  # a regular expression that backtracks for longer (e.g. "(x+x+)+y") is stopped


def check_text_length(characters: int, node: str) -> None:
    """Refuse a text node's result of more than MAX_TEXT_CHARACTERS characters (checked before it is built)."""
    if characters > MAX_TEXT_CHARACTERS:
        raise InputError(
            f"{node}: the text it makes would have {characters:,} characters; the most is {MAX_TEXT_CHARACTERS:,}."
        )


def check_image_batch(batch: int, height: int, width: int) -> None:
    """Refuse a batch of images (or the latents that decode to them) of more than MAX_BATCH_PIXELS pixels."""
    pixels = batch * height * width
    if pixels > MAX_BATCH_PIXELS:
        raise InputError(
            f"A batch of {batch} at {width}x{height} is too large: batch x width x height is {pixels:,} pixels and "
            f"the most is {MAX_BATCH_PIXELS:,} (for example 32 images of 2048x2048)."
        )


def check_sampling_cost(latent_shape: Sequence[int], steps: int, downscale: int = 8) -> None:
    """Refuse to sample a latent (B, C, h, w) that is too large per image, per batch, or over all its steps.

    Sizes are counted in image pixels (`downscale` pixels per latent pixel on each side, 8 for SD's VAE).
    """
    batch, height, width = int(latent_shape[0]), int(latent_shape[-2]) * downscale, int(latent_shape[-1]) * downscale
    if height * width > MAX_IMAGE_PIXELS:
        raise InputError(
            f"A latent of {width}x{height} pixels is too large to sample: the most is {MAX_IMAGE_PIXELS:,} pixels "
            f"per image (4096x4096)."
        )
    check_image_batch(batch, height, width)
    cost = batch * height * width * steps
    if cost > MAX_PIXEL_STEPS:
        raise InputError(
            f"Sampling a batch of {batch} at {width}x{height} for {steps} steps is too much work for one prompt: "
            f"batch x width x height x steps is {cost:,} and the most is {MAX_PIXEL_STEPS:,} (2048x2048, batch 8, "
            f"150 steps is 5,033,164,800)."
        )


def check_prompt_text(text: str) -> None:
    """Refuse a prompt longer than MAX_PROMPT_CHARACTERS characters, before it is tokenized."""
    if len(text) > MAX_PROMPT_CHARACTERS:
        raise InputError(f"The prompt has {len(text):,} characters; the most is {MAX_PROMPT_CHARACTERS:,}.")
