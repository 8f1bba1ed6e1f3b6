"""Check an API-format prompt before it is queued, reporting problems exactly as ComfyUI does.

The walk starts at each output node (SaveImage, PreviewImage, ...) and goes backwards along the links, checking
every input of every node it meets. An output whose whole ancestry is sound is "good"; the prompt is queued with
the good outputs only, and rejected when there is none. Problems come back in ComfyUI's shape, which the node
editor understands (it outlines the faulty nodes in red and prints the messages):

    error       = {"type", "message", "details", "extra_info"}                  # why the prompt as a whole failed
    node_errors = {node_id: {"errors": [error, ...], "dependent_outputs": [output ids], "class_type": str}}

Error types: invalid_prompt, missing_node_type, prompt_no_outputs, prompt_outputs_failed_validation (top level);
required_input_missing, bad_linked_input, return_type_mismatch, invalid_input_type, value_smaller_than_min,
value_bigger_than_max (also text longer than limits.MAX_PROMPT_CHARACTERS), value_not_in_list,
custom_validation_failed, dependency_cycle (per node).

Prompts come from the network, so the work is linear in the size of the graph and never recursive (topology.py):
cycles are found once for the whole prompt (strongly connected components), each node is checked once however
many outputs need it, and which outputs depend on a faulty node is found in one pass (see `_node_errors`).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

from atelier.graph.comfy_core import is_comfyui_core
from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Input, NodeSchema, as_link, coerce, nesting_depth, unwrap
from atelier.graph.topology import Sources, sources_within, strongly_connected
from atelier.limits import MAX_PROMPT_CHARACTERS

MAX_VALUE_DEPTH = 32  # lists and objects nested deeper than this in one input are refused (widgets nest 2 or 3)
MAX_LISTED = 20  # like ComfyUI, long lists (model files, cycle members, dependent outputs) are not echoed in full


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
    """One error in ComfyUI's shape: {"type", "message", "details", "extra_info"}."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def types_match(received: str, expected: str) -> bool:
    """Socket types are comma-separated sets ("LATENT,IMAGE"); a link is fine when the sets share a member.
    "*" matches anything."""
    if received == expected:
        return True
    got = {t.strip() for t in str(received).split(",")}
    want = {t.strip() for t in str(expected).split(",")}
    return "*" in got or "*" in want or bool(got & want)


def nodes_in_cycles(prompt: dict, components: list[list[str]] | None = None) -> dict[str, list[str]]:
    """node id -> the sorted members of the dependency cycle it belongs to (nodes in no cycle are absent).

    A cycle is a strongly connected component of two or more nodes, or a node that links to itself."""
    sources = sources_within(prompt)
    cycles = {}
    for component in components if components is not None else strongly_connected(prompt, sources):
        if len(component) > 1 or component[0] in sources(component[0]):
            members = sorted(component)
            for node_id in component:
                cycles[node_id] = members
    return cycles


def _listed(ids: list[str]) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:MAX_LISTED])
    return shown if len(ids) <= MAX_LISTED else f"{shown} and {len(ids) - MAX_LISTED} more"


def _first_prompt_problem(prompt: Any, registry: NodeRegistry) -> dict | None:
    """A problem with the prompt as a whole: its shape (see `shape_problem`) or an unknown node type."""
    return shape_problem(prompt) or _unknown_node_type(prompt, registry)


def shape_problem(prompt: Any) -> dict | None:
    """An invalid_prompt error when `prompt` is not a graph of nodes: not an object of objects, a node without a
    class_type string, inputs that are not an object or nest more than MAX_VALUE_DEPTH deep. None when sound."""
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) for n in prompt.values()):
        return error_entry("invalid_prompt", "The prompt must map node ids to {class_type, inputs} objects.")
    for node_id, node in prompt.items():
        where = f"Node ID '#{node_id}'"
        if "class_type" not in node:
            return error_entry(
                "invalid_prompt", "Cannot execute because a node is missing the class_type property.", where
            )
        if not isinstance(node["class_type"], str):
            kind = "null" if node["class_type"] is None else type(node["class_type"]).__name__
            message = f"The class_type of node #{node_id} is a {kind}; expected a node type name such as 'KSampler'."
            return error_entry("invalid_prompt", message, where)
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            return error_entry("invalid_prompt", "A node's inputs must be an object.", where)
        for name, value in inputs.items():
            if nesting_depth(value, MAX_VALUE_DEPTH) > MAX_VALUE_DEPTH:
                message = f"The input {name!r} of node #{node_id} nests lists more than {MAX_VALUE_DEPTH} levels deep."
                return error_entry("invalid_prompt", message, where)
    return None


def _unknown_node_type(prompt: dict, registry: NodeRegistry) -> dict | None:
    for node_id, node in prompt.items():
        class_type = node["class_type"]
        if class_type not in registry:
            meta = node.get("_meta")
            title = meta.get("title") if isinstance(meta, dict) else None
            title = title if isinstance(title, str) else class_type
            named = f"'{title}'" if title == class_type else f"'{title}' ({class_type})"
            if is_comfyui_core(class_type):
                message = (
                    f"Node {named} is a ComfyUI node that Atelier does not have yet; bypass or delete it, or "
                    "replace it with one Atelier runs."
                )
            else:
                message = (
                    f"Node {named} is not supported by Atelier: it is not one of ComfyUI's own nodes but comes "
                    "from a custom node pack, and custom node packs cannot be installed."
                )
            return error_entry(
                "missing_node_type",
                message,
                f"Node ID '#{node_id}'",
                node_id=node_id,
                class_type=class_type,
                node_title=title,
            )
    return None


def _targets_problem(targets: Any) -> dict | None:
    """partial_execution_targets must be a list of node ids (strings, or integers as older scripts send them)."""
    if targets is None:
        return None
    ids_only = isinstance(targets, (list, tuple)) and all(
        isinstance(t, (str, int)) and not isinstance(t, bool) for t in targets
    )
    if ids_only:
        return None
    message = f'partial_execution_targets is {type(targets).__name__}; expected a list of node ids such as ["9"].'
    return error_entry("invalid_prompt", message)


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
    if inp.type == "STRING" and isinstance(value, str) and len(value) > MAX_PROMPT_CHARACTERS:
        return value, error_entry(
            "value_bigger_than_max",
            "Text longer than the most allowed",
            f"{inp.name} - The text has {len(value):,} characters; the most is {MAX_PROMPT_CHARACTERS:,}.",
            input_name=inp.name,
            input_config=config,
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
    """The parameter names `method` takes by keyword, and whether it also takes **kwargs."""
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
        self.verdicts: dict[str, tuple[bool, list[dict]]] = {}  # node id -> (can run, its own errors)
        for node_id, members in cycles.items():
            err = error_entry(
                "dependency_cycle", "Dependency cycle detected", f"nodes {_listed(members)}", cycle=members[:MAX_LISTED]
            )
            self.verdicts[node_id] = (False, [err])

    def node(self, start: str) -> bool:
        """Check `start` and everything upstream of it; True when it can run.

        A depth-first walk with its own stack: a node's own inputs are checked when it is first met, and it is
        decided once all of its sources are (it can run when it has no errors and every source can run). Nodes in
        cycles were decided up front, so the walk never goes round one."""
        waiting: dict[str, tuple[list[dict], list[str]]] = {}  # met, not decided: (its errors, its sources)
        stack = [start]
        while stack:
            node_id = stack[-1]
            if node_id in self.verdicts:
                stack.pop()
            elif node_id not in waiting:
                waiting[node_id] = self._check(node_id)
                stack.extend(s for s in reversed(waiting[node_id][1]) if s not in self.verdicts)
            else:
                stack.pop()
                errors, sources = waiting.pop(node_id)
                sound = all(self.verdicts.get(s, (False, []))[0] for s in sources)
                self.verdicts[node_id] = (sound and not errors, errors)
        return self.verdicts[start][0]

    def _check(self, node_id: str) -> tuple[list[dict], list[str]]:
        """The node's own errors, and the nodes its sound links come from."""
        node = self.prompt[node_id]
        node_cls = self.registry.require(node["class_type"])
        schema: NodeSchema = node_cls.SCHEMA
        inputs = node.setdefault("inputs", {})
        custom_names, custom_takes_all = custom_validator_names(node_cls)
        errors: list[dict] = []
        sources: list[str] = []

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
                problem, source = self._check_link(inp, value)
                if problem is not None:
                    errors.append(problem)
                else:
                    sources.append(source)
                continue
            skip_range = custom_takes_all or inp.name in custom_names
            inputs[inp.name], problem = _check_constant(inp, unwrap(value), skip_range)
            if problem is not None:
                errors.append(problem)

        if not errors and hasattr(node_cls, "validate_inputs"):
            errors.extend(self._custom(node_cls, schema, inputs))
        return errors, sources

    def _check_link(self, inp: Input, value: list) -> tuple[dict | None, str]:
        """(error or None, the id of the linked node)."""
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
            ), ""
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
            ), ""
        return None, link.node_id

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


def validate_prompt(prompt: Any, registry: NodeRegistry, targets: Any = None) -> ValidationResult:
    """Validate an API prompt. `targets` (the editor's partial_execution_targets: a list of node ids) limits which
    outputs count."""
    problem = _first_prompt_problem(prompt, registry) or _targets_problem(targets)
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

    sources = sources_within(prompt)
    components = strongly_connected(prompt, sources)
    checker = _Validator(prompt, registry, nodes_in_cycles(prompt, components))
    verdicts = {output_id: checker.node(output_id) for output_id in outputs}
    good = [output_id for output_id in outputs if verdicts[output_id]]
    failed = [output_id for output_id in outputs if not verdicts[output_id]]
    node_errors = _node_errors(prompt, checker.verdicts, failed, components, sources)

    if not good:
        lines = [f"{e['message']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"]]
        error = error_entry("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines))
        return ValidationResult(False, error, [], node_errors, prompt)
    return ValidationResult(True, None, good, node_errors, prompt)


def _node_errors(
    prompt: dict,
    verdicts: dict[str, tuple[bool, list[dict]]],
    failed: list[str],
    components: list[list[str]],
    sources: Sources,
) -> dict[str, dict]:
    """ComfyUI's node_errors: every node with errors of its own that a failed output depends on, with (up to
    MAX_LISTED of) those outputs. Nodes that are only invalid because something above them is are left out, as in
    ComfyUI.

    Which outputs depend on a node is found in one pass over the strongly connected components, dependents first
    (the reverse of the order `strongly_connected` gives): a node's outputs are its own bit plus the union over the
    nodes that link from it. The sets are Python integers used as bit sets (bit i stands for failed[i]), so a node
    shared by thousands of outputs costs one OR per link, where a walk per output would cost outputs x nodes."""
    bits = {output_id: 1 << i for i, output_id in enumerate(failed)}
    reach: dict[str, int] = {}
    for component in reversed(components):
        mask = 0
        for node_id in component:  # the members of a cycle all depend on each other: they share one set
            mask |= reach.get(node_id, 0) | bits.get(node_id, 0)
        for node_id in component:
            reach[node_id] = mask
            for source in sources(node_id):
                reach[source] = reach.get(source, 0) | mask

    node_errors = {}
    for node_id in prompt:
        errors = verdicts.get(node_id, (True, []))[1]
        if errors and reach.get(node_id):
            node_errors[node_id] = {
                "errors": errors,
                "dependent_outputs": _members(reach[node_id], failed),
                "class_type": prompt[node_id]["class_type"],
            }
    return node_errors


def _members(mask: int, ids: list[str]) -> list[str]:
    """The first MAX_LISTED ids whose bits are set in `mask`, in order."""
    chosen = []
    while mask and len(chosen) < MAX_LISTED:
        lowest = mask & -mask
        chosen.append(ids[lowest.bit_length() - 1])
        mask ^= lowest
    return chosen
