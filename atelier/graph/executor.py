"""Run an API prompt: the nodes the requested outputs need, each once, in dependency order.

    result = Executor(registry).execute(prompt, outputs=["9"], listener=my_listener)

1. Plan. Walk upstream from each requested output (in the order given), depth first, inputs in schema order;
   a node is placed after everything it links from (post-order), which is a deterministic topological order.
   Meeting a node that is still being walked means a dependency cycle: the prompt fails before anything runs.
2. Cache. Every planned node gets a signature (cache.py); nodes whose signature is stored are reused, and the
   walk does not go above them, so their ancestors do not run either (unless another node needs them).
3. Run. Before each node the interrupt flag is checked. Inputs are gathered as lists and the node runs once per
   list index (see below). Its outputs are stored for the nodes downstream and in the cache; its UI output (saved
   images) is sent to the listener as `executed`.

Lists. Every value travelling along a link is a list: a node normally produces one item per output, and a node
whose `Output(is_list=True)` returns a Python list produces many. A node runs once per index up to its longest
input list, shorter lists repeating their last item (so one prompt x four seeds gives four samples). A node with
`input_is_list=True` instead runs once and receives the whole lists. Outputs of the runs are collected in order
(concatenated for is_list outputs).

Events go to an `ExecutionListener` (names and payloads follow ComfyUI's WebSocket messages; the server adds
prompt_id and timestamps): execution_start, execution_cached(node_ids), executing(node_id),
progress(node_id, value, total), preview(node_id, image), image(node_id, bytes, mime: a whole image a node
sends through the socket, SaveImageWebsocket), will_write(node_id, file ref: an output file about to
appear, see files.write_new), executed(node_id, ui), then one of execution_success,
execution_error(error) or execution_interrupted(info). A failing node ends the prompt with execution_error; the
executor itself stays usable for the next prompt. `execute` is synchronous: the server calls it from its worker
thread and may call `interrupt()` from any other thread.
"""

from __future__ import annotations

import math
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atelier.graph.cache import CacheEntry, OutputCache, node_signatures
from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import NodeOutput, NodeSchema, as_link, coerce, unwrap
from atelier.graph.topology import CycleError, post_order


class Interrupted(Exception):
    """Raised inside a run when the user cancels; the executor reports it as execution_interrupted."""


class DependencyCycleError(Exception):
    """The requested outputs depend on a node that (indirectly) depends on itself."""


class NodeNotFoundError(Exception):
    """A requested output, or a node type, that the prompt or the registry does not have."""


class ExecutionListener:
    """Receives execution events. Subclass it and override what you need; every method does nothing by default."""

    def execution_start(self) -> None: ...

    def execution_cached(self, node_ids: list[str]) -> None: ...

    def executing(self, node_id: str) -> None: ...

    def progress(self, node_id: str, value: float, total: float) -> None: ...

    def preview(self, node_id: str, image: Any) -> None: ...

    def image(self, node_id: str, data: bytes, mime: str) -> None: ...

    def will_write(self, node_id: str, ref: dict) -> None: ...

    def executed(self, node_id: str, ui: dict) -> None: ...

    def execution_success(self) -> None: ...

    def execution_error(self, error: dict) -> None: ...

    def execution_interrupted(self, info: dict) -> None: ...


class EventLog(ExecutionListener):
    """A listener that records every event as (name, payload): handy for tests and for a prompt's history."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def payloads(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]

    def execution_start(self) -> None:
        self.events.append(("execution_start", None))

    def execution_cached(self, node_ids: list[str]) -> None:
        self.events.append(("execution_cached", list(node_ids)))

    def executing(self, node_id: str) -> None:
        self.events.append(("executing", node_id))

    def progress(self, node_id: str, value: float, total: float) -> None:
        self.events.append(("progress", (node_id, value, total)))

    def preview(self, node_id: str, image: Any) -> None:
        self.events.append(("preview", (node_id, image)))

    def image(self, node_id: str, data: bytes, mime: str) -> None:
        self.events.append(("image", (node_id, data, mime)))

    def will_write(self, node_id: str, ref: dict) -> None:
        self.events.append(("will_write", (node_id, ref)))

    def executed(self, node_id: str, ui: dict) -> None:
        self.events.append(("executed", (node_id, ui)))

    def execution_success(self) -> None:
        self.events.append(("execution_success", None))

    def execution_error(self, error: dict) -> None:
        self.events.append(("execution_error", error))

    def execution_interrupted(self, info: dict) -> None:
        self.events.append(("execution_interrupted", info))


@dataclass
class ExecutionResult:
    """How a prompt ended. `ui` maps output node ids to what they showed (the history's "outputs");
    `outputs` holds the value lists of every node computed or reused, by node id."""

    status: str  # "success" | "error" | "interrupted"
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    ui: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, list[list]] = field(default_factory=dict)
    error: dict | None = None


class RunContext:
    """The executor side of schema.NodeContext, handed to each node's run()."""

    def __init__(
        self, node_id: str, prompt: dict, extra_pnginfo: Any, listener: ExecutionListener, stop: threading.Event
    ) -> None:
        self.node_id = node_id
        self.prompt = prompt
        self.extra_pnginfo = extra_pnginfo
        self._listener = listener
        self._stop = stop

    def progress(self, value: float, total: float) -> None:
        self._listener.progress(self.node_id, value, total)

    def preview(self, image: Any) -> None:
        self._listener.preview(self.node_id, image)

    def send_image(self, data: bytes, mime: str = "image/png") -> None:
        self._listener.image(self.node_id, data, mime)

    def will_write(self, ref: dict) -> None:
        self._listener.will_write(self.node_id, ref)

    def check_interrupt(self) -> None:
        if self._stop.is_set():
            raise Interrupted(f"Node {self.node_id} was interrupted.")


class Executor:
    """Runs prompts against one registry, keeping an output cache between them."""

    def __init__(self, registry: NodeRegistry, cache: OutputCache | None = None) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()
        self._stop = threading.Event()

    def interrupt(self) -> None:
        """Ask the running prompt to stop at the next node (or the next check_interrupt() inside a node)."""
        self._stop.set()

    def execute(
        self,
        prompt: dict,
        outputs: Sequence[str],
        listener: ExecutionListener | None = None,
        extra_data: dict | None = None,
    ) -> ExecutionResult:
        """Run what `outputs` need. `extra_data` is the request's extra_data (its "extra_pnginfo" reaches nodes)."""
        listener = listener or ExecutionListener()
        self._stop.clear()
        listener.execution_start()
        prompt = normalize_prompt(prompt, self.registry)
        extra_pnginfo = (extra_data or {}).get("extra_pnginfo")
        outputs = [str(o) for o in outputs]

        try:
            order = plan(prompt, self.registry, outputs)
        except (DependencyCycleError, NodeNotFoundError) as ex:
            return self._fail_before_start(prompt, outputs, ex, listener)
        signatures = node_signatures(prompt, self.registry, order)
        hits = {n: entry for n in order if (entry := self.cache.get(signatures[n])) is not None}
        result = ExecutionResult("success", cached=[n for n in order if n in hits])
        listener.execution_cached(result.cached)

        values = result.outputs
        try:
            for node_id in prune(prompt, self.registry, outputs, set(hits)):
                if node_id in hits:  # reused: its outputs feed the nodes below; an output node shows its UI again
                    values[node_id] = hits[node_id].outputs
                    if node_id in outputs and hits[node_id].ui:
                        result.ui[node_id] = hits[node_id].ui
                        listener.executed(node_id, hits[node_id].ui)
                    continue
                entry = self._run_node(node_id, prompt, values, extra_pnginfo, listener, result)
                values[node_id] = entry.outputs
                self.cache.put(signatures[node_id], entry)
                result.executed.append(node_id)
                if entry.ui:
                    result.ui[node_id] = entry.ui
                    listener.executed(node_id, entry.ui)
        except _NodeFailed as failed:
            result.status, result.error = failed.status, failed.info
            if failed.status == "interrupted":
                listener.execution_interrupted(failed.info)
            else:
                listener.execution_error(failed.info)
            return result
        finally:
            self.cache.trim(keep={signatures[n] for n in order})
        listener.execution_success()
        return result

    def _run_node(
        self,
        node_id: str,
        prompt: dict,
        values: dict[str, list[list]],
        extra_pnginfo: Any,
        listener: ExecutionListener,
        result: ExecutionResult,
    ) -> CacheEntry:
        node = prompt[node_id]
        node_cls = self.registry.require(node["class_type"])
        schema: NodeSchema = node_cls.SCHEMA
        inputs: dict[str, list] = {}
        try:
            if self._stop.is_set():
                raise Interrupted(f"Interrupted before node {node_id}.")
            listener.executing(node_id)
            inputs = gather_inputs(node_id, prompt, schema, values, extra_pnginfo)
            ctx = RunContext(node_id, prompt, extra_pnginfo, listener, self._stop)
            instance = node_cls()
            runs = []
            for kwargs in list_calls(inputs, schema.input_is_list):
                ctx.check_interrupt()
                runs.append(split_result(instance.run(ctx, **kwargs), schema))
            return merge_runs(runs, schema)
        except Interrupted:
            info = {"node_id": node_id, "node_type": node["class_type"], "executed": list(result.executed)}
            raise _NodeFailed("interrupted", info) from None
        except Exception as ex:
            info = error_report(node_id, node["class_type"], ex, inputs, result.executed, list(values))
            raise _NodeFailed("error", info) from None

    def _fail_before_start(
        self, prompt: dict, outputs: list[str], ex: Exception, listener: ExecutionListener
    ) -> ExecutionResult:
        node_id = getattr(ex, "node_id", outputs[0] if outputs else None)
        kind = "graph.DependencyCycleError" if isinstance(ex, DependencyCycleError) else "graph.NodeNotFoundError"
        info = {
            "node_id": node_id,
            "node_type": prompt.get(node_id, {}).get("class_type"),
            "executed": [],
            "exception_message": str(ex),
            "exception_type": kind,
            "traceback": [],
            "current_inputs": {},
            "current_outputs": [],
        }
        listener.execution_error(info)
        return ExecutionResult("error", error=info)


class _NodeFailed(Exception):
    def __init__(self, status: str, info: dict) -> None:
        super().__init__(status)
        self.status, self.info = status, info


# ---- planning ---------------------------------------------------------------------------------------------------


def normalize_prompt(prompt: dict, registry: NodeRegistry) -> dict:
    """String ids; constants unwrapped from {"__value__": ...} and converted to their input's type when they can be
    (validation already did this for a validated prompt). The caller's prompt is not modified."""
    normalized = {}
    for node_id, node in prompt.items():
        schema = registry.schema(node.get("class_type"))
        inputs = {}
        for name, value in node.get("inputs", {}).items():
            inp = schema.input(name) if schema else None
            if isinstance(value, list) or inp is None:
                inputs[name] = value
                continue
            try:
                inputs[name] = coerce(inp, value)
            except (TypeError, ValueError, OverflowError):
                inputs[name] = unwrap(value)
        normalized[str(node_id)] = {**node, "inputs": inputs}
    return normalized


def _input_links(prompt: dict, registry: NodeRegistry, node_id: str) -> list[str]:
    """Ids of the nodes `node_id` links from, in the order of its schema's inputs."""
    node = prompt[node_id]
    schema = registry.schema(node["class_type"])
    if schema is None:
        error = NodeNotFoundError(f"Node {node_id} has the unknown type {node['class_type']!r}.")
        error.node_id = node_id  # type: ignore[attr-defined]
        raise error
    links = (as_link(node["inputs"].get(i.name)) for i in schema.visible_inputs)
    return [link.node_id for link in links if link is not None and link.node_id in prompt]


def plan(prompt: dict, registry: NodeRegistry, outputs: Sequence[str]) -> list[str]:
    """Every node the outputs need, each after the nodes it links from (depth-first post-order, topology.py)."""
    for output_id in outputs:
        if output_id not in prompt:
            raise NodeNotFoundError(f"Output node {output_id} is not in the prompt.")
    try:
        return post_order(outputs, lambda node_id: _input_links(prompt, registry, node_id))
    except CycleError as ex:
        error = DependencyCycleError(str(ex))
        error.node_id = ex.path[-1]  # type: ignore[attr-defined]
        raise error from None


def prune(prompt: dict, registry: NodeRegistry, outputs: Sequence[str], cached: set[str]) -> list[str]:
    """The plan again, but not walking above cached nodes: what must run, plus the cached nodes it reads."""
    return post_order(outputs, lambda node_id: () if node_id in cached else _input_links(prompt, registry, node_id))


# ---- running one node -------------------------------------------------------------------------------------------


def gather_inputs(
    node_id: str, prompt: dict, schema: NodeSchema, values: dict[str, list[list]], extra_pnginfo: Any
) -> dict[str, list]:
    """Each input present in the prompt as a list: a link gives the source output's list, a constant [value]."""
    hidden = {"PROMPT": prompt, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": node_id}
    inputs: dict[str, list] = {}
    for inp in schema.inputs:
        if inp.hidden:
            inputs[inp.name] = [hidden[inp.type]]
            continue
        if inp.name not in prompt[node_id]["inputs"]:
            continue
        value = prompt[node_id]["inputs"][inp.name]
        link = as_link(value)
        if link is None:
            inputs[inp.name] = [value]
        elif link.node_id in values:
            inputs[inp.name] = values[link.node_id][link.slot]
        else:
            inputs[inp.name] = [None]  # a link to a node that is not in the prompt (the node sees None)
    return inputs


def list_calls(inputs: dict[str, list], input_is_list: bool) -> list[dict[str, Any]]:
    """The keyword arguments of each run: one call with whole lists, or one per index of the longest list."""
    if input_is_list:
        return [inputs]
    if any(len(v) == 0 for v in inputs.values()):
        return []  # an empty list upstream: nothing to run on
    longest = max((len(v) for v in inputs.values()), default=1)
    return [{name: v[min(i, len(v) - 1)] for name, v in inputs.items()} for i in range(longest)]


def split_result(returned: Any, schema: NodeSchema) -> NodeOutput:
    """Accept a tuple, a NodeOutput or ComfyUI's {"ui": ..., "result": ...}; check the number of outputs."""
    if isinstance(returned, NodeOutput):
        out = NodeOutput(tuple(returned.result), returned.ui)
    elif isinstance(returned, dict) and ("ui" in returned or "result" in returned):
        out = NodeOutput(tuple(returned.get("result", ())), returned.get("ui"))
    elif isinstance(returned, (tuple, list)):
        out = NodeOutput(tuple(returned))
    elif returned is None and not schema.outputs:
        out = NodeOutput()
    else:
        raise TypeError(f"Node {schema.name} returned {type(returned).__name__}; run() must return a tuple.")
    if len(out.result) != len(schema.outputs):
        raise TypeError(f"Node {schema.name} returned {len(out.result)} values for {len(schema.outputs)} outputs.")
    return out


def merge_runs(runs: list[NodeOutput], schema: NodeSchema) -> CacheEntry:
    """One list per output slot across all runs (is_list outputs are concatenated); UI lists are concatenated."""
    outputs = []
    for slot, out in enumerate(schema.outputs):
        if out.is_list:
            outputs.append([item for run in runs for item in run.result[slot]])
        else:
            outputs.append([run.result[slot] for run in runs])
    ui: dict[str, list] = {}
    for run in runs:
        for key, items in (run.ui or {}).items():
            ui.setdefault(key, []).extend(items)
    return CacheEntry(outputs, ui or None)


def error_report(
    node_id: str, node_type: str, ex: Exception, inputs: dict, executed: list[str], available: list[str]
) -> dict:
    """The execution_error payload ComfyUI sends: what failed, where, and with which inputs."""
    kind = type(ex)
    return {
        "node_id": node_id,
        "node_type": node_type,
        "executed": list(executed),
        "exception_message": str(ex),
        "exception_type": kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}",
        "traceback": traceback.format_tb(ex.__traceback__),
        "current_inputs": {name: [_printable(v) for v in values] for name, values in inputs.items()},
        "current_outputs": available,
    }


def _printable(value: Any) -> Any:
    """A value as the error report shows it: plain JSON values as they are, anything else (a tensor, NaN) as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
