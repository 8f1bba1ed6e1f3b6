"""Atelier's workers as Ray actors (issue 13): a real local Ray instance on this CPU, two worker processes.

The local worker is a stub (tests/server/ray_stub.py: a few ms per part, can kill its own process), so what is
proved here is the pool: every part delivered exactly once, a batch whose worker dies re-run elsewhere once,
a batch that loses its worker twice marked failed with the reason, placement by loaded model, a worker added
while serving taking waiting work.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from atelier.server.scheduler import Part, Scheduler

ray = pytest.importorskip("ray", reason="Ray is the cluster extra: pip install atelier[cluster]")

from atelier.server.ray_workers import RayPool, WorkerLost  # noqa: E402
from tests.server.ray_stub import make_stub  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory):
    # Two CPUs for two single-CPU actors; the tests' own directory is where workers import tests.* from.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])}})
    yield
    ray.shutdown()


class Harness:
    """A scheduler, a pool serving it in a thread, and what reached the server: results, events, retries."""

    def __init__(self, workers: int = 2, batch_images: int = 1) -> None:
        self.scheduler = Scheduler(batch_images=batch_images)
        self.delivered: list[tuple[str, int, object]] = []  # (job, part index, result)
        self.events: list[tuple[int, object]] = []
        self.retries: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        self.pool = RayPool(make_stub, workers=workers, model_of=lambda b: b.parts[0].payload[0],
                            on_event=self._event, on_retry=lambda b, why: self.retries.append((b.number, why)))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.pool.serve, args=(self.scheduler, self._deliver, self.stop))
        self.thread.start()

    def _deliver(self, batch, results) -> None:
        with self.lock:
            self.delivered += [(p.job_id, p.index, r) for p, r in zip(batch.parts, results, strict=True)]

    def _event(self, batch, event) -> None:
        with self.lock:
            self.events.append((batch.number, event))

    def submit(self, owner: str, job_id: str, *payloads, merge: bool = False) -> None:
        """Parts of different jobs never share a batch unless `merge` (then: those of the same model)."""
        key = (lambda p: p[0]) if merge else (lambda p: (p[0], job_id))
        parts = [Part(job_id, i, merge_key=key(p), payload=p) for i, p in enumerate(payloads)]
        self.scheduler.submit(owner, job_id, parts)

    def wait(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.delivered) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.delivered) >= count, f"{len(self.delivered)} of {count} parts delivered in {timeout} s"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.pool.shutdown()


@pytest.fixture
def harness():
    made = []

    def make(**kw) -> Harness:
        made.append(Harness(**kw))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_every_part_of_three_learners_is_delivered_once_by_two_workers(harness):
    h = harness()
    for learner in ("ana", "bob", "chloé"):
        for j in range(3):
            h.submit(learner, f"{learner}-{j}", ("m", f"{learner}-{j}", 0.05, None))
    h.wait(9)
    time.sleep(0.3)  # nothing more may arrive
    assert sorted(job for job, _, _ in h.delivered) == sorted(f"{a}-{j}" for a in ("ana", "bob", "chloé")
                                                              for j in range(3))
    assert all(result.startswith(job) for job, _, result in h.delivered)
    pids = {result.split("@")[1] for _, _, result in h.delivered}
    assert len(pids) == 2, "both worker processes took work"
    assert all(not w["busy"] for w in h.pool.describe())
    assert sum(w["images_done"] for w in h.pool.describe()) == 9
    # Each batch's events came back to the server with it: one step per part.
    assert Counter(e[0] for _, e in h.events)["step"] == 9


def test_a_worker_killed_mid_batch_costs_no_job_and_sends_no_duplicate(harness, tmp_path):
    h = harness()
    flag = str(tmp_path / "died-once")
    h.submit("ana", "doomed", ("m", "doomed", 0.05, flag))  # its worker dies the first time
    for j in range(4):
        h.submit("bob", f"bob-{j}", ("m", f"bob-{j}", 0.05, None))
    h.wait(5)
    time.sleep(0.5)
    assert Counter(job for job, _, _ in h.delivered) == Counter({"doomed": 1, **{f"bob-{j}": 1 for j in range(4)}})
    [(_, why)] = h.retries
    assert why.startswith("worker ") and " lost: " in why
    # Ray restarted the dead actor: both workers serve again.
    h.submit("ana", "after", ("m", "after", 0.01, None), ("m", "after", 0.01, None))
    h.wait(7)


def test_a_job_whose_worker_dies_twice_fails_with_the_reason(harness):
    h = harness()
    h.submit("ana", "cursed", ("m", "cursed", 0.01, "always"))
    h.submit("bob", "fine", ("m", "fine", 0.01, None))
    h.wait(2, timeout=90)
    results = {job: result for job, _, result in h.delivered}
    assert isinstance(results["cursed"], WorkerLost)
    assert "lost twice" in str(results["cursed"])
    assert results["fine"].startswith("fine@")
    assert len(h.retries) == 1


def test_a_bad_part_is_the_batchs_fault_and_is_not_re_run(harness):
    h = harness(workers=1)
    h.submit("ana", "bad", ("m", "raise", 0.01, None))
    h.wait(1)
    [(_, _, result)] = h.delivered
    assert isinstance(result, ValueError) and h.retries == []


def test_batches_go_to_the_worker_that_has_their_model(harness):
    h = harness()
    h.submit("ana", "a0", ("A", "a0", 0.2, None))
    h.submit("bob", "b0", ("B", "b0", 0.2, None))
    h.wait(2)
    by_model = {result.split("@")[0][0]: result.split("@")[1] for _, _, result in h.delivered}
    for j in range(1, 4):
        h.submit("ana", f"a{j}", ("A", f"a{j}", 0.05, None))
        h.wait(1 + j * 2 - 1)
        h.submit("bob", f"b{j}", ("B", f"b{j}", 0.05, None))
        h.wait(2 + j * 2)
    for _, _, result in h.delivered:
        text, pid = result.split("@")
        assert pid == by_model[text[0]], f"{text} ran away from its model's worker"
    loaded = sorted(tuple(w["loaded"]) for w in h.pool.describe())
    assert loaded == [("A",), ("B",)]


def test_a_worker_added_while_serving_takes_waiting_work(harness):
    h = harness(workers=1)
    for j in range(12):
        h.submit("ana", f"a{j}", ("m", f"a{j}", 0.8, None))
    h.wait(1)
    h.pool.add_worker()  # 2-5 s to start: the first worker is not done with the 12 (10 s) by then
    h.wait(12)
    assert len({result.split("@")[1] for _, _, result in h.delivered}) == 2


def test_merged_parts_run_as_one_batch_on_one_worker(harness):
    h = harness(workers=1)
    h.scheduler.pause()  # all four wait, then go as one batch (the stub's batch_images is 4)
    for learner in ("ana", "bob", "chloé", "dev"):
        h.submit(learner, learner, ("m", learner, 0.01, None), merge=True)
    h.scheduler.resume()
    h.wait(4)
    assert len({number for number, _ in h.events}) == 1
    assert sorted(job for job, _, _ in h.delivered) == ["ana", "bob", "chloé", "dev"]
