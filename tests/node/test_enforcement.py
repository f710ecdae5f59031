"""Enforcement inside a REAL container: libvgpu.so, mounted by the claim's CDI spec and
preloaded through the mounted /etc/ld.so.preload, refuses an allocation above the
claim's memory limit and grants one below it, over the fake CUDA driver carried by
the image (`hook_image`). The limits come from the read-only /etc/vgpu/limits: a shell
started with an empty environment (`env -i`), or with a forged limit in it, is limited
the same (kit.enforcement_script, kit.check_enforced).
"""

from __future__ import annotations

import pytest

from tests.integration import kube
from tests.node import kit
from tests.node.agent import NodeAgent
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import Rest

pytestmark = pytest.mark.node

NS = "node-enforce"
LIMIT_MIB = 3000


@pytest.fixture(scope="module")
def admin(node_cluster: LocalCluster, node: LocalNode) -> Rest:
    rest = node_cluster.rest()
    kube.namespace(rest, NS)
    return rest


@pytest.mark.versions
def test_libvgpu_enforces_the_claim_limit_in_the_container(
    node_cluster: LocalCluster, admin: Rest, node: LocalNode, running_agent: NodeAgent,
    hook_image: str, capacity_mode: CapacityMode
) -> None:
    kit.claim_template(admin, NS, "vgpu-3g", {"memory": f"{LIMIT_MIB}Mi", "cores": "30"},
                       capacity_mode)
    script = kit.enforcement_script(LIMIT_MIB) + kit.STAY_UP
    kit.create(admin, kit.pod("enforce", NS, [kit.container("main", hook_image, script)],
                              "vgpu-3g"))
    with kit.deleted_after(admin, NS, "enforce"):
        out = kit.wait_output(node_cluster, admin, NS, "enforce", running_agent)
        kit.check_enforced(out, LIMIT_MIB, sm=30)
