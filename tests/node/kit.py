"""Helpers shared by the node-tier tests: pods on the real node, their logs, claims and
what the agent leaves on the host. Every wait is a bounded poll (tests.integration.kube
.wait_for); nothing sleeps to synchronize.

Pods use imagePullPolicy Never (images are imported from OCI archives: no registry)
and a 1 s grace period, so deleting one takes a few seconds.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from tests.integration import kube
from tests.node.agent import DRIVER, NodeAgent, NodeProcess
from vgpu_dra.api import vgpu_config
from vgpu_dra.core import hook_abi
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.images import HARNESS_DIR
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import JSON, ApiError, Rest

END = "--- end"
# Print the limits a container sees, then stay up: a claim's prepared state lives as
# long as its pod does.
SHOW_LIMITS = (
    "env | sort; echo '--- limits'; cat /etc/vgpu/limits; "
    f"echo '{END}'; exec sleep 3600"
)
# The container edits as the container sees them: env, the limits file, its mount
# (read-only?), whether it can be written, /etc/ld.so.preload and the library it names.
# Checked by `check_edits`; end it with STAY_UP (or more output first).
SHOW_EDITS = (
    "env | sort; "
    "echo '--- limits'; cat /etc/vgpu/limits; "
    "echo '--- mounts'; grep -E ' /etc/vgpu/limits | /etc/ld.so.preload ' /proc/mounts; "
    "if echo x >> /etc/vgpu/limits 2>/dev/null; then echo LIMITS-WRITABLE; "
    "else echo LIMITS-READONLY; fi; "
    "test -f /etc/ld.so.preload && echo PRELOAD=$(cat /etc/ld.so.preload); "
    "test -f \"$(cat /etc/ld.so.preload)\" && echo LIB-PRESENT; "
)
# Stay up: a claim's (or a legacy container's) prepared state lives as long as its pod.
STAY_UP = f"echo '{END}'; exec sleep 3600"

MiB = 1 << 20
OOM = 2  # the harness's rc for CUDA_ERROR_OUT_OF_MEMORY


def enforcement_script(limit_mib: int) -> str:
    """Sections `--- env`, `--- empty`, `--- forged` of `check_enforced`: the harness in
    the hook image (images.hook_image_spec) allocates 1000 MiB above and below
    `limit_mib` through dlsym'd cuMemAlloc, with the container's environment, with an
    empty one (`env -i`: the limits come from /etc/vgpu/limits alone), and with forged
    limits in it (a user gains nothing)."""
    harness = f"{HARNESS_DIR}/harness_dl"
    ops = (f"init hookinfo alloc:dlsym:mem:{(limit_mib + 1000) * MiB} "
           f"alloc:dlsym:mem:{(limit_mib - 1000) * MiB}")
    return (
        f"echo '--- env'; {harness} {ops}; "
        f"echo '--- empty'; env -i {harness} {ops}; "
        "echo '--- forged'; env -i CUDA_DEVICE_MEMORY_LIMIT=64g CUDA_DEVICE_MEMORY_LIMIT_0=64g "
        f"VGPU_LIMITS_FILE=/dev/null {harness} {ops}; "
    )


def _section(out: str, name: str) -> list[dict[str, str]]:
    body = out.split(f"--- {name}\n", 1)[1].split("\n--- ", 1)[0]
    return [dict(kv.split("=", 1) for kv in ln.split()) for ln in body.splitlines()
            if ln.startswith("op=")]


def check_enforced(out: str, limit_mib: int, sm: int) -> None:
    """libvgpu.so, preloaded from the mounted /etc/ld.so.preload and configured by the
    limits file, refused the allocation above `limit_mib` and granted the one below, in
    every section of `enforcement_script`'s output."""
    for name in ("env", "empty", "forged"):
        ops = _section(out, name)
        assert [o["op"] for o in ops] == ["init", "hookinfo", "alloc", "alloc"], (name, out)
        init, info, above, below = ops
        assert init["rc"] == "0", (name, out)
        assert info["hooked"] == "1", (name, out)
        assert info["source"] == str(hook_abi.SOURCE_FILE), (name, out)
        assert info["mem0"] == str(limit_mib * MiB), (name, out)
        assert info["sm0"] == str(sm), (name, out)
        assert info["region"] == "/var/lib/vgpu/cache/vgpu.cache", (name, out)
        assert above["rc"] == str(OOM), (name, out)
        assert below["rc"] == "0", (name, out)


def check_edits(logs: str, memory: str = "3000m", sm: str = "30") -> None:
    """SHOW_EDITS' output: the memory and SM limits in the env and in the limits file,
    that file mounted read-only and not writable, the preload file and its library."""
    env = dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)
    assert env.get("CUDA_DEVICE_MEMORY_LIMIT_0") == memory, logs
    assert re.search(rf"^CUDA_DEVICE_SM_LIMIT(_0)?={sm}$", logs, re.MULTILINE), logs
    limits = logs.split("--- limits\n", 1)[1].split("--- mounts", 1)[0]
    assert f"CUDA_DEVICE_MEMORY_LIMIT_0={memory}" in limits, logs
    mounts = logs.split("--- mounts\n", 1)[1].splitlines()
    limits_mount = [m for m in mounts if " /etc/vgpu/limits " in m]
    assert limits_mount and "ro" in limits_mount[0].split()[3].split(","), logs
    assert any(" /etc/ld.so.preload " in m for m in mounts), logs
    assert "LIMITS-READONLY" in logs and "LIMITS-WRITABLE" not in logs, logs
    assert "PRELOAD=/" in logs and "LIB-PRESENT" in logs, logs


def pod_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods" + (f"/{name}" if name else "")


def container(name: str, image: str, script: str, limits: dict[str, str] | None = None) -> JSON:
    c: JSON = {"name": name, "image": image, "imagePullPolicy": "Never",
               "command": ["sh", "-c", script]}
    if limits:
        c["resources"] = {"limits": dict(limits)}
    return c


def pod(name: str, ns: str, containers: Sequence[JSON], claim_template: str | None = None,
        init_containers: Sequence[JSON] = ()) -> JSON:
    """A restartPolicy Never pod; with `claim_template`, every container uses the claim."""
    spec: JSON = {"restartPolicy": "Never", "containers": list(containers),
                  "terminationGracePeriodSeconds": 1}
    if init_containers:
        spec["initContainers"] = list(init_containers)
    if claim_template:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": claim_template}]
        for c in containers:
            c.setdefault("resources", {})["claims"] = [{"name": "gpu"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def create(rest: Rest, body: JSON) -> JSON:
    md = body["metadata"]
    return rest.request("POST", pod_path(md["namespace"]), body)


def ended(rest: Rest, ns: str, name: str) -> str | None:
    """The pod's phase once it is Succeeded or Failed, else None."""
    got = rest.request("GET", pod_path(ns, name))
    phase = got.get("status", {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def logs(c: LocalCluster, ns: str, name: str, container_name: str = "") -> str:
    """Served by the kubelet (the API server dials the node's InternalIP); "" if none."""
    args = ["logs", "-n", ns, name] + (["-c", container_name] if container_name else [])
    return c.kubectl(*args, check=False)


def gone(rest: Rest, path: str) -> bool:
    try:
        rest.request("GET", path)
    except ApiError as e:
        if e.not_found:
            return True
        raise
    return False


def delete_pod(rest: Rest, ns: str, name: str, timeout: float = 90) -> None:
    """Delete and wait until the object is gone: the kubelet removes it only once the
    containers stopped, the sandbox is torn down and its claims are unprepared."""
    path = pod_path(ns, name)
    with contextlib.suppress(ApiError):
        rest.request("DELETE", path, {"gracePeriodSeconds": 1})
    kube.wait_for(lambda: gone(rest, path), timeout, f"pod {ns}/{name} to be deleted")


@contextlib.contextmanager
def deleted_after(rest: Rest, ns: str, *names: str) -> Iterator[None]:
    """Delete pods `names` (waiting for each) when the block ends, however it ends."""
    try:
        yield
    finally:
        for n in names:
            delete_pod(rest, ns, n)


def wait_output(c: LocalCluster, rest: Rest, ns: str, name: str, agent: NodeProcess | None = None,
                container_name: str = "", marker: str = END, timeout: float = 120) -> str:
    """The container's log once it printed `marker`; fails (with the pod's status and
    the agent's log) if the pod ends first or the deadline passes."""

    def printed() -> str | None:
        if ended(rest, ns, name):
            raise AssertionError(f"pod {name} ended:\n{logs(c, ns, name, container_name)}")
        out = logs(c, ns, name, container_name)
        return out if marker in out else None

    try:
        return kube.wait_for(printed, timeout, f"pod {name} to print {marker!r}", poll=0.5)
    except AssertionError as e:
        status = rest.request("GET", pod_path(ns, name)).get("status")
        extra = f"\n--- agent:\n{agent.logs()}" if agent else ""
        raise AssertionError(f"{e}\n--- status: {status}{extra}") from None


def env_of(output: str) -> dict[str, str]:
    """KEY=VALUE lines of `env | sort` output (the first occurrence wins)."""
    env: dict[str, str] = {}
    for line in output.split("--- limits", 1)[0].splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env.setdefault(k, v)
    return env


def limits_file_of(output: str) -> dict[str, str]:
    """KEY=VALUE lines of the /etc/vgpu/limits section of SHOW_LIMITS output."""
    section = output.split("--- limits\n", 1)[1].split(END, 1)[0]
    return dict(ln.split("=", 1) for ln in section.splitlines() if "=" in ln and ln[0] != "#")


def claim_template(rest: Rest, ns: str, name: str, capacity: dict[str, str],
                   mode: CapacityMode = CapacityMode.CONSUMABLE) -> None:
    """A ResourceClaimTemplate for one share of class nvidia.vgpu.hami.io (idempotent).
    `capacity` ({"memory": "3000Mi", "cores": "30"}) is what the share gets: consumable
    capacity requests, or in replicas mode (no capacity to request) a VGpuConfig, as
    the webhook writes it (docs/webhook.md)."""
    exactly: JSON = {"deviceClassName": "nvidia.vgpu.hami.io"}
    devices: JSON = {"requests": [{"name": "gpu", "exactly": exactly}]}
    if mode is CapacityMode.CONSUMABLE:
        exactly["capacity"] = {"requests": capacity}
    else:
        params: JSON = {"apiVersion": vgpu_config.API_VERSION, "kind": vgpu_config.KIND}
        if "memory" in capacity:
            params["memory"] = capacity["memory"]
        if "cores" in capacity:
            params["cores"] = int(capacity["cores"])
        devices["config"] = [{"requests": ["gpu"],
                              "opaque": {"driver": DRIVER, "parameters": params}}]
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"spec": {"devices": devices}},
    }
    try:
        rest.request("POST", f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates",
                     body)
    except ApiError as e:
        if not e.already_exists:
            raise


def claims_of(rest: Rest, ns: str, name: str) -> list[JSON] | None:
    """The pod's generated claims once the resourceclaim controller named all of them."""
    got = rest.request("GET", pod_path(ns, name))
    wanted = len(got["spec"].get("resourceClaims", []))
    statuses = got.get("status", {}).get("resourceClaimStatuses", [])
    names = [s.get("resourceClaimName") for s in statuses]
    if wanted == 0 or len(names) < wanted or not all(names):
        return None
    return [rest.request("GET", f"{kube.CLAIMS.format(ns=ns)}/{n}") for n in names]


def claim_of(rest: Rest, ns: str, name: str) -> JSON | None:
    got = claims_of(rest, ns, name)
    return got[0] if got else None


def leftovers(node: LocalNode, agent: NodeAgent, uid: str) -> list[str]:
    """What the agent still holds for claim `uid`: CDI spec, claim dir, checkpoint entry."""
    found = [str(p) for p in node.cdi_dir.glob(f"*{uid}*")]
    if (agent.claims / uid).exists():
        found.append(str(agent.claims / uid))
    ckpt = agent.state / "checkpoint.json"
    if ckpt.exists() and uid in ckpt.read_text():
        found.append(f"{ckpt} entry")
    return found


def wait_unprepared(node: LocalNode, agent: NodeAgent, uid: str, timeout: float = 60) -> None:
    kube.wait_for(lambda: not leftovers(node, agent, uid) or None, timeout,
                  f"claim {uid} to be unprepared")


def slices_of(rest: Rest, node: str, driver: str = "vgpu.hami.io") -> list[Any]:
    got = rest.request("GET", "/apis/resource.k8s.io/v1/resourceslices",
                       query=[("fieldSelector", f"spec.nodeName={node}")])
    return [s for s in got.get("items", []) if s["spec"]["driver"] == driver]
