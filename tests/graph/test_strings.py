"""graph/nodes/strings.py: each text node against what ComfyUI's comfy_extras/nodes_string.py computes (Python's
str methods and the `re` module), and the two guards of a shared server: result length and regex time."""

from __future__ import annotations

import re

import pytest

from atelier.errors import InputError
from atelier.graph.nodes.strings import (
    CaseConverter,
    RegexExtract,
    RegexMatch,
    RegexReplace,
    StringCompare,
    StringConcatenate,
    StringContains,
    StringLength,
    StringReplace,
    StringSubstring,
    StringTrim,
)
from atelier.limits import MAX_TEXT_CHARACTERS
from tests.graph.test_compose import CTX

PROMPT = "Un chat roux sur la plage.\nA red cat on the beach, at sunset."


def one(node, *args):
    (value,) = node().run(CTX, *args)
    return value


def test_plain_text_tools():
    assert one(StringConcatenate, "un chat", "aquarelle", ", ") == "un chat, aquarelle"
    assert one(StringSubstring, PROMPT, 3, 7) == "chat" and one(StringSubstring, "abcdef", -3, 0) == ""
    assert one(StringLength, "été") == 3
    assert one(CaseConverter, "un chat roux", "Title Case") == "Un Chat Roux"
    assert one(CaseConverter, "Un Chat", "UPPERCASE") == "UN CHAT" and one(CaseConverter, "uN", "Capitalize") == "Un"
    assert one(StringTrim, "  chat \n", "Left") == "chat \n" and one(StringTrim, "  chat \n", "Both") == "chat"
    assert one(StringReplace, PROMPT, "chat", "chien") == PROMPT.replace("chat", "chien")
    assert one(StringReplace, "ab", "", "-") == "-a-b-"  # Python's (and ComfyUI's) empty find
    assert one(StringContains, PROMPT, "CAT", False) and not one(StringContains, PROMPT, "CAT", True)
    assert one(StringCompare, PROMPT, "un chat", "Starts With", False)
    assert not one(StringCompare, PROMPT, "un chat", "Starts With", True)
    assert one(StringCompare, "x", "X", "Equal", False) and one(StringCompare, PROMPT, "sunset.", "Ends With", True)


@pytest.mark.parametrize(
    "pattern, flags",
    [(r"c(h)?at", 0), (r"^a", re.IGNORECASE | re.MULTILINE), (r"(\w+) (\w+)", 0), (r"chat.*sunset", re.DOTALL)],
)
def test_regex_nodes_answer_as_pythons_re(pattern, flags):
    ignore, lines, dotall = bool(flags & re.IGNORECASE), bool(flags & re.MULTILINE), bool(flags & re.DOTALL)
    compiled = re.compile(pattern, flags)
    assert one(RegexMatch, PROMPT, pattern, ignore, lines, dotall) == (compiled.search(PROMPT) is not None)
    first = compiled.search(PROMPT)
    assert one(RegexExtract, PROMPT, pattern, "First Match", ignore, lines, dotall, 1) == first.group(0)
    found = compiled.findall(PROMPT)
    expected_all = "\n".join(f[0] if isinstance(f, tuple) else f for f in found)
    assert one(RegexExtract, PROMPT, pattern, "All Matches", ignore, lines, dotall, 1) == expected_all
    if compiled.groups:
        groups = "\n".join(m.group(1) or "" for m in compiled.finditer(PROMPT))
        assert one(RegexExtract, PROMPT, pattern, "All Groups", ignore, lines, dotall, 1) == groups
    for replacement, count in ((r"<\g<0>>", 0), ("-", 1), (r"[\1]" if compiled.groups else "", 2)):
        expected = compiled.sub(replacement, PROMPT, count=count)
        assert one(RegexReplace, PROMPT, pattern, replacement, ignore, lines, dotall, count) == expected


def test_empty_matches_are_replaced_where_pythons_sub_replaces_them():
    for pattern in (r"x*", r"\b", r"(?=a)"):
        assert one(RegexReplace, "axxbaa", pattern, "-", False, False, False, 0) == re.sub(pattern, "-", "axxbaa")


def test_a_pattern_that_is_not_one_matches_nothing_but_cannot_replace():
    assert one(RegexMatch, PROMPT, "(unclosed", True, False, False) is False
    assert one(RegexExtract, PROMPT, "[z-a]", "First Match", True, False, False, 1) == ""
    with pytest.raises(InputError, match="regex_pattern is not a regular expression"):
        RegexReplace().run(CTX, PROMPT, "(unclosed", "x")


def test_a_backtracking_pattern_is_stopped_with_one_sentence():
    with pytest.raises(InputError, match=r"took more than 1 s .* '\(x\+x\+\)\+y'"):
        RegexMatch().run(CTX, "x" * 3000 + "!", r"(x+x+)+y", False, False, False)


def test_no_text_node_makes_a_text_longer_than_the_limit():
    big = "a" * (MAX_TEXT_CHARACTERS // 2 + 1)
    with pytest.raises(InputError, match="StringConcatenate: the text it makes would have 1,000,002 characters"):
        StringConcatenate().run(CTX, big, big, "")
    with pytest.raises(InputError, match="StringReplace"):
        StringReplace().run(CTX, "a" * 1000, "a", "b" * 2000)  # 2,000,000 characters, refused before it is built
    with pytest.raises(InputError, match="RegexReplace"):
        RegexReplace().run(CTX, "a" * 1000, "a", r"\g<0>" * 1001, False, False, False, 0)
