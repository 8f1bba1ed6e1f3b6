"""What Atelier adds to the node editor exists in French and English, through the editor's own mechanisms:
/i18n nodeDefs for the teaching nodes, index.<locale>.json and translated workflows for the templates; and the
binary progress-text frame in both layouts the frontend reads."""

from __future__ import annotations

import json
import struct

import pytest

from atelier.graph.catalog import default_registry
from atelier.graph.teaching import TEACHING_NODES
from atelier.lessons.vocabulary import unknown_words
from atelier.server.frontend import (
    TEMPLATES_DIR,
    localized_workflow,
    node_translations,
    split_template_name,
    template_index,
    template_manifest,
)
from atelier.server.hub import progress_text_frame

FRENCH = json.loads((TEMPLATES_DIR / "i18n" / "fr.json").read_text(encoding="utf-8"))
TEXT_NODES = ("Note", "MarkdownNote", "CLIPTextEncode")  # the nodes whose widgets hold words a learner reads
# Titles the French workshop says as in English.
SAME_IN_FRENCH = {"KSampler", "Prompt", "Note", "Puzzle", "Sigmas", "SamplerCustomAdvanced"}


@pytest.fixture(scope="module")
def translations(tmp_path_factory) -> dict:
    return node_translations(default_registry(tmp_path_factory.mktemp("models"), None))


def test_every_teaching_node_string_has_both_languages(translations):
    english, french = translations["en"]["nodeDefs"], translations["fr"]["nodeDefs"]
    assert sorted(english) == sorted(french) == sorted(n.SCHEMA.name for n in TEACHING_NODES)
    for name, en in english.items():
        fr = french[name]
        assert fr["display_name"] and fr["display_name"] != en["display_name"], name
        assert fr["description"] and fr["description"] != en["description"], name
        # Every input and output the English side names (the schema's) has a French name, and a French tooltip
        # wherever the English has one: no English fallback in fr.
        for part in ("inputs", "outputs"):
            assert set(fr.get(part, {})) == set(en.get(part, {})), (name, part)
            for key, texts in en.get(part, {}).items():
                assert fr[part][key]["name"], (name, part, key)
                if "tooltip" in texts:
                    assert fr[part][key]["tooltip"] and fr[part][key]["tooltip"] != texts["tooltip"], (name, key)
    # The English side is the schema's own text (what /object_info says).
    film = english["AtelierFilmStripSampler"]
    assert film["display_name"] == "Film Strip Sampler" and film["outputs"]["2"]["name"] == "predicted"
    assert french["AtelierFilmStripSampler"]["outputs"]["2"]["name"] == "prédit"


def test_every_template_has_its_french_title_description_and_notes():
    manifest = template_manifest(TEMPLATES_DIR)
    assert {e["name"] for e in manifest} <= set(FRENCH)  # every template listed has its French
    french_index = {t["name"]: t for t in template_index(TEMPLATES_DIR, "fr")[0]["templates"]}
    for entry in manifest:
        local = french_index[f"{entry['name']}.fr"]
        assert local["title"] != entry["title"] and local["description"] != entry["description"]
        english = json.loads((TEMPLATES_DIR / f"{entry['name']}.json").read_text(encoding="utf-8"))
        french = localized_workflow(TEMPLATES_DIR, entry["name"], "fr")
        assert [n["id"] for n in french["nodes"]] == [n["id"] for n in english["nodes"]]
        assert french["links"] == english["links"]
        for en_node, fr_node in zip(english["nodes"], french["nodes"], strict=True):
            if en_node["type"] in TEXT_NODES and any(en_node.get("widgets_values") or [""]):
                assert fr_node["widgets_values"] != en_node["widgets_values"], (entry["name"], en_node["id"])
            if en_node.get("title") and en_node["title"] not in SAME_IN_FRENCH:
                assert fr_node.get("title") != en_node["title"], (entry["name"], en_node["id"])
            if en_node["type"] == "CLIPTextEncode" and fr_node["widgets_values"][0]:
                # A French prompt the embedded model can draw: every word was in its training captions.
                assert unknown_words(fr_node["widgets_values"][0]) == [], fr_node["widgets_values"]
    assert localized_workflow(TEMPLATES_DIR, "atelier_txt2img", "en") == json.loads(
        (TEMPLATES_DIR / "atelier_txt2img.json").read_text(encoding="utf-8")
    )


def test_the_puzzle_hint_names_the_sockets_as_the_french_editor_shows_them():
    note = next(n for n in localized_workflow(TEMPLATES_DIR, "atelier_puzzle", "fr")["nodes"] if n["type"] == "Note")
    text = note["widgets_values"][0]
    # The frontend's fr locale calls the types MODÈLE and CONDITIONNEMENT; KSampler's inputs keep positive/negative.
    for word in ("MODÈLE", "CLIP", "CONDITIONNEMENT", "LATENT", "VAE", "IMAGE", "« positive »", "« negative »"):
        assert word in text
    assert "MODEL," not in text and "CONDITIONING" not in text


def test_template_names_carry_their_language():
    assert split_template_name("atelier_txt2img.fr") == ("atelier_txt2img", "fr")
    assert split_template_name("atelier_txt2img") == ("atelier_txt2img", "en")
    assert split_template_name("some.name") == ("some.name", "en")


def test_progress_text_frame_in_both_layouts():
    # With supports_progress_text_metadata: [u32 3][u32 len][prompt id][u32 len][node id][text]
    frame = progress_text_frame("étape 3 sur 20", "12", "p-1")
    assert frame[:4] == struct.pack(">I", 3)
    (n,) = struct.unpack(">I", frame[4:8])
    assert frame[8 : 8 + n] == b"p-1"
    rest = frame[8 + n :]
    (m,) = struct.unpack(">I", rest[:4])
    assert rest[4 : 4 + m] == b"12" and rest[4 + m :].decode("utf-8") == "étape 3 sur 20"
    # Without it (older clients): no prompt id.
    assert progress_text_frame("x", "12", None) == struct.pack(">II", 3, 2) + b"12" + b"x"
