"""The hostile corpus (corpus.py) against one live server: each request refused in one sentence, no traceback in
the log, the server answering after each; plus what the corpus itself must be (large, over every route)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier.server.app import create_app
from atelier.server.files import DataDir, OutputFiles
from tests.adversarial.corpus import CORPUS, Case, chain, good_prompt
from tests.adversarial.live import LiveServer, attempt
from tests.server.stub_nodes import stub_registry


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("adversarial")) as running:
        yield running


def marked(case: Case) -> object:
    marks = [pytest.mark.xfail(reason=case.owner, strict=False)] if case.owner else []
    return pytest.param(case, id=case.id, marks=marks)


def test_the_corpus_prompt_is_sound(live):
    # Most prompt cases are this prompt with one thing broken: it must itself be accepted and run.
    reply = live.send("POST", "/api/prompt", {"prompt": good_prompt(), "client_id": "adversary"})
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("case", [marked(case) for case in CORPUS])
def test_a_hostile_request_is_refused_in_one_sentence(live, case):
    outcome = attempt(live, case.method, case.path, case.body, case.headers)
    assert outcome.problem is None, outcome.problem


def test_long_graphs_are_served_not_refused(live):
    # 490 linked nodes overflowed schema.py's recursion (500); a 1,000-node chain that of workflow._depths.
    reply = live.send("POST", "/api/prompt", {"prompt": chain(600), "client_id": "adversary"})
    assert reply.status == 200, reply.body
    reply = live.send("POST", "/atelier/lab/workflow", {"prompt": chain(1000)})
    assert reply.status == 200, reply.body
    nodes = reply.json()["workflow"]["nodes"]
    assert len(nodes) == 1000 and max(n["pos"][0] for n in nodes) == 50 + 380 * 999  # one column per link


def _route_patterns(data_dir: Path) -> list[tuple[str, re.Pattern]]:
    """Each route's path (the bare one; /api/... mounts the same handlers) as a regular expression."""
    app = create_app(stub_registry(OutputFiles(DataDir(data_dir))), data_dir, static_root=None)
    patterns = {}
    for route in app.router.routes():
        canonical = route.resource.canonical
        if canonical.startswith("/api/"):
            continue  # the same handlers as the bare paths
        regex = re.sub(r"\{path\}", ".+", re.escape(canonical).replace(r"\{", "{").replace(r"\}", "}"))
        patterns[canonical] = re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", regex) + "$")
    return sorted(patterns.items())


def test_the_corpus_is_large_and_reaches_every_route(tmp_path):
    assert len(CORPUS) >= 150
    assert len({case.id for case in CORPUS}) == len(CORPUS)
    paths = {re.sub(r"^/api(?=/)", "", case.path.split("?")[0]) for case in CORPUS}
    unreached = [
        canonical for canonical, pattern in _route_patterns(tmp_path) if not any(pattern.match(p) for p in paths)
    ]
    assert not unreached, f"no hostile request for {unreached}"
