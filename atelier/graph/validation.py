"""Check an API-format prompt before it is queued, reporting problems exactly as ComfyUI does.

The walk starts at each output node (SaveImage, PreviewImage, ...) and goes backwards along the links, checking
every input of every node it meets. An output whose whole ancestry is sound is "good"; the prompt is queued with
the good outputs only, and rejected when there is none. Problems come back in ComfyUI's shape, which the node
editor understands (it outlines the faulty nodes in red and prints the messages):

    error       = {"type", "message", "details", "extra_info"}                  # why the prompt as a whole failed
    node_errors = {node_id: {"errors": [error, ...], "dependent_outputs": [output ids], "class_type": str}}

Error types: invalid_prompt, missing_node_type, prompt_no_outputs, prompt_outputs_failed_validation (top level);
required_input_missing, bad_linked_input, return_type_mismatch, invalid_input_type, value_smaller_than_min,
value_bigger_than_max, value_not_in_list, custom_validation_failed, dependency_cycle (per node).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Input, NodeSchema, as_link, coerce, unwrap


@dataclass
class ValidationResult:
    """`ok` is True when at least one output can run. `prompt` is a copy of the input with every constant
    unwrapped and converted to its input's type (the executor should run this copy)."""

    ok: bool
    error: dict | None
    outputs: list[str]
    node_errors: dict[str, dict]
    prompt: dict = field(default_factory=dict)


def error_entry(kind: str, message: str, details: str = "", **extra_info: Any) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def types_match(received: str, expected: str) -> bool:
    """Socket types are comma-separated sets ("LATENT,IMAGE"); a link is fine when the sets share a member.
    "*" matches anything."""
    if received == expected:
        return True
    got = {t.strip() for t in str(received).split(",")}
    want = {t.strip() for t in str(expected).split(",")}
    return "*" in got or "*" in want or bool(got & want)


def linked_node_ids(node: dict) -> list[str]:
    """Ids of the nodes this prompt node takes links from, in input order."""
    links = (as_link(v) for v in node.get("inputs", {}).values())
    return [link.node_id for link in links if link is not None]


def nodes_in_cycles(prompt: dict) -> dict[str, list[str]]:
    """node id -> the sorted members of the dependency cycle it belongs to (nodes in no cycle are absent).

    A node is in a cycle when it can reach itself by following links upstream; prompts are small (tens to a few
    hundred nodes) so one walk per node is plenty fast."""

    def upstream(start: str) -> set[str]:
        seen: set[str] = set()
        stack = [n for n in linked_node_ids(prompt[start]) if n in prompt]
        while stack:
            node_id = stack.pop()
            if node_id not in seen:
                seen.add(node_id)
                stack.extend(n for n in linked_node_ids(prompt[node_id]) if n in prompt)
        return seen

    reach = {node_id: upstream(node_id) for node_id in prompt}
    cycles = {}
    for node_id, above in reach.items():
        if node_id in above:  # it depends on itself; its cycle mates are the nodes that also reach it back
            cycles[node_id] = sorted(n for n in above if node_id in reach[n])
    return cycles


def ancestors(prompt: dict, node_id: str) -> list[str]:
    """`node_id` and every node it depends on, nearest first (each once)."""
    order, stack = [], [node_id]
    while stack:
        current = stack.pop(0)
        if current in order or current not in prompt:
            continue
        order.append(current)
        stack.extend(linked_node_ids(prompt[current]))
    return order


def _first_prompt_problem(prompt: Any, registry: NodeRegistry) -> dict | None:
    """A problem with the prompt as a whole: not a graph, a node without class_type, or an unknown node type."""
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) for n in prompt.values()):
        return error_entry("invalid_prompt", "The prompt must map node ids to {class_type, inputs} objects.")
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return error_entry(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
            )
        if not isinstance(node.get("inputs", {}), dict):
            return error_entry("invalid_prompt", "A node's inputs must be an object.", f"Node ID '#{node_id}'")
    for node_id, node in prompt.items():
        class_type = node["class_type"]
        if class_type not in registry:
            title = (node.get("_meta") or {}).get("title", class_type)
            named = f"'{title}'" if title == class_type else f"'{title}' ({class_type})"
            return error_entry(
                "missing_node_type",
                f"Node {named} is not supported by Atelier: it is not one of the core Stable "
                "Diffusion 1.x nodes Atelier runs (custom node packs cannot be installed).",
                f"Node ID '#{node_id}'",
                node_id=node_id,
                class_type=class_type,
                node_title=title,
            )
    return None


def _check_constant(inp: Input, value: Any, skip_range: bool) -> tuple[Any, dict | None]:
    """Convert one constant and check it against min, max and the COMBO options: (value, error or None)."""
    config = inp.object_info()
    try:
        value = coerce(inp, value)
    except (TypeError, ValueError, OverflowError) as ex:
        return value, error_entry(
            "invalid_input_type",
            f"Failed to convert an input value to a {inp.type} value",
            f"{inp.name}, {value}, {ex}",
            input_name=inp.name,
            input_config=config,
            received_value=value,
            exception_message=str(ex),
        )
    if skip_range:
        return value, None
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and inp.min is not None and value < inp.min:
        return value, error_entry(
            "value_smaller_than_min",
            f"Value {value} smaller than min of {inp.min}",
            inp.name,
            input_name=inp.name,
            input_config=config,
            received_value=value,
        )
    if numeric and inp.max is not None and value > inp.max:
        return value, error_entry(
            "value_bigger_than_max",
            f"Value {value} bigger than max of {inp.max}",
            inp.name,
            input_name=inp.name,
            input_config=config,
            received_value=value,
        )
    if inp.type == "COMBO":
        choices = inp.choices()
        if value not in choices:
            # Like ComfyUI, do not echo huge lists (hundreds of model files) back to the client.
            listed = f"(list of length {len(choices)})" if len(choices) > 20 else str(choices)
            return value, error_entry(
                "value_not_in_list",
                "Value not in list",
                f"{inp.name}: '{value}' not in {listed}",
                input_name=inp.name,
                input_config=config if len(choices) <= 20 else None,
                received_value=value,
            )
    return value, None


def custom_validator_names(node_cls: type) -> tuple[list[str], bool]:
    """The input names a node's `validate_inputs` (or `is_changed`) asks for, and whether it takes **kwargs."""
    method = getattr(node_cls, "validate_inputs", None)
    if method is None:
        return [], False
    return signature_names(method)


def signature_names(method: Any) -> tuple[list[str], bool]:
    params = inspect.signature(method).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def call_with_constants(method: Any, schema: NodeSchema, inputs: dict) -> tuple[Any, list[str]]:
    """Call `method` with the constant inputs it names (all of them if it takes **kwargs); linked inputs it names
    are passed as None, as ComfyUI does. Returns (result, names passed)."""
    names, takes_all = signature_names(method)
    kwargs = {}
    for inp in schema.visible_inputs:
        if inp.name in inputs and (takes_all or inp.name in names):
            value = inputs[inp.name]
            kwargs[inp.name] = None if as_link(value) is not None else value
    return method(**kwargs), list(kwargs)


class _Validator:
    """One validation pass: remembers each node's verdict so shared ancestors are checked once."""

    def __init__(self, prompt: dict, registry: NodeRegistry, cycles: dict[str, list[str]]) -> None:
        self.prompt = prompt
        self.registry = registry
        self.verdicts: dict[str, tuple[bool, list[dict]]] = {}
        for node_id, members in cycles.items():
            path = ", ".join(f"#{m}" for m in members)
            err = error_entry("dependency_cycle", "Dependency cycle detected", f"nodes {path}", cycle=members)
            self.verdicts[node_id] = (False, [err])

    def node(self, node_id: str) -> bool:
        """Check `node_id` and everything upstream of it; True when it can run."""
        if node_id in self.verdicts:
            return self.verdicts[node_id][0]
        self.verdicts[node_id] = (False, [])  # provisional, in case of a cycle missed by the cycle search
        node = self.prompt[node_id]
        node_cls = self.registry.require(node["class_type"])
        schema: NodeSchema = node_cls.SCHEMA
        inputs = node.setdefault("inputs", {})
        custom_names, custom_takes_all = custom_validator_names(node_cls)
        errors: list[dict] = []
        upstream_ok = True

        for inp in schema.visible_inputs:
            if inp.name not in inputs:
                if not inp.optional:
                    errors.append(
                        error_entry(
                            "required_input_missing", "Required input is missing", inp.name, input_name=inp.name
                        )
                    )
                continue
            value = inputs[inp.name]
            if isinstance(value, list):  # a link [node_id, slot]
                problem, ok = self._check_link(inp, value)
                if problem is not None:
                    errors.append(problem)
                upstream_ok = upstream_ok and ok
                continue
            skip_range = custom_takes_all or inp.name in custom_names
            inputs[inp.name], problem = _check_constant(inp, unwrap(value), skip_range)
            if problem is not None:
                errors.append(problem)

        if not errors and hasattr(node_cls, "validate_inputs"):
            errors.extend(self._custom(node_cls, schema, inputs))

        self.verdicts[node_id] = (not errors and upstream_ok, errors)
        return self.verdicts[node_id][0]

    def _check_link(self, inp: Input, value: list) -> tuple[dict | None, bool]:
        """(error or None, whether the linked node is sound)."""
        link = as_link(value)
        reason = None
        if link is None:
            reason = "must be a length-2 list of [node_id, slot_index]"
        elif link.node_id not in self.prompt:
            reason = f"node '#{link.node_id}' is not in the prompt"
        else:
            source = self.registry.require(self.prompt[link.node_id]["class_type"]).SCHEMA
            if not 0 <= link.slot < len(source.outputs):
                reason = f"node '#{link.node_id}' ({source.name}) has no output {link.slot}"
        if reason is not None:
            return error_entry(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                f"{inp.name}, {reason}",
                input_name=inp.name,
                input_config=inp.object_info(),
                received_value=value,
            ), False
        received = source.outputs[link.slot].type
        if not types_match(received, inp.type):
            return error_entry(
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{inp.name}, received_type({received}) mismatch input_type({inp.type})",
                input_name=inp.name,
                input_config=inp.object_info(),
                received_type=received,
                linked_node=value,
            ), False
        return None, self.node(link.node_id)

    def _custom(self, node_cls: type, schema: NodeSchema, inputs: dict) -> list[dict]:
        """Run the node's own `validate_inputs`; anything but True fails every input it was given."""
        try:
            verdict, names = call_with_constants(node_cls.validate_inputs, schema, inputs)
        except Exception as ex:  # a crashing validator is reported, not raised: the user sees which node
            verdict, names = str(ex), [i.name for i in schema.visible_inputs if i.name in inputs]
        if verdict is True:
            return []
        suffix = "" if verdict is False else f" - {verdict}"
        return [
            error_entry("custom_validation_failed", "Custom validation failed for node", f"{x}{suffix}", input_name=x)
            for x in names
        ]


def validate_prompt(prompt: Any, registry: NodeRegistry, targets: Iterable[str] | None = None) -> ValidationResult:
    """Validate an API prompt. `targets` (the editor's partial_execution_targets) limits which outputs count."""
    problem = _first_prompt_problem(prompt, registry)
    if problem is not None:
        return ValidationResult(False, problem, [], {})
    prompt = {str(k): copy.deepcopy(v) for k, v in prompt.items()}
    wanted = None if targets is None else {str(t) for t in targets}
    outputs = [
        node_id
        for node_id, node in prompt.items()
        if registry.schema(node["class_type"]).output_node and (wanted is None or node_id in wanted)
    ]
    if not outputs:
        return ValidationResult(False, error_entry("prompt_no_outputs", "Prompt has no outputs"), [], {}, prompt)

    checker = _Validator(prompt, registry, nodes_in_cycles(prompt))
    good: list[str] = []
    node_errors: dict[str, dict] = {}
    for output_id in outputs:
        if checker.node(output_id):
            good.append(output_id)
            continue
        # Report every faulty node this output depends on. Nodes that are only invalid because something above
        # them is have no errors of their own and are left out, as in ComfyUI.
        for node_id in ancestors(prompt, output_id):
            errors = checker.verdicts.get(node_id, (True, []))[1]
            if errors:
                entry = node_errors.setdefault(
                    node_id, {"errors": errors, "dependent_outputs": [], "class_type": prompt[node_id]["class_type"]}
                )
                entry["dependent_outputs"].append(output_id)

    if not good:
        lines = [f"{e['message']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"]]
        error = error_entry("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines))
        return ValidationResult(False, error, [], node_errors, prompt)
    return ValidationResult(True, None, good, node_errors, prompt)
