"""The node contract: every node the catalog registers keeps the promises its SCHEMA makes.

The editor draws a node, the validator checks a prompt and the executor calls `run` from the SCHEMA alone (see
graph/schema.py), so a wrong schema fails far from where it was written: a default outside its range is refused
by the validator the first time someone queues the node untouched, an input missing from `run`'s signature is a
TypeError mid-prompt, a socket type no node produces can never be linked. The promises, checked for each node:

- inputs typed: a widget type, a hidden type, or a socket type that some node's output gives ("*" takes any);
- widgets in range: min <= default <= max, a step that is positive, a default among the options of a fixed COMBO;
- `run` takes exactly the inputs, optional ones with a Python default equal to the schema's;
- outputs named and typed, a node without outputs an output node;
- documented (the catalog's nodes, which the lab teaches with): a description, a tooltip on every input and
  output, a category. The placeholders of graph/unsupported.py copy ComfyUI's bare schemas and are hidden from
  the node library instead (empty category).

Each check returns the list of broken promises, so a failure names them all; `test_the_checks_catch_a_broken_node`
shows on a node broken on purpose that every check can fail.
"""

from __future__ import annotations

import inspect
import json
import math
import re

import pytest

from atelier.graph.catalog import CORE_NODES, default_registry
from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import HIDDEN_TYPES, WIDGET_TYPES, Input, NodeSchema, Output
from atelier.graph.teaching import TEACHING_NODES
from atelier.graph.unsupported import UNSUPPORTED_NODES
from atelier.server.files import DataDir, OutputFiles

CATALOG = [cls.SCHEMA.name for cls in (*CORE_NODES, *TEACHING_NODES)]
PLACEHOLDERS = [cls.SCHEMA.name for cls in UNSUPPORTED_NODES]
ANY = "*"  # the wildcard socket (PreviewAny's source)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> NodeRegistry:
    """The registry the server builds: the catalog bound to an empty data folder, plus the placeholders."""
    data = DataDir(tmp_path_factory.mktemp("data"))
    return default_registry(data.models, OutputFiles(data), extra_nodes=UNSUPPORTED_NODES)


@pytest.fixture(scope="module")
def socket_types(registry) -> set[str]:
    """Every type some registered node outputs: the only ones an input socket can be linked to."""
    return {out.type for name in registry for out in registry.schema(name).outputs}


# ---- the checks ------------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def input_type_problems(schema: NodeSchema, socket_types: set[str]) -> list[str]:
    problems = []
    for inp in schema.inputs:
        where = f"{schema.name}.{inp.name}"
        if not inp.name.isidentifier():
            problems.append(f"{where}: the name is not a Python identifier, so run() cannot take it")
        if inp.hidden:
            continue  # Input.__post_init__ already holds hidden inputs to HIDDEN_TYPES
        if inp.type in HIDDEN_TYPES:
            problems.append(f"{where}: {inp.type} is filled in by the executor, so the input must be hidden")
        elif inp.type not in WIDGET_TYPES and inp.type != ANY and inp.type not in socket_types:
            problems.append(f"{where}: no registered node outputs {inp.type!r}, so nothing can be linked to it")
    return problems


def widget_problems(schema: NodeSchema, empty_combos: bool = False) -> list[str]:
    """Widgets in range; `empty_combos` lets a COMBO with fixed options have none (a placeholder's file list)."""
    problems = []
    for inp in schema.inputs:
        where = f"{schema.name}.{inp.name}"
        numeric = inp.type in ("INT", "FLOAT")
        if not numeric and (inp.min, inp.max, inp.step, inp.round) != (None, None, None, None):
            problems.append(f"{where}: min, max, step and round belong to INT and FLOAT inputs only")
        if inp.control_after_generate and inp.type != "INT":
            problems.append(f"{where}: control_after_generate (fixed/increment/randomize) needs an INT")
        if inp.image_upload and inp.type != "COMBO":
            problems.append(f"{where}: image_upload adds a button to a COMBO of file names only")
        if inp.multiline and inp.type != "STRING":
            problems.append(f"{where}: only a STRING is multiline")
        if inp.type not in WIDGET_TYPES and inp.default is not None:
            problems.append(f"{where}: a {inp.type} socket is linked, never typed in, so it takes no default")
        if numeric:
            problems += _number_problems(where, inp)
        elif inp.type == "COMBO":
            problems += _combo_problems(where, inp, empty_combos)
        elif inp.type == "BOOLEAN" and not isinstance(inp.default, bool):
            problems.append(f"{where}: a BOOLEAN needs a default of True or False, got {inp.default!r}")
        elif inp.type == "STRING" and inp.default is not None and not isinstance(inp.default, str):
            problems.append(f"{where}: a STRING default must be text, got {inp.default!r}")
    return problems


def _number_problems(where: str, inp: Input) -> list[str]:
    kind = _is_int if inp.type == "INT" else _is_real
    values = {"default": inp.default, "min": inp.min, "max": inp.max}
    if not all(kind(value) for value in values.values()):
        an, numbers = ("an", "integers") if inp.type == "INT" else ("a", "finite numbers")
        return [f"{where}: {an} {inp.type} takes {numbers} as default, min, max: {values}"]
    problems = []
    if not inp.min <= inp.default <= inp.max:
        problems.append(f"{where}: the default {inp.default} is outside [{inp.min}, {inp.max}]")
    if inp.step is not None and not (kind(inp.step) and inp.step > 0):
        problems.append(f"{where}: the step must be a positive {inp.type.lower()}, got {inp.step!r}")
    return problems


def _combo_problems(where: str, inp: Input, empty_ok: bool) -> list[str]:
    choices = inp.choices()  # a dynamic list (files on disk) is evaluated: it must give names
    problems = []
    if not all(isinstance(c, str) and c for c in choices) or len(set(choices)) != len(choices):
        problems.append(f"{where}: COMBO options must be distinct, non-empty names, got {choices}")
    if callable(inp.options):
        return problems  # what is on disk decides; an empty folder gives no options, and no default is listed
    if not choices and not empty_ok:
        problems.append(f"{where}: a COMBO with fixed options needs at least one")
    if inp.default is not None and inp.default not in choices:
        problems.append(f"{where}: the default {inp.default!r} is not one of the options {choices}")
    return problems


def signature_problems(node_cls: type) -> list[str]:
    """`run(self, ctx, **inputs)`: every input is a parameter and every parameter an input, required inputs
    without a Python default (the executor always passes them), optional ones with the schema's default."""
    schema = node_cls.SCHEMA
    params = list(inspect.signature(node_cls.run).parameters.values())[2:]  # after self, ctx
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return []  # run(**inputs) takes them all
    by_name = {p.name: p for p in params}
    problems = [f"{schema.name}.run has no parameter {i.name!r}" for i in schema.inputs if i.name not in by_name]
    for p in params:
        inp = schema.input(p.name)
        if inp is None:
            problems.append(f"{schema.name}.run takes {p.name!r}, which is not an input")
        elif inp.optional and p.default is p.empty:
            problems.append(f"{schema.name}.run: optional {p.name!r} is not passed when absent; give it a default")
        elif p.default is not p.empty and inp.default is not None and p.default != inp.default:
            problems.append(
                f"{schema.name}.run: {p.name}={p.default!r} disagrees with the schema's default {inp.default!r}"
            )
    for method_name in ("is_changed", "validate_inputs"):
        method = getattr(node_cls, method_name, None)
        if method is not None:
            names = inspect.signature(method).parameters
            problems += [
                f"{schema.name}.{method_name} asks for {n!r}, which is not an input"
                for n, p in names.items()
                if p.kind != p.VAR_KEYWORD and schema.input(n) is None
            ]
    return problems


def output_problems(schema: NodeSchema) -> list[str]:
    problems = []
    labels = [out.label for out in schema.outputs]
    if len(set(labels)) != len(labels):
        problems.append(f"{schema.name}: two outputs share a name, so their sockets look alike: {labels}")
    for out in schema.outputs:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", out.type):
            problems.append(f"{schema.name}: the output type {out.type!r} is not an upper-case type name")
    if not schema.outputs and not schema.output_node:
        problems.append(f"{schema.name}: a node with no outputs must be an output node, or it never runs")
    return problems


def _text_problem(where: str, text: str | None) -> str | None:
    if not text:
        return f"{where} is missing"
    if text != text.strip() or "  " in text:
        return f"{where} has stray spaces: {text!r}"
    if not text.endswith((".", ")")):
        return f"{where} is not a finished sentence: {text!r}"
    return None


def documentation_problems(schema: NodeSchema) -> list[str]:
    """A description, a display name, a category path, a tooltip on every visible input and on every output."""
    texts = [(f"{schema.name}: the description", schema.description)]
    texts += [(f"{schema.name}.{i.name}: the tooltip", i.tooltip) for i in schema.inputs if not i.hidden]
    texts += [(f"{schema.name} -> {o.label}: the tooltip", o.tooltip) for o in schema.outputs]
    problems = [p for where, text in texts if (p := _text_problem(where, text)) is not None]
    if not schema.display_name:
        problems.append(f"{schema.name}: no display name")
    if not re.fullmatch(r"[a-z_]+(/[a-z_]+)*", schema.category):
        problems.append(f"{schema.name}: the category {schema.category!r} is not a path such as 'latent/inpaint'")
    return problems


# ---- the catalog -----------------------------------------------------------------------------------------------


def test_the_contract_covers_every_registered_node(registry):
    assert list(registry) == CATALOG + PLACEHOLDERS
    assert len(CORE_NODES) == 104 and len(TEACHING_NODES) == 7 and len(UNSUPPORTED_NODES) == 3  # + add-ons, SDXL


@pytest.mark.parametrize("name", CATALOG + PLACEHOLDERS)
def test_inputs_are_typed_and_widgets_in_range(registry, socket_types, name):
    schema = registry.schema(name)
    # A placeholder lists no model files: it refuses to run before any would be read.
    assert input_type_problems(schema, socket_types) + widget_problems(schema, name in PLACEHOLDERS) == []


@pytest.mark.parametrize("name", CATALOG + PLACEHOLDERS)
def test_run_takes_exactly_the_inputs(registry, name):
    assert signature_problems(registry.get(name)) == []


@pytest.mark.parametrize("name", CATALOG + PLACEHOLDERS)
def test_outputs_are_named_and_object_info_is_json(registry, name):
    schema = registry.schema(name)
    assert output_problems(schema) == []
    info = registry.object_info(name)[name]
    assert json.loads(json.dumps(info)) == info
    assert info["input_order"] == {kind: list(entries) for kind, entries in info["input"].items()}
    assert len(info["output"]) == len(info["output_name"]) == len(info["output_is_list"]) == len(schema.outputs)


@pytest.mark.parametrize("name", CATALOG)
def test_every_catalog_node_is_documented(registry, name):
    assert documentation_problems(registry.schema(name)) == []


@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_placeholders_say_what_they_are_and_stay_out_of_the_library(registry, name):
    schema = registry.schema(name)
    assert schema.category == ""  # the editor's sign for "deprecated": drawn when loaded, not offered
    assert schema.display_name.endswith("(not in Atelier yet)") and "not support" in schema.description


# ---- the checks can fail ---------------------------------------------------------------------------------------


class Broken:
    """A node that breaks each promise once."""

    SCHEMA = NodeSchema(
        name="Broken",
        category="Stub Nodes",
        inputs=[
            Input("steps", "INT", default=0, min=1, max=10, step=0, tooltip="Steps."),
            Input("cfg", "FLOAT", default=float("nan"), min=0.0, max=1.0, tooltip="Scale."),
            Input("mode", "COMBO", options=["a", "a"], default="b", tooltip="Mode."),
            Input("model", "UNET", default=3, tooltip="A model."),
            Input("text", "STRING", min=0, control_after_generate=True),
            Input("extra", "INT", default=1, min=0, max=2, optional=True, tooltip="extra "),
        ],
        outputs=[Output("IMAGE", name="out"), Output("MASK", name="out"), Output("latent")],
    )

    def run(self, ctx, steps, cfg, mode, model, extra, seed=0) -> tuple:
        return ()

    @classmethod
    def validate_inputs(cls, width) -> bool:
        return True


def test_the_checks_catch_a_broken_node():
    schema = Broken.SCHEMA
    assert input_type_problems(schema, {"IMAGE", "MASK"}) == [
        "Broken.model: no registered node outputs 'UNET', so nothing can be linked to it"
    ]
    assert widget_problems(schema) == [
        "Broken.steps: the default 0 is outside [1, 10]",
        "Broken.steps: the step must be a positive int, got 0",
        "Broken.cfg: a FLOAT takes finite numbers as default, min, max: {'default': nan, 'min': 0.0, 'max': 1.0}",
        "Broken.mode: COMBO options must be distinct, non-empty names, got ['a', 'a']",
        "Broken.mode: the default 'b' is not one of the options ['a', 'a']",
        "Broken.model: a UNET socket is linked, never typed in, so it takes no default",
        "Broken.text: min, max, step and round belong to INT and FLOAT inputs only",
        "Broken.text: control_after_generate (fixed/increment/randomize) needs an INT",
    ]
    assert signature_problems(Broken) == [
        "Broken.run has no parameter 'text'",
        "Broken.run: optional 'extra' is not passed when absent; give it a default",
        "Broken.run takes 'seed', which is not an input",
        "Broken.validate_inputs asks for 'width', which is not an input",
    ]
    assert output_problems(schema) == [
        "Broken: two outputs share a name, so their sockets look alike: ['out', 'out', 'latent']",
        "Broken: the output type 'latent' is not an upper-case type name",
    ]
    assert documentation_problems(schema) == [
        "Broken: the description is missing",
        "Broken.text: the tooltip is missing",
        "Broken.extra: the tooltip has stray spaces: 'extra '",
        "Broken -> out: the tooltip is missing",
        "Broken -> out: the tooltip is missing",
        "Broken -> latent: the tooltip is missing",
        "Broken: no display name",
        "Broken: the category 'Stub Nodes' is not a path such as 'latent/inpaint'",
    ]
    assert output_problems(NodeSchema(name="Sink", inputs=[Input("x", "INT", default=0, min=0, max=1)])) == [
        "Sink: a node with no outputs must be an output node, or it never runs"
    ]
