"""`atelier` command line: generate, serve, run, info, train, eval.

Every user error ends as one sentence on stderr and exit code 2; nothing is written before all inputs check out.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import sys
import threading
import time
from pathlib import Path

from atelier.errors import AtelierError, InputError
from atelier.models.fast_choices import COMPILE_MODES, PRECISIONS


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="make images from a prompt (txt2img, img2img, inpainting)")
    p.add_argument("prompt", help='what to draw, e.g. "un soleil jaune au-dessus d\'une maison rouge"')
    p.add_argument("--negative", default="", help="what to steer away from (the unconditional side of CFG)")
    p.add_argument("--seed", type=int, default=-1, help="starting noise: same seed, same image (-1: random)")
    p.add_argument("--steps", type=int, default=20, help="number of denoising steps")
    p.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale (1 = no guidance)")
    p.add_argument("--sampler", default="euler", help="sampler name, as in ComfyUI (euler, euler_ancestral, ...)")
    p.add_argument("--scheduler", default="normal", help="sigma schedule, as in ComfyUI (normal, karras, ...)")
    p.add_argument("--width", type=int,
                   help="image width, a multiple of 8 (default: the model's native size: SDXL 1024, SD 2.x 768-v "
                        "768, SD1.x 512, embedded 128)")
    p.add_argument("--height", type=int, help="image height, a multiple of 8 (default: the model's native size)")
    p.add_argument("--batch", type=int, default=1, help="images made at once, each with its own noise")
    p.add_argument("--clip-skip", type=int, default=1,
                   help="use the text encoder's N-th layer from the end (1: the family's own, the penultimate for "
                        "SD 2.x and SDXL; above 1, as CLIPSetLastLayer -N)")
    p.add_argument("--model", help="checkpoint file, diffusers folder or name in the models folder (default: embedded)")
    p.add_argument("--vae", help="a standalone VAE file that replaces the checkpoint's")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="apply a LoRA / LyCORIS file at a strength (default 1); repeat to stack several")
    p.add_argument("--embeddings", type=Path, metavar="FOLDER",
                   help="where embedding:name in a prompt is looked up (default: models/embeddings, if it exists)")
    p.add_argument("--init-image", type=Path, help="start from this image (img2img)")
    p.add_argument("--denoise", type=float, help="how much of the init image to redo, 0..1 (img2img default 0.6)")
    p.add_argument("--mask", type=Path, help="inpainting mask: white = repaint, black = keep (needs --init-image)")
    p.add_argument("-o", "--out", type=Path, default=Path("outputs"),
                   help="a folder for numbered PNGs (never overwritten), or the PNG file itself when it ends in .png "
                        "(a batch adds _2, _3, ...)")
    p.add_argument("--prefix", default="atelier", help="file name prefix")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    p.add_argument("--dtype", help="fp32, fp16 or bf16 (default: fp32 on CPU and for models under 100 M parameters, "
                                   "else half precision on a GPU)")
    p.add_argument("--timings", action="store_true",
                   help="print where the command's seconds went: start-up, loading, fast path, sampling, PNG")
    _add_no_fast(p)
    p.set_defaults(func=_generate)


def _add_no_fast(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-fast", action="store_true",
                   help="run the readable modules as written (default on CUDA: the fast path, atelier/models/fast.py, "
                        "same result to rounding, compiled on first use)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="native",
                   help="the fast UNet's linear layers and 1x1 convolutions: native (the --dtype, default) or FP8 "
                        "e4m3 matrix products with one scale per tensor (fp8) or per row (fp8-row), on GPUs of "
                        "compute capability 8.9+ (9.0+ for fp8-row); close to, not equal to, native "
                        "(atelier/models/fp8.py)")
    p.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                   help="how the fast path compiles (atelier/models/fast.py): auto (default: not at all for a small "
                        "UNet such as the embedded one, bound by kernel launches; each block otherwise), none (CUDA "
                        "graphs only: no compile wait), each block, the whole forward, also autotuned GEMMs, or aot: "
                        "the UNet compiled ahead of time into a package in the compile cache, which later starts "
                        "load at once (atelier/models/aot.py)")


def _precision_fallback(args: argparse.Namespace, device: str | None) -> str | None:
    """The sentence that says why --precision fp8 cannot run here (None: it can, or was not asked for)."""
    if args.precision == "native":
        return None
    if args.no_fast:
        return (
            f"--precision {args.precision} runs on the fast path, which --no-fast switches off; the model keeps its "
            "dtype."
        )
    from atelier.device import pick_device
    from atelier.models.fp8 import unavailable_reason

    return unavailable_reason(pick_device(device), "row" if args.precision == "fp8-row" else "tensor")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _out_file(out: Path) -> Path | None:
    """--out as the file to write: a path with an image extension that is not an existing folder; None: a folder."""
    if out.suffix.lower() not in IMAGE_SUFFIXES or out.is_dir():
        return None
    if out.suffix.lower() != ".png":
        raise InputError(
            f"--out {out} names a {out.suffix} file, but generate writes PNG (its graph goes in the PNG's text); "
            f"expected a name ending in .png, such as {out.with_suffix('.png')}."
        )
    return out


def _out_path(out: Path, out_file: Path | None, prefix: str, index: int) -> Path:
    """Where image `index` of the batch goes: the named file (then name_2.png, ...), or the folder's next number."""
    from atelier.images import next_free_path

    if out_file is None:
        return next_free_path(out, prefix)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    return out_file if index == 0 else out_file.with_name(f"{out_file.stem}_{index + 1}{out_file.suffix}")


def _seconds_since_process_start() -> float | None:
    """How long ago this process started (Linux: /proc), so that Python's own start and imports are counted."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 0.0)  # field 22: start, in clock ticks
    except (OSError, ValueError, IndexError):
        return None


class _Phases:
    """`--timings`: seconds per phase of a command, printed as one line at its end."""

    def __init__(self) -> None:
        before = _seconds_since_process_start()
        self.rows: list[tuple[str, float]] = [] if before is None else [("Python start and imports", before)]
        self.last = time.perf_counter()

    def mark(self, name: str, at: float | None = None) -> None:
        """The phase `name` ended now (or at the perf_counter time `at`)."""
        now = time.perf_counter() if at is None else at
        self.rows.append((name, now - self.last))
        self.last = now

    def line(self) -> str:
        parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.rows)
        return f"timings: {parts}; in all {sum(seconds for _, seconds in self.rows):.2f} s"


def _generate(args: argparse.Namespace) -> int:
    phases = _Phases()
    from atelier.generation import GenerationParams, a1111_parameters, api_graph, run
    from atelier.images import load_image, save_png
    from atelier.models.checkpoint import load_checkpoint
    from atelier.models.library import native_size, resolve_model

    phases.mark("atelier's imports (torch)")

    if args.mask is not None and args.init_image is None:
        raise InputError("--mask needs --init-image: a mask tells which part of that image to repaint.")
    denoise = args.denoise if args.denoise is not None else (0.6 if args.init_image and not args.mask else 1.0)
    params = GenerationParams(
        prompt=args.prompt, negative=args.negative, seed=args.seed, steps=args.steps, cfg=args.cfg,
        sampler=args.sampler, scheduler=args.scheduler, width=args.width or 8, height=args.height or 8,
        batch=args.batch, denoise=denoise, clip_skip=args.clip_skip,
    )
    params.check()  # every flag is checked before the model loads
    out_file = _out_file(args.out)
    init = load_image(args.init_image, "init image") if args.init_image else None
    mask = load_image(args.mask, "mask") if args.mask else None
    lora_files = [_lora_argument(value) for value in args.lora]

    path = resolve_model(args.model)
    started = time.perf_counter()
    ckpt = load_checkpoint(path, device=args.device, dtype=args.dtype, vae_path=args.vae)
    dtype = str(next(ckpt.unet.parameters()).dtype).removeprefix("torch.")
    print(f"{path.name} loaded in {time.perf_counter() - started:.2f} s ({ckpt.device}, {dtype})", file=sys.stderr)
    phases.mark("inputs and loading")
    fallback = _precision_fallback(args, args.device)
    if fallback is not None:
        print(fallback, file=sys.stderr)
    if not args.no_fast and ckpt.device.type == "cuda":  # imported only here: torch.compile's import costs ~1 s
        from atelier.models.fast import FastOptions, accelerate

        precision = args.precision if fallback is None else "native"
        ckpt = accelerate(ckpt, enabled=True, options=FastOptions(compile=args.compile, precision=precision))
        shown = "" if ckpt.unet.precision == "native" else f", {ckpt.unet.precision} projections"  # after fallbacks
        waits = {"none": "CUDA graphs, no compile", "aot": "the UNet's package is compiled once, then read from disk"}
        wait = waits.get(ckpt.unet.options.compile, "the first run compiles a while")
        print(f"fast path on{shown}: {wait} (--no-fast: the readable modules)", file=sys.stderr)
    native = native_size(path)
    params.width, params.height, params.model = args.width or native, args.height or native, path.name
    params.check()
    from atelier.models.embeddings import EmbeddingFolder
    from atelier.models.lora import load_lora, text_configs
    from atelier.models.paths import ModelPaths

    text_config = text_configs(ckpt.text_encoder)  # SDXL: both towers'
    loras = [(load_lora(file, ckpt.unet_config, text_config), strength) for file, strength in lora_files]
    for lora, _ in loras:
        print(lora.summary(), file=sys.stderr)
    folders = ModelPaths(Path.cwd())
    if args.embeddings is not None:
        folders.add_folder("embeddings", args.embeddings, first=True)
    embeddings = EmbeddingFolder.for_text_encoder(folders, ckpt.text_encoder)  # SDXL: one vector set per tower

    from tqdm import tqdm

    phases.mark("fast path and add-ons")
    bar = tqdm(total=params.steps, unit="step", desc="sampling", file=sys.stderr, leave=False)
    steps_done: list[float] = []  # when each step ended (with --timings on a GPU: once its kernels have run)

    def on_step(_step: object) -> None:
        bar.update(1)
        if args.timings:
            if ckpt.device.type == "cuda":
                import torch

                torch.cuda.synchronize(ckpt.device)
            steps_done.append(time.perf_counter())

    result = run(ckpt, params, init, mask, on_step=on_step, interrupt=threading.Event(), loras=loras,
                 embeddings=embeddings)
    bar.close()
    if steps_done:
        phases.mark("prompt and first step (compile or capture)", steps_done[0])
        phases.mark(f"{len(steps_done) - 1} more steps", steps_done[-1])
        phases.mark("decode")

    named = [(file.name, strength) for file, strength in lora_files]  # as the graph's LoraLoader lists models/loras
    graph = api_graph(params if args.seed != -1 else result.params,
                      args.init_image.name if args.init_image else None, args.mask.name if args.mask else None,
                      loras=named)
    text = {
        "prompt": json.dumps(graph),
        "workflow": json.dumps(_ui_workflow(graph)),
        "parameters": a1111_parameters(result.params, loras=named),
    }
    for i, image in enumerate(result.images):
        path = save_png(image, _out_path(args.out, out_file, args.prefix, i), text)
        print(path)
        if i == 0:
            extra = " (CFG 1: the unconditional pass was skipped)" if result.skipped_uncond else ""
            print(f"seed {result.params.seed}, {result.seconds:.2f} s{extra}", file=sys.stderr)
    if args.timings:
        phases.mark("PNG")
        print(phases.line(), file=sys.stderr)
    return 0


def _lora_argument(value: str) -> tuple[Path, float]:
    """`--lora FILE[:STRENGTH]` -> (existing file, strength); the strength is 1 when the text after the last ':'
    is not a number (so that C:\\loras\\x.safetensors still reads as a file)."""
    file, strength = value, 1.0
    head, sep, tail = value.rpartition(":")
    if sep:
        with contextlib.suppress(ValueError):
            file, strength = head, float(tail)
    path = Path(file).expanduser()
    if not path.is_file():
        raise InputError(f"--lora {value}: {path} is not a file; expected FILE[:STRENGTH], e.g. style.safetensors:0.8.")
    return path, strength


def _ui_workflow(graph: dict) -> dict:
    """The editor's UI graph for an API graph (node layout, links, widget values in the editor's order)."""
    from atelier.graph.catalog import default_registry
    from atelier.graph.workflow import api_to_ui

    return api_to_ui(graph, default_registry(Path.cwd(), files=None))


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the web server: the lab and the node editor, on the embedded model")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--listen", nargs="?", const="0.0.0.0", default=None, metavar="ADDRESS",
                   help="accept connections from other machines: bind ADDRESS (comma-separated; alone: 0.0.0.0, "
                        "every interface)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="one more host name the server answers to (e.g. a name the room's DNS gives this machine)")
    p.add_argument("--classroom", action="store_true",
                   help="one server for a class: listens on the LAN (0.0.0.0 unless --listen ADDRESS), prints a "
                        "join link; each learner sees only their own work")
    p.add_argument("--data-dir", type=Path, default=Path("atelier-data"),
                   help="inputs, outputs, history, user workflows and models/ (ComfyUI layout)")
    p.add_argument("--preview-method", choices=["none", "auto", "latent2rgb", "taesd"], default="none",
                   help="live sampler previews for prompts that do not ask (extra_data.preview_method), as in "
                        "ComfyUI: none by default; the lab and the node editor ask for them themselves")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="the most images one shared sampling call makes for several people's txt2img prompts "
                        "(default on a GPU: 16, and no more pixels than 8 images of 512x512; on a CPU: 4; "
                        "1: no merging)")
    p.add_argument("--max-waiting", type=int, default=None, metavar="N",
                   help="classroom mode: the most images one learner may have waiting (default 32)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the txt2img batches on Ray workers (pip install 'atelier[cluster]'): alone, a local Ray "
                        "instance; ADDRESS (auto, ray://host:10001): an existing cluster")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --ray: how many workers (default: one per GPU; N CPU workers on a machine without)")
    _add_no_fast(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from atelier.server.app import run_server

    if args.workers is not None and args.ray is None:
        raise AtelierError("--workers va avec --ray : ajoutez --ray ou retirez --workers. / "
                           "--workers goes with --ray: add --ray or drop --workers.")
    fallback = _precision_fallback(args, None)
    if fallback is not None:
        print(fallback, file=sys.stderr)
    return run_server(port=args.port, listen=args.listen, data_dir=args.data_dir,
                      fast=False if args.no_fast else None, precision="native" if fallback else args.precision,
                      compile=args.compile, allowed_hosts=args.allowed_host, classroom=args.classroom,
                      preview_method=args.preview_method, batch_images=args.batch_size,
                      max_waiting_images=args.max_waiting, ray=args.ray, workers=args.workers)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a workflow (API or editor JSON, or a PNG made by Atelier/ComfyUI) headless")
    p.add_argument("workflow", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="change an input before running, e.g. --set 3.seed=42 or --set KSampler.steps=30")
    p.add_argument("--data-dir", type=Path, default=Path("atelier-data"),
                   help="where inputs are read and outputs written (as for serve)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps")
    _add_no_fast(p)
    p.set_defaults(func=_run)


def _apply_set(prompt: dict, assignment: str) -> None:
    """`NODE.INPUT=VALUE`: NODE is a node id or a class name used once; VALUE is JSON or plain text."""
    target, sep, raw = assignment.partition("=")
    node, dot, name = target.rpartition(".")
    if not sep or not dot or not node or not name:
        raise InputError(f"--set {assignment!r} is not of the form NODE.INPUT=VALUE (e.g. 3.seed=42).")
    ids = [node] if node in prompt else [i for i, n in prompt.items() if n.get("class_type") == node]
    if len(ids) != 1:
        found = "no node" if not ids else f"{len(ids)} nodes ({', '.join(ids)})"
        raise InputError(f"--set {assignment!r}: {found} match {node!r}; use a node id.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    prompt[ids[0]].setdefault("inputs", {})[name] = value


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atelier.graph.catalog import default_registry
    from atelier.graph.executor import ExecutionListener, Executor
    from atelier.graph.validation import validate_prompt
    from atelier.graph.workflow import load_workflow
    from atelier.server.files import DataDir, OutputFiles

    data = DataDir(args.data_dir)
    fallback = _precision_fallback(args, args.device)
    if fallback is not None:
        print(fallback, file=sys.stderr)
    registry = default_registry(data.root, OutputFiles(data), device=args.device, fast=False if args.no_fast else None,
                                precision="native" if fallback else args.precision, compile=args.compile)
    loaded = load_workflow(args.workflow, registry)
    prompt = loaded.prompt
    for assignment in args.set:
        _apply_set(prompt, assignment)
    check = validate_prompt(prompt, registry)
    if not check.ok:
        details = "; ".join(
            f"node {n} ({e['class_type']}): {err['message']} {err['details']}".strip()
            for n, e in check.node_errors.items() for err in e["errors"]
        ) or check.error["message"]
        raise InputError(f"The workflow {args.workflow} does not validate: {details}.")

    class Progress(ExecutionListener):
        bar = None

        def executing(self, node_id: str) -> None:
            print(f"node {node_id} {prompt[node_id]['class_type']}", file=sys.stderr)

        def progress(self, node_id: str, value: float, total: float) -> None:
            if self.bar is None or self.bar.total != total or value <= 1:
                if self.bar is not None:
                    self.bar.close()
                self.bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False)
            self.bar.update(value - self.bar.n)

    listener = Progress()
    result = Executor(registry).execute(check.prompt, check.outputs, listener,
                                        {"extra_pnginfo": {"workflow": loaded.workflow}})
    if listener.bar is not None:
        listener.bar.close()
    if result.status != "success":
        message = (result.error or {}).get("exception_message", result.status)
        raise InputError(f"The workflow stopped at node {(result.error or {}).get('node_id')}: {message}")
    for ui in result.ui.values():
        for ref in ui.get("images", []):
            print(data.folder(ref["type"]) / ref.get("subfolder", "") / ref["filename"])
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score the embedded model (see atelier/world/eval_run.py)", add_help=False)
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from atelier.world.eval_run import main as eval_main

    return eval_main(args.rest)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model file/folder, or print the parameters stored in a PNG")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    if args.path.suffix.lower() == ".png":
        from atelier.images import png_metadata

        meta = png_metadata(args.path)
        if not meta:
            raise InputError(f"{args.path} holds no generation parameters (no prompt, workflow or parameters text).")
        if "parameters" in meta:
            print(meta["parameters"])
        for key in ("prompt", "workflow"):
            if key in meta:
                print(f"\n[{key}]")
                print(json.dumps(meta[key], indent=1, ensure_ascii=False))
        return 0
    from atelier.models.info import describe_model

    print(describe_model(args.path))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the embedded model (stages vae, clip, unet); see atelier/world/train.py",
                       add_help=False)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from atelier.world.train import main as train_main

    train_main(args.rest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier : Architecture de la Diffusion")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_serve, _add_run, _add_info, _add_train, _add_eval):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    with contextlib.suppress(ValueError, OSError):  # a stderr without a file descriptor (a test's capture)
        faulthandler.enable()  # a crash in native code (a GPU kernel, a compiled package) still says where it was
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command not in ("train", "eval") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return args.func(args)
    except AtelierError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atelier: interrupted; nothing was written.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `atelier info x.png | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
