"""Line charts drawn with PIL (no plotting library needed offline): loss curves, sweeps, sigma schedules.

    line_chart({"vae L1": (steps, values)}, "loss.png", title="VAE", x_label="step", y_label="L1", log_y=True)

One implementation for every chart Atelier draws: the training curves in docs/, the CFG sweep of `atelier eval`
and the sigma-schedule node of the lab.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# One colour per series (matplotlib's "tab10" cycle); faint series are drawn half-way to white.
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
AXIS, GRID, NOTE, REFERENCE = (60, 60, 60), (234, 234, 234), (150, 150, 150), (200, 40, 40)


def faint(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(round(c + (255 - c) * 0.55) for c in colour)  # type: ignore[return-value]


# Fonts with the accents of French captions (PIL's built-in font lacks "à", "é"...): $ATELIER_FONT first, then the
# usual places on Linux, macOS and Windows.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
    "DejaVuSans.ttf",
)


def font(size: int) -> ImageFont.ImageFont:
    """A TrueType font with accents when the system has one (see FONT_CANDIDATES), else PIL's built-in font."""
    for path in (os.environ.get("ATELIER_FONT"), *FONT_CANDIDATES):
        if not path:
            continue
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path | None = None,
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    log_x: bool = False,
    log_y: bool = False,
    size: tuple[int, int] = (720, 440),
    highlight: str | None = None,
    x_ticks: Sequence[float] | None = None,
    y_range: tuple[float, float] | None = None,
    reference: tuple[float, str] | None = None,
    label_points: str = "",
    note: str = "",
) -> Image.Image:
    """One line per series, with axes, round ticks, labels and a legend. Saves to `path` when given.

    - highlight: that series bold with a dot per point, the others faint.
    - log_x / log_y: logarithmic axes (points <= 0 cannot be drawn there and are left out).
    - x_ticks: ticks at these values (e.g. the CFG values measured) instead of round ones.
    - y_range: fixed (low, high) for the y axis; reference (value, label): a dashed horizontal line.
    - label_points: a format (e.g. "{:.0%}") to print each point's value above it.
    """
    w, h = size
    legend_w = 150 if len(series) > 1 else 0
    left, right, top, bottom = 76, 24 + legend_w, 48, 60
    fx = math.log10 if log_x else float
    fy = math.log10 if log_y else float
    points = {
        name: [(fx(x), fy(y)) for x, y in zip(xs, ys, strict=True) if (x > 0 or not log_x) and (y > 0 or not log_y)]
        for name, (xs, ys) in series.items()
    }
    all_x = [p[0] for pts in points.values() for p in pts] or [0.0, 1.0]
    all_y = [p[1] for pts in points.values() for p in pts] or [0.0, 1.0]
    x0, x1 = min(all_x), max(all_x)
    if x_ticks:
        x0, x1 = min(x0, *map(fx, x_ticks)), max(x1, *map(fx, x_ticks))
    if x1 == x0:
        x1 = x0 + 1
    pad = 0.04 * (x1 - x0) if x_ticks else 0.0
    x0, x1 = x0 - pad, x1 + pad
    if y_range is not None:
        y0, y1 = fy(y_range[0]), fy(y_range[1])
    elif log_y:  # whole decades
        y0, y1 = math.floor(min(all_y)), max(math.ceil(max(all_y)), math.floor(min(all_y)) + 1)
    else:
        y0, y1 = min(all_y), max(all_y)
        y0, y1 = y0 - 0.04 * (y1 - y0 or 1), y1 + 0.04 * (y1 - y0 or 1)

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (w - left - right)

    def py(v: float) -> float:
        return h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)

    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    small, normal = font(13), font(15)

    # Axes, grid, ticks and labels.
    y_values = [10.0**e for e in range(math.ceil(y0), math.floor(y1) + 1)] if log_y else nice_ticks(y0, y1)
    for value in y_values:
        y = py(fy(value))
        d.line([(left + 1, y), (w - right, y)], fill=GRID)
        d.line([(left - 4, y), (left, y)], fill=AXIS)
        d.text((left - 8, y), f"{value:g}", fill=AXIS, font=small, anchor="rm")
    x_values = x_ticks or ([10.0**e for e in range(math.ceil(x0), math.floor(x1) + 1)] if log_x else nice_ticks(x0, x1))
    for value in x_values:
        x = px(fx(value))
        d.line([(x, h - bottom), (x, h - bottom + 4)], fill=AXIS)
        d.text((x, h - bottom + 8), f"{value:g}", fill=AXIS, font=small, anchor="mt")
    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill=AXIS, width=2)
    if reference is not None:
        y = py(fy(reference[0]))
        for xd in range(left, w - right, 12):
            d.line([(xd, y), (min(xd + 6, w - right), y)], fill=REFERENCE)
        d.text((left + 6, y - 4), reference[1], fill=REFERENCE, font=small, anchor="lb")

    # Series: faint ones first, the highlighted one on top; a legend on the right when there are several.
    colours = {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(series)}
    order = [n for n in series if n != highlight] + ([highlight] if highlight in series else [])
    for name in order:
        bold = highlight is None or name == highlight
        colour = colours[name] if bold else faint(colours[name])
        xy = [(px(x), py(y)) for x, y in points[name]]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=3 if bold else 1, joint="curve")
        if name == highlight or len(xy) == 1 or label_points:
            for x, y in xy:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        if label_points:
            for (x, y), value in zip(xy, series[name][1], strict=False):
                d.text((x, y - 8), label_points.format(value), fill=colour, font=small, anchor="mb")
    if legend_w:
        for row, name in enumerate(series):
            bold = highlight is None or name == highlight
            colour = colours[name] if bold else faint(colours[name])
            y = top + 8 + 18 * row
            d.line([(w - legend_w + 6, y), (w - legend_w + 26, y)], fill=colour, width=3 if bold else 1)
            d.text((w - legend_w + 32, y), name, fill=colour, font=small, anchor="lm")
    if note:
        d.text((w - right - 4, top - 6), note, fill=NOTE, font=small, anchor="rb")

    d.text((w / 2, 12), title, fill="black", font=normal, anchor="mt")
    d.text(((left + w - right) / 2, h - 18), x_label, fill="black", font=normal, anchor="mm")
    label = Image.new("RGB", (h - top - bottom, 22), "white")
    ImageDraw.Draw(label).text((label.width / 2, 11), y_label, fill="black", font=normal, anchor="mm")
    img.paste(label.rotate(90, expand=True), (6, top))
    if path is not None:
        img.save(path)
    return img
