"""Executor and cache: order, partial runs, caching across prompts, lists, errors, interrupt, events."""

import copy
import threading

import pytest

from atelier.graph.cache import OutputCache, node_signatures
from atelier.graph.executor import EventLog, Executor
from tests.graph import stub_nodes
from tests.graph.stub_nodes import stub_registry


@pytest.fixture()
def journal():
    return stub_nodes.reset()


def sd_like(seed=1, text="cat"):
    """Loader -> Encode -> Sampler(seed) -> Save, plus an unrelated Constant -> Collect branch."""
    return {
        "1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}},
        "2": {"class_type": "Encode", "inputs": {"text": text, "clip": ["1", 1]}},
        "3": {"class_type": "Constant", "inputs": {"value": 5}},
        "4": {
            "class_type": "Sampler",
            "inputs": {
                "model": ["1", 0],
                "seed": seed,
                "steps": 2,
                "cfg": 8,
                "sampler_name": "euler",
                "positive": ["2", 0],
                "latent": ["3", 0],
            },
        },
        "5": {"class_type": "Save", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
        "6": {"class_type": "Constant", "inputs": {"value": 7}},
        "7": {"class_type": "Collect", "inputs": {"value": ["6", 0]}},
    }


def test_runs_in_dependency_order_and_reports_events(journal):
    log = EventLog()
    result = Executor(stub_registry()).execute(sd_like(), ["5"], log, extra_data={"extra_pnginfo": {"w": 1}})
    assert result.status == "success"
    # Depth-first post-order, inputs in schema order: model (1), positive (2, needs 1), latent (3).
    assert journal.runs == [("1", "Loader"), ("2", "Encode"), ("3", "Constant"), ("4", "Sampler"), ("5", "Save")]
    assert result.executed == ["1", "2", "3", "4", "5"]
    assert journal.saved == ["latent(5,seed=1,steps=2,euler,cond(cat))"]
    ui = {"images": [{"filename": "x_latent(5,seed=1,steps=2,euler,cond(cat))", "subfolder": "", "type": "output"}]}
    assert result.ui == {"5": ui}
    assert log.names() == [
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executing",
        "executing",
        "progress",
        "progress",
        "executing",
        "executed",
        "execution_success",
    ]
    assert log.payloads("execution_cached") == [[]]
    assert log.payloads("progress") == [("4", 1, 2), ("4", 2, 2)]
    assert log.payloads("executed") == [("5", ui)]


def test_only_requested_outputs_run(journal):
    result = Executor(stub_registry()).execute(sd_like(), ["7"])
    assert journal.runs == [("6", "Constant"), ("7", "Collect")]
    assert result.ui == {"7": {"text": ["7"]}}


def test_changing_the_seed_reruns_only_the_sampler_and_what_follows(journal):
    executor = Executor(stub_registry())
    executor.execute(sd_like(seed=1), ["5", "7"])
    assert len(journal.runs) == 7
    journal.runs.clear()

    log = EventLog()
    result = executor.execute(sd_like(seed=2), ["5", "7"], log)
    assert journal.ran() == ["4", "5"]
    assert result.cached == ["1", "2", "3", "6", "7"]
    assert log.payloads("execution_cached") == [["1", "2", "3", "6", "7"]]
    # The cached output node still reports its UI output.
    assert ("7", {"text": ["7"]}) in log.payloads("executed")
    assert result.ui["7"] == {"text": ["7"]} and "seed=2" in result.ui["5"]["images"][0]["filename"]

    journal.runs.clear()
    executor.execute(sd_like(seed=2, text="dog"), ["5"])
    assert journal.ran() == ["2", "4", "5"]  # the text encoder changed, the loader did not

    journal.runs.clear()
    result = executor.execute(sd_like(seed=2, text="dog"), ["5"])
    assert journal.runs == [] and result.executed == []  # identical prompt: everything cached
    assert result.ui["5"]["images"][0]["filename"].startswith("x_latent")


def test_node_ids_do_not_matter_for_the_cache(journal):
    executor = Executor(stub_registry())
    executor.execute(sd_like(), ["5"])
    journal.runs.clear()
    renamed = {f"n{k}": copy.deepcopy(v) for k, v in sd_like().items()}
    for node in renamed.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][name] = [f"n{value[0]}", value[1]]
    result = executor.execute(renamed, ["n5"])
    assert journal.runs == [] and result.cached == ["n1", "n2", "n3", "n4", "n5"]


def test_is_changed_value_and_nan(journal):
    registry = stub_registry()
    executor = Executor(registry)
    prompt = {
        "1": {"class_type": "FileReader", "inputs": {"path": "f.txt"}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
    }
    executor.execute(prompt, ["2"])
    executor.execute(prompt, ["2"])
    assert journal.ran() == ["1", "2"]
    stub_nodes.FileReader.versions["f.txt"] = 2.0  # the file changed on disk
    executor.execute(prompt, ["2"])
    assert journal.ran() == ["1", "2", "1", "2"]

    journal.runs.clear()
    prompt["1"]["inputs"]["path"] = "nan"  # is_changed -> NaN: always re-run
    executor.execute(prompt, ["2"])
    executor.execute(prompt, ["2"])
    assert journal.ran() == ["1", "2", "1", "2"]


def test_cache_is_bounded_but_keeps_the_last_prompt():
    registry = stub_registry()
    cache = OutputCache(capacity=2)
    executor = Executor(registry, cache)
    for value in range(6):
        executor.execute(
            {
                "1": {"class_type": "Constant", "inputs": {"value": value}},
                "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
            },
            ["2"],
        )
    # 2 entries of the last prompt + at most 2 older ones.
    assert len(cache) == 4
    last = {
        "1": {"class_type": "Constant", "inputs": {"value": 5}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
    }
    assert all(key in cache for key in node_signatures(last, registry, ["2"]).values())


def test_list_outputs_map_over_downstream_nodes(journal):
    prompt = {
        "1": {"class_type": "Range", "inputs": {"start": 10, "count": 3}},
        "2": {"class_type": "Constant", "inputs": {"value": 1}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},  # 3 runs, b repeats its last item
        "4": {"class_type": "Collect", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "Sum", "inputs": {"values": ["3", 0]}},  # INPUT_IS_LIST: one run with the list
        "6": {"class_type": "Collect", "inputs": {"value": ["5", 0]}},
    }
    result = Executor(stub_registry()).execute(prompt, ["4", "6"])
    assert journal.ran("Add") == ["3", "3", "3"]
    assert journal.ran("Sum") == ["5"]
    assert result.outputs["3"] == [[11, 12, 13]]
    assert result.outputs["5"] == [[36]]
    assert result.ui == {"4": {"text": ["11", "12", "13"]}, "6": {"text": ["36"]}}


def test_empty_list_runs_nothing_downstream(journal):
    prompt = {
        "1": {"class_type": "Range", "inputs": {"start": 0, "count": 0}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
    }
    result = Executor(stub_registry()).execute(prompt, ["2"])
    assert result.status == "success" and journal.ran("Collect") == [] and result.outputs["2"] == [[]]


def test_failing_node_reports_and_executor_stays_usable(journal):
    executor = Executor(stub_registry())
    prompt = {
        "1": {"class_type": "Constant", "inputs": {"value": 3}},
        "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}},
    }
    log = EventLog()
    result = executor.execute(prompt, ["3"], log)
    assert result.status == "error"
    assert log.names()[-1] == "execution_error"
    error = log.payloads("execution_error")[0]
    assert error == result.error
    assert error["node_id"] == "2" and error["node_type"] == "Fail"
    assert error["exception_message"] == "cannot handle 3"
    assert error["exception_type"] == "ValueError"
    assert error["current_inputs"] == {"value": [3]}
    assert error["executed"] == ["1"] and error["current_outputs"] == ["1"]
    assert any("raise ValueError" in line for line in error["traceback"])
    assert journal.ran() == ["1", "2"]

    # The next prompt runs normally, and the node that succeeded before the failure is cached.
    log = EventLog()
    prompt["2"] = {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}}
    result = executor.execute(prompt, ["3"], log)
    assert result.status == "success" and result.cached == ["1"] and result.outputs["3"] == [[4]]
    assert log.names()[-1] == "execution_success"


def test_cycle_is_an_execution_error(journal):
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}},
    }
    log = EventLog()
    result = Executor(stub_registry()).execute(prompt, ["3"], log)
    assert result.status == "error" and journal.runs == []
    assert result.error["exception_type"] == "graph.DependencyCycleError"
    assert result.error["exception_message"] == "Dependency cycle detected: 2 -> 1 -> 2"
    assert log.names() == ["execution_start", "execution_error"]


def test_interrupt_stops_a_running_node_and_is_reported(journal):
    executor = Executor(stub_registry())
    prompt = {
        "1": {"class_type": "Constant", "inputs": {"value": 1}},
        "2": {"class_type": "Slow", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}},
    }
    log = EventLog()
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("r", executor.execute(prompt, ["3"], log)))
    worker.start()
    assert journal.started.wait(10)
    executor.interrupt()
    worker.join(10)
    result = outcome["r"]
    assert result.status == "interrupted"
    assert log.names()[-1] == "execution_interrupted"
    assert log.payloads("execution_interrupted") == [{"node_id": "2", "node_type": "Slow", "executed": ["1"]}]
    assert journal.ran() == ["1", "2"]

    # The flag is cleared for the next prompt.
    prompt["2"] = {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 0}}
    assert executor.execute(prompt, ["3"]).status == "success"


def test_interrupt_before_a_node_runs_it_not(journal):
    class Stopper(EventLog):
        def executed(self, node_id, ui):
            super().executed(node_id, ui)
            executor.interrupt()  # the user cancels right after the first output finished

    executor = Executor(stub_registry())
    log = Stopper()
    result = executor.execute(sd_like(), ["7", "5"], log)
    assert result.status == "interrupted" and journal.ran() == ["6", "7"]
    assert log.payloads("execution_interrupted")[0]["node_id"] == "1"


def test_hidden_inputs_receive_prompt_and_extra_pnginfo(journal):
    seen = {}

    class Spy(stub_nodes.Save):
        def run(self, ctx, images, filename_prefix, prompt=None, extra_pnginfo=None):
            seen.update(prompt=prompt, extra_pnginfo=extra_pnginfo, ctx=(ctx.node_id, ctx.extra_pnginfo))
            return super().run(ctx, images, filename_prefix, prompt, extra_pnginfo)

    registry = stub_registry()
    registry._classes["Save"] = Spy
    prompt = sd_like()
    Executor(registry).execute(prompt, ["5"], extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert seen["prompt"]["4"]["inputs"]["seed"] == 1 and seen["prompt"].keys() == prompt.keys()
    assert seen["extra_pnginfo"] == {"workflow": {"nodes": []}}
    assert seen["ctx"] == ("5", {"workflow": {"nodes": []}})


def test_constants_are_unwrapped_and_coerced(journal):
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": "4", "b": {"__value__": 2}}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
    }
    assert Executor(stub_registry()).execute(prompt, ["2"]).outputs["1"] == [[6]]


def test_wrong_number_of_outputs_is_an_error(journal):
    class Broken(stub_nodes.Add):
        def run(self, ctx, a, b):
            return (a, b)

    registry = stub_registry()
    registry._classes["Add"] = Broken
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": 1, "b": 2}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
    }
    result = Executor(registry).execute(prompt, ["2"])
    assert result.error["exception_type"] == "TypeError"
    assert result.error["exception_message"] == "Node Add returned 2 values for 1 outputs."


def test_a_chain_of_5000_nodes_runs_without_recursion(journal):
    # plan, prune and the cache signatures walked recursively and overflowed near 1,000 nodes.
    prompt = {"0": {"class_type": "Constant", "inputs": {"value": 0}}}
    for i in range(1, 4999):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["4999"] = {"class_type": "Collect", "inputs": {"value": ["4998", 0]}}
    executor = Executor(stub_registry())
    result = executor.execute(prompt, ["4999"])
    assert result.status == "success" and result.outputs["4999"] == [[4998]]
    assert len(result.executed) == 5000
    again = executor.execute(prompt, ["4999"])  # every node cached: only the output shows its value again
    assert again.status == "success" and again.executed == [] and len(again.cached) == 5000
