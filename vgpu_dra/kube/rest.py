"""A thin JSON REST layer for the API server.

The generated models of the `kubernetes` package lag the API (and drop fields they do
not know), and its request plumbing changed shape between releases, so objects cross
this boundary as the API server's own JSON over urllib3. The `kubernetes` package is
used only to read kubeconfig / in-cluster credentials. This module is the only
importer of `kubernetes` in the project.

All request methods raise `ApiError` (status, reason, message) for non-2xx answers
and for transport failures (status 0).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import kubernetes.client as k8s
import kubernetes.config as k8s_config
import urllib3

JSON = dict[str, Any]


class ApiError(RuntimeError):
    """A non-2xx answer from the API server (status 0: it could not be reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"


class ConfigError(RuntimeError):
    """A kubeconfig (or context) that cannot be loaded."""


def kubeconfig_namespace(kubeconfig: Path, context: str | None = None) -> str | None:
    """The namespace of the kubeconfig's current context (or `context`), None when the
    context sets none. Raises ConfigError for an unusable file or unknown context."""
    try:
        contexts, current = k8s_config.list_kube_config_contexts(str(kubeconfig))  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, OSError) as e:
        raise ConfigError(str(e)) from None
    chosen = current if context is None else next(
        (c for c in contexts or [] if c.get("name") == context), None
    )
    if chosen is None:
        raise ConfigError(f"context {context!r} is not in {kubeconfig}")
    ns = (chosen.get("context") or {}).get("namespace")
    return str(ns) if ns else None


@dataclass
class Counter:
    """Counts mutating requests, so the 'minimum writes' claims can be measured."""

    creates: int = 0
    updates: int = 0
    deletes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def writes(self) -> int:
        return self.creates + self.updates + self.deletes

    def count(self, method: str) -> None:
        with self._lock:
            if method == "POST":
                self.creates += 1
            elif method in ("PUT", "PATCH"):
                self.updates += 1
            elif method == "DELETE":
                self.deletes += 1


class Rest:
    """JSON requests against one API server; safe to share between threads."""

    def __init__(self, cfg: k8s.Configuration, timeout_s: float = 30.0) -> None:
        self._cfg = cfg
        self._host = str(cfg.host).rstrip("/")
        self._timeout = timeout_s
        kw: dict[str, Any] = {"maxsize": 8, "retries": False}
        if cfg.verify_ssl:
            kw["cert_reqs"] = "CERT_REQUIRED"
            if cfg.ssl_ca_cert:
                kw["ca_certs"] = cfg.ssl_ca_cert
        else:
            kw["cert_reqs"] = "CERT_NONE"
        if cfg.cert_file:
            kw["cert_file"] = cfg.cert_file
            kw["key_file"] = cfg.key_file
        self._pool = urllib3.PoolManager(**kw)
        self.counter = Counter()

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None, context: str | None = None) -> Rest:
        """From a kubeconfig file (its current context, or `context`), or in-cluster
        service-account config when None. Raises ConfigError for a context the file
        does not have or a file that cannot be used."""
        cfg = k8s.Configuration()
        try:
            if kubeconfig is None:
                load_in = k8s_config.load_incluster_config
                load_in(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                load = k8s_config.load_kube_config
                load(  # type: ignore[no-untyped-call]
                    config_file=str(kubeconfig), context=context, client_configuration=cfg
                )
        except k8s_config.ConfigException as e:
            raise ConfigError(str(e)) from None
        return cls(cfg)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "vgpu-dra"}
        token = self._cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            h["Authorization"] = token
        if content_type:
            h["Content-Type"] = content_type
        return h

    def _url(self, path: str, query: Sequence[tuple[str, str]]) -> str:
        return self._host + path + ("?" + urlencode(list(query)) if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> JSON:
        try:
            r = self._pool.request(
                method,
                self._url(path, query),
                body=json.dumps(body).encode() if body is not None else None,
                headers=self._headers(content_type if body is not None else None),
                timeout=self._timeout,
            )
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(0, "Unreachable", f"{method} {path}: {e}") from None
        if r.status >= 300:
            raise _api_error(r.status, r.reason or "", r.data)
        if not (method == "POST" and ("dryRun", "All") in query):
            self.counter.count(method)
        return cast(JSON, json.loads(r.data)) if r.data else {}

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> JSON:
        return self.request("GET", path, query=query)

    def get_text(self, path: str, accept: str = "text/plain", max_bytes: int = 16 << 20) -> str:
        """GET `path` as text (e.g. a pod's /metrics through the API server's proxy).
        Raises ApiError as `request` does, and (status 0) for an answer longer than
        `max_bytes`, which is never read past that."""
        headers = {**self._headers(None), "Accept": accept}
        try:
            r = self._pool.request("GET", self._url(path, ()), headers=headers,
                                   preload_content=False, timeout=self._timeout)
            try:
                data = r.read(max_bytes + 1)
            finally:
                r.release_conn()
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(0, "Unreachable", f"GET {path}: {e}") from None
        if r.status >= 300:
            raise _api_error(r.status, r.reason or "", data)
        if len(data) > max_bytes:
            raise ApiError(0, "TooLarge", f"GET {path}: answer longer than {max_bytes} bytes")
        return data.decode(errors="replace")

    def watch(self, path: str, query: Sequence[tuple[str, str]], timeout_s: int) -> Iterator[JSON]:
        """Yield watch events ({type, object}) until the server ends the stream."""
        q = [*query, ("watch", "true"), ("timeoutSeconds", str(timeout_s))]
        try:
            r = self._pool.request(
                "GET",
                self._url(path, q),
                headers=self._headers(None),
                preload_content=False,
                timeout=urllib3.Timeout(connect=self._timeout, read=timeout_s + 10),
            )
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(0, "Unreachable", f"watch {path}: {e}") from None
        try:
            if r.status >= 300:
                raise _api_error(r.status, r.reason or "", r.read())
            buf = b""
            for chunk in r.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield cast(JSON, json.loads(line))
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(0, "Unreachable", f"watch {path}: {e}") from None
        finally:
            r.release_conn()


def _api_error(status: int, reason: str, data: bytes) -> ApiError:
    message = data.decode(errors="replace")
    try:
        obj = json.loads(data)
        message = str(obj.get("message", message))
        reason = str(obj.get("reason", reason))
    except (ValueError, AttributeError):
        pass
    return ApiError(status, reason, message)


def kubernetes_api_client(kubeconfig: Path) -> k8s.ApiClient:
    """The official client's ApiClient, for tests and tools that want its typed API."""
    cfg = k8s.Configuration()
    load = k8s_config.load_kube_config
    load(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    return k8s.ApiClient(configuration=cfg)
