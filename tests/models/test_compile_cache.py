"""The compile cache's folder is one per environment, and a second process finds its kernels there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from atelier.models import compile_cache
from atelier.models.compile_cache import environment, environment_key, use_compile_cache

CPU = torch.device("cpu")


def test_the_key_is_stable_and_names_what_it_covers():
    assert environment_key(CPU) == environment_key(CPU)
    env = environment(CPU)
    assert {"torch", "python", "triton", "device", "fast_path"} <= env.keys()
    assert env["torch"] == torch.__version__


@pytest.mark.parametrize("change", ["torch", "device", "fast_path"])
def test_another_torch_device_or_fast_path_gets_another_folder(monkeypatch, change):
    before = environment_key(CPU)
    if change == "torch":
        monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
    elif change == "device":
        monkeypatch.setattr(compile_cache.platform, "processor", lambda: "another-cpu")
    else:
        monkeypatch.setattr(compile_cache, "_sources_digest", lambda: "0" * 16)
    assert environment_key(CPU) != before


def test_the_fast_path_digest_reads_the_traced_sources(tmp_path, monkeypatch):
    digest = compile_cache._sources_digest()
    copy = tmp_path / "models"
    copy.mkdir()
    for name in compile_cache._FAST_SOURCES:
        (copy / name).write_bytes((compile_cache.Path(compile_cache.__file__).parent / name).read_bytes())
    (copy / "fast.py").write_text((copy / "fast.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(compile_cache, "__file__", str(copy / "compile_cache.py"))
    assert compile_cache._sources_digest() != digest


def test_the_folder_is_made_and_a_users_own_variables_are_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/of/mine")
    folder = use_compile_cache(CPU, root=tmp_path)
    assert folder == tmp_path / environment_key(CPU)
    assert json.loads((folder / "environment.json").read_text()) == environment(CPU)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == "/somewhere/of/mine"


COMPILE_ONCE = textwrap.dedent("""
    import sys, torch, torch._dynamo.utils as utils
    from pathlib import Path
    from atelier.models.compile_cache import use_compile_cache
    use_compile_cache(torch.device("cpu"), root=Path(sys.argv[1]))
    net = torch.compile(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()), dynamic=False)
    with torch.no_grad():
        net(torch.randn(2, 8))
    c = utils.counters["inductor"]
    print(c["fxgraph_cache_hit"], c["fxgraph_cache_miss"])
""")


@pytest.mark.slow  # two CPU compiles in fresh processes: 30-100 s with the C++ compiler on 2 busy cores
def test_a_second_process_compiles_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}

    def run() -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", COMPILE_ONCE, str(tmp_path)], env=env, capture_output=True,
                             text=True, timeout=600, check=True).stdout
        hits, misses = out.split()[-2:]
        return int(hits), int(misses)

    assert run() == (0, 1)  # cold: the graph is compiled and written
    assert run() == (1, 0)  # warm: found on disk
