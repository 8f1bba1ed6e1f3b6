"""Build and run the server: `create_app` for tests and embedding, `serve` / `run_server` for the command line.

    registry = default_registry(models_root, files=OutputFiles(DataDir("atelier-data")))
    app = create_app(registry, "atelier-data")             # an aiohttp Application
    serve(registry=registry, data_dir="atelier-data")      # blocks; http://127.0.0.1:8188/

The server binds 127.0.0.1 unless told to listen on the network (then anyone who can reach the machine can queue
prompts, read every image and overwrite saved workflows: a warning says so). On the network it still answers only
to its own names (security.py: DNS rebinding), and the URL it prints is the one other machines can open.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from atelier.errors import AtelierError
from atelier.graph.executor import Executor
from atelier.graph.registry import NodeRegistry
from atelier.server import (
    frontend,
    instructor,
    lab,
    routes_files,
    routes_queue,
    routes_system,
    routes_userdata,
    websocket,
)
from atelier.server.classroom import Classroom, announcement, classroom_middleware
from atelier.server.files import DataDir, OutputFiles
from atelier.server.hub import Hub
from atelier.server.prompt_queue import PREVIEW_METHODS, PromptQueue
from atelier.server.security import (
    add_security_headers,
    bound_addresses,
    guard_middleware,
    host_names,
    is_loopback,
    lan_addresses,
)
from atelier.server.settings import Settings
from atelier.server.state import STATE, Limits, ServerState
from atelier.server.store import PromptStore

log = logging.getLogger("atelier.server")

DEFAULT_DATA_DIR = Path("atelier-data")
LISTEN_WARNING = (
    "WARNING: listening on {where} ({host}:{port}). Anyone who can reach this machine can use "
    "Atelier: queue prompts, see every image and overwrite saved workflows. Use this only on a network you trust."
)


def create_app(
    registry: NodeRegistry,
    data_dir: str | os.PathLike,
    *,
    listen_host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
    static_root: Path | str | None = "auto",
    templates_dir: Path | None = None,
    limits: Limits | None = None,
    settings_defaults: dict | None = None,
    on_free: Callable[[bool, bool], None] | None = None,
    argv: list[str] | None = None,
    classroom: bool = False,
    preview_method: str = "none",
    batch_images: int | None = None,
    max_waiting_images: int | None = None,
    ray: str | None = None,
    workers: int | None = None,
) -> web.Application:
    """The aiohttp application: routes, WebSocket, the prompt queue and its worker (started with the app).

    - registry: the node classes prompts may use (tests pass stub nodes).
    - data_dir: input/, output/, temp/, user/, models/ and atelier.sqlite live here (created if missing).
    - listen_host: the address(es) the server binds, comma-separated; with allowed_hosts (more names, e.g. from
      --allowed-host) they decide which Host headers it answers to (security.host_names).
    - static_root: the frontend's static/ folder; "auto" finds the installed comfyui-frontend-package.
    - settings_defaults: replaces settings.PRIVATE_DEFAULTS (what the editor sees before the user changes it).
    - on_free: called by POST /free with (unload_models, free_memory), e.g. to drop loaded checkpoints.
    - classroom: classroom mode (classroom.py): join code, learners, each seeing only their own work, fair turns.
    - batch_images: the most images one merged sampling call takes (None: `default_batch_limits` for the device);
      1 turns merging off. max_waiting_images: each learner's cap (None: CLASSROOM_MAX_WAITING in classroom
      mode, no cap otherwise).
    - preview_method: live sampler previews for prompts whose extra_data does not choose (--preview-method):
      "none", as in ComfyUI, or "auto" / "latent2rgb" / "taesd" (prompt_queue.wants_previews).
    - ray: run the txt2img batches on Ray actors (cluster.py): "local" for a Ray instance of this machine, else
      a cluster's address ("auto", "ray://host:10001"); None (the default): the in-process worker, as before.
      workers: how many actors (None: one per GPU, or one on a machine without).
    """
    if preview_method not in PREVIEW_METHODS:
        raise AtelierError(
            f"The preview method {preview_method!r} is not known; expected one of {', '.join(PREVIEW_METHODS)}."
        )
    data = DataDir(data_dir)
    for path in data.remove_partial_writes():  # left by a server killed while it wrote
        log.warning("Removed %s, a file a stopped server had not finished writing.", path)
    data.clear_temp()
    data.install_inputs((templates_dir or frontend.TEMPLATES_DIR) / "inputs")  # the templates' example images
    store = PromptStore(data.database)
    hub = Hub()
    queue = make_queue(registry, store, hub, classroom, batch_images, max_waiting_images, preview_method,
                       data=data, ray=ray, workers=workers)  # fmt: skip
    if static_root == "auto":
        static_root = frontend.frontend_root()
    st = ServerState(
        registry=registry,
        data=data,
        files=OutputFiles(data),
        store=store,
        queue=queue,
        hub=hub,
        settings=Settings(data.user, settings_defaults),
        limits=limits or Limits(),
        static_root=Path(static_root) if static_root is not None else None,
        templates_dir=templates_dir or frontend.TEMPLATES_DIR,
        on_free=on_free,
        # "--disable-api-nodes" is how the frontend learns not to fetch release notes from api.comfy.org.
        argv=argv if argv is not None else ["atelier", "serve", "--disable-api-nodes"],
        classroom=Classroom(store) if classroom else None,
    )
    hub.private = classroom
    identify = [classroom_middleware(st.classroom)] if st.classroom is not None else []
    # Bodies (userdata files, prompts) may be as large as an upload; uploads themselves are streamed and checked.
    app = web.Application(
        middlewares=[guard_middleware(host_names(listen_host, allowed_hosts)), *identify],
        client_max_size=st.limits.max_upload_bytes + 1024 * 1024,
    )
    app[STATE] = st
    app.on_response_prepare.append(add_security_headers)  # nosniff and a Content-Security-Policy on every response
    websocket.setup(app)
    routes_system.setup(app)
    routes_queue.setup(app)
    routes_files.setup(app)
    routes_userdata.setup(app)
    lab.setup(app)  # the workshop page at /lab/ and its routes under /atelier/lab/
    instructor.setup(app)  # classroom mode: the instructor's page at /classroom/, routes under /atelier/classroom/
    frontend.setup(app)  # last: its catch-all static route must not shadow the others

    async def start(app: web.Application) -> None:
        hub.loop = asyncio.get_running_loop()
        # A full garbage collection walks every object and holds the GIL meanwhile: with torch imported that is
        # 186,000 objects and 100-120 ms in which no client gets an answer, and a large prompt triggers several.
        # What exists at start-up lives as long as the server, so it is moved out of the collector's sight.
        gc.collect()
        gc.freeze()
        queue.start()

    async def close_sockets(app: web.Application) -> None:
        await hub.close_all()

    async def stop(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, queue.stop)
        close = getattr(queue.worker, "close", None)  # a ClusterWorker's actors
        if close is not None:
            close()
        store.close()

    app.on_startup.append(start)
    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(stop)
    return app


CLASSROOM_MAX_WAITING = 32  # images one learner may have waiting: a 5 x 5 XY grid and a few more


# On a GPU a merged batch holds at most 8 images of 512 x 512 (the pixels of that many), and 16 images of any size.
# Measured on an H200 (docs/benchmarks/): SD1.5 at 512 x 512, batch 8 gives 1.66x the images per second of one at
# a time through the server; the embedded model at 128 x 128 gives 3.97x with batches of 8 and 4.45x with 16.
GPU_BATCH_IMAGES, GPU_BATCH_PIXELS = 16, 8 * 512 * 512
CPU_BATCH_IMAGES = 4  # little to gain on a CPU: a batch mostly shares the waiting


def default_batch_limits(registry: NodeRegistry) -> tuple[int, int | None]:
    """(most images, most pixels or None) of one merged sampling call on the nodes' device."""
    loader = registry.get("CheckpointLoaderSimple")
    env = getattr(loader, "env", None)
    device = str(getattr(env, "device", None) or "")
    if not device:
        from atelier.device import pick_device  # torch: only for a registry of the real nodes

        device = str(pick_device())
    return (GPU_BATCH_IMAGES, GPU_BATCH_PIXELS) if device.startswith("cuda") else (CPU_BATCH_IMAGES, None)


def make_queue(
    registry: NodeRegistry,
    store: PromptStore,
    hub: Hub,
    classroom: bool,
    batch_images: int | None = None,
    max_waiting_images: int | None = None,
    preview_method: str = "none",
    data: DataDir | None = None,
    ray: str | None = None,
    workers: int | None = None,
) -> PromptQueue:
    """The prompt queue with its scheduler and worker. With the real nodes (a CheckpointLoaderSimple that has an
    environment) txt2img prompts are cut into one-image parts and merged batches run in one sampling call
    (batch_worker.py); with other registries (tests' stub nodes) every prompt runs alone through the executor.
    ray (with the real nodes and `data`): the txt2img batches run on Ray actors instead (cluster.py)."""
    from atelier.server.merging import parts
    from atelier.server.prompt_queue import owner_of_record, whole_parts
    from atelier.server.scheduler import LOCAL_OWNER, Scheduler

    executor = Executor(registry)
    mergeable = getattr(registry.get("CheckpointLoaderSimple"), "env", None) is not None
    if batch_images is not None:  # asked for: a plain limit on images
        size, pixels = batch_images, None
    elif mergeable:
        size, pixels = default_batch_limits(registry)
    else:
        size, pixels = 1, None
    cap = max_waiting_images if max_waiting_images is not None else (CLASSROOM_MAX_WAITING if classroom else None)
    scheduler = Scheduler(batch_images=size, max_waiting_images=cap, batch_pixels=pixels)
    owner_of = owner_of_record if classroom else (lambda rec: LOCAL_OWNER)
    queue = PromptQueue(
        executor, store, hub, scheduler, owner_of, parts if mergeable else whole_parts, preview_method=preview_method
    )
    queue.device = _device_of(registry)
    prompt_of = lambda prompt_id: queue.active[prompt_id].prompt  # noqa: E731
    if ray is not None:
        if not mergeable or data is None:
            raise AtelierError("--ray needs Atelier's own nodes and a data folder; expected `atelier serve --ray`.")
        queue.worker = cluster_worker(queue, data, registry, size, None if ray == "local" else ray, workers)
    elif mergeable:
        from atelier.server.batch_worker import local_worker  # torch: the real nodes have imported it already

        queue.worker = local_worker(executor, prompt_of, queue.run_graph, queue.on_member_step, queue.merged_stop, size)
    return queue


def _device_of(registry: NodeRegistry) -> str:
    """The device the nodes run on, as the instructor's page names it ("cpu", "cuda"...); "cpu" for stub nodes."""
    env = getattr(registry.get("CheckpointLoaderSimple"), "env", None)
    if env is None:
        return "cpu"
    if env.device:
        return str(env.device)
    from atelier.device import pick_device  # torch: only for a registry of the real nodes

    return str(pick_device())


def registry_at(data_root: str, fast: bool | None) -> NodeRegistry:
    """The real nodes on the data folder at `data_root`: what each Ray actor builds for itself (picklable)."""
    return default_registry(DataDir(data_root), fast=fast)


def cluster_worker(
    queue: PromptQueue, data: DataDir, registry: NodeRegistry, size: int, address: str | None, workers: int | None
) -> Any:
    """A cluster.ClusterWorker for `queue`: a RayPool whose actors build the same nodes on the same data folder;
    their steps, previews and retries reach the queue's listeners."""
    import functools

    from atelier.server.cluster import ClusterWorker, actor_worker, start_pool

    env = registry.get("CheckpointLoaderSimple").env
    make_registry = functools.partial(registry_at, str(data.root), env.fast)
    make_worker = functools.partial(actor_worker, make_registry=make_registry, batch_images=size)

    def on_event(batch: Any, event: Any) -> None:
        if isinstance(event, tuple) and event[0] == "step":
            _, row, value, total, preview = event
            queue.on_member_step(row, value, total, lambda: preview, batch)

    pool = start_pool(make_worker, address, workers, on_event, queue.on_retry)
    worker = ClusterWorker(pool, queue.run_graph)
    worker.prompt_of = lambda prompt_id: queue.active[prompt_id].prompt
    worker.previews_of = lambda prompt_id: queue.wants_preview(prompt_id)
    queue.merged_if = ClusterWorker.remote
    queue.stop_merged = lambda batch: False  # an actor's sampling call runs to its end; stopped images are dropped
    return worker


def check_listen(listen: str) -> list[str]:
    """The addresses of a --listen value ("0.0.0.0", "192.168.1.5,127.0.0.1"), or an AtelierError sentence."""
    addresses = bound_addresses(listen)
    for address in addresses:
        try:
            ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            raise AtelierError(
                f"--listen expects IP addresses separated by commas (e.g. 0.0.0.0 or 192.168.1.5); got {address!r}."
            ) from None
    return addresses


def _url(address: str, port: int) -> str:
    return f"http://[{address}]:{port}/" if ":" in address else f"http://{address}:{port}/"


def server_urls(addresses: list[str], port: int) -> list[str]:
    """The URLs to print for the bound addresses: a wildcard (0.0.0.0, ::) becomes the machine's LAN addresses (or
    its host name when it has none), then http://127.0.0.1, which works on the machine itself."""
    urls: list[str] = []
    for address in addresses:
        if address in ("0.0.0.0", "::"):
            urls += [_url(a, port) for a in lan_addresses()] or [_url(socket.gethostname(), port)]
        elif not is_loopback(address):
            urls.append(_url(address, port))
    if any(a in ("0.0.0.0", "::") or is_loopback(a) for a in addresses):
        urls.append(_url("127.0.0.1", port))
    return list(dict.fromkeys(urls))


def serve(
    host: str = "127.0.0.1",
    port: int = 8188,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    registry: NodeRegistry | None = None,
    listen: bool = False,
    fast: bool | None = None,
    precision: str = "native",
    compile: str = "auto",
    allowed_hosts: Iterable[str] = (),
    classroom: bool = False,
    preview_method: str = "none",
    batch_images: int | None = None,
    max_waiting_images: int | None = None,
    ray: str | None = None,
    workers: int | None = None,
) -> None:
    """Run the server until Ctrl+C on `host` (addresses, comma-separated; `listen=True` means 0.0.0.0, every
    interface). An address that is not loopback prints a warning; `allowed_hosts` are more names to answer to.
    `classroom=True`: classroom mode (classroom.py), which prints the learners' join link and the instructor's link
    instead of the warning (the join code guards the server)."""
    if listen:
        host = "0.0.0.0"
    addresses = check_listen(host)
    network = [a for a in addresses if not is_loopback(a)]
    if network and not classroom:
        wildcard = any(a in ("0.0.0.0", "::") for a in network)
        where = "all network interfaces" if wildcard else "the network"
        print(LISTEN_WARNING.format(where=where, host=",".join(network), port=port), file=sys.stderr)
    if registry is None:
        registry = default_registry(DataDir(data_dir), fast=fast, precision=precision, compile=compile)
    app = create_app(
        registry,
        data_dir,
        listen_host=host,
        allowed_hosts=allowed_hosts,
        classroom=classroom,
        preview_method=preview_method,
        batch_images=batch_images,
        max_waiting_images=max_waiting_images,
        ray=ray,
        workers=workers,
    )
    urls = server_urls(addresses, port)
    shown = urls[0] + "".join(f" (on this machine: {u})" for u in urls[1:] if "127.0.0.1" in u)
    bind = addresses[0] if len(addresses) == 1 else addresses
    room = app[STATE].classroom

    def started(_: str) -> None:
        print(f"Atelier is running at {shown}")
        if room is not None:
            room.public_url = urls[0]  # the join link the instructor's page shows
            print(announcement(room, urls[0]))

    web.run_app(app, host=bind, port=port, print=started)


def default_registry(
    data: DataDir, fast: bool | None = None, precision: str = "native", compile: str = "auto"
) -> NodeRegistry:
    """The real SD nodes (atelier/graph/catalog.py), writing their files through this data directory; `fast`,
    `precision` and `compile`: see NodeEnvironment."""
    from atelier.graph.catalog import default_registry as build  # heavy (torch, models): imported only to serve
    from atelier.graph.unsupported import UNSUPPORTED_NODES
    from atelier.models.paths import ModelPaths

    models = ModelPaths(data.root)
    extra = data.root / "extra_model_paths.yaml"  # as ComfyUI: reuse the model folders of other tools
    if extra.is_file():
        models.add_extra_paths_yaml(extra)
    # UNSUPPORTED_NODES: ComfyUI loaders the editor expects to exist (LoRA, ControlNet, ...); they refuse to run.
    return build(
        models, files=OutputFiles(data), extra_nodes=UNSUPPORTED_NODES, fast=fast, precision=precision, compile=compile
    )


def run_server(
    port: int = 8188,
    listen: str | bool | None = None,
    data_dir: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    fast: bool | None = None,
    precision: str = "native",
    compile: str = "auto",
    allowed_hosts: Iterable[str] = (),
    classroom: bool = False,
    preview_method: str = "none",
    batch_images: int | None = None,
    max_waiting_images: int | None = None,
    ray: str | None = None,
    workers: int | None = None,
) -> int:
    """What `atelier serve [--port N] [--listen [ADDRESS]] [--allowed-host NAME] [--data-dir DIR] [--no-fast]
    [--classroom] [--preview-method M] [--ray [ADDRESS] [--workers N]]` calls; `listen` is the address to bind
    (True: 0.0.0.0), `host` the one used without it, except in classroom mode, which binds 0.0.0.0 unless told an
    address. Returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    address = "0.0.0.0" if listen is True or (classroom and not listen) else listen or host
    serve(
        host=address,
        port=port,
        data_dir=data_dir or DEFAULT_DATA_DIR,
        fast=fast,
        precision=precision,
        compile=compile,
        allowed_hosts=allowed_hosts,
        classroom=classroom,
        preview_method=preview_method,
        batch_images=batch_images,
        max_waiting_images=max_waiting_images,
        ray=ray,
        workers=workers,
    )
    return 0
