"""What the text encoder reads of a prompt: byte-pair tokens in windows of 77 positions.

A window is <start>, at most 75 text tokens, <end>, then padding with <end>. A longer prompt is not cut: the
tokenizer packs it into several windows (`CLIPTokenizer.tokenize_weighted`, ComfyUI's rule), each encoded on its
own and joined, so words after the 75th token are read without the words before them. These are the windows
`pipeline.encode_prompt` encodes: position k of window w is position 77 w + k of the conditioning tensor.
"""

from __future__ import annotations

import dataclasses

from atelier.errors import InputError
from atelier.models.tokenizer import CLIPTokenizer, EmbeddingLookup


@dataclasses.dataclass(frozen=True)
class Token:
    id: int
    text: str  # the readable piece: "red", "<|startoftext|>" (no </w> word-end marker)
    weight: float  # from (word:1.2) syntax; 1.0 for <start>, <end> and padding


@dataclasses.dataclass(frozen=True)
class PromptTokens:
    """A prompt as the text encoder gets it."""

    windows: list[list[Token]]  # every position of every window: <start>, text tokens, <end>, padding
    counts: list[int]  # text tokens in each window
    size: int  # positions in a window (77)
    start_id: int
    end_id: int
    unknown_embeddings: tuple[str, ...] = ()  # `embedding:name` words that named no file (left out of the windows)

    @property
    def text_slots(self) -> int:
        """Text tokens one window holds: its positions less <start> and <end> (75)."""
        return self.size - 2

    @property
    def tokens(self) -> list[Token]:
        """The prompt's text tokens in order, window after window (no <start>, <end> or padding)."""
        return [t for window, n in zip(self.windows, self.counts, strict=True) for t in window[1 : 1 + n]]

    @property
    def cut(self) -> list[Token]:
        """The tokens past the first `text_slots`: what a tool that reads a single window drops."""
        return self.tokens[self.text_slots :]


def read_tokens(tokenizer: CLIPTokenizer, text: str, embeddings: EmbeddingLookup | None = None) -> PromptTokens:
    """`text` -> its windows, built by the same `tokenize_prompt` call as the conditioning. With `embeddings`, an
    `embedding:name` shows as one token per vector (id below 0, text "embedding:name", "embedding:name#1", ...)
    and names that match no file are listed in `unknown_embeddings`."""
    prompt = tokenizer.tokenize_prompt(text, embeddings)

    def text_of(i: int) -> str:
        return prompt.vector_text(i) if i < 0 else tokenizer.token_text(i)

    windows = [[Token(i, text_of(i), w) for i, w in window] for window in prompt.windows]
    # Padding is <end> repeated, so a window's text tokens run from position 1 to its first <end>.
    counts = [[t.id for t in window].index(tokenizer.end_id, 1) - 1 for window in windows]
    return PromptTokens(windows, counts, tokenizer.window, tokenizer.start_id, tokenizer.end_id, tuple(prompt.unknown))


def word_positions(tokenizer: CLIPTokenizer, text: str, word: str) -> list[int]:
    """Positions in the conditioning (0 .. 77*windows - 1) of every token of every occurrence of `word` in `text`.

    The word is tokenized on its own and its token ids are looked for as a run in the prompt's ids, so matching
    is case-insensitive (CLIP lowercases) and whole-token: "red" matches "a red ball" and "(red:1.3)" but not
    "reddish", whose tokens differ.
    """
    prompt = read_tokens(tokenizer, text)
    ids = [t.id for window in prompt.windows for t in window]
    target = tokenizer.encode(word)
    if not target:
        raise InputError("The word input is empty; expected a word of the prompt, such as 'red'.", "word_empty")
    n = len(target)
    positions = [p + i for p in range(len(ids) - n + 1) if ids[p : p + n] == target for i in range(n)]
    if not positions:
        words = ", ".join(tokenizer.decode([t.id for t in prompt.tokens]).split())
        raise InputError(
            f"The word {word!r} is not in the prompt; expected one of its words: {words}.",
            "word_not_in_prompt",
            word=word,
            words=words,
        )
    return positions
