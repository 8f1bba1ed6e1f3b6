"""One frozen dataclass config per component, serialisable to JSON for checkpoint metadata.

Each model file defines its own config (`TextEncoderConfig`, `UNetConfig`, `VAEConfig`) as a frozen dataclass;
these two functions turn any of them into the JSON string stored in a safetensors header and back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

C = TypeVar("C")


def config_to_json(config: Any) -> str:
    """A config dataclass as a JSON object (tuples become lists)."""
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def config_from_json(cls: type[C], text: str | dict) -> C:
    """The config of type `cls` stored in `text`; unknown keys are ignored, lists become tuples again."""
    data = json.loads(text) if isinstance(text, str) else dict(text)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for name, value in data.items():
        if name in fields:
            kwargs[name] = _tuplify(value)
    return cls(**kwargs)


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value
