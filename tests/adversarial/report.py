"""The figures of docs/hardening.md, measured afresh: python -m tests.adversarial.report [--write docs/hardening.md]

Three measurements on a live server with the stub nodes (no weights, about 10 s on a laptop CPU):
1. the hostile corpus (corpus.py): per family, attempts, clean refusals (4xx, one sentence, no traceback in the
   log, the server answering after) and failures;
2. the fuzz of POST /prompt (fuzz.py, 200 derandomized examples: the same bodies every run of the same code):
   answers by kind, 5xx, answers over 2 s, the slowest answer;
3. the event loop: pings from another process, every 10 ms, while three 5,000-node graphs are validated.
Counts are the same from run to run unless the server changed; times vary with the machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tests.adversarial.corpus import CORPUS, FAMILIES, chain
from tests.adversarial.live import PINGER, LiveServer, attempt

FUZZ_EXAMPLES = 200
SLOW_SECONDS = 2.0


def run_corpus(live: LiveServer) -> tuple[list[list], list[str]]:
    """Rows (family, attempts, clean, failures, of which another branch's) and one line per failure."""
    counts: dict[str, collections.Counter] = {family: collections.Counter() for family in FAMILIES}
    failures = []
    for case in CORPUS:
        outcome = attempt(live, case.method, case.path, case.body, case.headers)
        tally = counts[case.family]
        tally["attempts"] += 1
        if outcome.problem is None:
            tally["clean"] += 1
        else:
            tally["failed"] += 1
            tally["owned"] += case.owner is not None
            owner = f" ({case.owner}'s part)" if case.owner else ""
            failures.append(f"`{case.method} {case.path[:60]}` {case.id}{owner}: {outcome.problem[:120]}")
    rows = [[f, c["attempts"], c["clean"], c["failed"], c["owned"]] for f, c in counts.items()]
    total = [sum(row[i] for row in rows) for i in range(1, 5)]
    return [*rows, ["**all**", *total]], failures


def run_fuzz(live: LiveServer) -> dict | None:
    """Kinds of answer to the fuzz's bodies, or None without hypothesis."""
    try:
        from hypothesis import HealthCheck, given, settings

        from tests.adversarial.fuzz import prompt_body
    except ImportError:
        return None
    kinds: collections.Counter = collections.Counter()
    seconds: list[float] = []

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=prompt_body())
    def send(body: object) -> None:
        since = len(live.log.records)
        reply = live.send("POST", "/api/prompt", json.dumps(body))
        seconds.append(reply.seconds)
        if reply.status >= 500 or live.tracebacks(since):
            kinds["5xx or traceback"] += 1
        elif reply.status == 200:
            kinds["accepted (queued and run)"] += 1
        else:
            error = reply.json().get("error") if reply.content_type == "application/json" else None
            kinds[f"refused: {error.get('type') if isinstance(error, dict) else reply.status}"] += 1

    send()
    return {"kinds": kinds, "slow": sum(s > SLOW_SECONDS for s in seconds), "slowest": max(seconds), "n": len(seconds)}


def run_pings(live: LiveServer, folder: Path) -> dict:
    """Worst ping from another process while three 5,000-node graphs are validated (each refused: width 1000)."""
    stop = folder / "stop-pinging"
    proc = subprocess.Popen([sys.executable, "-c", PINGER, str(live.port), str(stop)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    body = json.dumps({"prompt": chain(5000, width=1000)})
    began = time.monotonic()
    posts = [live.send("POST", "/api/prompt", body) for _ in range(3)]
    ended = time.monotonic()
    stop.touch()
    out, _ = proc.communicate(timeout=30)
    latencies = [latency for start, latency in json.loads(out) if began <= start <= ended]
    return {
        "statuses": sorted({p.status for p in posts}),
        "post_seconds": max(p.seconds for p in posts),
        "pings": len(latencies),
        "worst_ms": 1000 * max(latencies, default=0.0),
    }


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)])


def report() -> str:
    with tempfile.TemporaryDirectory() as folder, LiveServer(Path(folder) / "data") as live:
        pings = run_pings(live, Path(folder))  # first, on a quiet server (the fuzz leaves prompts running)
        corpus, failures = run_corpus(live)
        fuzz = run_fuzz(live)
    parts = [
        "# Hardening: what one request can do to a shared server",
        "",
        "Issue 21 found requests that stalled, poisoned or took over the one Atelier server a room shares. Each is "
        "now a regression test in `tests/adversarial/`; this page gives their figures, written by "
        "`python -m tests.adversarial.report --write docs/hardening.md` (about 10 s, stub nodes, no weights), so "
        "that runs can be compared. Counts change only when the server does; times depend on the machine.",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, Python {platform.python_version()}.",
        "",
        "## The hostile corpus",
        "",
        f"{len(CORPUS)} requests over every route (`tests/adversarial/corpus.py`). A clean refusal is a 4xx whose "
        'body is one sentence (`{"error": ...}`, ComfyUI\'s `{"error": {"message": ...}}` or plain text), '
        "with no traceback in the server's log and the server answering the next request. A failure owned by "
        "another branch is counted in the last column (those tests are xfail until it lands).",
        "",
        table(["family", "attempts", "clean refusals", "failures", "of which another branch's"], corpus),
        "",
    ]
    if failures:
        parts += ["Failures:", "", *(f"- {line}" for line in failures), ""]
    parts += [
        "Before this work (main at d581b23, the corpus as it was then: 385 requests): 266 clean refusals and "
        "119 failures. The JSON "
        'routes took NaN, Infinity and 1e400 and ignored or 500\'d the rest (86); `"number": "Infinity"` '
        "was queued and made /queue invalid JSON, after which every later case failed its check that the server "
        "still answers; settings stored NaN, Infinity and 3 MB values (6); the lab's /workflow answered 500 to "
        "five bodies; a lying Content-Length held the connection until the client gave up.",
        "",
    ]
    parts += ["## Fuzz of POST /prompt", ""]
    if fuzz is None:
        parts += ["Not run: hypothesis is not installed (it is a test extra).", ""]
    else:
        rows = [[kind, count] for kind, count in sorted(fuzz["kinds"].items(), key=lambda kv: (-kv[1], kv[0]))]
        parts += [
            f"{fuzz['n']} bodies from `tests/adversarial/fuzz.py` (derandomized: the same bodies every run of the "
            "same code). "
            f"Answers over {SLOW_SECONDS:g} s: {fuzz['slow']}; the slowest took {fuzz['slowest'] * 1000:.0f} ms.",
            "",
            table(["answer", "bodies"], rows),
            "",
        ]
    parts += [
        "## The event loop while a 5,000-node graph is validated",
        "",
        f"Three POSTs of a 5,000-node chain (each refused with status {pings['statuses']}, the slowest in "
        f"{pings['post_seconds']:.2f} s), while another process sends GET /api/features every 10 ms: "
        f"{pings['pings']} pings, the worst answered in {pings['worst_ms']:.0f} ms (the test's bound: 100 ms). "
        "Validation runs in a worker thread and the garbage collector no longer walks start-up's objects (a full "
        "collection took 100-120 ms with torch imported). Measured once with validation put back on the loop, "
        "the worst ping was 194 ms. The pings run first, on a quiet server: in this one process the fuzz leaves "
        "hypothesis's objects and its accepted prompts behind.",
        "",
    ]
    prose = (part if part.startswith(("|", "#", "- ")) else textwrap.fill(part, 116) for part in parts)
    return "\n".join(prose)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the report to this file instead of printing it")
    args = parser.parse_args()
    text = report()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
