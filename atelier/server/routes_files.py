"""Images in and out: GET /view serves input/output/temp files, POST /upload/image and /upload/mask store uploads.

Every name from a request goes through files.safe_join (no absolute paths, no `..`, no symlinks out). Uploads are
read as a stream and refused past the size limit, refused when they are not images, and refused when their
header announces more pixels than the decompression-bomb limit (checked before any pixel is decoded).
"""

from __future__ import annotations

import io
import json
import mimetypes
import warnings
from collections.abc import Callable
from pathlib import Path

from aiohttp import BodyPartReader, web
from PIL import Image, UnidentifiedImageError

from atelier.server.classroom import may_read, who
from atelier.server.files import FILE_KINDS, DataDir, UnsafePathError, encode_png, safe_join, write_atomic
from atelier.server.state import add_api, error_text, state

PREVIEW_FORMATS = {"webp": ("WEBP", "image/webp"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg")}


def split_type_suffix(filename: str, default: str) -> tuple[str, str]:
    """'cat.png [input]' -> ('cat.png', 'input'): the editor tags file names with their folder this way."""
    for kind in FILE_KINDS:
        suffix = f" [{kind}]"
        if filename.endswith(suffix):
            return filename[: -len(suffix)], kind
    return filename, default


# ---- GET /view ----


def _image_response(image: Image.Image, fmt: str, mime: str, filename: str, quality: int = 90) -> web.Response:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    return web.Response(
        body=buffer.getvalue(), content_type=mime, headers={"Content-Disposition": f'filename="{filename}"'}
    )


async def view(request: web.Request) -> web.StreamResponse:
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
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Content-Disposition": f'filename="{path.name}"', "Content-Type": mime}
        return web.FileResponse(path, headers=headers)
    try:
        with Image.open(path) as opened:
            image = opened.copy()
    except (OSError, UnidentifiedImageError):
        return error_text(400, f"The file {filename!r} is not an image, so it has no preview or channels.")
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":  # the alpha channel alone, on black: how the mask editor reads a mask
        alpha = image.convert("RGBA").getchannel("A")
        image = Image.new("RGBA", image.size)
        image.putalpha(alpha)
    elif channel != "rgba":
        return error_text(400, f"The channel {channel!r} is not known; expected rgba, rgb or a.")
    if preview is not None:
        name, _, quality = preview.partition(";")
        if name.lower() not in PREVIEW_FORMATS:
            return error_text(400, f"The preview format {name!r} is not known; expected webp or jpeg.")
        fmt, mime = PREVIEW_FORMATS[name.lower()]
        if fmt == "JPEG":
            image = image.convert("RGB")
        q = int(quality) if quality.isdigit() else 90
        return _image_response(image, fmt, mime, Path(path.name).stem + "." + name.lower(), min(100, q))
    return _image_response(image, "PNG", "image/png", Path(path.name).stem + ".png")


# ---- uploads ----


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_form(request: web.Request, limit: int) -> tuple[dict[str, str], str, bytes]:
    """The text fields and the one file ("image") of a multipart upload, refusing files over `limit` bytes."""
    if not request.content_type.startswith("multipart/"):
        raise UploadError(400, "An upload must be multipart/form-data with the file in the 'image' field.")
    reader = await request.multipart()
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


def check_image(data: bytes, filename: str, max_pixels: int) -> Image.Image:
    """Open uploaded bytes as an image (size read from the header first), or raise an UploadError sentence."""
    limit = f"the {max_pixels / 1e6:.0f} megapixel limit for uploads"
    try:
        with warnings.catch_warnings():  # PIL warns above its own limit; ours is checked just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only: no pixel is decoded yet
    except Image.DecompressionBombError:  # PIL's own guard, for sizes far above ours
        raise UploadError(400, f"The image {filename!r} has far more pixels than {limit}.") from None
    except (UnidentifiedImageError, OSError):
        raise UploadError(400, f"The file {filename!r} is not an image; expected a PNG, JPEG or WebP file.") from None
    width, height = image.size
    if width * height > max_pixels:
        raise UploadError(400, f"The image {filename!r} is {width}x{height}, more than {limit}.")
    try:
        image.load()  # decode fully: a truncated or corrupt file is refused now, not when a node reads it
    except (OSError, SyntaxError, ValueError):
        raise UploadError(400, f"The image {filename!r} is damaged and cannot be decoded.") from None
    return image


def _store(folder: Path, subfolder: str, filename: str, data: bytes, overwrite: bool) -> str:
    """Save under `filename`, or `name (1).ext`, `name (2).ext`... when taken by different content.
    Returns the name used (the existing one when the same bytes are already there)."""
    base = safe_join(folder, subfolder, what="subfolder")
    target = safe_join(base, filename, what="file name")
    stem, ext = Path(filename).stem, Path(filename).suffix
    counter = 1
    while target.exists() and not overwrite:
        if target.is_file() and target.read_bytes() == data:
            return target.name
        target = base / f"{stem} ({counter}){ext}"
        counter += 1
    write_atomic(target, data)
    return target.name


async def _upload(request: web.Request, mask: bool) -> web.Response:
    st = state(request)
    try:
        fields, filename, data = await _read_form(request, st.limits.max_upload_bytes)
        image = check_image(data, filename, st.limits.max_image_pixels)
        kind = fields.get("type") or "input"
        if kind not in FILE_KINDS:
            raise UploadError(400, f"The upload type {kind!r} is not known; expected input, output or temp.")
        subfolder = fields.get("subfolder", "")
        if st.classroom is not None:  # a learner's uploads go to their own folder, classroom/<id>/
            subfolder = "/".join(p for p in (st.classroom.upload_folder(who(request)), subfolder) if p)
        folder = st.data.folder(kind)
        overwrite = fields.get("overwrite", "").lower() in ("true", "1")
        if mask:
            data = _apply_mask(
                st.data, fields.get("original_ref", ""), image, lambda ref: may_read(st, who(request), ref)
            )
        name = _store(folder, subfolder, Path(filename).name, data, overwrite)
    except UploadError as ex:
        return error_text(ex.status, str(ex))
    except UnsafePathError as ex:
        return error_text(ex.status, str(ex))
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


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
    add_api(app, "POST", "/upload/image", upload_image)
    add_api(app, "POST", "/upload/mask", upload_mask)
