"""`vgpu-dra`: the one console script. This module is the only reader of argv and
the environment; every subcommand gets typed settings."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vgpu_dra.core.slices import DRIVER_NAME, CapacityMode, SliceSettings
from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION

if TYPE_CHECKING:
    from vgpu_dra.webhook.translate import TranslateSettings


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


def _slice_settings(
    ns: argparse.Namespace, mode: CapacityMode = CapacityMode.CONSUMABLE
) -> SliceSettings:
    return SliceSettings(
        driver_name=ns.driver_name,
        mode=mode,
        default_slots=ns.slots,
        default_core_scaling=ns.core_scaling,
    )


def _translate_args(p: argparse.ArgumentParser) -> None:
    """The webhook's translation settings (HAMi's scheduler device config names)."""
    p.add_argument("--driver-name", default=_env("VGPU_DRA_DRIVER_NAME", DRIVER_NAME))
    p.add_argument(
        "--scheduler-name",
        default=_env("VGPU_DRA_SCHEDULER_NAME", "vgpu-dra-scheduler"),
        help="legacy mode: the scheduler that vGPU pods are sent to",
    )
    p.add_argument(
        "--default-gpu-num", type=int, default=int(_env("VGPU_DRA_DEFAULT_GPU_NUM", "1"))
    )
    p.add_argument(
        "--default-memory",
        type=int,
        default=int(_env("VGPU_DRA_DEFAULT_MEMORY", "0")),
        help="MiB when a container sets no memory; 0 = the whole card",
    )
    p.add_argument("--default-cores", type=int, default=int(_env("VGPU_DRA_DEFAULT_CORES", "0")))
    p.add_argument("--memory-factor", type=int, default=int(_env("VGPU_DRA_MEMORY_FACTOR", "1")))
    p.add_argument(
        "--core-limit-policy",
        choices=["default", "force", "disable"],
        default=_env("VGPU_DRA_CORE_LIMIT_POLICY", "default"),
    )
    p.add_argument(
        "--capacity-mode",
        choices=["auto", "consumable", "replicas"],
        default=_env("VGPU_DRA_CAPACITY_MODE", "auto"),
        help="auto: as the published ResourceSlices show",
    )


def _translate_settings(ns: argparse.Namespace) -> TranslateSettings:
    from vgpu_dra.core.hami.requests import AskSettings
    from vgpu_dra.webhook.templates import TemplateSettings
    from vgpu_dra.webhook.translate import TranslateSettings, WebhookMode

    return TranslateSettings(
        mode=WebhookMode("dra" if ns.mode == "auto" else ns.mode),
        asks=AskSettings(
            default_count=ns.default_gpu_num,
            default_memory_mib=ns.default_memory,
            default_cores=ns.default_cores,
            memory_factor=ns.memory_factor,
        ),
        templates=TemplateSettings(
            driver_name=ns.driver_name,
            capacity_mode=None if ns.capacity_mode == "auto" else CapacityMode(ns.capacity_mode),
            core_limit_policy=ns.core_limit_policy,
        ),
        scheduler_name=ns.scheduler_name,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vgpu-dra", description="DRA driver for shared GPUs")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser(
        "demo",
        help="run the driver, node agents and webhook on a local control plane with "
        "simulated nodes; apply deploy/examples and print where they landed",
    )
    d.add_argument("--k8s-version", default=_env("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION))
    d.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="simulated inventory (default: the embedded 2-node demo cluster)",
    )
    d.add_argument(
        "--examples",
        type=Path,
        default=None,
        help="example workloads to apply (default: deploy/examples of this checkout)",
    )
    d.add_argument(
        "--timeout", type=float, default=60.0, help="seconds each wait of the demo may take"
    )
    d.add_argument(
        "--keep",
        action="store_true",
        help="keep everything running until Ctrl-C and print the kubeconfig",
    )

    r = sub.add_parser(
        "render-slices",
        help="print the ResourceSlices the controller "
        "would publish for a node, without an API server",
    )
    r.add_argument("--inventory", type=Path, required=True)
    r.add_argument("--node", required=True)
    r.add_argument(
        "--mode", choices=[m.value for m in CapacityMode], default=CapacityMode.CONSUMABLE.value
    )
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
    src.add_argument(
        "--allocation-metrics-only",
        action="store_true",
        help="publish nothing (node agents do); serve the cluster-wide per-card allocation "
        "metrics on --metrics-port",
    )
    c.add_argument(
        "--node",
        action="append",
        default=[],
        help="node(s) to publish for (default: $NODE_NAME with --nvml, "
        "every inventory node with --inventory)",
    )
    c.add_argument(
        "--mode",
        choices=["auto", *[m.value for m in CapacityMode]],
        default=_env("VGPU_DRA_MODE", "auto"),
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
        "--mode",
        choices=["auto", *[m.value for m in CapacityMode]],
        default=_env("VGPU_DRA_MODE", "auto"),
    )
    k.add_argument(
        "--health-interval-seconds",
        type=float,
        default=float(_env("VGPU_DRA_HEALTH_INTERVAL", "10")),
    )
    k.add_argument("--metrics-port", type=int, default=int(_env("VGPU_DRA_METRICS_PORT", "0")))
    _slice_args(k)

    wh = sub.add_parser(
        "webhook", help="mutating admission webhook: legacy nvidia.com/gpumem pods -> DRA claims"
    )
    wh.add_argument(
        "--kubeconfig",
        type=Path,
        default=os.environ.get("KUBECONFIG") or None,
        help="default: $KUBECONFIG, else in-cluster service account",
    )
    wh.add_argument("--host", default=_env("VGPU_DRA_WEBHOOK_HOST", "0.0.0.0"))  # noqa: S104
    wh.add_argument("--port", type=int, default=int(_env("VGPU_DRA_WEBHOOK_PORT", "8443")))
    wh.add_argument(
        "--tls-cert-file",
        type=Path,
        default=Path(_env("VGPU_DRA_TLS_CERT_FILE", "/etc/vgpu-dra/tls/tls.crt")),
    )
    wh.add_argument(
        "--tls-key-file",
        type=Path,
        default=Path(_env("VGPU_DRA_TLS_KEY_FILE", "/etc/vgpu-dra/tls/tls.key")),
    )
    wh.add_argument(
        "--tls-reload-seconds", type=float, default=float(_env("VGPU_DRA_TLS_RELOAD", "10"))
    )
    wh.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(_env("VGPU_DRA_WEBHOOK_MAX_BODY", str(6 * 1024 * 1024))),
    )
    wh.add_argument(
        "--mode",
        choices=["auto", "dra", "legacy"],
        default=_env("VGPU_DRA_WEBHOOK_MODE", "auto"),
        help="auto: DRA when the API server serves resource.k8s.io/v1",
    )
    _translate_args(wh)

    tp = sub.add_parser(
        "translate-pod",
        help="offline dry run of the webhook: print the mutated pod and its claim templates",
    )
    tp.add_argument("-f", "--file", type=Path, required=True, help="Pod YAML/JSON")
    tp.add_argument(
        "--slices", type=Path, default=None, help="ResourceSlices YAML (a List or documents)"
    )
    tp.add_argument("-n", "--namespace", default="default")
    tp.add_argument("--mode", choices=["dra", "legacy"], default="dra")
    tp.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    _translate_args(tp)

    _legacy_parsers(sub)

    b = sub.add_parser(
        "build-control-plane",
        help="build (or find cached) kube-apiserver, "
        "kube-scheduler, kube-controller-manager, kubectl and etcd",
    )
    b.add_argument("--k8s-version", default=_env("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION))

    sub.add_parser(
        "build-helm", help="build (or find cached) the helm binary used by the chart tests"
    )
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
        from vgpu_dra.render import dump, render_slices

        objs = render_slices(ns.inventory, ns.node, CapacityMode(ns.mode), _slice_settings(ns))
        sys.stdout.write(dump(objs, ns.output))
        return 0
    if ns.cmd == "render-deviceclasses":
        from vgpu_dra.core.deviceclasses import device_classes
        from vgpu_dra.render import dump

        sys.stdout.write(dump(device_classes(ns.driver_name), ns.output))
        return 0
    if ns.cmd == "build-control-plane":
        from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built

        print(ensure_built(BuildSettings(version=ns.k8s_version, cache_root=_cache_root())))
        return 0
    if ns.cmd == "build-helm":
        from vgpu_dra.dev.localcluster.helm import ensure_helm

        print(ensure_helm(_cache_root()))
        return 0
    if ns.cmd == "controller":
        from vgpu_dra.controller.app import AppSettings, run
        from vgpu_dra.publisher.reconciler import ControllerSettings

        nodes = tuple(ns.node) or (
            (os.environ["NODE_NAME"],) if ns.nvml and "NODE_NAME" in os.environ else ()
        )
        if ns.nvml and not nodes:
            raise ValueError("--nvml needs --node or $NODE_NAME")
        return run(
            AppSettings(
                controller=ControllerSettings(
                    slices=_slice_settings(ns),
                    mode=None if ns.mode == "auto" else CapacityMode(ns.mode),
                    resync_s=ns.resync_seconds,
                ),
                kubeconfig=ns.kubeconfig,
                inventory=ns.inventory,
                nodes=nodes,
                use_nvml=ns.nvml,
                metrics_port=ns.metrics_port,
                metrics_only=ns.allocation_metrics_only,
            )
        )
    if ns.cmd == "kubelet-plugin":
        return _kubelet_plugin(ns)
    if ns.cmd == "webhook":
        from vgpu_dra.webhook.app import WebhookSettings
        from vgpu_dra.webhook.app import run as run_webhook
        from vgpu_dra.webhook.server import ServerSettings

        return run_webhook(
            WebhookSettings(
                server=ServerSettings(
                    host=ns.host,
                    port=ns.port,
                    cert_file=ns.tls_cert_file,
                    key_file=ns.tls_key_file,
                    max_body_bytes=ns.max_body_bytes,
                    reload_interval_s=ns.tls_reload_seconds,
                ),
                translate=_translate_settings(ns),
                mode=ns.mode,
                kubeconfig=ns.kubeconfig,
            )
        )
    if ns.cmd == "translate-pod":
        from vgpu_dra.webhook.app import OfflineSettings, translate_pod

        return translate_pod(
            OfflineSettings(
                pod_file=ns.file,
                slices_file=ns.slices,
                namespace=ns.namespace,
                translate=_translate_settings(ns),
                output=ns.output,
            ),
            sys.stdout,
        )
    if ns.cmd in ("extender", "device-plugin"):
        return _legacy(ns)
    if ns.cmd == "demo":
        from vgpu_dra.dev.demo import DemoSettings, run_demo

        return run_demo(
            DemoSettings(
                version=ns.k8s_version,
                cache_root=_cache_root(),
                inventory=ns.inventory,
                examples=ns.examples,
                keep=ns.keep,
                timeout_s=ns.timeout,
            ),
            sys.stdout,
        )
    raise AssertionError(ns.cmd)


def _kubelet_plugin(ns: argparse.Namespace) -> int:
    import signal

    from vgpu_dra.core.claims import ClaimRef
    from vgpu_dra.core.prepare import PrepareSettings
    from vgpu_dra.gpu.nvidia_cdi import detect_nvidia_cdi_kind
    from vgpu_dra.node_agent.app import NodeAgentSettings, run
    from vgpu_dra.node_agent.driver import DriverSettings, StepHook
    from vgpu_dra.node_agent.server import SocketSettings
    from vgpu_dra.publisher.reconciler import ControllerSettings

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
                slices=_slice_settings(ns),
                mode=None if ns.mode == "auto" else CapacityMode(ns.mode),
            ),
            health_interval_s=ns.health_interval_seconds,
            metrics_port=ns.metrics_port,
        ),
        step_hook=hook,  # type: ignore[arg-type]
    )


def _legacy_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`extender` and `device-plugin`: the legacy (HAMi-compatible, no DRA) path."""
    e = sub.add_parser("extender", help="legacy path: kube-scheduler extender (HAMi protocol)")
    e.add_argument("--kubeconfig", type=Path, default=os.environ.get("KUBECONFIG") or None)
    e.add_argument("--bind-address", default=_env("VGPU_DRA_EXTENDER_BIND", "0.0.0.0"))  # noqa: S104
    e.add_argument("--port", type=int, default=int(_env("VGPU_DRA_EXTENDER_PORT", "8888")))
    e.add_argument("--cert-file", type=Path, default=os.environ.get("VGPU_DRA_TLS_CERT") or None)
    e.add_argument("--key-file", type=Path, default=os.environ.get("VGPU_DRA_TLS_KEY") or None)
    e.add_argument(
        "--node-scheduler-policy",
        choices=["binpack", "spread"],
        default=_env("VGPU_DRA_NODE_POLICY", "binpack"),
    )
    e.add_argument(
        "--gpu-scheduler-policy",
        choices=["binpack", "spread", "topology-aware", "mutex"],
        default=_env("VGPU_DRA_GPU_POLICY", "spread"),
    )
    e.add_argument(
        "--node-lock-timeout", type=float, default=float(_env("VGPU_DRA_NODE_LOCK_TIMEOUT", "300"))
    )
    e.add_argument(
        "--bind-lock-wait",
        type=float,
        default=float(_env("VGPU_DRA_BIND_LOCK_WAIT", "20")),
        help="seconds /bind waits for another pod's node lock (keep below httpTimeout)",
    )
    e.add_argument(
        "--default-gpu-num", type=int, default=int(_env("VGPU_DRA_DEFAULT_GPU_NUM", "1"))
    )
    e.add_argument("--default-memory", type=int, default=int(_env("VGPU_DRA_DEFAULT_MEMORY", "0")))
    e.add_argument("--default-cores", type=int, default=int(_env("VGPU_DRA_DEFAULT_CORES", "0")))
    e.add_argument("--memory-factor", type=int, default=int(_env("VGPU_DRA_MEMORY_FACTOR", "1")))

    d = sub.add_parser("device-plugin", help="legacy path: kubelet device plugin + inventory")
    d.add_argument("--kubeconfig", type=Path, default=os.environ.get("KUBECONFIG") or None)
    src = d.add_mutually_exclusive_group(required=True)
    src.add_argument("--inventory", type=Path, help="simulated inventory YAML")
    src.add_argument("--nvml", action="store_true", help="discover NVIDIA cards through NVML")
    d.add_argument("--node", default=os.environ.get("NODE_NAME", ""), help="default: $NODE_NAME")
    d.add_argument(
        "--device-plugin-dir",
        type=Path,
        default=Path(_env("VGPU_DRA_DEVICE_PLUGIN_DIR", "/var/lib/kubelet/device-plugins")),
    )
    d.add_argument("--slots", type=int, default=int(_env("VGPU_DRA_SLOTS", "10")))
    d.add_argument("--core-scaling", type=int, default=int(_env("VGPU_DRA_CORE_SCALING", "1")))
    d.add_argument(
        "--memory-scaling", type=float, default=float(_env("VGPU_DRA_MEMORY_SCALING", "1"))
    )
    d.add_argument(
        "--claims-dir",
        type=Path,
        default=Path(_env("VGPU_DRA_CLAIMS_DIR", "/var/lib/vgpu-dra/claims")),
    )
    d.add_argument("--lib-path", default=_env("VGPU_DRA_LIB_PATH", "/usr/local/vgpu/libvgpu.so"))
    d.add_argument(
        "--preload-path", default=_env("VGPU_DRA_PRELOAD_PATH", "/usr/local/vgpu/ld.so.preload")
    )
    d.add_argument(
        "--node-lock-timeout", type=float, default=float(_env("VGPU_DRA_NODE_LOCK_TIMEOUT", "300"))
    )


def _legacy(ns: argparse.Namespace) -> int:
    if ns.cmd == "extender":
        from vgpu_dra.core.hami.placement_requests import RequestDefaults
        from vgpu_dra.legacy.extender.app import ExtenderSettings, run
        from vgpu_dra.legacy.extender.extender import PlacementSettings

        if bool(ns.cert_file) != bool(ns.key_file):
            raise ValueError("--cert-file and --key-file go together")
        return run(
            ExtenderSettings(
                kubeconfig=ns.kubeconfig,
                bind_address=ns.bind_address,
                port=ns.port,
                cert_file=ns.cert_file,
                key_file=ns.key_file,
                lock_expiry_s=ns.node_lock_timeout,
                placement=PlacementSettings(
                    node_policy=ns.node_scheduler_policy,
                    gpu_policy=ns.gpu_scheduler_policy,
                    defaults=RequestDefaults(
                        gpu_num=ns.default_gpu_num,
                        memory_mib=ns.default_memory,
                        cores=ns.default_cores,
                        memory_factor=ns.memory_factor,
                    ),
                    bind_lock_wait_s=ns.bind_lock_wait,
                ),
            )
        )
    import signal
    import threading

    from vgpu_dra.core.prepare import PrepareSettings
    from vgpu_dra.gpu.backend import open_discoveries
    from vgpu_dra.gpu.nvidia_cdi import DEFAULT_CDI_DIRS, detect_nvidia_cdi_kind
    from vgpu_dra.kube.rest import Rest
    from vgpu_dra.legacy.deviceplugin.plugin import DevicePlugin, DevicePluginSettings

    if not ns.node:
        raise ValueError("--node or $NODE_NAME is required")
    [discovery] = open_discoveries((ns.node,), inventory=ns.inventory, use_nvml=ns.nvml).values()
    plugin = DevicePlugin(
        DevicePluginSettings(
            node_name=ns.node,
            plugin_dir=ns.device_plugin_dir.absolute(),
            default_slots=ns.slots,
            core_scaling=ns.core_scaling,
            memory_scaling=ns.memory_scaling,
            lock_expiry_s=ns.node_lock_timeout,
            prepare=PrepareSettings(
                lib_path=ns.lib_path,
                preload_path=ns.preload_path,
                claims_dir=str(ns.claims_dir),
                nvidia_cdi_kind=detect_nvidia_cdi_kind(DEFAULT_CDI_DIRS),
                default_slots=ns.slots,
            ),
        ),
        Rest.from_kubeconfig(ns.kubeconfig),
        discovery,
    ).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    plugin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
