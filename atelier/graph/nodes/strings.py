"""Text tools: join, cut, measure, change case, trim, replace, compare and search texts, with or without regular
expressions. ComfyUI's core string nodes (comfy_extras/nodes_string.py) with the same names, inputs and results.

Workflows build prompts with them: one subject in a String node joined to several styles, a word swapped in a
saved prompt, a check that a caption names what it should. Two limits guard a shared server: no result longer than
limits.MAX_TEXT_CHARACTERS, and no regular expression that backtracks for more than limits.REGEX_SECONDS (the
`regex` module stops it; Python's `re` cannot be stopped). Where ComfyUI answers a pattern that does not compile
with False or "", these nodes do the same; a pattern stopped for its time is an error, since no answer is right.
"""

from __future__ import annotations

import sys

import regex

from atelier.errors import InputError
from atelier.graph.kit import Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.limits import REGEX_SECONDS, check_text_length

CATEGORY = "utils/string"
CASES = ["UPPERCASE", "lowercase", "Capitalize", "Title Case"]
SIDES = ["Both", "Left", "Right"]
COMPARISONS = ["Starts With", "Ends With", "Equal"]
EXTRACTIONS = ["First Match", "All Matches", "First Group", "All Groups"]


def _text(name: str, tooltip: str, multiline: bool = True) -> Input:
    return Input(name, "STRING", default="", multiline=multiline, tooltip=tooltip)


def _flag(name: str, default: bool, tooltip: str, optional: bool = False) -> Input:
    return Input(name, "BOOLEAN", default=default, optional=optional, tooltip=tooltip)


def _schema(name: str, title: str, description: str, inputs: list[Input], output: Output) -> NodeSchema:
    return NodeSchema(
        name=name, display_name=title, category=CATEGORY, description=description, inputs=inputs, outputs=[output]
    )


TEXT_OUT = Output("STRING", tooltip="The resulting text.")
PATTERN = _text("regex_pattern", "The regular expression (Python syntax), e.g. 'ch(at|ien)'.")
IGNORE_CASE = "Letters match whatever their case."
MULTILINE = "^ and $ match at every line's start and end, not only the text's."
DOTALL = "The dot (.) matches line breaks too."


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return (
        (regex.IGNORECASE if case_insensitive else 0)
        | (regex.MULTILINE if multiline else 0)
        | (regex.DOTALL if dotall else 0)
    )


def _compiled(pattern: str, flags: int) -> regex.Pattern | None:
    """The pattern compiled, or None when it is not a regular expression (ComfyUI's nodes then answer no match)."""
    try:
        return regex.compile(pattern, flags | regex.VERSION0)  # VERSION0: the `re` module's syntax
    except regex.error:
        return None


def _timed_out(node: str) -> InputError:
    return InputError(
        f"{node}: the regular expression took more than {REGEX_SECONDS:g} s on this text (it backtracks without "
        "end, as '(x+x+)+y' does); expected a simpler pattern."
    )


class StringConcatenate(Node):
    SCHEMA = _schema(
        "StringConcatenate",
        "Concatenate",
        "Joins two texts, with a delimiter between them: a subject and a style become one prompt.",
        [
            _text("string_a", "The first text."),
            _text("string_b", "The text put after it."),
            _text("delimiter", "What goes between them, e.g. ', ' (nothing by default).", multiline=False),
        ],
        TEXT_OUT,
    )

    def run(self, ctx: NodeContext, string_a: str, string_b: str, delimiter: str) -> tuple:
        check_text_length(len(string_a) + len(delimiter) + len(string_b), "StringConcatenate")
        return (delimiter.join((string_a, string_b)),)


class StringSubstring(Node):
    SCHEMA = _schema(
        "StringSubstring",
        "Substring",
        "The characters from start up to (not including) end, counted from 0; negative numbers count from the end, "
        "as Python's text[start:end].",
        [
            _text("string", "The text to cut."),
            Input("start", "INT", default=0, min=-sys.maxsize, max=sys.maxsize, tooltip="The first character kept."),
            Input("end", "INT", default=0, min=-sys.maxsize, max=sys.maxsize, tooltip="The first character left out."),
        ],
        TEXT_OUT,
    )

    def run(self, ctx: NodeContext, string: str, start: int, end: int) -> tuple:
        return (string[start:end],)


class StringLength(Node):
    SCHEMA = _schema(
        "StringLength",
        "Length",
        "How many characters a text has (not tokens: the Token Inspector counts those).",
        [_text("string", "The text to measure.")],
        Output("INT", "length", tooltip="The number of characters."),
    )

    def run(self, ctx: NodeContext, string: str) -> tuple:
        return (len(string),)


class CaseConverter(Node):
    SCHEMA = _schema(
        "CaseConverter",
        "Case Converter",
        "The text in capitals, in small letters, with its first letter capitalised, or each word's.",
        [_text("string", "The text to convert."), Input("mode", "COMBO", options=CASES, tooltip="Which case.")],
        TEXT_OUT,
    )

    def run(self, ctx: NodeContext, string: str, mode: str) -> tuple:
        convert = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize}
        return (convert.get(mode, str.title)(string),)


class StringTrim(Node):
    SCHEMA = _schema(
        "StringTrim",
        "Trim",
        "The text without the spaces, tabs and line breaks at its ends.",
        [_text("string", "The text to trim."), Input("mode", "COMBO", options=SIDES, tooltip="Which ends to trim.")],
        TEXT_OUT,
    )

    def run(self, ctx: NodeContext, string: str, mode: str) -> tuple:
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}[mode]
        return (trim(string),)


class StringReplace(Node):
    SCHEMA = _schema(
        "StringReplace",
        "Replace",
        "Every occurrence of one text replaced by another, letter for letter (no patterns: see Regex Replace).",
        [
            _text("string", "The text to change."),
            _text("find", "What to look for."),
            _text("replace", "What to put instead."),
        ],
        TEXT_OUT,
    )

    def run(self, ctx: NodeContext, string: str, find: str, replace: str) -> tuple:
        # With an empty `find`, Python's replace (and so ComfyUI's node) puts `replace` at every one of the
        # len(string) + 1 places between characters.
        places = string.count(find) if find else len(string) + 1
        check_text_length(len(string) + places * (len(replace) - len(find)), "StringReplace")
        return (string.replace(find, replace),)


class StringContains(Node):
    SCHEMA = _schema(
        "StringContains",
        "Contains",
        "Whether a text holds another one somewhere.",
        [
            _text("string", "The text to search."),
            _text("substring", "The text to look for."),
            _flag("case_sensitive", True, "Capitals and small letters differ."),
        ],
        Output("BOOLEAN", "contains", tooltip="True when the substring is found."),
    )

    def run(self, ctx: NodeContext, string: str, substring: str, case_sensitive: bool) -> tuple:
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


class StringCompare(Node):
    SCHEMA = _schema(
        "StringCompare",
        "Compare",
        "Whether the first text starts with, ends with, or equals the second.",
        [
            _text("string_a", "The text to test."),
            _text("string_b", "The text it is compared with."),
            Input("mode", "COMBO", options=COMPARISONS, tooltip="Which comparison."),
            _flag("case_sensitive", True, "Capitals and small letters differ."),
        ],
        Output("BOOLEAN", tooltip="The comparison's answer."),
    )

    def run(self, ctx: NodeContext, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple:
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        compare = {"Starts With": str.startswith, "Ends With": str.endswith, "Equal": str.__eq__}[mode]
        return (compare(string_a, string_b),)


class RegexMatch(Node):
    SCHEMA = _schema(
        "RegexMatch",
        "Regex Match",
        "Whether a regular expression matches somewhere in the text.",
        [
            _text("string", "The text to search."),
            PATTERN,
            _flag("case_insensitive", True, IGNORE_CASE),
            _flag("multiline", False, MULTILINE),
            _flag("dotall", False, DOTALL),
        ],
        Output("BOOLEAN", "matches", tooltip="True when the pattern matches (False for a pattern that is not one)."),
    )

    def run(
        self, ctx: NodeContext, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool, dotall: bool
    ) -> tuple:
        pattern = _compiled(regex_pattern, _flags(case_insensitive, multiline, dotall))
        if pattern is None:
            return (False,)
        try:
            return (pattern.search(string, timeout=REGEX_SECONDS) is not None,)
        except TimeoutError:
            raise _timed_out("RegexMatch") from None


class RegexExtract(Node):
    SCHEMA = _schema(
        "RegexExtract",
        "Regex Extract",
        "The part of the text a regular expression matches: the first match or all of them, or the group_index-th "
        "parenthesised group of the first match or of all; several results are joined by line breaks.",
        [
            _text("string", "The text to search."),
            PATTERN,
            Input("mode", "COMBO", options=EXTRACTIONS, tooltip="What to take from the matches."),
            _flag("case_insensitive", True, IGNORE_CASE),
            _flag("multiline", False, MULTILINE),
            _flag("dotall", False, DOTALL),
            Input("group_index", "INT", default=1, min=0, max=100, tooltip="Which group, for the Group modes."),
        ],
        Output("STRING", tooltip="What was found; empty when nothing matches or the pattern is not one."),
    )

    def run(
        self,
        ctx: NodeContext,
        string: str,
        regex_pattern: str,
        mode: str,
        case_insensitive: bool,
        multiline: bool,
        dotall: bool,
        group_index: int,
    ) -> tuple:
        pattern = _compiled(regex_pattern, _flags(case_insensitive, multiline, dotall))
        if pattern is None:
            return ("",)
        try:
            if mode == "First Match":
                found = pattern.search(string, timeout=REGEX_SECONDS)
                return (found.group(0) if found else "",)
            if mode == "First Group":
                found = pattern.search(string, timeout=REGEX_SECONDS)
                return (found.group(group_index) or "" if found and pattern.groups >= group_index else "",)
            matches = list(pattern.finditer(string, timeout=REGEX_SECONDS))
        except TimeoutError:
            raise _timed_out("RegexExtract") from None
        if mode == "All Matches":  # as ComfyUI (re.findall): with groups, each match's first group
            parts = [(m.group(1) or "") if pattern.groups else m.group(0) for m in matches]
        else:  # "All Groups"
            usable = pattern.groups > 0 and group_index <= pattern.groups
            parts = [m.group(group_index) or "" for m in matches] if usable else []
        check_text_length(sum(len(p) + 1 for p in parts), "RegexExtract")
        return ("\n".join(parts),)


COUNT_TIP = "How many matches to replace, from the first; 0 replaces all."


class RegexReplace(Node):
    SCHEMA = _schema(
        "RegexReplace",
        "Regex Replace",
        "Every match of a regular expression replaced (or the first `count` ones); \\1 in the replacement puts "
        "the first group back.",
        [
            _text("string", "The text to change."),
            PATTERN,
            _text("replace", "What to put instead of each match."),
            _flag("case_insensitive", True, IGNORE_CASE, optional=True),
            _flag("multiline", False, MULTILINE, optional=True),
            _flag("dotall", False, DOTALL, optional=True),
            Input("count", "INT", default=0, min=0, max=100, optional=True, tooltip=COUNT_TIP),
        ],
        TEXT_OUT,
    )

    def run(
        self,
        ctx: NodeContext,
        string: str,
        regex_pattern: str,
        replace: str,
        case_insensitive: bool = True,
        multiline: bool = False,
        dotall: bool = False,
        count: int = 0,
    ) -> tuple:
        try:
            pattern = regex.compile(regex_pattern, _flags(case_insensitive, multiline, dotall) | regex.VERSION0)
            return (_substitute(pattern, replace, string, count),)
        except regex.error as error:  # ComfyUI raises here too: a replacement needs a pattern
            raise InputError(f"RegexReplace: regex_pattern is not a regular expression ({error}).") from None
        except TimeoutError:
            raise _timed_out("RegexReplace") from None


def _substitute(pattern: regex.Pattern, template: str, string: str, count: int) -> str:
    """pattern.sub(template, string, count), built match by match so that its length is known before it is too
    long: each match's replacement (its \\1 and \\g<name> filled in) is measured as it is made."""
    pieces, size, last = [], 0, 0
    for i, match in enumerate(pattern.finditer(string, timeout=REGEX_SECONDS)):  # the same matches as sub's
        if count and i == count:
            break
        piece = match.expand(template)
        size += match.start() - last + len(piece)
        check_text_length(size + len(string) - match.end(), "RegexReplace")
        pieces += [string[last : match.start()], piece]
        last = match.end()
    pieces.append(string[last:])
    return "".join(pieces)


STRING_NODES: tuple[type[Node], ...] = (
    StringConcatenate,
    StringSubstring,
    StringLength,
    CaseConverter,
    StringTrim,
    StringReplace,
    StringContains,
    StringCompare,
    RegexMatch,
    RegexExtract,
    RegexReplace,
)
