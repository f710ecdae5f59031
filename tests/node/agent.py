"""Run the node agent (`vgpu-dra kubelet-plugin`) against a REAL kubelet: its plugin
dirs are the kubelet's own, its CDI dir is the one containerd reads."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.conftest import NODE_AGENT_IDENTITY
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode

DRIVER = "vgpu.hami.io"
REGISTERED = f"kubelet registered plugin {DRIVER}"


class NodeAgent:
    """The agent as a child process. Raises AssertionError (with its log) if it exits
    or the kubelet has not registered it within `timeout` s. `stop()` is idempotent."""

    def __init__(self, cluster: LocalCluster, node: LocalNode, inventory: Path,
                 lib: Path, timeout: float = 60) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="va", dir="/tmp"))
        self.state = self.root / "state"
        self.claims = self.root / "claims"
        self.log = self.root / "agent.log"
        preload = self.root / "ld.so.preload"
        preload.write_text(f"{lib}\n")
        boot_id = self.root / "boot_id"
        boot_id.write_text("4a1e5c0e-0000-4000-8000-0000000000aa\n")
        argv = [
            sys.executable, "-m", "vgpu_dra", "kubelet-plugin",
            "--kubeconfig", str(cluster.kubeconfig_for(NODE_AGENT_IDENTITY)),
            "--inventory", str(inventory), "--node", node.name,
            "--registry-dir", str(node.plugins_registry),
            "--plugins-dir", str(node.plugins_dir),
            "--cdi-dir", str(node.cdi_dir),
            "--state-dir", str(self.state), "--claims-dir", str(self.claims),
            "--lib-path", str(lib), "--preload-path", str(preload),
            "--boot-id-file", str(boot_id),
        ]
        env = dict(os.environ)
        env.pop("VGPU_DRA_TEST_CRASH_AT", None)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while REGISTERED not in self.logs():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the kubelet did not register the agent:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
