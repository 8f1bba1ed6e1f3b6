"""strict_json: what the server decodes from a request and writes back (RFC 8259 JSON, bounded)."""

from __future__ import annotations

import json

import pytest

from atelier.server.strict_json import (
    MAX_DEPTH,
    BadJSON,
    dumps,
    dumps_chunked,
    dumps_finite,
    json_kind,
    loads,
    loads_lenient,
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"a": NaN}', "holds NaN, which is not JSON; expected a finite number."),
        ("[Infinity]", "holds Infinity, which is not JSON"),
        ("-Infinity", "holds -Infinity, which is not JSON"),
        ('{"n": 1e400}', "holds the number 1e400, too large for a float; expected a finite number."),
        ("[-2.5e308]", "holds the number -2.5e308, too large"),
        ("[" * 100_000 + "]" * 100_000, "nests arrays and objects too deeply; the most is 64 levels."),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nests arrays and objects more than 64 levels deep."),
        ('{"a": ', "is not valid JSON; expected a JSON value."),
        (b'{"a": "\xff"}', "is not valid JSON; expected a JSON value."),
        ("[" + "9" * 5000 + "]", "is not valid JSON; expected a JSON value."),
    ],
)
def test_loads_refuses_what_json_does_not_allow_in_one_sentence(text, words):
    with pytest.raises(BadJSON) as refused:
        loads(text, "request body")
    assert str(refused.value).startswith("The request body ") and str(refused.value).count(". ") == 0
    assert words in str(refused.value) and refused.value.status == 400


def test_loads_keeps_what_json_allows():
    text = '{"a": [1, -2.5, 1e300, "NaN", true, null, {"b": {}}], "é": "\\u00e9"}'
    assert loads(text) == json.loads(text)
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(deepest) == json.loads(deepest)
    with pytest.raises(BadJSON) as refused:
        loads("{", "setting value", "an object of setting ids and values")
    assert str(refused.value) == "The setting value is not valid JSON; expected an object of setting ids and values."
    assert refused.value.details == "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"


def test_what_goes_out_is_strict_and_what_was_stored_is_read_leniently():
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    assert (
        dumps_finite({"x": [float("nan"), float("-inf"), 1.5], "y": (2.0,)}) == '{"x": [null, null, 1.5], "y": [2.0]}'
    )
    assert loads_lenient('{"a": NaN, "b": [Infinity, -Infinity, 1e999, 2.5]}') == {
        "a": None,
        "b": [None, None, None, 2.5],
    }


def test_dumps_chunked_writes_what_dumps_writes():
    value = {"jobs": [{"id": "a", "n": [1, 2, {"x": None}]}, {"id": "é", "ok": True}], "pagination": {"total": 2}}
    for levels in range(5):
        assert json.loads(dumps_chunked(value, levels)) == value
    assert dumps_chunked(value, 0) == dumps(value)
    assert dumps_chunked({1: "int key"}) == '{"1": "int key"}'  # not every key is text: written whole


@pytest.mark.parametrize(
    ("value", "kind"),
    [({}, "an object"), ([], "an array"), ("", "a string"), (True, "a boolean"), (None, "null"), (1.5, "a number")],
)
def test_json_kind(value, kind):
    assert json_kind(value) == kind
