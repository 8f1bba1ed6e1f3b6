"""Node schemas: what a node takes, what it gives, and how the editor should draw it.

A node is a plain class with a `SCHEMA` and a `run` method:

    class Add:
        SCHEMA = NodeSchema(
            name="Add",
            category="math",
            inputs=[Input("a", "INT", default=0), Input("b", "INT", default=0, min=-10, max=10)],
            outputs=[Output("INT", name="sum")],
        )

        def run(self, ctx: NodeContext, a: int, b: int) -> tuple:
            return (a + b,)

- `run(ctx, **inputs)` gets one keyword argument per input present in the prompt (optional inputs that are absent
  are not passed: give them a Python default) and returns a tuple with one value per output, or a `NodeOutput`
  when it also has something to show in the editor: `NodeOutput(result=(...), ui={"images": [...]})`.
  ComfyUI's `{"ui": ..., "result": ...}` dict is accepted as well.
- `ctx` is the node's line back to the executor: `ctx.progress(value, total)`, `ctx.preview(image)`,
  `ctx.send_image(png)`, `ctx.check_interrupt()`, plus `ctx.node_id`, `ctx.prompt` and `ctx.extra_pnginfo`
  (see executor.py).
- Optional class methods, both called with the node's constant inputs (only those their signature names, or all
  of them with `**kwargs`):
  - `is_changed(**inputs)` -> a value that changes when the node's result would (a file hash, say); the cache
    folds it into the node's key, and NaN means "always run again".
  - `validate_inputs(**inputs)` -> True, or a sentence saying what is wrong (reported as
    `custom_validation_failed`). Inputs it names skip the built-in min/max/option checks, as in ComfyUI.

The schema is also the source of ComfyUI's `object_info` (see `object_info()` below), so the official node editor
can draw the node without knowing anything else about it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# Value types the editor draws as widgets; every other type name (MODEL, LATENT, ...) is a socket for a link.
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# Hidden inputs the executor fills in itself: the whole API prompt, the editor's extra PNG info, the node's id.
HIDDEN_TYPES = ("PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID")

Options = Sequence[str] | Callable[[], Sequence[str]]


@dataclass(frozen=True)
class Input:
    """One input of a node. `type` is "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO" (with `options`), a socket type
    such as "MODEL" or "LATENT", or a hidden type (PROMPT, EXTRA_PNGINFO, UNIQUE_ID) with `hidden=True`."""

    name: str
    type: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | bool | None = None
    multiline: bool = False
    dynamic_prompts: bool | None = None
    tooltip: str | None = None
    options: Options | None = None  # COMBO choices, or a function returning them (evaluated on every use)
    control_after_generate: bool = False  # the editor adds a fixed/increment/decrement/randomize widget after it
    image_upload: bool = False  # the editor adds an upload button after this COMBO
    force_input: bool = False  # drawn as a socket even though it is a widget type
    optional: bool = False
    hidden: bool = False

    def __post_init__(self) -> None:
        if (self.type == "COMBO") != (self.options is not None):
            raise ValueError(f"Input {self.name!r}: a COMBO needs options and only a COMBO takes them.")
        if self.hidden and self.type not in HIDDEN_TYPES:
            raise ValueError(f"Input {self.name!r}: a hidden input must have one of the types {HIDDEN_TYPES}.")

    @property
    def is_widget(self) -> bool:
        """Whether the editor draws this input as a widget (a value typed in) rather than a socket (a link)."""
        return self.type in WIDGET_TYPES and not self.force_input and not self.hidden

    def choices(self) -> list[str]:
        """The COMBO options as they are right now (a callable is evaluated, e.g. to list checkpoint files)."""
        if self.options is None:
            return []
        return list(self.options() if callable(self.options) else self.options)

    def object_info(self) -> list:
        """`[TYPE, {options}]`, or `[[choice, ...], {options}]` for a COMBO, as ComfyUI's object_info lists it."""
        opts: dict[str, Any] = {}
        if self.default is not None:
            opts["default"] = self.default
        for key in ("min", "max", "step", "round"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value
        if self.multiline:
            opts["multiline"] = True
        if self.dynamic_prompts is not None:
            opts["dynamicPrompts"] = self.dynamic_prompts
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        if self.force_input:
            opts["forceInput"] = True
        if self.image_upload:
            opts["image_upload"] = True
        if self.control_after_generate:
            opts["control_after_generate"] = True
        kind: Any = self.choices() if self.type == "COMBO" else self.type
        return [kind, opts] if opts else [kind]


@dataclass(frozen=True)
class Output:
    """One output of a node: its type, the name shown on the socket, and whether it is a list (see executor.py)."""

    type: str
    name: str | None = None
    tooltip: str | None = None
    is_list: bool = False

    @property
    def label(self) -> str:
        """The socket's name in the editor (ComfyUI's output_name): `name`, or the type when unnamed."""
        return self.name or self.type


@dataclass(frozen=True)
class NodeSchema:
    """Everything the editor, the validator and the executor need to know about a node class."""

    name: str  # the class_type used in prompts and workflow files, e.g. "KSampler"
    inputs: Sequence[Input] = ()
    outputs: Sequence[Output] = ()
    display_name: str | None = None
    category: str = ""
    description: str = ""
    output_node: bool = False  # a result the user asked for (SaveImage, PreviewImage): execution starts here
    input_is_list: bool = False  # run once with whole lists instead of once per list element
    not_idempotent: bool = False  # never share cached results with another node of the same class and inputs
    python_module: str = "nodes"  # the frontend calls a node "core" unless this starts with "custom_nodes."

    def __post_init__(self) -> None:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"Node {self.name!r} declares an input name twice: {names}.")

    def input(self, name: str) -> Input | None:
        """The input called `name`, or None."""
        return next((i for i in self.inputs if i.name == name), None)

    @property
    def visible_inputs(self) -> list[Input]:
        """Required then optional inputs, in declaration order: the order of widgets and sockets in the editor."""
        required = [i for i in self.inputs if not i.optional and not i.hidden]
        return required + [i for i in self.inputs if i.optional and not i.hidden]

    def object_info(self) -> dict:
        """This node in the exact shape of one entry of ComfyUI's GET /object_info."""
        sections: dict[str, dict] = {}
        for kind, keep in (("required", lambda i: not i.optional and not i.hidden), ("optional", lambda i: i.optional)):
            chosen = {i.name: i.object_info() for i in self.inputs if keep(i) and not i.hidden}
            if chosen or kind == "required":
                sections[kind] = chosen
        hidden = {i.name: i.type for i in self.inputs if i.hidden}
        if hidden:
            sections["hidden"] = hidden
        return {
            "input": sections,
            "input_order": {kind: list(entries) for kind, entries in sections.items()},
            "output": [o.type for o in self.outputs],
            "output_is_list": [o.is_list for o in self.outputs],
            "output_name": [o.label for o in self.outputs],
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
            "output_tooltips": [o.tooltip or "" for o in self.outputs],
        }


@dataclass
class NodeOutput:
    """What `run` returns when the node also has something for the editor to show.

    `result` holds one value per output; `ui` maps a kind to a list, e.g. {"images": [{"filename", "subfolder",
    "type"}]}, and is sent to the editor as the `executed` event's output."""

    result: tuple = ()
    ui: dict[str, list] | None = None


def schema_of(node_cls: type) -> NodeSchema:
    """The `SCHEMA` of a node class, or a clear error for a class that is not a node."""
    schema = getattr(node_cls, "SCHEMA", None)
    if not isinstance(schema, NodeSchema):
        raise TypeError(f"{node_cls!r} is not a node: it needs a SCHEMA = NodeSchema(...) class attribute.")
    if not callable(getattr(node_cls, "run", None)):
        raise TypeError(f"Node {schema.name!r} needs a run(self, ctx, **inputs) method.")
    return schema


# ---- constants in a prompt ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A link in an API prompt: output `slot` of node `node_id` (written `["4", 0]` in JSON)."""

    node_id: str
    slot: int


def as_link(value: Any) -> Link | None:
    """`["4", 0]` -> Link("4", 0); anything else (a constant) -> None. Malformed lists are not links either."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool):
        return Link(str(value[0]), value[1])
    return None


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in `value` (a number or a string is 0, `[1, [2]]` is 2), counting no
    further than `limit` + 1. Iterative: a value nested 100,000 deep must not reach Python's recursion limit."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def unwrap(value: Any) -> Any:
    """The editor sends list-valued widgets as {"__value__": [...]} so they are not mistaken for links."""
    if isinstance(value, dict) and "__value__" in value:
        return value["__value__"]
    return value


def coerce(inp: Input, value: Any) -> Any:
    """Convert a constant to the input's type the way ComfyUI does (int(), float(), str(), bool()); raises
    ValueError/TypeError when it cannot. Other types pass through untouched.

    Two conversions ComfyUI makes silently are refused: a boolean is not a number (`steps: true` would be 1 step),
    and null or a list/object is not text (`text: null` would be the prompt "None"). Numbers must be finite."""
    value = unwrap(value)
    if inp.type in ("INT", "FLOAT") and isinstance(value, bool):
        raise TypeError(f"{str(value).lower()} is a boolean, not a number")
    if inp.type == "INT":
        return int(value)
    if inp.type == "FLOAT":
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return value
    if inp.type == "STRING":
        if value is None or isinstance(value, (list, dict)):
            raise TypeError(f"{'null' if value is None else type(value).__name__} is not text")
        return str(value)
    if inp.type == "BOOLEAN":
        return bool(value)
    return value


class NodeContext(Protocol):
    """What a running node sees of the executor (executor.RunContext implements it)."""

    node_id: str  # this node's id in the prompt
    prompt: dict  # the whole API prompt (SaveImage embeds it in the PNG)
    extra_pnginfo: Any  # the editor's extra_data["extra_pnginfo"], e.g. {"workflow": UI graph}, or None

    def progress(self, value: float, total: float) -> None:
        """Report progress of this node (a sampler calls it once per step)."""

    def preview(self, image: Any) -> None:
        """Send a preview image of work in progress to the editor (dropped when the prompt asked for none): a PIL
        image, encoded bytes, or a function of no argument that makes one, called only when the preview is sent."""

    def send_image(self, data: bytes, mime: str = "image/png") -> None:
        """Send a finished, encoded image to the prompt's client through the WebSocket (SaveImageWebsocket)."""

    def check_interrupt(self) -> None:
        """Raise executor.Interrupted if the user pressed Cancel; long loops call it once per step."""

    def will_write(self, ref: dict) -> None:
        """Announce an output file {"filename", "subfolder", "type"} before it appears, so the server's history
        knows it even if the server is killed before the prompt ends."""
