"""Prompt validation: every error type, with ComfyUI's exact strings and node_errors structure."""

import time

import pytest

from atelier.graph.validation import types_match, validate_prompt
from tests.graph import stub_nodes
from tests.graph.stub_nodes import stub_registry


@pytest.fixture()
def registry():
    stub_nodes.reset()
    return stub_registry()


def sampler(**overrides):
    inputs = {
        "model": ["1", 0],
        "seed": 1,
        "steps": 2,
        "cfg": 8,
        "sampler_name": "euler",
        "positive": ["2", 0],
        "latent": ["3", 0],
    }
    inputs.update(overrides)
    return {"class_type": "Sampler", "inputs": inputs}


def graph(**sampler_overrides):
    return {
        "1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}},
        "2": {"class_type": "Encode", "inputs": {"text": "cat", "clip": ["1", 1]}},
        "3": {"class_type": "Constant", "inputs": {"value": 5}},
        "4": sampler(**sampler_overrides),
        "5": {"class_type": "Save", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
    }


def only_error(result, node_id):
    entry = result.node_errors[node_id]
    assert len(entry["errors"]) == 1, entry
    return entry["errors"][0]


def test_valid_prompt(registry):
    result = validate_prompt(graph(cfg="7.5", steps=3.0), registry)
    assert result.ok and result.error is None and result.outputs == ["5"] and result.node_errors == {}
    # Constants come back converted to their input's type.
    assert result.prompt["4"]["inputs"]["cfg"] == 7.5 and result.prompt["4"]["inputs"]["steps"] == 3


def test_missing_node_type(registry):
    prompt = graph()
    prompt["9"] = {"class_type": "Nope", "inputs": {}, "_meta": {"title": "My node"}}
    result = validate_prompt(prompt, registry)
    assert not result.ok and result.node_errors == {} and result.outputs == []
    assert result.error == {
        "type": "missing_node_type",
        "message": "Node 'My node' (Nope) is not supported by Atelier: it is not one of ComfyUI's own nodes but "
        "comes from a custom node pack, and custom node packs cannot be installed.",
        "details": "Node ID '#9'",
        "extra_info": {"node_id": "9", "class_type": "Nope", "node_title": "My node"},
    }
    # One of ComfyUI's own nodes is never called a custom node: Atelier does not have it yet.
    prompt["9"] = {"class_type": "ModelSamplingAuraFlow", "inputs": {}}
    result = validate_prompt(prompt, registry)
    assert result.error["type"] == "missing_node_type" and result.error["message"] == (
        "Node 'ModelSamplingAuraFlow' is a ComfyUI node that Atelier does not have yet; bypass or delete it, or "
        "replace it with one Atelier runs."
    )


def test_missing_class_type_is_invalid_prompt(registry):
    result = validate_prompt({"1": {"inputs": {}}}, registry)
    assert result.error == {
        "type": "invalid_prompt",
        "message": "Cannot execute because a node is missing the class_type property.",
        "details": "Node ID '#1'",
        "extra_info": {},
    }


def test_prompt_without_outputs(registry):
    result = validate_prompt({"1": {"class_type": "Constant", "inputs": {"value": 1}}}, registry)
    assert result.error == {
        "type": "prompt_no_outputs",
        "message": "Prompt has no outputs",
        "details": "",
        "extra_info": {},
    }


def test_required_input_missing(registry):
    prompt = graph()
    del prompt["4"]["inputs"]["seed"]
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert result.node_errors == {
        "4": {
            "errors": [
                {
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": "seed",
                    "extra_info": {"input_name": "seed"},
                }
            ],
            "dependent_outputs": ["5"],
            "class_type": "Sampler",
        }
    }
    assert result.error == {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "Required input is missing: seed",
        "extra_info": {},
    }


def test_missing_optional_input_is_fine(registry):
    assert "denoise" not in graph()["4"]["inputs"] and validate_prompt(graph(), registry).ok


def test_bad_linked_input(registry):
    result = validate_prompt(graph(model=["1", 0, 7]), registry)
    error = only_error(result, "4")
    assert error["type"] == "bad_linked_input"
    assert error["message"] == "Bad linked input, must be a length-2 list of [node_id, slot_index]"
    assert error["extra_info"]["received_value"] == ["1", 0, 7]
    assert error["extra_info"]["input_config"] == ["MODEL"]

    error = only_error(validate_prompt(graph(model=["99", 0]), registry), "4")
    assert (error["type"], error["details"]) == ("bad_linked_input", "model, node '#99' is not in the prompt")
    error = only_error(validate_prompt(graph(model=["1", 5]), registry), "4")
    assert error["details"] == "model, node '#1' (Loader) has no output 5"


def test_return_type_mismatch(registry):
    result = validate_prompt(graph(model=["1", 2]), registry)  # VAE into MODEL
    assert only_error(result, "4") == {
        "type": "return_type_mismatch",
        "message": "Return type mismatch between linked nodes",
        "details": "model, received_type(VAE) mismatch input_type(MODEL)",
        "extra_info": {
            "input_name": "model",
            "input_config": ["MODEL"],
            "received_type": "VAE",
            "linked_node": ["1", 2],
        },
    }


def test_type_sets_and_wildcard():
    assert types_match("LATENT", "LATENT")
    assert types_match("IMAGE,MASK", "MASK, LATENT")
    assert not types_match("IMAGE,MASK", "LATENT")
    assert types_match("*", "MODEL") and types_match("VAE", "*")


def test_invalid_input_type(registry):
    error = only_error(validate_prompt(graph(steps="many"), registry), "4")
    assert error == {
        "type": "invalid_input_type",
        "message": "Failed to convert an input value to a INT value",
        "details": "steps, many, invalid literal for int() with base 10: 'many'",
        "extra_info": {
            "input_name": "steps",
            "input_config": ["INT", {"default": 3, "min": 1, "max": 100}],
            "received_value": "many",
            "exception_message": "invalid literal for int() with base 10: 'many'",
        },
    }


def test_min_max(registry):
    error = only_error(validate_prompt(graph(steps=0), registry), "4")
    assert (error["type"], error["message"], error["details"]) == (
        "value_smaller_than_min",
        "Value 0 smaller than min of 1",
        "steps",
    )
    assert error["extra_info"]["received_value"] == 0
    error = only_error(validate_prompt(graph(cfg=100.5), registry), "4")
    assert (error["type"], error["message"]) == ("value_bigger_than_max", "Value 100.5 bigger than max of 100.0")


def test_value_not_in_list_with_dynamic_options(registry):
    prompt = graph()
    prompt["1"]["inputs"]["ckpt_name"] = "c.safetensors"
    error = only_error(validate_prompt(prompt, registry), "1")
    assert error == {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": "ckpt_name: 'c.safetensors' not in ['a.safetensors', 'b.safetensors']",
        "extra_info": {
            "input_name": "ckpt_name",
            "input_config": [["a.safetensors", "b.safetensors"], {"tooltip": "Checkpoint file."}],
            "received_value": "c.safetensors",
        },
    }
    stub_nodes.CHECKPOINTS.append("c.safetensors")  # the file appears on disk: the option list is re-read
    try:
        assert validate_prompt(prompt, registry).ok
    finally:
        stub_nodes.CHECKPOINTS.remove("c.safetensors")


def test_long_option_lists_are_not_echoed(registry):
    stub_nodes.CHECKPOINTS.extend(f"m{i}.safetensors" for i in range(30))
    try:
        prompt = graph()
        prompt["1"]["inputs"]["ckpt_name"] = "zzz"
        error = only_error(validate_prompt(prompt, registry), "1")
        assert error["details"] == "ckpt_name: 'zzz' not in (list of length 32)"
        assert error["extra_info"]["input_config"] is None
    finally:
        del stub_nodes.CHECKPOINTS[2:]


def test_custom_validation(registry):
    prompt = {
        "1": {"class_type": "Even", "inputs": {"value": 13}},  # over max=10 too: validate_inputs owns the check
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
    }
    assert only_error(validate_prompt(prompt, registry), "1") == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "value - 13 is odd",
        "extra_info": {"input_name": "value"},
    }
    prompt["1"]["inputs"]["value"] = 12
    assert validate_prompt(prompt, registry).ok


def test_dependency_cycle(registry):
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Add", "inputs": {"a": ["4", 0], "b": 1}},  # a self loop
        "5": {"class_type": "Collect", "inputs": {"value": ["4", 0]}},
    }
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert result.node_errors["1"] == {
        "errors": [
            {
                "type": "dependency_cycle",
                "message": "Dependency cycle detected",
                "details": "nodes #1, #2",
                "extra_info": {"cycle": ["1", "2"]},
            }
        ],
        "dependent_outputs": ["3"],
        "class_type": "Add",
    }
    assert result.node_errors["2"]["errors"][0]["type"] == "dependency_cycle"
    assert result.node_errors["4"]["errors"][0]["extra_info"] == {"cycle": ["4"]}
    assert set(result.node_errors) == {"1", "2", "4"}  # the outputs are invalid only because of their inputs


def test_only_valid_outputs_are_queued(registry):
    prompt = graph(steps=0)
    prompt["6"] = {"class_type": "Constant", "inputs": {"value": 7}}
    prompt["7"] = {"class_type": "Collect", "inputs": {"value": ["6", 0]}}
    prompt["8"] = {"class_type": "Collect", "inputs": {"value": ["4", 0]}}
    result = validate_prompt(prompt, registry)
    assert result.ok and result.error is None and result.outputs == ["7"]
    assert result.node_errors["4"]["dependent_outputs"] == ["5", "8"]
    assert list(result.node_errors) == ["4"]


def test_partial_execution_targets(registry):
    prompt = graph()
    prompt["6"] = {"class_type": "Constant", "inputs": {"value": 7}}
    prompt["7"] = {"class_type": "Collect", "inputs": {"value": ["6", 0]}}
    assert validate_prompt(prompt, registry).outputs == ["5", "7"]
    assert validate_prompt(prompt, registry, targets=["7"]).outputs == ["7"]


def test_wrapped_values_are_unwrapped(registry):
    prompt = graph(seed={"__value__": 42})
    result = validate_prompt(prompt, registry)
    assert result.ok and result.prompt["4"]["inputs"]["seed"] == 42
    assert prompt["4"]["inputs"]["seed"] == {"__value__": 42}  # the caller's prompt is untouched


def test_boolean_and_float_coercion(registry):
    prompt = {
        "1": {"class_type": "Flags", "inputs": {"image": "x.png", "enabled": 0, "scale": "2"}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
    }
    result = validate_prompt(prompt, registry)
    assert result.ok and result.prompt["1"]["inputs"] == {"image": "x.png", "enabled": False, "scale": 2.0}


# ---- hostile prompts: wrong types, deep nesting, huge graphs ----


def test_booleans_are_not_numbers_and_null_is_not_text(registry):
    for value in (True, False):
        error = only_error(validate_prompt(graph(steps=value), registry), "4")
        assert error["type"] == "invalid_input_type"
        assert error["details"] == f"steps, {value}, {str(value).lower()} is a boolean, not a number"
    prompt = graph()
    prompt["2"]["inputs"]["text"] = None
    error = only_error(validate_prompt(prompt, registry), "2")
    assert error["type"] == "invalid_input_type" and error["details"] == "text, None, null is not text"
    prompt["2"]["inputs"]["text"] = {"a": 1}
    assert only_error(validate_prompt(prompt, registry), "2")["details"] == "text, {'a': 1}, dict is not text"
    for cfg in (float("nan"), float("inf"), "-inf"):
        error = only_error(validate_prompt(graph(cfg=cfg), registry), "4")
        assert error["type"] == "invalid_input_type" and "is not a finite number" in error["details"]


@pytest.mark.parametrize("class_type", [["Add"], {"name": "Add"}, None, 5])
def test_class_type_that_is_not_a_string(registry, class_type):
    prompt = graph()
    prompt["3"]["class_type"] = class_type
    result = validate_prompt(prompt, registry)
    assert not result.ok and result.error["type"] == "invalid_prompt"
    assert result.error["message"].startswith("The class_type of node #3 is a ")
    assert result.error["message"].endswith("; expected a node type name such as 'KSampler'.")


def test_malformed_meta_and_targets(registry):
    prompt = graph()
    prompt["9"] = {"class_type": "Nope", "inputs": {}, "_meta": ["not", "an", "object"]}
    assert validate_prompt(prompt, registry).error["extra_info"]["node_title"] == "Nope"
    for targets in (5, "5", {"5": 1}, [True], [["5"]]):
        result = validate_prompt(graph(), registry, targets=targets)
        assert not result.ok and result.error["type"] == "invalid_prompt", targets
        assert result.error["message"].startswith("partial_execution_targets is ")
    assert validate_prompt(graph(), registry, targets=[5]).outputs == ["5"]  # integer ids, as old scripts send


def test_deeply_nested_input_is_refused_without_recursion(registry):
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    prompt = graph()
    prompt["2"]["inputs"]["text"] = {"__value__": deep}
    result = validate_prompt(prompt, registry)
    assert result.error == {
        "type": "invalid_prompt",
        "message": "The input 'text' of node #2 nests lists more than 32 levels deep.",
        "details": "Node ID '#2'",
        "extra_info": {},
    }


def chain(length: int, fault_at: int | None = None) -> dict:
    """Constant(0) -> Add -> Add -> ... -> Collect: `length` nodes in a line (one Add with b=99 if `fault_at`)."""
    prompt = {"0": {"class_type": "Constant", "inputs": {"value": 1}}}
    for i in range(1, length - 1):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 99 if i == fault_at else 1}}
    prompt[str(length - 1)] = {"class_type": "Collect", "inputs": {"value": [str(length - 2), 0]}}
    return prompt


def test_a_chain_of_5000_nodes_validates_in_well_under_a_second(registry):
    # A walk per node made this quadratic (46 s for 4,500 nodes); a recursive walk overflowed near 490 nodes.
    start = time.perf_counter()
    result = validate_prompt(chain(5000), registry)
    assert result.ok and result.outputs == ["4999"]
    start_faulty = time.perf_counter()
    faulty = validate_prompt(chain(5000, fault_at=1), registry)
    assert time.perf_counter() - start_faulty < 1.0 and start_faulty - start < 1.0
    assert list(faulty.node_errors) == ["1"] and faulty.node_errors["1"]["dependent_outputs"] == ["4999"]


def test_many_outputs_on_a_long_faulty_chain_stay_linear(registry):
    # 2,500 outputs all below a 2,500-node chain whose every node is faulty: a walk per output would visit
    # 6 million nodes and list 6 million dependent outputs; each list is cut at 20.
    prompt = chain(2500)
    for i in range(1, 2499):
        prompt[str(i)]["inputs"]["b"] = 99
    for i in range(2500, 5000):
        prompt[str(i)] = {"class_type": "Collect", "inputs": {"value": ["2498", 0]}}
    start = time.perf_counter()
    result = validate_prompt(prompt, registry)
    assert time.perf_counter() - start < 1.0
    assert not result.ok and len(result.node_errors) == 2498
    assert result.node_errors["1"]["dependent_outputs"] == ["2499", *[str(i) for i in range(2500, 2519)]]


def test_a_long_cycle_is_found_once_and_listed_briefly(registry):
    prompt = chain(3000)
    prompt["0"] = {"class_type": "Add", "inputs": {"a": ["2998", 0], "b": 1}}  # close the loop
    start = time.perf_counter()
    result = validate_prompt(prompt, registry)
    assert time.perf_counter() - start < 1.0
    error = result.node_errors["5"]["errors"][0]
    assert error["type"] == "dependency_cycle" and error["details"].endswith(" and 2979 more")
    assert len(error["extra_info"]["cycle"]) == 20 and len(result.node_errors) == 2999
