"""Hypothesis strategies for POST /prompt bodies: graphs that are nearly right, and wrong in every way JSON allows.

A graph is drawn from the stub nodes' own vocabulary (their class types, input names, output slots) mixed with
strangers (unknown types, non-string types, unicode, links to nowhere), so that most draws reach deep into the
validator instead of stopping at the first check. Values are any JSON a client could send: strict JSON only,
since a body with NaN is refused before the graph is looked at (that door is the corpus's).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NODE_INPUTS = {  # the stub nodes (tests/server/stub_nodes.py) and their inputs
    "MakeImage": ["width", "height", "colour"],
    "SlowImage": ["image", "steps", "delay"],
    "Fail": ["image", "message"],
    "SaveStub": ["images", "filename_prefix"],
}
CLASS_TYPES = list(NODE_INPUTS)
INPUT_NAMES = [name for names in NODE_INPUTS.values() for name in names]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


# How wild one body is. Hypothesis favours the first entries and small integers, so the choice is made once per
# body (not per node: one broken node already stops the whole graph at the first check).
MODES = ["tame", "tame", "strange-values", "strange-types", "strange-shape", "strange-body"]


def node_ids(count: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.integers(min_value=1, max_value=count + 2).map(str), min_size=1, max_size=count, unique=True)


@st.composite
def link(draw: st.DrawFn, ids: list[str], mode: str) -> list:
    """[node_id, slot] to a node before this one (ids), slot 0 or 1, or now and then to any node of the graph (a
    cycle, perhaps); in the strange modes, to anything, of any length."""
    if mode in ("tame", "strange-values"):
        return [draw(st.sampled_from(ids)), draw(st.integers(0, 1))]
    target = draw(st.one_of(st.sampled_from(ids), st.text(max_size=4), st.integers(-3, 99)))
    slot = draw(st.one_of(st.integers(-2, 5), st.integers(min_value=2**40), st.text(max_size=2)))
    return draw(st.sampled_from([[target, slot], [target], [target, slot, 0]]))


@st.composite
def input_value(draw: st.DrawFn, ids: list[str], mode: str) -> Any:
    tame = st.one_of(
        link(ids, mode) if ids else st.nothing(),
        st.integers(min_value=-10, max_value=100),
        st.sampled_from(["red", "green", "blue", "stub"]),
        st.floats(min_value=0, max_value=1, allow_nan=False),
    )
    if mode == "tame":
        return draw(tame)
    wild = st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.text(max_size=40),
        st.fixed_dictionaries({"__value__": json_value}),
        json_value,
    )
    return draw(st.one_of(tame, wild))


@st.composite
def prompt_node(draw: st.DrawFn, ids: list[str], mode: str) -> Any:
    class_types = st.sampled_from(CLASS_TYPES)
    names = st.sampled_from(INPUT_NAMES)
    if mode == "strange-types":
        class_types = st.one_of(class_types, st.text(max_size=12), json_value)
        names = st.one_of(names, st.text(max_size=8))
    class_type = draw(class_types)
    inputs = draw(st.dictionaries(names, input_value(ids, mode), max_size=3))
    for name in NODE_INPUTS.get(class_type, []) if isinstance(class_type, str) else []:
        if draw(st.integers(0, 5)) < 5:  # its own inputs, most of the time (6 to 1 in a uniform draw)
            inputs[name] = draw(input_value(ids, mode))
    node: dict[str, Any] = {"class_type": class_type, "inputs": inputs}
    if mode == "strange-shape":
        shape = draw(st.sampled_from(["inputs", "meta", "no-class-type", "not-a-node", "as-is"]))
        if shape == "inputs":
            node["inputs"] = draw(json_value)
        elif shape == "meta":
            node["_meta"] = draw(json_value)
        elif shape == "no-class-type":
            del node["class_type"]
        elif shape == "not-a-node":
            return draw(json_value)
    return node


@st.composite
def prompt_body(draw: st.DrawFn) -> Any:
    """A POST /prompt body: {"prompt": graph, ...}, with the optional fields drawn in the strange-body mode."""
    mode = draw(st.sampled_from(MODES))
    ids = draw(node_ids(10))
    graph = {}
    for n, node_id in enumerate(ids):  # tame links go to earlier nodes, one in ten to any node
        sources = ids if draw(st.integers(0, 9)) == 4 else ids[:n]  # (0 and 9 come up more often than 1 in 10)
        graph[node_id] = draw(prompt_node(sources, mode))
    if mode != "strange-shape":  # an output node, so that validation walks the graph
        images = draw(link(ids[:-1] or ids, mode))
        graph[ids[-1]] = {"class_type": "SaveStub", "inputs": {"images": images, "filename_prefix": "f"}}
    body: dict[str, Any] = {"prompt": graph, "client_id": "fuzz"}
    if mode != "strange-body":
        return body
    optional = {
        "client_id": st.one_of(st.text(max_size=12), json_value),
        "prompt_id": st.one_of(st.uuids().map(str), st.text(max_size=12), json_value),
        "number": st.one_of(
            st.integers(min_value=-(2**60), max_value=2**60),
            st.floats(allow_nan=False, allow_infinity=False),
            json_value,
        ),
        "front": json_value,
        "extra_data": st.one_of(st.fixed_dictionaries({"extra_pnginfo": json_value}), json_value),
        "partial_execution_targets": st.one_of(st.lists(st.sampled_from(ids)), json_value),
        "prompt": json_value,
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), min_size=1, max_size=4, unique=True)):
        body[name] = draw(optional[name])
    return draw(st.sampled_from([body, body, body, draw(json_value)]))
