"""`atelier serve --ray` without Ray at hand (no cluster needed): one clear sentence in French and English, and the
batch an actor receives carries its prompts. The runs on a real local Ray are in test_classroom_ray.py."""

from __future__ import annotations

import sys

import pytest

from atelier.cli import main
from atelier.errors import AtelierError
from atelier.generation import GenerationParams, api_graph
from atelier.server.cluster import RAY_MISSING, PromptImage, checkpoint_of, start_pool, with_prompts
from atelier.server.merging import parts
from atelier.server.scheduler import Scheduler


def test_without_ray_installed_the_server_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(AtelierError) as caught:
        start_pool(lambda emit: None, None, 2, lambda batch, event: None, lambda batch, reason: None)
    assert str(caught.value) == RAY_MISSING
    assert "Ray n'est pas installé" in RAY_MISSING and "pip install 'atelier[cluster]'" in RAY_MISSING


def test_workers_without_ray_is_refused_in_both_languages(capsys):
    assert main(["serve", "--workers", "2"]) == 2
    message = capsys.readouterr().err
    assert "--workers va avec --ray" in message and "--workers goes with --ray" in message


def test_the_batch_an_actor_receives_carries_each_parts_prompt():
    prompts = {
        "p": api_graph(GenerationParams("a red circle", seed=1, batch=2, model="tiny.safetensors")),
        "q": api_graph(GenerationParams("un carré bleu", seed=2, model="tiny.safetensors")),
    }
    scheduler = Scheduler(batch_images=4)
    for owner, prompt_id in (("ana", "p"), ("bob", "q")):
        scheduler.submit(owner, prompt_id, parts(prompt_id, prompts[prompt_id]))
    batch = scheduler.take()
    sent = with_prompts(batch, prompts.__getitem__, lambda prompt_id: prompt_id == "q")
    assert (sent.number, sent.owners, [p.job_id for p in sent.parts]) == (batch.number, batch.owners, ["p", "q", "p"])
    assert [(p.payload.index, p.payload.of, p.payload.previews) for p in sent.parts] == [(0, 2, False), (0, 1, True),
                                                                                       (1, 2, False)]
    assert all(isinstance(p.payload, PromptImage) and p.payload.prompt is prompts[p.job_id] for p in sent.parts)
    assert checkpoint_of(sent) == "tiny.safetensors" and sent.merge_key == batch.merge_key
