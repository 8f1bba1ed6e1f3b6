"""`/interrupt` stops the engine's long loops within a second: the sampler's steps and the VAE's tiles.

The real KSampler, VAEDecode and EmptyLatentImage nodes run on the real server (tests/server/harness.py), on a
UNet and a VAE decoder that only sleep: each sampler step costs STEP_S and each VAE tile TILE_S, so the whole
prompt would take minutes and only an interrupt checked inside the loop can end it in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from aiohttp.test_utils import TestClient, TestServer
from torch import nn

from atelier.graph.kit import Node
from atelier.graph.nodes.latent import EmptyLatentImage, VAEDecode
from atelier.graph.nodes.sampling import KSampler
from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.models.config import VAEConfig
from atelier.models.vae import VAE
from atelier.pipeline import Cond, DiffusionModel
from atelier.server.app import create_app
from tests.server.harness import async_test, is_type, post_prompt, receive

STEP_S = 0.05  # one sampler step
TILE_S = 0.2  # one VAE tile
STOP_WITHIN_S = 1.0


class SleepingUNet(nn.Module):
    config = SimpleNamespace(prediction="eps", adm_in_channels=None)  # an SD1.x-like UNet: no vector y

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # the pipeline reads device and dtype off the parameters

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        time.sleep(STEP_S)
        return torch.zeros_like(x)


class SleepingVAE(VAE):
    def __init__(self) -> None:
        super().__init__(VAEConfig.tiny())

    def _image(self, z: torch.Tensor) -> torch.Tensor:  # (B, 4, h, w) -> (B, 3, 8h, 8w), one tile
        time.sleep(TILE_S)
        return torch.zeros(z.shape[0], 3, z.shape[2] * 8, z.shape[3] * 8)


class SleepingParts(Node):
    SCHEMA = NodeSchema(
        name="SleepingParts",
        category="test",
        outputs=[Output("MODEL"), Output("VAE"), Output("CONDITIONING")],
    )

    def run(self, ctx: NodeContext) -> tuple:
        return DiffusionModel(SleepingUNet(), latent_scale=1.0), SleepingVAE(), [Cond(torch.zeros(1, 77, 8))]


class Discard(Node):
    SCHEMA = NodeSchema(name="Discard", category="test", inputs=[Input("images", "IMAGE")], output_node=True)

    def run(self, ctx: NodeContext, images: torch.Tensor) -> tuple:
        return ()


@contextlib.asynccontextmanager
async def engine_server(data_dir: Path) -> AsyncIterator[TestClient]:
    registry = NodeRegistry([SleepingParts, EmptyLatentImage, KSampler, VAEDecode, Discard])
    async with TestClient(TestServer(create_app(registry, data_dir), host="127.0.0.1")) as client:
        yield client


def prompt(steps: int, size: int) -> dict:
    return {
        "1": {"class_type": "SleepingParts", "inputs": {}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": 0,
                "steps": steps,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["1", 2],
                "negative": ["1", 2],
                "latent_image": ["2", 0],
                "denoise": 1.0,
            },
        },
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 1]}},
        "5": {"class_type": "Discard", "inputs": {"images": ["4", 0]}},
    }


async def interrupt_and_time(client: TestClient, ws: Any, prompt_id: str) -> tuple[float, dict]:
    """POST /interrupt; (seconds until execution_interrupted arrived, its payload)."""
    started = time.monotonic()
    assert (await client.post("/api/interrupt", json={"prompt_id": prompt_id})).status == 200
    messages = await receive(ws, is_type("execution_interrupted"), timeout=30)
    return time.monotonic() - started, messages[-1]["data"]


@async_test
async def test_interrupt_stops_the_sampler_between_steps(tmp_path):
    async with engine_server(tmp_path) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive(ws, is_type("status"))
        queued = await post_prompt(client, prompt(steps=10_000, size=64), client_id="c")  # 500 s of steps
        await receive(ws, is_type("progress", node="3"), timeout=30)
        took, stopped = await interrupt_and_time(client, ws, queued["prompt_id"])
        assert stopped["node_id"] == "3" and stopped["node_type"] == "KSampler"
        assert took < STOP_WITHIN_S, f"the sampler took {took:.2f} s to stop"


@async_test
async def test_interrupt_stops_a_tiled_decode_between_tiles(tmp_path):
    async with engine_server(tmp_path) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive(ws, is_type("status"))
        # 2048x2048: a 256x256 latent, 25 tiles of 64 overlapping by 16, 5 s of tiles; one sampler step
        queued = await post_prompt(client, prompt(steps=1, size=2048), client_id="c")
        await receive(ws, is_type("executing", node="4"), timeout=30)
        await asyncio.sleep(2 * TILE_S)  # the decoder is inside its tiles
        took, stopped = await interrupt_and_time(client, ws, queued["prompt_id"])
        assert stopped["node_id"] == "4" and stopped["node_type"] == "VAEDecode"
        assert took < STOP_WITHIN_S, f"the decoder took {took:.2f} s to stop"
