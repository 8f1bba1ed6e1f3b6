"""The classroom scheduler without a model: turns, caps, splitting, batches, pause, expected waits, the worker loop,
and which prompts merge (server/merging.py)."""

from __future__ import annotations

import json
import threading
import time
import types

import pytest

from atelier.errors import InputError
from atelier.server.hub import Hub
from atelier.server.merging import ImageOf, merge_key, parts
from atelier.server.prompt_queue import PromptQueue
from atelier.server.runners import Runners
from atelier.server.scheduler import LOCAL_OWNER, Part, QueueFull, Scheduler, serve
from atelier.server.store import PromptRecord, PromptStore


def pieces(job_id: str, n: int = 1, key=None) -> list[Part]:
    return [Part(job_id, i, merge_key=key) for i in range(n)]


def drain(s: Scheduler) -> list[list[str]]:
    """Every batch until nothing waits, as lists of "job/part" names (each batch finished before the next)."""
    order = []
    while (batch := s.take()) is not None:
        order.append([f"{p.job_id}/{p.index}" for p in batch.parts])
        s.finish(batch)
    return order


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---- turns ----------------------------------------------------------------------------------------------------


def test_owners_take_turns_and_each_owner_keeps_their_order():
    s = Scheduler()
    for owner, job in [("ana", "a1"), ("ana", "a2"), ("ana", "a3"), ("bob", "b1"), ("bob", "b2"), ("cy", "c1")]:
        s.submit(owner, job, pieces(job))
    assert drain(s) == [["a1/0"], ["b1/0"], ["c1/0"], ["a2/0"], ["b2/0"], ["a3/0"]]


def test_one_owner_is_todays_fifo_by_queue_number():
    """Without classroom mode every job is LOCAL_OWNER's: the order is the queue number's, "front" (-n) first."""
    s = Scheduler()
    for job, number in [("p1", 1), ("p2", 2), ("front", -3), ("p4", 4), ("p2b", 2)]:
        s.submit(LOCAL_OWNER, job, pieces(job), order=number)
    assert [b[0] for b in drain(s)] == ["front/0", "p1/0", "p2/0", "p2b/0", "p4/0"]


def test_a_newcomer_waits_one_round_and_an_owner_who_left_rejoins_at_the_back():
    s = Scheduler()
    s.submit("ana", "a1", pieces("a1"))
    s.submit("ana", "a2", pieces("a2"))
    s.submit("bob", "b1", pieces("b1"))
    first = s.take()
    s.finish(first)
    s.submit("cy", "c1", pieces("c1"))  # arrives while bob is next: goes after bob and after ana's second turn
    assert drain(s) == [["b1/0"], ["a2/0"], ["c1/0"]]


def test_a_big_job_split_in_parts_interleaves_with_single_images():
    s = Scheduler()
    s.submit("ana", "grid", pieces("grid", 4))
    s.submit("bob", "b1", pieces("b1"))
    s.submit("cy", "c1", pieces("c1"))
    s.submit("bob", "b2", pieces("b2"))
    assert drain(s) == [["grid/0"], ["b1/0"], ["c1/0"], ["grid/1"], ["b2/0"], ["grid/2"], ["grid/3"]]


def test_a_job_completes_when_its_last_part_finishes():
    s = Scheduler()
    s.submit("ana", "grid", pieces("grid", 2))
    s.submit("bob", "b1", pieces("b1"))
    assert s.finish(s.take()) == []  # grid/0
    assert [j.job_id for j in s.finish(s.take())] == ["b1"]
    assert [j.job_id for j in s.finish(s.take())] == ["grid"]
    assert s.take() is None and s.jobs == {}


# ---- caps -----------------------------------------------------------------------------------------------------


def test_the_cap_counts_waiting_images_per_owner_and_says_so_in_both_languages():
    s = Scheduler(max_waiting_images=3)
    s.submit("ana", "a1", pieces("a1", 2))
    s.submit("bob", "b1", pieces("b1", 3))  # another learner has their own allowance
    with pytest.raises(QueueFull) as full:
        s.submit("ana", "a2", pieces("a2", 2))
    assert str(full.value) == (
        "You already have 2 images waiting and the limit is 3 per learner: wait for some to finish before asking "
        "for 2 more."
    )
    assert full.value.text("fr") == (
        "Vous avez déjà 2 images en attente et la limite est de 3 par personne : attendez que certaines soient "
        "terminées avant d'en demander 2 de plus."
    )
    assert "a2" not in s.jobs and s.waiting_images("ana") == 2
    s.submit("ana", "a3", pieces("a3", 1))  # up to the cap is fine
    s.finish(s.take())  # a1/0 runs: it no longer waits, so there is room for one more
    s.submit("ana", "a4", pieces("a4", 1))
    assert s.waiting_images("ana") == 3


def test_a_job_larger_than_the_cap_is_refused_with_its_own_sentence():
    s = Scheduler(max_waiting_images=4)
    with pytest.raises(QueueFull) as full:
        s.submit("ana", "grid", pieces("grid", 25))
    assert full.value.reason == "too_big"
    assert str(full.value) == (
        "This asks for 25 images and the limit is 4 waiting images per learner: ask for at most 4 at a time."
    )
    assert full.value.text("fr").startswith("Cette demande compte 25 images et la limite est de 4 images")


def test_bad_settings_and_duplicate_jobs_are_refused():
    with pytest.raises(InputError, match="batch size"):
        Scheduler(batch_images=0)
    with pytest.raises(InputError, match="cap"):
        Scheduler(max_waiting_images=0)
    s = Scheduler()
    s.submit("ana", "a1", pieces("a1"))
    with pytest.raises(InputError, match="already queued"):
        s.submit("bob", "a1", pieces("a1"))
    with pytest.raises(InputError, match="no parts"):
        s.submit("bob", "b1", [])


# ---- batches --------------------------------------------------------------------------------------------------


def test_parts_with_the_same_key_share_a_batch_in_turn_order():
    s = Scheduler(batch_images=4)
    s.submit("ana", "a1", pieces("a1", key="sd/512/20/euler"))
    s.submit("bob", "b1", pieces("b1", key="sd/512/30/euler"))  # other steps: another sampling call
    s.submit("cy", "c1", pieces("c1", key="sd/512/20/euler"))
    s.submit("dee", "d1", pieces("d1", key=None))  # a graph the batcher cannot merge: always alone
    s.submit("eve", "e1", pieces("e1", key="sd/512/20/euler"))
    batch = s.take()
    assert [p.job_id for p in batch.parts] == ["a1", "c1", "e1"] and batch.owners == ("ana", "cy", "eve")
    assert batch.merge_key == "sd/512/20/euler" and batch.images == 3
    s.finish(batch)
    assert drain(s) == [["b1/0"], ["d1/0"]]  # those who waited keep their place at the front


def test_a_batch_fills_round_by_round_up_to_its_size():
    """A split 4-image job and two single images: the singles get their seat before the job's second image."""
    s = Scheduler(batch_images=3)
    s.submit("ana", "grid", pieces("grid", 4, key="k"))
    s.submit("bob", "b1", pieces("b1", key="k"))
    s.submit("cy", "c1", pieces("c1", key="k"))
    assert drain(s) == [["grid/0", "b1/0", "c1/0"], ["grid/1", "grid/2", "grid/3"]]
    s.submit("ana", "grid2", pieces("grid2", 4, key="k"))
    s.submit("bob", "b2", pieces("b2", key="k"))
    assert drain(s) == [["grid2/0", "b2/0", "grid2/1"], ["grid2/2", "grid2/3"]]


def test_a_batch_never_takes_an_owners_part_out_of_order():
    s = Scheduler(batch_images=8)
    s.submit("ana", "a1", pieces("a1", key="k"))
    s.submit("bob", "b1", pieces("b1", key="other"))  # bob's next part does not match ...
    s.submit("bob", "b2", pieces("b2", key="k"))  # ... so his later one may not jump ahead of it
    assert drain(s) == [["a1/0"], ["b1/0"], ["b2/0"]]


def test_a_part_larger_than_the_batch_size_runs_alone():
    s = Scheduler(batch_images=2)
    s.submit("ana", "big", [Part("big", 0, images=5, merge_key="k", cost=5)])
    s.submit("bob", "b1", pieces("b1", key="k"))
    assert drain(s) == [["big/0"], ["b1/0"]]


def test_a_pixel_budget_makes_batches_of_large_images_smaller():
    """16 images at most, and no more pixels than 8 images of 512 x 512: 16 small ones, 8 at 512, 2 at 1024."""
    s = Scheduler(batch_images=16, batch_pixels=8 * 512 * 512)
    for size, key in ((128, "small"), (512, "sd"), (1024, "xl"), (4096, "huge")):
        for learner in range(20):
            s.submit(f"l{learner}", f"{key}{learner}", [Part(f"{key}{learner}", 0, merge_key=key, pixels=size * size)])
    sizes = []
    while (batch := s.take()) is not None:
        sizes.append((batch.merge_key, batch.images))
        s.finish(batch)
    assert sizes[:3] == [("small", 16), ("small", 4), ("sd", 8)]
    assert [n for key, n in sizes if key == "xl"] == [2] * 10
    assert [n for key, n in sizes if key == "huge"] == [1] * 20  # larger than the budget: one at a time, still
    assert s.positions() == {}


def test_parts_of_unknown_size_and_an_explicit_batch_size_ignore_the_pixel_budget():
    s = Scheduler(batch_images=4, batch_pixels=512 * 512)
    for learner in range(4):
        s.submit(f"l{learner}", f"j{learner}", pieces(f"j{learner}", key="k"))  # pixels 0: not known
    assert [len(b) for b in drain(s)] == [4]
    with pytest.raises(InputError, match="pixel budget"):
        Scheduler(batch_images=4, batch_pixels=0)


def test_merged_parts_carry_their_image_size():
    assert [p.pixels for p in parts("p1", lab_prompt(width=192, height=128, batch=3))] == [192 * 128] * 3


# ---- pause, cancel --------------------------------------------------------------------------------------------


def test_pause_hands_out_nothing_until_resume():
    s = Scheduler()
    s.submit("ana", "a1", pieces("a1"))
    s.pause()
    assert s.paused and s.take() is None and s.wait_take(0.01) is None
    s.resume()
    assert [p.job_id for p in s.take().parts] == ["a1"]


def test_cancel_drops_waiting_parts_and_a_removed_learners_jobs():
    s = Scheduler()
    s.submit("ana", "grid", pieces("grid", 3))
    s.submit("bob", "b1", pieces("b1"))
    s.submit("bob", "b2", pieces("b2"))
    running = s.take()  # grid/0
    assert s.cancel("grid") and not s.cancel("nothing")
    assert s.finish(running) == []  # the running part finishes, but its job was cancelled
    assert s.cancel_owner("bob") == ["b1", "b2"]
    assert s.take() is None and s.jobs == {}


# ---- expected waits -------------------------------------------------------------------------------------------


def test_expected_waits_follow_the_plan_and_the_recent_seconds_per_image():
    clock = FakeClock()
    s = Scheduler(clock=clock)
    s.submit("ana", "warmup", pieces("warmup"))
    assert s.position("warmup").starts_in is None  # nothing timed yet: no guess
    first = s.take()
    clock.now += 10.0
    s.finish(first)
    assert s.seconds_per_image() == 10.0

    s.submit("ana", "a1", pieces("a1"))
    s.submit("ana", "a2", pieces("a2", 2))
    s.submit("bob", "b1", pieces("b1"))
    positions = s.positions()
    assert positions["a1"].batches_ahead == 0 and (positions["a1"].starts_in, positions["a1"].done_in) == (0, 10)
    assert positions["b1"].batches_ahead == 1 and (positions["b1"].starts_in, positions["b1"].done_in) == (10, 20)
    assert positions["a2"].batches_ahead == 2 and (positions["a2"].starts_in, positions["a2"].done_in) == (20, 40)
    assert [j.job_id for j in s.waiting_jobs()] == ["a1", "b1", "a2"]
    assert [j.job_id for j in s.waiting_jobs("ana")] == ["a1", "a2"]

    running = s.take()  # a1, started now
    clock.now += 4.0  # ... and 6 s from its expected end
    assert s.position("b1") == s.positions()["b1"]
    assert s.position("b1").batches_ahead == 1 and s.position("b1").starts_in == 6.0
    assert s.position("a1") is None  # running: no longer waiting
    clock.now += 26.0  # a slow batch: 30 s for one image
    s.finish(running)
    assert s.seconds_per_image() == 20.0  # (10 + 30) / 2 images


def test_the_average_forgets_batches_beyond_its_window():
    clock = FakeClock()
    s = Scheduler(window=2, clock=clock)
    for seconds in (100.0, 2.0, 4.0):
        s.submit("ana", f"j{seconds}", pieces(f"j{seconds}"))
        batch = s.take()
        clock.now += seconds
        s.finish(batch)
    assert s.seconds_per_image() == 3.0


# ---- the worker loop ------------------------------------------------------------------------------------------


class EchoWorker:
    """A stand-in for a worker on this machine or another one: returns each part's name."""

    def __init__(self, batch_images: int, fail_on: str | None = None) -> None:
        self.batch_images = batch_images
        self.fail_on = fail_on
        self.batches: list[list[str]] = []

    def run(self, batch):
        self.batches.append([p.job_id for p in batch.parts])
        if self.fail_on in self.batches[-1]:
            raise RuntimeError("boom")
        return [f"image of {p.job_id}" for p in batch.parts]


def test_serve_feeds_a_worker_batches_and_delivers_every_result():
    s = Scheduler(batch_images=2)
    worker = EchoWorker(batch_images=2, fail_on="c1")
    for owner, job, key in [("ana", "a1", "k"), ("bob", "b1", "k"), ("cy", "c1", None), ("ana", "a2", None)]:
        s.submit(owner, job, pieces(job, key=key))
    delivered: dict[str, object] = {}
    stop = threading.Event()

    def deliver(batch, results):
        delivered.update({p.job_id: r for p, r in zip(batch.parts, results, strict=True)})
        if len(delivered) == 4:
            stop.set()

    thread = threading.Thread(target=serve, args=(s, worker, deliver, stop, 0.05), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert worker.batches == [["a1", "b1"], ["c1"], ["a2"]]
    assert delivered["a1"] == "image of a1" and delivered["a2"] == "image of a2"
    assert isinstance(delivered["c1"], RuntimeError)  # the failing batch did not stop the loop
    assert s.jobs == {} and s.running() == []


# ---- which prompts merge --------------------------------------------------------------------------------------


def lab_prompt(**changes) -> dict:
    """The lab's generate view (generation.api_graph), the graph most learners queue."""
    from atelier.generation import GenerationParams, api_graph

    base = {"prompt": "a red circle", "seed": 1, "steps": 20, "cfg": 7.5, "width": 128, "height": 128}
    return api_graph(GenerationParams(**{**base, **changes}), filename_prefix="lab")


def test_prompts_that_differ_only_in_what_each_member_brings_share_a_key():
    key = merge_key(lab_prompt())
    assert key is not None
    assert merge_key(lab_prompt(prompt="un carré bleu", negative="flou", seed=987654321, batch=3)) == key
    saved_elsewhere = lab_prompt()
    saved_elsewhere["9"]["inputs"]["filename_prefix"] = "ana/lab"
    assert merge_key(saved_elsewhere) == key
    previewed = lab_prompt()
    previewed["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    assert merge_key(previewed) == key
    renumbered = {f"n{k}": v for k, v in json.loads(json.dumps(lab_prompt())).items()}
    for node in renumbered.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][name] = [f"n{value[0]}", value[1]]
    assert merge_key(renumbered) == key  # node ids do not matter, only the wiring


@pytest.mark.parametrize(
    "change",
    [
        {"steps": 30},
        {"width": 192},
        {"height": 64},
        {"sampler": "euler_ancestral"},
        {"scheduler": "karras"},
        {"model": "sd15.safetensors"},
        {"denoise": 0.8},
        {"cfg": 5.0},
        {"clip_skip": 2},
    ],
    ids=lambda change: next(iter(change)),
)
def test_prompts_that_compute_differently_do_not_share_a_key(change):
    key = merge_key(lab_prompt(**change))
    assert key is not None and key != merge_key(lab_prompt())


def test_graphs_the_batcher_cannot_merge_run_alone():
    from atelier.generation import GenerationParams
    from atelier.server.lab_graphs import view_graph

    params = GenerationParams("a red circle", steps=20, width=128, height=128)
    assert merge_key(view_graph(params, "generate").prompt) is not None  # the lab's graph merges
    for view in ("filmstrip", "latent", "convergence"):
        assert merge_key(view_graph(params, view).prompt) is None, view
    assert merge_key(view_graph(params, "attention", words=["red"]).prompt) is None
    assert merge_key(lab_prompt(cfg=1.0)) is None  # CFG 1 samples a lone image as a batch of one
    img2img = lab_prompt()
    img2img["11"] = {"class_type": "LoadImage", "inputs": {"image": "cat.png"}}
    img2img["5"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["4", 2]}}
    assert merge_key(img2img) is None
    advanced = lab_prompt()
    advanced["3"]["class_type"] = "KSamplerAdvanced"
    assert merge_key(advanced) is None
    linked_seed = lab_prompt()
    linked_seed["3"]["inputs"]["seed"] = ["30", 0]
    linked_seed["30"] = {"class_type": "PrimitiveInt", "inputs": {"value": 3}}
    assert merge_key(linked_seed) is None
    extra = lab_prompt()
    extra["20"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}  # a second output
    assert merge_key(extra) is None
    other_vae = lab_prompt()
    other_vae["30"] = {"class_type": "VAELoader", "inputs": {"vae_name": "other.safetensors"}}
    other_vae["8"]["inputs"]["vae"] = ["30", 0]
    assert merge_key(other_vae) is None
    assert merge_key({"1": {"class_type": "KSampler"}}) is None and merge_key([]) is None


def test_a_prompt_is_cut_into_one_part_per_image_when_it_can_merge():
    cut = parts("p1", lab_prompt(batch=3))
    assert [(p.job_id, p.index, p.images) for p in cut] == [("p1", 0, 1), ("p1", 1, 1), ("p1", 2, 1)]
    assert [p.payload for p in cut] == [ImageOf("p1", i, 3) for i in range(3)]
    assert {p.merge_key for p in cut} == {merge_key(lab_prompt())}
    [whole] = parts("p2", lab_prompt(batch=3, cfg=1.0))  # CFG 1: one part of three images, alone
    assert (whole.images, whole.merge_key, whole.payload) == (3, None, ImageOf("p2", 0, 1))
    from atelier.generation import GenerationParams
    from atelier.server.lab_graphs import view_graph

    [strip] = parts("p3", view_graph(GenerationParams("x"), "filmstrip").prompt)
    assert (strip.images, strip.merge_key) == (1, None)


def test_learners_with_the_same_settings_share_batches_through_the_scheduler():
    s = Scheduler(batch_images=4)
    s.submit("ana", "a", parts("a", lab_prompt(prompt="a red circle", seed=1)))
    s.submit("bob", "b", parts("b", lab_prompt(prompt="a blue square", seed=2, steps=30)))
    s.submit("cy", "c", parts("c", lab_prompt(prompt="un triangle", seed=3, batch=2)))
    s.submit("dee", "d", parts("d", lab_prompt(prompt="a star", seed=4)))
    assert drain(s) == [["a/0", "c/0", "d/0", "c/1"], ["b/0"]]


# ---- the prompt queue's hook ----------------------------------------------------------------------------------


class RecordingExecutor:
    """Runs nothing: records the order of the prompts it is given."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def execute(self, prompt, outputs, listener, extra_data):
        self.order.append(extra_data["name"])
        return types.SimpleNamespace(status="success", ui={})

    def interrupt(self) -> None:
        pass


def run_queue(tmp_path, submissions, scheduler=None):
    """Queue (owner, name) prompts while the worker waits, then let it run them all; the names in run order."""
    executor = RecordingExecutor()
    queue = PromptQueue(
        executor, PromptStore(tmp_path / "queue.db"), Hub(), scheduler, owner_of=lambda rec: rec.extra_data["owner"]
    )
    done = threading.Semaphore(0)
    queue.on_finished = lambda rec: done.release()
    for owner, name in submissions:
        number = queue.next_number()
        queue.put(PromptRecord(f"id-{name}", number, lab_prompt(), {"owner": owner, "name": name}, ["9"]))
    queue.start()
    queue.resume()
    try:
        assert all(done.acquire(timeout=10) for _ in submissions)
    finally:
        queue.stop()
    return executor.order


SUBMISSIONS = [("ana", "a1"), ("ana", "a2"), ("ana", "a3"), ("bob", "b1"), ("bob", "b2")]


def test_without_a_scheduler_the_queue_is_todays_fifo(tmp_path):
    assert run_queue(tmp_path, SUBMISSIONS) == ["a1", "a2", "a3", "b1", "b2"]


def test_with_a_scheduler_the_queue_takes_learners_in_turn(tmp_path):
    scheduler = Scheduler()
    scheduler.pause()  # nothing starts before everything is queued
    assert run_queue(tmp_path, SUBMISSIONS, scheduler) == ["a1", "b1", "a2", "b2", "a3"]
    assert scheduler.jobs == {} and scheduler.seconds_per_image() is not None


def test_the_cap_refuses_a_prompt_before_it_is_stored(tmp_path):
    store = PromptStore(tmp_path / "queue.db")
    queue = PromptQueue(
        RecordingExecutor(), store, Hub(), Scheduler(max_waiting_images=1), owner_of=lambda rec: rec.extra_data["owner"]
    )
    queue.put(PromptRecord("p1", queue.next_number(), lab_prompt(), {"owner": "ana"}, ["9"]))
    with pytest.raises(QueueFull):
        queue.put(PromptRecord("p2", queue.next_number(), lab_prompt(batch=2), {"owner": "ana"}, ["9"]))
    assert [r.prompt_id for r in queue.pending] == ["p1"] and [r.prompt_id for r in store.recover()] == ["p1"]
    assert queue.cancel(["p1"]) == ["p1"] and queue.scheduler.jobs == {}


class TwoAtOnce:
    """A worker of two slots (a Ray pool of two, without Ray): each batch waits until the other one runs too."""

    batch_images = 1
    slots = 2

    def __init__(self, run_graph) -> None:
        self.run_graph = run_graph
        self.both = threading.Barrier(2, timeout=10)

    def run(self, batch):
        self.both.wait()  # a BrokenBarrierError here: the queue never had two batches in flight
        (part,) = batch.parts
        return [self.run_graph(part.job_id)]


def test_a_worker_of_two_slots_gets_two_batches_at_once_started_in_the_schedulers_turns(tmp_path):
    scheduler = Scheduler()
    scheduler.pause()
    executor = RecordingExecutor()
    queue = PromptQueue(
        executor, PromptStore(tmp_path / "queue.db"), Hub(), scheduler, owner_of=lambda rec: rec.extra_data["owner"]
    )
    queue.worker = TwoAtOnce(queue.run_graph)
    started: list[str] = []
    queue.on_batch = lambda batch: started.append(batch.parts[0].job_id.removeprefix("id-"))
    done = threading.Semaphore(0)
    queue.on_finished = lambda rec: done.release()
    for owner, name in SUBMISSIONS[:4]:  # a1 a2 a3 b1: ana's three, bob's one
        queue.put(PromptRecord(f"id-{name}", queue.next_number(), lab_prompt(), {"owner": owner, "name": name}, ["9"]))
    queue.start()
    queue.resume()
    try:
        assert all(done.acquire(timeout=20) for _ in range(4))
    finally:
        queue.stop()
    assert started == ["a1", "b1", "a2", "a3"]  # the turns, as with one slot; two of them run at a time
    assert sorted(executor.order) == ["a1", "a2", "a3", "b1"] and queue.running_batches() == []
    assert [r.state for r in queue.store.select("1 = 1", ())] == ["success"] * 4


class ThreadNames:
    """A one-slot worker that notes the thread each batch runs on."""

    batch_images = 1
    slots = 1

    def __init__(self, run_graph) -> None:
        self.run_graph = run_graph
        self.threads: list[str] = []

    def run(self, batch):
        self.threads.append(threading.current_thread().name)
        (part,) = batch.parts
        return [self.run_graph(part.job_id)]


def test_one_slot_runs_every_batch_on_the_same_runner_thread(tmp_path):
    # cuDNN's autotuning cache is per thread: a new thread per batch re-timed every VAE convolution on a GPU.
    queue = PromptQueue(
        RecordingExecutor(), PromptStore(tmp_path / "queue.db"), Hub(), owner_of=lambda rec: rec.extra_data["owner"]
    )
    queue.worker = ThreadNames(queue.run_graph)
    done = threading.Semaphore(0)
    queue.on_finished = lambda rec: done.release()
    queue.start()
    try:
        for owner, name in SUBMISSIONS[:4]:
            queue.put(PromptRecord(f"id-{name}", queue.next_number(), lab_prompt(), {"owner": owner}, ["9"]))
            assert done.acquire(timeout=20)
    finally:
        queue.stop()
    assert len(queue.worker.threads) == 4 and len(set(queue.worker.threads)) == 1


def test_runners_reuse_an_idle_thread_and_start_one_only_when_all_are_busy():
    runners, names = Runners("t"), []
    release = threading.Event()
    runners.submit(lambda: names.append(threading.current_thread().name))
    assert runners.join(5)
    runners.submit(lambda: (names.append(threading.current_thread().name), release.wait(5)))
    runners.submit(lambda: (names.append(threading.current_thread().name), release.set()))  # must not wait for it
    assert runners.join(5) and release.is_set()
    assert names[0] == names[1] or names[0] == names[2]  # the idle thread took the next task
    assert len(set(names)) == 2  # a second thread only while the first was busy
    runners.submit(lambda: 1 / 0)  # a failing task is logged; the runner takes the next one
    runners.submit(lambda: names.append("after"))
    assert runners.join(5) and names[-1] == "after"


def run_merged_pair(tmp_path, overlap: bool, ran, delivered) -> PromptQueue:
    """Two one-image prompts (a1, then b1) through a queue whose batches all count as merged; ran(job id) is called
    as each batch starts on the worker, delivered(job id) before each is delivered. Both must end successfully."""
    queue = PromptQueue(
        RecordingExecutor(), PromptStore(tmp_path / "queue.db"), Hub(), owner_of=lambda rec: rec.extra_data["owner"]
    )
    queue.overlap_delivery = overlap
    queue.worker = ThreadNames(queue.run_graph)
    queue.merged_if = lambda batch: True
    run, deliver = queue.worker.run, queue._deliver_alone  # (a RecordingExecutor result is delivered as a lone one)
    queue.worker.run = lambda batch: (ran(batch.parts[0].job_id), run(batch))[1]
    queue._deliver_merged = lambda batch, results: (delivered(batch.parts[0].job_id),
                                                    deliver(batch.parts[0].job_id, results[0]))  # fmt: skip
    done = threading.Semaphore(0)
    queue.on_finished = lambda rec: done.release()
    for name in ("a1", "b1"):
        queue.put(PromptRecord(f"id-{name}", queue.next_number(), lab_prompt(), {"owner": name[0], "name": name},
                               ["9"]))  # fmt: skip
    queue.start()
    try:
        assert all(done.acquire(timeout=20) for _ in range(2))
    finally:
        queue.stop()
    assert [r.state for r in queue.store.select("1 = 1", ())] == ["success"] * 2
    return queue


def test_a_merged_batch_gives_its_slot_back_before_its_images_are_delivered(tmp_path):
    """While batch 1's images are still being saved (its delivery held here), batch 2 already runs on the worker:
    the GPU does not wait for PNG compression."""
    second_ran, held = threading.Event(), []

    def delivered(job_id: str) -> None:
        if job_id == "id-a1":
            held.append(second_ran.wait(10))  # False: batch 2 never ran while batch 1 was being delivered

    run_merged_pair(tmp_path, True, lambda job_id: job_id == "id-b1" and second_ran.set(), delivered)
    assert held == [True]


def test_without_overlap_the_next_batch_waits_for_the_delivery(tmp_path):
    events: list[str] = []

    def delivered(job_id: str) -> None:
        time.sleep(0.2)
        events.append("delivered " + job_id)

    run_merged_pair(tmp_path, False, lambda job_id: events.append("ran " + job_id), delivered)
    assert events == ["ran id-a1", "delivered id-a1", "ran id-b1", "delivered id-b1"]


@pytest.mark.parametrize(("device", "limits"), [("cuda:0", (16, 8 * 512 * 512)), ("cpu", (4, None))])
def test_the_servers_default_batch_limits_follow_the_device(device, limits):
    from atelier.server.app import default_batch_limits

    loader = types.SimpleNamespace(env=types.SimpleNamespace(device=device))
    registry = types.SimpleNamespace(get=lambda name: loader)
    assert default_batch_limits(registry) == limits
