"""Group rules: parsing, three-valued evaluation, every error path, limits and metric checks."""

from __future__ import annotations

import fnmatch
import ipaddress
import math
import pickle
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strato.errors import ConfigError
from strato.monitor.model import Host, Metric
from strato.monitor.patterns import compile_glob
from strato.monitor.rules import (
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    MAX_REGEX_CHARS,
    MAX_RULE_CHARS,
    Rule,
    RuleSyntaxError,
    UnknownMetricError,
    parse_rule,
)

Truth = bool | None


def host(
    name: str = "web-1",
    ip: str = "10.200.0.5",
    cluster: str = "prod",
    location: str = "rack-1",
    tn: int = 5,
    **metrics: float | str,
) -> Host:
    return with_metrics(metrics, name=name, ip=ip, cluster=cluster, location=location, tn=tn)


def with_metrics(
    values: dict[str, float | str],
    *,
    name: str = "web-1",
    ip: str = "10.200.0.5",
    cluster: str = "prod",
    location: str = "rack-1",
    tn: int = 5,
) -> Host:
    """A host whose metrics may have names that are not Python identifiers, such as ``disk-free``."""
    metrics = {
        key: Metric(key, value, "string" if isinstance(value, str) else "double")
        for key, value in values.items()
    }
    return Host(name=name, ip=ip, cluster=cluster, location=location, tn=tn, metrics=metrics)


def verdict(text: str, target: Host) -> Truth:
    return parse_rule(text).evaluate(target)


def syntax_error(text: str) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as caught:
        parse_rule(text)
    return caught.value


# --- the examples from the design ------------------------------------------------------------------


def test_web_hosts_under_load() -> None:
    rule = parse_rule('name matches "web-*" and load_one > 2')
    assert rule.matches(host("web-3", load_one=2.5))
    assert not rule.matches(host("web-3", load_one=2.0))
    assert not rule.matches(host("db-1", load_one=9.0))
    assert not rule.matches(host("web-3"))  # no load_one: unknown, so not a member
    assert rule.metrics == frozenset({"load_one"})
    assert rule.text == 'name matches "web-*" and load_one > 2'


def test_role_rule_with_list_and_parentheses() -> None:
    rule = parse_rule('role == "prompt" or (role in ["mixed", "token"] and kv_util >= 0.8)')
    assert rule.matches(host(role="prompt"))
    assert rule.matches(host(role="token", kv_util=0.8))
    assert not rule.matches(host(role="token", kv_util=0.79))
    assert not rule.matches(host(role="other", kv_util=0.99))
    assert rule.evaluate(host(role="mixed")) is None  # kv_util missing
    assert rule.evaluate(host(role="other")) is False  # false and unknown is false
    assert rule.metrics == frozenset({"role", "kv_util"})


def test_network_and_negated_cluster() -> None:
    rule = parse_rule('ip in "10.200.0.0/24" and not cluster == "test"')
    assert rule.matches(host(ip="10.200.0.77", cluster="prod"))
    assert not rule.matches(host(ip="10.200.0.77", cluster="test"))
    assert not rule.matches(host(ip="10.200.1.77", cluster="prod"))
    assert rule.metrics == frozenset()


def test_regex_and_has_and_arithmetic_examples() -> None:
    assert parse_rule('name =~ "^llm-[0-9]+$"').matches(host("llm-42"))
    assert not parse_rule('name =~ "^llm-[0-9]+$"').matches(host("llm-42b"))
    assert parse_rule("has(gpu_temp)").matches(host(gpu_temp=61.0))
    assert not parse_rule("has(gpu_temp)").matches(host())
    busy = parse_rule("cpu_user + cpu_system > 80")
    assert busy.matches(host(cpu_user=50.0, cpu_system=31.0))
    assert not busy.matches(host(cpu_user=50.0, cpu_system=30.0))
    assert busy.evaluate(host(cpu_user=90.0)) is None
    assert busy.metrics == frozenset({"cpu_user", "cpu_system"})


# --- comparisons ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("==", [False, True, False]),
        ("!=", [True, False, True]),
        ("<", [True, False, False]),
        ("<=", [True, True, False]),
        (">", [False, False, True]),
        (">=", [False, True, True]),
    ],
)
def test_each_comparison_operator(op: str, expected: list[bool]) -> None:
    rule = parse_rule(f"load_one {op} 2")
    assert [rule.evaluate(host(load_one=value)) for value in (1.0, 2.0, 3.0)] == expected


@pytest.mark.parametrize(
    ("mirrored", "plain"),
    [
        ("2 < load_one", "load_one > 2"),
        ("2 >= load_one", "load_one <= 2"),
        ("2 == load_one", "load_one == 2"),
    ],
)
def test_constant_on_the_left_is_the_same_comparison(mirrored: str, plain: str) -> None:
    for value in (1.0, 2.0, 3.0):
        assert verdict(mirrored, host(load_one=value)) == verdict(plain, host(load_one=value))


def test_two_metrics_compared() -> None:
    rule = parse_rule("bytes_in > bytes_out")
    assert rule.evaluate(host(bytes_in=5.0, bytes_out=3.0)) is True
    assert rule.evaluate(host(bytes_in=1.0, bytes_out=3.0)) is False
    assert rule.evaluate(host(bytes_in="7", bytes_out=3.0)) is True
    assert rule.evaluate(host(bytes_in="x", bytes_out=3.0)) is None
    assert rule.evaluate(host(bytes_out=3.0)) is None
    assert rule.evaluate(host(bytes_in=5.0)) is None
    assert verdict("os_name == os_release", host(os_name="Linux", os_release="Linux")) is True
    assert verdict("os_name < os_release", host(os_name="a", os_release="b")) is None


def test_string_equality_is_exact() -> None:
    assert verdict('os_name == "Linux"', host(os_name="Linux")) is True
    assert verdict('os_name == "linux"', host(os_name="Linux")) is False
    assert verdict('os_name != "linux"', host(os_name="Linux")) is True
    assert verdict('version == "2"', host(version="2.0")) is False  # strings are not read as numbers
    assert verdict('cluster == "prod"', host(cluster="prod")) is True
    assert verdict('location != "rack-1"', host()) is False
    assert verdict('"a" == "a"', host()) is True


def test_string_metric_compared_with_number_is_converted() -> None:
    assert verdict("load_one > 2", host(load_one="3.5")) is True
    assert verdict("load_one > 2", host(load_one=" 1e1 ")) is True
    assert verdict("load_one == 2", host(load_one="2.0")) is True
    assert verdict("load_one > 2", host(load_one="n/a")) is None
    assert verdict("load_one > 2", host(load_one="")) is None
    assert verdict("load_one > 2", host(load_one="nan")) is None
    assert verdict("load_one < 2", host(load_one="-inf")) is True


def test_number_compared_with_string_literal() -> None:
    assert verdict('load_one == "3"', host(load_one=3.0)) is True
    assert verdict('load_one >= "2.5"', host(load_one=3.0)) is True
    assert verdict('load_one == "high"', host(load_one=3.0)) is None
    assert verdict('load_one != "high"', host(load_one=3.0)) is None
    assert verdict('state > "2"', host(state="3")) is None  # two strings have no order


def test_nan_metric_is_unknown() -> None:
    for text in ("load_one > 2", "load_one <= 2", "load_one == load_one", "load_one + 1 > 0"):
        assert verdict(text, host(load_one=math.nan)) is None


def test_numeric_host_attribute_tn() -> None:
    assert verdict("tn < 60", host(tn=12)) is True
    assert verdict("tn >= 60", host(tn=12)) is False
    assert parse_rule("tn < 60").metrics == frozenset()


def test_host_is_an_alias_for_name() -> None:
    assert verdict('host == "web-1"', host("web-1")) is True
    assert verdict('host matches "db*"', host("web-1")) is False


def test_string_attribute_compared_with_number() -> None:
    assert verdict("cluster == 7", host(cluster="7")) is True
    assert verdict("cluster == 7", host(cluster="seven")) is None


# --- literals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("2", 2.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("-3", -3.0),
        ("- 3", -3.0),
        ("--3", 3.0),
        ("1e+2", 100.0),
    ],
)
def test_number_literals(literal: str, value: float) -> None:
    assert verdict(f"x == {literal}", host(x=value)) is True


def test_huge_integer_literal_is_a_float() -> None:
    huge = "9" * 400
    assert verdict(f"x < {huge}", host(x=1e300)) is True
    assert verdict(f"x > -{huge}", host(x=-1e300)) is True
    assert verdict("x < 1e999", host(x=1e308)) is True


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ('"plain"', "plain"),
        ("'single'", "single"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'it\'s'", "it's"),
        (r'"back\\slash"', "back\\slash"),
        (r'"keep \d as is"', "keep \\d as is"),
        ("\"has 'other' quotes\"", "has 'other' quotes"),
        ('""', ""),
        ('"and or not"', "and or not"),
    ],
)
def test_string_literals_and_escapes(literal: str, value: str) -> None:
    assert verdict(f"label == {literal}", host(label=value)) is True


def test_true_and_false_constants() -> None:
    assert verdict("true", host()) is True
    assert verdict("false", host()) is False
    assert verdict("TRUE and not False", host()) is True


def test_keywords_are_case_insensitive() -> None:
    target = host("web-1", load_one=3.0, role="token")
    assert verdict('NAME matches "x"', target) is None  # attributes are lower case: NAME is a metric
    assert verdict('name MATCHES "web-*" AND Load_One > 2', target) is None  # metric names keep case
    assert verdict('name Matches "web-*" And load_one > 2 Or False', target) is True
    assert verdict('role IN ["token"] and NOT role Not In ["token"]', target) is True


# --- arithmetic -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 2 - 3", 5.0),
        ("8 / 4 / 2", 1.0),
        ("2 * -3", -6.0),
        ("-2 * -3", 6.0),
        ("-(2 + 3)", -5.0),
        ("x * 2 + 1", 7.0),
        ("1 + x * 2", 7.0),
        ("x - 1 - 1", 1.0),
        ("x / 2 * 4", 6.0),
        ("-x", -3.0),
        ("(x + x) / (x - 1)", 3.0),
    ],
)
def test_arithmetic_precedence(expression: str, value: float) -> None:
    assert verdict(f"{expression} == {value}", host(x=3.0)) is True


def test_arithmetic_with_missing_or_bad_operands_is_unknown() -> None:
    rule = parse_rule("used / total > 0.5")
    assert rule.evaluate(host(used=6.0, total=10.0)) is True
    assert rule.evaluate(host(used=6.0, total=0.0)) is None  # division by zero
    assert rule.evaluate(host(used=6.0)) is None
    assert rule.evaluate(host(used="6", total="10")) is True
    assert rule.evaluate(host(used="six", total=10.0)) is None
    assert verdict("-x < 0", host(x="many")) is None
    assert verdict("big * big > 0", host(big=1e308)) is True  # infinity is still a number
    assert verdict("big * big - big * big > 0", host(big=1e308)) is None  # inf - inf is NaN


def test_literal_arithmetic_is_folded() -> None:
    assert verdict("x > 2 * 3 - 1", host(x=5.5)) is True
    assert parse_rule("1 + 1 == 2").evaluate(host()) is True


# --- logic and missing data --------------------------------------------------------------------------

# A metric per truth value: a > 0 is true for 1, false for -1, and unknown when the metric is absent.
TRUTHS: dict[Truth, float | None] = {True: 1.0, False: -1.0, None: None}


def truth_host(a: Truth, b: Truth) -> Host:
    metrics: dict[str, float | str] = {}
    for name, truth in (("a", a), ("b", b)):
        value = TRUTHS[truth]
        if value is not None:
            metrics[name] = value
    return with_metrics(metrics)


def kleene_and(a: Truth, b: Truth) -> Truth:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def kleene_or(a: Truth, b: Truth) -> Truth:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def kleene_not(a: Truth) -> Truth:
    return None if a is None else not a


PAIRS = [(a, b) for a in (True, False, None) for b in (True, False, None)]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_kleene_and(a: Truth, b: Truth) -> None:
    assert verdict("a > 0 and b > 0", truth_host(a, b)) is kleene_and(a, b)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_kleene_or(a: Truth, b: Truth) -> None:
    assert verdict("a > 0 or b > 0", truth_host(a, b)) is kleene_or(a, b)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_kleene_not_over_compound(a: Truth, b: Truth) -> None:
    target = truth_host(a, b)
    assert verdict("not (a > 0 and b > 0)", target) is kleene_not(kleene_and(a, b))
    assert verdict("not a > 0 or not b > 0", target) is kleene_not(kleene_and(a, b))  # De Morgan


@pytest.mark.parametrize("a", [True, False, None])
def test_kleene_not(a: Truth) -> None:
    assert verdict("not a > 0", truth_host(a, True)) is kleene_not(a)
    assert verdict("not not a > 0", truth_host(a, True)) is a


def test_many_operands_of_and_and_or() -> None:
    target = host(a=1.0, b=1.0, c=-1.0)
    assert verdict("a > 0 and b > 0 and c < 0", target) is True
    assert verdict("a > 0 and b > 0 and d > 0", target) is None
    assert verdict("a > 0 and c > 0 and d > 0", target) is False
    assert verdict("c > 0 or d > 0 or a > 0", target) is True
    assert verdict("c > 0 or d > 0 or c > 1", target) is None
    assert verdict("c > 0 or b < 0 or c > 1", target) is False


def test_missing_metric_is_in_neither_the_rule_nor_its_negation() -> None:
    bare = host()
    for text in ("load_one > 2", "not load_one > 2", "load_one <= 2", "not (load_one > 2)"):
        rule = parse_rule(text)
        assert rule.evaluate(bare) is None
        assert rule.matches(bare) is False


def test_matches_needs_a_definite_true() -> None:
    rule = parse_rule("load_one > 2 or has(gpu_temp)")
    assert rule.matches(host(gpu_temp=1.0)) is True  # unknown or true is true
    assert rule.evaluate(host()) is None
    assert rule.matches(host()) is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true or false and false", True),  # and binds tighter than or
        ("false and true or true", True),
        ("not true and false", False),  # not binds tighter than and
        ("not true or true", True),
        ("not false and false", False),
        ("not (false and false)", True),
        ("not x == 3", False),  # comparison binds tighter than not
        ("x + 1 == 4 and not x - 1 == 3", True),  # arithmetic binds tighter than comparison
        ("((((x == 3))))", True),
    ],
)
def test_logical_precedence(text: str, expected: bool) -> None:
    assert verdict(text, host(x=3.0)) is expected


# --- has and quoted metric names -------------------------------------------------------------------


def test_has_is_never_unknown() -> None:
    assert verdict("has(load_one)", host(load_one="n/a")) is True
    assert verdict("has(load_one)", host(load_one=math.nan)) is True
    assert verdict("not has(load_one)", host()) is True
    assert verdict("has(load_one) and load_one > 2", host()) is False


def test_has_with_quoted_names() -> None:
    target = with_metrics({"disk-free": 3.0, "in": 1.0})
    assert verdict('has("disk-free")', target) is True
    assert verdict('has(metric("disk-free"))', target) is True
    assert verdict('has("in")', target) is True
    assert verdict('has("disk-used")', target) is False
    assert parse_rule('has("disk-free") or has(x)').metrics == frozenset({"disk-free", "x"})


def test_metric_function_reads_odd_names() -> None:
    target = with_metrics({"disk-free": 3.0, "in": 2.0, "name": "metric, not host"}, name="web-1")
    assert verdict('metric("disk-free") < 10', target) is True
    assert verdict("metric('in') == 2", target) is True
    assert verdict('metric("name") == "metric, not host"', target) is True
    assert verdict('name == "web-1"', target) is True
    assert verdict('METRIC("in") == 2', target) is True
    assert parse_rule('metric("name") == "x"').metrics == frozenset({"name"})


def test_dotted_metric_names() -> None:
    assert verdict("proc.total > 10", with_metrics({"proc.total": 11.0})) is True
    assert parse_rule("a.b.c > 1 and _private < 2").metrics == frozenset({"a.b.c", "_private"})


def test_words_used_as_metrics_when_not_called() -> None:
    assert verdict("has > 1", host(has=2.0)) is True
    assert verdict("metric > 1", host(metric=2.0)) is True


def test_metrics_exclude_host_attributes() -> None:
    rule = parse_rule('name == "a" and host == "a" and ip in "10.0.0.0/8" and cluster == "c" and tn < 3')
    assert rule.metrics == frozenset()
    rule = parse_rule('location == "r" or x > 1 or y matches "a" or -z > 2 or w in [1] or v =~ "q"')
    assert rule.metrics == frozenset({"x", "y", "z", "w", "v"})


# --- glob and regex ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("web-*", "web-1", True),
        ("web-*", "web-", True),
        ("web-*", "xweb-1", False),  # globs match the whole name
        ("web-?", "web-12", False),
        ("web-??", "web-12", True),
        ("web-[0-9]", "web-7", True),
        ("web-[!0-9]", "web-7", False),
        ("WEB-*", "web-1", False),  # case-sensitive on every platform
        ("*.example.org", "a.example.org", True),
        ("a.b", "axb", False),  # '.' is literal in a glob
    ],
)
def test_glob(pattern: str, name: str, expected: bool) -> None:
    assert verdict(f'name matches "{pattern}"', host(name)) is expected
    assert verdict(f'name not matches "{pattern}"', host(name)) is (not expected)


# Glob characters and their neighbours: the translation to RE2 must read them as fnmatch does.
_GLOB_ALPHABET = list("ab-!^]*?[\\&~|.:=$(){}+\n é")


@settings(max_examples=2000, deadline=None)
@given(
    st.text(st.sampled_from(_GLOB_ALPHABET), max_size=10),
    st.text(st.sampled_from(_GLOB_ALPHABET), max_size=8),
)
def test_glob_means_what_fnmatch_means(pattern: str, name: str) -> None:
    assert compile_glob([pattern]).matches(name) is fnmatch.fnmatchcase(name, pattern), compile_glob(
        [pattern]
    )


def test_regexes_match_like_python_where_both_accept_them() -> None:
    for regex, name, expected in [
        ("^web-[0-9]{2,3}$", "web-123", True),
        ("(?i)^WEB", "web-1", True),
        ("^(?P<role>web|db)-\\d+$", "db-7", True),
        ("a.c", "a\nc", False),  # '.' stops at a newline in both, unless (?s)
        ("(?s)a.c", "a\nc", True),
    ]:
        assert verdict(f'name =~ "{regex}"', host(name)) is expected, regex


def test_glob_list_matches_any() -> None:
    rule = parse_rule('name matches ["web-*", "api-*"]')
    assert rule.matches(host("web-1"))
    assert rule.matches(host("api-9"))
    assert not rule.matches(host("db-1"))
    assert parse_rule("name matches []").evaluate(host()) is False


def test_glob_and_regex_on_metrics() -> None:
    assert verdict('os_release matches "5.15.*"', host(os_release="5.15.0-91")) is True
    assert verdict('os_release matches "5.15.*"', host()) is None
    assert verdict('os_release matches "5*"', host(os_release=5.0)) is None  # numbers are not text
    assert verdict('os_release =~ "^5"', host(os_release=5.0)) is None
    assert verdict('not os_release =~ "^5"', host()) is None


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("^llm-[0-9]+$", "llm-12", True),
        ("llm", "big-llm-host", True),  # searched anywhere
        ("^llm", "big-llm-host", False),
        (r"\d{3}", "node-123", True),  # a lone backslash is kept, so regex classes need no doubling
        (r"\\d", "node-7", True),  # an escaped backslash is one backslash: the regex is \d again
        (r"\\\\", "a\\b", True),  # a literal backslash in the name needs a doubled regex escape
        (r"\\\\", "ab", False),
        ("(?i)^WEB", "web-1", True),
        ("a|b", "xbx", True),
    ],
)
def test_regex(pattern: str, name: str, expected: bool) -> None:
    assert verdict(f'name =~ "{pattern}"', host(name)) is expected


# --- in: lists --------------------------------------------------------------------------------------


def test_in_list_of_strings() -> None:
    rule = parse_rule('role in ["prompt", "token"]')
    assert rule.evaluate(host(role="token")) is True
    assert rule.evaluate(host(role="mixed")) is False
    assert rule.evaluate(host()) is None
    negated = parse_rule('role not in ["prompt", "token"]')
    assert negated.evaluate(host(role="mixed")) is True
    assert negated.evaluate(host(role="token")) is False
    assert negated.evaluate(host()) is None


def test_in_list_of_numbers_and_coercion() -> None:
    rule = parse_rule("cpu_num in [1, 2, 4, -8, 1e3]")
    assert rule.evaluate(host(cpu_num=4.0)) is True
    assert rule.evaluate(host(cpu_num=-8.0)) is True
    assert rule.evaluate(host(cpu_num=1000.0)) is True
    assert rule.evaluate(host(cpu_num=3.0)) is False
    assert rule.evaluate(host(cpu_num="4")) is True
    assert rule.evaluate(host(cpu_num="3")) is False
    assert rule.evaluate(host(cpu_num="four")) is None
    assert rule.evaluate(host(cpu_num=math.nan)) is None


def test_in_mixed_list_follows_equality() -> None:
    rule = parse_rule('v in ["a", "2", 3]')
    assert rule.evaluate(host(v="a")) is True
    assert rule.evaluate(host(v=2.0)) is True  # the number 2 equals the string "2"
    assert rule.evaluate(host(v=3.0)) is True
    assert rule.evaluate(host(v=4.0)) is None  # 4 == "a" is unknown
    assert rule.evaluate(host(v="3")) is True
    assert rule.evaluate(host(v="b")) is None  # "b" == 3 is unknown
    assert parse_rule('v in ["2"]').evaluate(host(v=4.0)) is False


def test_in_list_details() -> None:
    assert verdict("x in []", host(x=1.0)) is False
    assert verdict("x in [1, 2,]", host(x=2.0)) is True  # trailing comma
    assert verdict('name in ["web-1"]', host("web-1")) is True
    assert verdict("tn in [5]", host(tn=5)) is True
    assert verdict('name in ["a/b"]', host("a/b")) is True  # a '/' is only a network on addresses
    assert verdict("x in [1]", host(x=1)) is True


# --- in: networks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "address", "expected"),
    [
        ("10.200.0.0/24", "10.200.0.1", True),
        ("10.200.0.0/24", "10.200.0.255", True),
        ("10.200.0.0/24", "10.200.1.0", False),
        ("10.0.0.0/8", "10.255.255.255", True),
        ("0.0.0.0/0", "192.168.1.1", True),
        ("192.168.1.7", "192.168.1.7", True),
        ("192.168.1.7/32", "192.168.1.8", False),
        ("2001:db8::/32", "2001:db8::1", True),
        ("2001:db8::/32", "2001:db9::1", False),
        ("10.0.0.0/8", "2001:db8::1", False),  # another IP version is simply outside
        ("::/0", "10.0.0.1", False),
        ("10.0.0.0/8", "not an address", None),
        ("10.0.0.0/8", "", None),
    ],
)
def test_cidr_membership(network: str, address: str, expected: Truth) -> None:
    assert verdict(f'ip in "{network}"', host(ip=address)) is expected
    assert verdict(f'ip not in "{network}"', host(ip=address)) is kleene_not(expected)


def test_network_list() -> None:
    rule = parse_rule('ip in ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]')
    assert rule.matches(host(ip="10.1.2.3"))
    assert rule.matches(host(ip="192.168.1.7"))
    assert rule.matches(host(ip="2001:db8::5"))
    assert not rule.matches(host(ip="192.168.1.8"))


def test_network_membership_of_a_metric() -> None:
    rule = parse_rule('gateway in "10.0.0.0/8"')
    assert rule.evaluate(host(gateway="10.0.0.1")) is True
    assert rule.evaluate(host(gateway="11.0.0.1")) is False
    assert rule.evaluate(host(gateway=10.0)) is None
    assert rule.evaluate(host()) is None
    assert rule.metrics == frozenset({"gateway"})


# --- errors: message, position, column -------------------------------------------------------------

ERRORS = [
    # (rule, 1-based column of the caret, a fragment of the reason)
    ("", 1, "empty rule"),
    ("   ", 1, "empty rule"),
    ("(load_one > 2", 14, "expected ')' to close '(' at column 1, found end of rule at column 14"),
    ("a > 1 and (b > 2 c > 3)", 18, "expected ')' to close '(' at column 11, found 'c' at column 18"),
    ("load_one => 2", 10, "unknown operator '=>' at column 10 (did you mean '>='?)"),
    ("load_fifteen => 2", 14, "unknown operator '=>' at column 14 (did you mean '>='?)"),
    ("x = 1", 3, "unknown operator '=' at column 3 (did you mean '=='?)"),
    ("x =< 1", 3, "(did you mean '<='?)"),
    ("x <> 1", 3, "(did you mean '!='?)"),
    ("a > 1 && b > 1", 7, "(did you mean 'and'?)"),
    ("a > 1 || b > 1", 7, "(did you mean 'or'?)"),
    ("! a > 1", 1, "(did you mean 'not'?)"),
    ('name !~ "x"', 6, "(did you mean 'not (... =~ ...)'?)"),
    ("x << 1", 3, "unknown operator '<<' at column 3"),
    ('a == "bc', 6, "unterminated string starting at column 6"),
    ("a == 'it\\'", 6, "unterminated string starting at column 6"),
    ("a > 1 foo", 7, "trailing input 'foo' at column 7 (missing 'and' or 'or' before it?)"),
    ('name == "a-very-long-name" foo', 28, "trailing input 'foo' at column 28"),
    ("a > 1 )", 7, "unmatched ')' at column 7"),
    ("load_one", 1, "'load_one' at column 1 is a value, not a condition"),
    ("load_one", 1, "has(load_one)"),
    ("x > 1 and y", 11, "'y' at column 11 is a value, not a condition"),
    ("(x)", 2, "'x' at column 2 is a value"),
    ("1 + 2", 1, "'1 + 2' at column 1 is a value"),
    ("cluster", 1, 'cluster == "..."'),
    ("has(x) == 1", 1, "'has(x)' at column 1 is a condition, but '==' at column 8 needs a value"),
    ("(a > 1) + 2 > 3", 1, "is a condition, but '+' at column 9 needs a value"),
    ("a < b < c", 7, "comparisons cannot be chained: '<' at column 7 follows '<' at column 3"),
    ("a == 1 in [1]", 8, "comparisons cannot be chained"),
    ('"a" < "b"', 5, "'<' at column 5 orders numbers, but both sides are strings"),
    ('name >= "m"', 6, "both sides are strings"),
    ("x >", 4, "expected a value after '>', found end of rule at column 4"),
    ("x > -", 6, "expected a value after '-', found end of rule"),
    ("x > )", 5, "expected a value after '>', found ')' at column 5"),
    ("and x > 1", 1, "expected a condition, found keyword 'and' at column 1"),
    ("x > 1 and", 10, "expected a condition after 'and', found end of rule at column 10"),
    ("not", 4, "expected a condition after 'not', found end of rule"),
    ("()", 2, "expected a condition after '(', found ')' at column 2"),
    ("in > 3", 1, "'in' is reserved; write metric(\"in\")"),
    ("x == matches", 6, "keyword 'matches' at column 6"),
    ("[1] == x", 1, "a list can only follow 'in' or 'matches'"),
    ("x @ 1", 3, "unexpected character '@' at column 3"),
    ("x > 1 ; y > 2", 7, "unexpected character ';'"),
    ("naïve > 1", 3, "unexpected character 'ï'"),
    ("x > 1.5.3", 5, "invalid number '1.5.3'"),
    ("ip == 10.0.0.1", 7, "invalid number '10.0.0.1' at column 7 (quote addresses and networks"),
    ("x == 1abc", 6, "invalid number '1abc'"),
    ("x > 2and y > 1", 5, "invalid number '2and'"),
    ("load_one matchs 'x'", 10, "found 'matchs' at column 10 (did you mean 'matches'?)"),
    ("x 5", 3, "expected an operator such as ==, <, matches or in after 'x', found '5'"),
    ("x not > 3", 7, "expected 'in' or 'matches' after 'not' at column 3, found '>' at column 7"),
    ('name =~ "("', 9, "invalid regular expression at column 9: missing ), unterminated subpattern"),
    ('name =~ "a{2,1}"', 9, "invalid regular expression"),
    ("name =~ x", 9, "'=~' at column 6 needs a quoted regular expression, found 'x' at column 9"),
    ('name =~ ["a"]', 9, "needs a quoted regular expression"),
    ("tn =~ 'x'", 1, "'=~' at column 4 tests strings, but 'tn' at column 1 is a number"),
    ("tn matches 'x'", 1, "'matches' at column 4 tests strings, but 'tn'"),
    ("x + 1 matches 'x'", 1, "is a number"),
    ("name matches 5", 14, "needs a quoted glob pattern"),
    ('name matches ["a", 1]', 20, "glob patterns must be quoted strings, found '1' at column 20"),
    ("x in 5", 6, "'in' at column 3 needs a list"),
    ("x in y", 6, "needs a list"),
    ("x in [1, y]", 10, "list items must be numbers or quoted strings, found 'y' at column 10"),
    ("x in [1, -y]", 10, "list items must be numbers or quoted strings, found '-'"),
    ("x in [1, 2", 11, "expected ',' or ']' to close '[' at column 6, found end of rule at column 11"),
    ("x in [1,", 9, "expected ']' to close '[' at column 6, found end of rule"),
    ("x in [1 2]", 9, "expected ',' or ']' to close '[' at column 6, found '2'"),
    ('ip in "10.0.0.300/24"', 7, "invalid network '10.0.0.300/24' at column 7"),
    ('ip in "bogus"', 7, "invalid network 'bogus'"),
    ('ip in "10.200.0.5/24"', 7, "has host bits set (did you mean '10.200.0.0/24'?)"),
    ('ip in "2001:db8::1/32"', 7, "did you mean '2001:db8::/32'?"),
    ('ip in ["10.0.0.0/8", 5]', 22, "networks must be quoted strings, found '5' at column 22"),
    ('ip in ["10.0.0.0/8", "bogus"]', 22, "invalid network 'bogus' at column 22"),
    ('name in "10.0.0.0/8"', 1, "'in' at column 6) needs an address, but 'name' at column 1 is not one"),
    ('tn not in "10.0.0.0/8"', 1, "needs an address"),
    ("has(name)", 5, "'name' is a host attribute every host has"),
    ("has(1)", 5, "has() at column 1 needs a metric name, found '1' at column 5"),
    ("has(in)", 5, 'write has("in")'),
    ('has("")', 5, "needs a metric name"),
    ("has(x", 6, "expected ')' to close '(' at column 4, found end of rule"),
    ("has(x y)", 7, "expected ')' to close '(' at column 4, found 'y'"),
    ("foo(x) > 1", 1, "unknown function 'foo' at column 1"),
    (
        "metric(x) > 1",
        8,
        "needs a quoted, non-empty metric name, found 'x' at column 8 (write metric(\"x\"))",
    ),
    ('metric("") > 1', 8, "non-empty metric name"),
    ('metric("a" > 1', 12, "expected ')' to close '(' at column 7"),
    ("name + 1 > 2", 1, "'+' at column 6 needs numbers, but 'name' at column 1 is a string"),
    ('"abc" * 2 > 1', 1, "'*' at column 7 needs numbers, but '\"abc\"'"),
    ('x > -"a"', 6, "'-' at column 5 needs numbers"),
    ('host-name == "x"', 1, 'write metric("host-name")'),
    ("bytes-in > 3", 7, 'write metric("bytes-in")'),
    ("x / 0 > 1", 5, "division by zero at column 5"),
    ("1 / (2 - 2) > 0", 6, "division by zero at column 6"),
    ("1e308 * 10 - 1e308 * 10 > 0", 1, "arithmetic at column 1 has no numeric result"),
]


@pytest.mark.parametrize(("text", "column", "fragment"), ERRORS)
def test_error_message_and_position(text: str, column: int, fragment: str) -> None:
    error = syntax_error(text)
    assert fragment in error.reason
    assert error.position == column - 1
    assert error.column == column
    assert error.line == 1
    assert error.rule == text
    rendered = str(error).splitlines()
    assert rendered[0] == error.reason
    assert rendered[1] == "    " + text
    assert rendered[2] == "    " + " " * (column - 1) + f"^ column {column}"


def test_errors_are_config_errors() -> None:
    assert issubclass(RuleSyntaxError, ConfigError)
    assert issubclass(UnknownMetricError, ConfigError)
    with pytest.raises(ConfigError):
        parse_rule("x >")


def test_error_in_a_multi_line_rule() -> None:
    text = 'name matches "web-*"\n  and (load_one >'
    error = syntax_error(text)
    assert error.position == len(text)
    assert (error.line, error.column) == (2, 18)
    assert "found end of rule at line 2, column 18" in error.reason
    lines = str(error).splitlines()
    assert lines[1] == "      and (load_one >"
    assert lines[2] == "    " + " " * 17 + "^ line 2, column 18"


def test_caret_follows_tabs_and_hides_control_characters() -> None:
    error = syntax_error("x\t>\r@ 1")
    assert error.position == 4
    lines = str(error).splitlines()
    assert lines[1] == "    x\t> @ 1"
    assert lines[2] == "     \t  ^ column 5"


def test_long_rule_is_shown_around_the_error() -> None:
    text = "x > 1 and " * 30 + "@" + " and y > 1" * 30
    error = syntax_error(text)
    shown, caret = str(error).splitlines()[1:3]
    assert len(shown) < 120
    assert shown.startswith("    ...")
    assert shown.endswith("...")
    assert shown[caret.index("^")] == "@"
    assert caret.endswith(f"^ column {text.index('@') + 1}")
    near_the_end = syntax_error("x > 1 and " * 30 + "@")
    shown, caret = str(near_the_end).splitlines()[1:3]
    assert shown.startswith("    ...")
    assert shown.endswith("@")
    assert shown[caret.index("^")] == "@"


def test_rule_syntax_error_survives_pickling() -> None:
    error = syntax_error("a > 1 )")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.rule, copy.position, copy.reason, str(copy)) == (
        error.rule,
        error.position,
        error.reason,
        str(error),
    )


# --- limits -----------------------------------------------------------------------------------------


def test_rule_length_limit() -> None:
    longest = "x > 1" + " " * (MAX_RULE_CHARS - 5)
    assert len(longest) == MAX_RULE_CHARS
    parse_rule(longest)
    error = syntax_error(longest + " ")
    assert error.position == MAX_RULE_CHARS
    assert f"rule is {MAX_RULE_CHARS + 1} characters long; the limit is {MAX_RULE_CHARS}" in error.reason


@pytest.mark.parametrize(
    "build",
    [
        lambda n: "(" * n + "x > 1" + ")" * n,
        lambda n: "not " * n + "x > 1",
        lambda n: "x > " + "-" * n + "1",
        lambda n: "x > " + "-(" * (n // 2) + "y" + ")" * (n // 2),
    ],
)
def test_nesting_limit(build: Callable[[int], str]) -> None:
    parse_rule(build(MAX_DEPTH)).evaluate(host(x=3.0, y=1.0))
    error = syntax_error(build(MAX_DEPTH + 2))
    assert f"rule nests deeper than {MAX_DEPTH} levels" in error.reason


def test_deepest_nesting_of_every_level_evaluates() -> None:
    # The worst case for the parser's and the closures' call depth: every level of parentheses holds an
    # or and an and, or a sum and a product.
    value = "x"
    for _ in range(4):
        value = f"-({value} * 1 + 0)"
    text = f"{value} > 0"  # four negations cancel
    for _ in range((MAX_DEPTH - 8) // 2):
        text = f"(true and (false or {text}))"
    rule = parse_rule(text)
    assert rule.evaluate(host(x=1.0)) is True
    assert rule.evaluate(host()) is None
    with pytest.raises(RuleSyntaxError, match="nests deeper"):
        parse_rule(f"(true and ({text}))")


def test_long_flat_chains_are_not_nesting() -> None:
    terms = 400
    assert verdict(" + ".join(["x"] * terms) + f" == {terms}", host(x=1.0)) is True
    assert verdict(" and ".join(["x > 0"] * terms), host(x=1.0)) is True
    assert verdict(" or ".join(["x < 0"] * terms), host(x=1.0)) is False


def test_list_size_limit() -> None:
    items = ",".join(["0"] * (MAX_LIST_ITEMS - 1) + ["7"])
    assert verdict(f"x in [{items}]", host(x=7.0)) is True
    text = f"x in [{items},9]"
    error = syntax_error(text)
    assert error.position == text.rindex("9")
    assert f"list at column 6 has more than {MAX_LIST_ITEMS} items" in error.reason


def test_regex_length_limit() -> None:
    parse_rule(f'name =~ "{"a" * MAX_REGEX_CHARS}"')
    error = syntax_error(f'name =~ "{"a" * (MAX_REGEX_CHARS + 1)}"')
    assert error.position == 8
    assert f"{MAX_REGEX_CHARS + 1} characters long; the limit is {MAX_REGEX_CHARS}" in error.reason


# --- check_metrics ----------------------------------------------------------------------------------

KNOWN = ["load_one", "load_five", "load_fifteen", "cpu_user", "cpu_system", "disk-free", "mem_free"]


def test_check_metrics_accepts_known_names() -> None:
    parse_rule('load_one > 2 and name matches "web-*" and has(cpu_user)').check_metrics(KNOWN)
    parse_rule('metric("disk-free") > 1').check_metrics(iter(KNOWN))
    parse_rule('name == "x"').check_metrics([])


def test_check_metrics_suggests_close_names() -> None:
    rule = parse_rule("load_on > 2 and cpu_usr > 50")
    with pytest.raises(UnknownMetricError) as caught:
        rule.check_metrics(KNOWN)
    error = caught.value
    assert error.unknown == ["cpu_usr", "load_on"]
    assert error.suggestions["load_on"][0] == "load_one"
    assert error.suggestions["cpu_usr"][0] == "cpu_user"
    message = str(error)
    assert message.startswith("unknown metrics 'cpu_usr' (did you mean 'cpu_user'")
    assert "'load_on' (did you mean 'load_one'" in message
    assert "in rule 'load_on > 2 and cpu_usr > 50'" in message


def test_check_metrics_without_close_match() -> None:
    with pytest.raises(UnknownMetricError) as caught:
        parse_rule("zzzz > 1").check_metrics(KNOWN)
    assert caught.value.unknown == ["zzzz"]
    assert caught.value.suggestions == {"zzzz": []}
    assert str(caught.value) == "unknown metric 'zzzz' in rule 'zzzz > 1'"


def test_check_metrics_with_nothing_known() -> None:
    with pytest.raises(UnknownMetricError, match="no metrics are known yet"):
        parse_rule("has(gpu_temp)").check_metrics([])


def test_check_metrics_suggests_quoting_a_hyphenated_name() -> None:
    rule = parse_rule("disk-free < 10")  # subtraction of two metrics, which the user did not mean
    assert rule.metrics == frozenset({"disk", "free"})
    with pytest.raises(UnknownMetricError) as caught:
        rule.check_metrics(KNOWN)
    assert caught.value.unknown == ["disk", "free"]
    message = str(caught.value)
    assert message.startswith("unknown metrics 'disk' (did you mean metric(\"disk-free\")?), 'free' (did you")
    assert message.endswith('a bare "-" subtracts, so write metric("...") for a name that contains one')
    parse_rule("disk - free < 10").check_metrics(["disk", "free"])


def test_unknown_metric_error_survives_pickling() -> None:
    error = UnknownMetricError(["load_on"], KNOWN, rule="load_on > 1")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.unknown, copy.suggestions, str(copy)) == (error.unknown, error.suggestions, str(error))


def test_rule_repr_parses_back() -> None:
    rule = parse_rule("x > 'a\"b'")
    assert repr(rule) == "parse_rule('x > \\'a\"b\\'')"
    assert isinstance(rule, Rule)


# --- properties -------------------------------------------------------------------------------------

NAMES = ["web-1", "web-22", "llm-3", "db", "WEB-9"]
ADDRESSES = ["10.200.0.5", "10.200.1.5", "192.168.1.1", "2001:db8::1", "", "nonsense"]
LOADS: list[float | str | None] = [None, 0.0, 1.5, 2.0, 7.0, -3.0, "2.5", "n/a", math.nan]
ROLES: list[float | str | None] = [None, "prompt", "token", "mixed", 3.0]


def sample_host(
    name: str, ip: str, load: float | str | None, role: float | str | None, kv_util: float | None
) -> Host:
    present = {"load_one": load, "role": role, "kv_util": kv_util}
    return with_metrics({key: value for key, value in present.items() if value is not None}, name=name, ip=ip)


hosts = st.builds(
    sample_host,
    st.sampled_from(NAMES),
    st.sampled_from(ADDRESSES),
    st.sampled_from(LOADS),
    st.sampled_from(ROLES),
    st.sampled_from([None, 0.1, 0.8, 0.95]),
)


def oracle_number(target: Host, metric: str) -> float | None:
    value = target.value(metric)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return None if value is None or math.isnan(value) else value


def oracle_role(target: Host, accepted: tuple[str, ...]) -> Truth:
    value = target.value("role")
    if value is None:
        return None
    if isinstance(value, str):
        return value in accepted
    return None  # a number never equals a word


def oracle_network(target: Host) -> Truth:
    try:
        address = ipaddress.ip_address(target.ip)
    except ValueError:
        return None
    return address in ipaddress.ip_network("10.200.0.0/24")


COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}

Oracle = Callable[[Host], Truth]


def load_atom(op: str, bound: int) -> tuple[str, Oracle]:
    def oracle(target: Host) -> Truth:
        value = oracle_number(target, "load_one")
        return None if value is None else COMPARE[op](value, bound)

    return f"load_one {op} {bound}", oracle


def combine(kind: str, left: tuple[str, Oracle], right: tuple[str, Oracle]) -> tuple[str, Oracle]:
    (left_text, left_oracle), (right_text, right_oracle) = left, right
    if kind == "and":
        return f"({left_text}) and ({right_text})", lambda t: kleene_and(left_oracle(t), right_oracle(t))
    return f"({left_text}) or ({right_text})", lambda t: kleene_or(left_oracle(t), right_oracle(t))


def negate(inner: tuple[str, Oracle]) -> tuple[str, Oracle]:
    text, oracle = inner
    return f"not ({text})", lambda t: kleene_not(oracle(t))


atoms = st.one_of(
    st.builds(load_atom, st.sampled_from(sorted(COMPARE)), st.integers(-4, 8)),
    st.sampled_from(
        [
            ('role == "prompt"', lambda t: oracle_role(t, ("prompt",))),
            ('role in ["mixed", "token"]', lambda t: oracle_role(t, ("mixed", "token"))),
            ("kv_util >= 0.8", lambda t: None if (v := oracle_number(t, "kv_util")) is None else v >= 0.8),
            ('name matches "web-*"', lambda t: fnmatch.fnmatchcase(t.name, "web-*")),
            ('name =~ "^llm-[0-9]+$"', lambda t: t.name.startswith("llm-") and t.name[4:].isdigit()),
            ('ip in "10.200.0.0/24"', oracle_network),
            ("has(load_one)", lambda t: "load_one" in t.metrics),
            ("true", lambda t: True),
            ("false", lambda t: False),
        ]
    ),
)
rules_with_oracles = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(combine, st.sampled_from(["and", "or"]), inner, inner), st.builds(negate, inner)
    ),
    max_leaves=12,
)


@given(rules_with_oracles, st.lists(hosts, min_size=1, max_size=5))
def test_random_rules_agree_with_a_reference_evaluator(
    rule_and_oracle: tuple[str, Oracle], targets: list[Host]
) -> None:
    text, oracle = rule_and_oracle
    rule = parse_rule(text)
    for target in targets:
        assert rule.evaluate(target) is oracle(target), (text, target)
        assert rule.matches(target) is (oracle(target) is True)


@given(rules_with_oracles, hosts)
def test_not_is_the_kleene_complement(rule_and_oracle: tuple[str, Oracle], target: Host) -> None:
    text = rule_and_oracle[0]
    result = parse_rule(text).evaluate(target)
    assert parse_rule(f"not ({text})").evaluate(target) is kleene_not(result)
    # Membership is never claimed by both a rule and its negation.
    assert not (parse_rule(text).matches(target) and parse_rule(f"not ({text})").matches(target))


def check_parse_outcome(text: str) -> None:
    """Parsing anything either gives a rule that evaluates cleanly or raises RuleSyntaxError."""
    try:
        rule = parse_rule(text)
    except RuleSyntaxError as error:
        assert 0 <= error.position <= len(text)
        assert error.reason
        assert "^" in str(error)
        return
    for target in (host(), host("llm-1", "2001:db8::1", load_one="x", role=2.0, kv_util=math.nan)):
        assert rule.evaluate(target) in (True, False, None)


@given(st.text(max_size=120))
def test_fuzz_random_text(text: str) -> None:
    check_parse_outcome(text)


FRAGMENTS = [
    "load_one", "name", "ip", "tn", "role", "x.y", "and", "or", "not", "in", "matches", "true", "FALSE",
    "has", "metric", "(", ")", "[", "]", ",", "==", "!=", "<", "<=", ">", ">=", "=~", "=", "=>", "+", "-",
    "*", "/", "0", "2", "-1.5e3", "1e999", '"web-*"', '"10.0.0.0/8"', '"10.0.0.1/8"', '"("', "'x'",
    '"', "\\", "!", "@", "\n", "\t", " ",
]  # fmt: skip


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25), st.sampled_from(["", " "]))
def test_fuzz_token_soup(fragments: list[str], separator: str) -> None:
    check_parse_outcome(separator.join(fragments))
