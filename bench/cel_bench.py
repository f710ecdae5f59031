"""DRA selector CEL: both engines side by side (evaluations/s, compile time).

    .venv/bin/python bench/cel_bench.py [--devices 2000] [--rounds 3]

For a few representative selectors over N varied devices (ResourceSlice JSON) it
measures, per engine:

* compile: mean time of ``engine.compile`` (no cache), over 20 compiles;
* cold: evaluations/s including the one-off per-device conversion (a fresh
  ``device_from_api`` + engine representation per device, as for a device seen once);
* warm: evaluations/s on devices already converted (the steady state of a webhook or
  extender that keeps its CelDevice objects), best of ``--rounds``.

Numbers are this machine's; compare the columns of one run with each other.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from vgpu_dra.cel import ENGINE_NAMES, CelDevice, device_from_api, get_engine

DRIVER = "gpu.bench.example.com"
SELECTORS = {
    "driver+string": f'device.driver == "{DRIVER}" && '
    f'device.attributes["{DRIVER}"].model == "A100"',
    "capacity": f'device.capacity["{DRIVER}"].memory.compareTo(quantity("40Gi")) >= 0',
    "semver": f'device.attributes["{DRIVER}"].driverVersion.isGreaterThan(semver("535.0.0"))',
    "bind+mixed": f'cel.bind(a, device.attributes["{DRIVER}"], a.vendor.lowerAscii() == "nvidia"'
    f' && a.index < 6) && "pciBusID" in device.attributes["resource.kubernetes.io"] && '
    f'device.capacity["{DRIVER}"].cores.isGreaterThan(quantity("50"))',
}


def make_devices(n: int) -> list[dict[str, Any]]:
    models = ["A100", "H100", "T4", "L40S"]
    versions = ["550.54.15", "535.104.5", "525.60.13", "560.35.3-rc.1"]
    out = []
    for i in range(n):
        out.append({
            "name": f"gpu-{i}",
            "attributes": {
                "vendor": {"string": "NVIDIA" if i % 5 else "nvidia"},
                "model": {"string": models[i % 4]},
                "index": {"int": i % 8},
                "healthy": {"bool": i % 7 != 0},
                "driverVersion": {"version": versions[i % 4]},
                "resource.kubernetes.io/pciBusID": {"string": f"0000:{i % 256:02x}:00.0"},
            },
            "capacity": {
                "memory": {"value": ["80Gi", "81920Mi", "16G", "24Gi"][i % 4]},
                "cores": {"value": "100" if i % 3 else "40"},
                "slots": {"value": "10"},
            },
        })
    return out


def _rate(n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def bench(engine_name: str, raw: list[dict[str, Any]], rounds: int) -> dict[str, dict[str, float]]:
    engine = get_engine(engine_name)
    results: dict[str, dict[str, float]] = {}
    for label, expr in SELECTORS.items():
        t0 = time.perf_counter()
        for _ in range(20):
            sel = engine.compile(expr)
        compile_ms = (time.perf_counter() - t0) / 20 * 1e3

        def cold(sel: Any = sel) -> None:
            for d in raw:
                sel.matches(device_from_api(d, DRIVER))

        cold_rate = _rate(len(raw), cold)
        devices: list[CelDevice] = [device_from_api(d, DRIVER) for d in raw]
        for d in devices:
            sel.matches(d)  # converts once

        def warm(sel: Any = sel, devices: list[CelDevice] = devices) -> None:
            for d in devices:
                sel.matches(d)

        warm_rate = max(_rate(len(devices), warm) for _ in range(rounds))
        matched = sum(sel.matches(d) for d in devices)
        results[label] = {"compile_ms": compile_ms, "cold": cold_rate, "warm": warm_rate,
                          "matched": matched}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    raw = make_devices(args.devices)
    res = {name: bench(name, raw, args.rounds) for name in ENGINE_NAMES}
    a, b = ENGINE_NAMES
    for label in SELECTORS:
        assert res[a][label]["matched"] == res[b][label]["matched"], label
    print(f"{args.devices} devices; evaluations/s (warm = devices already converted, best of "
          f"{args.rounds}; cold = incl. device conversion); compile = ms per compile\n")
    head = (f"{'selector':<14} {'matched':>7} | {a + ' warm':>22} {'cold':>9} {'compile':>8} | "
            f"{b + ' warm':>17} {'cold':>9} {'compile':>8} | {'warm ratio':>10}")
    print(head)
    print("-" * len(head))
    for label in SELECTORS:
        x, y = res[a][label], res[b][label]
        print(f"{label:<14} {int(x['matched']):>7} | {x['warm']:>22,.0f} {x['cold']:>9,.0f} "
              f"{x['compile_ms']:>7.3f} | {y['warm']:>17,.0f} {y['cold']:>9,.0f} "
              f"{y['compile_ms']:>7.3f} | {x['warm'] / y['warm']:>9.1f}x")


if __name__ == "__main__":
    main()
