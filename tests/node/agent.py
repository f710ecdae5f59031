"""Run the node agent against a REAL kubelet, in either mode: DRA (`vgpu-dra
kubelet-plugin`, `NodeAgent`: its plugin dirs are the kubelet's own, its CDI dir is the
one containerd reads) or legacy (`vgpu-dra device-plugin`, `DevicePluginProcess`:
registered on the kubelet's device plugin socket). Both are `NodeProcess`es."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from tests.integration.conftest import NODE_AGENT_IDENTITY
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode

DRIVER = "vgpu.hami.io"
REGISTERED = "kubelet registered plugin"


class NodeProcess:
    """One of our processes as a child, logging to `log` in a private dir `root` that
    survives restarts (as a DaemonSet's hostPath would).

    `start()` returns once the process logged `marker` once more than before (so a
    restart waits for its own line); it raises AssertionError with the log if the
    process exits or `timeout` s pass. `stop()` is idempotent (SIGTERM, then SIGKILL
    after 20 s); `cleanup()` also removes the dir.
    """

    def __init__(self, root: Path, log: Path, argv: list[str], marker: str) -> None:
        self.root = root
        self.log = log
        self.argv = argv
        self.marker = marker
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Self:
        before = self._full_log().count(self.marker)
        env = dict(os.environ)
        env.pop("VGPU_DRA_TEST_CRASH_AT", None)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self._full_log().count(self.marker) <= before:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                what = " ".join(self.argv[2:4])  # "vgpu_dra <subcommand>"
                raise AssertionError(f"{what} did not come up ({self.marker!r}):\n{self.logs()}")
            time.sleep(0.1)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _full_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def logs(self) -> str:
        return self._full_log()[-6000:]

    def kill(self, sig: signal.Signals) -> int:
        """Send `sig` and wait for the exit (at most 20 s); returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _preload(root: Path, lib: Path) -> Path:
    """The host file mounted as the container's /etc/ld.so.preload: `lib`'s path."""
    preload = root / "ld.so.preload"
    preload.write_text(f"{lib}\n")
    return preload


class NodeAgent(NodeProcess):
    """`vgpu-dra kubelet-plugin`; state and claims under `root`.

    `start()` returns once the kubelet registered this process (a new "kubelet
    registered plugin" log line) or, with `register=False` (plugin dirs of its own,
    no kubelet), once it logged that it is up.
    """

    def __init__(self, cluster: LocalCluster, node: LocalNode, inventory: Path, lib: Path, *,
                 kubeconfig: Path | None = None, node_name: str | None = None,
                 instance_id: str = "", driver: str = DRIVER, register: bool = True,
                 root: Path | None = None, extra_args: Sequence[str] = ()) -> None:
        root = root or Path(tempfile.mkdtemp(prefix="va", dir="/tmp"))
        self.inventory = inventory
        self.state = root / "state"
        self.claims = root / "claims"
        self.register = register
        self.instance_id = instance_id
        boot_id = root / "boot_id"
        boot_id.write_text("4a1e5c0e-0000-4000-8000-0000000000aa\n")
        registry, plugins = node.plugins_registry, node.plugins_dir
        if not register:
            registry, plugins = root / "registry", root / "plugins"
        self.registry, self.driver = registry, driver
        argv = [
            sys.executable, "-m", "vgpu_dra", "kubelet-plugin",
            "--kubeconfig", str(kubeconfig or cluster.kubeconfig_for(NODE_AGENT_IDENTITY)),
            "--inventory", str(inventory), "--node", node_name or node.name,
            "--registry-dir", str(registry), "--plugins-dir", str(plugins),
            "--cdi-dir", str(node.cdi_dir),
            "--state-dir", str(self.state), "--claims-dir", str(self.claims),
            "--lib-path", str(lib), "--preload-path", str(_preload(root, lib)),
            "--boot-id-file", str(boot_id), "--driver-name", driver,
            *(["--instance-id", instance_id] if instance_id else []),
            *extra_args,
        ]
        log = root / (f"agent-{instance_id}.log" if instance_id else "agent.log")
        super().__init__(root, log, argv, REGISTERED if register else "node agent for")

    @property
    def registration_socket(self) -> Path:
        """Where this agent's registration socket is (named after its instance id)."""
        infix = f"-{self.instance_id}" if self.instance_id else ""
        return self.registry / f"{self.driver}{infix}-reg.sock"

    def registrations(self) -> int:
        """How often the kubelet registered this agent (all its runs)."""
        return self._full_log().count(REGISTERED)


class DevicePluginProcess(NodeProcess):
    """`vgpu-dra device-plugin` (legacy mode) on the kubelet's device plugin socket,
    with the node agent's identity (deploy/legacy/rbac-node-agent.yaml applied) and
    per-container dirs under `claims`. `start()` returns once the kubelet accepted its
    registration of `resource` (it has published the node's inventory annotation
    before registering)."""

    def __init__(self, cluster: LocalCluster, node: LocalNode, inventory: Path, lib: Path,
                 resource: str = "nvidia.com/gpu") -> None:
        root = Path(tempfile.mkdtemp(prefix="vd", dir="/tmp"))
        self.claims = root / "claims"
        argv = [
            sys.executable, "-m", "vgpu_dra", "device-plugin",
            "--kubeconfig", str(cluster.kubeconfig_for(NODE_AGENT_IDENTITY)),
            "--inventory", str(inventory), "--node", node.name,
            "--device-plugin-dir", str(node.device_plugins_dir),
            "--claims-dir", str(self.claims),
            "--lib-path", str(lib), "--preload-path", str(_preload(root, lib)),
        ]
        super().__init__(root, root / "device-plugin.log", argv,
                         f"registered {resource} with kubelet")
