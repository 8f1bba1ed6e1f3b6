"""The data directory, safe paths inside it, and the file API that nodes use to write their outputs.

    <data_dir>/
        input/            images uploaded by the editor (LoadImage reads them)
        output/           what SaveImage writes: <prefix>_00001_.png, never overwritten
        temp/             PreviewImage files; emptied when the server starts
        user/default/     the editor's settings (comfy.settings.json) and saved workflows (workflows/)
        models/           checkpoints/, vae/, loras/, embeddings/, diffusion_models/, text_encoders/ (ComfyUI's)
        atelier.sqlite    the queue and the history, so both survive a restart

Every path that comes from a request goes through `safe_join`: it refuses absolute paths, `..` and symlinks that
lead out of their folder. Nodes never build output paths themselves; they ask `OutputFiles`:

    files = OutputFiles(DataDir("~/atelier-data"))
    ref = files.save_image(pil_image, "Atelier", text={"prompt": json.dumps(prompt)})
    # ref == {"filename": "Atelier_00001_.png", "subfolder": "", "type": "output"}: put it in the node's UI output
    return NodeOutput(result=(), ui={"images": [ref]})
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, PngImagePlugin

from atelier.errors import AtelierError

FILE_KINDS = ("input", "output", "temp")  # the `type` of a file reference {"filename", "subfolder", "type"}
MODEL_FOLDERS = (
    "checkpoints",
    "vae",
    "loras",
    "embeddings",
    "diffusion_models",
    "text_encoders",
    "upscale_models",
    "controlnet",
)
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
MAX_PREFIX_CHARACTERS = 200  # a filename prefix, subfolders included: file names stop at 255 bytes
PARTIAL_PREFIX = ".tmp-"  # files being written (write_atomic, write_new); left over only by a killed server


class UnsafePathError(AtelierError):
    """A path from a request that points outside its folder. `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class DataDir:
    """The folders of one Atelier data directory (created on first use)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.input = self.root / "input"
        self.output = self.root / "output"
        self.temp = self.root / "temp"
        self.user = self.root / "user" / "default"
        self.models = self.root / "models"
        self.database = self.root / "atelier.sqlite"
        for folder in (self.input, self.output, self.temp, self.user / "workflows"):
            folder.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FOLDERS:
            (self.models / name).mkdir(parents=True, exist_ok=True)

    def folder(self, kind: str) -> Path:
        """The folder of a file kind: "input", "output" or "temp"."""
        if kind not in FILE_KINDS:
            raise UnsafePathError(f"The file type {kind!r} is not known; expected one of {', '.join(FILE_KINDS)}.")
        return getattr(self, kind)

    def model_folder(self, name: str) -> Path | None:
        """models/<name>, or None when `name` is not one of MODEL_FOLDERS."""
        return self.models / name if name in MODEL_FOLDERS else None

    def remove_partial_writes(self) -> list[Path]:
        """Delete the temporary files of writes a killed server never finished (".tmp-*" in input/, output/ and
        user/): their data never reached a real name. Call it on start, before anything writes. Returns them."""
        partial = [p for folder in (self.input, self.output, self.user) for p in folder.rglob(PARTIAL_PREFIX + "*")]
        for path in partial:
            path.unlink(missing_ok=True)
        return partial

    def clear_temp(self) -> None:
        """Empty temp/ (previews of an earlier session), as ComfyUI does on start."""
        shutil.rmtree(self.temp, ignore_errors=True)
        self.temp.mkdir(parents=True, exist_ok=True)

    def install_inputs(self, source: Path) -> list[str]:
        """Copy the images of `source` (the templates' example inputs) into input/ where no file has their name,
        so a fresh data directory can run the img2img and inpainting templates. The user's files are never
        overwritten. Returns the names copied."""
        copied = []
        for path in sorted(source.glob("*.png")) if source.is_dir() else []:
            target = self.input / path.name
            if not target.exists():
                shutil.copyfile(path, target)
                copied.append(path.name)
        return copied


NAME_MAX = 255  # bytes in one file name (ext4, APFS and NTFS all stop at 255)
PATH_MAX = 1024  # bytes in a relative path from a request (the system's own limit, 4096, includes the data dir)


def _shown(text: str) -> str:
    """A name from a request as an error message quotes it: cut after 60 characters."""
    return repr(text if len(text) <= 60 else text[:60] + "...")


def _parts(relative: str, what: str) -> list[str]:
    """The components of a relative path from a request, or an UnsafePathError (absolute paths, drives, `..`,
    names the file system would refuse as too long)."""
    if not relative:
        return []
    if len(relative.encode("utf-8", "replace")) > PATH_MAX:
        raise UnsafePathError(
            f"The {what} {_shown(relative)} is {len(relative)} characters long; expected at most {PATH_MAX} bytes."
        )
    if "\x00" in relative:
        raise UnsafePathError(f"The {what} {relative!r} contains a NUL character; expected a plain relative path.")
    if (
        PurePosixPath(relative).is_absolute()
        or PureWindowsPath(relative).is_absolute()
        or PureWindowsPath(relative).drive
    ):
        raise UnsafePathError(f"The {what} {relative!r} is an absolute path; expected a path relative to its folder.")
    parts = [p for p in re.split(r"[\\/]+", relative) if p not in ("", ".")]
    for part in parts:
        if len(part.encode("utf-8", "replace")) > NAME_MAX:
            raise UnsafePathError(
                f"The {what} {_shown(relative)} has a name of {len(part)} characters; "
                f"expected at most {NAME_MAX} bytes per name."
            )
    return parts


def _inside(parts: list[str], shown: str, what: str) -> list[str]:
    """The parts with each `..` taken back lexically ("a/../b" -> ["b"], as ComfyUI's normpath does), or an
    UnsafePathError when a `..` would climb above the folder ("../x", "a/../../x")."""
    kept: list[str] = []
    for part in parts:
        if part != "..":
            kept.append(part)
        elif kept:
            kept.pop()
        else:
            raise UnsafePathError(f"The {what} {shown!r} contains '..'; expected a path inside its folder.")
    return kept


def safe_join(base: Path, *relative: str, what: str = "path") -> Path:
    """`base / relative...`, refusing absolute paths, a `..` that leads out of `base` (one that stays inside is
    taken back: "a/../b.png" is "b.png"), and symlinks that resolve outside `base` (403)."""
    shown = "/".join(r for r in relative if r)
    parts = _inside([p for rel in relative for p in _parts(rel, what)], shown, what)
    candidate = base.joinpath(*parts)
    resolved = candidate.resolve()
    if not resolved.is_relative_to(base.resolve()):
        shown = "/".join(parts)
        raise UnsafePathError(f"The {what} {shown!r} leads outside its folder through a symbolic link.", status=403)
    return candidate


def files_under(folder: Path, extensions: tuple[str, ...] | None = None) -> Iterator[Path]:
    """Every file below `folder` (sorted, symlinks that leave the folder skipped), optionally by extension."""
    if not folder.is_dir():
        return
    root = folder.resolve()
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or not path.resolve().is_relative_to(root):
            continue
        if extensions is None or path.suffix.lower() in extensions:
            yield path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file next to `path`, then rename it over `path` (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_new(
    folder: Path,
    name_for: Callable[[int], str],
    data: bytes,
    start: int = 1,
    before_link: Callable[[Path], None] | None = None,
) -> Path:
    """Write `data` under the first free name `name_for(counter)` (counter = start, start+1, ...), atomically.

    The data goes to a temporary file that is then hard-linked to the final name: a link fails if the name exists,
    so two writers can never overwrite each other's file, and no half-written file is ever visible.
    `before_link(target)` is called before the name appears (the server records it in the prompt's history), so
    a kill at any moment leaves no file that nobody knows of; at worst a recorded name that never appeared."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        counter = start
        while True:
            target = folder / name_for(counter)
            if target.exists():
                counter += 1
                continue
            if before_link is not None:
                before_link(target)
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                counter += 1
    finally:
        Path(tmp).unlink(missing_ok=True)


def encode_png(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes with each entry of `text` as a tEXt chunk (ComfyUI stores `prompt` and `workflow` this way)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


class OutputFiles:
    """The file API for nodes: numbered output files that are never overwritten, written atomically.

    A `prefix` is ComfyUI's filename_prefix: it may hold a subfolder ("portraits/cat" writes
    output/portraits/cat_00001_.png). Numbering continues after the highest number already used by that prefix."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    def _split_prefix(self, prefix: str, kind: str) -> tuple[Path, str, str]:
        """(folder, subfolder as the editor writes it, file stem) for a filename prefix."""
        if len(prefix) > MAX_PREFIX_CHARACTERS:
            raise UnsafePathError(
                f"The filename prefix has {len(prefix)} characters; the most is {MAX_PREFIX_CHARACTERS}."
            )
        parts = _inside(_parts(prefix.strip() or "Atelier", "filename prefix"), prefix, "filename prefix")
        if not parts:
            raise UnsafePathError(f"The filename prefix {prefix!r} has no file name; expected e.g. 'Atelier'.")
        room = NAME_MAX - len("_00001_.webp") - 8  # the counter may grow past five digits
        if len(parts[-1].encode("utf-8", "replace")) > room:
            raise UnsafePathError(
                f"The filename prefix {_shown(prefix)} ends in a name of {len(parts[-1])} characters; expected at "
                f"most {room} bytes, which leaves room for the counter and the extension."
            )
        subfolder = "/".join(parts[:-1])
        folder = safe_join(self.data.folder(kind), subfolder, what="filename prefix")
        return folder, subfolder, parts[-1]

    def check_prefix(self, prefix: str, kind: str = "output") -> None:
        """Raise UnsafePathError when files cannot be written with this prefix (NUL, absolute, '..', too long):
        SaveImage asks at validation, before the prompt is queued."""
        self._split_prefix(prefix, kind)

    def next_number(self, prefix: str, kind: str = "output") -> int:
        """The counter the next file written with this prefix will get (1 for a new prefix)."""
        folder, _, stem = self._split_prefix(prefix, kind)
        pattern = re.compile(re.escape(stem) + r"_(\d{5,})_\.[A-Za-z0-9]+$")
        used = [int(m.group(1)) for p in folder.glob(f"{glob_escape(stem)}_*_.*") if (m := pattern.match(p.name))]
        return max(used, default=0) + 1

    def write(
        self,
        data: bytes,
        prefix: str,
        ext: str = "png",
        kind: str = "output",
        claim: Callable[[dict], None] | None = None,
    ) -> dict:
        """Write bytes as `<prefix>_NNNNN_.<ext>`; returns the file reference {"filename", "subfolder", "type"}.
        `claim(ref)` hears the reference before the file appears under its name (see `write_new`)."""
        folder, subfolder, stem = self._split_prefix(prefix, kind)
        ext = ext.lstrip(".")

        def before_link(target: Path) -> None:
            if claim is not None:
                claim({"filename": target.name, "subfolder": subfolder, "type": kind})

        path = write_new(folder, lambda n: f"{stem}_{n:05d}_.{ext}", data, self.next_number(prefix, kind), before_link)
        return {"filename": path.name, "subfolder": subfolder, "type": kind}

    def save_image(
        self,
        image: Image.Image,
        prefix: str,
        kind: str = "output",
        text: dict[str, str] | None = None,
        claim: Callable[[dict], None] | None = None,
    ) -> dict:
        """Save a PIL image as PNG (with tEXt chunks) and return its file reference for the node's UI output."""
        return self.write(encode_png(image, text), prefix, "png", kind, claim)

    def path(self, ref: dict) -> Path:
        """The file on disk for a reference {"filename", "subfolder", "type"} (e.g. LoadImage's input image)."""
        folder = self.data.folder(ref.get("type", "input"))
        return safe_join(folder, ref.get("subfolder", ""), ref["filename"], what="file")

    def input_path(self, name: str) -> Path:
        """input/<name>, where `name` is what LoadImage's combo shows ("photo.png" or "pasted/image.png")."""
        return safe_join(self.data.input, name, what="input image")

    def input_images(self) -> list[str]:
        """The images in input/ as LoadImage's combo lists them: relative paths with '/', sorted."""
        exts = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
        return [p.relative_to(self.data.input).as_posix() for p in files_under(self.data.input, exts)]


def glob_escape(text: str) -> str:
    """Escape glob metacharacters so a prefix like 'a[1]' matches literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)
