"""kill -9 at random moments: `atelier serve` (the embedded model) is killed TRIALS times while prompts run and
wait, and restarted each time; every other kill falls while SaveImage writes its batch (the moment its first PNG
appears), the others at a random moment. After every restart:

- no prompt is lost: every prompt the server accepted is in the queue or in the history;
- no half-written file: no ".tmp-*" left in output/, every PNG there decodes completely;
- no unknown output: every PNG in output/ is referenced by the history;
- the database passes `PRAGMA integrity_check` (checked while the server is dead, before the restart);
- the server starts every time.

The figures (kills, prompts, files, how many kills fell while a prompt was running) are printed: run with -s.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from atelier.generation import GenerationParams, api_graph
from tests.browser import free_port

pytestmark = pytest.mark.slow  # about 3 minutes on 2 CPU cores: ten starts of the server, the model loaded each time

TRIALS = 10
START_TIMEOUT_S = 120.0
KILL_AFTER_S = (0.5, 20.0)  # each kill falls at a random moment this long after the prompts were queued (one
# prompt takes 10-20 s on two busy CPU cores, the model loaded again after each start: kills fall in every phase)


def txt2img(seed: int) -> dict:
    """The classic graph on the embedded model: a batch of 8 at 64x64, 1 step, 8 PNGs saved."""
    params = GenerationParams("a red circle", seed=seed, steps=1, cfg=7.0, width=64, height=64, batch=8,
                              model="embedded.safetensors")
    return api_graph(params, filename_prefix="crash/run")


class Server:
    """`atelier serve` in a subprocess on a free 127.0.0.1 port, killed with SIGKILL, never asked to stop."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> float:
        """Start and wait until it answers; the seconds it took."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = (self.data_dir / "server.log").open("ab")
        command = [sys.executable, "-m", "atelier.cli", "serve", "--port", str(port), "--data-dir", str(self.data_dir)]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while True:
            try:
                self.get("/api/system_stats")
                return time.monotonic() - started
            except OSError:
                if self.process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                    tail = (self.data_dir / "server.log").read_text(errors="replace")[-3000:]
                    raise AssertionError(f"atelier serve did not start again: {tail}") from None
                time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: dict) -> object:
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())


def referenced_files(history: dict) -> set[str]:
    """subfolder/filename of every output file the history lists."""
    return {
        f"{ref['subfolder']}/{ref['filename']}".lstrip("/")
        for entry in history.values()
        for ui in entry["outputs"].values()
        for ref in ui.get("images", [])
        if ref.get("type") == "output"
    }


def check_outputs(output: Path, history: dict) -> int:
    """Assert no half file and no unknown file in output/; the number of PNGs there."""
    leftovers = [p for p in output.rglob("*") if p.is_file() and (p.name.startswith(".tmp-") or p.suffix == ".tmp")]
    assert leftovers == [], f"half-written files left: {leftovers}"
    pngs = sorted(p for p in output.rglob("*.png"))
    for png in pngs:
        with Image.open(png) as image:
            image.load()  # a truncated PNG raises here
    unknown = {p.relative_to(output).as_posix() for p in pngs} - referenced_files(history)
    assert unknown == set(), f"outputs the history does not reference: {sorted(unknown)}"
    return len(pngs)


def wait_for_png(output: Path, more_than: int, timeout_s: float = 90.0) -> None:
    end = time.monotonic() + timeout_s
    while len(list(output.rglob("*.png"))) <= more_than and time.monotonic() < end:
        time.sleep(0.001)


def test_kill_9_at_random_moments_loses_nothing(tmp_path):
    rng = random.Random(21)
    server = Server(tmp_path)
    accepted: list[str] = []
    figures = {"kills": 0, "killed_while_running": 0, "start_s": []}
    server.start()
    try:
        for trial in range(TRIALS):
            for _ in range(2):
                accepted.append(server.post("/api/prompt", {"prompt": txt2img(rng.randrange(10**6))})["prompt_id"])
            if trial % 2:  # at a random moment
                time.sleep(rng.uniform(*KILL_AFTER_S))
            else:  # while SaveImage writes its batch of 8: as soon as one more PNG appears
                wait_for_png(tmp_path / "output", more_than=len(list((tmp_path / "output").rglob("*.png"))))
            running = server.get("/api/queue")["queue_running"]
            server.kill()
            figures["kills"] += 1
            figures["killed_while_running"] += bool(running)

            with sqlite3.connect(tmp_path / "atelier.sqlite") as db:  # the server is dead: nobody else has it open
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

            figures["start_s"].append(round(server.start(), 1))
            history = server.get("/api/history?max_items=100000")
            queue = server.get("/api/queue")
            waiting = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
            lost = [p for p in accepted if p not in history and p not in waiting]
            assert lost == [], f"trial {trial}: prompts lost after kill -9: {lost}"
            files = check_outputs(tmp_path / "output", history)
        crashed = [e for e in history.values() if e["status"]["status_str"] == "error"]
        figures.update(
            prompts=len(accepted),
            finished=len(history),
            succeeded=len(history) - len(crashed),
            killed_during_save=sum(bool(e["outputs"]) for e in crashed),  # files recorded, prompt never ended
            pngs=files,
        )
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
    print(f"\ncrash figures: {json.dumps(figures)}")
    assert figures["killed_while_running"] > 0  # the kills did fall while the engine worked
