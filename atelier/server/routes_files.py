"""Images in and out: GET /view serves input/output/temp files, POST /upload/image and /upload/mask store uploads.

Every name from a request goes through files.safe_join (no absolute paths, no `..` that leads out, no symlinks
out). Uploads are read as a stream and refused past the size limit. An upload that is an image is refused when its
header announces more pixels than the decompression-bomb limit (checked before any pixel is decoded) or when it is
damaged; any other file is stored as it came, as ComfyUI stores it (API clients upload text, JSON, audio...).

An upload never replaces a file in output/ (what a prompt made, which history points to), even with overwrite.
A file is served with the type its bytes show, never the one its name suggests (security.stored_file): an upload
named `gallery.html` that is a PNG with a script appended comes back as image/png, and a file that is no image
comes back as a download.
"""

from __future__ import annotations

import asyncio
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from atelier.server.classroom import Who, may_read, who
from atelier.server.files import FILE_KINDS, DataDir, UnsafePathError, encode_png, safe_join, write_atomic
from atelier.server.security import content_disposition, stored_file
from atelier.server.state import ServerState, add_api, error_text, state

# ?preview=<format>;<quality>; "png" is what ?channel= alone gives.
PREVIEW_FORMATS = {
    "webp": ("WEBP", "image/webp"),
    "jpeg": ("JPEG", "image/jpeg"),
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}


def split_type_suffix(filename: str, default: str) -> tuple[str, str]:
    """'cat.png [input]' -> ('cat.png', 'input'): the editor tags file names with their folder this way."""
    for kind in FILE_KINDS:
        suffix = f" [{kind}]"
        if filename.endswith(suffix):
            return filename[: -len(suffix)], kind
    return filename, default


# ---- GET /view ----


def _render(path: Path, channel: str, fmt: str, quality: int) -> bytes | None:
    """The image at `path` with one channel kept (rgba, rgb, or a: the alpha alone on black, as the mask editor
    reads a mask), encoded as `fmt` (PNG, WEBP, JPEG); None when the file is not an image."""
    try:
        with Image.open(path) as opened:
            image = opened.copy()
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        alpha = image.convert("RGBA").getchannel("A")
        image = Image.new("RGBA", image.size)
        image.putalpha(alpha)
    if fmt == "JPEG":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()


async def view(request: web.Request) -> web.StreamResponse:
    """GET and HEAD /view: HEAD answers the same status and headers with no body (aiohttp drops it), so a client
    can ask whether an image exists, and how large it is, without downloading it."""
    st = state(request)
    if "filename" not in request.query:
        return error_text(400, "The query parameter 'filename' is missing.")
    filename, kind = split_type_suffix(request.query["filename"], request.query.get("type", "output"))
    try:
        folder = st.data.folder(kind)
        path = safe_join(folder, request.query.get("subfolder", ""), filename, what="file")
    except UnsafePathError as ex:
        return error_text(ex.status, str(ex))
    ref = {"filename": filename, "subfolder": request.query.get("subfolder", ""), "type": kind}
    if not filename or not path.is_file() or not may_read(st, who(request), ref):  # another learner's: not there
        return error_text(404, f"The {kind} file {filename!r} does not exist.")

    preview = request.query.get("preview")
    channel = request.query.get("channel", "rgba")
    if preview is None and channel == "rgba":
        return stored_file(path)
    if channel not in ("rgba", "rgb", "a"):
        return error_text(400, f"The channel {channel!r} is not known; expected rgba, rgb or a.")
    name, _, quality = (preview or "png").partition(";")
    if name.lower() not in PREVIEW_FORMATS:
        return error_text(400, f"The preview format {name!r} is not known; expected webp or jpeg.")
    fmt, mime = PREVIEW_FORMATS[name.lower()]
    q = min(100, int(quality)) if quality.isdigit() else 90
    # Decoding and encoding take long for a large image: in a thread, so the event loop keeps serving others.
    body = await asyncio.get_running_loop().run_in_executor(None, _render, path, channel, fmt, q)
    if body is None:
        return error_text(400, f"The file {filename!r} is not an image, so it has no preview or channels.")
    disposition = content_disposition("inline", f"{path.stem}.{name.lower()}")
    return web.Response(body=body, content_type=mime, headers={"Content-Disposition": disposition})


# ---- uploads ----


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_form(request: web.Request, limit: int) -> tuple[dict[str, str], str, bytes]:
    """The text fields and the one file ("image") of a multipart upload, refusing files over `limit` bytes and
    bodies that are not valid multipart (no boundary, cut short, a part without headers) with a 400."""
    if not request.content_type.startswith("multipart/"):
        raise UploadError(400, "An upload must be multipart/form-data with the file in the 'image' field.")
    try:
        return await _read_parts(await request.multipart(), limit)
    except (ValueError, AssertionError, HttpProcessingError) as ex:  # aiohttp's parser on a broken body
        text = ex.message if isinstance(ex, HttpProcessingError) else str(ex)
        reason = text.strip().splitlines()[0] if text.strip() else "a part with malformed headers"
        raise UploadError(400, f"The upload body is not valid multipart/form-data ({reason[:80]}).") from None


async def _read_parts(reader: MultipartReader, limit: int) -> tuple[dict[str, str], str, bytes]:
    fields: dict[str, str] = {}
    filename, data = "", b""
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "image":
            filename = part.filename or ""
            chunks, size = [], 0
            while chunk := await part.read_chunk(1 << 16):
                size += len(chunk)
                if size > limit:
                    mb = limit / (1024 * 1024)
                    raise UploadError(413, f"The upload {filename!r} is larger than the {mb:.0f} MB limit.")
                chunks.append(chunk)
            data = b"".join(chunks)
        else:
            text = await part.read(decode=True)
            if len(text) > 64 * 1024:
                raise UploadError(400, f"The form field {part.name!r} is too long.")
            fields[part.name or ""] = text.decode("utf-8", errors="replace")
    if not filename:
        raise UploadError(400, "The upload has no file in its 'image' field.")
    return fields, filename, data


def check_image(data: bytes, filename: str, max_pixels: int, required: bool = True) -> Image.Image | None:
    """Open uploaded bytes as an image (size read from the header first), or raise an UploadError sentence.
    Bytes that are no image at all raise too when `required`, else give None (a file stored as it is)."""
    limit = f"the {max_pixels / 1e6:.0f} megapixel limit for uploads"
    try:
        with warnings.catch_warnings():  # PIL warns above its own limit; ours is checked just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only: no pixel is decoded yet
    except Image.DecompressionBombError:  # PIL's own guard, for sizes far above ours
        raise UploadError(400, f"The image {filename!r} has far more pixels than {limit}.") from None
    except (UnidentifiedImageError, OSError):
        if not required:
            return None
        raise UploadError(400, f"The file {filename!r} is not an image; expected a PNG, JPEG or WebP file.") from None
    except ValueError:  # a text chunk that inflates past PngImagePlugin.MAX_TEXT_CHUNK (a zTXt/iTXt bomb), ...
        raise UploadError(400, _metadata_refusal(filename)) from None
    width, height = image.size
    if width * height > max_pixels:
        raise UploadError(400, f"The image {filename!r} is {width}x{height}, more than {limit}.")
    try:
        image.load()  # decode fully: a truncated or corrupt file is refused now, not when a node reads it
    except ValueError:  # ... also when the text chunk comes after the pixels
        raise UploadError(400, _metadata_refusal(filename)) from None
    except (OSError, SyntaxError, EOFError):
        raise UploadError(400, f"The image {filename!r} is damaged and cannot be decoded.") from None
    return image


def _metadata_refusal(filename: str) -> str:
    """PIL inflates each PNG text chunk to at most MAX_TEXT_CHUNK bytes (64 x that in all), then raises ValueError:
    a 200 MB zTXt bomb costs a few MB of memory, not 200."""
    mb = PngImagePlugin.MAX_TEXT_CHUNK / (1024 * 1024)
    return (
        f"The image {filename!r} has metadata that is malformed or too large (PNG text chunks may inflate to "
        f"{mb:.0f} MB each); expected an ordinary PNG, JPEG or WebP file."
    )


def upload_name(filename: str) -> str:
    """The name an upload is stored under: the last component of what the browser sent ("x/cat.png" -> "cat.png"),
    refused when it names no file ("", ".", "..")."""
    name = Path(filename).name
    if name in ("", ".", ".."):
        raise UploadError(400, f"The upload's file name {filename[:80]!r} names no file; expected e.g. 'photo.png'.")
    return name


def _store(folder: Path, subfolder: str, filename: str, data: bytes, overwrite: bool, kind: str) -> str:
    """Save under `filename`, or `name (1).ext`, `name (2).ext`... when taken by different content.
    Returns the name used (the existing one when the same bytes are already there). An image that a prompt made
    (output/) is never replaced, even with overwrite: history and the PNG's own metadata point to it."""
    base = safe_join(folder, subfolder, what="subfolder")
    target = safe_join(base, filename, what="file name")
    if overwrite and kind == "output" and target.exists():
        raise UploadError(
            403, f"The output file {filename!r} was made by a prompt; an upload may not replace it (use another name)."
        )
    stem, ext = Path(filename).stem, Path(filename).suffix
    counter = 1
    while target.exists() and not overwrite:
        if target.is_file() and target.read_bytes() == data:
            return target.name
        target = safe_join(base, f"{stem} ({counter}){ext}", what="file name")  # the longer name is checked too
        counter += 1
    if target.is_dir():
        raise UploadError(400, f"The upload's file name {filename!r} is the name of a folder; expected a file name.")
    write_atomic(target, data)
    return target.name


def _save_upload(st: ServerState, fields: dict[str, str], filename: str, data: bytes, mask: bool, person: Who) -> dict:
    """Check, (for the mask editor) combine, and store an upload; its file reference {name, subfolder, type}.
    In classroom mode a learner's uploads go to their own folder, classroom/<id>/, and a mask's original must be
    theirs to open. A mask must be an image; /upload/image also stores other files as they came (ComfyUI does:
    API clients upload text and JSON through it), which GET /view then serves only as a download."""
    image = check_image(data, filename, st.limits.max_image_pixels, required=mask)
    kind = fields.get("type") or "input"
    if kind not in FILE_KINDS:
        raise UploadError(400, f"The upload type {kind!r} is not known; expected input, output or temp.")
    subfolder = fields.get("subfolder", "")
    if st.classroom is not None:
        subfolder = "/".join(p for p in (st.classroom.upload_folder(person), subfolder) if p)
    overwrite = fields.get("overwrite", "").lower() in ("true", "1")
    if mask and image is not None:
        data = _apply_mask(st.data, fields.get("original_ref", ""), image, lambda ref: may_read(st, person, ref))
    folder = st.data.folder(kind)
    stored = safe_join(folder, subfolder, what="subfolder")  # "a/../b" is "b": the reference names where it is
    subfolder = stored.relative_to(folder).as_posix() if stored != folder else ""
    name = _store(folder, subfolder, upload_name(filename), data, overwrite, kind)
    return {"name": name, "subfolder": subfolder, "type": kind}


async def _upload(request: web.Request, mask: bool) -> web.Response:
    st = state(request)
    try:
        fields, filename, data = await _read_form(request, st.limits.max_upload_bytes)
        # Decoding an 8000x8000 image takes most of a second: in a thread, so the event loop serves everyone else.
        ref = await asyncio.get_running_loop().run_in_executor(
            None, _save_upload, st, fields, filename, data, mask, who(request)
        )
    except (UploadError, UnsafePathError) as ex:
        return error_text(ex.status, str(ex))
    return web.json_response(ref)


def _apply_mask(data_dir: DataDir, original_ref: str, mask: Image.Image, may_open: Callable[[dict], bool]) -> bytes:
    """The mask editor's upload: the original image with its alpha channel replaced by the mask's alpha. `may_open`
    says whether the uploader may read the original (classroom mode: not another learner's)."""
    try:
        ref = json.loads(original_ref)
        name, kind = split_type_suffix(ref["filename"], ref.get("type") or "input")
        path = safe_join(data_dir.folder(kind), ref.get("subfolder") or "", name, what="file")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UploadError(400, "The mask upload needs original_ref, the JSON reference of the masked image.") from None
    if not path.is_file() or not may_open({**ref, "filename": name, "type": kind}):
        raise UploadError(404, f"The masked image {ref['filename']!r} does not exist.")
    with Image.open(path) as opened:
        original = opened.convert("RGBA")
    alpha = mask.convert("RGBA").getchannel("A").resize(original.size)
    original.putalpha(alpha)
    return encode_png(original)


async def upload_image(request: web.Request) -> web.Response:
    return await _upload(request, mask=False)


async def upload_mask(request: web.Request) -> web.Response:
    return await _upload(request, mask=True)


def setup(app: web.Application) -> None:
    add_api(app, "GET", "/view", view)
    add_api(app, "HEAD", "/view", view)
    add_api(app, "POST", "/upload/image", upload_image)
    add_api(app, "POST", "/upload/mask", upload_mask)
