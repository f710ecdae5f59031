"""The demo's real node: one demo node gets a real kubelet + containerd + runc
(`LocalNode`) instead of the imitation kubelet, so the example workloads placed on it
really run and print what they see.

`--real-node auto` (the default) uses it when this host can: root, runc on PATH, the
node build cached under ~/.cache/vgpu-dra/ or buildable (built here with progress, as
`vgpu-dra build-node` does), libvgpu.so built from vgpu_hook/, and no other local node
running on the host (`LocalNode` allows one per host). Otherwise it says why in one
line and every node keeps the imitation kubelet. `on` insists (and waits for another
local node to stop), `off` never tries.

There is no registry here: on the real node the example containers run the node's
busybox image (imported from an OCI archive) with `SHOW`, a script that prints the
limits environment, /etc/vgpu/limits and /etc/ld.so.preload, then stays up (a claim's
prepared state lives as long as its pod). `rewrite_for_real_node` makes that change
to the example manifests before they are applied.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TextIO

from vgpu_dra.dev.localcluster.build import BuildError
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.build import NodeArtifacts, NodeBuildSettings, ensure_node_built
from vgpu_dra.dev.localnode.node import HostBusyError, LocalNode, NodeError, NodeSettings
from vgpu_dra.kube.rest import JSON, ApiError, Rest

END = "--- end"
# What a container on the real node prints, one line each: the limit variables of its
# environment, the limits file and the preload (values hold no spaces).
SHOW = (
    "words() { tr '\\n' ' ' | sed 's/ *$//'; }; "
    "echo \"env: $(env | grep -E '^(CUDA|NVIDIA|VGPU|GPU)_' | sort | words)\"; "
    "if [ -f /etc/vgpu/limits ]; then "
    "echo \"/etc/vgpu/limits: $(grep -v '^#' /etc/vgpu/limits | words)\"; "
    "else echo '/etc/vgpu/limits: (none)'; fi; "
    "if [ -f /etc/ld.so.preload ]; then lib=$(cat /etc/ld.so.preload); "
    'if [ -f "$lib" ]; then echo "/etc/ld.so.preload: $lib (present)"; '
    'else echo "/etc/ld.so.preload: $lib (missing)"; fi; '
    "else echo '/etc/ld.so.preload: (none)'; fi; "
    f"echo '{END}'; exec sleep 3600"
)
REGISTERED = "kubelet registered plugin"  # the node agent's log line


class RealNodeMode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class RealNodeUnavailableError(Exception):
    """Why this host cannot run the demo's real node, in one line."""


@dataclass(frozen=True)
class NodeKit:
    """What a real demo node needs: the node build and libvgpu.so (which the node
    agent's CDI specs mount into the containers, with an /etc/ld.so.preload naming it)."""

    artifacts: NodeArtifacts
    lib: Path


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def build_kit(
    version: str, cache_root: Path, hook_dir: Path, progress: TextIO, is_root: bool
) -> NodeKit:
    """The node build (built now, with progress on `progress`, when not cached) and
    libvgpu.so (`make`). Raises RealNodeUnavailableError with the reason."""
    if not is_root:
        raise RealNodeUnavailableError("not root (a kubelet, containerd and runc need root)")
    try:
        artifacts = ensure_node_built(
            NodeBuildSettings(k8s_version=version, cache_root=cache_root), progress
        )
    except BuildError as e:
        raise RealNodeUnavailableError(f"no node build: {first_line(e)}") from None
    r = subprocess.run(
        ["make", "-s", "-C", str(hook_dir), "build/libvgpu.so"],
        capture_output=True,
        text=True,
        check=False,
    )
    lib = hook_dir / "build" / "libvgpu.so"
    if r.returncode != 0 or not lib.is_file():
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RealNodeUnavailableError(f"libvgpu.so did not build (make -C {hook_dir}): {tail[0]}")
    return NodeKit(artifacts, lib)


def start_node(
    cluster: LocalCluster, kit: NodeKit, name: str, insist: bool, say: Callable[[str], None]
) -> LocalNode:
    """A Ready LocalNode `name`. Raises RealNodeUnavailableError when another local node holds the
    host (unless `insist`: then it says so and waits) or the node fails to start."""
    try:
        return _started(LocalNode(cluster, kit.artifacts, NodeSettings(name, wait_for_host=False)))
    except HostBusyError as e:
        if not insist:
            raise RealNodeUnavailableError(str(e)) from None
        say(f"   {e}: waiting for it to stop")
    return _started(LocalNode(cluster, kit.artifacts, NodeSettings(name)))


def _started(node: LocalNode) -> LocalNode:
    try:
        node.start()  # undoes itself on failure
    except HostBusyError:
        raise
    except NodeError as e:
        raise RealNodeUnavailableError(f"the node did not start: {first_line(e)}") from e
    return node


def wind_down(rest: Rest, node: LocalNode, namespace: str) -> None:
    """Stop `node` the way that leaves nothing behind: first no Deployment of
    `namespace` may recreate pods, then `LocalNode.stop` deletes the node's pods (the
    kubelet unprepares their claims through the node agent, which must still run)."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    with contextlib.suppress(ApiError):
        for d in rest.get(path).get("items", []):
            scale = f"{path}/{d['metadata']['name']}/scale"
            with contextlib.suppress(ApiError):
                body = rest.get(scale)
                body["spec"]["replicas"] = 0
                rest.request("PUT", scale, body)
    node.stop()


def _containers(spec: JSON, image: str) -> None:
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            c["image"] = image
            c["imagePullPolicy"] = "Never"
            c["command"] = ["sh", "-c", SHOW]
            c.pop("args", None)
    spec["terminationGracePeriodSeconds"] = 1


def rewrite_for_real_node(docs: Iterable[JSON], image: str) -> list[JSON]:
    """The example manifests with every Pod's and Deployment's containers running
    `image` (never pulled) with `SHOW`; other objects unchanged. Pure: copies."""
    out: list[JSON] = []
    for d in docs:
        d = copy.deepcopy(d)
        if d.get("kind") == "Pod":
            _containers(d.setdefault("spec", {}), image)
        elif d.get("kind") == "Deployment":
            _containers(d["spec"]["template"].setdefault("spec", {}), image)
        out.append(d)
    return out


def printed_lines(log: str) -> tuple[str, ...] | None:
    """What `SHOW` printed (without the end marker), or None before it finished."""
    lines = log.splitlines()
    if END not in lines:
        return None
    return tuple(lines[: lines.index(END)])


def printed_env(lines: Sequence[str]) -> dict[str, str]:
    """The `env:` line of `SHOW`'s output as a mapping."""
    env: dict[str, str] = {}
    for ln in lines:
        if ln.startswith("env:"):
            for word in ln.removeprefix("env:").split():
                k, _, v = word.partition("=")
                env[k] = v
    return env


def _log(rest: Rest, ns: str, pod: str, container: str) -> str:
    try:
        # The log endpoint answers text/plain but refuses that Accept header (406).
        path = f"/api/v1/namespaces/{ns}/pods/{pod}/log?container={container}"
        return rest.get_text(path, accept="*/*")
    except ApiError:
        return ""  # not started yet


def _waiting(rest: Rest, ns: str, pod: str) -> str:
    """Why a pod's containers do not run yet (its waiting reasons, or its phase)."""
    try:
        got = rest.get(f"/api/v1/namespaces/{ns}/pods/{pod}")
    except ApiError as e:
        return first_line(e)
    status = got.get("status", {})
    why = [
        f"{s['name']}: {w.get('reason', '?')} {w.get('message', '')}".strip()
        for s in status.get("containerStatuses") or []
        if (w := s.get("state", {}).get("waiting"))
    ]
    return "; ".join(why) or f"phase {status.get('phase', '?')}"


def outputs(
    rest: Rest,
    ns: str,
    containers: Sequence[tuple[str, str]],
    timeout: float,
    check: Callable[[], None],
) -> tuple[dict[tuple[str, str], tuple[str, ...]], dict[tuple[str, str], str]]:
    """Poll the logs of (pod, container)s, served by the real kubelet, until each
    printed `SHOW`'s output or `timeout` passes. Returns (what each printed, why each
    of the others did not)."""
    got: dict[tuple[str, str], tuple[str, ...]] = {}
    deadline = time.monotonic() + timeout
    while True:
        check()
        for pod, c in containers:
            if (pod, c) in got:
                continue
            lines = printed_lines(_log(rest, ns, pod, c))
            if lines is not None:
                got[(pod, c)] = lines
        if len(got) == len(containers) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = {
        k: f"printed nothing within {timeout:g}s: {_waiting(rest, ns, k[0])}"
        for k in containers
        if k not in got
    }
    return got, missing
