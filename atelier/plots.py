"""Small line charts drawn with PIL (no plotting library needed offline): loss curves, sweeps, schedules.

    line_chart({"vae L1": (steps, values)}, "loss.png", title="VAE", x_label="step", y_label="L1", log_y=True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = [(40, 90, 200), (220, 90, 30), (40, 150, 70), (170, 50, 160), (120, 120, 120), (200, 40, 40)]


def font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans when the system has it (accents and symbols), else PIL's built-in font."""
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


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
) -> Image.Image:
    """One line per series, with axes, round ticks, labels and a legend; `highlight` draws one series bold and the
    others faint. Log axes show powers of ten. Saves to `path` when given; returns the image."""
    w, h = size
    left, right, top, bottom = 84, 24, 44, 62
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    points = {
        name: [(fx(x), fy(y)) for x, y in zip(xs, ys, strict=True) if (x > 0 or not log_x) and (y > 0 or not log_y)]
        for name, (xs, ys) in series.items()
    }
    all_x = [p[0] for pts in points.values() for p in pts] or [0.0, 1.0]
    all_y = [p[1] for pts in points.values() for p in pts] or [0.0, 1.0]
    x0, x1 = min(all_x), max(all_x)
    y0, y1 = min(all_y), max(all_y)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad = 0.04 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (w - left - right)

    def py(v: float) -> float:
        return h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)

    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    small, normal = font(13), font(15)
    y_ticks = range(math.ceil(y0), math.floor(y1) + 1) if log_y else _ticks(y0, y1)
    for t in y_ticks:
        d.line([(left, py(t)), (w - right, py(t))], fill=(232, 232, 232))
        d.text((left - 8, py(t)), f"1e{int(t)}" if log_y else f"{t:g}", fill="black", font=small, anchor="rm")
    x_ticks = range(math.ceil(x0), math.floor(x1) + 1) if log_x else _ticks(x0, x1)
    for t in x_ticks:
        d.line([(px(t), h - bottom), (px(t), h - bottom + 5)], fill="black")
        d.text((px(t), h - bottom + 8), f"1e{int(t)}" if log_x else f"{t:g}", fill="black", font=small, anchor="mt")
    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black", width=2)
    for i, (name, pts) in enumerate(points.items()):
        colour = PALETTE[i % len(PALETTE)]
        faint = highlight is not None and name != highlight
        if faint:
            colour = tuple(int(c * 0.35 + 255 * 0.65) for c in colour)
        xy = [(px(x), py(y)) for x, y in pts]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=1 if faint else 3)
        elif xy:
            d.ellipse([xy[0][0] - 3, xy[0][1] - 3, xy[0][0] + 3, xy[0][1] + 3], fill=colour)
        d.text((w - right - 6, top + 4 + 18 * i), name, fill=colour, font=small, anchor="ra")
    d.text((w / 2, 12), title, fill="black", font=normal, anchor="mt")
    d.text(((left + w - right) / 2, h - 18), x_label, fill="black", font=normal, anchor="mm")
    label = Image.new("RGB", (h - top - bottom, 22), "white")
    ImageDraw.Draw(label).text((label.width / 2, 11), y_label, fill="black", font=normal, anchor="mm")
    img.paste(label.rotate(90, expand=True), (6, top))
    if path is not None:
        img.save(path)
    return img
