"""Remember node outputs across prompts, so that changing the seed re-runs only the sampler and what follows it.

A node's cache key is its *signature*: its class, its constant inputs, its `is_changed` value and, for each linked
input, the signature of the node the link comes from plus the output slot. Two nodes with equal signatures would
compute the same thing, so the second can reuse the first's outputs. It is a Merkle tree: a signature is the
SHA-256 of the node's own parts and its sources' signatures, so change one constant anywhere and the signatures of
exactly that node and everything downstream of it change, and a key stays 32 bytes however long the chain above it
(nested tuples, one level per node, made a chain of 1,000 nodes overflow Python's recursion limit when hashed).

    checkpoint loader ──► text encode ──► sampler(seed) ──► VAE decode ──► save
    change the seed: loader and text encode keep their signatures (cache hits); the other three run again.

`is_changed` returning NaN (or any value that cannot be compared, like a tensor) makes the key unique, so the node
runs every time. Nodes marked `not_idempotent` have their node id in the key, so two identical nodes in one graph
do not share results.

The store is bounded: entries used by the latest prompt are always kept, plus the `capacity` most recently used
others (least recently used are dropped first).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import as_link, unwrap
from atelier.graph.topology import post_order, sources_within
from atelier.graph.validation import call_with_constants


class _Unique:
    """A key part equal only to itself: a node whose key holds one never hits the cache."""

    def __repr__(self) -> str:
        return "<always re-run>"


def _always_reruns(key: Any) -> bool:
    """Whether a key part holds the unique token somewhere (a NaN constant, an unknown object)."""
    if isinstance(key, _Unique):
        return True
    return isinstance(key, tuple) and any(_always_reruns(part) for part in key)


def to_key(value: Any) -> Hashable:
    """A hashable, comparable stand-in for a constant: lists -> tuples, dicts -> sorted item tuples, NaN and
    unknown objects -> a unique token (never equal to anything else)."""
    if isinstance(value, float) and math.isnan(value):
        return _Unique()
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return (type(value).__name__, value)  # keep 1, 1.0 and True apart
    if isinstance(value, (list, tuple)):
        return ("list", tuple(to_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), to_key(v)) for k, v in value.items())))
    return _Unique()


def node_signatures(prompt: dict, registry: NodeRegistry, node_ids: list[str]) -> dict[str, Hashable]:
    """The signature of each node in `node_ids` and of all their ancestors, sources first (topology.post_order, so
    a chain of thousands of nodes needs no recursion). A link back into a cycle can never be cached."""
    signatures: dict[str, Hashable] = {}
    for node_id in post_order(node_ids, sources_within(prompt), skip_cycles=True):
        node = prompt[node_id]
        node_cls = registry.require(node["class_type"])
        schema = node_cls.SCHEMA
        parts: list[Hashable] = [node["class_type"], is_changed_key(node_cls, node)]
        if schema.not_idempotent or any(i.hidden and i.type == "UNIQUE_ID" for i in schema.inputs):
            parts.append(("node_id", node_id))
        for name in sorted(node.get("inputs", {})):
            value = node["inputs"][name]
            link = as_link(value)
            if link is not None:  # a link to nothing, or one that closes a cycle, has no signature yet: never cache
                parts.append((name, "link", signatures.get(link.node_id, _Unique()), link.slot))
            else:
                parts.append((name, to_key(unwrap(value))))
        # A part that always re-runs makes this node (and so everything below it) always re-run. Otherwise the
        # parts are plain tuples of strings, numbers and digests, whose repr is a faithful encoding to hash.
        key = tuple(parts)
        signatures[node_id] = _Unique() if _always_reruns(key) else hashlib.sha256(repr(key).encode()).digest()
    return signatures


def is_changed_key(node_cls: type, node: dict) -> Hashable:
    """The key part from the node's optional `is_changed(**constant inputs)`; a failure counts as changed."""
    method = getattr(node_cls, "is_changed", None)
    if method is None:
        return None
    try:
        value, _ = call_with_constants(method, node_cls.SCHEMA, node.get("inputs", {}))
    except Exception:  # the node will run and report its own error if its inputs are really broken
        return _Unique()
    return to_key(value)


@dataclass
class CacheEntry:
    """The outputs of one node run: one list per output slot (see executor.py on lists), plus its UI output."""

    outputs: list[list]
    ui: dict | None = None


class OutputCache:
    """Node outputs keyed by signature, kept for the latest prompt plus an LRU of `capacity` older entries."""

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, CacheEntry] = OrderedDict()

    def get(self, key: Hashable) -> CacheEntry | None:
        """The entry for `key`, or None; a hit makes it the most recently used."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: CacheEntry) -> None:
        """Store (or replace) the entry for `key` as the most recently used; `trim` makes room."""
        self._entries[key] = entry
        self._entries.move_to_end(key)

    def trim(self, keep: set[Hashable]) -> None:
        """Drop least recently used entries until at most `capacity` entries outside `keep` remain."""
        others = [k for k in self._entries if k not in keep]
        for key in others[: max(0, len(others) - self.capacity)]:
            del self._entries[key]

    def clear(self) -> None:
        """Forget every entry (POST /free with free_memory)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
