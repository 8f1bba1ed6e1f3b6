"""The set of node classes a server or executor knows, by class name.

There is no global registry: whoever builds the server makes a `NodeRegistry`, adds the node classes it wants and
hands the instance to the validator, the executor and the HTTP routes. Tests build a registry of stub nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from atelier.errors import InputError
from atelier.graph.schema import NodeSchema, schema_of


class NodeRegistry:
    """Node classes by their `SCHEMA.name` (the `class_type` of prompts and workflow files)."""

    def __init__(self, nodes: Iterable[type] = ()) -> None:
        self._classes: dict[str, type] = {}
        for node_cls in nodes:
            self.add(node_cls)

    def add(self, node_cls: type) -> type:
        """Register a node class (usable as a class decorator). Two classes may not share a name."""
        schema = schema_of(node_cls)
        existing = self._classes.get(schema.name)
        if existing is not None and existing is not node_cls:
            raise ValueError(f"Two node classes are named {schema.name!r}: {existing!r} and {node_cls!r}.")
        self._classes[schema.name] = node_cls
        return node_cls

    def get(self, class_type: object) -> type | None:
        """The class named `class_type`, or None. Anything but a string (a prompt may hold a list or an object
        where a name belongs) names no class."""
        return self._classes.get(class_type) if isinstance(class_type, str) else None

    def schema(self, class_type: object) -> NodeSchema | None:
        """The SCHEMA of the class named `class_type`, or None."""
        node_cls = self.get(class_type)
        return None if node_cls is None else node_cls.SCHEMA

    def require(self, class_type: object) -> type:
        """The class for `class_type`, or an InputError naming it."""
        node_cls = self.get(class_type)
        if node_cls is None:
            raise InputError(f"The node type {class_type!r} is not known; expected one of {sorted(self._classes)}.")
        return node_cls

    def __contains__(self, class_type: object) -> bool:
        return self.get(class_type) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def object_info(self, class_type: str | None = None) -> dict:
        """GET /object_info (every node) or /object_info/{class_type} (`{}` when unknown), in ComfyUI's format.

        Dynamic COMBO options (e.g. the checkpoint files on disk) are evaluated now, on every call."""
        if class_type is not None:
            node_cls = self.get(class_type)
            return {} if node_cls is None else {class_type: node_cls.SCHEMA.object_info()}
        return {name: node_cls.SCHEMA.object_info() for name, node_cls in self._classes.items()}
