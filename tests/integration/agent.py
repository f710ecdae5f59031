"""Run the node agent (`vgpu-dra kubelet-plugin`) as a real child process."""

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
from tests.kubelet_client import KubeletClient
from vgpu_dra.dev.localcluster.cluster import LocalCluster

DRIVER = "vgpu.hami.io"


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


class AgentDirs:
    """Host paths of one agent, under a short /tmp dir (unix sockets: 108 bytes)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vk", dir="/tmp"))
        self.registry = self.root / "reg"
        self.plugins = self.root / "plugins"
        self.cdi = self.root / "cdi"
        self.state = self.root / "state"
        self.claims = self.root / "claims"
        self.boot_id = self.root / "boot_id"
        self.boot_id.write_text("4a1e5c0e-0000-4000-8000-000000000001\n")
        self.log = self.root / "agent.log"

    @property
    def registration_socket(self) -> Path:
        return self.registration_socket_of("")

    def registration_socket_of(self, instance_id: str) -> Path:
        infix = f"-{instance_id}" if instance_id else ""
        return self.registry / f"{DRIVER}{infix}-reg.sock"

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Agent:
    def __init__(self, cluster: LocalCluster, inventory: Path, node: str, dirs: AgentDirs,
                 crash_at: str | None = None, extra: tuple[str, ...] = (),
                 instance_id: str = "") -> None:
        env = dict(os.environ)
        env.pop("VGPU_DRA_TEST_CRASH_AT", None)
        if crash_at:
            env["VGPU_DRA_TEST_CRASH_AT"] = crash_at
        argv = [
            sys.executable, "-m", "vgpu_dra", "kubelet-plugin",
            "--kubeconfig", str(cluster.kubeconfig_for(NODE_AGENT_IDENTITY)),
            "--inventory", str(inventory), "--node", node,
            "--registry-dir", str(dirs.registry), "--plugins-dir", str(dirs.plugins),
            "--cdi-dir", str(dirs.cdi), "--state-dir", str(dirs.state),
            "--claims-dir", str(dirs.claims), "--boot-id-file", str(dirs.boot_id),
            "--health-interval-seconds", "0.2", "--instance-id", instance_id, *extra,
        ]
        socket = dirs.registration_socket_of(instance_id)
        self.dirs = dirs
        # A SIGKILLed predecessor leaves its socket file behind: wait for a new one.
        stale = _inode(dirs.registration_socket_of(instance_id))
        with dirs.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while _inode(socket) in (None, stale):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent did not come up:\n{self.logs()}")
            time.sleep(0.05)
        self.client = KubeletClient(socket, DRIVER)
        self.client.register()

    def logs(self) -> str:
        return self.dirs.log.read_text(errors="replace")[-4000:]

    def wait_dead(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
