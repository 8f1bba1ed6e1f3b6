"""The %...% patterns in a save node's filename_prefix, filled in where ComfyUI fills them.

Two places fill them, and Atelier follows both:

1. The editor, when it queues a workflow (the frontend's `applyTextReplacements`, on the filename_prefix of
   SaveImage and the other save nodes), so these never reach a server from the editor:
   - `%date:yyyy-MM-dd%` becomes the date and time in that layout: yyyy or yy for the year, MM, dd, hh (0-23),
     mm and ss; a single letter (M, d, h, m, s) leaves out the leading zero;
   - `%Name.widget%` becomes the value of widget `widget` of the node whose "Node name for S&R" property is
     `Name` (that property is the node's type unless someone renamed it), or else whose title is `Name`; the
     characters / ? < > \\ : * | " and control characters of the value become "_", so it cannot add a folder.
   A pattern that names no node or widget is left as it is written. `ui_to_api` (graph/workflow.py) calls
   `editor_replacements`, so a workflow file queued from the CLI or the lab saves where the editor would.
2. The server, when the node saves (`folder_paths.get_save_image_path`): %width% and %height% (of the first
   image of the batch), %year% %month% %day% %hour% %minute% %second% (two digits but the year). Scripts that
   post API prompts rely on these; SaveImage calls `server_variables`.

    editor_replacements("%date:yyyy-MM-dd%/%KSampler.seed%", widget_value, now)   # '2025-03-01/42'
    server_variables("cat_%width%x%height%", 512, 768, now)                       # 'cat_512x768'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

# The nodes whose filename_prefix the editor fills in (frontend extension Comfy.SaveImageExtraOutput).
SAVE_NODE_TYPES = frozenset(
    {
        "SaveImage",
        "SaveVideo",
        "SaveAnimatedWEBP",
        "SaveWEBM",
        "SaveAudio",
        "SaveGLB",
        "SaveAnimatedPNG",
        "CLIPSave",
        "VAESave",
        "ModelSave",
        "LoraSave",
        "SaveLatent",
    }
)

_PATTERN = re.compile(r"%([^%]+)%")
_DATE_TOKEN = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")  # the frontend's formatDate, token by token
_DATE_PARTS: dict[str, Callable[[datetime], int]] = {
    "d": lambda t: t.day,
    "M": lambda t: t.month,
    "h": lambda t: t.hour,
    "m": lambda t: t.minute,
    "s": lambda t: t.second,
}
_NOT_IN_A_FILE_NAME = re.compile(r'[/?<>\\:*|"\x00-\x1f\x7f]')

WidgetValue = Callable[[str, str], Any]
"""(node name or title, widget name) -> the widget's value, or None when no node or no such widget is found."""


def format_date(layout: str, now: datetime) -> str:
    """`layout` with its date tokens replaced: format_date("yyyy-MM-dd hh:mm", t) -> '2025-03-01 09:05'."""

    def token(match: re.Match) -> str:
        text = match.group(0)
        if text == "yy":
            return str(now.year)[2:]
        if text == "yyyy":
            return str(now.year)
        if text[0] in _DATE_PARTS:
            return str(_DATE_PARTS[text[0]](now)).zfill(len(text))
        return text  # "yyy" is no token

    return _DATE_TOKEN.sub(token, layout)


def editor_replacements(value: str, widget_value: WidgetValue, now: datetime) -> str:
    """What the editor queues for a filename_prefix `value` (see the module docstring)."""

    def replace(match: re.Match) -> str:
        text = match.group(1)
        parts = text.split(".")
        if len(parts) != 2:
            return format_date(text[len("date:") :], now) if parts[0].startswith("date:") else match.group(0)
        found = widget_value(parts[0], parts[1])
        return match.group(0) if found is None else _NOT_IN_A_FILE_NAME.sub("_", str(found))

    return _PATTERN.sub(replace, value)


def server_variables(prefix: str, width: int, height: int, now: datetime) -> str:
    """The prefix with ComfyUI's server-side variables filled in (see the module docstring)."""
    if "%" not in prefix:
        return prefix
    values = {
        "width": str(width),
        "height": str(height),
        "year": str(now.year),
        "month": f"{now.month:02d}",
        "day": f"{now.day:02d}",
        "hour": f"{now.hour:02d}",
        "minute": f"{now.minute:02d}",
        "second": f"{now.second:02d}",
    }
    for name, text in values.items():
        prefix = prefix.replace(f"%{name}%", text)
    return prefix
