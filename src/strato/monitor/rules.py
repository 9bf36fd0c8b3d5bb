"""Group rules: a small, safe condition language that decides which hosts belong to a dynamic group.

A rule is one condition over a host's name, address and current Ganglia metrics::

    name matches "web-*" and load_one > 2
    role == "prompt" or (role in ["mixed", "token"] and kv_util >= 0.8)
    ip in "10.200.0.0/24" and not cluster == "test"
    name =~ "^llm-[0-9]+$"
    has(gpu_temp) and cpu_user + cpu_system > 80
    metric("disk-free") < 10e9

Rules come from administrators' configuration files, so they are never handed to Python's ``eval``,
``exec``, ``compile`` or ``ast``: those would run arbitrary code with the monitor's privileges, and their
error messages talk about Python, not about the rule. Instead a hand-written tokenizer and
recursive-descent parser build a small tree, check it, and compile it once into nested closures, so
evaluating a rule against a host costs a few function calls and no parsing.

Grammar (keywords are case-insensitive; ``{x}`` means zero or more ``x``, ``[x]`` means optional)::

    rule        = condition
    condition   = conjunction {"or" conjunction}
    conjunction = negation {"and" negation}
    negation    = "not" negation | comparison
    comparison  = sum [compare-op sum
                      | ["not"] "matches" (STRING | string-list)
                      | "=~" STRING
                      | ["not"] "in" (list | STRING)]
    compare-op  = "==" | "!=" | "<" | "<=" | ">" | ">="
    sum         = product {("+" | "-") product}
    product     = unary {("*" | "/") unary}
    unary       = "-" unary | primary
    primary     = NUMBER | STRING | "true" | "false" | NAME
                | "metric" "(" STRING ")"
                | "has" "(" (NAME | STRING | "metric" "(" STRING ")") ")"
                | "(" condition ")" | "(" sum ")"
    list        = "[" [literal {"," literal} [","]] "]"
    literal     = ["-"] NUMBER | STRING

Precedence, loosest first: ``or``, ``and``, ``not``, comparisons, ``+ -``, ``* /``, unary ``-``.
Comparisons do not chain: write ``a < b and b < c``.

Names. ``name`` (alias ``host``), ``ip``, ``cluster`` and ``location`` are the host's strings and ``tn``
the seconds since it last reported; they are lower case and always present. Any other name is a metric:
letters, digits, ``_`` and ``.``, starting with a letter or ``_``. A metric whose name has other
characters, or is a keyword, is written ``metric("disk-free")`` -- a bare ``disk-free`` is subtraction.
The keywords ``and or not in matches true false`` are reserved.

Literals. Numbers are decimal with an optional fraction and exponent (``2``, ``0.8``, ``1e9``, ``-3``);
every number is a float, so huge integers are fine. Strings use ``"..."`` or ``'...'``; a backslash
escapes a quote or a backslash, and any other backslash is kept as written, so regular expressions such
as ``"\\d+"`` need no doubling. Lists hold up to 1024 numbers and strings.

Operators.

* ``== !=`` compare numbers numerically and strings exactly. A string compared with a number is read
  with ``float()``; a string that is not a number makes the comparison unknown.
* ``< <= > >=`` order numbers (strings are converted as above). Ordering two strings is rejected when
  both are known to be strings when the rule is parsed, and is unknown otherwise.
* ``+ - * /`` on numbers; division by zero is unknown.
* ``x matches "web-*"`` is a shell glob over the whole string (``*``, ``?``, ``[abc]``), case-sensitive;
  ``x matches ["web-*", "api-*"]`` matches any of them.
* ``x =~ "re"`` is a regular expression searched anywhere in the string (anchor it with ``^`` and
  ``$``); it is checked when the rule is parsed and may be at most 256 characters. It is matched by RE2,
  in time linear in the text, so no host name can make a rule slow: Python's syntax, minus what needs
  backtracking (backreferences, lookaround, atomic groups, possessive quantifiers, conditionals, ``\\Z``),
  which is refused with the column of the construct (see :mod:`strato.monitor.patterns`).
* ``x in [...]`` is true when ``x`` equals an item (by the ``==`` rules above).
* ``ip in "10.0.0.0/8"`` tests network membership (IPv4 or IPv6); the network is checked when the rule
  is parsed and must not have host bits set. ``ip in ["10.0.0.0/8", "192.168.1.7"]`` -- a list with a
  ``/`` in any item, on ``ip`` or a metric -- tests membership of any of the networks.
* ``not in`` and ``not matches`` negate ``in`` and ``matches``.
* ``has(gpu_temp)`` is true when the host reports that metric, whatever its value.

Missing data. A rule is evaluated in three-valued (Kleene) logic: a comparison that reads a metric the
host does not have, a string that is not a number, NaN, or division by zero is UNKNOWN rather than
false. ``not UNKNOWN`` is UNKNOWN; ``false and UNKNOWN`` is false, ``true or UNKNOWN`` is true, and
otherwise UNKNOWN spreads. A host is a member only when the rule is TRUE, so a host without
``load_one`` belongs neither to ``load_one > 2`` nor to ``not load_one > 2``. Use ``has(...)`` to ask
about presence explicitly.

Limits, so a hostile or mistaken rule cannot exhaust the monitor: at most 4096 characters, nesting
(parentheses, ``not`` and unary ``-``) at most 64 deep, lists at most 1024 items, regular expressions at
most 256 characters and matched in linear time (globs too). Every mistake raises :class:`RuleSyntaxError`
with its position; metric names can be checked against what Ganglia reports with
:meth:`Rule.check_metrics`.
"""

from __future__ import annotations

import difflib
import ipaddress
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, NoReturn, TypeAlias

from strato.errors import ConfigError
from strato.monitor.model import Host
from strato.monitor.patterns import PatternError, TextMatcher, compile_glob, compile_regex

__all__ = [
    "HOST_ATTRIBUTES",
    "KEYWORDS",
    "MAX_DEPTH",
    "MAX_LIST_ITEMS",
    "MAX_REGEX_CHARS",
    "MAX_RULE_CHARS",
    "Rule",
    "RuleSyntaxError",
    "UnknownMetricError",
    "parse_rule",
]

MAX_RULE_CHARS: Final = 4096
MAX_DEPTH: Final = 64
MAX_LIST_ITEMS: Final = 1024
MAX_REGEX_CHARS: Final = 256

KEYWORDS: Final = frozenset({"and", "or", "not", "in", "matches", "true", "false"})
HOST_ATTRIBUTES: Final[Mapping[str, str]] = {
    "name": "name",
    "host": "name",
    "ip": "ip",
    "cluster": "cluster",
    "location": "location",
    "tn": "tn",
}
_STRING_ATTRIBUTES: Final = frozenset({"name", "ip", "cluster", "location"})

# Error rendering: lines longer than this are shown as a window around the error position.
_SHOWN_CHARS: Final = 100


# --- errors ---------------------------------------------------------------------------------------


class RuleSyntaxError(ConfigError):
    """A rule that cannot be parsed. ``position`` is the 0-based offset of the offending character.

    ``line`` and ``column`` are 1-based; ``str()`` shows the reason, the rule and a caret under the
    position.
    """

    def __init__(self, rule: str, position: int, reason: str) -> None:
        self.rule = rule
        self.position = position
        self.reason = reason
        self.line, self.column = _line_column(rule, position)
        super().__init__(_render(rule, position, reason))

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call __init__ with the rendered message only, so errors could not cross a
        # process boundary (multiprocessing, dask).
        return (type(self), (self.rule, self.position, self.reason))


class UnknownMetricError(ConfigError):
    """A rule reads metrics that the monitored hosts do not report.

    ``unknown`` is the sorted list of those names; ``suggestions`` maps each to its close matches among
    the known names (possibly none).
    """

    def __init__(
        self,
        unknown: Iterable[str],
        known: Iterable[str] = (),
        *,
        rule: str | None = None,
        hints: Mapping[str, str] | None = None,
    ) -> None:
        self.unknown = sorted(set(unknown))
        self.known = sorted(set(known))
        self.rule = rule
        self.hints = dict(hints or {})
        self.suggestions: dict[str, list[str]] = {
            name: difflib.get_close_matches(name, self.known, n=3, cutoff=0.6) for name in self.unknown
        }
        items = []
        for name in self.unknown:
            # A hint (such as metric("disk-free") for a subtraction) is more specific than spelling.
            close = [self.hints[name]] if name in self.hints else [repr(m) for m in self.suggestions[name]]
            items.append(f"{name!r} (did you mean {' or '.join(close)}?)" if close else repr(name))
        message = f"unknown metric{'s' if len(self.unknown) != 1 else ''} {', '.join(items)}"
        if rule is not None:
            message += f" in rule {rule!r}"
        if not self.known:
            message += "; no metrics are known yet"
        if self.hints:
            message += '; a bare "-" subtracts, so write metric("...") for a name that contains one'
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_unknown_metric_error, (self.unknown, self.known, self.rule, self.hints))


def _rebuild_unknown_metric_error(
    unknown: list[str], known: list[str], rule: str | None, hints: dict[str, str]
) -> UnknownMetricError:
    return UnknownMetricError(unknown, known, rule=rule, hints=hints)


def _line_column(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def _where(text: str, position: int) -> str:
    line, column = _line_column(text, position)
    return f"line {line}, column {column}" if "\n" in text else f"column {column}"


def _render(rule: str, position: int, reason: str) -> str:
    start = rule.rfind("\n", 0, position) + 1
    stop = rule.find("\n", position)
    line = rule[start : len(rule) if stop < 0 else stop]
    column = position - start
    lo, hi = 0, len(line)
    if len(line) > _SHOWN_CHARS:
        lo = max(0, min(column - _SHOWN_CHARS // 2, len(line) - _SHOWN_CHARS))
        hi = lo + _SHOWN_CHARS
    # Control characters would move the terminal cursor and misplace the caret.
    shown = "".join(ch if ch.isprintable() or ch == "\t" else " " for ch in line[lo:hi])
    before = "".join("\t" if ch == "\t" else " " for ch in shown[: column - lo])
    if lo > 0:
        shown, before = "..." + shown, "   " + before
    if hi < len(line):
        shown += "..."
    return f"{reason}\n    {shown}\n    {before}^ {_where(rule, position)}"


# --- tokens ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # num, str, name, kw, op, (, ), [, ], ",", eof
    text: str  # as written in the rule
    pos: int
    end: int
    value: str = ""  # string contents, lower-cased keyword, operator, or name
    number: float = 0.0


_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_WORD_TAIL = re.compile(r"[A-Za-z0-9_.]*")
_OPERATOR_RUN = re.compile(r"[=!<>~&|]+")
_COMPARE_OPERATORS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})
_OPERATORS: Final = _COMPARE_OPERATORS | {"=~"}
_OPERATOR_HINTS: Final = {
    "=": "==",
    "===": "==",
    "=>": ">=",
    "=<": "<=",
    "<>": "!=",
    "!==": "!=",
    "~=": "=~",
    "~": "=~",
    "!~": "not (... =~ ...)",
    "!": "not",
    "&&": "and",
    "&": "and",
    "||": "or",
    "|": "or",
}
_PUNCTUATION: Final = {
    "+": "op",
    "-": "op",
    "*": "op",
    "/": "op",
    "(": "(",
    ")": ")",
    "[": "[",
    "]": "]",
    ",": ",",
}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        ch = text[i]
        if ch in "\"'":
            token = _scan_string(text, i)
        elif number := _NUMBER.match(text, i):
            end = number.end()
            tail = _WORD_TAIL.match(text, end)
            assert tail is not None  # the pattern matches the empty string
            if tail.end() > end:
                _bad_number(text, i, tail.end())
            token = _Token("num", number.group(), i, end, number=float(number.group()))
        elif word := _WORD.match(text, i):
            lower = word.group().lower()
            kind = "kw" if lower in KEYWORDS else "name"
            token = _Token(kind, word.group(), i, word.end(), value=lower if kind == "kw" else word.group())
        elif run := _OPERATOR_RUN.match(text, i):
            op = run.group()
            if op not in _OPERATORS:
                hint = _OPERATOR_HINTS.get(op)
                reason = f"unknown operator {op!r} at {_where(text, i)}"
                raise RuleSyntaxError(text, i, reason + (f" (did you mean {hint!r}?)" if hint else ""))
            token = _Token("op", op, i, run.end(), value=op)
        elif ch in _PUNCTUATION:
            token = _Token(_PUNCTUATION[ch], ch, i, i + 1, value=ch)
        else:
            raise RuleSyntaxError(text, i, f"unexpected character {ch!r} at {_where(text, i)}")
        tokens.append(token)
        i = token.end
    tokens.append(_Token("eof", "", n, n))
    return tokens


def _scan_string(text: str, start: int) -> _Token:
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return _Token("str", text[start : i + 1], start, i + 1, value="".join(chars))
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "\"'\\":
            chars.append(text[i + 1])
            i += 2
            continue
        chars.append(ch)
        i += 1
    raise RuleSyntaxError(
        text,
        start,
        f"unterminated string starting at {_where(text, start)} (no closing {quote} before the end)",
    )


def _bad_number(text: str, start: int, end: int) -> NoReturn:
    word = text[start:end]
    if word.count(".") > 1:
        hint = f'quote addresses and networks: "{word}"'
    else:
        hint = f'names start with a letter or "_"; write metric("{word}") for any other name'
    raise RuleSyntaxError(text, start, f"invalid number {word!r} at {_where(text, start)} ({hint})")


def _hyphen_runs(text: str, tokens: list[_Token]) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Map the position of each '-' written tight between two words to the whole run, e.g. 'disk-free'.

    Ganglia metric names may contain '-', which a bare name cannot, so ``disk-free`` parses as a
    subtraction; the runs let errors and :meth:`Rule.check_metrics` suggest ``metric("disk-free")``.
    """
    runs: dict[int, tuple[str, tuple[str, ...]]] = {}
    k = 0
    while k < len(tokens):
        j = k
        if tokens[k].kind in ("name", "kw"):
            while (
                j + 2 < len(tokens)
                and tokens[j + 1].text == "-"
                and tokens[j].end == tokens[j + 1].pos
                and tokens[j + 1].end == tokens[j + 2].pos
                and tokens[j + 2].kind in ("name", "kw")
            ):
                j += 2
        if j > k:
            joined = text[tokens[k].pos : tokens[j].end]
            parts = tuple(tokens[m].value for m in range(k, j + 1, 2) if tokens[m].kind == "name")
            for m in range(k + 1, j, 2):
                runs[tokens[m].pos] = (joined, parts)
        k = j + 1
    return runs


# --- tree -----------------------------------------------------------------------------------------
# Every node records the span of rule text it came from, so errors can quote what the user wrote.


@dataclass(frozen=True, slots=True)
class _Num:
    value: float
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Str:
    value: str
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Attr:
    name: str  # the Host field: name, ip, cluster, location or tn
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _MetricRef:
    name: str
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Neg:
    operand: _Value
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Arith:
    first: _Value
    rest: tuple[tuple[str, _Value], ...]
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Const:
    value: bool
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Has:
    name: str
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Cond
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _And:
    items: tuple[_Cond, ...]
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Or:
    items: tuple[_Cond, ...]
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Compare:
    left: _Value
    op: str
    right: _Value
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Pattern:
    """``matches`` (globs, whole text) or ``=~`` (a regular expression, searched)."""

    left: _Value
    matcher: TextMatcher
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _InList:
    left: _Value
    strings: frozenset[str]
    numbers: frozenset[float]
    string_numbers: frozenset[float]  # the string items that read as numbers
    wordy_strings: bool  # some string item is not a number: comparing a number with it is unknown
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _InNetworks:
    left: _Value
    networks: tuple[tuple[int, int, int], ...]  # (IP version, network address, netmask) as integers
    pos: int
    end: int


_Value: TypeAlias = _Num | _Str | _Attr | _MetricRef | _Neg | _Arith
_Cond: TypeAlias = _Const | _Has | _Not | _And | _Or | _Compare | _Pattern | _InList | _InNetworks
_Node: TypeAlias = _Value | _Cond
_VALUE_TYPES: Final = (_Num, _Str, _Attr, _MetricRef, _Neg, _Arith)


def _kind(node: _Value) -> str:
    """What a value is known to be before any host is seen: 'num', 'str', or 'any' (a metric)."""
    if isinstance(node, _Str) or (isinstance(node, _Attr) and node.name in _STRING_ATTRIBUTES):
        return "str"
    if isinstance(node, _MetricRef):
        return "any"
    return "num"


def _to_number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return None if number != number else number


# --- parser ---------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.hyphens = _hyphen_runs(text, tokens)

    # helpers

    def fail(self, position: int, reason: str) -> NoReturn:
        raise RuleSyntaxError(self.text, position, reason)

    def where(self, position: int) -> str:
        return _where(self.text, position)

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "eof":
            self.i += 1
        return token

    def at_keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "kw" and token.value == word

    def found(self, token: _Token) -> str:
        if token.kind == "eof":
            return f"end of rule at {self.where(token.pos)}"
        what = f"keyword {token.value!r}" if token.kind == "kw" else repr(_shorten(token.text))
        return f"{what} at {self.where(token.pos)}"

    def quote(self, node: _Node) -> str:
        return repr(_shorten(self.text[node.pos : node.end]))

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(
                token.pos,
                f"rule nests deeper than {MAX_DEPTH} levels at {self.where(token.pos)} "
                "(each parenthesis, 'not' and unary '-' adds one)",
            )

    def expect_close(self, opener: _Token, closer: str) -> _Token:
        token = self.peek()
        if token.kind != closer:
            self.fail(
                token.pos,
                f"expected {closer!r} to close {opener.text!r} at {self.where(opener.pos)}, "
                f"found {self.found(token)}",
            )
        return self.advance()

    def require_condition(self, node: _Node) -> _Cond:
        if not isinstance(node, _VALUE_TYPES):
            return node
        shown = self.text[node.pos : node.end]
        hint = f"compare it, e.g. {shown} > 0"
        if isinstance(node, _MetricRef):
            hint += f", or test has({shown})"
        elif isinstance(node, _Attr) and node.name in _STRING_ATTRIBUTES:
            hint = f'compare it, e.g. {shown} == "..." or {shown} matches "..."'
        self.fail(
            node.pos, f"{self.quote(node)} at {self.where(node.pos)} is a value, not a condition ({hint})"
        )

    def require_value(self, node: _Node, operator_token: _Token) -> _Value:
        if isinstance(node, _VALUE_TYPES):
            return node
        self.fail(
            node.pos,
            f"{self.quote(node)} at {self.where(node.pos)} is a condition, but "
            f"{operator_token.text!r} at {self.where(operator_token.pos)} needs a value",
        )

    def require_number(self, node: _Value, operator_token: _Token) -> _Value:
        if _kind(node) != "str" or (isinstance(node, _Str) and _to_number(node.value) is not None):
            return node
        hint = ""
        run = self.hyphens.get(operator_token.pos)
        if run is not None:
            hint = f' (for a metric whose name contains "-", write metric("{run[0]}"))'
        self.fail(
            node.pos,
            f"{operator_token.text!r} at {self.where(operator_token.pos)} needs numbers, but "
            f"{self.quote(node)} at {self.where(node.pos)} is a string{hint}",
        )

    # grammar, loosest binding first

    def parse_rule(self) -> _Cond:
        if self.peek().kind == "eof":
            self.fail(0, "empty rule: write a condition such as load_one > 2")
        tree = self.parse_or()
        token = self.peek()
        if token.kind == ")":
            self.fail(token.pos, f"unmatched ')' at {self.where(token.pos)}")
        if token.kind != "eof":
            hint = ""
            if token.kind in ("name", "num", "str", "(") or token.value in ("not", "true", "false"):
                hint = " (missing 'and' or 'or' before it?)"
            self.fail(token.pos, f"trailing input {_shorten(token.text)!r} at {self.where(token.pos)}{hint}")
        return self.require_condition(tree)

    def parse_or(self) -> _Node:
        first = self.parse_and()
        if not self.at_keyword("or"):
            return first
        items = [self.require_condition(first)]
        while self.at_keyword("or"):
            self.advance()
            items.append(self.require_condition(self.parse_and()))
        return _Or(tuple(items), first.pos, items[-1].end)

    def parse_and(self) -> _Node:
        first = self.parse_not()
        if not self.at_keyword("and"):
            return first
        items = [self.require_condition(first)]
        while self.at_keyword("and"):
            self.advance()
            items.append(self.require_condition(self.parse_not()))
        return _And(tuple(items), first.pos, items[-1].end)

    def parse_not(self) -> _Node:
        token = self.peek()
        if self.at_keyword("not"):
            self.advance()
            self.enter(token)
            operand = self.require_condition(self.parse_not())
            self.depth -= 1
            return _Not(operand, token.pos, operand.end)
        return self.parse_comparison()

    def comparison_operator(self) -> tuple[str, int] | None:
        """The comparison operator at the cursor and how many tokens it spans, without consuming it."""
        token = self.peek()
        if token.kind == "op" and token.value in _OPERATORS:
            return token.value, 1
        if token.kind == "kw" and token.value in ("in", "matches"):
            return token.value, 1
        following = self.peek(1)
        if token.value == "not" and following.kind == "kw" and following.value in ("in", "matches"):
            return "not " + following.value, 2
        return None

    def parse_comparison(self) -> _Node:
        left = self.parse_sum()
        found = self.comparison_operator()
        if found is None:
            if isinstance(left, _VALUE_TYPES):
                self.reject_after_value(left)
            return left
        op, width = found
        op_token = self.peek()
        for _ in range(width):
            self.advance()
        value = self.require_value(left, op_token)
        node: _Cond
        if op in _COMPARE_OPERATORS:
            right = self.require_value(self.parse_sum(), op_token)
            if op not in ("==", "!=") and _kind(value) == "str" and _kind(right) == "str":
                self.fail(
                    op_token.pos,
                    f"{op!r} at {self.where(op_token.pos)} orders numbers, but both sides are strings "
                    "(use == or != to compare strings, matches or =~ to test their shape)",
                )
            node = _Compare(value, op, right, value.pos, right.end)
        elif op == "=~":
            node = self.parse_regex(value, op_token)
        elif op.endswith("matches"):
            node = self.parse_glob(value, op_token)
        else:
            node = self.parse_membership(value, op_token)
        if op.startswith("not "):
            node = _Not(node, node.pos, node.end)
        chained = self.comparison_operator()
        if chained is not None:
            token = self.peek()
            self.fail(
                token.pos,
                f"comparisons cannot be chained: {token.text!r} at {self.where(token.pos)} follows "
                f"{op_token.text!r} at {self.where(op_token.pos)} (join them with 'and')",
            )
        return node

    def reject_after_value(self, left: _Value) -> None:
        token = self.peek()
        if token.kind == "kw" and token.value == "not":
            self.fail(
                self.peek(1).pos,
                f"expected 'in' or 'matches' after 'not' at {self.where(token.pos)}, "
                f"found {self.found(self.peek(1))}",
            )
        if token.kind in ("name", "num", "str", "[") or token.value in ("true", "false"):
            hint = ""
            if token.kind == "name":
                close = difflib.get_close_matches(token.value.lower(), sorted(KEYWORDS), n=1, cutoff=0.6)
                if close:
                    hint = f" (did you mean {close[0]!r}?)"
            self.fail(
                token.pos,
                f"expected an operator such as ==, <, matches or in after {self.quote(left)}, "
                f"found {self.found(token)}{hint}",
            )

    def parse_regex(self, left: _Value, op_token: _Token) -> _Cond:
        self.require_text(left, op_token)
        token = self.peek()
        if token.kind != "str":
            self.fail(
                token.pos,
                f"'=~' at {self.where(op_token.pos)} needs a quoted regular expression, "
                f"found {self.found(token)}",
            )
        self.advance()
        if len(token.value) > MAX_REGEX_CHARS:
            self.fail(
                token.pos,
                f"regular expression at {self.where(token.pos)} is {len(token.value)} characters long; "
                f"the limit is {MAX_REGEX_CHARS}",
            )
        try:
            matcher = compile_regex(token.value)
        except PatternError as error:
            if error.offset < 0:
                self.fail(token.pos, f"invalid regular expression at {self.where(token.pos)}: {error.reason}")
            self.fail(
                self.string_position(token, error.offset),
                f"regular expression at {self.where(token.pos)} refused: {error.reason}",
            )
        return _Pattern(left, matcher, left.pos, token.end)

    def string_position(self, token: _Token, offset: int) -> int:
        """The rule position of character ``offset`` of a string token's value (an escape is two)."""
        position = token.pos + 1
        for _ in range(offset):
            escaped = self.text[position] == "\\" and self.text[position + 1 : position + 2] in (
                '"',
                "'",
                "\\",
            )
            position += 2 if escaped else 1
        return min(position, token.end - 1)

    def parse_glob(self, left: _Value, op_token: _Token) -> _Cond:
        self.require_text(left, op_token)
        token = self.peek()
        if token.kind == "str":
            self.advance()
            patterns, end = [token.value], token.end
        elif token.kind == "[":
            items = self.parse_list()
            for item, item_token in items:
                if not isinstance(item, str):
                    self.fail(
                        item_token.pos,
                        f"glob patterns must be quoted strings, found {self.found(item_token)}",
                    )
            patterns, end = [str(item) for item, _ in items], self.tokens[self.i - 1].end
        else:
            self.fail(
                token.pos,
                f"{op_token.text!r} at {self.where(op_token.pos)} needs a quoted glob pattern such as "
                f'"web-*" or a list of them, found {self.found(token)}',
            )
        try:
            matcher = compile_glob(patterns)
        except PatternError as error:
            self.fail(token.pos, f"invalid glob pattern at {self.where(token.pos)}: {error.reason}")
        return _Pattern(left, matcher, left.pos, end)

    def require_text(self, left: _Value, op_token: _Token) -> None:
        if _kind(left) == "num":
            self.fail(
                left.pos,
                f"{op_token.text!r} at {self.where(op_token.pos)} tests strings, but {self.quote(left)} "
                f"at {self.where(left.pos)} is a number",
            )

    def parse_membership(self, left: _Value, op_token: _Token) -> _Cond:
        token = self.peek()
        addressable = isinstance(left, _MetricRef) or (isinstance(left, _Attr) and left.name == "ip")
        if token.kind == "str":
            self.advance()
            if not addressable:
                self.fail(
                    left.pos,
                    f"network membership ({op_token.text!r} at {self.where(op_token.pos)}) needs an "
                    f"address, but {self.quote(left)} at {self.where(left.pos)} is not one "
                    f"(write ip in {token.text})",
                )
            return _InNetworks(left, (self.parse_network(token.value, token),), left.pos, token.end)
        if token.kind != "[":
            self.fail(
                token.pos,
                f'{op_token.text!r} at {self.where(op_token.pos)} needs a list such as ["a", "b"] '
                f'or a network such as "10.0.0.0/8", found {self.found(token)}',
            )
        items = self.parse_list()
        end = self.tokens[self.i - 1].end
        if addressable and any(isinstance(item, str) and "/" in item for item, _ in items):
            networks = tuple(self.parse_network(item, item_token) for item, item_token in items)
            return _InNetworks(left, networks, left.pos, end)
        strings = frozenset(item for item, _ in items if isinstance(item, str))
        converted = [_to_number(item) for item in strings]
        return _InList(
            left,
            strings,
            frozenset(item for item, _ in items if not isinstance(item, str)),
            frozenset(number for number in converted if number is not None),
            any(number is None for number in converted),
            left.pos,
            end,
        )

    def parse_network(self, value: float | str, token: _Token) -> tuple[int, int, int]:
        if not isinstance(value, str):
            self.fail(token.pos, f"networks must be quoted strings, found {self.found(token)}")
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as error:
            try:
                loose = ipaddress.ip_network(value, strict=False)
            except ValueError:
                self.fail(token.pos, f"invalid network {value!r} at {self.where(token.pos)}: {error}")
            self.fail(
                token.pos,
                f"network {value!r} at {self.where(token.pos)} has host bits set "
                f"(did you mean {str(loose)!r}?)",
            )
        return network.version, int(network.network_address), int(network.netmask)

    def parse_list(self) -> list[tuple[float | str, _Token]]:
        opener = self.advance()
        items: list[tuple[float | str, _Token]] = []
        while True:
            token = self.peek()
            if token.kind == "]":
                self.advance()
                return items
            if token.kind == "eof":
                self.expect_close(opener, "]")
            if len(items) >= MAX_LIST_ITEMS:
                self.fail(
                    token.pos,
                    f"list at {self.where(opener.pos)} has more than {MAX_LIST_ITEMS} items",
                )
            items.append(self.parse_literal())
            token = self.peek()
            if token.kind == ",":
                self.advance()
            elif token.kind != "]":
                self.fail(
                    token.pos,
                    f"expected ',' or ']' to close '[' at {self.where(opener.pos)}, "
                    f"found {self.found(token)}",
                )

    def parse_literal(self) -> tuple[float | str, _Token]:
        token = self.advance()
        if token.kind == "str":
            return token.value, token
        if token.kind == "num":
            return token.number, token
        if token.text == "-" and self.peek().kind == "num":
            return -self.advance().number, token
        self.fail(token.pos, f"list items must be numbers or quoted strings, found {self.found(token)}")

    def parse_sum(self) -> _Node:
        return self.parse_arithmetic(("+", "-"), self.parse_product)

    def parse_product(self) -> _Node:
        return self.parse_arithmetic(("*", "/"), self.parse_unary)

    def parse_arithmetic(self, operators: tuple[str, str], operand: Callable[[], _Node]) -> _Node:
        first = operand()
        if self.peek().kind != "op" or self.peek().value not in operators:
            return first
        rest: list[tuple[str, _Value]] = []
        left = self.require_number(self.require_value(first, self.peek()), self.peek())
        while self.peek().kind == "op" and self.peek().value in operators:
            op_token = self.advance()
            right = self.require_number(self.require_value(operand(), op_token), op_token)
            if op_token.value == "/" and isinstance(right, _Num) and right.value == 0:
                self.fail(right.pos, f"division by zero at {self.where(right.pos)}")
            rest.append((op_token.value, right))
        end = rest[-1][1].end
        if isinstance(left, _Num) and all(isinstance(node, _Num) for _, node in rest):
            folded = _fold(left.value, [(op, node.value) for op, node in rest if isinstance(node, _Num)])
            if folded is None:
                self.fail(left.pos, f"arithmetic at {self.where(left.pos)} has no numeric result")
            return _Num(folded, left.pos, end)
        return _Arith(left, tuple(rest), left.pos, end)

    def parse_unary(self) -> _Node:
        token = self.peek()
        if token.kind == "op" and token.value == "-":
            self.advance()
            self.enter(token)
            operand = self.require_number(self.require_value(self.parse_unary(), token), token)
            self.depth -= 1
            if isinstance(operand, _Num):
                return _Num(-operand.value, token.pos, operand.end)
            return _Neg(operand, token.pos, operand.end)
        return self.parse_primary()

    def parse_primary(self) -> _Node:
        token = self.peek()
        if token.kind == "num":
            self.advance()
            return _Num(token.number, token.pos, token.end)
        if token.kind == "str":
            self.advance()
            return _Str(token.value, token.pos, token.end)
        if token.kind == "kw" and token.value in ("true", "false"):
            self.advance()
            return _Const(token.value == "true", token.pos, token.end)
        if token.kind == "name":
            self.advance()
            if self.peek().kind == "(":
                return self.parse_call(token)
            if token.value in HOST_ATTRIBUTES:
                return _Attr(HOST_ATTRIBUTES[token.value], token.pos, token.end)
            return _MetricRef(token.value, token.pos, token.end)
        if token.kind == "(":
            self.advance()
            self.enter(token)
            inner = self.parse_or()
            close = self.expect_close(token, ")")
            self.depth -= 1
            if isinstance(inner, _VALUE_TYPES):
                return inner
            # A parenthesized condition keeps its parentheses in its span, so errors quote it whole.
            return _replace_span(inner, token.pos, close.end)
        self.fail_expected_operand(token)

    def fail_expected_operand(self, token: _Token) -> NoReturn:
        previous = self.tokens[self.i - 1] if self.i > 0 else None
        wanted = "a condition"
        if previous is not None and (
            previous.kind == "op" or (previous.kind == "kw" and previous.value == "in")
        ):
            wanted = "a value"
        after = f" after {previous.text!r}" if previous is not None else ""
        hint = ""
        if token.kind == "[":
            hint = " (a list can only follow 'in' or 'matches')"
        elif token.kind == "kw":
            run = self.hyphens.get(previous.pos) if previous is not None else None
            if run is not None:
                hint = f' (for a metric whose name contains "-", write metric("{run[0]}"))'
            elif token.value not in ("and", "or", "not"):
                hint = (
                    f' ({token.value!r} is reserved; write metric("{token.text}") for a metric of that name)'
                )
        self.fail(token.pos, f"expected {wanted}{after}, found {self.found(token)}{hint}")

    def parse_call(self, name: _Token) -> _Node:
        function = name.value.lower()
        if function == "metric":
            return self.parse_metric_call(name)
        if function != "has":
            self.fail(
                name.pos,
                f"unknown function {name.text!r} at {self.where(name.pos)} "
                '(there are has(metric) and metric("name"))',
            )
        opener = self.advance()
        token = self.peek()
        metric: str
        if token.kind == "name" and self.peek(1).kind == "(" and token.value.lower() == "metric":
            self.advance()
            metric = self.parse_metric_call(token).name
        elif token.kind == "name" and token.value in HOST_ATTRIBUTES:
            self.fail(
                token.pos,
                f"has() at {self.where(name.pos)} tests for a metric, but {token.text!r} is a host "
                f'attribute every host has (write has("{token.text}") for a metric of that name)',
            )
        elif token.kind == "name" or (token.kind == "str" and token.value):
            self.advance()
            metric = token.value
        else:
            hint = f' (write has("{token.text}") for a metric of that name)' if token.kind == "kw" else ""
            self.fail(
                token.pos,
                f"has() at {self.where(name.pos)} needs a metric name, found {self.found(token)}{hint}",
            )
        close = self.expect_close(opener, ")")
        return _Has(metric, name.pos, close.end)

    def parse_metric_call(self, name: _Token) -> _MetricRef:
        opener = self.advance()
        token = self.peek()
        if token.kind != "str" or not token.value:
            hint = f' (write metric("{token.text}"))' if token.kind in ("name", "kw", "num") else ""
            self.fail(
                token.pos,
                f"metric() at {self.where(name.pos)} needs a quoted, non-empty metric name, "
                f"found {self.found(token)}{hint}",
            )
        self.advance()
        close = self.expect_close(opener, ")")
        return _MetricRef(token.value, name.pos, close.end)


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _replace_span(node: _Cond, pos: int, end: int) -> _Cond:
    fields = {name: getattr(node, name) for name in node.__dataclass_fields__}
    fields.update(pos=pos, end=end)
    return type(node)(**fields)


_ARITHMETIC: Final[Mapping[str, Callable[[float, float], float]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def _fold(first: float, rest: list[tuple[str, float]]) -> float | None:
    result = first
    for op, operand in rest:
        try:
            result = _ARITHMETIC[op](result, operand)
        except (ZeroDivisionError, OverflowError):
            return None
        if result != result:
            return None
    return result


# --- compilation to closures ----------------------------------------------------------------------

_Truth: TypeAlias = bool | None
_Test: TypeAlias = Callable[[Host], _Truth]
_Get: TypeAlias = Callable[[Host], float | str | None]

_COMPARE: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# Rewriting ``2 < x`` as ``x > 2`` lets constant-on-either-side comparisons share one fast path.
_MIRROR: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _compile(node: _Cond) -> _Test:
    if isinstance(node, _Const):
        constant = node.value
        return lambda _host: constant
    if isinstance(node, _Has):
        metric = node.name
        return lambda host: metric in host.metrics
    if isinstance(node, _Not):
        return _compile_not(_compile(node.operand))
    if isinstance(node, _And):
        return _compile_and([_compile(item) for item in node.items])
    if isinstance(node, _Or):
        return _compile_or([_compile(item) for item in node.items])
    if isinstance(node, _Compare):
        return _compile_compare(node)
    if isinstance(node, _Pattern):
        return _compile_pattern(_compile_value(node.left), node.matcher)
    if isinstance(node, _InList):
        return _compile_in_list(node)
    return _compile_in_networks(_compile_value(node.left), node.networks)


def _compile_not(inner: _Test) -> _Test:
    def test(host: Host) -> _Truth:
        result = inner(host)
        return None if result is None else not result

    return test


def _compile_junction(items: list[_Test], decisive: bool) -> _Test:
    """``and`` (``decisive`` False: one false operand decides) or ``or`` (True decides), in Kleene logic:
    otherwise any unknown operand makes the result unknown."""
    if len(items) == 2:
        first, second = items

        def pair(host: Host) -> _Truth:
            a = first(host)
            if a is decisive:
                return decisive
            b = second(host)
            if b is decisive:
                return decisive
            return None if a is None or b is None else not decisive

        return pair

    def chain(host: Host) -> _Truth:
        unknown = False
        for item in items:
            result = item(host)
            if result is decisive:
                return decisive
            if result is None:
                unknown = True
        return None if unknown else not decisive

    return chain


def _compile_and(items: list[_Test]) -> _Test:
    return _compile_junction(items, decisive=False)


def _compile_or(items: list[_Test]) -> _Test:
    return _compile_junction(items, decisive=True)


def _compare_values(op: str, a: float | str, b: float | str) -> _Truth:
    """Compare two present values by the rule's coercion rules (see the module docstring)."""
    if isinstance(a, str):
        if isinstance(b, str):
            return _COMPARE[op](a, b) if op in ("==", "!=") else None
        converted = _to_number(a)
        if converted is None:
            return None
        a = converted
    elif isinstance(b, str):
        converted = _to_number(b)
        if converted is None:
            return None
        b = converted
    if a != a or b != b:
        return None
    return _COMPARE[op](a, b)


def _compile_compare(node: _Compare) -> _Test:
    left, op, right = node.left, node.op, node.right
    left_constant = isinstance(left, _Num | _Str)
    right_constant = isinstance(right, _Num | _Str)
    if left_constant and right_constant:
        assert isinstance(left, _Num | _Str) and isinstance(right, _Num | _Str)
        result = _compare_values(op, left.value, right.value)
        return lambda _host: result
    if left_constant:
        left, op, right = right, _MIRROR[op], left
    if isinstance(right, _Num | _Str):
        return _compare_with_constant(_compile_value(left), op, right.value)
    get_left, get_right = _compile_value(left), _compile_value(right)

    def test(host: Host) -> _Truth:
        a = get_left(host)
        if a is None:
            return None
        b = get_right(host)
        if b is None:
            return None
        return _compare_values(op, a, b)

    return test


def _compare_with_constant(get: _Get, op: str, constant: float | str) -> _Test:
    compare = _COMPARE[op]
    if isinstance(constant, str):
        text = constant
        number = _to_number(constant)
        text_equality = op in ("==", "!=")

        def against_string(host: Host) -> _Truth:
            value = get(host)
            if value is None:
                return None
            if isinstance(value, str):
                return compare(value, text) if text_equality else None
            if number is None or value != value:
                return None
            return compare(value, number)

        return against_string

    def against_number(host: Host) -> _Truth:
        value = get(host)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        if value != value:
            return None
        return compare(value, constant)

    return against_number


def _compile_pattern(get: _Get, matcher: TextMatcher) -> _Test:
    matches = matcher.matches

    def test(host: Host) -> _Truth:
        value = get(host)
        if isinstance(value, str):
            return matches(value)
        return None  # missing, or a number: globs and regexes describe text

    return test


def _compile_in_list(node: _InList) -> _Test:
    get = _compile_value(node.left)
    strings, numbers = node.strings, node.numbers
    string_numbers, wordy_strings = node.string_numbers, node.wordy_strings

    def test(host: Host) -> _Truth:
        value = get(host)
        if value is None:
            return None
        if isinstance(value, str):
            if value in strings:
                return True
            if not numbers:
                return False
            converted = _to_number(value)
            if converted is None:
                return None  # unequal to every string, unknown against every number
            return converted in numbers
        if value != value:
            return None
        if value in numbers or value in string_numbers:
            return True
        return None if wordy_strings else False

    return test


@lru_cache(maxsize=65536)
def _address(text: str) -> tuple[int, int] | None:
    """Parse an address once per distinct string: hosts keep their IP, and ipaddress is slow."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version, int(address)


def _compile_in_networks(get: _Get, networks: tuple[tuple[int, int, int], ...]) -> _Test:
    def test(host: Host) -> _Truth:
        value = get(host)
        if not isinstance(value, str):
            return None
        parsed = _address(value)
        if parsed is None:
            return None
        version, address = parsed
        for network_version, network, mask in networks:
            if version == network_version and address & mask == network:
                return True
        return False

    return test


def _compile_value(node: _Value) -> _Get:
    if isinstance(node, _Num | _Str):
        constant = node.value
        return lambda _host: constant
    if isinstance(node, _Attr):
        getter: _Get = operator.attrgetter(node.name)
        return getter
    if isinstance(node, _MetricRef):
        metric = node.name

        def get_metric(host: Host) -> float | str | None:
            found = host.metrics.get(metric)
            return None if found is None else found.value

        return get_metric
    if isinstance(node, _Neg):
        inner = _compile_value(node.operand)

        def negate(host: Host) -> float | None:
            value = _number(inner(host))
            return None if value is None else -value

        return negate
    first = _compile_value(node.first)
    rest = [(_ARITHMETIC[op], _compile_value(operand)) for op, operand in node.rest]

    def arithmetic(host: Host) -> float | None:
        result = _number(first(host))
        if result is None:
            return None
        for apply, get in rest:
            operand = _number(get(host))
            if operand is None:
                return None
            try:
                result = apply(result, operand)
            except (ZeroDivisionError, OverflowError):
                return None
            if result != result:
                return None
        return result

    return arithmetic


def _number(value: float | str | None) -> float | None:
    if isinstance(value, str):
        return _to_number(value)
    if value is None or value != value:
        return None
    return value


def _metric_names(node: _Node) -> set[str]:
    if isinstance(node, _MetricRef | _Has):
        return {node.name}
    names: set[str] = set()
    children: list[_Node] = []
    if isinstance(node, _Not | _Neg):
        children = [node.operand]
    elif isinstance(node, _And | _Or):
        children = list(node.items)
    elif isinstance(node, _Compare):
        children = [node.left, node.right]
    elif isinstance(node, _Pattern | _InList | _InNetworks):
        children = [node.left]
    elif isinstance(node, _Arith):
        children = [node.first, *(operand for _, operand in node.rest)]
    for child in children:
        names |= _metric_names(child)
    return names


# --- public API -----------------------------------------------------------------------------------


class Rule:
    """A parsed, compiled group rule. Build one with :func:`parse_rule`."""

    __slots__ = ("_hyphenated", "_test", "metrics", "text")

    def __init__(
        self,
        text: str,
        metrics: frozenset[str],
        test: Callable[[Host], bool | None],
        hyphenated: Iterable[tuple[str, tuple[str, ...]]] = (),
    ) -> None:
        self.text = text
        self.metrics = metrics
        """The metric names the rule reads (host attributes such as ``name`` are not included)."""
        self._test = test
        self._hyphenated = tuple(hyphenated)

    def evaluate(self, host: Host) -> bool | None:
        """The rule's three-valued verdict on ``host``: True, False, or None for unknown."""
        return self._test(host)

    def matches(self, host: Host) -> bool:
        """Whether ``host`` belongs to the group: only a definite True counts."""
        return self._test(host) is True

    def check_metrics(self, known: Iterable[str]) -> None:
        """Raise :class:`UnknownMetricError` if the rule reads a metric that is not in ``known``."""
        known_names = set(known)
        unknown = self.metrics - known_names
        if not unknown:
            return
        hints: dict[str, str] = {}
        for joined, parts in self._hyphenated:
            if joined in known_names:
                for part in parts:
                    if part in unknown:
                        hints.setdefault(part, f'metric("{joined}")')
        raise UnknownMetricError(unknown, known_names, rule=self.text, hints=hints)

    def __repr__(self) -> str:
        return f"parse_rule({self.text!r})"


def parse_rule(text: str) -> Rule:
    """Parse and compile a group rule; raise :class:`RuleSyntaxError` if it is malformed."""
    if len(text) > MAX_RULE_CHARS:
        raise RuleSyntaxError(
            text, MAX_RULE_CHARS, f"rule is {len(text)} characters long; the limit is {MAX_RULE_CHARS}"
        )
    parser = _Parser(text, _tokenize(text))
    try:
        tree = parser.parse_rule()
    except RecursionError:
        # The depth limit keeps ordinary stacks far from Python's limit; this guards callers that are
        # themselves deep in recursion.
        raise RuleSyntaxError(text, 0, "rule nests too deeply to parse") from None
    hyphenated = {run for run in parser.hyphens.values()}
    return Rule(text, frozenset(_metric_names(tree)), _compile(tree), sorted(hyphenated))
