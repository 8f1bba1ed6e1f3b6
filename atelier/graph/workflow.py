"""Convert between the node editor's workflow files (UI format) and the prompts the executor runs (API format).

API format: `{"3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0]}, "_meta": {"title": ..}}}`.
UI format (version 0.4) stores what the editor draws: nodes with positions, sockets and `widgets_values`, and links
as `[link_id, origin_id, origin_slot, target_id, target_slot, type]`.

UI -> API (what the editor does when you press Queue):
- Note, MarkdownNote, Reroute and PrimitiveNode are drawing aids, not nodes: they never reach the prompt. A link
  through Reroutes is followed back to the real node; a link from a PrimitiveNode becomes its value.
- Muted nodes (mode 2) are left out; bypassed nodes (mode 4) are left out too, but a link from one is passed
  through to whatever feeds its input of the same type (the input with the same index is tried first).
- `widgets_values` is positional: it is matched to input names by the schema's widget order (`widget_slots`),
  which includes UI-only entries: after a seed comes its control_after_generate mode, after an image_upload
  combo the upload button.
- Links into nodes that are not part of the prompt are dropped, as the editor does; so is an input for a widget
  the node no longer has (renamed in ComfyUI since the file was saved), which the editor removes on load.

API -> UI (`api_to_ui`) lays nodes out left to right by depth (a node sits one column right of its deepest input)
so a prompt made outside the editor (CLI, script, lab) can be opened and edited there.

Subgraphs (workflow `definitions.subgraphs`, see `_UIGraph`) are expanded into their nodes, with "12:5" ids (node
5 inside instance 12), as the editor queues them; legacy group nodes (`extra.groupNodes`, see `_group_definitions`)
become the equivalent subgraphs first, their inner nodes queued as "12:0", "12:1"...
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from atelier.errors import InputError
from atelier.graph.filename_patterns import SAVE_NODE_TYPES, editor_replacements
from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Input, NodeSchema, as_link, unwrap
from atelier.graph.topology import post_order, sources_within

VIRTUAL_NODES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
MODE_ALWAYS, MODE_MUTED, MODE_BYPASS = 0, 2, 4


@dataclass(frozen=True)
class WidgetSlot:
    """One entry of `widgets_values`: the value of input `name`, or a UI-only companion of it."""

    name: str
    kind: str  # "value", "control" (fixed/increment/decrement/randomize after a seed) or "upload" (a button)


def widget_slots(schema: NodeSchema) -> list[WidgetSlot]:
    """The layout of a node's `widgets_values`, e.g. KSampler: seed, seed/control, steps, cfg, sampler_name, ..."""
    slots = []
    for inp in schema.visible_inputs:
        if not inp.is_widget:
            continue
        slots.append(WidgetSlot(inp.name, "value"))
        if inp.control_after_generate:
            slots.append(WidgetSlot(inp.name, "control"))
        if inp.image_upload:
            slots.append(WidgetSlot(inp.name, "upload"))
    return slots


# ---- UI -> API ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _UILink:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


def _ui_links(workflow: dict) -> dict[int, _UILink]:
    """Links by id; both the 0.4 list form and the 1.0 object form are accepted."""
    links = {}
    for raw in workflow.get("links") or []:
        if isinstance(raw, dict):
            keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
            link = _UILink(*(raw.get(k) for k in keys))
        else:
            link = _UILink(*raw[:6])
        links[link.id] = link
    return links


SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = -10, -20  # the ids of a subgraph's input and output boundary nodes
MAX_SUBGRAPH_DEPTH = 32  # subgraphs inside subgraphs; deeper means a definition that contains itself


def _subgraph_definitions(workflow: dict) -> dict[str, dict]:
    """Every subgraph definition by its id (a uuid): `definitions.subgraphs`, and nested `definitions` inside them."""
    found: dict[str, dict] = {}
    pending = [workflow]
    while pending:
        holder = pending.pop()
        definitions = holder.get("definitions") if isinstance(holder, dict) else None
        for sub in (definitions or {}).get("subgraphs") or [] if isinstance(definitions, dict) else []:
            if isinstance(sub, dict) and isinstance(sub.get("id"), str) and sub["id"] not in found:
                found[sub["id"]] = sub
                pending.append(sub)
    return found


class _UIGraph:
    """One level of a workflow: the root graph, or the inside of one subgraph instance.

    Subgraphs (frontend 1.2x+): a node whose `type` is the id of a definition in `definitions.subgraphs` is an
    instance of it. Inside, links from the input boundary node (id -10, slot i) stand for whatever feeds the
    instance's input i, and links into the output boundary node (id -20, slot j) are what its output j gives.
    Expanding an instance puts its inner nodes into the prompt under the path of instance ids, "12:5" (node 5
    inside instance 12; "12:7:5" one level deeper), exactly as the editor queues them; its links are followed
    across the boundaries, so the instance itself never reaches the prompt.
    """

    def __init__(
        self,
        workflow: dict,
        subgraphs: dict[str, dict],
        prefix: str = "",
        parent: _UIGraph | None = None,
        instance: dict | None = None,
    ) -> None:
        self.nodes = {n["id"]: n for n in workflow.get("nodes") or [] if isinstance(n, dict) and "id" in n}
        self.links = _ui_links(workflow)
        self.subgraphs = subgraphs
        self.prefix = prefix  # "" at the root, "12:" inside instance 12, "12:7:" inside instance 7 of that
        self.parent = parent
        self.instance = instance  # the node of the parent level this level is the inside of
        self.promoted = _promoted_widgets(instance, workflow.get(GROUP_WIDGETS)) if instance is not None else {}

    def is_instance(self, node: dict) -> bool:
        return node.get("type") in self.subgraphs

    def inside(self, node: dict) -> _UIGraph:
        """The level inside subgraph instance `node` of this level."""
        prefix = f"{self.prefix}{node['id']}:"
        if prefix.count(":") > MAX_SUBGRAPH_DEPTH:
            raise InputError(
                f"Workflow node {prefix[:-1]!r} nests subgraphs more than {MAX_SUBGRAPH_DEPTH} deep; expected a "
                "subgraph that does not contain itself."
            )
        return _UIGraph(self.subgraphs[node["type"]], self.subgraphs, prefix, self, node)

    def resolve(self, link_id: int | None, wanted_type: str) -> tuple[str, Any] | None:
        """Follow a link back through reroutes, bypassed nodes and subgraph boundaries: ("link", [origin_id, slot]),
        ("value", v) for a PrimitiveNode or a subgraph input's widget, or None when it leads nowhere (a muted
        node, an unconnected reroute, an unconnected subgraph input)."""
        seen = set()
        while link_id is not None and link_id not in seen:
            seen.add(link_id)
            link = self.links.get(link_id)
            if link is not None and link.origin_id == SUBGRAPH_INPUT_NODE and self.parent is not None:
                return self._from_outside(link.origin_slot, wanted_type)
            origin = None if link is None else self.nodes.get(link.origin_id)
            if origin is None:
                return None
            kind, mode = origin.get("type"), origin.get("mode", MODE_ALWAYS)
            if kind == "Reroute":
                link_id = (origin.get("inputs") or [{}])[0].get("link")
            elif kind == "PrimitiveNode":
                values = origin.get("widgets_values") or []
                return ("value", values[0]) if values else None
            elif kind in VIRTUAL_NODES or mode == MODE_MUTED:
                return None
            elif mode == MODE_BYPASS:
                link_id = self._bypass(origin, link.origin_slot, wanted_type)
            elif self.is_instance(origin):  # what the subgraph's output boundary receives at that slot
                inner = self.inside(origin)
                feed = next(
                    (
                        inner_link.id
                        for inner_link in inner.links.values()
                        if inner_link.target_id == SUBGRAPH_OUTPUT_NODE and inner_link.target_slot == link.origin_slot
                    ),
                    None,
                )
                return inner.resolve(feed, wanted_type)
            else:
                return ("link", [f"{self.prefix}{origin['id']}", link.origin_slot])
        return None

    def _from_outside(self, index: int, wanted_type: str) -> tuple[str, Any] | None:
        """What feeds input `index` of the instance this level is the inside of: its link in the parent level, or
        the value of its widget when the subgraph input is drawn as one on the instance."""
        slots = self.instance.get("inputs") or []
        if not 0 <= index < len(slots):
            return None
        slot = slots[index]
        if slot.get("link") is not None:
            return self.parent.resolve(slot["link"], wanted_type)
        values = self.instance.get("widgets_values")
        if "widget" in slot and isinstance(values, list):
            # Where the instance keeps this widget's value: at its own entry ["-1", name] of proxyWidgets when the
            # file lists one (values follow proxyWidgets, see _promoted_widgets), else among the instance's
            # widget inputs in order.
            proxies = _proxy_widgets(self.instance)
            own = [i for i, proxy in enumerate(proxies) if proxy == [SUBGRAPH_OWN_WIDGET, slot.get("name")]]
            position = own[0] if own else [s for s in slots if "widget" in s].index(slot)
            if position < len(values) and values[position] is not None:
                return ("value", values[position])
        return None

    @staticmethod
    def _bypass(node: dict, output_slot: int, wanted_type: str) -> int | None:
        """The link feeding a bypassed node's input of the wanted type (same index first), or None."""
        inputs = node.get("inputs") or []
        for index in [output_slot, *range(len(inputs))]:
            if index < len(inputs) and inputs[index].get("type") == wanted_type:
                return inputs[index].get("link")
        return None


def _proxy_widgets(instance: dict) -> list:
    """`properties.proxyWidgets` of a subgraph instance: [[inner node id, widget name], ...], or []."""
    proxies = (instance.get("properties") or {}).get("proxyWidgets")
    return [[str(p[0]), p[1]] if isinstance(p, list) and len(p) >= 2 else None for p in proxies or []]


SUBGRAPH_OWN_WIDGET = "-1"  # a proxyWidgets entry ["-1", name]: the instance's own widget for its subgraph input


def _promoted_widgets(instance: dict, group_widgets: list | None = None) -> dict[str, dict[str, Any]]:
    """Widgets of inner nodes shown on a subgraph instance (`properties.proxyWidgets`, [[inner id, widget name]]),
    with the values the instance stores for them: {inner id: {widget name: value}}.

    The editor keeps a promoted widget's value in the inner node itself and the instance's widgets_values empty
    (ComfyUI's templates). A file whose instance does list values is read as frontend 1.58 reads it (its
    proxyWidget migration, `pickHostValue`): value i belongs to proxy i, a missing entry leaves the inner value.
    Entries ["-1", name] are the instance's own subgraph-input widgets (`_UIGraph._from_outside` reads them). A
    null value is left out here where 1.58 would queue null, which no widget accepts. A legacy group node lists
    every inner widget (`group_widgets`, see _group_definition) and its widgets_values always hold their values."""
    proxies = _proxy_widgets(instance) if group_widgets is None else group_widgets
    values = instance.get("widgets_values")
    if not isinstance(values, list):
        return {}
    promoted: dict[str, dict[str, Any]] = {}
    for proxy, value in zip(proxies, values, strict=False):
        if isinstance(proxy, list) and len(proxy) == 2 and proxy[0] != SUBGRAPH_OWN_WIDGET and value is not None:
            promoted.setdefault(str(proxy[0]), {})[str(proxy[1])] = value
    return promoted


def _widget_values(node: dict, schema: NodeSchema) -> dict[str, Any]:
    """Input name -> widget value, matched by the schema's widget order."""
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some nodes save their widgets by name
        return {inp.name: values[inp.name] for inp in schema.visible_inputs if inp.name in values}
    values = list(values or [])
    slots = widget_slots(schema)
    if len(values) != len(slots):  # older files may lack the UI-only entries
        value_slots = [s for s in slots if s.kind == "value"]
        if len(values) == len(value_slots):
            slots = value_slots
    found = {slot.name: value for slot, value in zip(slots, values, strict=False) if slot.kind == "value"}
    # A widget the file does not list keeps its default, as in the editor: the frontend's own default graph saves
    # SaveImage without widgets_values and queues filename_prefix "ComfyUI".
    for inp in schema.visible_inputs:
        if inp.is_widget and inp.name not in found and inp.default is not None:
            found[inp.name] = inp.default
    return found


# ---- legacy group nodes -------------------------------------------------------------------------------------------

GROUP_PREFIXES = ("workflow>", "workflow/")  # the type of a group node instance: "workflow>Name" (older: "workflow/")
GROUP_WIDGETS = "atelier_group_widgets"  # a key of the converted definition: [inner id, input name] per widget value


def _group_definitions(workflow: dict, registry: NodeRegistry) -> dict[str, dict]:
    """Legacy group nodes (frontend before subgraphs; `extra.groupNodes`), as subgraph definitions by instance type.

    A group node {nodes, links: [[from index, slot, to index, slot, ...]], external: [[index, slot, type]]} is
    drawn as one node whose sockets are its inner nodes' free ones, in the order the editor builds them
    (GroupNodeConfig): first every inner input that no inner link feeds, node by node, then the inner inputs made
    from widgets; outputs are every inner output not used only inside. Its widgets are the inner nodes' widgets in
    order, and the editor queues inner node i of instance 12 as "12:i". Each group becomes the equivalent subgraph
    (boundary links from -10 and into -20), which _UIGraph expands like any other."""
    groups = (workflow.get("extra") or {}).get("groupNodes")
    found: dict[str, dict] = {}
    for name, group in groups.items() if isinstance(groups, dict) else []:
        if isinstance(group, dict) and isinstance(group.get("nodes"), list):
            definition = _group_definition(group, registry)
            found.update({prefix + name: definition for prefix in GROUP_PREFIXES})
    return found


def _indices(entry: Any, count: int, first_may_be_none: bool = False) -> bool:
    """Whether `entry` is a list starting with `count` integers (node indices and slots); the first may be None
    (a group link from outside the group)."""
    if not isinstance(entry, list) or len(entry) < count:
        return False
    head = entry[1:count] if first_may_be_none and entry[0] is None else entry[:count]
    return all(isinstance(x, int) and not isinstance(x, bool) for x in head)


def _group_definition(group: dict, registry: NodeRegistry) -> dict:
    nodes = [dict(node, id=index) for index, node in enumerate(group["nodes"]) if isinstance(node, dict)]
    inner = [link for link in group.get("links") or [] if _indices(link, 4, first_may_be_none=True)]
    fed = {(link[2], link[3]) for link in inner if link[0] is not None}  # (node index, input slot) fed inside
    used_inside = {(link[0], link[1]) for link in inner if link[0] is not None}
    # Some saved files hold node objects instead of [index, slot, type] here: such entries are left out.
    external = {(e[0], e[1]) for e in group.get("external") or [] if _indices(e, 2)}
    links = [
        {"id": n, "origin_id": l[0], "origin_slot": l[1], "target_id": l[2], "target_slot": l[3], "type": l[-1]}
        for n, l in enumerate(inner, start=1)
        if l[0] is not None
    ]

    def boundary(origin: int, origin_slot: int, target: int, target_slot: int) -> None:
        links.append(
            {
                "id": len(links) + 1,
                "origin_id": origin,
                "origin_slot": origin_slot,
                "target_id": target,
                "target_slot": target_slot,
                "type": "*",
            }
        )

    free = [(n["id"], s) for n in nodes for s, slot in enumerate(n.get("inputs") or []) if "widget" not in slot]
    converted = [(n["id"], s) for n in nodes for s, slot in enumerate(n.get("inputs") or []) if "widget" in slot]
    for index, (node_id, slot) in enumerate(p for p in free + converted if p not in fed):
        boundary(SUBGRAPH_INPUT_NODE, index, node_id, slot)
    widgets, output = [], 0
    for node in nodes:
        schema = registry.schema(node.get("type"))
        if schema is None:
            continue
        for out_slot in range(len(schema.outputs)):
            if (node["id"], out_slot) not in used_inside or (node["id"], out_slot) in external:
                boundary(node["id"], out_slot, SUBGRAPH_OUTPUT_NODE, output)
                output += 1
        as_inputs = {slot.get("name") for slot in node.get("inputs") or [] if "widget" in slot}
        widgets += [
            [str(node["id"]), w.name if w.kind == "value" else None]
            for w in widget_slots(schema)
            if w.name not in as_inputs
        ]
    # The inner inputs keep the link ids of the graph the group was made from: point them at the links above.
    feeding = {(link["target_id"], link["target_slot"]): link["id"] for link in links}
    for node in nodes:
        node["inputs"] = [
            {**slot, "link": feeding.get((node["id"], s))} for s, slot in enumerate(node.get("inputs") or [])
        ]
    return {"nodes": nodes, "links": links, GROUP_WIDGETS: widgets}


def ui_to_api(workflow: dict, registry: NodeRegistry, now: datetime | None = None) -> dict:
    """An editor workflow (UI format) -> an API prompt, as the editor builds it when you queue (subgraph
    instances expanded into their nodes, with "instance:inner" ids; %date:...% and %Name.widget% filled in the
    save nodes' filename_prefix, at `now` or the present time)."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise InputError("The workflow must be a UI-format object with a 'nodes' list.")
    prompt: dict[str, dict] = {}
    definitions = {**_group_definitions(workflow, registry), **_subgraph_definitions(workflow)}
    _add_level(_UIGraph(workflow, definitions), registry, prompt)
    for node in prompt.values():  # drop links into nodes that did not make it (muted, unknown ids)
        for name, value in list(node["inputs"].items()):
            link = as_link(value)
            if link is not None and link.node_id not in prompt:
                del node["inputs"][name]
    _fill_filename_patterns(prompt, [workflow, *definitions.values()], registry, now or datetime.now())
    return prompt


def _fill_filename_patterns(prompt: dict, levels: list[dict], registry: NodeRegistry, now: datetime) -> None:
    """The editor's text replacements in the save nodes' filename_prefix (graph/filename_patterns.py), looking
    widgets up on every node of the workflow, inside subgraphs too."""
    saving = [
        node
        for node in prompt.values()
        if node["class_type"] in SAVE_NODE_TYPES and "%" in str(node["inputs"].get("filename_prefix", ""))
    ]
    if not saving:
        return
    ui_nodes = [n for level in levels for n in level.get("nodes") or [] if isinstance(n, dict)]

    def search_name(node: dict) -> Any:
        """Its "Node name for S&R": the editor gives every node but the save nodes one, its type, on load."""
        default = None if node.get("type") in SAVE_NODE_TYPES else node.get("type")
        return (node.get("properties") or {}).get("Node name for S&R", default)

    def title(node: dict) -> Any:
        schema = registry.schema(node.get("type"))
        return node.get("title") or (schema.display_name if schema is not None else None) or node.get("type")

    def widget_value(name: str, widget: str) -> Any:
        found = [n for n in ui_nodes if search_name(n) == name] or [n for n in ui_nodes if title(n) == name]
        if not found:
            return None
        node = found[0]  # the editor, too, takes the first match
        if node.get("type") == "PrimitiveNode":  # its one widget is named after the widget it feeds
            outputs = node.get("outputs") or [{}]
            values = node.get("widgets_values") or [None]
            return values[0] if (outputs[0].get("widget") or {}).get("name") == widget else None
        schema = registry.schema(node.get("type"))
        return _widget_values(node, schema).get(widget) if schema is not None else None

    for node in saving:
        node["inputs"]["filename_prefix"] = editor_replacements(node["inputs"]["filename_prefix"], widget_value, now)


def _add_level(graph: _UIGraph, registry: NodeRegistry, prompt: dict[str, dict]) -> None:
    """Put the nodes of one level into `prompt`, expanding subgraph instances in place (depth first)."""
    for node in graph.nodes.values():
        kind, mode = node.get("type"), node.get("mode", MODE_ALWAYS)
        if kind in VIRTUAL_NODES or mode in (MODE_MUTED, MODE_BYPASS):
            continue  # a muted or bypassed instance takes its whole inside with it
        if graph.is_instance(node):
            _add_level(graph.inside(node), registry, prompt)
            continue
        schema = registry.schema(kind)
        inputs = _widget_values(node, schema) if schema is not None else {}
        promoted = graph.promoted.get(str(node["id"]), {})
        inputs.update(
            {name: promoted[name] for name in (i.name for i in schema.inputs) if name in promoted} if schema else {}
        )
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            if schema is not None and "widget" in slot and not any(i.name == slot.get("name") for i in schema.inputs):
                continue  # a widget the node no longer has (renamed in ComfyUI since): the editor drops its input
            found = graph.resolve(slot["link"], slot.get("type"))
            if found is not None:
                inputs[slot["name"]] = found[1]
            elif "widget" not in slot:
                inputs.pop(slot["name"], None)
        title = node.get("title") or (schema.display_name if schema and schema.display_name else kind)
        prompt[f"{graph.prefix}{node['id']}"] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}


# ---- API -> UI ----------------------------------------------------------------------------------------------------


def _depths(prompt: dict) -> dict[str, int]:
    """Column of each node: 0 for nodes without links, else one more than its deepest input. Walked in
    topological order without recursion (a chain may be thousands of nodes long); a link that closes a cycle is
    left out."""
    sources = sources_within(prompt)
    depth: dict[str, int] = {}
    for node_id in post_order(prompt, sources, skip_cycles=True):
        depth[node_id] = 1 + max((depth[s] for s in sources(node_id) if s in depth), default=-1)
    return depth


def _links_of(node: dict) -> Iterator:
    for value in node.get("inputs", {}).values():
        link = as_link(value)
        if link is not None:
            yield link


def _ui_ids(prompt: dict) -> dict[str, int]:
    """UI node ids are integers: keep numeric API ids, renumber otherwise."""
    if all(str(k).isascii() and str(k).isdigit() and len(str(k)) < 16 for k in prompt):
        return {k: int(k) for k in prompt}
    return {k: i + 1 for i, k in enumerate(prompt)}


def _widget_value(inp: Input, node_inputs: dict) -> Any:
    value = node_inputs.get(inp.name)
    if value is None or as_link(value) is not None:
        return inp.default
    return unwrap(value)


def api_to_ui(prompt: dict, registry: NodeRegistry) -> dict:
    """An API prompt -> a UI-format workflow the editor can open (left-to-right layout by depth)."""
    ids = _ui_ids(prompt)
    depth = _depths(prompt)
    nodes: dict[str, dict] = {}
    links: list[list] = []
    column_bottom: dict[int, float] = {}
    used_slots = {(link.node_id, link.slot) for node in prompt.values() for link in _links_of(node)}

    for order, (api_id, api_node) in enumerate(sorted(prompt.items(), key=lambda item: depth[item[0]])):
        kind = api_node["class_type"]
        schema = registry.schema(kind)
        if schema is not None:
            outputs = [(o.label, o.type) for o in schema.outputs]
            sockets = [i for i in schema.visible_inputs if not i.is_widget or as_link(api_node["inputs"].get(i.name))]
            ui_inputs = [_ui_input(i, i.is_widget) for i in sockets]
            widgets = []
            for slot in widget_slots(schema):
                if slot.kind == "value":
                    widgets.append(_widget_value(schema.input(slot.name), api_node["inputs"]))
                else:  # a new seed mode defaults to "fixed" so the opened graph reproduces the image
                    widgets.append("fixed" if slot.kind == "control" else "image")
        else:  # unknown node: keep its links so the editor can show it as missing
            count = 1 + max((s for n, s in used_slots if n == api_id), default=-1)
            outputs = [("*", "*")] * count
            ui_inputs = [{"name": n, "type": "*", "link": None} for n, v in api_node["inputs"].items() if as_link(v)]
            widgets = []

        height = 46 + 22 * max(len(ui_inputs), len(outputs)) + 26 * len(widgets)
        x = 50 + 380 * depth[api_id]
        y = column_bottom.get(depth[api_id], 50)
        column_bottom[depth[api_id]] = y + height + 60
        node = {
            "id": ids[api_id],
            "type": kind,
            "pos": [x, y],
            "size": [320, height],
            "flags": {},
            "order": order,
            "mode": MODE_ALWAYS,
            "inputs": ui_inputs,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": kind},
            "widgets_values": widgets,
        }
        title = (api_node.get("_meta") or {}).get("title")
        default_title = (schema.display_name or kind) if schema is not None else kind
        if title and title != default_title:
            node["title"] = title
        nodes[api_id] = node

    for api_id, api_node in prompt.items():  # links, in input order of each target
        target = nodes[api_id]
        for target_slot, ui_input in enumerate(target["inputs"]):
            link = as_link(api_node["inputs"].get(ui_input["name"]))
            if link is None or link.node_id not in nodes:
                continue
            origin = nodes[link.node_id]
            if link.slot >= len(origin["outputs"]):
                continue
            link_id = len(links) + 1
            link_type = origin["outputs"][link.slot]["type"]
            links.append([link_id, origin["id"], link.slot, target["id"], target_slot, link_type])
            ui_input["link"] = link_id
            origin["outputs"][link.slot]["links"].append(link_id)

    ordered = sorted(nodes.values(), key=lambda n: n["id"])
    return {
        "last_node_id": max((n["id"] for n in ordered), default=0),
        "last_link_id": len(links),
        "nodes": ordered,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": 0.4,
    }


def _ui_input(inp: Input, converted_widget: bool) -> dict:
    entry: dict[str, Any] = {"name": inp.name, "type": inp.type, "link": None}
    if converted_widget:
        entry["widget"] = {"name": inp.name}
    return entry


# ---- loading files ------------------------------------------------------------------------------------------------


@dataclass
class LoadedWorkflow:
    """A workflow file in both formats. `source` says what the file held: "api", "ui" or "png"."""

    prompt: dict
    workflow: dict
    source: str


def is_ui_workflow(data: Any) -> bool:
    """Whether `data` is the editor's workflow format (a "nodes" list with positions and links)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def is_api_prompt(data: Any) -> bool:
    """Whether `data` is an API prompt: a non-empty object of nodes by id, each with a class_type."""
    return (
        isinstance(data, dict) and bool(data) and all(isinstance(n, dict) and "class_type" in n for n in data.values())
    )


def load_workflow(path: str | os.PathLike, registry: NodeRegistry) -> LoadedWorkflow:
    """Read an API prompt (.json), an editor workflow (.json) or a PNG with an embedded workflow/prompt.

    A PNG keeps both formats when it has both (the embedded prompt is what actually ran); a missing one is
    derived from the other."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The workflow file {str(path)!r} does not exist.")
    with open(path, "rb") as f:
        is_png = f.read(8) == b"\x89PNG\r\n\x1a\n"
    if is_png:
        from atelier.images import png_metadata  # imported here: it pulls in torch, which JSON files do not need

        meta = png_metadata(path)
        prompt = meta.get("prompt") if is_api_prompt(meta.get("prompt")) else None
        workflow = meta.get("workflow") if is_ui_workflow(meta.get("workflow")) else None
        if prompt is None and workflow is None:
            raise InputError(f"The image {str(path)!r} has no embedded workflow or prompt to load.")
        if prompt is None:
            prompt = ui_to_api(workflow, registry)
        return LoadedWorkflow(prompt, workflow or api_to_ui(prompt, registry), "png")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as ex:
        raise InputError(f"The workflow file {str(path)!r} is not valid JSON ({ex}).") from None
    if is_ui_workflow(data):
        return LoadedWorkflow(ui_to_api(data, registry), data, "ui")
    if isinstance(data, dict) and is_api_prompt(data.get("prompt")):  # a saved POST /prompt body
        data = data["prompt"]
    if is_api_prompt(data):
        return LoadedWorkflow(data, api_to_ui(data, registry), "api")
    raise InputError(f"The file {str(path)!r} is neither an API prompt nor an editor workflow.")
