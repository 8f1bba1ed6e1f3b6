"""A class of simulated learners against a real `atelier serve --classroom` process: nothing lost, nobody else's
messages, fair turns, and what batching across learners buys.

    .venv/bin/python benchmarks/classroom.py                                  # 30 learners, 600 s, batching off then on
    .venv/bin/python benchmarks/classroom.py --learners 10 --duration 90 --json docs/benchmarks/classroom-cpu-short.json
    .venv/bin/python benchmarks/classroom.py --sd15 --size 512 --steps 20     # GPU: random SD1.5-size weights
    .venv/bin/python benchmarks/classroom.py --ray --workers 1,2 --threads 1  # in-process, then 1 and 2 Ray workers

For each `--batching` setting (off: --batch-size 1; on: the server's default for its device, or --batch-size N)
(or, with `--ray --workers 1,2`: the in-process worker, then `atelier serve --ray --workers 1`, then 2: Ray
CPU workers of a local Ray instance, 1 torch thread each, the server's default batch size throughout)
the script starts a fresh server on 127.0.0.1 with its own data folder, and N learners, each with its own cookie
jar (they join with the class code and a name, as in a browser) and its own WebSocket. Each learner keeps
`--outstanding` prompts in flight: when one finishes, it asks for the next (the same settings for everybody,
its own prompt text and seed, so the server may merge them), until `--duration` seconds have passed; then the
queue drains (at most `--drain` seconds) and everything is counted:

- submitted, finished, failed, refused (429: the per-learner cap), unfinished (still queued or running when
  the drain ended), lost (submitted, and the server has it nowhere: not finished, not failed, not in its queue:
  must be 0), duplicated (a prompt that finished twice, or an output file
  that two prompts name: 0);
- wrong deliveries: WebSocket messages (text or preview frames) about a prompt of another learner (must be 0);
- wait: seconds from POST /prompt's answer to the prompt's execution_start (p50, p95), and to its end;
- images per learner and Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all got the same;
- images per second over the run; the server's resident memory (VmRSS of its process) every `--rss-every` s;
- with --ray: each setting's images per second side by side, the speed-up of N workers over 1, and what Ray
  costs per image against the in-process worker, two ways: from the throughputs, 1/(images per second with 1
  Ray worker) - 1/(in-process), the same one CPU thread sampling in both (noisy on a shared machine); and
  measured per batch, the seconds around the actor's own run (the server's log: pickled prompts, the stream of
  step events, the images coming back, the refresh of what the actor holds).

Every loop is bounded by the clock: the script ends by itself. The JSON (with the machine's load average at
the start and end: this machine may be shared) goes to --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atelier.generation import GenerationParams, api_graph  # noqa: E402

WORDS = ["red", "blue", "green", "yellow", "circle", "square", "star", "house", "sun", "tree", "moon", "boat"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def jain(counts: list[int]) -> float | None:
    """Jain's fairness index (Jain, Chiu and Hawe 1984): (sum x)^2 / (n * sum x^2), 1/n .. 1."""
    squares = sum(c * c for c in counts)
    return (sum(counts) ** 2) / (len(counts) * squares) if squares else None


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---- the server process ----


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    join_code: str
    instructor: str
    data: Path
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_server(
    data: Path,
    batch_size: int | None,
    max_waiting: int,
    threads: int | None = None,
    timeout: float = 300.0,
    ray_workers: int | None = None,
    compile: str | None = None,
) -> Server:
    """`python -m atelier.cli serve --classroom` on 127.0.0.1 (with `--ray --workers N` when ray_workers); waits for
    its join code, printed once the server (and its Ray workers) are up."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "atelier.cli",
        "serve",
        "--classroom",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--max-waiting",
        str(max_waiting),
    ]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    if ray_workers is not None:
        command += ["--ray", "--workers", str(ray_workers)]
    if compile is not None:
        command += ["--compile", compile]
    log = data / "server.log"
    out = log.open("w")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # carried packages too
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text(errors="replace")
        code = re.search(r"code ([A-Z0-9]{6})", text)
        secret = re.search(r"\?instructor=(\S+)", text)
        if code and secret:
            return Server(process, port, code.group(1), secret.group(1), data, log)
        if process.poll() is not None:
            raise RuntimeError(f"the server stopped at start:\n{text[-3000:]}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not print its join code in time")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(10)


# ---- one learner ----


@dataclass
class Learner:
    index: int
    submitted: dict[str, float] = field(default_factory=dict)  # prompt id -> time POST /prompt answered
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    successes: dict[str, int] = field(default_factory=dict)  # prompt id -> execution_success messages
    refused: int = 0
    post_errors: int = 0
    seen: set[str] = field(default_factory=set)  # every prompt id its socket heard of (text and previews)
    previews: int = 0
    positions: int = 0  # status messages that said where its prompts wait
    first_error: str = ""  # the first refusal of POST /prompt other than the cap
    unfinished: set[str] = field(default_factory=set)  # still queued or running when the drain ended


def prompt_for(learner: int, n: int, args: argparse.Namespace) -> dict:
    words = [WORDS[(learner * 7 + n * 3 + k) % len(WORDS)] for k in range(3)]
    params = GenerationParams(
        f"a {words[0]} {words[1]} and a {words[2]}",
        seed=learner * 100_000 + n,
        steps=args.steps,
        cfg=args.cfg,
        sampler=args.sampler,
        width=args.size,
        height=args.size,
        model=args.model,
    )
    return api_graph(params, filename_prefix=f"bench/learner{learner}")


async def listen(ws: aiohttp.ClientWebSocketResponse, me: Learner, done: asyncio.Event, stop_at: float) -> None:
    """Every message of the learner's socket until the run ends: starts, ends, previews, positions."""
    while time.monotonic() < stop_at:
        try:
            msg = await ws.receive(timeout=1.0)
        except TimeoutError:
            continue
        now = time.monotonic()
        if msg.type == aiohttp.WSMsgType.BINARY:
            event, size = struct.unpack(">II", msg.data[:8])
            if event == 4:
                me.seen.add(json.loads(msg.data[8 : 8 + size]).get("prompt_id"))
                me.previews += 1
            continue
        if msg.type != aiohttp.WSMsgType.TEXT:
            return
        message = json.loads(msg.data)
        kind, data = message["type"], message.get("data") or {}
        if kind == "status":
            if data.get("status", {}).get("atelier_wait"):
                me.positions += 1
                me.seen.update(data["status"]["atelier_wait"].get("prompts", {}))
            continue
        prompt_id = data.get("prompt_id")
        if prompt_id is None:
            continue
        me.seen.add(prompt_id)
        if kind == "execution_start":
            me.started.setdefault(prompt_id, now)
        elif kind == "execution_success":
            me.successes[prompt_id] = me.successes.get(prompt_id, 0) + 1
            me.ended.setdefault(prompt_id, now)
            done.set()
        elif kind in ("execution_error", "execution_interrupted"):
            me.failed.add(prompt_id)
            me.ended.setdefault(prompt_id, now)
            done.set()


async def learner_loop(
    server: Server, me: Learner, args: argparse.Namespace, submit_until: float, stop_at: float, histories: dict
) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=server.base, cookie_jar=jar) as http:
        await http.get(f"/lab/?join={server.join_code}")
        joined = await http.post(
            "/classroom/join",
            allow_redirects=False,
            data={"code": server.join_code, "name": f"Learner {me.index}", "next": "/lab/"},
        )
        assert joined.status == 303, await joined.text()
        tab = f"learner-{me.index}-tab"
        ws = await http.ws_connect(f"/ws?clientId={tab}")
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        done = asyncio.Event()
        listener = asyncio.ensure_future(listen(ws, me, done, stop_at))
        n = 0
        while time.monotonic() < submit_until:
            done.clear()  # before counting: an end heard after this wakes the wait below
            in_flight = len(me.submitted) - len(me.ended)
            if in_flight < args.outstanding:
                body = {"prompt": prompt_for(me.index, n, args), "client_id": tab}
                n += 1
                resp = await http.post("/api/prompt", json=body)
                if resp.status == 200:
                    me.submitted[(await resp.json())["prompt_id"]] = time.monotonic()
                elif resp.status == 429:
                    me.refused += 1
                else:  # counted, its first sentence kept; then a pause, not a loop of refusals
                    me.post_errors += 1
                    me.first_error = me.first_error or f"{resp.status}: {(await resp.text())[:300]}"
                    await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=max(0.1, min(2.0, submit_until - time.monotonic())))
        # Drain: wait for this learner's prompts (bounded), then read the history as the record.
        while time.monotonic() < stop_at and len(me.ended) < len(me.submitted):
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        histories[me.index] = await (await http.get("/api/history")).json()
        queue = await (await http.get("/api/queue")).json()  # what still waits or runs when the drain ends
        me.unfinished = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
        listener.cancel()
        await ws.close()


async def sample_rss(pid: int, every: float, until: float, series: list) -> None:
    start = time.monotonic()
    while time.monotonic() < until:
        series.append([round(time.monotonic() - start, 1), rss_mib(pid)])
        await asyncio.sleep(every)


async def run_class(server: Server, args: argparse.Namespace, first_index: int = 0) -> dict:
    learners = [Learner(first_index + i) for i in range(args.learners)]
    histories: dict[int, dict] = {}
    start = time.monotonic()
    submit_until = start + args.duration
    stop_at = submit_until + args.drain
    rss: list = []
    sampler = asyncio.ensure_future(sample_rss(server.process.pid, args.rss_every, stop_at, rss))
    await asyncio.gather(*(learner_loop(server, me, args, submit_until, stop_at, histories) for me in learners))
    ended = time.monotonic()
    sampler.cancel()
    last = max((t for me in learners for t in me.ended.values()), default=ended)
    return summarize(learners, histories, rss, ended - start, last - start, args)


def summarize(
    learners: list[Learner],
    histories: dict[int, dict],
    rss: list,
    seconds: float,
    busy: float,
    args: argparse.Namespace,
) -> dict:
    """The run's figures; `busy`: seconds from the start to the last prompt's end (images per second use it)."""
    owner_of = {pid: me.index for me in learners for pid in me.submitted}
    wrong = sum(1 for me in learners for pid in me.seen if pid in owner_of and owner_of[pid] != me.index)
    finished, lost, duplicated, files = 0, 0, 0, {}
    per_learner = []
    waits, totals = [], []
    for me in learners:
        history = histories.get(me.index, {})
        done = {pid for pid, entry in history.items() if entry["status"]["completed"]}
        mine = 0
        for pid, asked in me.submitted.items():
            if pid in done:
                finished += 1
                mine += 1
                if pid in me.started:
                    waits.append(me.started[pid] - asked)
                if pid in me.ended:
                    totals.append(me.ended[pid] - asked)
            elif pid not in me.failed and pid not in history and pid not in me.unfinished:
                lost += 1  # the server neither finished it, nor failed it, nor still has it
        duplicated += sum(1 for count in me.successes.values() if count > 1)
        for pid, entry in history.items():
            for output in entry["outputs"].values():
                for image in output.get("images", []):
                    key = (image.get("type"), image.get("subfolder"), image["filename"])
                    if key in files and files[key] != pid:
                        duplicated += 1
                    files[key] = pid
        per_learner.append(mine)
    failed = sum(len(me.failed) for me in learners)
    rounded = lambda v: None if v is None else round(v, 2)  # noqa: E731
    return {
        "learners": len(learners),
        "seconds": round(seconds, 1),
        "submitted": sum(len(me.submitted) for me in learners),
        "finished": finished,
        "failed": failed,
        "refused_at_cap": sum(me.refused for me in learners),
        "post_errors": sum(me.post_errors for me in learners),
        "first_post_error": next((me.first_error for me in learners if me.first_error), None),
        "unfinished_at_end": sum(len(me.unfinished) for me in learners),
        "lost": lost,
        "duplicated": duplicated,
        "wrong_deliveries": wrong,
        "previews_received": sum(me.previews for me in learners),
        "status_messages_with_positions": sum(me.positions for me in learners),
        "wait_to_start_s": {"p50": rounded(percentile(waits, 50)), "p95": rounded(percentile(waits, 95))},
        "wait_to_end_s": {"p50": rounded(percentile(totals, 50)), "p95": rounded(percentile(totals, 95))},
        "images_per_learner": per_learner,
        "jain_fairness": rounded(jain(per_learner)),
        "seconds_to_last_image": round(busy, 1),
        "images_per_second": round(finished / busy, 3) if busy > 0 else None,
        "server_rss_mib": [[t, rounded(m)] for t, m in rss],
    }


def make_sd15(folder: Path) -> str:
    """Random SD1.5-size weights in the real layout (as benchmarks/gpu.py's `first` section writes them)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from gpu import Setup, random_checkpoint

    from atelier.models.checkpoint import save_checkpoint

    ckpt = random_checkpoint(Setup(torch.device("cpu"), torch.float32, tiny=False, repeat=1))
    name = "random-sd15.safetensors"
    save_checkpoint(folder / name, ckpt.unet, ckpt.vae, ckpt.text_encoder)
    return name


def start_profile(server: Server, args: argparse.Namespace, mode: str) -> threading.Thread | None:
    """py-spy on the server process for --profile seconds, 10 s into the measured run (None: not asked or no py-spy):
    where a server's time goes when the GPU is not the limit."""
    spy = shutil.which("py-spy")
    if args.profile <= 0 or args.logs is None or spy is None:
        return None
    args.logs.mkdir(parents=True, exist_ok=True)
    out = args.logs / f"profile-{mode}.txt"
    command = [spy, "record", "--pid", str(server.process.pid), "--duration", str(int(args.profile)), "--format",
               "raw", "--threads", "--nonblocking", "-o", str(out)]  # fmt: skip

    def record() -> None:
        time.sleep(10.0)
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=args.profile + 60)

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=30)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds during which learners submit")
    parser.add_argument("--drain", type=float, default=180.0, help="at most this long for the queue to empty after")
    parser.add_argument("--batching", choices=["both", "on", "off"], default="both")
    parser.add_argument("--batch-size", type=int, default=None, help="with batching on (default: the server's)")
    parser.add_argument("--outstanding", type=int, default=1, help="prompts each learner keeps in flight")
    parser.add_argument("--max-waiting", type=int, default=32, help="the server's per-learner cap")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--size", type=int, default=128, help="image side (the embedded model's native 128)")
    parser.add_argument("--model", default="embedded.safetensors", help="checkpoint name (default: the embedded model)")
    parser.add_argument("--sd15", action="store_true", help="serve random SD1.5-size weights (for a GPU)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds of uncounted class before each measured run (a GPU compiles each new batch shape once)",
    )
    parser.add_argument("--compile", default=None, help="the server's --compile (default: its own, blocks)")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="with --logs and py-spy on PATH: record the server's stacks for this long, 10 s into "
                             "each measured run (py-spy's raw format, one file per run)")
    parser.add_argument("--rss-every", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads in the server (OMP_NUM_THREADS)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--logs", type=Path, default=None, help="a folder to keep the servers' output in")
    parser.add_argument("--note", default="", help="a sentence kept in the JSON (e.g. the machine's other load)")
    parser.add_argument("--ray", action="store_true",
                        help="compare the in-process worker with Ray workers (atelier serve --ray --workers N)")
    parser.add_argument("--workers", default="1,2", help="with --ray: the worker counts to run, comma-separated")
    args = parser.parse_args(argv)

    # (name, --batch-size, --workers) of each server to run, in order.
    if args.ray:
        counts = [int(n) for n in args.workers.split(",")]
        modes = [("in_process", args.batch_size, None)] + [(f"ray_{n}_workers", args.batch_size, n) for n in counts]
    else:
        names = {"both": ["off", "on"], "on": ["on"], "off": ["off"]}[args.batching]
        modes = [(f"batching_{m}", 1 if m == "off" else args.batch_size, None) for m in names]
    record = {
        "script": "benchmarks/classroom.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
        },
        "note": args.note,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "note", "logs")},
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="atelier-classroom-bench-") as folder:
        models = Path(folder) / "models"
        if args.sd15:
            (models / "checkpoints").mkdir(parents=True)
            args.model = make_sd15(models / "checkpoints")
        for mode, batch_size, workers in modes:
            data = Path(folder) / f"data-{mode}"
            data.mkdir()
            if models.exists():
                shutil.copytree(models, data / "models")
            server = start_server(data, batch_size, args.max_waiting, args.threads, ray_workers=workers,
                                  compile=args.compile)
            try:
                print(f"{mode}: server on port {server.port}, {args.learners} learners, {args.duration} s", flush=True)
                warmup, warm_log = None, 0
                if args.warmup > 0:  # other learners, same settings: every batch shape the run meets is compiled
                    # Its drain waits longer: the first image of each batch shape compiles for a minute or more,
                    # and a warm-up prompt left in the queue would run inside the measured window.
                    drain = max(args.drain, 300.0)
                    short = argparse.Namespace(**{**vars(args), "duration": args.warmup, "drain": drain})
                    warm = asyncio.run(run_class(server, short, first_index=10_000))
                    keep = ("seconds", "submitted", "finished", "unfinished_at_end", "lost", "duplicated")
                    keep += ("wrong_deliveries",)
                    warmup = {k: warm[k] for k in keep}
                    warm_log = len(server.log.read_text(errors="replace"))
                profiler = start_profile(server, args, mode)
                result = asyncio.run(run_class(server, args))
                if profiler is not None:
                    profiler.join()
                result["warmup"] = warmup
                log = server.log.read_text(errors="replace")[warm_log:]  # the measured run's part
                sizes = [int(n) for n in re.findall(r"Batch \d+: (\d+) images of \d+ prompts", log)]
                result["merged_sampling_calls"] = len(sizes)
                result["images_in_merged_calls"] = sum(sizes)
                result["server_log_tracebacks"] = log.count("Traceback")
                if workers is not None:
                    result["ray"] = ray_figures(log)
            finally:
                stop_server(server)
                if args.logs:  # the server's output, kept for reading
                    args.logs.mkdir(parents=True, exist_ok=True)
                    shutil.copy(server.log, args.logs / f"server-{mode}.log")
            record["runs"][mode] = result
            print(json.dumps({k: v for k, v in result.items() if k != "server_rss_mib"}, indent=1), flush=True)
            if args.json:  # rewritten after each run: a run cut short keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(record, indent=1) + "\n")
    runs = record["runs"]
    if "batching_on" in runs and "batching_off" in runs:
        on, off = runs["batching_on"]["images_per_second"], runs["batching_off"]["images_per_second"]
        record["speedup_on_over_off"] = round(on / off, 2) if on and off else None
    if args.ray:
        record["ray"] = ray_summary(runs)
    record["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"speedup_on_over_off": record.get("speedup_on_over_off"), "ray": record.get("ray")}))
    return 0


RAY_BATCH = re.compile(r"Ray batch \d+ on worker (\d+): (\d+) images, ([\d.]+) s in the actor, ([\d.]+) s around it")


def ray_figures(log: str) -> dict:
    """From a --ray server's log (one line per batch, ray_workers.RayPool.run): batches per worker, and the
    seconds per image inside the actors (sampling, decoding) and around them (Ray: the pickled batch and images,
    the stream of step events, the refresh of what the actor holds)."""
    rows = [(int(w), int(n), float(inside), float(around)) for w, n, inside, around in RAY_BATCH.findall(log)]
    per_worker: dict[int, int] = {}
    for worker, _, _, _ in rows:
        per_worker[worker] = per_worker.get(worker, 0) + 1
    inside = [i / n for _, n, i, _ in rows if n]
    around = [a / n for _, n, _, a in rows if n]
    rounded = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return {
        "batches_per_worker": {str(w): c for w, c in sorted(per_worker.items())},
        "s_per_image_in_actor": {"p50": rounded(percentile(inside, 50)), "p95": rounded(percentile(inside, 95))},
        "s_per_image_around_actor": {"p50": rounded(percentile(around, 50)), "p95": rounded(percentile(around, 95)),
                                     "mean": rounded(sum(around) / len(around)) if around else None},
    }


def ray_summary(runs: dict) -> dict:
    """The --ray settings side by side: images per second, N workers over 1, Ray's seconds per image over the
    in-process worker's (1/ips(1 Ray worker) - 1/ips(in-process); both sample on one CPU thread)."""
    ips = {mode: run["images_per_second"] for mode, run in runs.items()}
    one, here = ips.get("ray_1_workers"), ips.get("in_process")
    summary: dict = {"images_per_second": ips}
    if one:
        summary["speedup_over_1_worker"] = {m: round(v / one, 2) for m, v in ips.items() if m.startswith("ray_") and v}
    if one and here:
        summary["ray_overhead_s_per_image_from_throughput"] = round(1 / one - 1 / here, 3)
        summary["ray_overhead_fraction_from_throughput"] = round((1 / one - 1 / here) / (1 / here), 3)
    summary["ray_s_per_image_around_actor_p50"] = {
        mode: run["ray"]["s_per_image_around_actor"]["p50"] for mode, run in runs.items() if "ray" in run
    }
    return summary


if __name__ == "__main__":
    sys.exit(main())
