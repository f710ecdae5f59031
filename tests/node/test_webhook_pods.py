"""HAMi-style pods, unchanged, on the REAL node: the webhook (DRA mode) turns
nvidia.com/gpu, gpumem, gpucores and gpumem-percentage into claims from
ResourceClaimTemplates, the real scheduler allocates them from the slices the node
agent published, the real kubelet has the agent prepare them, and containerd applies
the CDI spec. Each test reads the limits from inside the container.

The webhook is registered as in tests/integration/test_webhook.py (URL form, test CA
as caBundle, its own RBAC-limited token), limited to namespaces with its test label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration import kube
from tests.integration.test_webhook import (
    CONFIGS,
    IDENTITY,
    WebhookThread,
    _configuration,
    _namespace,
    _wait_translating,
)
from tests.node import kit
from tests.node.agent import NodeAgent
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import JSON, Rest
from vgpu_dra.serving.https import ServerSettings
from vgpu_dra.webhook.app import WebhookSettings, build_admitter

pytestmark = pytest.mark.node

NS = "node-webhook"
CARD_MIB = 80 * 1024  # a100(): 80Gi


@pytest.fixture(scope="module")
def webhook(node_cluster: LocalCluster, node: LocalNode, agent: NodeAgent,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    """The webhook serving and registered; yields an admin client for NS (labelled)."""
    admin = node_cluster.rest()
    # The percentage translation needs the card models: wait for the agent's slices.
    kube.wait_for(lambda: kit.slices_of(admin, node.name) or None, 60, "the agent's slices")
    pki = make_pki(tmp_path_factory.mktemp("webhook-pki"))
    settings = WebhookSettings(
        server=ServerSettings(
            host="127.0.0.1", port=0, cert_file=pki.serving_cert, key_file=pki.serving_key
        ),
        mode="auto",
        facts_ttl_s=0.5,
    )
    admitter = build_admitter(settings, node_cluster.rest(IDENTITY))
    assert admitter.settings.mode == "dra"
    server = WebhookThread(admitter, settings.server)
    try:
        admin.request("POST", CONFIGS, _configuration(server.port, pki.ca_cert.read_bytes()))
        try:
            _namespace(admin, NS)
            _wait_translating(admin, NS)
            yield admin
        finally:
            admin.request("DELETE", f"{CONFIGS}/vgpu-dra-webhook-test")
    finally:
        server.close()


def _hami_pod(name: str, image: str, limits: dict[str, str], *, script: str = kit.SHOW_LIMITS,
              init: list[JSON] | None = None) -> JSON:
    """What a HAMi user writes: legacy limits on the container, nothing DRA."""
    body = kit.pod(name, NS, [kit.container("main", image, script, limits)],
                   init_containers=init or ())
    return body


def _run(c: LocalCluster, rest: Rest, agent: NodeAgent, body: JSON) -> tuple[JSON, str]:
    """Create `body`; return the pod as admitted and the main container's output."""
    created = kit.create(rest, body)
    name = body["metadata"]["name"]
    # The admitted pod carries no legacy resource, only claims.
    for cont in created["spec"]["containers"] + created["spec"].get("initContainers", []):
        assert not any(k.startswith("nvidia.com/")
                       for k in cont.get("resources", {}).get("limits", {})), cont
    assert created["spec"].get("resourceClaims"), created["spec"]
    return created, kit.wait_output(c, rest, NS, name, agent)


@pytest.mark.versions
def test_gpumem_and_gpucores(node_cluster: LocalCluster, webhook: Rest, node: LocalNode,
                             running_agent: NodeAgent) -> None:
    body = _hami_pod("hami-share", node.artifacts.busybox_ref,
                     {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000",
                      "nvidia.com/gpucores": "30"})
    with kit.deleted_after(webhook, NS, "hami-share"):
        _, out = _run(node_cluster, webhook, running_agent, body)
        env, limits = kit.env_of(out), kit.limits_file_of(out)
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == limits["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
        assert env["CUDA_DEVICE_SM_LIMIT_0"] == limits["CUDA_DEVICE_SM_LIMIT_0"] == "30"
        assert "CUDA_DEVICE_MEMORY_LIMIT_1" not in env, out
        assert len(env["NVIDIA_VISIBLE_DEVICES"].split(",")) == 1, out


def test_gpumem_percentage(node_cluster: LocalCluster, webhook: Rest, node: LocalNode,
                           running_agent: NodeAgent) -> None:
    body = _hami_pod("hami-half", node.artifacts.busybox_ref,
                     {"nvidia.com/gpumem-percentage": "50"})
    with kit.deleted_after(webhook, NS, "hami-half"):
        _, out = _run(node_cluster, webhook, running_agent, body)
        env, limits = kit.env_of(out), kit.limits_file_of(out)
        half = f"{CARD_MIB // 2}m"
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == limits["CUDA_DEVICE_MEMORY_LIMIT_0"] == half
        # no gpucores: HAMi's default (0), which the hook reads as "no SM limit"
        assert env.get("CUDA_DEVICE_SM_LIMIT_0", "0") == limits.get("CUDA_DEVICE_SM_LIMIT_0",
                                                                     "0") == "0", out


INIT_SCRIPT = "env | sort; echo '--- limits'; cat /etc/vgpu/limits; echo '--- end'"


def test_init_containers(node_cluster: LocalCluster, webhook: Rest, node: LocalNode,
                         running_agent: NodeAgent) -> None:
    """HAMi semantics (docs/webhook.md): an init container with a shape of its own gets
    a claim of its own and its own limits; one with the app's shape reuses the app's
    claim (init containers run before the app: max, not sum)."""
    image = node.artifacts.busybox_ref
    app = {"nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}
    init = [
        kit.container("own", image, INIT_SCRIPT, {"nvidia.com/gpumem": "2000",
                                                  "nvidia.com/gpucores": "20"}),
        kit.container("same", image, INIT_SCRIPT, dict(app)),
    ]
    body = _hami_pod("hami-init", image, app, init=init)
    with kit.deleted_after(webhook, NS, "hami-init"):
        created, out = _run(node_cluster, webhook, running_agent, body)
        claims = {rc["name"] for rc in created["spec"]["resourceClaims"]}
        assert len(claims) == 2, created["spec"]["resourceClaims"]

        def uses(c: dict[str, Any]) -> list[str]:
            return [r["name"] for r in c["resources"]["claims"]]

        own, same = created["spec"]["initContainers"]
        assert uses(same) == uses(created["spec"]["containers"][0]) != uses(own)
        app_env = kit.env_of(out)
        assert app_env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m", out
        assert app_env["CUDA_DEVICE_SM_LIMIT_0"] == "30", out
        for name, mem, sm in (("own", "2000m", "20"), ("same", "3000m", "30")):
            log = kit.logs(node_cluster, NS, "hami-init", name)
            env, limits = kit.env_of(log), kit.limits_file_of(log)
            assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == limits["CUDA_DEVICE_MEMORY_LIMIT_0"] == mem
            assert env["CUDA_DEVICE_SM_LIMIT_0"] == sm, log
        pod = webhook.request("GET", kit.pod_path(NS, "hami-init"))
        assert all(s["state"].get("terminated", {}).get("exitCode") == 0
                   for s in pod["status"]["initContainerStatuses"]), pod["status"]


def _cards_by_index(rest: Rest, node: str) -> list[str]:
    """The node's card UUIDs in physical (index) order, from the published slices."""
    cards: dict[int, str] = {}
    for s in kit.slices_of(rest, node):
        for d in s["spec"]["devices"]:
            attrs = d.get("attributes", {})
            uuid, index = attrs.get("uuid", {}).get("string"), attrs.get("index", {}).get("int")
            if uuid is not None and index is not None:
                cards[int(index)] = str(uuid)
    return [cards[i] for i in sorted(cards)]


def test_two_cards_in_physical_order(node_cluster: LocalCluster, webhook: Rest,
                                     node: LocalNode, running_agent: NodeAgent) -> None:
    body = _hami_pod("hami-two", node.artifacts.busybox_ref, {"nvidia.com/gpu": "2"})
    with kit.deleted_after(webhook, NS, "hami-two"):
        _, out = _run(node_cluster, webhook, running_agent, body)
        env, limits = kit.env_of(out), kit.limits_file_of(out)
        whole = f"{CARD_MIB}m"
        for i in (0, 1):
            key = f"CUDA_DEVICE_MEMORY_LIMIT_{i}"
            assert env[key] == limits[key] == whole, out
        assert "CUDA_DEVICE_MEMORY_LIMIT_2" not in env, out
        cards = _cards_by_index(webhook, node.name)
        assert len(cards) == 2, cards
        # limit index i is CUDA ordinal i is the i-th card in PCI (index) order
        assert env["NVIDIA_VISIBLE_DEVICES"].split(",") == cards, (out, cards)
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID", out
