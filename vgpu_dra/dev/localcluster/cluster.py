"""A real, local Kubernetes control plane on 127.0.0.1 for tests and the demo.

etcd, kube-apiserver (TLS, static token auth, RBAC), kube-scheduler and
kube-controller-manager (only the resourceclaim, garbage-collector, deployment,
replicaset and resourcequota controllers, plus those `extra_controllers` names:
node-lifecycle would taint and evict our fake nodes) run as child
processes in a private work dir. There is no kubelet: Nodes are plain API objects.
Pods get no service account token unless `service_accounts` is set.

Contract: `start()` returns only once /readyz is ok and the scheduler and
controller-manager are serving; it raises `ClusterError` with the failing
component's log tail otherwise, after stopping whatever it started. `stop()` is
idempotent and never raises.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from vgpu_dra.dev.localcluster.build import minor_version
from vgpu_dra.dev.localcluster.certs import Pki, make_pki
from vgpu_dra.kube.nodes import create_fake_node
from vgpu_dra.kube.rest import JSON, Rest, kubernetes_api_client

DEFAULT_VERSION = "v1.36.3"
# Feature gates whose default the tests depend on: the first minor that turns each on
# by default (DRAConsumableCapacity: alpha, off, in 1.34 and 1.35; beta, on, from 1.36).
GATE_DEFAULT_ON_SINCE: Mapping[str, int] = {"DRAConsumableCapacity": 36}


class ClusterError(RuntimeError):
    """A component failed to start; the message carries its log tail."""


@dataclass(frozen=True)
class Identity:
    """A static-token identity; `groups` map to RBAC subjects of kind Group."""

    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterSettings:
    bin_dir: Path
    work_root: Path | None = None
    feature_gates: Mapping[str, bool] = field(default_factory=dict)
    identities: Mapping[str, Identity] = field(default_factory=dict)
    start_timeout_s: float = 90.0
    keep_work_dir: bool = False
    # Appended to kube-apiserver's flags (e.g. a real kubelet's LocalNode needs
    # --kubelet-preferred-address-types=InternalIP: node names do not resolve).
    extra_apiserver_args: tuple[str, ...] = ()
    # Pods get service account tokens as in production: the ServiceAccount admission
    # plugin (off otherwise: it refuses pods in namespaces without a "default" account)
    # and the controllers it needs (a "default" account and the kube-root-ca.crt
    # ConfigMap in every namespace). For pods on a real node (LocalNode) that talk to
    # the API server, e.g. a Helm-installed chart.
    service_accounts: bool = False
    # More kube-controller-manager controllers, named as its --controllers flag names
    # them; each must be a key of CONTROLLER_ROLES (e.g. daemonset-controller for a
    # DaemonSet on a real node, endpointslice-controller for --enable-aggregator-routing).
    extra_controllers: tuple[str, ...] = ()


# kube-controller-manager controllers -> the bootstrap ClusterRole each acts with.
CONTROLLER_ROLES = {
    "deployment-controller": "deployment-controller",
    "replicaset-controller": "replicaset-controller",
    "resourceclaim-controller": "resource-claim-controller",
    "garbage-collector-controller": "generic-garbage-collector",
    "resourcequota-controller": "resourcequota-controller",
    "daemonset-controller": "daemon-set-controller",
    "endpointslice-controller": "endpointslice-controller",
    "serviceaccount-controller": "service-account-controller",
    "root-ca-certificate-publisher-controller": "root-ca-cert-publisher",
}
BASE_CONTROLLERS = (
    "resourceclaim-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "resourcequota-controller",
)
SERVICE_ACCOUNT_CONTROLLERS = (
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
)


def controllers(settings: ClusterSettings) -> list[str]:
    """The kube-controller-manager controllers `settings` asks for, in order, once each.
    Raises ValueError for a name CONTROLLER_ROLES does not know."""
    names = [*BASE_CONTROLLERS, *settings.extra_controllers]
    if settings.service_accounts:
        names += SERVICE_ACCOUNT_CONTROLLERS
    unknown = [n for n in names if n not in CONTROLLER_ROLES]
    if unknown:
        raise ValueError(f"no bootstrap role known for controllers {unknown}")
    return list(dict.fromkeys(names))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_feature_gates(text: str) -> dict[str, bool]:
    """`--feature-gates` syntax, "A=true,B=false" (blank: none) -> {"A": True, "B": False}.
    Raises ValueError naming the malformed entry."""
    gates: dict[str, bool] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, value = entry.partition("=")
        if not sep or not name.strip() or value.strip().lower() not in ("true", "false"):
            raise ValueError(f"feature gate {entry!r} is not NAME=true or NAME=false")
        gates[name.strip()] = value.strip().lower() == "true"
    return gates


def gate_enabled(gate: str, version: str, gates: Mapping[str, bool]) -> bool:
    """Whether `gate` is on in a cluster of `version` (v1.<minor>.<patch>) started with
    `gates`: the explicit setting, else the version's default (GATE_DEFAULT_ON_SINCE;
    a gate not listed there counts as off by default). Raises ValueError on a version
    that is not a release tag."""
    if gate in gates:
        return gates[gate]
    minor = minor_version(version)
    since = GATE_DEFAULT_ON_SINCE.get(gate)
    return since is not None and minor >= since


def _gates(gates: Mapping[str, bool]) -> list[str]:
    if not gates:
        return []
    return [
        "--feature-gates=" + ",".join(f"{k}={str(v).lower()}" for k, v in sorted(gates.items()))
    ]


def _wait_until(
    pred: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs()}")


def log_tail(
    name: str, path: Path, proc: subprocess.Popen[bytes] | None, lines: int = 40
) -> str:
    """The state of a child process and the last `lines` of its log file, for errors."""
    state = (
        "not started"
        if proc is None
        else ("running" if proc.poll() is None else f"exited {proc.returncode}")
    )
    tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
    return f"--- {name} ({state}), last {len(tail)} log lines:\n" + "\n".join(tail)


class LocalCluster:
    """See the module docstring. Use as a context manager or call start()/stop()."""

    ADMIN = "admin"

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._owned_dir = False
        self.work_dir = Path()
        self.port = 0
        self.tokens: dict[str, str] = {}
        self.pki: Pki | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "admin.kubeconfig"

    def kubeconfig_for(self, name: str) -> Path:
        return self.work_dir / f"{name}.kubeconfig"

    def start(self) -> None:
        s = self.settings
        if s.work_root is not None:
            s.work_root.mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix="vgpu-cp-", dir=s.work_root))
        self._owned_dir = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        s = self.settings
        d = self.work_dir
        self.pki = pki = make_pki(d / "pki")
        identities: dict[str, Identity] = {
            self.ADMIN: Identity("vgpu-admin", ("system:masters",)),
            "kube-scheduler": Identity("system:kube-scheduler"),
            "kube-controller-manager": Identity("system:kube-controller-manager"),
            **s.identities,
        }
        lines = []
        for name, ident in identities.items():
            tok = secrets.token_hex(16)
            self.tokens[name] = tok
            groups = ",".join(ident.groups)
            lines.append(f'{tok},{ident.user},uid-{name},"{groups}"')
        (d / "tokens.csv").write_text("\n".join(lines) + "\n")
        (d / "tokens.csv").chmod(0o600)

        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(s.bin_dir / "etcd"),
                "--data-dir",
                str(d / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=error",
            ],
        )
        _wait_until(
            lambda: self._http_ok(f"http://127.0.0.1:{etcd_port}/health"),
            s.start_timeout_s,
            "etcd /health",
            lambda: self.logs("etcd"),
        )
        self.port = free_port()
        self._spawn(
            "kube-apiserver",
            [
                str(s.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={d / 'tokens.csv'}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                *([] if s.service_accounts else ["--disable-admission-plugins=ServiceAccount"]),
                "--endpoint-reconciler-type=none",
                f"--cert-dir={d / 'apiserver-certs'}",
                *_gates(s.feature_gates),
                *s.extra_apiserver_args,
            ],
        )
        _wait_until(
            lambda: self._http_ok(f"{self.server}/readyz", token=self.tokens[self.ADMIN]),
            s.start_timeout_s,
            "kube-apiserver /readyz",
            lambda: self.logs("kube-apiserver"),
        )
        for name in identities:
            self._write_kubeconfig(name)

        sched_cfg = d / "scheduler.yaml"
        sched_cfg.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(self.kubeconfig_for("kube-scheduler"))},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        sched_port = free_port()
        self._spawn(
            "kube-scheduler",
            [
                str(s.bin_dir / "kube-scheduler"),
                f"--config={sched_cfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                *_gates(s.feature_gates),
            ],
        )
        # Without --use-service-account-credentials every controller acts as the
        # controller-manager user, whose bootstrap role cannot create pods, replicasets
        # or claims: grant it the enabled controllers' own bootstrap roles.
        kcm_controllers = controllers(s)
        for ctl in (CONTROLLER_ROLES[c] for c in kcm_controllers):
            self.rest().request(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": f"vgpu-local:{ctl}"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": f"system:controller:{ctl}",
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "User",
                            "name": "system:kube-controller-manager",
                        }
                    ],
                },
            )
        kcm_port = free_port()
        self._spawn(
            "kube-controller-manager",
            [
                str(s.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig_for('kube-controller-manager')}",
                f"--controllers={','.join(kcm_controllers)}",
                *([f"--root-ca-file={pki.ca_cert}"] if s.service_accounts else []),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                *_gates(s.feature_gates),
            ],
        )
        for name, port in (("kube-scheduler", sched_port), ("kube-controller-manager", kcm_port)):
            self._wait_healthz(name, port)

    def start_scheduler(self, name: str, config: Path) -> None:
        """Start one more kube-scheduler as component `name` (e.g. a second scheduler
        with an extender). `config` is its KubeSchedulerConfiguration and must set
        `clientConnection.kubeconfig` (e.g. `kubeconfig_for("kube-scheduler")`) and
        `leaderElection.leaderElect: false`. Returns once it serves /healthz; `stop()`
        or `kill(name)` ends it. Raises ClusterError with its log tail otherwise."""
        port = free_port()
        self._spawn(
            name,
            [
                str(self.settings.bin_dir / "kube-scheduler"),
                f"--config={config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                *_gates(self.settings.feature_gates),
            ],
        )
        self._wait_healthz(name, port)

    def _wait_healthz(self, name: str, port: int) -> None:
        _wait_until(
            lambda: self._http_ok(f"https://127.0.0.1:{port}/healthz", insecure=True),
            self.settings.start_timeout_s,
            f"{name} /healthz",
            lambda: self.logs(name),
        )

    def stop(self) -> None:
        for proc in reversed(list(self._procs.values())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in reversed(list(self._procs.values())):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._owned_dir and not self.settings.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self._owned_dir = False

    # ---- helpers ---------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.work_dir / f"{name}.log").open("wb")
        env = dict(os.environ)
        env["NO_PROXY"] = "127.0.0.1,localhost"
        env.pop("KUBECONFIG", None)
        self._procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()

    def logs(self, name: str, lines: int = 40) -> str:
        return log_tail(name, self.work_dir / f"{name}.log", self._procs.get(name), lines)

    def _http_ok(self, url: str, token: str | None = None, insecure: bool = False) -> bool:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode}\n{self.logs(name)}")
        ctx: ssl.SSLContext | None = None
        if url.startswith("https"):
            if insecure:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                assert self.pki is not None
                ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        req = urllib.request.Request(url)  # noqa: S310 - loopback URL built here
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=2, context=ctx) as r:  # noqa: S310
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _write_kubeconfig(self, name: str) -> None:
        assert self.pki is not None
        cfg: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki.ca_cert),
                    },
                }
            ],
            "users": [{"name": name, "user": {"token": self.tokens[name]}}],
            "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
            "current-context": name,
        }
        path = self.kubeconfig_for(name)
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)

    # ---- conveniences for tests and the demo -----------------------------------------
    def kubectl(self, *args: str, identity: str = ADMIN, check: bool = True) -> str:
        """Run the built kubectl against this cluster; returns stdout."""
        r = subprocess.run(
            [
                str(self.settings.bin_dir / "kubectl"),
                f"--kubeconfig={self.kubeconfig_for(identity)}",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check and r.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def rest(self, identity: str = ADMIN) -> Rest:
        return Rest.from_kubeconfig(self.kubeconfig_for(identity))

    def api_client(self, identity: str = ADMIN) -> Any:
        """A `kubernetes.client.ApiClient` (typed API) for tests."""
        return kubernetes_api_client(self.kubeconfig_for(identity))

    def create_node(self, name: str, labels: Mapping[str, str] | None = None) -> JSON:
        """A schedulable fake Node (allocatable cpu/memory/pods, not-ready taint removed)."""
        return create_fake_node(self.rest(), name, labels=labels)

    def running(self) -> Iterator[str]:
        return (n for n, p in self._procs.items() if p.poll() is None)

    def kill(self, name: str) -> None:
        """Stop one component (for failure tests)."""
        proc = self._procs.pop(name)
        proc.kill()
        proc.wait()
