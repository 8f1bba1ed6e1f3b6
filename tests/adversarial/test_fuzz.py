"""Property-based fuzz of POST /prompt (fuzz.py's bodies): whatever the graph, no 5xx, no traceback in the log,
every refusal a sentence, and no answer slower than 2 s. Bounded for CI: 200 examples, derandomized (the same
examples every run, so runs compare), about 5 s in all."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

hypothesis = pytest.importorskip("hypothesis")  # a test extra (pyproject); the corpus runs without it

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.adversarial.fuzz import prompt_body  # noqa: E402
from tests.adversarial.live import LiveServer, clean_refusal  # noqa: E402

MAX_SECONDS = 2.0
EXAMPLES = 200


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@settings(
    max_examples=EXAMPLES,
    deadline=None,  # the bound that matters is the server's answer time, checked below
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=prompt_body())
def test_no_prompt_graph_gets_a_5xx_or_a_slow_answer(live, body):
    since = len(live.log.records)
    reply = live.send("POST", "/api/prompt", json.dumps(body))
    assert reply.status < 500, reply.body[:300]
    assert reply.seconds < MAX_SECONDS, f"{reply.seconds:.2f} s"
    if reply.status != 200:
        assert clean_refusal(reply) is None, clean_refusal(reply)
    assert not live.tracebacks(since)
