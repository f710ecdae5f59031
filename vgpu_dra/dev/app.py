"""The dev-only subcommands: `vgpu-dra demo`, `build-control-plane`, `build-helm`,
`build-node` and `build-image`, with their flags (`add_arguments`) and wiring
(`main`). Never imported by runtime code; the CLI loads this module only when one of
these commands runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root of this package


def cache_root() -> Path:
    """Where built binaries are cached: $VGPU_DRA_CACHE, else $XDG_CACHE_HOME/vgpu-dra
    (XDG's default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("VGPU_DRA_CACHE", str(Path(base) / "vgpu-dra")))


def _add_version_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k8s-version", default=os.environ.get("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION))


def add_arguments(p: argparse.ArgumentParser, cmd: str) -> None:
    if cmd == "build-helm":
        return
    if cmd == "build-image":
        _add_image_arguments(p)
        return
    _add_version_argument(p)
    if cmd == "build-control-plane":
        return
    if cmd == "build-node":
        from vgpu_dra.dev.localnode.build import DEFAULT_CNI, DEFAULT_CONTAINERD

        p.add_argument("--containerd-version", default=DEFAULT_CONTAINERD)
        p.add_argument("--cni-version", default=DEFAULT_CNI)
        return
    p.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="simulated inventory (default: the embedded 2-node demo cluster)",
    )
    p.add_argument(
        "--examples",
        type=Path,
        default=None,
        help="example workloads to apply (default: deploy/examples of this checkout)",
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds each wait of the demo may take"
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep everything running until Ctrl-C and print the kubeconfig",
    )
    p.add_argument(
        "--real-node",
        choices=("auto", "on", "off"),
        default="auto",
        help="run the last node with a real kubelet, containerd and runc, so the examples"
        " placed there really run (needs root and runc; the node build is cached like the"
        " control plane): auto = when this host can, on = or fail, off = never",
    )


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    from vgpu_dra.dev.localnode.project_image import DEFAULT_MIRROR, DEFAULT_SUITE, PROJECT_REF

    p.add_argument("--context", type=Path, default=None,
                   help="the build context: a checkout with the Dockerfile (default: this one)")
    p.add_argument("--ref", default=PROJECT_REF, help="the image name in the archive")
    p.add_argument("--suite", default=DEFAULT_SUITE, help="Debian suite of the bases")
    p.add_argument("--mirror", default=os.environ.get("VGPU_DRA_DEBIAN_MIRROR", DEFAULT_MIRROR),
                   help="Debian mirror debootstrap downloads from")


def _build_image(ns: argparse.Namespace) -> int:
    from vgpu_dra.dev.localnode.project_image import ImageBuildSettings, ensure_project_image

    image = ensure_project_image(
        ImageBuildSettings(context=(ns.context or CHECKOUT).resolve(), cache_root=cache_root(),
                           ref=ns.ref,
                           suite=ns.suite, mirror=ns.mirror)
    )
    print(image.archive)
    return 0


def main(ns: argparse.Namespace) -> int:
    if ns.cmd == "build-image":
        return _build_image(ns)
    if ns.cmd == "build-control-plane":
        from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built

        print(ensure_built(BuildSettings(version=ns.k8s_version, cache_root=cache_root())))
        return 0
    if ns.cmd == "build-helm":
        from vgpu_dra.dev.localcluster.helm import ensure_helm

        print(ensure_helm(cache_root()))
        return 0
    if ns.cmd == "build-node":
        from vgpu_dra.dev.localnode.build import NodeBuildSettings, ensure_node_built

        settings = NodeBuildSettings(
            k8s_version=ns.k8s_version,
            cache_root=cache_root(),
            containerd_version=ns.containerd_version,
            cni_version=ns.cni_version,
        )
        print(ensure_node_built(settings).bin_dir)
        return 0
    from vgpu_dra.dev.demo import DemoSettings, run_demo
    from vgpu_dra.dev.demo_node import RealNodeMode

    return run_demo(
        DemoSettings(
            version=ns.k8s_version,
            cache_root=cache_root(),
            inventory=ns.inventory,
            examples=ns.examples,
            keep=ns.keep,
            timeout_s=ns.timeout,
            real_node=RealNodeMode(ns.real_node),
        ),
        sys.stdout,
    )
