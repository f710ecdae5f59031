"""THE DRA CEL conformance table, shared by the unit tier (our engines) and the
integration tier (the real kube-scheduler / kube-apiserver decide).

Each case is a selector and what it selects among DEVICES (one ResourceSlice pool)
under ``allocationMode: All``:

* a frozenset of device names: the selector evaluates without error on every device
  and matches exactly these (the empty set: kube-scheduler reports the pod
  unschedulable, "cannot allocate all claims");
* ``ERROR``: evaluation fails on at least one device (kube-scheduler aborts the
  allocation: "CEL runtime error"; under All every device is evaluated, so one
  failing device fails the whole claim);
* ``COMPILE_ERROR``: kube-apiserver rejects the ResourceClaim at create time.

The expected values were written from the Kubernetes sources (k8s.io/dynamic-resource-
allocation/cel v0.36.3) and then confirmed against kube-scheduler/kube-apiserver
v1.36.3 by tests/integration/test_cel_conformance.py.

ENGINE_DEVIATIONS lists, per engine, the cases where that engine knowingly differs
from Kubernetes (the unit tier asserts that they still differ, so the list stays true).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

DRIVER: Final = "cel.conformance.test"
ERROR: Final = "error"
COMPILE_ERROR: Final = "compile-error"
Expected: TypeAlias = frozenset[str] | Literal["error", "compile-error"]


def _dev(name: str, attributes: dict[str, Any], capacity: dict[str, str],
         multi: bool | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": name,
        "attributes": attributes,
        "capacity": {k: {"value": v} for k, v in capacity.items()},
    }
    if multi is not None:
        d["allowMultipleAllocations"] = multi
    return d


#: ResourceSlice spec.devices[] items, exactly as the API takes them.
DEVICES: Final[list[dict[str, Any]]] = [
    _dev("a100-0", {
        "vendor": {"string": "nvidia"}, "model": {"string": "A100-SXM4-80GB"},
        "index": {"int": 0}, "healthy": {"bool": True},
        "driverVersion": {"version": "550.54.15"},
        "resource.kubernetes.io/pciBusID": {"string": "0000:3b:00.0"},
    }, {"memory": "80Gi", "cores": "100", "slots": "10"}, multi=True),
    _dev("a100-1", {
        "vendor": {"string": "nvidia"}, "model": {"string": "A100-SXM4-80GB"},
        "index": {"int": 1}, "healthy": {"bool": False},
        "driverVersion": {"version": "535.104.5"},
        "resource.kubernetes.io/pciBusID": {"string": "0000:5e:00.0"},
    }, {"memory": "81920Mi", "cores": "100", "slots": "4"}, multi=True),
    _dev("t4-0", {
        "vendor": {"string": "nvidia"}, "model": {"string": "Tesla T4"},
        "index": {"int": 2}, "healthy": {"bool": True},
        "driverVersion": {"version": "550.54.15-rc.1"},
    }, {"memory": "16G", "cores": "50", "slots": "2"}),
    _dev("mlu-0", {
        "vendor": {"string": "cambricon"}, "model": {"string": "MLU370-X8"},
        "index": {"int": 0}, "healthy": {"bool": True},
        "driverVersion": {"version": "5.10.22"},
        "example.com/tier": {"string": "gold"},
    }, {"memory": "24Gi", "cores": "100"}, multi=False),
    _dev("npu-0", {
        "vendor": {"string": "huawei"}, "model": {"string": "Ascend910B"},
        "index": {"int": 3}, "healthy": {"bool": True},
        "driverVersion": {"version": "24.1.0+build.7"},
    }, {"memory": "65536Mi", "cores": "1500m", "slots": "8"}),
    _dev("dcu-0", {
        "vendor": {"string": "hygon"},
        "index": {"int": 4}, "healthy": {"bool": False},
        "example.com/tier": {"string": "silver"}, "example.com/priority": {"int": -1},
    }, {"memory": "32e9", "cores": "100"}),
]
ALL: Final = frozenset(d["name"] for d in DEVICES)
NONE: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Case:
    id: str
    expression: str
    expected: Expected
    note: str = ""


def _s(*names: str) -> frozenset[str]:
    unknown = set(names) - ALL
    assert not unknown, unknown
    return frozenset(names)


A = f'device.attributes["{DRIVER}"]'
C = f'device.capacity["{DRIVER}"]'
V = f"has({A}.driverVersion) && {A}.driverVersion"

CASES: Final[list[Case]] = [
    # driver, plain attributes of every type
    Case("driver-eq", f'device.driver == "{DRIVER}"', ALL),
    Case("driver-other", 'device.driver == "other.example.com"', NONE,
         "no device matches: unschedulable, not an error"),
    Case("string-eq", f'{A}.vendor == "nvidia"', _s("a100-0", "a100-1", "t4-0")),
    Case("int-ge", f"{A}.index >= 2", _s("t4-0", "npu-0", "dcu-0")),
    Case("bool-as-result", f"{A}.healthy", _s("a100-0", "t4-0", "mlu-0", "npu-0"),
         "a bool attribute is a valid whole selector (type any)"),
    Case("bool-not", f"!{A}.healthy", _s("a100-1", "dcu-0")),
    Case("int-vs-double", f"{A}.index < 2.5", _s("a100-0", "a100-1", "t4-0", "mlu-0"),
         "cross-type numeric comparison at runtime"),
    Case("int-eq-string", f'{A}.index == "0"', NONE,
         "heterogeneous equality is false, not an error"),
    Case("ternary", f"{A}.healthy ? {A}.index < 1 : false", _s("a100-0", "mlu-0")),
    Case("in-list", f'{A}.vendor in ["cambricon", "hygon"]', _s("mlu-0", "dcu-0")),
    Case("list-exists", f"[0, 2].exists(i, i == {A}.index)", _s("a100-0", "t4-0", "mlu-0")),
    Case("driver-domain-dynamic", "device.attributes[device.driver].index == 0",
         _s("a100-0", "mlu-0")),
    # missing keys, unknown domains, has() / in
    Case("missing-key-error", f'{A}.model == "A100-SXM4-80GB"', ERROR,
         "dcu-0 has no model: unknown key inside a domain is a runtime error"),
    Case("missing-key-guard-in", f'"model" in {A} && {A}.model.startsWith("A100")',
         _s("a100-0", "a100-1")),
    Case("missing-key-guard-has", f"has({A}.model)",
         _s("a100-0", "a100-1", "t4-0", "mlu-0", "npu-0")),
    Case("unknown-domain-empty", 'device.attributes["unknown.example.com"].size() == 0', ALL,
         "unknown domain yields an empty map"),
    Case("unknown-domain-key-error", 'device.attributes["unknown.example.com"].model == "x"',
         ERROR),
    Case("unknown-domain-select-error", 'device.attributes.gpu.model == "x"', ERROR,
         "select syntax on an identifier domain: empty map, then unknown key"),
    Case("domain-in-unknown", '"unknown.example.com" in device.attributes', NONE,
         "`in` sees only real domains"),
    Case("domain-in-real", '"example.com" in device.attributes', _s("mlu-0", "dcu-0")),
    Case("has-unknown-domain", "has(device.attributes.gpu)", ALL,
         "has() on the defaulting outer map is always true"),
    Case("domains-size", "device.attributes.size() == 1", _s("t4-0", "npu-0"),
         "size() counts real domains only"),
    Case("domains-exists", 'device.attributes.exists(d, d == "resource.kubernetes.io")',
         _s("a100-0", "a100-1")),
    Case("qualified-unguarded", 'device.attributes["resource.kubernetes.io"].pciBusID'
         '.startsWith("0000:3b")', ERROR),
    Case("qualified-guarded", '"pciBusID" in device.attributes["resource.kubernetes.io"] && '
         'device.attributes["resource.kubernetes.io"].pciBusID.startsWith("0000:3b")',
         _s("a100-0")),
    Case("optional-select", 'device.attributes["resource.kubernetes.io"].?pciBusID'
         '.orValue("").startsWith("0000:5e")', _s("a100-1")),
    Case("other-domain-has", 'has(device.attributes["example.com"].tier)',
         _s("mlu-0", "dcu-0")),
    Case("other-domain-optional-int", 'device.attributes["example.com"].?priority.orValue(0) < 0',
         _s("dcu-0")),
    # versions
    Case("semver-compare", f'{V}.compareTo(semver("550.0.0")) >= 0', _s("a100-0", "t4-0"),
         "550.54.15-rc.1 >= 550.0.0"),
    Case("semver-prerelease-less", f'{V}.isLessThan(semver("550.54.15"))',
         _s("a100-1", "t4-0", "mlu-0", "npu-0"), "a pre-release is lower than the release"),
    Case("semver-eq-ignores-build", f'{V} == semver("24.1.0")', _s("npu-0"),
         "build metadata does not take part in equality"),
    Case("semver-major", f"{V}.major() == 550", _s("a100-0", "t4-0")),
    Case("semver-greater-minor", f'{V}.isGreaterThan(semver("5.9.0")) && {A}.driverVersion'
         ".minor() < 20", _s("mlu-0", "npu-0")),
    Case("semver-unguarded-error", f'{A}.driverVersion.compareTo(semver("1.0.0")) > 0', ERROR,
         "dcu-0 has no driverVersion"),
    Case("semver-normalize", 'semver("v550.54", true).isLessThan(semver("550.54.15"))', ALL),
    Case("semver-invalid-runtime", 'semver("1.2") == semver("1.2.0")', ERROR,
         "strict parse of a constant fails at runtime, not at create"),
    Case("is-semver", 'isSemver("1.2.3") && !isSemver("1.2") && isSemver("v1.2", true)', ALL),
    # quantities
    Case("quantity-compare", f'{C}.memory.compareTo(quantity("80Gi")) >= 0',
         _s("a100-0", "a100-1"), "81920Mi == 80Gi"),
    Case("quantity-eq-units", f'{C}.memory == quantity("64Gi")', _s("npu-0"),
         "65536Mi == 64Gi"),
    Case("quantity-decimal-vs-binary", f'{C}.memory.isGreaterThan(quantity("15Gi"))',
         _s("a100-0", "a100-1", "mlu-0", "npu-0", "dcu-0"), "16G < 15Gi, 32e9 > 15Gi"),
    Case("quantity-less", f'{C}.memory.isLessThan(quantity("30G"))', _s("t4-0", "mlu-0")),
    Case("capacity-missing-error", f'{C}.slots.compareTo(quantity("4")) >= 0', ERROR),
    Case("capacity-missing-guard", f'"slots" in {C} && {C}.slots.compareTo(quantity("4")) >= 0',
         _s("a100-0", "a100-1", "npu-0")),
    Case("quantity-is-integer", f"{C}.cores.isInteger()",
         _s("a100-0", "a100-1", "t4-0", "mlu-0", "dcu-0"), "1500m is not an integer"),
    Case("quantity-as-integer-error", f"{C}.cores.asInteger() >= 50", ERROR,
         "1500m cannot be converted to an integer"),
    Case("quantity-add", f'{C}.cores.add(quantity("500m")).compareTo(quantity("2")) == 0',
         _s("npu-0")),
    Case("quantity-sub-int", f'{C}.cores.sub(50) == quantity("50")',
         _s("a100-0", "a100-1", "mlu-0", "dcu-0")),
    Case("quantity-sign-global", f"sign({C}.cores) == 1", ALL),
    Case("quantity-sign-member", f"{C}.cores.sign() == 1", COMPILE_ERROR,
         "sign is declared as a global function only"),
    Case("is-quantity", '!isQuantity("200K") && isQuantity("1.5Gi")', ALL),
    Case("quantity-invalid-runtime", 'quantity("1.5.5") == quantity("1")', ERROR),
    Case("capacity-unknown-domain", 'device.capacity["other.example.com"].size() == 0', ALL),
    # cel.bind
    Case("bind", f'cel.bind(a, {A}, a.vendor == "nvidia" && a.index > 0)',
         _s("a100-1", "t4-0")),
    Case("bind-capacity", f'cel.bind(c, {C}, c.memory.compareTo(quantity("32G")) >= 0 && '
         'c.cores.compareTo(quantity("100")) == 0)', _s("a100-0", "a100-1", "dcu-0")),
    Case("bind-nested", f'cel.bind(a, {A}, cel.bind(b, device.attributes["example.com"], '
         'a.index == 4 && b.tier == "silver"))', _s("dcu-0"),
         "false && error is false"),
    Case("bind-whole-map-in", 'cel.bind(m, device.attributes, "example.com" in m)',
         _s("mlu-0", "dcu-0")),
    Case("bind-whole-map-lookup", 'cel.bind(m, device.attributes, m["example.com"].size() > 0)',
         _s("mlu-0", "dcu-0"), "the bound map still defaults unknown domains to empty maps"),
    # strings
    Case("upper-ascii", f'{A}.vendor.upperAscii() == "NVIDIA"', _s("a100-0", "a100-1", "t4-0")),
    Case("matches", f'{A}.vendor.matches("^(hygon|huawei)$")', _s("npu-0", "dcu-0")),
    Case("lower-contains", f'has({A}.model) && {A}.model.lowerAscii().contains("t4")',
         _s("t4-0")),
    Case("split-size", f'{A}.vendor.split("i").size() == 3', _s("a100-0", "a100-1", "t4-0")),
    Case("endswith", f'{A}.vendor.endsWith("a")', _s("a100-0", "a100-1", "t4-0")),
    Case("cost-limit-join", f'["nv", "idia"].join("") == {A}.vendor', COMPILE_ERROR,
         "join() is estimated too expensive even on a two-element literal"),
    Case("cost-limit", '"a,b".split(",").join("-") == "a-b"', COMPILE_ERROR,
         "kube-apiserver's worst-case cost estimate: split() of an unbounded string, then "
         "join(), 'too complex, exceeds cost limit'"),
    Case("sets-contains", f'sets.contains(["nvidia", "huawei"], [{A}.vendor])',
         _s("a100-0", "a100-1", "t4-0", "npu-0")),
    # allowMultipleAllocations (DRAConsumableCapacity on)
    Case("allow-multiple", "device.allowMultipleAllocations", _s("a100-0", "a100-1")),
    # runtime errors
    Case("ordering-type-error", f"{A}.vendor > 1", ERROR, "no matching overload at runtime"),
    Case("non-bool-result", f"{A}.index", ERROR, "type any compiles; an int result fails"),
    Case("divide-by-zero", f"{A}.index / 0 == 1", ERROR),
    # compile errors (the API server rejects the claim)
    Case("compile-int-result", "1 + 1", COMPILE_ERROR, "must evaluate to bool"),
    Case("compile-unknown-field", 'device.foo == "x"', COMPILE_ERROR),
    Case("compile-unknown-function", f"{A}.vendor.noSuchFunction()", COMPILE_ERROR),
    Case("compile-syntax", "device.driver ==", COMPILE_ERROR),
    Case("compile-mixed-list-literal", f'[{A}.vendor, "x"].size() == 2', COMPILE_ERROR,
         "HomogeneousAggregateLiterals: attribute values are typed `any`, so mixing one "
         "with a string in a list literal is rejected"),
    Case("compile-bad-regex", 'device.driver.matches("[")', COMPILE_ERROR,
         "regex literals are validated at compile time"),
]

#: Known differences from Kubernetes, per engine: case id -> why. Neither engine
#: implements CEL cost estimation, so both accept some selectors that kube-apiserver
#: rejects as too expensive; cel-python (no type checker, no heterogeneous equality,
#: no optional types) is kept for comparison only.
ENGINE_DEVIATIONS: Final[dict[str, dict[str, str]]] = {
    "cel-expr-python": {
        "cost-limit": "no worst-case cost estimation: accepted and evaluated",
        "cost-limit-join": "no worst-case cost estimation: accepted and evaluated",
        "bind-whole-map-lookup": "a whole map bound with cel.bind is the real map: "
        "looking up an unknown domain through it is an error, not an empty map",
        "compile-mixed-list-literal": "homogeneous aggregate literals are not enforced",
    },
    "cel-python": {
        "cost-limit": "no worst-case cost estimation: accepted and evaluated",
        "cost-limit-join": "no worst-case cost estimation: accepted and evaluated",
        "bind-whole-map-lookup": "a whole map bound with cel.bind is the real map: "
        "looking up an unknown domain through it is an error, not an empty map",
        "compile-mixed-list-literal": "homogeneous aggregate literals are not enforced",
        "int-vs-double": "no cross-type numeric comparison: runtime error",
        "int-eq-string": "no heterogeneous equality: runtime error instead of false",
        "optional-select": "optional field selection (.?x) is not supported",
        "other-domain-optional-int": "optional field selection (.?x) is not supported",
        "quantity-sign-member": "not type-checked: member call of a global function works",
        "compile-int-result": "not type-checked: non-bool result is a runtime error",
        "compile-unknown-field": "not type-checked: unknown field is a runtime error",
        "compile-unknown-function": "not type-checked: unknown function is a runtime error",
        "compile-bad-regex": "regex literals are not validated: runtime error",
        "sets-contains": "the sets extension is not provided for cel-python",
    },
}

assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"
