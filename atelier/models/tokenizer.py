"""The CLIP tokenizer: prompt text -> the integer ids that the CLIP text encoder reads.

Stable Diffusion 1.x conditions on OpenAI's CLIP ViT-L/14 text tower (Radford et al. 2021), so it must cut text
exactly the way CLIP was trained to read it. Three steps turn a prompt into ids:

1. Clean: repair mojibake and odd Unicode (ftfy), turn HTML entities back into characters, collapse whitespace,
   lowercase. CLIP never saw an upper-case letter.
2. Pre-tokenize: a regular expression splits the text into words, single digits, runs of punctuation, and the
   English clitics 's 't 're 've 'm 'll 'd.
3. Byte-pair encoding (Sennrich et al. 2016, byte-level as in GPT-2): each word becomes its UTF-8 bytes, each
   byte a printable symbol, and the 48,894 learned merges are replayed, most frequent first, until no merge
   applies. The last symbol of a word carries the suffix `</w>`, so "cat" inside "concatenate" and the word
   "cat" are different tokens. The vocabulary has 49,408 entries: 256 byte symbols, the same with `</w>`, one
   entry per merge, and two specials <|startoftext|> (49406) and <|endoftext|> (49407).

The text encoder reads a fixed window of 77 positions: <start>, at most 75 text tokens, <end>, then padding.
SD1.x pads with the end token again (as openai/clip-vit-large-patch14 and ComfyUI do), so a 3-word prompt is
[49406, t1, t2, t3, 49407, 49407, ..., 49407].

On top of plain tokenizing, `tokenize_weighted` reads ComfyUI's prompt-weighting syntax and splits long prompts
into several 77-token windows; see `parse_prompt_weights` and `chunk_token_groups` below for the exact rules.
"""

from __future__ import annotations

import dataclasses
import gzip
import html
import importlib.util
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ftfy
import regex

from atelier.errors import CheckpointError

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
WORD_END = "</w>"
WINDOW = 77  # positions the text encoder reads: <start> + 75 text tokens + <end>
MERGES_IN_VOCAB = 49152 - 256 - 2  # OpenAI kept the first 48,894 merges of the file: 49,408 entries in all
BPE_GZ_NAME = "bpe_simple_vocab_16e6.txt.gz"
EmbeddingLookup = Callable[[str], Any]  # an embedding's name -> its vectors (n, width), or None (embeddings.py)

# A word, one digit, a run of punctuation/symbols, an English clitic, or one of the two special tokens written out.
# IGNORECASE only matters for the clitics and specials: the text is already lowercase when this runs.
_PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)

# --------------------------------------------------------------------------------------------------------------
# Byte-level alphabet: every one of the 256 byte values gets a printable Unicode character, so that BPE can work
# on ordinary strings and still round-trip any UTF-8 text (emoji, accents, CJK) without an "unknown" token.
# --------------------------------------------------------------------------------------------------------------


def byte_symbols() -> dict[int, str]:
    """Byte value -> the character that stands for it, in vocabulary order (the first 256 ids).

    Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, in that order; the 68 others
    (space, control bytes, ...) follow in byte order and are given the characters chr(256), chr(257), ...
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in symbols]
    for n, b in enumerate(others):
        symbols[b] = chr(256 + n)
    return symbols


# --------------------------------------------------------------------------------------------------------------
# Where the vocabulary comes from: OpenAI's merges file, which the open-clip-torch package ships as package data,
# or a diffusers/transformers model folder's tokenizer/vocab.json + merges.txt.
# --------------------------------------------------------------------------------------------------------------


def default_bpe_path() -> Path:
    """Path of `bpe_simple_vocab_16e6.txt.gz` inside the installed open-clip-torch package.

    The package is only located, never imported: its `__init__` pulls torchvision, which Atelier does not need.
    The environment variable ATELIER_CLIP_VOCAB may point at a copy of the file instead (machines without the
    package, such as a training machine with no package index).
    """
    override = os.environ.get("ATELIER_CLIP_VOCAB")
    if override:
        if not Path(override).is_file():
            raise CheckpointError(f"ATELIER_CLIP_VOCAB points at {override!r}, which is not a file.")
        return Path(override)
    spec = importlib.util.find_spec("open_clip")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / BPE_GZ_NAME
        if path.is_file():
            return path
    raise CheckpointError(
        f"The CLIP vocabulary file {BPE_GZ_NAME} was not found in the open-clip-torch package; "
        "run scripts/setup.sh to install it."
    )


def read_merges_gz(path: str | Path) -> list[tuple[str, str]]:
    """The merges that CLIP uses, in rank order, from OpenAI's gzipped merges file.

    Line 0 is a version header; lines 1..48,894 are "left right" pairs. The file has more merges than that, but
    OpenAI trained CLIP with a 49,408-entry vocabulary, so the rest are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"The CLIP merges file {path} does not exist; run scripts/setup.sh to install it.")
    with gzip.open(path) as file:
        lines = file.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + MERGES_IN_VOCAB]]
    if len(merges) != MERGES_IN_VOCAB or any(len(m) != 2 for m in merges):
        raise CheckpointError(f"The CLIP merges file {path} should hold {MERGES_IN_VOCAB} merge lines 'a b'.")
    return merges  # type: ignore[return-value]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token string -> id, built as OpenAI CLIP does: bytes, bytes + `</w>`, one token per merge, 2 specials."""
    symbols = list(byte_symbols().values())
    tokens = symbols + [s + WORD_END for s in symbols] + [a + b for a, b in merges] + [START_TOKEN, END_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


# --------------------------------------------------------------------------------------------------------------
# Text cleaning, as CLIP's own tokenizer does it.
# --------------------------------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """ftfy repair, HTML entities decoded (twice, for "&amp;amp;"), whitespace collapsed to single spaces, lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


# --------------------------------------------------------------------------------------------------------------
# Prompt weighting, with ComfyUI's semantics (comfy/sd1_clip.py):
#   "(cat)"         weight x 1.1 of the surrounding weight; "((cat))" -> 1.1 * 1.1 = 1.21
#   "(cat:1.3)"     weight 1.3, absolute: it replaces the surrounding weight rather than multiplying it
#   "\(" and "\)"   literal parentheses, never weighting
# The number is whatever follows the LAST ':' inside the parentheses and Python's float() accepts; if it is not a
# number, the ':' stays in the text and the group counts as plain "(...)". A ':' at position 0 is never a weight.
# Unbalanced parentheses never fail: a stray ")" is kept as text, and an unclosed "(" swallows the rest of the
# prompt as text (still weighted if that rest happens to end with ")").
# --------------------------------------------------------------------------------------------------------------

_ESCAPED_OPEN, _ESCAPED_CLOSE = "\0\2", "\0\1"  # placeholders for "\(" and "\)" while parentheses are parsed


def split_parentheses(text: str) -> list[str]:
    """Cut `text` into top-level pieces: plain runs and whole "( ... )" groups (nested groups stay inside)."""
    pieces: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(" and depth == 0:
            if current:
                pieces.append(current)
            current = "("
            depth = 1
        elif char == "(":
            current += char
            depth += 1
        elif char == ")":
            depth -= 1  # may go negative on a stray ")": it then stays text, and so does a later "("
            current += char
            if depth == 0:
                pieces.append(current)
                current = ""
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _weighted_segments(text: str, weight: float) -> list[tuple[str, float]]:
    segments: list[tuple[str, float]] = []
    for piece in split_parentheses(text):
        if not (len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")"):
            segments.append((piece, weight))
            continue
        inner, inner_weight = piece[1:-1], weight * 1.1
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight = float(inner[colon + 1 :])
                inner = inner[:colon]
            except ValueError:
                pass  # "(a:b)" is just text in a 1.1 group
        segments.extend(_weighted_segments(inner, inner_weight))
    return segments


def parse_prompt_weights(prompt: str) -> list[tuple[str, float]]:
    """`prompt` as (text segment, weight) pairs in order, e.g. "a (red:1.2) cat" -> [("a ", 1.0), ("red", 1.2),
    (" cat", 1.0)]. Segments keep their spaces; escaped parentheses come back as literal "(" and ")"."""
    escaped = prompt.replace("\\)", _ESCAPED_CLOSE).replace("\\(", _ESCAPED_OPEN)
    return [
        (segment.replace(_ESCAPED_CLOSE, ")").replace(_ESCAPED_OPEN, "("), weight)
        for segment, weight in _weighted_segments(escaped, 1.0)
    ]


# --------------------------------------------------------------------------------------------------------------
# Long prompts: several 77-token windows, each [start] + up to 75 tokens + [end] + padding. The text encoder runs
# on every window and the results are concatenated along the token axis, so nothing past 75 tokens is lost.
# --------------------------------------------------------------------------------------------------------------


def chunk_token_groups(
    groups: list[list[tuple[int, float]]],
    start_id: int,
    end_id: int,
    pad_id: int,
    window: int = WINDOW,
    max_unbroken: int = 8,
) -> list[list[tuple[int, float]]]:
    """Pack groups of (id, weight) tokens into windows of `window` positions, as ComfyUI does.

    A group is the tokens of one weighted segment of the prompt. A group of fewer than `max_unbroken` (8) tokens
    is never split: if it does not fit in the current window, that window is closed (end token, then padding) and
    the group opens the next one. A longer group fills the current window to the last text position and carries
    on in the next one, so a long unweighted prompt is cut every 75 tokens, even inside a word. (Older ComfyUI
    made each space-separated word a group, which kept words whole; current ComfyUI groups by weighted segment,
    and so does this function. An "embedding:name" word is a group of its own: see `tokenize_prompt`.)
    The start, end and padding tokens have weight 1.0. An empty prompt gives one window [start, end, pad, ...].
    """
    room = window - 1  # positions available before the end token
    windows: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = [(start_id, 1.0)]
    for group in groups:
        unbroken = len(group) < max_unbroken
        while group:
            free = room - len(current)
            if len(group) <= free:
                current.extend(group)
                break
            if unbroken:  # close this window early and move the whole group to the next one
                current.append((end_id, 1.0))
                current.extend([(pad_id, 1.0)] * (window - len(current)))
            else:  # split the group at the window's edge
                current.extend(group[:free])
                current.append((end_id, 1.0))
                group = group[free:]
            windows.append(current)
            current = [(start_id, 1.0)]
    current.append((end_id, 1.0))
    current.extend([(pad_id, 1.0)] * (window - len(current)))
    windows.append(current)
    return windows


# --------------------------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------------------------


class CLIPTokenizer:
    """CLIP's byte-level BPE tokenizer with SD1.x's 77-token window, padding and ComfyUI prompt weighting.

    Build it with `from_default()` (OpenAI's merges file from the open-clip-torch package), `from_bpe_gz(path)`,
    or `from_files(vocab_json, merges_txt)` (a diffusers model folder's tokenizer/).
    """

    window: int = WINDOW

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], pad_with_end: bool = True) -> None:
        for special in (START_TOKEN, END_TOKEN):
            if special not in vocab:
                raise CheckpointError(f"The CLIP vocabulary has no {special} token; expected the SD1.x CLIP vocab.")
        self.vocab = vocab
        self.id_to_token = {i: token for token, i in vocab.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}  # lower rank = learned earlier = merged first
        self.start_id = vocab[START_TOKEN]
        self.end_id = vocab[END_TOKEN]
        # SD1.x, SD 2.x and SDXL's CLIP-L pad with the end token; SDXL's bigG pads with id 0 ("!"), as its
        # open_clip tokenizer did in training (ComfyUI: pad_with_end=False; diffusers: tokenizer_2's pad "!").
        self.pad_id = self.end_id if pad_with_end else 0
        self.byte_to_symbol = byte_symbols()
        self.symbol_to_byte = {s: b for b, s in self.byte_to_symbol.items()}
        # word (in byte symbols) -> its BPE tokens: prompts reuse words, so each distinct word is merged only once.
        self._cache: dict[str, tuple[str, ...]] = {START_TOKEN: (START_TOKEN,), END_TOKEN: (END_TOKEN,)}

    # ---- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_bpe_gz(cls, path: str | Path) -> CLIPTokenizer:
        """From OpenAI's gzipped merges file (`bpe_simple_vocab_16e6.txt.gz`); the vocabulary is derived from it."""
        merges = read_merges_gz(path)
        return cls(build_vocab(merges), merges)

    @classmethod
    def from_default(cls, pad_with_end: bool = True) -> CLIPTokenizer:
        """The SD1.x tokenizer, from the merges file shipped inside the open-clip-torch package (no network).
        `pad_with_end=False` is SDXL bigG's (same vocabulary, padded with 0)."""
        merges = read_merges_gz(default_bpe_path())
        return cls(build_vocab(merges), merges, pad_with_end)

    @classmethod
    def from_files(cls, vocab_json: str | Path, merges_txt: str | Path) -> CLIPTokenizer:
        """From a Hugging Face style `vocab.json` (token -> id) and `merges.txt` (one "a b" merge per line)."""
        vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
        for path in (vocab_json, merges_txt):
            if not path.is_file():
                raise CheckpointError(f"The tokenizer file {path} does not exist.")
        try:
            vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            vocab = None
        if not isinstance(vocab, dict):
            raise CheckpointError(f"The tokenizer file {vocab_json} should hold a JSON object of token -> id.")
        merges = []
        for line in merges_txt.read_text(encoding="utf-8").split("\n"):
            if line.startswith("#version") or not line.strip():
                continue
            pair = line.split()
            if len(pair) != 2:
                raise CheckpointError(f"The merges file {merges_txt} has a line {line!r}; expected 'left right'.")
            merges.append((pair[0], pair[1]))
        return cls(vocab, merges)

    # ---- byte-pair encoding ------------------------------------------------------------------------------------

    def _bpe(self, word: str) -> tuple[str, ...]:
        """One pre-tokenized word (already in byte symbols) -> its BPE tokens, e.g. "cats" -> ("cats</w>",)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + WORD_END]
        while len(parts) > 1:
            # The adjacent pair whose merge was learned first (lowest rank) is merged, everywhere it occurs.
            pairs = itertools.pairwise(parts)
            best = min(pairs, key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = tuple(parts)
        if len(self._cache) < 200_000:
            self._cache[word] = result
        return result

    def _tokens(self, text: str) -> list[str]:
        """Text -> BPE token strings, without start/end."""
        tokens: list[str] = []
        for word in _PRETOKENIZE.findall(clean_text(text)):
            symbols = "".join(self.byte_to_symbol[b] for b in word.encode("utf-8"))
            tokens.extend(self._bpe(symbols))
        return tokens

    # ---- public API --------------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no start/end tokens and no length limit: "a photo of a cat" -> [320, 1125, ...]."""
        return [self.vocab[token] for token in self._tokens(text)]

    def __call__(self, text: str) -> list[int]:
        """The single 77-id window the text encoder reads: [start] + first 75 tokens + [end] + end-token padding.

        Tokens past the 75th are dropped (see `truncated`); use `tokenize_weighted` to keep them.
        """
        ids = self.encode(text)[: self.window - 2]
        ids = [self.start_id, *ids, self.end_id]
        return ids + [self.pad_id] * (self.window - len(ids))

    def truncated(self, text: str) -> int:
        """How many tokens of `text` do not fit in one 77-token window (0 when it fits)."""
        return max(0, len(self.encode(text)) - (self.window - 2))

    def pieces(self, text: str) -> list[tuple[str, int]]:
        """(readable piece, id) per token of `text`, no start/end: "a photo" -> [("a", 320), ("photo", 1125)].

        The `</w>` word-end marker is dropped; a piece holding part of a multi-byte character (a split emoji)
        shows as U+FFFD.
        """
        return [(self.token_text(self.vocab[t]), self.vocab[t]) for t in self._tokens(text)]

    def token_text(self, token_id: int) -> str:
        """Readable text of one token id: "cat</w>" -> "cat", 49406 -> "<|startoftext|>"."""
        token = self.id_to_token[token_id]
        if token in (START_TOKEN, END_TOKEN):
            return token
        token = token.removesuffix(WORD_END)
        return bytes(self.symbol_to_byte[s] for s in token).decode("utf-8", errors="replace")

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, words separated by spaces; start, end and padding tokens are skipped."""
        data = bytearray()
        for i in ids:
            if i in (self.start_id, self.end_id):
                continue
            token = self.id_to_token[i]
            data.extend(self.symbol_to_byte[s] for s in token.removesuffix(WORD_END))
            if token.endswith(WORD_END):
                data.extend(b" ")
        return data.decode("utf-8", errors="replace").strip()

    def tokenize_weighted(self, prompt: str) -> list[list[tuple[int, float]]]:
        """ComfyUI-style weighted prompt -> windows of 77 (id, weight) pairs, one window per 75 text tokens.

        Each weighted segment (see `parse_prompt_weights`) is tokenized on its own, then the segments are packed
        into windows by `chunk_token_groups`. Prompts of up to 75 tokens give exactly one window.
        """
        return self.tokenize_prompt(prompt).windows

    def tokenize_prompt(self, prompt: str, embeddings: EmbeddingLookup | None = None) -> TokenizedPrompt:
        """`tokenize_weighted` that also reads ComfyUI's `embedding:name` words when `embeddings` is given.

        An embedding's vectors take one position each in the window, in place of tokens, with the weight of the
        segment they are in; they are marked by negative ids (-1 - row in `vectors`). As in ComfyUI, a trailing
        comma is not part of the name, and an unknown name is dropped from the prompt and reported in `unknown`.
        Without `embeddings`, "embedding:name" is plain text.
        """
        groups: list[list[tuple[int, float]]] = []
        vectors: list = []
        names: list[str] = []
        unknown: list[str] = []
        for segment, weight in parse_prompt_weights(prompt):
            pieces = _EMBEDDING.split(segment) if embeddings is not None else [segment]
            for i, piece in enumerate(pieces):
                if i % 2 == 1:  # an embedding name (odd pieces of the split)
                    assert embeddings is not None
                    name, rest = piece, ""
                    found = embeddings(name)
                    if found is None and name.rstrip(",") != name:
                        name, rest = name.rstrip(","), name[len(name.rstrip(",")) :]
                        found = embeddings(name)
                    if found is None:
                        unknown.append(name)
                    else:
                        first = sum(len(v) for v in vectors)
                        vectors.append(found)
                        names.append(name)
                        groups.append([(-1 - (first + k), weight) for k in range(len(found))])
                    piece = rest
                ids = self.encode(piece)
                if ids:
                    groups.append([(t, weight) for t in ids])
        windows = chunk_token_groups(groups, self.start_id, self.end_id, self.pad_id, self.window)
        return TokenizedPrompt(windows, vectors, names, unknown)


# "embedding:name" as a word of its own (after a space or at the start), the name running to the next space.
_EMBEDDING = regex.compile(r"(?<!\S)embedding:(\S+)")


@dataclasses.dataclass
class TokenizedPrompt:
    """A prompt's windows of 77 (id, weight) pairs; an id below 0 is row -1 - id of the embedding vectors."""

    windows: list[list[tuple[int, float]]]
    vectors: list  # each embedding's vectors (n_vectors, width), in prompt order; rows are counted across them
    names: list[str]  # the name of each entry of `vectors`
    unknown: list[str]  # embedding names that no file matched (dropped from the prompt)

    def vector_text(self, token_id: int) -> str:
        """How a position holding an embedding vector (token_id < 0) reads: "embedding:name" and, past its first
        vector, the vector's index ("embedding:name#2")."""
        row = -1 - token_id
        for name, block in zip(self.names, self.vectors, strict=True):
            if row < len(block):
                return f"embedding:{name}" + (f"#{row}" if row else "")
            row -= len(block)
        raise IndexError(f"no embedding vector has the id {token_id}")
