"""The editor's settings: stored in user/default/comfy.settings.json, served over Atelier's private defaults.

The ComfyUI frontend (1.58.1) talks to servers other than ours unless some settings say otherwise. Each default
below was found by reading the frontend bundle (assets/GraphView-*.js, index-*.js); a setting the user changes in
the editor is stored and wins over the default.

- "Comfy.Notification.ShowVersionUpdates": False
    The release store asks https://api.comfy.org/releases for news on every start (fetchReleases returns early
    when this is off). /system_stats also lists "--disable-api-nodes" in argv, the frontend's second off switch.
- "Comfy.Workflow.ShowMissingNodesWarning": False
    The "missing nodes" dialog looks the missing node types up in the Comfy registry (api.comfy.org/nodes...).
    Our /prompt still answers missing_node_type, and the editor still outlines unknown nodes in red.
- Missing models (1.58 lists them in its issues tab, Comfy.ErrorSystem.ShowMissingModels) are found from
    /api/experiment/models, locally. Only a model that a workflow gives a download URL for makes it send a HEAD
    request to that URL for its size, which no setting turns off (the 1.27 setting
    Comfy.Workflow.ShowMissingModelsWarning is gone): atelier/web/editor/offline.js refuses it before it is made,
    and the issues panel still names the file and its folder. Atelier's templates name no URL.
- "Comfy.NodeBadge.ShowApiPricing": False
    Price badges belong to paid API nodes, which Atelier does not have.
- "Comfy.Execution.PreviewMethod": "auto"
    The editor (1.58) sends this setting with every prompt as extra_data.preview_method. The server's own default,
    for clients that send none, is ComfyUI's "none" (prompt_queue.wants_previews); the editor shows live sampler
    previews, so it asks for them. A user who picks "default" or "none" in the editor gets what they chose.
- "Comfy.Canvas.LeftMouseClickBehavior": "panning", "Comfy.Canvas.MouseWheelScroll": "zoom"
    The editor's own defaults, stored so that start-up does not throw: registering "Comfy.Canvas.NavigationMode"
    ("legacy") sets these two before they are registered, and setting an unregistered one raises a TypeError
    (settingsById[key].id) unless the value is already there. Seen as an uncaught page error in headless Chromium.

- "Comfy.TutorialCompleted": True
    A first visit otherwise opens on an empty canvas under the template browser (and, for a signed-in user, a
    "getting started" screen); with it the editor opens on its default graph, which is Atelier's own
    (atelier/web/editor/default_graph.js). The templates stay one click away in the sidebar.

- "Comfy.Minimap.Visible": False
    On the workshop's 1366 x 768 screens the minimap (a 250 x 200 panel in the bottom-right corner) covers the
    output node of a fitted template (Save Image of the hires fix). The canvas toolbar's map button shows it.

- "LiteGraph.Canvas.MinFontSizeForLOD": 4
    Below this on-screen font size (px) nodes are drawn as blank boxes. The editor's 8 blanks every template
    fitted to 1366 x 768 (zoom 0.48-0.58 makes its 14 px text 7-8 px); at 4 their titles and widgets stay drawn.

Two outbound calls are not governed by settings: the error reporter (Sentry, to sentry.io, on Vue errors) and
Firebase sign-in. frontend.py serves index.html with a Content-Security-Policy whose connect-src allows only this
server, so the browser refuses both.

Every browser in the room parses GET /settings, so a stored value must be strict JSON: a non-finite number (NaN,
Infinity) is refused, and one written by an older version reads as null. The file is kept under MAX_BYTES.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from atelier.errors import InputError
from atelier.server.files import write_atomic
from atelier.server.strict_json import dumps, loads_lenient

MAX_BYTES = 2 * 1024 * 1024  # the editor's settings are a few kB; every page load reads them all

PRIVATE_DEFAULTS: dict[str, Any] = {
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.NodeBadge.ShowApiPricing": False,
    "Comfy.Execution.PreviewMethod": "auto",
    "Comfy.Canvas.LeftMouseClickBehavior": "panning",
    "Comfy.Canvas.MouseWheelScroll": "zoom",
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 4,
}


class Settings:
    """Settings of the single local user: defaults overlaid with what the user stored."""

    def __init__(self, user_dir: Path, defaults: dict[str, Any] | None = None) -> None:
        self.path = user_dir / "comfy.settings.json"
        self.defaults = dict(PRIVATE_DEFAULTS if defaults is None else defaults)
        self._lock = threading.Lock()

    def stored(self) -> dict[str, Any]:
        """What the user changed (an unreadable file counts as empty rather than stopping the editor)."""
        try:
            data = loads_lenient(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    def all(self) -> dict[str, Any]:
        return {**self.defaults, **self.stored()}

    def get(self, setting_id: str) -> Any:
        return self.all().get(setting_id)

    def update(self, values: dict[str, Any]) -> None:
        """Store these settings over the others; raises InputError for a non-finite number or a file too large."""
        for setting_id, value in values.items():
            try:
                dumps(value)
            except ValueError:
                raise InputError(
                    f"The setting {setting_id[:100]!r} holds a number that is not finite (NaN or Infinity); "
                    "expected a JSON value."
                ) from None
        with self._lock:
            text = dumps({**self.stored(), **values}, indent=4).encode()
            if len(text) > MAX_BYTES:
                raise InputError(f"The settings would take {len(text):,} bytes; the most is {MAX_BYTES:,}.")
            write_atomic(self.path, text)
