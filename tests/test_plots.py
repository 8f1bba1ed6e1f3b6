"""The PIL drawing helpers: the font must carry French accents (the eval's sample sheets show French captions)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from atelier.plots import FONT_CANDIDATES, font


def _drawn(text: str, size: int = 24) -> np.ndarray:
    image = Image.new("L", (80, 40))
    ImageDraw.Draw(image).text((4, 4), text, font=font(size), fill=255)
    return np.asarray(image)


def test_atelier_font_comes_first_and_a_missing_one_is_skipped(monkeypatch, tmp_path):
    available = next((p for p in FONT_CANDIDATES if Path(p).exists()), None)
    if available is None:
        pytest.skip("no TrueType font on this machine")
    mine = tmp_path / "mine.ttf"
    shutil.copy(available, mine)
    monkeypatch.setenv("ATELIER_FONT", str(mine))
    assert font(12).path == str(mine)
    monkeypatch.setenv("ATELIER_FONT", str(tmp_path / "missing.ttf"))
    assert font(12).path == available  # falls through to the system font


def test_accented_letters_are_drawn_with_their_accents():
    if not any(Path(p).exists() for p in FONT_CANDIDATES):
        pytest.skip("no TrueType font on this machine")
    plain, grave, acute = _drawn("a e"), _drawn("à é"), _drawn("á è")
    assert (grave > 0).sum() > (plain > 0).sum()  # the accents add ink above the letters
    assert not np.array_equal(grave, acute)  # and each accent is its own glyph
