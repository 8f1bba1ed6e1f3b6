"""Placeholder thumbnails for the workflow templates: a card with the template's title and a sketch of its graph.

python -m atelier.server.thumbnails      # (re)draws templates/<name>-1.webp for every entry of templates.json
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TEMPLATES_DIR = Path(__file__).parent / "templates"
SIZE = (512, 512)
BACKGROUND, BOX, LINE, TEXT = (32, 34, 44), (70, 90, 130), (200, 170, 90), (235, 235, 240)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def draw_thumbnail(title: str, subtitle: str = "") -> Image.Image:
    """A 512x512 card: the title, an optional subtitle, and five boxes linked left to right (a node graph)."""
    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    boxes = [(40, 300), (150, 250), (150, 350), (260, 300), (370, 300)]  # loader, 2 encoders, sampler, save
    for a, b in [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)]:
        (x0, y0), (x1, y1) = boxes[a], boxes[b]
        draw.line([(x0 + 80, y0 + 20), (x1, y1 + 20)], fill=LINE, width=4)
    for x, y in boxes:
        draw.rounded_rectangle([x, y, x + 80, y + 40], radius=8, fill=BOX)
    draw.text((40, 80), title, font=_font(44), fill=TEXT)
    if subtitle:
        draw.text((40, 150), subtitle, font=_font(24), fill=TEXT)
    draw.text((40, 450), "Atelier", font=_font(22), fill=LINE)
    return image


def main() -> None:
    for entry in json.loads((TEMPLATES_DIR / "templates.json").read_text(encoding="utf-8")):
        path = TEMPLATES_DIR / f"{entry['name']}-1.webp"
        draw_thumbnail(entry.get("title", entry["name"]), entry.get("subtitle", "")).save(path, quality=80)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
