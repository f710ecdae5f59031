"""Enforcement inside a REAL container: libvgpu.so, mounted by the claim's CDI spec and
preloaded through the mounted /etc/ld.so.preload, refuses an allocation above the
claim's memory limit and grants one below it, over the fake CUDA driver carried by
the image (images.hook_image_spec). The limits come from the read-only
/etc/vgpu/limits: a shell started with an empty environment (`env -i`), or with a
forged limit in it, is limited the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import kube
from tests.node import kit
from tests.node.agent import NodeAgent
from vgpu_dra.core import hook_abi
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.images import HARNESS_DIR, hook_image_spec, write_oci_archive
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import Rest

pytestmark = pytest.mark.node

NS = "node-enforce"
REF = "docker.io/library/vgpu-hook-harness:local"
MiB = 1 << 20
OOM = 2
LIMIT_MIB = 3000
ABOVE, BELOW = (LIMIT_MIB + 1000) * MiB, (LIMIT_MIB - 1000) * MiB
HARNESS = f"{HARNESS_DIR}/harness_dl"
OPS = f"init hookinfo alloc:dlsym:mem:{ABOVE} alloc:dlsym:mem:{BELOW}"
SCRIPT = (
    f"echo '--- env'; {HARNESS} {OPS}; "
    f"echo '--- empty'; env -i {HARNESS} {OPS}; "
    # a user who forges the limits in the environment gains nothing
    f"echo '--- forged'; env -i CUDA_DEVICE_MEMORY_LIMIT=64g CUDA_DEVICE_MEMORY_LIMIT_0=64g "
    f"VGPU_LIMITS_FILE=/dev/null {HARNESS} {OPS}; "
    f"echo '{kit.END}'; exec sleep 3600"
)


@pytest.fixture(scope="module")
def hook_image(node: LocalNode, hook_build: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> str:
    archive = tmp_path_factory.mktemp("hook-image") / "harness.tar"
    write_oci_archive(archive, hook_image_spec(REF, Path("/bin/busybox"), hook_build))
    node.import_image(REF, archive)
    return REF


@pytest.fixture(scope="module")
def admin(node_cluster: LocalCluster, node: LocalNode) -> Rest:
    rest = node_cluster.rest()
    kube.namespace(rest, NS)
    return rest


def _section(out: str, name: str) -> list[dict[str, str]]:
    body = out.split(f"--- {name}\n", 1)[1].split("\n--- ", 1)[0]
    return [dict(kv.split("=", 1) for kv in ln.split()) for ln in body.splitlines()
            if ln.startswith("op=")]


def test_libvgpu_enforces_the_claim_limit_in_the_container(
    node_cluster: LocalCluster, admin: Rest, node: LocalNode, running_agent: NodeAgent,
    hook_image: str
) -> None:
    kit.claim_template(admin, NS, "vgpu-3g", {"memory": f"{LIMIT_MIB}Mi", "cores": "30"})
    kit.create(admin, kit.pod("enforce", NS, [kit.container("main", hook_image, SCRIPT)],
                              "vgpu-3g"))
    with kit.deleted_after(admin, NS, "enforce"):
        out = kit.wait_output(node_cluster, admin, NS, "enforce", running_agent)
        for name in ("env", "empty", "forged"):
            ops = _section(out, name)
            assert [o["op"] for o in ops] == ["init", "hookinfo", "alloc", "alloc"], (name, out)
            init, info, above, below = ops
            assert init["rc"] == "0", (name, out)
            # preloaded from the mounted /etc/ld.so.preload, configured by the file
            assert info["hooked"] == "1", (name, out)
            assert info["source"] == str(hook_abi.SOURCE_FILE), (name, out)
            assert info["mem0"] == str(LIMIT_MIB * MiB), (name, out)
            assert info["sm0"] == "30", (name, out)
            assert info["region"] == "/var/lib/vgpu/cache/vgpu.cache", (name, out)
            assert above["rc"] == str(OOM), (name, out)
            assert below["rc"] == "0", (name, out)
