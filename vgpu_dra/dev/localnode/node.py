"""A real node for a LocalCluster: containerd + runc + CNI bridge + kubelet on this host.

Everything lives under one short private dir (/tmp/vn*: unix socket paths must stay
under 108 bytes): containerd's root, state, socket and config; the CNI config and IPAM
state; the CDI spec dir containerd reads (`cdi_dir`, hand it to the node agent as
--cdi-dir); the kubelet's root dir (`kubelet_root`: its plugins_registry and plugins
dirs are where a DRA driver registers), pod logs and config. One host path is the
kubelet's whatever its root dir: the device plugin dir /var/lib/kubelet/device-plugins
(`device_plugins_dir`, compiled into the kubelet), so one LocalNode runs at a time:
start() waits for an exclusive lock on the host (`HOST_LOCK`) that stop() releases
(with `wait_for_host=False` it raises `HostBusyError` instead of waiting; a second
LocalNode of the same process would wait for itself: its start() raises NodeError).
Containers land in the cgroup-v1 subtree /<cgroup_root> of every hierarchy; pods get
10.88.x.0/24 addresses on a bridge of their own (no iptables here: ipMasq off, so pods
reach only the host).

Host constraints this encodes (measured on the CI machine): root lacks
CAP_SYS_RESOURCE, so containerd must not hand out negative oom_score_adj values
(`restrict_oom_score_adj`); cgroup v1 and no systemd (`failCgroupV1: false`,
`cgroupDriver: cgroupfs`); no registry (images are imported from OCI archives, pods
must use `imagePullPolicy: Never`).

The kubelet runs with the cluster's feature gates (`ClusterSettings.feature_gates`).

The kubelet authenticates as `system:node:<name>` in group `system:nodes` (a token of
the cluster's token file: start the cluster with `node_identity(name)` in its
identities); the API server runs the Node authorizer, so that identity gets exactly
what a production kubelet gets. The API server reaches the kubelet (logs, exec) at
<host IP>:<port> (the kubelet refuses a loopback node IP): start the cluster with
`APISERVER_ARGS` so it dials the InternalIP, not the unresolvable node name. The
kubelet allows anonymous requests (AlwaysAllow) and binds to that one address.

Contract: `start()` returns once the Node is Ready and its not-ready taint is gone;
otherwise it raises `NodeError` with the failing component's log tail (or the
API server's `ApiError`), after undoing
whatever it started. `stop()` is idempotent and never raises: it deletes the pods
bound to the node (so the kubelet unprepares their claims and tears down sandboxes),
stops the kubelet, kills any container left, stops containerd and its shims, unmounts
every mount under the private dir, removes the cgroups, the bridge, the kubelet's files
in the device plugin dir and the private dir.
kubelet and containerd die with the process that started them (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from vgpu_dra.dev.localcluster.cluster import Identity, LocalCluster, free_port, log_tail
from vgpu_dra.dev.localnode.build import NodeArtifacts
from vgpu_dra.kube.rest import ApiError, Rest

# Give these to ClusterSettings(extra_apiserver_args=...) for pods/log and exec.
APISERVER_ARGS = ("--kubelet-preferred-address-types=InternalIP",)
NOT_READY_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
DEVICE_PLUGINS_DIR = Path("/var/lib/kubelet/device-plugins")  # k8s.io/kubelet DevicePluginPath
HOST_LOCK = Path("/run/lock/vgpu-dra-localnode.lock")  # held from start() to stop()
_CGROUP_FS = Path("/sys/fs/cgroup")
_MNT_DETACH = 2
_RUNNING_HERE: set[int] = set()  # id() of this process's started LocalNodes
_PR_SET_PDEATHSIG = 1


class NodeError(RuntimeError):
    """containerd or the kubelet failed to start; the message carries the log tail."""


class HostBusyError(NodeError):
    """Another LocalNode holds the host (`HOST_LOCK`) and settings said not to wait."""


def node_identity_name(node: str) -> str:
    """The LocalCluster identity key (kubeconfig name) of node `node`'s kubelet."""
    return f"node-{node}"


def node_identity(node: str) -> Identity:
    """What a kubelet's client certificate would say: user system:node:<name>."""
    return Identity(f"system:node:{node}", ("system:nodes",))


@dataclass(frozen=True)
class NodeSettings:
    name: str = "vgpu-node-0"
    start_timeout_s: float = 180.0
    stop_timeout_s: float = 90.0
    keep_work_dir: bool = False
    # False: start() raises HostBusyError at once when another LocalNode holds the host.
    wait_for_host: bool = True


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGKILL it when the
    # thread that started it dies, so a killed test session leaves no kubelet behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _wait(pred: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise NodeError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs()}")


def host_ip() -> str:
    """The source address of the default route (no packet is sent). The kubelet refuses
    a loopback node IP, and the API server dials the node's InternalIP. Raises NodeError
    without a default route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # TEST-NET-2: routed by default, never local
        except OSError as e:
            raise NodeError(f"no default IPv4 route to pick a node IP from: {e}") from e
        return str(s.getsockname()[0])


def _mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first (mountinfo octal escapes decoded)."""
    found: list[Path] = []
    prefix = str(root).rstrip("/") + "/"
    with Path("/proc/self/mountinfo").open(encoding="utf-8", errors="replace") as f:
        for line in f:
            raw = line.split()[4]
            point = raw.encode().decode("unicode_escape")
            if point == str(root) or point.startswith(prefix):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _umount(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(os.fsencode(path), _MNT_DETACH)


def _kill_pids(pids: Iterator[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class LocalNode:
    """See the module docstring. Use as a context manager or call start()/stop()."""

    def __init__(
        self, cluster: LocalCluster, artifacts: NodeArtifacts, settings: NodeSettings | None = None
    ) -> None:
        self.cluster = cluster
        self.artifacts = artifacts
        self.settings = settings or NodeSettings()
        self.name = self.settings.name
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.dir = Path()
        self._owned_dir = False
        tag = secrets.token_hex(3)
        self.bridge = f"vgpu{tag}"  # IFNAMSIZ: at most 15 characters
        self.network = f"vgpu-local-{tag}"
        self.cgroup_root = f"vgpu-node-{tag}"
        self.subnet = f"10.88.{int(tag[:2], 16)}.0/24"
        self.kubelet_port = 0
        self.kubelet_healthz_port = 0
        self.node_ip = ""
        self._kubelet_argv: list[str] = []
        self._host_lock: int | None = None

    # ---- paths -----------------------------------------------------------------------
    @property
    def containerd_socket(self) -> Path:
        return self.dir / "c.sock"

    @property
    def cdi_dir(self) -> Path:
        return self.dir / "cdi"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kl"

    @property
    def plugins_registry(self) -> Path:
        return self.kubelet_root / "plugins_registry"

    @property
    def plugins_dir(self) -> Path:
        return self.kubelet_root / "plugins"

    @property
    def device_plugins_dir(self) -> Path:
        """Where the kubelet serves its device plugin Registration socket (kubelet.sock)
        and where a device plugin puts its own (hand it to `vgpu-dra device-plugin` as
        --device-plugin-dir). Not under `kubelet_root`: the kubelet uses the device
        plugin API's fixed path whatever its --root-dir."""
        return DEVICE_PLUGINS_DIR

    @property
    def pod_logs_dir(self) -> Path:
        return self.dir / "podlogs"

    # ---- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        ident = node_identity_name(self.name)
        if ident not in self.cluster.tokens:
            raise NodeError(
                f"the cluster has no identity {ident!r}: start it with "
                f"identities={{{ident!r}: node_identity({self.name!r})}}"
            )
        # One LocalNode per host at a time (the device plugin dir is fixed, and two
        # kubelets would fight over it): a second one, from another test session on
        # the same machine, waits here until the first one's stop(). One of this
        # process would wait forever (flock: a new open file description).
        if _RUNNING_HERE:
            raise NodeError("this process runs a LocalNode already (one per host): stop it "
                            "before starting another")
        _RUNNING_HERE.add(id(self))
        HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
        self._host_lock = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            wait = 0 if self.settings.wait_for_host else fcntl.LOCK_NB
            fcntl.flock(self._host_lock, fcntl.LOCK_EX | wait)
        except BlockingIOError:
            os.close(self._host_lock)
            self._host_lock = None
            _RUNNING_HERE.discard(id(self))
            raise HostBusyError(
                f"another local node runs on this host (it holds {HOST_LOCK})"
            ) from None
        self.dir = Path(tempfile.mkdtemp(prefix="vn", dir="/tmp"))
        self._owned_dir = True
        try:
            self._start_containerd()
            self._import_images()
            self._start_kubelet()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.dir / f"{name}.log").open("ab")
        self._procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        path = [str(self.artifacts.bin_dir), str(self.artifacts.runc.parent)]
        env["PATH"] = os.pathsep.join([*path, env.get("PATH", "/usr/bin:/bin")])
        env.pop("KUBECONFIG", None)
        env.pop("CONTAINERD_ADDRESS", None)
        env["NO_PROXY"] = "127.0.0.1,localhost"
        return env

    def logs(self, name: str, lines: int = 40) -> str:
        return log_tail(name, self.dir / f"{name}.log", self._procs.get(name), lines)

    def _alive(self, name: str) -> None:
        proc = self._procs[name]
        if proc.poll() is not None:
            raise NodeError(f"{name} exited with {proc.returncode}\n{self.logs(name)}")

    # ---- containerd ------------------------------------------------------------------
    def _containerd_config(self) -> str:
        d = self.dir / "containerd"
        runtime = "plugins.'io.containerd.cri.v1.runtime'"
        q = _toml_str
        return "\n".join(
            [
                "version = 3",
                f"root = {q(d / 'root')}",
                f"state = {q(d / 'state')}",
                "[grpc]",
                f"  address = {q(self.containerd_socket)}",
                "[ttrpc]",
                f"  address = {q(str(self.containerd_socket) + '.ttrpc')}",
                "[plugins.'io.containerd.internal.v1.opt']",
                f"  path = {q(d / 'opt')}",
                "[plugins.'io.containerd.nri.v1.nri']",
                "  disable = true",
                "[plugins.'io.containerd.cri.v1.images']",
                "  snapshotter = 'overlayfs'",
                "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
                f"  sandbox = {q(self.artifacts.pause_ref)}",
                f"[{runtime}]",
                # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj (the
                # kubelet asks -998 for Guaranteed pods) fails runc create.
                "  restrict_oom_score_adj = true",
                f"  cdi_spec_dirs = [{q(self.cdi_dir)}]",
                # Keep netns bind mounts under our state dir, not /var/run/netns.
                "  netns_mounts_under_state_dir = true",
                f"[{runtime}.cni]",
                f"  bin_dirs = [{q(self.artifacts.cni_bin_dir)}]",
                f"  conf_dir = {q(self.dir / 'cni' / 'conf')}",
                f"[{runtime}.containerd]",
                "  default_runtime_name = 'runc'",
                f"[{runtime}.containerd.runtimes.runc]",
                "  runtime_type = 'io.containerd.runc.v2'",
                f"[{runtime}.containerd.runtimes.runc.options]",
                f"  BinaryName = {q(self.artifacts.runc)}",
                "  SystemdCgroup = false",
                "",
            ]
        )

    def _start_containerd(self) -> None:
        for sub in ("containerd", "cni/conf", "cni/ipam", "cdi", "podlogs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        conf = self.dir / "containerd" / "config.toml"
        conf.write_text(self._containerd_config())
        self._write_cni_config()
        self._spawn(
            "containerd",
            [str(self.artifacts.bin_dir / "containerd"), "--config", str(conf)],
            self._env(),
        )

        def serving() -> bool:
            self._alive("containerd")
            return self._ctr("version", check=False).returncode == 0

        _wait(serving, 60, "containerd to serve", lambda: self.logs("containerd"))

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [
                str(self.artifacts.bin_dir / "ctr"),
                "--address",
                str(self.containerd_socket),
                "--namespace",
                "k8s.io",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=self._env(),
        )
        if check and r.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def _import_images(self) -> None:
        for ref, archive in self.artifacts.images.items():
            self.import_image(ref, archive)

    def import_image(self, ref: str, archive: Path) -> None:
        """Import the OCI archive `archive` (images.write_oci_archive) into containerd's
        k8s.io namespace, where the kubelet finds it as `ref` (pods must use
        imagePullPolicy Never). Re-importing the same archive is a no-op. Raises
        NodeError if ctr fails or the image is not there afterwards."""
        self._ctr("images", "import", "--platform", "linux/amd64", str(archive))
        if ref not in self._ctr("images", "ls", "-q").stdout.split():
            raise NodeError(f"importing {archive} did not create image {ref}")

    def _write_cni_config(self) -> None:
        conf = {
            "cniVersion": "1.0.0",
            "name": self.network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    # No iptables on this host: masquerading would fail every pod.
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                }
            ],
        }
        (self.dir / "cni" / "conf" / "10-vgpu.conflist").write_text(json.dumps(conf, indent=2))

    # ---- kubelet ---------------------------------------------------------------------
    def _cgroup_hierarchies(self) -> list[Path]:
        """cgroup-v1 hierarchies (one dir per mounted controller set, links skipped)."""
        if not _CGROUP_FS.is_dir():
            return []
        return [
            p
            for p in sorted(_CGROUP_FS.iterdir())
            if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists()
        ]

    def _start_kubelet(self) -> None:
        root = self.kubelet_root
        root.mkdir(parents=True, exist_ok=True)
        # The kubelet insists that --cgroup-root exists in every hierarchy it uses.
        for h in self._cgroup_hierarchies():
            (h / self.cgroup_root).mkdir(exist_ok=True)
        self.kubelet_port = free_port()
        self.kubelet_healthz_port = free_port()
        self.node_ip = host_ip()
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz_port,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "authentication": {
                "anonymous": {"enabled": True},
                "webhook": {"enabled": False},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.pod_logs_dir),
            "volumePluginDir": str(root / "volume-plugins"),
            # Images are imported once and never pulled: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
            "registerNode": True,
        }
        # The kubelet runs with the control plane's gates (DRAConsumableCapacity must
        # be on everywhere or nowhere).
        if self.cluster.settings.feature_gates:
            config["featureGates"] = dict(self.cluster.settings.feature_gates)
        cfg = self.dir / "kubelet.yaml"
        cfg.write_text(yaml.safe_dump(config))
        self._kubelet_argv = [
            str(self.artifacts.bin_dir / "kubelet"),
            f"--config={cfg}",
            f"--kubeconfig={self.cluster.kubeconfig_for(node_identity_name(self.name))}",
            f"--root-dir={root}",
            f"--cert-dir={root / 'pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.node_ip}",
            "--v=2",
        ]
        self._spawn("kubelet", self._kubelet_argv, self._env())

    def restart_kubelet(self, timeout: float = 90) -> None:
        """Stop the kubelet (SIGTERM, as a service manager would) and start it again
        with the same configuration; containers keep running meanwhile. Returns once
        the new kubelet's /healthz answers and the Node is Ready; raises NodeError
        otherwise (the kubelet's log tail)."""
        if not self._kubelet_argv:
            raise NodeError("the kubelet was never started")
        self._stop_process("kubelet")
        self._spawn("kubelet", self._kubelet_argv, self._env())

        def healthy() -> bool:
            self._alive("kubelet")
            url = f"http://127.0.0.1:{self.kubelet_healthz_port}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        _wait(healthy, timeout, "the restarted kubelet's /healthz", lambda: self.logs("kubelet"))
        self._wait_ready()

    def _node(self) -> dict[str, Any] | None:
        try:
            return dict(self._rest().request("GET", f"/api/v1/nodes/{self.name}"))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def _rest(self) -> Rest:
        return self.cluster.rest()

    def _wait_ready(self) -> None:
        def ready() -> bool:
            self._alive("kubelet")
            self._alive("containerd")
            node = self._node()
            conds = (node or {}).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        _wait(
            ready,
            self.settings.start_timeout_s,
            f"Node {self.name} to be Ready",
            lambda: self.logs("kubelet") + "\n" + self.logs("containerd"),
        )
        # Without the node-lifecycle controller nothing lifts the taint the kubelet
        # registered with. PUT carries the resourceVersion we read: if the kubelet
        # updated the Node in between we get 409 and retry on a fresh copy rather
        # than overwrite its update.
        deadline = time.monotonic() + 30
        while True:
            node = self._node()
            if node is None:
                raise NodeError(f"Node {self.name} vanished\n{self.logs('kubelet')}")
            taints = node.get("spec", {}).get("taints", [])
            keep = [t for t in taints if t.get("key") not in NOT_READY_TAINTS]
            if keep == taints:
                return
            node["spec"]["taints"] = keep
            try:
                self._rest().request("PUT", f"/api/v1/nodes/{self.name}", node)
            except ApiError as e:
                if e.status != 409 or time.monotonic() > deadline:
                    raise

    # ---- teardown --------------------------------------------------------------------
    def stop(self) -> None:
        if not self._owned_dir:
            _RUNNING_HERE.discard(id(self))
            return
        for step in (
            self._delete_pods,
            self._stop_kubelet,
            self._kill_containers,
            self._stop_containerd,
            self._kill_cgroup_members,
            self._unmount_all,
            self._remove_host_state,
        ):
            # Teardown never raises: each step is best effort and the next ones still
            # run (a failed pod delete must not leave containerd running).
            with contextlib.suppress(Exception):
                step()
        if not self.settings.keep_work_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self._owned_dir = False
        if self._host_lock is not None:
            os.close(self._host_lock)  # releases the flock
            self._host_lock = None
        _RUNNING_HERE.discard(id(self))

    def pods(self) -> list[dict[str, Any]]:
        """Pods bound to this node, all namespaces."""
        got = self._rest().request(
            "GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={self.name}")]
        )
        return list(got.get("items", []))

    def _delete_pods(self) -> None:
        kubelet = self._procs.get("kubelet")
        if kubelet is None or kubelet.poll() is not None:
            return
        for pod in self.pods():
            md = pod["metadata"]
            with contextlib.suppress(Exception):
                self._rest().request(
                    "DELETE",
                    f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}",
                    {"gracePeriodSeconds": 1},
                )
        # The kubelet removes the object only after it stopped the containers, tore
        # down the sandbox and unprepared the pod's claims: wait for exactly that.
        deadline = time.monotonic() + self.settings.stop_timeout_s
        while self.pods() and time.monotonic() < deadline:
            time.sleep(0.25)

    def _stop_process(self, name: str, timeout: float = 20) -> None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _stop_kubelet(self) -> None:
        self._stop_process("kubelet")

    def _kill_containers(self) -> None:
        if "containerd" not in self._procs:
            return
        for cid in self._ctr("containers", "ls", "-q", check=False).stdout.split():
            self._ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False)
            self._ctr("tasks", "delete", "--force", cid, check=False)
            self._ctr("containers", "delete", cid, check=False)

    def _stop_containerd(self) -> None:
        self._stop_process("containerd")
        # Shims outlive containerd by design (they are reparented); ours are the ones
        # whose -address is our socket. Kill them by pid.
        shim = str(self.artifacts.bin_dir / "containerd-shim-runc-v2")
        sock = str(self.containerd_socket)
        _kill_pids(pid for pid, argv in _processes() if argv[:1] == [shim] and sock in argv)

    def _cgroup_dirs(self) -> list[Path]:
        found: list[Path] = []
        for h in self._cgroup_hierarchies():
            top = h / self.cgroup_root
            if top.is_dir():
                found += [Path(dp) for dp, _, _ in os.walk(top)]
        return sorted(found, key=lambda p: len(p.parts), reverse=True)

    def _kill_cgroup_members(self) -> None:
        # Anything still in our cgroup subtree is a container process we started.
        for d in self._cgroup_dirs():
            with contextlib.suppress(OSError):
                _kill_pids(int(x) for x in (d / "cgroup.procs").read_text().split())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            (d / "cgroup.procs").read_text().strip()
            for d in self._cgroup_dirs()
            if (d / "cgroup.procs").exists()
        ):
            time.sleep(0.1)

    def _unmount_all(self) -> None:
        for _ in range(3):  # a lazy unmount can reveal a mount stacked below it
            mounts = _mounts_under(self.dir)
            if not mounts:
                return
            for m in mounts:
                _umount(m)

    def _remove_host_state(self) -> None:
        for d in self._cgroup_dirs():
            with contextlib.suppress(OSError):
                d.rmdir()
        subprocess.run(
            ["ip", "link", "delete", self.bridge],
            capture_output=True,
            check=False,
        )
        # Host paths the kubelet and libcni use whatever they are configured with.
        logs = Path("/var/log/containers")
        if logs.is_dir():
            for link in logs.iterdir():
                with contextlib.suppress(OSError):
                    if link.is_symlink() and str(link.readlink()).startswith(str(self.dir)):
                        link.unlink()
        # The kubelet's socket and device checkpoint in the fixed device plugin dir: a
        # later node must not start with this one's device assignments.
        for name in ("kubelet.sock", "kubelet_internal_checkpoint"):
            (DEVICE_PLUGINS_DIR / name).unlink(missing_ok=True)
        cache = Path("/var/lib/cni/results")
        if cache.is_dir():
            for f in cache.glob(f"{self.network}-*"):
                f.unlink(missing_ok=True)


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        yield int(entry.name), [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _toml_str(value: object) -> str:
    """A TOML basic string (JSON string syntax is a subset that TOML accepts)."""
    return json.dumps(str(value))
