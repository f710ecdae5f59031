"""vgpu_dra.cel: the DRA selector CEL environment on both engines."""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cel_cases import (
    CASES,
    COMPILE_ERROR,
    DEVICES,
    DRIVER,
    ENGINE_DEVIATIONS,
    ERROR,
    Case,
    Expected,
)
from vgpu_dra import cel
from vgpu_dra.api.quantity import format_binary
from vgpu_dra.cel import (
    CelCompileError,
    CelDevice,
    CelEvalError,
    SelectorCache,
    Semver,
    SemverError,
    device_from_api,
    device_matches,
    get_engine,
    parse_semver,
)

ENGINES = list(cel.ENGINE_NAMES)
CEL_DEVICES = [device_from_api(d, DRIVER) for d in DEVICES]


def outcome(engine: str, expression: str, devices: list[CelDevice] | None = None) -> Expected:
    """What kube-scheduler would conclude for the pool, per the table's vocabulary."""
    try:
        selector = get_engine(engine).compile(expression)
    except CelCompileError:
        return COMPILE_ERROR
    matched: set[str] = set()
    for d in devices if devices is not None else CEL_DEVICES:
        try:
            if selector.matches(d):
                matched.add(d.name)
        except CelEvalError:
            return ERROR
    return frozenset(matched)


def _params() -> list[Any]:
    out = []
    for engine in ENGINES:
        for case in CASES:
            out.append(pytest.param(engine, case, id=f"{engine}:{case.id}"))
    return out


@pytest.mark.parametrize(("engine", "case"), _params())
def test_conformance_table(engine: str, case: Case) -> None:
    got = outcome(engine, case.expression)
    deviation = ENGINE_DEVIATIONS[engine].get(case.id)
    if deviation is None:
        assert got == case.expected, f"{case.expression!r}: {case.note}"
    else:
        assert got != case.expected, (
            f"{engine} now agrees on {case.id}; remove it from ENGINE_DEVIATIONS"
        )


def test_table_size_and_coverage() -> None:
    assert len(CASES) >= 35
    kinds = {c.expected if isinstance(c.expected, str) else "set" for c in CASES}
    assert kinds == {"set", ERROR, COMPILE_ERROR}
    assert any(c.expected == frozenset() for c in CASES)


# ----------------------------------------------------------------- device conversion


def test_device_from_api_domains_and_types() -> None:
    d = device_from_api(DEVICES[0], DRIVER)
    assert d.driver == DRIVER and d.allow_multiple_allocations is True
    assert d.attributes[DRIVER]["vendor"] == "nvidia"
    assert d.attributes[DRIVER]["index"] == 0 and d.attributes[DRIVER]["healthy"] is True
    assert d.attributes[DRIVER]["driverVersion"] == parse_semver("550.54.15")
    assert d.attributes["resource.kubernetes.io"] == {"pciBusID": "0000:3b:00.0"}
    assert d.capacity[DRIVER]["memory"] == 80 * 2**30
    assert device_from_api(DEVICES[2], DRIVER).allow_multiple_allocations is False


@pytest.mark.parametrize(
    ("attributes", "capacity", "match"),
    [
        ({"v": {"version": "1.2"}}, {}, "parse semantic version"),
        ({"v": {"version": "01.2.3"}}, {}, "parse semantic version"),
        ({"v": {"float": 1.5}}, {}, "unsupported attribute value"),
        ({"v": {"int": 1, "string": "x"}}, {}, "unsupported attribute value"),
        ({"v": {"int": True}}, {}, "unsupported attribute value"),
        ({}, {"memory": {"value": "1 Gi"}}, "capacity memory"),
        ({}, {"memory": {}}, "capacity memory"),
    ],
)
def test_device_from_api_rejects(attributes: dict[str, Any], capacity: dict[str, Any],
                                 match: str) -> None:
    with pytest.raises(CelEvalError, match=match):
        device_from_api({"name": "x", "attributes": attributes, "capacity": capacity}, DRIVER)


@pytest.mark.parametrize("engine", ENGINES)
def test_device_matches_accepts_api_json_and_requires_driver(engine: str) -> None:
    assert device_matches(f'device.driver == "{DRIVER}"', DEVICES[0], DRIVER, engine=engine)
    with pytest.raises(ValueError, match="driver is required"):
        device_matches("true", DEVICES[0], engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_cache_on_device_is_reused(engine: str) -> None:
    d = device_from_api(DEVICES[0], DRIVER)
    sel = get_engine(engine).compile(f'device.capacity["{DRIVER}"].memory.isInteger()')
    assert sel.matches(d) and sel.matches(d)
    assert engine in d._engine_cache


# ----------------------------------------------------------------- errors and results


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        (f'device.attributes["{DRIVER}"].nope == 1', "nope"),
        ('quantity("abc") == quantity("1")', "not a quantity"),
        (f'device.attributes["{DRIVER}"].vendor', "must return bool"),
    ],
)
def test_eval_errors_are_actionable(engine: str, expression: str, fragment: str) -> None:
    with pytest.raises(CelEvalError) as info:
        device_matches(expression, DEVICES[0], DRIVER, engine=engine)
    assert fragment in info.value.message
    assert "a100-0" in info.value.message and info.value.expression == expression


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("device.driver ==", "Syntax error"),
        ("device.nope", "device.nope"),
        ('"x".size()', "must evaluate to bool"),
        ('device.driver.matches("(")', "invalid regular expression"),
        ("x" * (cel.MAX_EXPRESSION_LENGTH + 1), "too long"),
    ],
)
def test_compile_errors_are_actionable(expression: str, fragment: str) -> None:
    with pytest.raises(CelCompileError) as info:
        get_engine("cel-expr-python").compile(expression)
    assert fragment.lower() in info.value.message.lower()
    assert info.value.expression == expression


def test_hidden_names_never_leak_into_messages() -> None:
    with pytest.raises(CelCompileError) as info:
        get_engine("cel-expr-python").compile(
            '"x" in device.attributes && device.attributes.nope()'
        )
    assert "__dra" not in info.value.message
    assert "device.attributes" in info.value.message


def test_unknown_engine() -> None:
    with pytest.raises(ValueError, match="unknown CEL engine"):
        get_engine("nope")


# ----------------------------------------------------------------- source analysis


@pytest.mark.parametrize(
    ("expression", "rewritten"),
    [
        ('device.attributes["a.io"].x == 1', 'device.attributes["a.io"].x == 1'),
        ("has(device.attributes.gpu)", "has(device.attributes.gpu)"),
        ('"a" in device.attributes', '"a" in __dra_attributes_'),
        ("device.capacity.size() == 1", "__dra_capacity_.size() == 1"),
        ("size(device.attributes) > 0", "size(__dra_attributes_) > 0"),
        ("device.attributes.exists(d, d == 'x')", "__dra_attributes_.exists(d, d == 'x')"),
        ('x.device.attributes["a"]', 'x.device.attributes["a"]'),
        ('"device.attributes" in device.attributes', '"device.attributes" in __dra_attributes_'),
    ],
)
def test_whole_map_uses_are_routed_to_the_real_map(expression: str, rewritten: str) -> None:
    assert cel._analyse(expression).text == rewritten


def test_candidate_domains() -> None:
    a = cel._analyse('device.attributes["gpu.example.com"].x == "Not A Domain" && y.zz')
    assert {"gpu.example.com", "x", "y", "zz", "device", "attributes"} <= a.domains
    assert "Not A Domain" not in a.domains


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\x41\u0042\n"', "aAB\n"),
        (r"'it\'s'", "it's"),
        (r'r"a\d"', r"a\d"),
        ('"""x"y"""', 'x"y'),
        (r'"\101"', "A"),
    ],
)
def test_literal_decoding(literal: str, value: str) -> None:
    toks = cel._tokenize(literal)
    assert toks is not None and len(toks) == 1
    assert cel._literal_value(toks[0]) == value


def test_untokenisable_text_is_left_to_the_engine() -> None:
    assert cel._tokenize("device.driver == #") is None
    with pytest.raises(CelCompileError):
        get_engine("cel-expr-python").compile("device.driver == #")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("cel.bind(x, 1, x == 1)", "[ 1].map(x, x == 1)[0]"),
        ("cel.bind(a, [1, 2], cel.bind(b, a[0], b == 1))",
         "[ [1, 2]].map(a,[ a[0]].map(b, b == 1)[0])[0]"),
        ("cel.bind(x, 1)", "cel.bind(x, 1)"),
    ],
)
def test_bind_rewrite_for_celpy(source: str, expected: str) -> None:
    assert cel._rewrite_bind(source).replace(" ", "") == expected.replace(" ", "")


# ----------------------------------------------------------------- semver


@pytest.mark.parametrize(
    ("text", "normalize", "expected"),
    [
        ("550.54.15", False, Semver(550, 54, 15)),
        ("1.2.3-rc.1+b.5", False, Semver(1, 2, 3, ("rc", 1), ("b", "5"))),
        ("v1.2", True, Semver(1, 2, 0)),
        ("01.002.0003", True, Semver(1, 2, 3)),
        ("v1", True, Semver(1, 0, 0)),
        ("1.0.01-alpha", True, Semver(1, 0, 1, ("alpha",))),
    ],
)
def test_parse_semver(text: str, normalize: bool, expected: Semver) -> None:
    assert parse_semver(text, normalize) == expected


@pytest.mark.parametrize(
    ("text", "normalize"),
    [("1.2", False), ("v1.2.3", False), ("01.2.3", False), ("1.2.3-01", False),
     ("1.2.3+", False), ("1.2-rc", True), ("", False), ("a.b.c", True)],
)
def test_parse_semver_rejects(text: str, normalize: bool) -> None:
    with pytest.raises(SemverError):
        parse_semver(text, normalize)


def test_semver_precedence_chain() -> None:
    # semver.org section 11 example, ascending.
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
             "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"]
    versions = [parse_semver(v) for v in chain]
    for i, a in enumerate(versions):
        for j, b in enumerate(versions):
            assert a.compare(b) == (i > j) - (i < j), (chain[i], chain[j])
    assert str(parse_semver("1.2.3-rc.1+b.5")) == "1.2.3-rc.1+b.5"


# ----------------------------------------------------------------- quantities (Hypothesis)

_SUFFIXES: dict[str, Fraction | int] = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
    "m": Fraction(1, 1000),
}
quantities = st.tuples(st.integers(min_value=0, max_value=10**6), st.sampled_from(list(_SUFFIXES)))


def _q(q: tuple[int, str]) -> tuple[str, Fraction]:
    n, suffix = q
    return f"{n}{suffix}", Fraction(n) * _SUFFIXES[suffix]


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=60, deadline=None)
@given(a=quantities, b=quantities)
def test_quantity_comparisons_match_exact_arithmetic(
    engine: str, a: tuple[int, str], b: tuple[int, str]
) -> None:
    (sa, va), (sb, vb) = _q(a), _q(b)
    expr = (
        f'quantity("{sa}").compareTo(quantity("{sb}")) == {(va > vb) - (va < vb)} && '
        f'quantity("{sa}").isGreaterThan(quantity("{sb}")) == {str(va > vb).lower()} && '
        f'quantity("{sa}").isLessThan(quantity("{sb}")) == {str(va < vb).lower()} && '
        f'(quantity("{sa}") == quantity("{sb}")) == {str(va == vb).lower()}'
    )
    assert device_matches(expr, CEL_DEVICES[0], engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=40, deadline=None)
@given(mib=st.integers(min_value=1, max_value=2**20), delta=st.integers(min_value=-2, max_value=2))
def test_capacity_threshold_in_other_units(engine: str, mib: int, delta: int) -> None:
    """A device with memory in MiB compared against the same bytes written differently."""
    dev = device_from_api(
        {"name": "g", "capacity": {"memory": {"value": f"{mib}Mi"}}}, DRIVER
    )
    threshold = format_binary(mib * 2**20 + delta)
    expr = f'device.capacity["{DRIVER}"].memory.compareTo(quantity("{threshold}")) >= 0'
    assert get_engine(engine).compile(expr).matches(dev) == (delta <= 0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('quantity("50k").asInteger() == 50000', True),
        ('quantity("1000m").isInteger()', True),
        ('quantity("9999999999999999999999999G").isInteger()', False),
        ('quantity("50k").add(20).sub(quantity("100k")).sub(-50000) == quantity("20")', True),
        ('quantity("50k").sub(20000).asApproximateFloat() == 30000.0', True),
        ('sign(quantity("0")) == 0 && sign(quantity("-1m")) == -1', True),
        ('quantity("200M").compareTo(quantity("0.2G")) == 0', True),
        ('quantity("50M").compareTo(quantity("50Mi")) == -1', True),
        ('semver("1.2.3").patch() == 3 && semver("1.2.3").minor() == 2', True),
        ('semver("1.0.0-rc.1") == semver("1.0.0-rc.1+x")', True),
        ('"Hello".lowerAscii() == "hello" && "hi".upperAscii() == "HI"', True),
        ('"a-b-c".split("-").size() == 3 && ["a", "b"].join(",") == "a,b"', True),
        ('" x ".trim() == "x" && "abc".indexOf("c") == 2 && "abc".substring(1) == "bc"', True),
        ('"abc".replace("b", "x") == "axc" && "abc".charAt(1) == "b"', True),
        ('"gpu-123".find("[0-9]+") == "123" && "a1b22".findAll("[0-9]+").size() == 2', True),
        ('"abc".startsWith("ab") && "abc".endsWith("bc") && "abc".contains("b")', True),
    ],
)
def test_library_functions(engine: str, expression: str, expected: bool) -> None:
    assert device_matches(expression, CEL_DEVICES[0], engine=engine) is expected


# ----------------------------------------------------------------- cache


class _CountingEngine:
    name = "counting"

    def __init__(self) -> None:
        self.inner = get_engine("cel-expr-python")
        self.compiles = 0

    def compile(self, expression: str) -> cel.CompiledSelector:
        self.compiles += 1
        return self.inner.compile(expression)


def test_cache_is_lru_bounded_and_caches_errors() -> None:
    eng = _CountingEngine()
    cache = SelectorCache(eng, maxsize=2)
    a, b, c = "device.driver == 'a'", "device.driver == 'b'", "device.driver == 'c'"
    assert cache.get(a) is cache.get(a)
    cache.get(b)
    cache.get(a)  # a is now most recent; b is evicted next
    cache.get(c)
    assert len(cache) == 2 and eng.compiles == 3
    cache.get(a)
    assert eng.compiles == 3
    cache.get(b)
    assert eng.compiles == 4
    for _ in range(2):
        with pytest.raises(CelCompileError):
            cache.get("1 +")
    assert eng.compiles == 5 and cache.hits >= 3


def test_cache_rejects_zero_size() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        SelectorCache(_CountingEngine(), maxsize=0)


def test_compile_selector_uses_shared_cache_and_threads() -> None:
    expr = f'device.attributes["{DRIVER}"].index >= 0'
    first = cel.compile_selector(expr)
    assert cel.compile_selector(expr) is first
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for d in CEL_DEVICES:
                assert first.matches(d)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
