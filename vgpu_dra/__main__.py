"""`vgpu-dra`: the one console script, a dispatch table and nothing else.

Each subcommand belongs to a module that owns its flags and wiring:
`add_arguments(parser, cmd)` declares the flags (with their environment twins) and
`main(namespace) -> int` runs the command. Only the module of the command being run
is imported, so `vgpu-dra webhook` never loads the node agent (or the dev tools).
Domain errors (ValueError, RuntimeError) exit 2 with `vgpu-dra <cmd>: error: ...`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NamedTuple, Protocol, cast


class Command(NamedTuple):
    module: str
    help: str


# In `vgpu-dra --help` order.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        "vgpu_dra.dev.app",
        "run the driver, node agents and webhook on a local control plane with "
        "simulated nodes; apply deploy/examples and print where they landed",
    ),
    "render-slices": Command(
        "vgpu_dra.render",
        "print the ResourceSlices the controller would publish for a node, without an API server",
    ),
    "render-deviceclasses": Command("vgpu_dra.render", "print one DeviceClass per vendor"),
    "controller": Command("vgpu_dra.controller.app", "publish ResourceSlices for GPU nodes"),
    "kubelet-plugin": Command(
        "vgpu_dra.node_agent.app",
        "node agent: discovery, this node's ResourceSlices and the kubelet DRA plugin",
    ),
    "webhook": Command(
        "vgpu_dra.webhook.app",
        "mutating admission webhook: legacy nvidia.com/gpumem pods -> DRA claims",
    ),
    "translate-pod": Command(
        "vgpu_dra.webhook.app",
        "offline dry run of the webhook: print the mutated pod and its claim templates",
    ),
    "extender": Command(
        "vgpu_dra.legacy.extender.app", "legacy path: kube-scheduler extender (HAMi protocol)"
    ),
    "device-plugin": Command(
        "vgpu_dra.legacy.deviceplugin.app", "legacy path: kubelet device plugin + inventory"
    ),
    "build-control-plane": Command(
        "vgpu_dra.dev.app",
        "build (or find cached) kube-apiserver, "
        "kube-scheduler, kube-controller-manager, kubectl and etcd",
    ),
    "build-helm": Command(
        "vgpu_dra.dev.app", "build (or find cached) the helm binary used by the chart tests"
    ),
    "build-node": Command(
        "vgpu_dra.dev.app",
        "build (or find cached) kubelet, containerd, CNI plugins and the pause/busybox "
        "images of the local real node (needs root's runc and busybox-static)",
    ),
    "build-image": Command(
        "vgpu_dra.dev.app",
        "build (or find cached) the project's image from its Dockerfile with buildah on a "
        "debootstrapped Debian base, as an OCI archive (no registry, no docker)",
    ),
}


class CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser, cmd: str) -> None: ...
    def main(self, ns: argparse.Namespace) -> int: ...


class DevToolsMissingError(RuntimeError):
    """A dev command (demo, build-*) where `vgpu_dra.dev` is not installed (the image)."""


def _module(cmd: str) -> CommandModule:
    try:
        return cast(CommandModule, importlib.import_module(COMMANDS[cmd].module))
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith("vgpu_dra.dev"):
            raise
        raise DevToolsMissingError(
            f"vgpu-dra {cmd}: a development command; `vgpu_dra.dev` is not installed here "
            "(the container image leaves it out): run it from a checkout of the repository"
        ) from None


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `only`, the flags of that one subcommand are declared (and
    its module imported) while the others are listed by name and help alone."""
    p = argparse.ArgumentParser(prog="vgpu-dra", description="DRA driver for shared GPUs")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd, c in COMMANDS.items():
        sp = sub.add_parser(cmd, help=c.help)
        if only is None or only == cmd:
            _module(cmd).add_arguments(sp, cmd)
    return p


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv: the first argument that is not an option (the
    only global option, -v, takes no value)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    cmd = _command(args)
    # An unknown or missing command still gets a full-featured parser: argparse then
    # reports it with the list of valid choices, as before.
    try:
        ns = parser(only=cmd or "").parse_args(args)
    except DevToolsMissingError as e:
        print(e, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _module(ns.cmd).main(ns)
    except (ValueError, RuntimeError) as e:  # domain errors carry actionable messages
        print(f"vgpu-dra {ns.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
