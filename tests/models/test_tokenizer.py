"""CLIP tokenizer: token-for-token parity with two references, known SD1.x ids, weighting, windows, errors."""

from __future__ import annotations

import importlib.util
import json
import time

import ftfy
import pytest

from atelier.errors import CheckpointError
from atelier.models import tokenizer as tokenizer_module
from atelier.models.tokenizer import (
    CLIPTokenizer,
    build_vocab,
    chunk_token_groups,
    clean_text,
    default_bpe_path,
    parse_prompt_weights,
    read_merges_gz,
)
from tests.models.tokenizer_prompts import generate_prompts

START, END = 49406, 49407
CAT = 2368  # "cat</w>"


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return CLIPTokenizer.from_default()


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return generate_prompts(2000, seed=0)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """vocab.json + merges.txt written from the same .gz, as a diffusers model folder's tokenizer/ holds them."""
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    merges = read_merges_gz(default_bpe_path())
    (folder / "vocab.json").write_text(json.dumps(build_vocab(merges), ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hf_tokenizer(hf_folder):
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(str(hf_folder))


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    """open_clip's copy of OpenAI's SimpleTokenizer, loaded from its file (open_clip's __init__ needs torchvision)."""
    path = default_bpe_path().parent / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("open_clip_simple_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(default_bpe_path()))


# ---- the vocabulary is the real SD1.x one ------------------------------------------------------------------------


def test_known_ids(tok, hf_tokenizer):
    assert len(tok.vocab) == 49408
    assert (tok.start_id, tok.end_id, tok.pad_id, tok.window) == (START, END, END, 77)
    assert tok.vocab["<|startoftext|>"] == START and tok.vocab["<|endoftext|>"] == END
    assert tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert hf_tokenizer("a photo of a cat")["input_ids"] == [START, 320, 1125, 539, 320, 2368, END]
    assert hf_tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [START, END]


def test_from_files_matches_from_default(tok, hf_folder):
    from_files = CLIPTokenizer.from_files(hf_folder / "vocab.json", hf_folder / "merges.txt")
    assert from_files.vocab == tok.vocab and from_files.ranks == tok.ranks
    assert from_files("A photo of a CAT, l'été 🐱") == tok("A photo of a CAT, l'été 🐱")


# ---- parity on 2,000 generated prompts ----------------------------------------------------------------------------


def test_parity_open_clip(tok, prompts, open_clip_tokenizer):
    """OpenAI's own algorithm (ftfy + html cleaning included), fed the raw prompts."""
    mismatches = [p for p in prompts if tok.encode(p) != open_clip_tokenizer.encode(p)]
    assert mismatches == []
    # The 77-id window: open_clip pads with 0 where SD1.x pads with the end token; otherwise identical.
    for p in prompts[:500]:
        reference = open_clip_tokenizer(p)[0].tolist()
        end_at = reference.index(END)
        assert tok(p) == reference[: end_at + 1] + [END] * (76 - end_at)


def test_parity_transformers(tok, prompts, hf_tokenizer):
    """transformers 5 has only the Rust-backed CLIPTokenizer, which skips CLIP's ftfy/HTML cleaning (it only does
    NFC + whitespace + lowercase). So it is fed CLIP-cleaned text; prompts that cleaning leaves alone (no '&', ftfy
    no-op) are also compared raw."""
    mismatches = []
    raw_compared = 0
    for p in prompts:
        ours = tok.encode(p)
        if ours != hf_tokenizer(clean_text(p), add_special_tokens=False)["input_ids"]:
            mismatches.append(p)
        if "&" not in p and ftfy.fix_text(p) == p:
            raw_compared += 1
            if ours != hf_tokenizer(p, add_special_tokens=False)["input_ids"]:
                mismatches.append(p)
    assert mismatches == []
    assert raw_compared > 800
    # The 77-id window with truncation and end-token padding, as diffusers' SD1.x pipelines build it.
    for p in prompts[:500]:
        reference = hf_tokenizer(clean_text(p), padding="max_length", max_length=77, truncation=True)["input_ids"]
        assert tok(p) == reference


def test_prompts_cover_the_hard_cases(tok, prompts):
    text = "".join(prompts)
    for needle in ["é", "è", "ê", "à", "ç", "ô", "û", "œ", "🐱", "‍", "&amp;", "\t", "  ", "'s", "1024", "“"]:
        assert needle in text, needle
    long = sum(tok.truncated(p) > 0 for p in prompts)
    assert 80 < long < 300


def test_speed_2000_prompts(prompts):
    """Fresh tokenizer (empty word cache), 2,000 prompts; ftfy takes most of it. Figure printed for the report."""
    fresh = CLIPTokenizer.from_default()
    t0 = time.perf_counter()
    for p in prompts:
        fresh(p)
    seconds = time.perf_counter() - t0
    print(f"\n2,000 prompts tokenized in {seconds:.2f} s ({1000 * seconds / len(prompts):.3f} ms per prompt)")
    assert seconds < 10


# ---- special tokens, window, truncation, pieces, decode -----------------------------------------------------------


def test_special_tokens_written_in_text(tok, hf_tokenizer):
    text = "a <|endoftext|> cat <|startoftext|>"
    assert tok.encode(text) == [320, END, CAT, START]
    assert tok.encode(text) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_window_padding_and_truncation(tok):
    ids = tok("a photo of a cat")
    assert ids == [START, 320, 1125, 539, 320, 2368] + [END] * 71
    assert tok.truncated("a photo of a cat") == 0
    assert tok("") == [START] + [END] * 76
    long = tok("cat " * 80)
    assert len(long) == 77 and long[1:76] == [CAT] * 75 and long[76] == END
    assert tok.truncated("cat " * 80) == 5
    assert tok.truncated("cat " * 75) == 0


def test_pieces_and_decode(tok):
    assert tok.pieces("A photo of a cat!") == [
        ("a", 320),
        ("photo", 1125),
        ("of", 539),
        ("a", 320),
        ("cat", 2368),
        ("!", 256),
    ]
    assert tok.pieces("l'été") == [("l", 331), ("'", 262), ("é", 3459), ("té", 39694)]
    assert tok.token_text(START) == "<|startoftext|>"
    assert tok.decode(tok("A photo of a CAT")) == "a photo of a cat"
    assert tok.decode(tok.encode("café 🐱 crème brûlée")) == "café 🐱 crème brûlée"


# ---- prompt weighting (ComfyUI semantics), values computed by hand --------------------------------------------------

WEIGHT_CASES = [
    ("a cat", [("a cat", 1.0)]),
    ("", []),
    ("a (red:1.2) cat", [("a ", 1.0), ("red", 1.2), (" cat", 1.0)]),
    ("(cat)", [("cat", 1.1)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("(((cat)))", [("cat", 1.1 * 1.1 * 1.1)]),
    ("((cat:0.5))", [("cat", 0.5)]),  # an explicit weight replaces the outer 1.1, it does not multiply it
    ("(x:0.5)", [("x", 0.5)]),
    ("(a: 2 )", [("a", 2.0)]),  # whatever float() accepts
    ("(a:1e-1)", [("a", 0.1)]),
    ("(a (b:1.3))", [("a ", 1.1), ("b", 1.3)]),  # the last ':' is inside "(b:1.3)": "1.3)" is no number
    ("(a (b) :1.5)", [("a ", 1.5), ("b", 1.5 * 1.1), (" ", 1.5)]),
    ("(a:1.2)(b:0.8)", [("a", 1.2), ("b", 0.8)]),
    ("(x:abc)", [("x:abc", 1.1)]),  # not a number: the colon stays text
    ("(:1.2)", [(":1.2", 1.1)]),  # a colon at position 0 never introduces a weight
    (r"\(x\) (y)", [("(x) ", 1.0), ("y", 1.1)]),
    (r"\(a:1.2\)", [("(a:1.2)", 1.0)]),
    (r"(a\)b)", [("a)b", 1.1)]),
    ("((a)", [("(a", 1.1)]),  # unclosed: the outer "(" swallows the rest, which ends with ")"
    ("(a", [("(a", 1.0)]),
    ("a) (b", [("a) (b", 1.0)]),  # a stray ")" keeps everything after it as text
    ("a (b", [("a ", 1.0), ("(b", 1.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), WEIGHT_CASES)
def test_parse_prompt_weights(prompt, expected):
    got = parse_prompt_weights(prompt)
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert [weight for _, weight in got] == pytest.approx([weight for _, weight in expected], rel=1e-12)


def test_tokenize_weighted_single_window(tok):
    windows = tok.tokenize_weighted("a (cat:1.2), ((dog))")
    assert len(windows) == 1 and len(windows[0]) == 77
    dog = tok.encode("dog")[0]
    assert windows[0][:6] == [(START, 1.0), (320, 1.0), (CAT, 1.2), (267, 1.0), (dog, pytest.approx(1.21)), (END, 1.0)]
    assert windows[0][6:] == [(END, 1.0)] * 71
    assert tok.tokenize_weighted("") == [[(START, 1.0)] + [(END, 1.0)] * 76]
    assert [i for i, _ in tok.tokenize_weighted("a photo of a cat")[0]] == tok("a photo of a cat")


def test_tokenize_weighted_200_tokens_gives_3_windows(tok):
    windows = tok.tokenize_weighted("cat " * 200)
    assert len(windows) == 3
    for window in windows:
        assert len(window) == 77 and window[0] == (START, 1.0)
    assert [i for i, _ in windows[0]] == [START] + [CAT] * 75 + [END]
    assert [i for i, _ in windows[1]] == [START] + [CAT] * 75 + [END]
    assert [i for i, _ in windows[2]] == [START] + [CAT] * 50 + [END] * 26


def test_short_group_moves_whole_to_next_window(tok):
    """72 plain tokens, then a weighted group of 5: it does not fit in the 3 positions left, so it starts window 2."""
    windows = tok.tokenize_weighted("cat " * 72 + "(a a a a a:1.3)")
    assert [i for i, _ in windows[0]] == [START] + [CAT] * 72 + [END] * 4
    assert windows[1][:7] == [(START, 1.0)] + [(320, 1.3)] * 5 + [(END, 1.0)]
    assert len(windows) == 2 and len(windows[1]) == 77


def test_long_group_is_split_at_the_window_edge(tok):
    """A group of 8 tokens or more fills the current window and continues in the next one."""
    windows = tok.tokenize_weighted("cat " * 72 + "(a a a a a a a a a a:1.3)")
    assert windows[0] == [(START, 1.0)] + [(CAT, 1.0)] * 72 + [(320, 1.3)] * 3 + [(END, 1.0)]
    assert windows[1][:9] == [(START, 1.0)] + [(320, 1.3)] * 7 + [(END, 1.0)]


def test_chunk_token_groups_small_window():
    """Window of 8 (7 positions before the end token): the 4-group moves whole, the 9-group is split twice."""
    groups = [[(1, 1.0)] * 3, [(2, 2.0)] * 2, [(3, 3.0)] * 4, [(4, 4.0)] * 9]
    windows = chunk_token_groups(groups, start_id=10, end_id=11, pad_id=12, window=8)
    assert [[i for i, _ in w] for w in windows] == [
        [10, 1, 1, 1, 2, 2, 11, 12],
        [10, 3, 3, 3, 3, 4, 4, 11],
        [10, 4, 4, 4, 4, 4, 4, 11],
        [10, 4, 11, 12, 12, 12, 12, 12],
    ]
    assert windows[1][5] == (4, 4.0) and windows[3][2] == (11, 1.0)


# ---- errors a user can cause --------------------------------------------------------------------------------------


def test_missing_vocab_file_says_run_setup(monkeypatch, tmp_path):
    monkeypatch.setattr(tokenizer_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"bpe_simple_vocab_16e6\.txt\.gz.*run scripts/setup\.sh"):
        CLIPTokenizer.from_default()
    with pytest.raises(CheckpointError, match=r"run scripts/setup\.sh"):
        CLIPTokenizer.from_bpe_gz(tmp_path / "nope.txt.gz")


def test_bad_tokenizer_files(tmp_path):
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    with pytest.raises(CheckpointError, match="does not exist"):
        CLIPTokenizer.from_files(vocab, merges)
    vocab.write_text("{not json", encoding="utf-8")
    merges.write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="should hold a JSON object"):
        CLIPTokenizer.from_files(vocab, merges)
    vocab.write_text('{"a": 0}', encoding="utf-8")
    merges.write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="no <\\|startoftext\\|> token"):
        CLIPTokenizer.from_files(vocab, merges)
    merges.write_text("a b c\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="expected 'left right'"):
        CLIPTokenizer.from_files(vocab, merges)
