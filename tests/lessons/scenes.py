"""Pictures like the embedded model's world, for the lessons' tests."""

import numpy as np
from PIL import Image


def scene(colour: tuple[int, int, int], size: int = 128) -> Image.Image:
    """A green background with a coloured disc on the left."""
    yy, xx = np.mgrid[:size, :size]
    pixels = np.full((size, size, 3), (70, 140, 70), np.uint8)
    pixels[(yy - size / 2) ** 2 + (xx - size / 4) ** 2 < (size / 6) ** 2] = colour
    return Image.fromarray(pixels)
