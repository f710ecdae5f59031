"""Kubernetes DRA device-selector CEL, evaluable by our own code.

An adapter (over the CEL libraries; no I/O, environment or clock, but it holds a
thread-safe cache, so it is not `core`). The kubectl plugin's `explain`, the webhook
and the legacy scheduler extender must decide "does this DeviceClass / claim selector
match this device?" exactly as kube-scheduler does. This module
implements the DRA CEL environment (k8s.io/dynamic-resource-allocation/cel,
release 1.36) on top of two interchangeable engines:

* ``cel-expr-python`` (import ``cel_expr_python``; Google cel-cpp, type-checked) -- the
  default, see docs/cel.md for the conformance table and the benchmark;
* ``cel-python`` (import ``celpy``; pure Python, not type-checked) -- comparison only.

Semantics replicated (docs/cel.md lists the known differences):

* ``device.driver`` (string), ``device.allowMultipleAllocations`` (bool, False when the
  device does not set it), ``device.attributes`` and ``device.capacity``: maps keyed by
  domain, then by attribute/capacity id. A name without a domain belongs to the
  driver's domain (``"memory"`` -> ``device.capacity["<driver>"].memory``).
* Looking up an unknown domain yields an empty map; an unknown id inside a domain is
  an evaluation error. ``"d" in device.attributes`` and iteration only see real domains.
* Attribute values: int, bool, string, and ``version`` as a semver value; capacities are
  quantities. ``quantity()``/``isQuantity()`` with ``compareTo``/``isGreaterThan``/
  ``isLessThan``/``isInteger``/``asInteger``/``asApproximateFloat``/``add``/``sub`` and the
  global ``sign()``; ``semver(s[, normalize])``/``isSemver`` with ``major``/``minor``/
  ``patch``/``compareTo``/``isGreaterThan``/``isLessThan``; ``cel.bind``; the string
  extension (``lowerAscii``, ``upperAscii``, ``split``, ``join``, ``replace``, ``trim``,
  ``indexOf``, ``substring`` ...), ``matches``/``find``/``findAll``, ``sets.*``.
* The result must be a bool. Anything else, or any runtime error, is a
  :class:`CelEvalError`; expressions that do not compile raise :class:`CelCompileError`.
  The caller decides what an error means (kube-scheduler aborts the allocation).

Compiled selectors are cached in a bounded LRU keyed by the expression text
(:class:`SelectorCache`); :func:`compile_selector` and :func:`device_matches` use one
cache per engine. No I/O, no environment, no clock.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Final, Protocol, TypeAlias

from vgpu_dra.api.quantity import QuantityError, parse_quantity

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINE_NAMES",
    "MAX_EXPRESSION_LENGTH",
    "CelCompileError",
    "CelDevice",
    "CelEngine",
    "CelError",
    "CelEvalError",
    "CompiledSelector",
    "SelectorCache",
    "Semver",
    "SemverError",
    "compile_selector",
    "device_from_api",
    "device_matches",
    "get_engine",
    "parse_semver",
]

#: Engine used when none is named; chosen by the conformance table and the
#: benchmark recorded in docs/cel.md.
DEFAULT_ENGINE: Final = "cel-expr-python"
ENGINE_NAMES: Final = ("cel-expr-python", "cel-python")
#: resource.k8s.io CELSelectorExpressionMaxLength.
MAX_EXPRESSION_LENGTH: Final = 10 * 1024
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


# --------------------------------------------------------------------------- errors


class CelError(Exception):
    """Base of the CEL errors; ``expression`` is the selector text (None for device errors)."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression


class CelCompileError(CelError):
    """The expression does not compile (syntax, undeclared name or function, wrong type,
    result not bool, too long, invalid regex literal). The API server rejects such
    selectors at create time."""


class CelEvalError(CelError):
    """Evaluating a compiled selector against one device failed: a runtime error (unknown
    key, no matching overload, bad argument, ...), a non-bool result, or a device whose
    attributes cannot be represented (e.g. an invalid version). kube-scheduler aborts
    the allocation in that case."""


# --------------------------------------------------------------------------- semver


class SemverError(ValueError):
    """A string is not a semantic version (the message quotes it)."""


_NUM = r"(?:0|[1-9]\d*)"
_PRE_ID = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    rf"^(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


@dataclass(frozen=True)
class Semver:
    """A semantic version (semver 2.0.0). Equality and ordering ignore build metadata,
    as blang/semver's EQ and Compare do."""

    major: int
    minor: int
    patch: int
    pre: tuple[int | str, ...] = ()
    build: tuple[str, ...] = field(default=(), compare=False)

    def compare(self, other: Semver) -> int:
        """-1, 0 or 1 by semver precedence."""
        a = (self.major, self.minor, self.patch)
        b = (other.major, other.minor, other.patch)
        if a != b:
            return -1 if a < b else 1
        if self.pre == other.pre:
            return 0
        if not self.pre:
            return 1
        if not other.pre:
            return -1
        for x, y in zip(self.pre, other.pre, strict=False):
            if x == y:
                continue
            if isinstance(x, int) and isinstance(y, int):
                return -1 if x < y else 1
            if isinstance(x, int):
                return -1
            if isinstance(y, int):
                return 1
            return -1 if x < y else 1
        return -1 if len(self.pre) < len(other.pre) else 1

    @property
    def pre_text(self) -> str:
        return ".".join(str(p) for p in self.pre)

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += "-" + self.pre_text
        if self.build:
            s += "+" + ".".join(self.build)
        return s


def _normalize_semver(text: str) -> str:
    s = text.removeprefix("v")
    parts = s.split(".", 2)
    for i, p in enumerate(parts):
        if len(p) > 1:
            p = p.lstrip("0")
            if not p or not p[0].isdigit():
                p = "0" + p
            parts[i] = p
    if len(parts) < 3:
        if any(c in parts[-1] for c in "+-"):
            raise SemverError(f"short version cannot contain PreRelease/Build meta data: {text!r}")
        parts += ["0"] * (3 - len(parts))
    return ".".join(parts)


@lru_cache(maxsize=4096)
def parse_semver(text: str, normalize: bool = False) -> Semver:
    """Parse a strict semantic version ("550.54.15", "1.2.3-rc.1+build").

    With ``normalize`` a leading "v" is dropped, missing minor/patch are padded with
    zero and leading zeros are removed first (Kubernetes ``semver(s, true)``).
    Raises SemverError.
    """
    s = _normalize_semver(text) if normalize else text
    m = _SEMVER_RE.match(s)
    if not m or len(s) > 256:
        raise SemverError(f"not a semantic version: {text!r} (expected MAJOR.MINOR.PATCH)")
    pre: tuple[int | str, ...] = ()
    if m.group("pre"):
        pre = tuple(int(p) if p.isdigit() else p for p in m.group("pre").split("."))
    build = tuple(m.group("build").split(".")) if m.group("build") else ()
    return Semver(int(m.group("major")), int(m.group("minor")), int(m.group("patch")), pre, build)


def _cel_quantity(text: str) -> Fraction:
    """quantity() argument -> exact value. Raises QuantityError (no surrounding spaces)."""
    if text != text.strip():
        raise QuantityError(f"not a quantity: {text!r}")
    return parse_quantity(text)


def _as_int64(value: Fraction) -> int | None:
    if value.denominator != 1 or not _INT64_MIN <= value.numerator <= _INT64_MAX:
        return None
    return value.numerator


def _cmp(a: Fraction, b: Fraction) -> int:
    return (a > b) - (a < b)


# --------------------------------------------------------------------------- device


AttrValue: TypeAlias = int | bool | str | Semver


@dataclass(frozen=True)
class CelDevice:
    """A ResourceSlice device as the selector sees it (engine-neutral).

    ``attributes``/``capacity`` are keyed by domain then id. Engines memoise their own
    representation in ``_engine_cache`` (not part of equality).
    """

    name: str
    driver: str
    allow_multiple_allocations: bool
    attributes: Mapping[str, Mapping[str, AttrValue]]
    capacity: Mapping[str, Mapping[str, Fraction]]
    _engine_cache: dict[str, Any] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )


def _split_qualified(name: str, driver: str) -> tuple[str, str]:
    domain, sep, ident = name.partition("/")
    return (domain, ident) if sep else (driver, name)


def device_from_api(device: Mapping[str, Any], driver: str) -> CelDevice:
    """Convert a ResourceSlice ``spec.devices[]`` item (Kubernetes API JSON) to a CelDevice.

    Raises CelEvalError for content kube-scheduler cannot evaluate either: an attribute
    without exactly one supported value (int/bool/string/version), an invalid version,
    or an invalid capacity quantity.
    """
    name = str(device.get("name", ""))
    attributes: dict[str, dict[str, AttrValue]] = {}
    for qname, raw in (device.get("attributes") or {}).items():
        value: AttrValue
        if not isinstance(raw, Mapping) or len(raw) != 1:
            raise CelEvalError(f"device {name}: attribute {qname}: unsupported attribute value")
        ((kind, val),) = raw.items()
        if (
            (kind == "int" and isinstance(val, int) and not isinstance(val, bool))
            or (kind == "bool" and isinstance(val, bool))
            or (kind == "string" and isinstance(val, str))
        ):
            value = val
        elif kind == "version" and isinstance(val, str):
            try:
                value = parse_semver(val)
            except SemverError as e:
                raise CelEvalError(
                    f"device {name}: attribute {qname}: parse semantic version: {e}"
                ) from None
        else:
            raise CelEvalError(f"device {name}: attribute {qname}: unsupported attribute value")
        domain, ident = _split_qualified(qname, driver)
        attributes.setdefault(domain, {})[ident] = value
    capacity: dict[str, dict[str, Fraction]] = {}
    for qname, raw in (device.get("capacity") or {}).items():
        try:
            q = parse_quantity(raw["value"] if isinstance(raw, Mapping) else raw)
        except (QuantityError, KeyError, TypeError) as e:
            raise CelEvalError(f"device {name}: capacity {qname}: {e}") from None
        domain, ident = _split_qualified(qname, driver)
        capacity.setdefault(domain, {})[ident] = q
    return CelDevice(
        name=name,
        driver=driver,
        allow_multiple_allocations=bool(device.get("allowMultipleAllocations") or False),
        attributes=attributes,
        capacity=capacity,
    )


# --------------------------------------------------------------------------- source analysis

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
    |(?P<rstr>(?:[rR][bB]?|[bB][rR])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*'))
    |(?P<str>[bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''
                   |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
    |(?P<num>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
    |(?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
    |(?P<bq>`[^`\n]*`)
    |(?P<op>==|!=|<=|>=|&&|\|\||\[\?|\.\?|[-+*/%!<>?:.,\[\](){}])
    """,
    re.VERBOSE,
)
_DOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "`": "`", "?": "?",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
#: Hidden variables holding the real (not defaulted) maps; same length as the text they
#: replace so that compile-error carets still point at the user's expression.
_REAL_ATTRS: Final = "__dra_attributes_"
_REAL_CAP: Final = "__dra_capacity_"
_HIDDEN = {_REAL_ATTRS: "device.attributes", _REAL_CAP: "device.capacity"}
assert len(_REAL_ATTRS) == len("device.attributes") and len(_REAL_CAP) == len("device.capacity")


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int


def _tokenize(src: str) -> list[_Tok] | None:
    """Significant tokens, or None when the text does not lex (the engine reports it)."""
    out: list[_Tok] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if not m or m.end() == pos:
            return None
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return out


def _literal_value(tok: _Tok) -> str | None:
    text = tok.text
    if tok.kind == "rstr":
        body = text.lstrip("rRbB")
        q = 3 if body[:3] in ('"""', "'''") else 1
        return body[q:-q]
    body = text.lstrip("bB")
    q = 3 if body[:3] in ('"""', "'''") else 1
    body = body[q:-q]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\" or i + 1 >= len(body):
            out.append(c)
            i += 1
            continue
        n = body[i + 1]
        if n in _ESCAPES:
            out.append(_ESCAPES[n])
            i += 2
        elif n in "xXuU":
            width = {"x": 2, "X": 2, "u": 4, "U": 8}[n]
            try:
                out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            except ValueError:
                return None
            i += 2 + width
        elif n in "01234567":
            try:
                out.append(chr(int(body[i + 1 : i + 4], 8)))
            except ValueError:
                return None
            i += 4
        else:
            return None
    return "".join(out)


@dataclass(frozen=True)
class _Analysis:
    """What an expression references, and the text handed to the engine."""

    text: str
    domains: frozenset[str]
    attrs: bool  # device.attributes used for lookups (defaulted map)
    attrs_real: bool  # device.attributes used as a whole (real map)
    cap: bool
    cap_real: bool
    regex_literals: tuple[str, ...]


def _analyse(expression: str) -> _Analysis:
    """Tokenise; collect candidate domains; route whole-map uses to the real maps.

    kube-scheduler gives ``device.attributes``/``device.capacity`` a map whose lookups
    return an empty map for unknown keys while ``in``, ``size()`` and iteration only see
    real domains. We reproduce that with two maps: lookups (``m[k]``, ``m.k``,
    ``has(m.k)``) use a map padded with an empty entry for every string literal or
    identifier that could be a domain, plus the driver's domain; every other use of the
    map is rewritten to a hidden variable bound to the real map.
    """
    toks = _tokenize(expression)
    if toks is None:
        return _Analysis(expression, frozenset(), True, True, True, True, ())
    domains: set[str] = set()
    regexes: list[str] = []
    for i, t in enumerate(toks):
        value: str | None = None
        if t.kind in ("str", "rstr"):
            value = _literal_value(t)
            if (
                value is not None
                and i >= 2
                and toks[i - 1].text == "("
                and toks[i - 2].text in ("matches", "find", "findAll")
            ):
                regexes.append(t.text)
        elif t.kind == "ident":
            value = t.text
        elif t.kind == "bq":
            value = t.text[1:-1]
        if value is not None and len(value) <= 63 and _DOMAIN_RE.match(value):
            domains.add(value)
    flags = {"attributes": [False, False], "capacity": [False, False]}
    edits: list[tuple[int, int, str]] = []
    n = len(toks)
    for i in range(n - 2):
        t = toks[i]
        if t.kind != "ident" or t.text != "device" or (i > 0 and toks[i - 1].text in (".", ".?")):
            continue
        if toks[i + 1].text != "." or toks[i + 2].text not in flags:
            continue
        which = toks[i + 2].text
        nxt = toks[i + 3].text if i + 3 < n else ""
        lookup = nxt in ("[", "[?") or (
            nxt in (".", ".?")
            and i + 4 < n
            and toks[i + 4].kind in ("ident", "bq")
            and not (i + 5 < n and toks[i + 5].text == "(")
        )
        if lookup:
            flags[which][0] = True
        else:
            flags[which][1] = True
            hidden = _REAL_ATTRS if which == "attributes" else _REAL_CAP
            edits.append((t.start, toks[i + 2].end, hidden))
    text = expression
    for start, end, repl in reversed(edits):
        text = text[:start] + repl + text[end:]
    return _Analysis(
        text=text,
        domains=frozenset(domains),
        attrs=flags["attributes"][0],
        attrs_real=flags["attributes"][1],
        cap=flags["capacity"][0],
        cap_real=flags["capacity"][1],
        regex_literals=tuple(regexes),
    )


def _rewrite_bind(text: str) -> str:
    """``cel.bind(v, init, body)`` -> ``[init].map(v, body)[0]`` (same value, for engines
    without the bindings extension). Text that does not lex is returned unchanged."""
    while True:
        toks = _tokenize(text)
        if toks is None:
            return text
        for i in range(len(toks) - 3):
            if not (
                toks[i].text == "cel"
                and toks[i + 1].text == "."
                and toks[i + 2].text == "bind"
                and toks[i + 3].text == "("
                and (i == 0 or toks[i - 1].text not in (".", ".?"))
            ):
                continue
            depth = 0
            commas: list[int] = []
            close = -1
            for j in range(i + 3, len(toks)):
                s = toks[j].text
                if s in ("(", "[", "[?", "{"):
                    depth += 1
                elif s in (")", "]", "}"):
                    depth -= 1
                    if depth == 0:
                        close = j
                        break
                elif s == "," and depth == 1:
                    commas.append(j)
            if close < 0 or len(commas) != 2:
                return text
            var = text[toks[i + 4].start : toks[commas[0]].start]
            init = text[toks[commas[0]].end : toks[commas[1]].start]
            body = text[toks[commas[1]].end : toks[close].start]
            new = f"[{init}].map({var.strip()},{body})[0]"
            text = text[: toks[i].start] + new + text[toks[close].end :]
            break
        else:
            return text


def _restore_names(message: str) -> str:
    for hidden, original in _HIDDEN.items():
        message = message.replace(hidden, original)
    return message


def _padded(domains: Mapping[str, Any], wanted: Iterable[str], empty: Any) -> dict[str, Any]:
    out = dict(domains)
    for d in wanted:
        if d not in out:
            out[d] = empty
    return out


# --------------------------------------------------------------------------- engine protocol


class CompiledSelector(Protocol):
    """A compiled selector; cheap to evaluate many times, safe to share between threads."""

    @property
    def expression(self) -> str: ...

    def matches(self, device: CelDevice) -> bool:
        """True when the selector matches ``device``. Raises CelEvalError."""
        ...


class CelEngine(Protocol):
    """A CEL implementation with the DRA selector environment."""

    @property
    def name(self) -> str: ...

    def compile(self, expression: str) -> CompiledSelector:
        """Compile (and type-check, where the engine can). Raises CelCompileError."""
        ...


def _check_length(expression: str) -> None:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CelCompileError(
            f"expression too long: {len(expression)} characters, at most "
            f"{MAX_EXPRESSION_LENGTH} are allowed",
            expression,
        )


def _eval_error(expression: str, device: CelDevice, detail: str) -> CelEvalError:
    return CelEvalError(
        f"CEL runtime error in selector {expression!r} on device {device.name!r}: "
        f"{_restore_names(detail)}",
        expression,
    )


# --------------------------------------------------------------------------- cel-expr-python


class _CelExprCompiled:
    __slots__ = ("_analysis", "_engine", "_expr", "expression")

    def __init__(self, engine: CelExprPythonEngine, expression: str, expr: Any,
                 analysis: _Analysis) -> None:
        self._engine = engine
        self._expr = expr
        self._analysis = analysis
        self.expression = expression

    def matches(self, device: CelDevice) -> bool:
        """True when the selector matches ``device``. Raises CelEvalError."""
        a = self._analysis
        conv = device._engine_cache.get(self._engine.name)
        if conv is None:
            conv = self._engine.convert(device)
            device._engine_cache[self._engine.name] = conv
        attrs, cap = conv
        data: dict[str, Any] = {
            "device.driver": device.driver,
            "device.allowMultipleAllocations": device.allow_multiple_allocations,
        }
        if a.attrs:
            data["device.attributes"] = _padded(attrs, (*a.domains, device.driver), {})
        if a.attrs_real:
            data[_REAL_ATTRS] = attrs
        if a.cap:
            data["device.capacity"] = _padded(cap, (*a.domains, device.driver), {})
        if a.cap_real:
            data[_REAL_CAP] = cap
        try:
            result = self._expr.eval(data=data)
        except Exception as e:  # the binding raises RuntimeError for conversion problems
            raise _eval_error(self.expression, device, str(e)) from None
        kind = result.type()
        cel = self._engine.cel
        if kind == cel.Type.BOOL:
            return bool(result.value())
        if kind == cel.Type.ERROR:
            raise _eval_error(self.expression, device, str(result.value()))
        raise _eval_error(
            self.expression, device, f"result is {kind.name()}, a selector must return bool"
        )


class CelExprPythonEngine:
    """cel-expr-python (cel-cpp) with the DRA environment. Quantity and Semver values are
    protobuf messages ``kubernetes.Quantity``/``kubernetes.Semver`` from a private
    descriptor pool, so that ``==`` compares values and the checker knows their types."""

    name = "cel-expr-python"

    def __init__(self) -> None:
        from cel_expr_python import cel
        from cel_expr_python.ext import ext_bindings, ext_optional, ext_strings
        from google.protobuf import (
            descriptor_pb2,
            descriptor_pool,
            message_factory,
        )

        self.cel = cel
        fdp = descriptor_pb2.FileDescriptorProto(
            name="vgpu_dra_cel_types.proto", package="kubernetes", syntax="proto3"
        )
        f = descriptor_pb2.FieldDescriptorProto
        q = fdp.message_type.add(name="Quantity")
        q.field.add(name="exact", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
        s = fdp.message_type.add(name="Semver")
        for i, n in enumerate(("major", "minor", "patch"), start=1):
            s.field.add(name=n, number=i, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
        s.field.add(name="pre", number=4, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
        self._pool = descriptor_pool.DescriptorPool()
        self._pool.Add(fdp)
        self._qmsg: Any = message_factory.GetMessageClass(
            self._pool.FindMessageTypeByName("kubernetes.Quantity"))
        self._smsg: Any = message_factory.GetMessageClass(
            self._pool.FindMessageTypeByName("kubernetes.Semver"))

        t = cel.Type
        t_q, t_s = t("kubernetes.Quantity"), t("kubernetes.Semver")
        attrs_t = t.Map(t.STRING, t.Map(t.STRING, t.DYN))
        cap_t = t.Map(t.STRING, t.Map(t.STRING, t_q))
        variables = {
            "device.driver": t.STRING,
            "device.allowMultipleAllocations": t.BOOL,
            "device.attributes": attrs_t,
            "device.capacity": cap_t,
            _REAL_ATTRS: attrs_t,
            _REAL_CAP: cap_t,
        }
        qv, sv, qmsg, smsg = self._qval, self._sval, self.quantity_msg, self.semver_msg

        def quantity(text: str) -> Any:
            return qmsg(_cel_quantity(text))

        def is_quantity(text: str) -> bool:
            try:
                _cel_quantity(text)
            except QuantityError:
                return False
            return True

        def as_integer(a: Any) -> int:
            v = _as_int64(qv(a))
            if v is None:
                raise ValueError("cannot convert value to integer")
            return v

        qtype, stype = self._qmsg, self._smsg

        def compare(a: Any, b: Any) -> int:
            if isinstance(a, qtype) and isinstance(b, qtype):
                return _cmp(qv(a), qv(b))
            if isinstance(a, stype) and isinstance(b, stype):
                return sv(a).compare(sv(b))
            raise TypeError(
                f"no matching overload: {a.DESCRIPTOR.full_name}.compareTo"
                f"({b.DESCRIPTOR.full_name})"
            )

        def semver1(text: str) -> Any:
            return smsg(parse_semver(text))

        def semver2(text: str, normalize: bool) -> Any:
            return smsg(parse_semver(text, normalize))

        def is_semver(text: str, normalize: bool = False) -> bool:
            try:
                parse_semver(text, normalize)
            except SemverError:
                return False
            return True

        def ov(oid: str, ret: Any, params: list[Any], impl: Callable[..., Any],
               member: bool = False) -> Any:
            return cel.Overload(oid, ret, params, is_member=member, impl=impl)

        def fn(name: str, *overloads: Any) -> Any:
            return cel.FunctionDecl(name, list(overloads))

        t_list = t.List(t.DYN)
        functions = [
            fn("quantity", ov("string_to_quantity", t_q, [t.STRING], quantity)),
            fn("isQuantity", ov("is_quantity_string", t.BOOL, [t.STRING], is_quantity)),
            fn("sign", ov("quantity_sign", t.INT, [t_q], lambda a: _cmp(qv(a), Fraction(0)))),
            fn("isInteger", ov("quantity_is_integer", t.BOOL, [t_q],
                               lambda a: _as_int64(qv(a)) is not None, True)),
            fn("asInteger", ov("quantity_get_int", t.INT, [t_q], as_integer, True)),
            fn("asApproximateFloat", ov("quantity_get_float", t.DOUBLE, [t_q],
                                        lambda a: _approx_float(qv(a)), True)),
            fn("add",
               ov("quantity_add", t_q, [t_q, t_q], lambda a, b: qmsg(qv(a) + qv(b)), True),
               ov("quantity_add_int", t_q, [t_q, t.INT], lambda a, b: qmsg(qv(a) + b), True)),
            fn("sub",
               ov("quantity_sub", t_q, [t_q, t_q], lambda a, b: qmsg(qv(a) - qv(b)), True),
               ov("quantity_sub_int", t_q, [t_q, t.INT], lambda a, b: qmsg(qv(a) - b), True)),
            # cel-cpp registers runtime overloads by argument kind, and both messages are
            # kind "message": the (Semver, Semver) overloads are declared for the checker
            # only and the (Quantity, Quantity) implementation dispatches on the type.
            fn("compareTo",
               ov("quantity_compare_to", t.INT, [t_q, t_q], compare, True),
               cel.Overload("semver_compare_to", t.INT, [t_s, t_s], is_member=True)),
            fn("isGreaterThan",
               ov("quantity_is_greater_than", t.BOOL, [t_q, t_q],
                  lambda a, b: compare(a, b) > 0, True),
               cel.Overload("semver_is_greater_than", t.BOOL, [t_s, t_s], is_member=True)),
            fn("isLessThan",
               ov("quantity_is_less_than", t.BOOL, [t_q, t_q],
                  lambda a, b: compare(a, b) < 0, True),
               cel.Overload("semver_is_less_than", t.BOOL, [t_s, t_s], is_member=True)),
            fn("semver",
               ov("string_to_semver", t_s, [t.STRING], semver1),
               ov("string_bool_to_semver", t_s, [t.STRING, t.BOOL], semver2)),
            fn("isSemver",
               ov("is_semver_string", t.BOOL, [t.STRING], is_semver),
               ov("is_semver_string_bool", t.BOOL, [t.STRING, t.BOOL], is_semver)),
            fn("major", ov("semver_major", t.INT, [t_s], lambda a: sv(a).major, True)),
            fn("minor", ov("semver_minor", t.INT, [t_s], lambda a: sv(a).minor, True)),
            fn("patch", ov("semver_patch", t.INT, [t_s], lambda a: sv(a).patch, True)),
            fn("find", ov("string_find_string", t.STRING, [t.STRING, t.STRING], _regex_find, True)),
            fn("findAll",
               ov("string_find_all_string", t.List(t.STRING), [t.STRING, t.STRING],
                  lambda s, r: _regex_find_all(s, r, -1), True),
               ov("string_find_all_string_int", t.List(t.STRING), [t.STRING, t.STRING, t.INT],
                  _regex_find_all, True)),
            fn("sets.contains", ov("list_sets_contains_list", t.BOOL, [t_list, t_list],
                                   lambda a, b: all(x in a for x in b))),
            fn("sets.intersects", ov("list_sets_intersects_list", t.BOOL, [t_list, t_list],
                                     lambda a, b: any(x in a for x in b))),
            fn("sets.equivalent", ov("list_sets_equivalent_list", t.BOOL, [t_list, t_list],
                                     lambda a, b: all(x in a for x in b)
                                     and all(x in b for x in a))),
        ]
        self._env = cel.NewEnv(
            descriptor_pool=self._pool,
            variables=variables,
            extensions=[
                ext_bindings.ExtBindings(), ext_strings.ExtStrings(), ext_optional.ExtOptional()
            ],
            functions=functions,
        )

    # value conversions -----------------------------------------------------

    def quantity_msg(self, value: Fraction) -> Any:
        return self._qmsg(exact=f"{value.numerator}/{value.denominator}")

    def semver_msg(self, v: Semver) -> Any:
        return self._smsg(major=v.major, minor=v.minor, patch=v.patch, pre=v.pre_text)

    @staticmethod
    def _qval(msg: Any) -> Fraction:
        return _fraction(msg.exact)

    @staticmethod
    def _sval(msg: Any) -> Semver:
        return _semver_from_parts(msg.major, msg.minor, msg.patch, msg.pre)

    def convert(self, device: CelDevice) -> tuple[dict[str, Any], dict[str, Any]]:
        """Engine representation of a device's attribute and capacity maps."""
        attrs = {
            d: {k: (self.semver_msg(v) if isinstance(v, Semver) else v) for k, v in ids.items()}
            for d, ids in device.attributes.items()
        }
        cap = {
            d: {k: self.quantity_msg(v) for k, v in ids.items()}
            for d, ids in device.capacity.items()
        }
        return attrs, cap

    # compile -----------------------------------------------------------------

    def compile(self, expression: str) -> CompiledSelector:
        """Compile and type-check. Raises CelCompileError (message names the problem and
        points at it)."""
        _check_length(expression)
        analysis = _analyse(expression)
        try:
            expr = self._env.compile(analysis.text)
        except Exception as e:
            raise CelCompileError(
                f"invalid CEL selector: {_restore_names(_strip_status(str(e)))}", expression
            ) from None
        rt = expr.return_type()
        if rt != self.cel.Type.BOOL and rt != self.cel.Type.DYN:
            raise CelCompileError(
                f"invalid CEL selector {expression!r}: must evaluate to bool, not {rt.name()}",
                expression,
            )
        for lit in analysis.regex_literals:
            probe = self._env.compile(f'"".matches({lit})').eval(data={})
            if probe.type() == self.cel.Type.ERROR:
                raise CelCompileError(
                    f"invalid CEL selector {expression!r}: invalid regular expression "
                    f"{lit}: {probe.value()}",
                    expression,
                )
        return _CelExprCompiled(self, expression, expr, analysis)


def _strip_status(message: str) -> str:
    # cel-cpp status text: "INVALID_ARGUMENT: ERROR: <input>:1:7: ... [INVALID_ARGUMENT]"
    message = message.removeprefix("INVALID_ARGUMENT: ")
    return re.sub(r"\s*\[INVALID_ARGUMENT\]\s*$", "", message)


@lru_cache(maxsize=8192)
def _fraction(text: str) -> Fraction:
    return Fraction(text)


@lru_cache(maxsize=4096)
def _semver_from_parts(major: int, minor: int, patch: int, pre: str) -> Semver:
    pre_t: tuple[int | str, ...] = ()
    if pre:
        pre_t = tuple(int(p) if p.isdigit() else p for p in pre.split("."))
    return Semver(major, minor, patch, pre_t)


def _approx_float(value: Fraction) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _regex_find(s: str, pattern: str) -> str:
    m = re.search(pattern, s)
    return m.group(0) if m else ""


def _regex_find_all(s: str, pattern: str, limit: int) -> list[str]:
    out = [m.group(0) for m in re.finditer(pattern, s)]
    return out if limit < 0 else out[:limit]


# --------------------------------------------------------------------------- cel-python


@dataclass(frozen=True)
class _PyQuantity:
    value: Fraction


class CelPythonEngine:
    """cel-python (``celpy``, pure Python) with the DRA environment.

    celpy parses but does not type-check, so undeclared names, wrong argument types and
    non-bool results surface as CelEvalError at evaluation time instead of
    CelCompileError. ``cel.bind`` is rewritten to an equivalent ``map`` macro.
    Method calls dispatch by name with the receiver first, so shared names
    (compareTo, ...) dispatch on the receiver's type.
    """

    name = "cel-python"

    def __init__(self) -> None:
        import celpy
        import celpy.celtypes as ct
        from celpy.evaluation import CELEvalError

        self.celpy = celpy
        self.ct = ct
        self.error_type: type[Exception] = CELEvalError
        self._env = celpy.Environment()
        self._lock = threading.Lock()  # celpy's parser is not re-entrant
        self._empty = ct.MapType({})
        self.functions = self._functions()

    def _functions(self) -> dict[str, Callable[..., Any]]:
        ct = self.ct
        err = self.error_type

        def fail(msg: str) -> Any:
            return err(msg, ValueError, None)

        def quantity(s: Any) -> Any:
            try:
                return _PyQuantity(_cel_quantity(str(s)))
            except QuantityError as e:
                return fail(str(e))

        def is_quantity(s: Any) -> Any:
            return ct.BoolType(not isinstance(quantity(s), err))

        def semver(s: Any, normalize: Any = False) -> Any:
            try:
                return parse_semver(str(s), bool(normalize))
            except SemverError as e:
                return fail(str(e))

        def is_semver(s: Any, normalize: Any = False) -> Any:
            return ct.BoolType(not isinstance(semver(s, normalize), err))

        def compare(a: Any, b: Any) -> int | None:
            if isinstance(a, _PyQuantity) and isinstance(b, _PyQuantity):
                return _cmp(a.value, b.value)
            if isinstance(a, Semver) and isinstance(b, Semver):
                return a.compare(b)
            return None

        def compare_to(a: Any, b: Any) -> Any:
            c = compare(a, b)
            return fail("no such overload: compareTo") if c is None else ct.IntType(c)

        def greater(a: Any, b: Any) -> Any:
            c = compare(a, b)
            return fail("no such overload: isGreaterThan") if c is None else ct.BoolType(c > 0)

        def less(a: Any, b: Any) -> Any:
            c = compare(a, b)
            return fail("no such overload: isLessThan") if c is None else ct.BoolType(c < 0)

        def qfn(f: Callable[[Fraction], Any], what: str) -> Callable[[Any], Any]:
            def g(a: Any) -> Any:
                if not isinstance(a, _PyQuantity):
                    return fail(f"no such overload: {what}")
                return f(a.value)
            return g

        def sfn(what: str) -> Callable[[Any], Any]:
            def g(a: Any) -> Any:
                if not isinstance(a, Semver):
                    return fail(f"no such overload: {what}")
                return ct.IntType(getattr(a, what))
            return g

        def as_integer(v: Fraction) -> Any:
            i = _as_int64(v)
            return fail("cannot convert value to integer") if i is None else ct.IntType(i)

        def arith(sign: int) -> Callable[[Any, Any], Any]:
            def g(a: Any, b: Any) -> Any:
                if not isinstance(a, _PyQuantity):
                    return fail("no such overload: add/sub")
                if isinstance(b, _PyQuantity):
                    return _PyQuantity(a.value + sign * b.value)
                if isinstance(b, int) and not isinstance(b, bool):
                    return _PyQuantity(a.value + sign * int(b))
                return fail("no such overload: add/sub")
            return g

        def strfn(f: Callable[..., Any]) -> Callable[..., Any]:
            def g(s: Any, *args: Any) -> Any:
                if not isinstance(s, str):
                    return fail(f"no such overload: {f.__name__}")
                return f(s, *args)
            g.__name__ = f.__name__
            return g

        def lower_ascii(s: str) -> Any:
            return ct.StringType("".join(c.lower() if c.isascii() else c for c in s))

        def upper_ascii(s: str) -> Any:
            return ct.StringType("".join(c.upper() if c.isascii() else c for c in s))

        def split(s: str, sep: str, limit: int = -1) -> Any:
            if limit == 0:
                return ct.ListType([])
            parts = s.split(sep, limit - 1) if limit > 0 else s.split(sep)
            return ct.ListType([ct.StringType(p) for p in parts])

        def join(lst: Any, sep: Any = "") -> Any:
            return ct.StringType(str(sep).join(str(x) for x in lst))

        def replace(s: str, old: str, new: str, n: int = -1) -> Any:
            return ct.StringType(s.replace(old, new, int(n)))

        def trim(s: str) -> Any:
            return ct.StringType(s.strip())

        def index_of(s: str, sub: str, start: int = 0) -> Any:
            return ct.IntType(s.find(sub, int(start)))

        def last_index_of(s: str, sub: str) -> Any:
            return ct.IntType(s.rfind(sub))

        def substring(s: str, start: int, end: Any = None) -> Any:
            e = len(s) if end is None else int(end)
            if not 0 <= int(start) <= e <= len(s):
                return fail("substring: index out of range")
            return ct.StringType(s[int(start):e])

        def char_at(s: str, i: int) -> Any:
            if not 0 <= int(i) <= len(s):
                return fail("charAt: index out of range")
            return ct.StringType(s[int(i):int(i) + 1])

        def find(s: str, r: str) -> Any:
            return ct.StringType(_regex_find(s, r))

        def find_all(s: str, r: str, limit: int = -1) -> Any:
            return ct.ListType([ct.StringType(x) for x in _regex_find_all(s, r, int(limit))])

        def sign(a: Any) -> Any:
            if not isinstance(a, _PyQuantity):
                return fail("no such overload: sign")
            return ct.IntType(_cmp(a.value, Fraction(0)))

        return {
            "quantity": quantity,
            "isQuantity": is_quantity,
            "semver": semver,
            "isSemver": is_semver,
            "compareTo": compare_to,
            "isGreaterThan": greater,
            "isLessThan": less,
            "sign": sign,
            "isInteger": qfn(lambda v: ct.BoolType(_as_int64(v) is not None), "isInteger"),
            "asInteger": qfn(as_integer, "asInteger"),
            "asApproximateFloat": qfn(lambda v: ct.DoubleType(_approx_float(v)),
                                      "asApproximateFloat"),
            "add": arith(1),
            "sub": arith(-1),
            "major": sfn("major"),
            "minor": sfn("minor"),
            "patch": sfn("patch"),
            "lowerAscii": strfn(lower_ascii),
            "upperAscii": strfn(upper_ascii),
            "split": strfn(split),
            "join": join,
            "replace": strfn(replace),
            "trim": strfn(trim),
            "indexOf": strfn(index_of),
            "lastIndexOf": strfn(last_index_of),
            "substring": strfn(substring),
            "charAt": strfn(char_at),
            "find": strfn(find),
            "findAll": strfn(find_all),
        }

    def convert(self, device: CelDevice) -> tuple[Any, Any, Any]:
        """Engine representation: driver, attribute and capacity maps as celpy values."""
        ct = self.ct

        def val(v: AttrValue) -> Any:
            if isinstance(v, bool):
                return ct.BoolType(v)
            if isinstance(v, int):
                return ct.IntType(v)
            if isinstance(v, str):
                return ct.StringType(v)
            return v

        attrs = ct.MapType({
            ct.StringType(d): ct.MapType({ct.StringType(k): val(v) for k, v in ids.items()})
            for d, ids in device.attributes.items()
        })
        cap = ct.MapType({
            ct.StringType(d): ct.MapType({ct.StringType(k): _PyQuantity(v) for k, v in ids.items()})
            for d, ids in device.capacity.items()
        })
        return ct.StringType(device.driver), attrs, cap

    def compile(self, expression: str) -> CompiledSelector:
        """Parse only (celpy has no checker). Raises CelCompileError for syntax errors."""
        _check_length(expression)
        analysis = _analyse(expression)
        text = _rewrite_bind(analysis.text)
        try:
            with self._lock:
                ast = self._env.compile(text)
                program = self._env.program(ast, functions=self.functions)
        except Exception as e:
            raise CelCompileError(
                f"invalid CEL selector {expression!r}: {_restore_names(str(e))}", expression
            ) from None
        return _CelPyCompiled(self, expression, program, analysis)


class _CelPyCompiled:
    __slots__ = ("_analysis", "_engine", "_program", "expression")

    def __init__(self, engine: CelPythonEngine, expression: str, program: Any,
                 analysis: _Analysis) -> None:
        self._engine = engine
        self._program = program
        self._analysis = analysis
        self.expression = expression

    def matches(self, device: CelDevice) -> bool:
        """True when the selector matches ``device``. Raises CelEvalError."""
        eng = self._engine
        ct = eng.ct
        a = self._analysis
        conv = device._engine_cache.get(eng.name)
        if conv is None:
            conv = eng.convert(device)
            device._engine_cache[eng.name] = conv
        driver, attrs, cap = conv
        wanted = [ct.StringType(d) for d in (*a.domains, device.driver)]
        data: dict[str, Any] = {
            "device.driver": driver,
            "device.allowMultipleAllocations": ct.BoolType(device.allow_multiple_allocations),
        }
        if a.attrs:
            data["device.attributes"] = ct.MapType(_padded(attrs, wanted, eng._empty))
        if a.attrs_real:
            data[_REAL_ATTRS] = attrs
        if a.cap:
            data["device.capacity"] = ct.MapType(_padded(cap, wanted, eng._empty))
        if a.cap_real:
            data[_REAL_CAP] = cap
        try:
            result = self._program.evaluate(data)
        except Exception as e:
            raise _eval_error(self.expression, device, _celpy_message(e)) from None
        if isinstance(result, eng.error_type):
            raise _eval_error(self.expression, device, _celpy_message(result))
        if isinstance(result, bool):  # celtypes.BoolType subclasses int, not bool
            return result
        if isinstance(result, ct.BoolType):
            return bool(result)
        raise _eval_error(
            self.expression, device,
            f"result is {type(result).__name__}, a selector must return bool",
        )


def _celpy_message(e: BaseException) -> str:
    args = getattr(e, "args", ())
    return str(args[0]) if args else type(e).__name__


# --------------------------------------------------------------------------- cache & facade


class SelectorCache:
    """Bounded LRU of compiled selectors keyed by expression text; compile errors are
    cached too (and re-raised). Thread-safe."""

    def __init__(self, engine: CelEngine, maxsize: int = 512) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.engine = engine
        self.maxsize = maxsize
        self._items: OrderedDict[str, CompiledSelector | CelCompileError] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, expression: str) -> CompiledSelector:
        """The compiled selector for ``expression``. Raises CelCompileError."""
        with self._lock:
            item = self._items.get(expression)
            if item is not None:
                self._items.move_to_end(expression)
                self.hits += 1
        if item is None:
            try:
                item = self.engine.compile(expression)
            except CelCompileError as e:
                item = e
            with self._lock:
                self.misses += 1
                self._items[expression] = item
                self._items.move_to_end(expression)
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
        if isinstance(item, CelCompileError):
            raise CelCompileError(item.message, item.expression)
        return item


_engines: dict[str, CelEngine] = {}
_caches: dict[str, SelectorCache] = {}
_engines_lock = threading.Lock()


def get_engine(name: str | None = None) -> CelEngine:
    """The shared engine instance by name (default :data:`DEFAULT_ENGINE`).

    Raises ValueError for an unknown name and ImportError when its library is missing
    (cel-python is a development dependency only).
    """
    name = name or DEFAULT_ENGINE
    with _engines_lock:
        engine = _engines.get(name)
        if engine is None:
            if name == "cel-expr-python":
                engine = CelExprPythonEngine()
            elif name == "cel-python":
                engine = CelPythonEngine()
            else:
                raise ValueError(f"unknown CEL engine {name!r}; known: {', '.join(ENGINE_NAMES)}")
            _engines[name] = engine
            _caches[name] = SelectorCache(engine)
        return engine


def _cache(name: str | None) -> SelectorCache:
    engine = get_engine(name)
    return _caches[engine.name]


def compile_selector(expression: str, engine: str | None = None) -> CompiledSelector:
    """Compile through the engine's shared LRU cache. Raises CelCompileError."""
    return _cache(engine).get(expression)


def device_matches(
    expression: str, device: Mapping[str, Any] | CelDevice, driver: str | None = None,
    engine: str | None = None,
) -> bool:
    """Does ``expression`` select ``device``?

    ``device`` is a CelDevice or a ResourceSlice ``spec.devices[]`` item, in which case
    ``driver`` (the slice's ``spec.driver``) is required. Raises CelCompileError,
    CelEvalError, or ValueError when ``driver`` is missing for an API device.
    """
    if not isinstance(device, CelDevice):
        if not driver:
            raise ValueError("driver is required to evaluate an API device")
        device = device_from_api(device, driver)
    return compile_selector(expression, engine).matches(device)
