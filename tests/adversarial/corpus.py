"""The hostile requests: what an outside tester sent a shared Atelier server (issue 21), grouped in families.

Every request here must be refused the way a person can act on: a 4xx status whose body is one sentence (JSON
{"error": ...} or plain text), with no traceback in the reply or in the server's log, and the server answering
the next request. `owner` names the helper branch whose part of the server a case belongs to, when another
branch fixes it (the tests mark those xfail, not strict, until it lands).

    for case in CORPUS:
        case.family, case.name, case.method, case.path, case.body, case.headers
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field

from PIL import Image

from tests.adversarial.live import Body


@dataclass(frozen=True)
class Case:
    family: str
    name: str
    method: str
    path: str
    body: Body = None
    headers: dict[str, str] = field(default_factory=dict)
    owner: str | None = None  # a branch other than harden-store fixes this one

    @property
    def id(self) -> str:
        return f"{self.family}:{self.name}"


def nested(depth: int, leaf: str = "0") -> str:
    """JSON text of `depth` nested arrays around `leaf`, written without recursion."""
    return "[" * depth + leaf + "]" * depth


def chain(length: int, width: int = 16) -> dict:
    """MakeImage -> SlowImage x (length - 2) -> SaveStub (stub nodes); width above 64 makes the first node fail."""
    prompt = {"0": {"class_type": "MakeImage", "inputs": {"width": width, "height": 8, "colour": "red"}}}
    for i in range(1, length - 1):
        prompt[str(i)] = {"class_type": "SlowImage", "inputs": {"image": [str(i - 1), 0], "steps": 1, "delay": 0.0}}
    prompt[str(length - 1)] = {
        "class_type": "SaveStub",
        "inputs": {"images": [str(length - 2), 0], "filename_prefix": "a"},
    }
    return prompt


def good_prompt() -> dict:
    return chain(3)


def with_prompt(prompt: object, **fields: object) -> dict:
    return {"prompt": prompt, "client_id": "adversary", **fields}


def node(class_type: object = "SaveStub", **inputs: object) -> dict:
    """A prompt node; a SaveStub gets its filename_prefix unless told otherwise."""
    if class_type == "SaveStub":
        inputs = {"filename_prefix": "a", **inputs}
    return {"class_type": class_type, "inputs": inputs}


# ---- 1. bodies that are not strict JSON, sent to every route that reads JSON ----

JSON_ROUTES = [
    ("POST", "/api/prompt"),
    ("POST", "/api/queue"),
    ("POST", "/api/history"),
    ("POST", "/api/jobs/cancel"),
    ("POST", "/api/settings"),
    ("POST", "/api/settings/Comfy.Locale"),
    ("POST", "/api/interrupt"),
    ("POST", "/api/free"),
    ("POST", "/atelier/lab/graph"),
    ("POST", "/atelier/lab/workflow"),
    ("POST", "/atelier/lab/concepts"),
    ("POST", "/atelier/lab/vae-roundtrip"),
    ("POST", "/atelier/lab/compare"),
]

BAD_JSON: dict[str, Body] = {
    "not-json": "this is not json",
    "truncated": '{"prompt": {"1": ',
    "nan": '{"prompt": NaN, "value": NaN}',
    "infinity": '{"prompt": {}, "number": Infinity}',
    "minus-infinity": "-Infinity",
    "overflowing-float": '{"prompt": {}, "number": 1e400}',
    "nested-100000": nested(100_000),
    "nested-900": nested(900),
    "invalid-utf8": b'{"prompt": "\xff\xfe"}',
    "int-5000-digits": '{"prompt": {}, "number": ' + "9" * 5000 + "}",
}

NOT_OBJECTS: dict[str, Body] = {"array": "[]", "string": '"prompt"', "number": "5", "null": "null"}


def _json_family() -> list[Case]:
    cases = []
    for method, path in JSON_ROUTES:
        route = path.rsplit("/", 1)[-1]
        for name, body in BAD_JSON.items():
            cases.append(Case("strict-json", f"{route}-{name}", method, path, body))
        if path != "/api/settings/Comfy.Locale":  # a single setting may be any JSON value
            for name, body in NOT_OBJECTS.items():
                cases.append(Case("not-an-object", f"{route}-{name}", method, path, body))
    return cases


# ---- 2. POST /prompt: graphs of the wrong shape, wrong types, huge values ----


def _prompt_family() -> list[Case]:
    p = "/api/prompt"
    deep_input: object = 0
    for _ in range(900):
        deep_input = [deep_input]
    graphs: dict[str, dict] = {
        "no-prompt-key": {"client_id": "x"},
        "prompt-is-a-list": with_prompt([good_prompt()]),
        "prompt-is-text": with_prompt("1: SaveStub"),
        "prompt-is-empty": with_prompt({}),
        "node-is-a-number": with_prompt({"1": 5}),
        "node-without-class-type": with_prompt({"1": {"inputs": {}}}),
        "class-type-list": with_prompt({**good_prompt(), "2": node(["SaveStub"])}),
        "class-type-object": with_prompt({**good_prompt(), "2": node({"name": "SaveStub"})}),
        "class-type-null": with_prompt({**good_prompt(), "2": node(None)}),
        "class-type-number": with_prompt({**good_prompt(), "2": node(7)}),
        "class-type-unknown": with_prompt({"1": node("DefinitelyNotANode")}),
        "class-type-unicode": with_prompt({"1": node("Sav\u00e9St\u00fcb\U0001f4a5")}),
        "class-type-nul": with_prompt({"1": node("SaveStub\u0000")}),
        "inputs-is-a-list": with_prompt({"1": {"class_type": "SaveStub", "inputs": [1, 2]}}),
        "inputs-nested-900": with_prompt(
            {**good_prompt(), "1": node("SlowImage", image=["0", 0], steps=deep_input, delay=0.0)}
        ),
        "link-to-missing-node": with_prompt({"2": node(images=["99", 0])}),
        "link-slot-huge": with_prompt({**good_prompt(), "2": node(images=["1", 10**30])}),
        "link-slot-negative": with_prompt({**good_prompt(), "2": node(images=["1", -1])}),
        "link-of-three": with_prompt({**good_prompt(), "2": node(images=["1", 0, 0])}),
        "self-link": with_prompt(
            {"1": node("SlowImage", image=["1", 0], steps=1, delay=0.0), "2": node(images=["1", 0])}
        ),
        "cycle-of-two": with_prompt(
            {
                "1": node("SlowImage", image=["2", 0], steps=1, delay=0.0),
                "2": node("SlowImage", image=["1", 0], steps=1, delay=0.0),
                "3": node(images=["2", 0]),
            }
        ),
        "chain-490-faulty": with_prompt(chain(490, width=1000)),
        "chain-5000-faulty": with_prompt(chain(5000, width=1000)),
        "int-huge": with_prompt({**good_prompt(), "0": node("MakeImage", width=10**300, height=8, colour="red")}),
        "int-as-text": with_prompt({**good_prompt(), "0": node("MakeImage", width="wide", height=8, colour="red")}),
        "int-is-boolean": with_prompt({**good_prompt(), "0": node("MakeImage", width=True, height=8, colour="red")}),
        "int-is-null": with_prompt({**good_prompt(), "0": node("MakeImage", width=None, height=8, colour="red")}),
        "float-is-text-nan": with_prompt(
            {**good_prompt(), "1": node("SlowImage", image=["0", 0], steps=1, delay="nan")}
        ),
        "combo-unknown": with_prompt({**good_prompt(), "0": node("MakeImage", width=16, height=8, colour="ultra")}),
        "combo-object": with_prompt({**good_prompt(), "0": node("MakeImage", width=16, height=8, colour={"r": 1})}),
        "text-of-a-megabyte": with_prompt({**good_prompt(), "2": node(images=["1", 0], filename_prefix="x" * 10**6)}),
        "required-input-missing": with_prompt({"0": node("MakeImage", width=16), "2": node(images=["0", 0])}),
        "targets-number": with_prompt(good_prompt(), partial_execution_targets=5),
        "targets-text": with_prompt(good_prompt(), partial_execution_targets="2"),
        "targets-object": with_prompt(good_prompt(), partial_execution_targets={"2": True}),
        "targets-unknown-node": with_prompt(good_prompt(), partial_execution_targets=["404"]),
        "number-nan-text": with_prompt(good_prompt(), number="NaN"),
        "number-infinity-text": with_prompt(good_prompt(), number="Infinity"),
        "number-1e19": with_prompt(good_prompt(), number=1e19),
        "number-2-pow-53": with_prompt(good_prompt(), number=2**53),
        "number-fraction": with_prompt(good_prompt(), number=1.5),
        "number-boolean": with_prompt(good_prompt(), number=True),
        "number-list": with_prompt(good_prompt(), number=[1]),
        "extra-data-list": with_prompt(good_prompt(), extra_data=[1, 2]),
        "extra-data-text": with_prompt(good_prompt(), extra_data="workflow"),
        "extra-data-5-mb": with_prompt(good_prompt(), extra_data={"extra_pnginfo": {"workflow": "w" * 5 * 2**20}}),
        "prompt-id-number": with_prompt(good_prompt(), prompt_id=12345),
        "prompt-id-10000-chars": with_prompt(good_prompt(), prompt_id="p" * 10_000),
        "client-id-object": with_prompt(good_prompt(), client_id={"sid": 1}),
        "too-many-nodes": with_prompt({str(i): node("MakeImage") for i in range(20_001)}),
    }
    cases = [Case("prompt", name, "POST", p, json.dumps(body)) for name, body in graphs.items()]
    cases.append(Case("prompt", "body-of-45-mb", "POST", p, '{"prompt": {}, "extra_data": "' + "x" * 45 * 2**20 + '"}'))
    cases.append(Case("prompt", "content-length-lies", "POST", p, "{}", {"Content-Length": "99999999999"}))
    return cases


# ---- 3. query strings, unknown ids, path tricks on routes that are not about files ----


def _query_family() -> list[Case]:
    get = [
        ("history-max-items-text", "/api/history?max_items=many"),
        ("history-offset-float", "/api/history?offset=1e9"),
        ("history-max-items-5000-digits", "/api/history?max_items=" + "9" * 5000),
        ("jobs-status-unknown", "/api/jobs?status=exploded"),
        ("jobs-status-unicode", "/api/jobs?status=%E2%98%83"),
        ("jobs-sort-by-unknown", "/api/jobs?sort_by=__class__"),
        ("jobs-limit-text", "/api/jobs?limit=all"),
        ("jobs-offset-nan", "/api/jobs?offset=nan"),
        ("job-unknown", "/api/jobs/does-not-exist"),
        ("job-dot-dot", "/api/jobs/..%2F..%2Fetc%2Fpasswd"),
        ("job-nul", "/api/jobs/%00"),
        ("job-very-long-id", "/api/jobs/" + "j" * 4000),
        ("models-unknown-folder", "/api/models/not-a-folder"),
        ("models-dot-dot", "/api/models/..%2F..%2Fetc"),
        ("experiment-models-unknown", "/api/experiment/models/%2e%2e"),
        ("view-metadata-unknown-folder", "/api/view_metadata/nowhere?filename=x.safetensors"),
        ("view-metadata-not-safetensors", "/api/view_metadata/checkpoints?filename=x.ckpt"),
        ("view-metadata-dot-dot", "/api/view_metadata/checkpoints?filename=../../../etc/x.safetensors"),
        ("userdata-without-dir", "/api/userdata"),
        ("userdata-missing-dir", "/api/userdata?dir=nothing-here"),
        ("global-subgraph-unknown", "/api/global_subgraphs/..%2F..%2Fetc%2Fpasswd"),
        ("lab-tokens-too-long", "/atelier/lab/tokens?text=" + "a" * 3000),
        ("lab-schedules-steps-text", "/atelier/lab/schedules?steps=twenty"),
        ("lab-schedules-steps-zero", "/atelier/lab/schedules?steps=0"),
        ("lab-schedules-steps-million", "/atelier/lab/schedules?steps=1000000"),
        ("lab-schedules-denoise-nan", "/atelier/lab/schedules?denoise=nan"),
        ("lab-schedules-denoise-inf", "/atelier/lab/schedules?denoise=inf"),
        ("lab-schedules-denoise-tiny", "/atelier/lab/schedules?denoise=0"),
        ("lab-schedules-scheduler-unknown", "/atelier/lab/schedules?scheduler=%3Cscript%3E"),
        ("lab-compose-without-kind", "/atelier/lab/compose?colour=red"),
        ("lab-compose-unknown-kind", "/atelier/lab/compose?kind=%3Cscript%3E&colour=red"),
        ("lab-compose-unknown-colour", "/atelier/lab/compose?kind=star&colour=" + "z" * 300),
        ("lab-file-missing", "/lab/no-such-file.js"),
        ("lab-file-dot-dot", "/lab/..%2F..%2Fserver%2Fapp.py"),
        ("template-missing", "/templates/no-such-template.json"),
    ]
    cases = [Case("query-and-path", name, "GET", path) for name, path in get]
    cases.append(Case("query-and-path", "websocket-without-upgrade", "GET", "/ws?clientId=" + "c" * 300))
    cases.append(Case("query-and-path", "upload-mask-not-multipart", "POST", "/api/upload/mask", "{}"))
    return cases


# ---- 4. methods a route does not take ----


def _method_family() -> list[Case]:
    wrong = [
        ("DELETE", "/api/prompt"),
        ("PUT", "/api/queue"),
        ("PATCH", "/api/settings"),
        ("GET", "/api/interrupt"),
        ("GET", "/api/free"),
        ("POST", "/api/object_info"),
        ("DELETE", "/api/history"),
        ("PUT", "/api/jobs/cancel"),
        ("POST", "/api/system_stats"),
        ("GET", "/atelier/lab/graph"),
        ("DELETE", "/atelier/lab/options"),
        ("POST", "/atelier/lab/vocabulary"),
        ("POST", "/api/view"),
        ("PUT", "/api/upload/image"),
        ("PUT", "/api/prompt"),
        ("DELETE", "/api/queue"),
        ("POST", "/api/users"),
        ("DELETE", "/api/extensions"),
        ("POST", "/api/features"),
        ("POST", "/api/embeddings"),
        ("POST", "/api/models"),
        ("DELETE", "/api/models/checkpoints"),
        ("POST", "/api/experiment/models"),
        ("POST", "/api/experiment/models/checkpoints"),
        ("POST", "/api/object_info/SaveStub"),
        ("DELETE", "/api/settings/Comfy.Locale"),
        ("POST", "/api/i18n"),
        ("POST", "/api/global_subgraphs"),
        ("POST", "/api/atelier/default_graph"),
        ("PUT", "/extensions/atelier/default_graph.js"),
        ("DELETE", "/extensions/atelier/offline.js"),
        ("POST", "/templates/index.fr.json"),
        ("DELETE", "/templates/index_logo.json"),
        ("POST", "/api/view_metadata/checkpoints"),
        ("POST", "/api/history/some-id"),
        ("DELETE", "/api/jobs/some-id"),
        ("GET", "/api/jobs/some-id/cancel"),
        ("POST", "/api/v2/userdata"),
        ("PUT", "/api/userdata/a.json"),
        ("GET", "/api/userdata/a.json/move/b.json"),
        ("POST", "/internal/logs"),
        ("POST", "/internal/logs/raw"),
        ("GET", "/internal/logs/subscribe"),
        ("POST", "/internal/folder_paths"),
        ("POST", "/ws"),
        ("POST", "/lab"),
        ("POST", "/lab/"),
        ("POST", "/lab/lab.css"),
        ("POST", "/atelier/lab/options"),
        ("POST", "/atelier/lab/tokens"),
        ("POST", "/atelier/lab/schedules"),
        ("GET", "/atelier/lab/concepts"),
        ("GET", "/atelier/lab/vae-roundtrip"),
        ("GET", "/atelier/lab/compare"),
        ("GET", "/atelier/lab/workflow"),
        ("POST", "/favicon.ico"),
        ("POST", "/user.css"),
        ("POST", "/templates/index.json"),
        ("POST", "/templates/default.json"),
        ("POST", "/workflow_templates"),
        ("POST", "/"),
        ("POST", "/some/page.html"),
    ]
    return [Case("method", f"{method}-{path}", method, path) for method, path in wrong]


# ---- 5. the lab's routes: bodies of the wrong types ----


def _lab_family() -> list[Case]:
    lab = "/atelier/lab"
    bodies = {
        "graph-params-list": ("graph", {"params": []}),
        "graph-params-text": ("graph", {"params": "steps=20"}),
        "graph-params-unknown": ("graph", {"params": {"__class__": 1}}),
        "graph-steps-text": ("graph", {"params": {"steps": "twenty"}}),
        "graph-steps-huge": ("graph", {"params": {"steps": 10**12}}),
        "graph-steps-boolean": ("graph", {"params": {"steps": True}}),
        "graph-width-negative": ("graph", {"params": {"width": -64}}),
        "graph-width-object": ("graph", {"params": {"width": {"px": 64}}}),
        "graph-cfg-text": ("graph", {"params": {"cfg": "high"}}),
        "graph-prompt-number": ("graph", {"params": {"prompt": 5}}),
        "graph-prompt-list": ("graph", {"params": {"prompt": ["a", "b"]}}),
        "graph-sampler-unknown": ("graph", {"params": {"sampler": "warp_drive"}}),
        "graph-seed-random": ("graph", {"params": {"seed": -1}}),
        "graph-denoise-without-image": ("graph", {"params": {"denoise": 0.5}}),
        "graph-view-unknown": ("graph", {"params": {}, "view": "hologram"}),
        "graph-view-list": ("graph", {"params": {}, "view": ["generate"]}),
        "graph-words-text": ("graph", {"params": {}, "view": "attention", "words": "red"}),
        "graph-words-none-usable": ("graph", {"params": {}, "view": "attention", "words": [5, None]}),
        "graph-words-nine": ("graph", {"params": {}, "view": "attention", "words": list("abcdefghi")}),
        "graph-init-image-number": ("graph", {"params": {}, "init_image": 5}),
        "graph-prefix-number": ("graph", {"params": {}, "filename_prefix": 5}),
        "workflow-prompt-missing": ("workflow", {}),
        "workflow-prompt-list": ("workflow", {"prompt": [1]}),
        "workflow-prompt-empty": ("workflow", {"prompt": {}}),
        "workflow-node-number": ("workflow", {"prompt": {"1": 5}}),
        "workflow-class-type-list": ("workflow", {"prompt": {"1": {"class_type": ["X"], "inputs": {}}}}),
        "workflow-inputs-text": ("workflow", {"prompt": {"1": {"class_type": "SaveStub", "inputs": "x"}}}),
        "workflow-no-class-type": ("workflow", {"prompt": {"1": {"inputs": {}}}}),
        "workflow-unicode-digit-id": ("workflow", {"prompt": {"\u00b2": 5}}),
        "concepts-words-text": ("concepts", {"words": "red circle"}),
        "concepts-words-numbers": ("concepts", {"words": [1, 2, 3]}),
        "concepts-images-text": ("concepts", {"words": ["a", "b", "c"], "images": "cat.png"}),
        "concepts-images-numbers": ("concepts", {"words": ["a", "b"], "images": [5]}),
        "concepts-image-dot-dot": ("concepts", {"words": ["a", "b"], "images": [{"filename": "../../etc/passwd"}]}),
        "concepts-image-missing": ("concepts", {"words": ["a", "b"], "images": [{"filename": "nope.png"}]}),
        "concepts-too-few": ("concepts", {"words": ["a"]}),
        "concepts-too-many": ("concepts", {"words": [f"w{i}" for i in range(41)]}),
        "vae-image-missing": ("vae-roundtrip", {}),
        "vae-image-text": ("vae-roundtrip", {"image": "cat.png"}),
        "vae-image-absent": ("vae-roundtrip", {"image": {"filename": "nope.png"}}),
        "vae-image-type-unknown": ("vae-roundtrip", {"image": {"filename": "x.png", "type": "secrets"}}),
        "compare-b-missing": ("compare", {"a": {"filename": "nope.png"}}),
        "compare-filename-number": ("compare", {"a": {"filename": 5}, "b": {"filename": 6}}),
    }
    return [Case("lab", name, "POST", f"{lab}/{route}", json.dumps(body)) for name, (route, body) in bodies.items()]


# ---- 6. settings: values every browser must be able to parse back ----


def _id_list_family() -> list[Case]:
    """Lists of ids past MAX_IDS: a DELETE per id held the loop 7.6 s for a million."""
    ids = [str(i) for i in range(20_000)]
    return [
        Case("id-lists", "history-delete-20000", "POST", "/api/history", json.dumps({"delete": ids})),
        Case("id-lists", "queue-delete-20000", "POST", "/api/queue", json.dumps({"delete": ids})),
        Case("id-lists", "jobs-cancel-20000", "POST", "/api/jobs/cancel", json.dumps({"job_ids": ids})),
    ]


def _settings_family() -> list[Case]:
    return [
        Case("settings", "value-nan", "POST", "/api/settings/Comfy.Locale", "NaN"),
        Case("settings", "value-infinity-in-object", "POST", "/api/settings", '{"Comfy.Locale": Infinity}'),
        Case("settings", "value-overflowing", "POST", "/api/settings/Comfy.Zoom", "1e999"),
        Case("settings", "value-3-mb", "POST", "/api/settings/Comfy.Big", json.dumps("x" * 3 * 2**20)),
        Case(
            "settings",
            "many-values-3-mb",
            "POST",
            "/api/settings",
            json.dumps({f"k{i}": "v" * 1000 for i in range(3000)}),
        ),
        Case("settings", "body-nested-200", "POST", "/api/settings", '{"a": ' + nested(200) + "}"),
    ]


# ---- 7. files, uploads and hosts: harden-http's part of the server ----


MULTIPART = "multipart/form-data"


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_text_bomb() -> bytes:
    """An 8x8 PNG with a zTXt chunk that inflates to 200 MB (194 kB sent), compressed 1 MB at a time."""
    deflate = zlib.compressobj(9)
    inflated = b"".join(deflate.compress(b"A" * 1_000_000) for _ in range(200)) + deflate.flush()
    png, data = _tiny_png(), b"prompt\x00\x00" + inflated
    chunk = struct.pack(">I", len(data)) + b"zTXt" + data + struct.pack(">I", zlib.crc32(b"zTXt" + data))
    return png[:33] + chunk + png[33:]


def _upload(filename: str, data: bytes | None = None, **fields: str) -> tuple[str, str, bytes, dict[str, str]]:
    """(method, path, body, headers) of an /upload/image of `data` (a valid 8x8 PNG by default) as `filename`."""
    parts = [
        b'--XYZ\r\nContent-Disposition: form-data; name="image"; filename="' + filename.encode() + b'"\r\n'
        b"Content-Type: image/png\r\n\r\n" + (data or _tiny_png()) + b"\r\n"
    ]
    parts += [f'--XYZ\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    body = b"".join(parts) + b"--XYZ--\r\n"
    return "POST", "/api/upload/image", body, {"Content-Type": MULTIPART + "; boundary=XYZ"}


def _http_family() -> list[Case]:
    long_name = "n" * 300 + ".png"
    broken_multipart = (
        '--XYZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG'  # no end
    )
    return [
        Case("files", "view-without-filename", "GET", "/api/view"),
        Case("files", "view-dot-dot", "GET", "/api/view?filename=../../etc/passwd&type=input"),
        Case("files", "view-absolute", "GET", "/api/view?filename=/etc/passwd"),
        Case("files", "view-type-unknown", "GET", "/api/view?filename=a.png&type=secrets"),
        Case("files", "view-missing", "GET", "/api/view?filename=nope.png"),
        Case("files", "view-name-300", "GET", f"/api/view?filename={long_name}"),
        Case("files", "userdata-name-300", "GET", f"/api/userdata/{long_name}"),
        Case("files", "userdata-post-name-300", "POST", f"/api/userdata/{long_name}", "{}"),
        Case("files", "userdata-dot-dot", "GET", "/api/userdata/..%2F..%2Fatelier.sqlite"),
        Case("files", "userdata-v2-dot-dot", "GET", "/api/v2/userdata?path=../.."),
        Case("files", "userdata-move-out", "POST", "/api/userdata/a.json/move/..%2F..%2Fa.json"),
        Case("files", "userdata-delete-missing", "DELETE", "/api/userdata/nope.json"),
        Case(
            "files",
            "upload-broken-multipart",
            "POST",
            "/api/upload/image",
            broken_multipart,
            {"Content-Type": "multipart/form-data; boundary=XYZ"},
        ),
        Case("files", "upload-not-multipart", "POST", "/api/upload/image", "{}"),
        Case("files", "upload-no-boundary", "POST", "/api/upload/image", "--x\r\n", {"Content-Type": MULTIPART}),
        Case(
            "files",
            "upload-header-without-colon",
            "POST",
            "/api/upload/image",
            "--XYZ\r\nnoheader\r\n\r\nabc\r\n--XYZ--\r\n",
            {"Content-Type": MULTIPART + "; boundary=XYZ"},
        ),
        Case("files", "upload-name-300", *_upload(long_name)),
        Case("files", "upload-named-dot-overwrite", *_upload(".", overwrite="true")),
        Case("files", "upload-named-dot-dot-overwrite", *_upload("..", overwrite="true")),
        Case("files", "upload-ztxt-bomb", *_upload("bomb.png", data=_png_text_bomb())),
        Case("files", "view-subfolder-6000", "GET", "/api/view?filename=a.png&subfolder=" + "/".join(["s" * 200] * 30)),
        Case("files", "userdata-list-name-300", "GET", f"/api/userdata?dir={long_name}"),
        Case(
            "hosts",
            "websocket-host-not-local",
            "GET",
            "/ws",
            headers={
                "Host": "evil.example",
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        ),
        Case("hosts", "host-not-a-name", "GET", "/api/history", headers={"Host": "a b<script>"}),
        Case("hosts", "host-not-local", "GET", "/api/history", headers={"Host": "evil.example"}),
        Case("hosts", "origin-cross-site-post", "POST", "/api/queue", "{}", {"Origin": "http://evil.example"}),
    ]


def _classroom_family() -> list[Case]:
    """The instructor's routes on a server that is not in classroom mode (the corpus's): each one refused, whatever
    it is sent (tests/server/test_instructor.py covers the learner's and the instructor's sides)."""
    api = "/atelier/classroom"
    return [
        Case("classroom", "state", "GET", f"{api}/state"),
        Case("classroom", "join-svg-query", "GET", f"{api}/join.svg?size=100000"),
        Case("classroom", "pause-body", "POST", f"{api}/pause", '{"x": NaN}'),
        Case("classroom", "resume-list", "POST", f"{api}/resume", "[]"),
        Case("classroom", "workers-add-body", "POST", f"{api}/workers", '{"workers": 1e400}'),
        Case("classroom", "exercise-get", "GET", f"{api}/exercise"),
        Case("classroom", "exercise-nan", "POST", f"{api}/exercise", '{"seed": NaN, "cfg": [1, 7, 1e400]}'),
        Case("classroom", "exercise-delete", "DELETE", f"{api}/exercise"),
        Case("classroom", "remove-list", "POST", f"{api}/remove", '{"learner": ["a", {"b": 1}]}'),
        Case("classroom", "export-zip", "GET", f"{api}/export.zip"),
        Case("classroom", "page-climb", "GET", "/classroom/..%2f..%2fatelier.sqlite"),
        Case("classroom", "page-bare", "GET", "/classroom"),
        Case("classroom", "page-secret-guess", "GET", "/classroom/?instructor=guess"),
        Case("lab", "parcours-check-unknown-step", "GET", "/atelier/lab/parcours/check?step=../../etc&since=-1e400"),
        Case("lab", "parcours-check-no-step", "GET", "/atelier/lab/parcours/check"),
        Case("lab", "parcours-progress-unknown-step", "PUT", "/atelier/lab/parcours/progress",
             '{"steps": {"../../etc": {"done": true}}}'),
        Case("lab", "parcours-progress-junk", "PUT", "/atelier/lab/parcours/progress",
             '{"steps": {"th-noise": {"done": 1, "opened": 1e400, "x": [NaN]}}}'),
        Case("lab", "parcours-progress-list", "PUT", "/atelier/lab/parcours/progress", "[]"),
    ]


CORPUS: list[Case] = [
    *_json_family(),
    *_prompt_family(),
    *_query_family(),
    *_method_family(),
    *_lab_family(),
    *_id_list_family(),
    *_settings_family(),
    *_http_family(),
    *_classroom_family(),
]
FAMILIES = list(dict.fromkeys(case.family for case in CORPUS))
