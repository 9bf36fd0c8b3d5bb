"""Regular expressions and globs for group rules, matched in linear time by RE2.

Python's ``re`` backtracks: ``^(a+)+$`` against forty ``a`` and a ``!`` tries about 2**40 ways (hours)
while holding the GIL, and anyone who can send UDP to gmond can choose a host name. RE2 (``google-re2``)
runs in time linear in the text whatever the pattern, at the price of the features that need
backtracking. A rule's pattern must be accepted by both engines, so that it means what a Python user
expects: a scanner first refuses, pointing at the construct, what RE2 lacks (backreferences, lookaround,
atomic groups, possessive quantifiers, conditionals, ``\\Z``, the ``x``/``a``/``u``/``L`` flags) and what
both accept but read differently (``{,n}``, literal text to RE2; ``[[:alpha:]]``, a POSIX class to RE2
only); then Python's parser checks the syntax, with its familiar messages; then RE2 compiles it.

Differences that remain, documented for rule authors: ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII-only,
and ``$`` matches only at the very end of the text (Python's also matches before a final newline).

Globs are translated here with :func:`fnmatch.fnmatchcase`'s meaning (``*``, ``?``, ``[seq]``,
``[!seq]``; an unclosed ``[`` is literal), because :func:`fnmatch.translate` emits atomic groups, which
RE2 does not have.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import re2

__all__ = ["PatternError", "TextMatcher", "compile_glob", "compile_regex"]

# Texts up to this long are remembered per pattern: host names and string metrics repeat on every poll,
# and a dictionary hit is about thirty times cheaper than a call into RE2. Longer texts are matched
# directly, so a flood of long spoofed names cannot pin much memory.
_MEMO_CHARS: Final = 256
_MEMO_ENTRIES: Final = 8192

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # an error becomes a RuleSyntaxError; RE2 would also print it to stderr

# Group openers Python knows and RE2 does not, longest first so '(?<=' is not read as '(?<'.
_UNSUPPORTED_GROUPS: Final = (
    ("(?<=", "a lookbehind"),
    ("(?<!", "a negative lookbehind"),
    ("(?P=", "a named backreference"),
    ("(?=", "a lookahead"),
    ("(?!", "a negative lookahead"),
    ("(?>", "an atomic group"),
    ("(?(", "a conditional group"),
    ("(?#", "a comment group"),
)
_RE2_FLAGS: Final = frozenset("ims")
_FLAGS = re.compile(r"\(\?([A-Za-z]*)(?:-([A-Za-z]*))?[:)]")
_EMPTY_MINIMUM = re.compile(r"\{,[0-9]*\}")
_QUANTIFIER = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_BACKTRACKING = "which needs backtracking; rules are matched by RE2, in linear time, without it"


class PatternError(ValueError):
    """A pattern the rule language refuses; ``offset`` is the 0-based index in the pattern to point at."""

    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class TextMatcher:
    """A compiled pattern: ``matches(text)`` is whether it matches (searched, or whole-text for globs)."""

    pattern: str
    """The RE2 pattern, as compiled."""
    matches: Callable[[str], bool]


def compile_regex(pattern: str) -> TextMatcher:
    """A regular expression searched anywhere in the text; raise :class:`PatternError` if refused.

    An offset of -1 means the whole pattern (Python's own message then gives the offset in words)."""
    # The scanner goes first: what it refuses is named precisely, and Python would warn about some of it.
    problem = _unsupported(pattern)
    if problem is not None:
        raise PatternError(*problem)
    try:
        re.compile(pattern)
    except re.error as error:
        at = f" (at offset {error.pos} of the pattern)" if error.pos is not None else ""
        raise PatternError(-1, f"{error.msg}{at}") from None
    except (OverflowError, RecursionError, ValueError, FutureWarning) as error:
        # FutureWarning: raised, not printed, when warnings are errors (python -W error).
        raise PatternError(-1, str(error)) from None
    return TextMatcher(pattern, _matcher(_re2_compile(pattern), anchored=False))


def compile_glob(patterns: Sequence[str]) -> TextMatcher:
    """Shell globs matched against the whole text; any of them matching is a match."""
    # One alternation, so a list of globs costs a single match per text.
    source = "|".join(f"(?:{_glob(pattern)})" for pattern in patterns) or _NOTHING
    return TextMatcher(source, _matcher(_re2_compile(f"(?s:{source})"), anchored=True))


def _re2_compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _OPTIONS)
    except UnicodeEncodeError as error:
        raise PatternError(error.start, "a lone surrogate character has no UTF-8 form for RE2") from None
    except re2.error as error:
        message = error.args[0] if error.args else "rejected"
        text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
        # RE2 quotes the offending fragment after the colon ("invalid repetition size: {1001}").
        fragment = text.rpartition(": ")[2]
        offset = pattern.find(fragment) if fragment else -1
        if text.startswith("invalid repetition size"):
            text += " (RE2 allows at most 1000 repetitions, counting nested repeats multiplied)"
        raise PatternError(offset, f"RE2 cannot compile it: {text}") from None


def _matcher(regex: Any, *, anchored: bool) -> Callable[[str], bool]:
    find = regex.fullmatch if anchored else regex.search

    def direct(text: str) -> bool:
        try:
            return find(text) is not None
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form, so nothing RE2 could match
            return False

    remembered = lru_cache(maxsize=_MEMO_ENTRIES)(direct)

    def matches(text: str) -> bool:
        return remembered(text) if len(text) <= _MEMO_CHARS else direct(text)

    return matches


def _unsupported(pattern: str) -> tuple[int, str] | None:
    """The first construct Python accepts but RE2 lacks or reads differently, as (offset, reason).

    ``pattern`` has already been accepted by Python's parser, so this scanner only needs to track
    escapes, character classes and quantifiers, not to validate.
    """
    i, n = 0, len(pattern)
    quantified = False  # the previous item was a quantifier, so a '+' now would make it possessive
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            following = pattern[i + 1 : i + 2]
            if following in tuple("123456789"):
                return i, f"\\{following} is a backreference, {_BACKTRACKING}"
            if following == "Z":
                return i, "\\Z is not supported by RE2 (write $, which in RE2 matches only at the very end)"
            quantified = False
            i += 2
            continue
        if ch == "[":
            end, problem = _class_end(pattern, i)
            if problem is not None:
                return problem
            quantified = False
            i = end
            continue
        if ch == "(" and pattern.startswith("(?", i):
            for opener, what in _UNSUPPORTED_GROUPS:
                if pattern.startswith(opener, i):
                    return i, f"{opener!r} starts {what}, {_BACKTRACKING}"
            flags = _FLAGS.match(pattern, i)
            if flags is not None:
                unknown = sorted(set(flags.group(1) + (flags.group(2) or "")) - _RE2_FLAGS)
                if unknown:
                    return i, (
                        f"the inline flag{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        "is not supported by RE2 (it has i, m and s)"
                    )
        if ch in "*+?":
            if ch == "+" and quantified:
                return i, f"a possessive quantifier ('+' after a quantifier), {_BACKTRACKING}"
            # '?' after a quantifier makes it lazy, which RE2 has; a lazy one cannot be made possessive.
            quantified = ch != "?" or not quantified
            i += 1
            continue
        if ch == "{":
            if _EMPTY_MINIMUM.match(pattern, i):
                return i, ("{,n} means 0 to n repetitions to Python but is literal text to RE2; write {0,n}")
            counted = _QUANTIFIER.match(pattern, i)
            if counted is not None:
                quantified = True
                i = counted.end()
                continue
        quantified = False
        i += 1
    return None


def _class_end(pattern: str, start: int) -> tuple[int, tuple[int, str] | None]:
    """The index just past the character class opening at ``start``, or a construct to refuse in it."""
    i = start + 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):  # a ']' first is a literal member
        i += 1
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            following = pattern[i + 1 : i + 2]
            if following in tuple("123456789") or following == "Z":
                return i, (i, f"\\{following} in a character class is read differently by Python and RE2")
            i += 2
            continue
        if ch == "[" and pattern[i + 1 : i + 2] in (":", "=", "."):
            return i, (
                i,
                f"'[{pattern[i + 1]}' in a character class is a POSIX class to RE2 but plain characters "
                "to Python; escape the '[' (\\[) or write the characters out",
            )
        if ch == "]":
            return i + 1, None
        i += 1
    return i, None


# A class that matches no character: RE2 has no '(?!)'.
_NOTHING: Final = r"[^\x00-\x{10FFFF}]"


def _glob(pattern: str) -> str:
    """One glob as an RE2 pattern with :func:`fnmatch.fnmatchcase`'s meaning (CPython 3.11's translate,
    minus its atomic groups: RE2 cannot backtrack, so plain '.*' is already linear)."""
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not parts or parts[-1] != ".*":
                parts.append(".*")
        elif c == "?":
            parts.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                parts.append("\\[")
                continue
            parts.append(_glob_class(pattern, i, j))
            i = j + 1
        else:
            parts.append(_escape(c))
    return "".join(parts)


def _glob_class(pattern: str, i: int, j: int) -> str:
    """The class ``pattern[i:j]`` (between '[' and ']'), as fnmatch reads it."""
    stuff = pattern[i:j]
    if "-" not in stuff:
        stuff = stuff.replace("\\", r"\\")
    else:
        chunks = []
        k = i + 2 if pattern[i] == "!" else i + 1
        while True:
            k = pattern.find("-", k, j)
            if k < 0:
                break
            chunks.append(pattern[i:k])
            i = k + 1
            k = k + 3
        chunk = pattern[i:j]
        if chunk:
            chunks.append(chunk)
        else:
            chunks[-1] += "-"
        # Ranges whose ends are reversed are empty: fnmatch removes them.
        for k in range(len(chunks) - 1, 0, -1):
            if chunks[k - 1][-1] > chunks[k][0]:
                chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
                del chunks[k]
        stuff = "-".join(s.replace("\\", r"\\").replace("-", r"\-") for s in chunks)
    # fnmatch escapes these for Python's future set operations; RE2 takes any escaped punctuation.
    stuff = re.sub(r"([&~|\[])", r"\\\1", stuff)
    if not stuff:
        return _NOTHING
    if stuff == "!":
        return "."
    if stuff[0] == "!":
        stuff = "^" + stuff[1:]
    elif stuff[0] == "^":
        stuff = "\\" + stuff
    return f"[{stuff}]"


_SPECIAL: Final = frozenset("\\.+*?()|[]{}^$")


def _escape(c: str) -> str:
    return "\\" + c if c in _SPECIAL else c
