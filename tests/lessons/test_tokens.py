"""lessons/tokens.py: a prompt's tokens and windows, on CLIP's own vocabulary (the embedded model's tokenizer)."""

import pytest

from atelier.errors import InputError
from atelier.lessons.tokens import Token, read_tokens, word_positions
from atelier.models.tokenizer import CLIPTokenizer

PROMPT = "a big red circle on the left"
START, END = 49406, 49407


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_default()


def test_a_short_prompt_is_one_window_of_77(tokenizer):
    prompt = read_tokens(tokenizer, "a big (red:1.3) circle")
    assert prompt.tokens == [
        Token(320, "a", 1.0),
        Token(1205, "big", 1.0),
        Token(736, "red", 1.3),
        Token(7117, "circle", 1.0),
    ]
    assert (prompt.size, prompt.text_slots, prompt.counts, prompt.cut) == (77, 75, [4], [])
    [window] = prompt.windows
    assert [t.id for t in window] == [START, 320, 1205, 736, 7117] + [END] * 72
    assert (window[0].text, window[5].text, window[5].weight) == ("<|startoftext|>", "<|endoftext|>", 1.0)


def test_a_long_prompt_spills_into_a_second_window(tokenizer):
    prompt = read_tokens(tokenizer, "red " * 78 + "blue circle")
    assert prompt.counts == [75, 5] and len(prompt.windows) == 2 and all(len(w) == 77 for w in prompt.windows)
    assert [t.text for t in prompt.cut] == ["red", "red", "red", "blue", "circle"]
    assert [t.id for t in prompt.windows[1][:7]] == [START, 736, 736, 736, 1746, 7117, END]


def test_a_short_weighted_group_closes_the_window_early(tokenizer):
    # 74 words, then a 3-token weighted group that does not fit in the one slot left: it opens window 2 whole.
    prompt = read_tokens(tokenizer, "red " * 74 + "(big blue circle:1.2)")
    assert prompt.counts == [74, 3]
    assert [(t.text, t.weight) for t in prompt.windows[1][1:4]] == [("big", 1.2), ("blue", 1.2), ("circle", 1.2)]
    assert len(prompt.tokens) == 77 and [t.text for t in prompt.cut] == ["blue", "circle"]


def test_the_empty_prompt_is_start_then_end(tokenizer):
    prompt = read_tokens(tokenizer, "")
    assert prompt.counts == [0] and prompt.tokens == [] and prompt.windows[0][1] == Token(END, "<|endoftext|>", 1.0)


def test_word_positions(tokenizer):
    assert word_positions(tokenizer, PROMPT, "red") == [3]
    assert word_positions(tokenizer, PROMPT, "RED") == [3]  # CLIP lowercases
    assert word_positions(tokenizer, PROMPT, "red circle") == [3, 4]
    assert word_positions(tokenizer, "a (red:1.3) ball, red", "red") == [2, 5]  # weights do not move tokens
    assert word_positions(tokenizer, "red " * 80 + "blue", "blue") == [77 + 1 + 5]  # the second window
    pieces = tokenizer.encode("kandinskyesque")
    assert len(pieces) > 1  # a rare word is several tokens, all of them taken
    assert word_positions(tokenizer, "a kandinskyesque circle", "Kandinskyesque") == list(range(2, 2 + len(pieces)))
    with pytest.raises(InputError) as error:
        word_positions(tokenizer, PROMPT, "reddish")
    assert str(error.value) == (
        "The word 'reddish' is not in the prompt; expected one of its words: a, big, red, circle, on, the, left."
    )
    with pytest.raises(InputError, match="The word input is empty"):
        word_positions(tokenizer, PROMPT, "  ")
