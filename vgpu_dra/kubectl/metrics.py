"""Reading node agents' /metrics for `kubectl vgpu top` (I/O; the decisions are in
`core.usage_table`).

Two ways: through the API server's pod proxy (`scrape_agent`, the default; see
`cluster.metrics_proxy_path`) or straight from a URL the user gives (`scrape_url`,
`--metrics-url`). Either way the answer is parsed with prometheus_client's parser of
the text format and becomes a `Scrape`; a failure (unreachable, an HTTP error, an
answer over `MAX_BYTES`, text that does not parse) becomes a `Scrape` with `error`
set, never an exception, so one bad agent does not hide the others.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import urllib3
from prometheus_client.parser import text_string_to_metric_families

from vgpu_dra.core.usage_table import AgentTarget, Sample, Scrape
from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.kubectl.cluster import metrics_proxy_path

MAX_BYTES: Final = 16 << 20
ACCEPT: Final = "text/plain;version=0.0.4"
TIMEOUT_S: Final = 10.0


def parse(text: str) -> tuple[Sample, ...]:
    """Every sample of a Prometheus text exposition. Raises ValueError when it does
    not parse."""
    try:
        return tuple(
            Sample(s.name, dict(s.labels), float(s.value))
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        )
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise ValueError(f"not the Prometheus text format: {e}") from None


def _scrape(source: str, text: str, node: str | None) -> Scrape:
    try:
        return Scrape(source, parse(text), node)
    except ValueError as e:
        return Scrape(source, node=node, error=str(e))


def scrape_agent(rest: Rest, target: AgentTarget) -> Scrape:
    """One agent pod's /metrics through the API server (needs `get pods/proxy`)."""
    source = f"pod {target.namespace}/{target.pod}"
    try:
        path = metrics_proxy_path(target.namespace, target.pod, target.port)
        text = rest.get_text(path, ACCEPT, MAX_BYTES)
    except ValueError as e:
        return Scrape(source, node=target.node, error=str(e))
    except ApiError as e:
        return Scrape(source, node=target.node, error=f"{e.reason}: {e.message}")
    return _scrape(source, text, target.node)


def check_url(url: str) -> None:
    """Raises ValueError unless `url` is an absolute http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--metrics-url {url!r} is not an http:// or https:// URL with a host")


def scrape_url(pool: urllib3.PoolManager, url: str) -> Scrape:
    """GET `url` (checked by `check_url`) and parse it; the node comes from the
    metrics (`core.usage_table.scrape_node`)."""
    try:
        r = pool.request("GET", url, headers={"Accept": ACCEPT}, preload_content=False,
                         timeout=TIMEOUT_S, retries=False, redirect=False)
        try:
            data = r.read(MAX_BYTES + 1)
        finally:
            r.release_conn()
    except urllib3.exceptions.HTTPError as e:
        return Scrape(url, error=f"unreachable: {e}")
    if r.status != 200:
        return Scrape(url, error=f"HTTP {r.status} {r.reason or ''}".rstrip())
    if len(data) > MAX_BYTES:
        return Scrape(url, error=f"answer longer than {MAX_BYTES} bytes")
    return _scrape(url, data.decode(errors="replace"), None)
