"""`vgpu-dra`: the one console script. This module is the only reader of argv and
the environment; every subcommand gets typed settings."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dra_driver.core.slices import DRIVER_NAME, Mode, SliceSettings
from dra_driver.localcluster.cluster import DEFAULT_VERSION


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(_env("VGPU_DRA_CACHE", str(Path(base) / "vgpu-dra")))


def _slice_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--driver-name", default=_env("VGPU_DRA_DRIVER_NAME", DRIVER_NAME))
    p.add_argument(
        "--slots",
        type=int,
        default=int(_env("VGPU_DRA_SLOTS", "10")),
        help="default shares per card (HAMi deviceSplitCount)",
    )
    p.add_argument("--core-scaling", type=int, default=int(_env("VGPU_DRA_CORE_SCALING", "1")))


def _slice_settings(ns: argparse.Namespace, mode: Mode = Mode.CONSUMABLE) -> SliceSettings:
    return SliceSettings(
        driver_name=ns.driver_name,
        mode=mode,
        default_slots=ns.slots,
        default_core_scaling=ns.core_scaling,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vgpu-dra", description="DRA driver for shared GPUs")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser(
        "demo",
        help="run the driver against a local control plane, on the embedded simulated inventory",
    )
    d.add_argument("--k8s-version", default=_env("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION))
    d.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="simulated inventory (default: the embedded demo inventory)",
    )
    d.add_argument(
        "--keep",
        action="store_true",
        help="keep the cluster running until Ctrl-C and print its kubeconfig",
    )

    r = sub.add_parser(
        "render-slices",
        help="print the ResourceSlices the controller "
        "would publish for a node, without an API server",
    )
    r.add_argument("--inventory", type=Path, required=True)
    r.add_argument("--node", required=True)
    r.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.CONSUMABLE.value)
    r.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    _slice_args(r)

    dc = sub.add_parser("render-deviceclasses", help="print one DeviceClass per vendor")
    dc.add_argument("--driver-name", default=_env("VGPU_DRA_DRIVER_NAME", DRIVER_NAME))
    dc.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")

    c = sub.add_parser("controller", help="publish ResourceSlices for GPU nodes")
    c.add_argument(
        "--kubeconfig",
        type=Path,
        default=os.environ.get("KUBECONFIG") or None,
        help="default: $KUBECONFIG, else in-cluster service account",
    )
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--inventory", type=Path, help="simulated inventory YAML")
    src.add_argument("--nvml", action="store_true", help="discover NVIDIA cards through NVML")
    c.add_argument(
        "--node",
        action="append",
        default=[],
        help="node(s) to publish for (default: $NODE_NAME with --nvml, "
        "every inventory node with --inventory)",
    )
    c.add_argument(
        "--mode", choices=["auto", *[m.value for m in Mode]], default=_env("VGPU_DRA_MODE", "auto")
    )
    c.add_argument("--resync-seconds", type=float, default=60.0)
    c.add_argument("--metrics-port", type=int, default=int(_env("VGPU_DRA_METRICS_PORT", "0")))
    _slice_args(c)

    k = sub.add_parser(
        "kubelet-plugin",
        help="node agent: discovery, this node's ResourceSlices and the kubelet DRA plugin",
    )
    k.add_argument(
        "--kubeconfig",
        type=Path,
        default=os.environ.get("KUBECONFIG") or None,
        help="default: $KUBECONFIG, else in-cluster service account",
    )
    ksrc = k.add_mutually_exclusive_group(required=True)
    ksrc.add_argument("--inventory", type=Path, help="simulated inventory YAML")
    ksrc.add_argument("--nvml", action="store_true", help="discover NVIDIA cards through NVML")
    k.add_argument("--node", default=os.environ.get("NODE_NAME", ""), help="default: $NODE_NAME")
    k.add_argument(
        "--registry-dir",
        type=Path,
        default=Path(_env("VGPU_DRA_REGISTRY_DIR", "/var/lib/kubelet/plugins_registry")),
    )
    k.add_argument(
        "--plugins-dir",
        type=Path,
        default=Path(_env("VGPU_DRA_PLUGINS_DIR", "/var/lib/kubelet/plugins")),
    )
    k.add_argument("--cdi-dir", type=Path, default=Path(_env("VGPU_DRA_CDI_DIR", "/var/run/cdi")))
    k.add_argument(
        "--state-dir",
        type=Path,
        default=Path(_env("VGPU_DRA_STATE_DIR", "/var/lib/kubelet/plugins/vgpu.hami.io")),
        help="checkpoint and node-wide lock (must survive plugin restarts)",
    )
    k.add_argument(
        "--claims-dir",
        type=Path,
        default=Path(_env("VGPU_DRA_CLAIMS_DIR", "/var/lib/vgpu-dra/claims")),
        help="per-claim host dirs (limits file, shared accounting region)",
    )
    k.add_argument(
        "--lib-path",
        default=_env("VGPU_DRA_LIB_PATH", "/usr/local/vgpu/libvgpu.so"),
        help="libvgpu.so on the host (mounted at the same path in containers)",
    )
    k.add_argument(
        "--preload-path",
        default=_env("VGPU_DRA_PRELOAD_PATH", "/usr/local/vgpu/ld.so.preload"),
        help="host file mounted as the container's /etc/ld.so.preload",
    )
    k.add_argument(
        "--boot-id-file",
        type=Path,
        default=Path(_env("VGPU_DRA_BOOT_ID_FILE", "/proc/sys/kernel/random/boot_id")),
    )
    k.add_argument(
        "--instance-id",
        default=_env("POD_UID", ""),
        help="unique per plugin process (the pod UID): rolling updates need distinct sockets",
    )
    k.add_argument(
        "--mode", choices=["auto", *[m.value for m in Mode]], default=_env("VGPU_DRA_MODE", "auto")
    )
    k.add_argument(
        "--health-interval-seconds",
        type=float,
        default=float(_env("VGPU_DRA_HEALTH_INTERVAL", "10")),
    )
    k.add_argument("--metrics-port", type=int, default=int(_env("VGPU_DRA_METRICS_PORT", "0")))
    _slice_args(k)

    b = sub.add_parser(
        "build-control-plane",
        help="build (or find cached) kube-apiserver, "
        "kube-scheduler, kube-controller-manager, kubectl and etcd",
    )
    b.add_argument("--k8s-version", default=_env("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _dispatch(ns)
    except (ValueError, RuntimeError) as e:  # domain errors carry actionable messages
        print(f"vgpu-dra {ns.cmd}: error: {e}", file=sys.stderr)
        return 2


def _dispatch(ns: argparse.Namespace) -> int:
    if ns.cmd == "render-slices":
        from dra_driver.render import dump, render_slices

        objs = render_slices(ns.inventory, ns.node, Mode(ns.mode), _slice_settings(ns))
        sys.stdout.write(dump(objs, ns.output))
        return 0
    if ns.cmd == "render-deviceclasses":
        from dra_driver.core.deviceclasses import device_classes
        from dra_driver.render import dump

        sys.stdout.write(dump(device_classes(ns.driver_name), ns.output))
        return 0
    if ns.cmd == "build-control-plane":
        from dra_driver.localcluster.build import BuildSettings, ensure_built

        print(ensure_built(BuildSettings(version=ns.k8s_version, cache_root=_cache_root())))
        return 0
    if ns.cmd == "controller":
        from controller.app import AppSettings, run
        from controller.reconciler import ControllerSettings

        nodes = tuple(ns.node) or (
            (os.environ["NODE_NAME"],) if ns.nvml and "NODE_NAME" in os.environ else ()
        )
        if ns.nvml and not nodes:
            raise ValueError("--nvml needs --node or $NODE_NAME")
        return run(
            AppSettings(
                controller=ControllerSettings(
                    slices=_slice_settings(ns),
                    mode=None if ns.mode == "auto" else Mode(ns.mode),
                    resync_s=ns.resync_seconds,
                ),
                kubeconfig=ns.kubeconfig,
                inventory=ns.inventory,
                nodes=nodes,
                use_nvml=ns.nvml,
                metrics_port=ns.metrics_port,
            )
        )
    if ns.cmd == "kubelet-plugin":
        return _kubelet_plugin(ns)
    if ns.cmd == "demo":
        from dra_driver.demo import DemoSettings, run_demo

        return run_demo(
            DemoSettings(
                version=ns.k8s_version,
                cache_root=_cache_root(),
                inventory=ns.inventory,
                keep=ns.keep,
            ),
            sys.stdout,
        )
    raise AssertionError(ns.cmd)


def _kubelet_plugin(ns: argparse.Namespace) -> int:
    import signal

    from controller.reconciler import ControllerSettings
    from dra_driver.core.claims import ClaimRef
    from dra_driver.core.prepare import PrepareSettings
    from kubelet_plugin.app import NodeAgentSettings, detect_nvidia_cdi_kind, run
    from kubelet_plugin.driver import DriverSettings, StepHook
    from kubelet_plugin.server import SocketSettings

    if not ns.node:
        raise ValueError("--node or $NODE_NAME is required")
    boot_id = ns.boot_id_file.read_text().strip()
    prepare = PrepareSettings(
        driver_name=ns.driver_name,
        lib_path=ns.lib_path,
        preload_path=ns.preload_path,
        claims_dir=str(ns.claims_dir),
        nvidia_cdi_kind=detect_nvidia_cdi_kind((Path("/etc/cdi"), ns.cdi_dir)),
    )
    hook: StepHook | object = StepHook()
    crash_at = os.environ.get("VGPU_DRA_TEST_CRASH_AT")  # test hook: die at a prepare step
    if crash_at:

        def die(step: str, claim: ClaimRef) -> None:
            if step == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)

        hook = die
    return run(
        NodeAgentSettings(
            node_name=ns.node,
            kubeconfig=ns.kubeconfig,
            inventory=ns.inventory,
            use_nvml=ns.nvml,
            sockets=SocketSettings(
                driver_name=ns.driver_name,
                registry_dir=ns.registry_dir.absolute(),
                plugins_dir=ns.plugins_dir.absolute(),
                instance_id=ns.instance_id,
            ),
            driver=DriverSettings(
                node_name=ns.node,
                state_dir=ns.state_dir,
                cdi_dir=ns.cdi_dir,
                claims_host_dir=ns.claims_dir,
                boot_id=boot_id,
                prepare=prepare,
            ),
            controller=ControllerSettings(
                slices=_slice_settings(ns), mode=None if ns.mode == "auto" else Mode(ns.mode)
            ),
            health_interval_s=ns.health_interval_seconds,
            metrics_port=ns.metrics_port,
        ),
        step_hook=hook,  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    raise SystemExit(main())
