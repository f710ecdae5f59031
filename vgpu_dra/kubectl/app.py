"""Composition root of `kubectl-vgpu` (run as `kubectl vgpu ...`): its flags, the
kubeconfig, then read the cluster, decide in core, render.

    kubectl vgpu cards [NODE]            who holds shares of each card
    kubectl vgpu explain POD             why the pod's claims do not fit
    kubectl vgpu explain --claim NAME    the same for one ResourceClaim
    kubectl vgpu top [NODE] [-w]         GPU memory (and compute) each container uses

kubectl's conventions: `--kubeconfig` (else $KUBECONFIG, else ~/.kube/config, else
the in-cluster service account), `--context`, `-n/--namespace` (else the context's,
else "default"), `-A/--all-namespaces`, `-o table|wide|json|yaml`; flags go before
or after the subcommand. Exit codes: 0 ok (also Ctrl-C ending `top --watch`), 1 not
found or an error, 2 usage (no subcommand included: the help goes to stderr).
Cards come from our ResourceSlices, and from HAMi's annotations on nodes without
any (`core.occupancy.cluster_occupancy`); explain covers DRA claims only. `top`
reads the node agents' /metrics through the API server's pod proxy, or the URLs of
`--metrics-url` (then no kubeconfig is needed), and `core.usage_table` makes the rows.
Colour and bars only when stdout is a terminal and NO_COLOR is unset or empty.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TextIO

import urllib3

from vgpu_dra import cel
from vgpu_dra.core.explain import ClaimExplanation, explain_claim, pod_claim_names
from vgpu_dra.core.names import validate_namespace, validate_object_name
from vgpu_dra.core.occupancy import Occupancy, cluster_occupancy, dra_occupancy
from vgpu_dra.core.usage_table import AGENT_SELECTOR, SORTS, Scrape, agent_targets, usage_table
from vgpu_dra.kube.rest import ApiError, ConfigError, Rest, kubeconfig_namespace
from vgpu_dra.kubectl import cluster, metrics, render
from vgpu_dra.kubectl.render import Style

OK, FAILED, USAGE = 0, 1, 2
OUTPUTS = ("table", "wide", "json", "yaml")
MIN_BAR_COLUMNS = 60
INTERVAL_S: Final = 2.0
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.5, 3600.0
SCRAPE_THREADS: Final = 8
CLEAR: Final = "\033[H\033[2J"  # cursor home, clear screen


class PluginError(Exception):
    """Something asked about does not exist, or cannot be answered: exit 1."""


def _common(p: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS  # set in either position; absent -> the defaults of `Flags`
    p.add_argument("--kubeconfig", default=s, help="path to the kubeconfig file")
    p.add_argument("--context", default=s, help="the kubeconfig context to use")
    p.add_argument("-n", "--namespace", default=s,
                   help="namespace of the pod or claim (top: of the containers)")
    p.add_argument("-A", "--all-namespaces", action="store_true", default=s,
                   help="look the pod or claim up in every namespace (top: show all)")
    p.add_argument("-o", "--output", choices=OUTPUTS, default=s, help="output format")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubectl vgpu", description="Shared GPUs (vgpu.hami.io): tenants, fit, usage."
    )
    _common(p)
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    cards = sub.add_parser("cards", help="each card's use and the pods holding shares")
    _common(cards)
    cards.add_argument("node", nargs="?", help="only this node's cards")
    ex = sub.add_parser("explain", help="why a pod's (or claim's) requests do not fit")
    _common(ex)
    ex.add_argument("pod", nargs="?", help="the pending pod")
    ex.add_argument("--claim", help="explain this ResourceClaim instead of a pod")
    ex.add_argument("--node", dest="nodes", action="append", default=[],
                    help="only this node (repeatable); default: every node with our cards")
    top = sub.add_parser("top", help="GPU memory (and compute) used by each container")
    _common(top)
    top.add_argument("node", nargs="?", help="only this node's containers")
    top.add_argument("-w", "--watch", action="store_true",
                     help="refresh until Ctrl-C (redrawn on a terminal, appended otherwise)")
    top.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                     help=f"seconds between refreshes with --watch (default {INTERVAL_S:g}, "
                          f"{MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g})")
    top.add_argument("--sort-by", choices=SORTS, default="name",
                     help="row order: name, or largest first by memory, percent, compute")
    top.add_argument("--metrics-url", dest="metrics_urls", action="append", default=[],
                     metavar="URL",
                     help="scrape this agent /metrics URL directly (repeatable) instead "
                          "of the agents' pods through the API server")
    top.add_argument("--agents-namespace", metavar="NS",
                     help="namespace of the node agent pods (default: found in any namespace "
                          f"by the label {AGENT_SELECTOR})")
    return p


@dataclass(frozen=True)
class Flags:
    command: str
    kubeconfig: Path | None
    context: str | None
    namespace: str | None  # None: the context's
    all_namespaces: bool
    output: str
    node: str | None = None
    pod: str | None = None
    claim: str | None = None
    nodes: tuple[str, ...] = ()
    watch: bool = False
    interval: float = INTERVAL_S
    sort_by: str = "name"
    metrics_urls: tuple[str, ...] = ()
    agents_namespace: str | None = None


def _kubeconfig(flag: str | None, env: Mapping[str, str]) -> Path | None:
    """--kubeconfig, else the first existing file of $KUBECONFIG, else ~/.kube/config
    when it exists, else None (in-cluster)."""
    if flag:
        return Path(flag)
    for part in (env.get("KUBECONFIG") or "").split(os.pathsep):
        if part and Path(part).exists():
            return Path(part)
    home = Path(env.get("HOME") or Path.home()) / ".kube" / "config"
    return home if home.exists() else None


def _check_top(f: Flags, interval: float | None) -> None:
    if interval is not None and not f.watch:
        raise ValueError("--interval needs --watch")
    if not MIN_INTERVAL_S <= f.interval <= MAX_INTERVAL_S:
        raise ValueError(f"--interval must be {MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g} seconds")
    for url in f.metrics_urls:
        metrics.check_url(url)
    if f.agents_namespace is not None:
        if f.metrics_urls:
            raise ValueError("--agents-namespace and --metrics-url exclude each other")
        validate_namespace(f.agents_namespace)


def parse(argv: Sequence[str], env: Mapping[str, str], err: TextIO | None = None) -> Flags:
    """Flags from argv. Exits 2 on a usage error (argparse), and with the help on
    `err` (stderr) when no subcommand is given; `--help` prints it and exits 0."""
    p = parser()
    a = p.parse_args(argv)
    if a.command is None:
        p.print_help(err or sys.stderr)
        raise SystemExit(USAGE)
    interval = getattr(a, "interval", None)
    f = Flags(
        command=a.command,
        kubeconfig=_kubeconfig(getattr(a, "kubeconfig", None), env),
        context=getattr(a, "context", None),
        namespace=getattr(a, "namespace", None),
        all_namespaces=bool(getattr(a, "all_namespaces", False)),
        output=getattr(a, "output", "table"),
        node=getattr(a, "node", None),
        pod=getattr(a, "pod", None),
        claim=getattr(a, "claim", None),
        nodes=tuple(getattr(a, "nodes", ())),
        watch=bool(getattr(a, "watch", False)),
        interval=INTERVAL_S if interval is None else interval,
        sort_by=getattr(a, "sort_by", "name"),
        metrics_urls=tuple(getattr(a, "metrics_urls", ())),
        agents_namespace=getattr(a, "agents_namespace", None),
    )
    try:
        if f.command == "explain" and (f.pod is None) == (f.claim is None):
            raise ValueError("explain takes a POD or --claim NAME (one of them)")
        if f.command == "top":
            _check_top(f, interval)
        for name in (f.pod, f.claim, f.node, *f.nodes):
            if name is not None:
                validate_object_name(name)
        if f.namespace is not None:
            validate_namespace(f.namespace)
    except ValueError as e:
        p.error(str(e))
    return f


def style(out: TextIO, env: Mapping[str, str]) -> Style:
    tty = out.isatty()
    colour = tty and not env.get("NO_COLOR") and env.get("TERM") != "dumb"
    bars = tty and shutil.get_terminal_size().columns >= MIN_BAR_COLUMNS
    return Style(colour=colour, bars=bars)


def evaluate(expression: str, device: Mapping[str, Any], driver: str) -> bool | str:
    """kube-scheduler's selector semantics (`vgpu_dra.cel`); an error as its message."""
    try:
        return cel.device_matches(expression, device, driver)
    except cel.CelError as e:
        return e.message


# ---- commands --------------------------------------------------------------------------


def _only(occ: Occupancy, nodes: Sequence[str]) -> Occupancy:
    if not nodes:
        return occ
    cards = tuple(c for c in occ.cards if c.node in nodes)
    missing = sorted(set(nodes) - {c.node for c in cards})
    if missing:
        raise PluginError(f'no vGPU cards on node "{missing[0]}"')
    # only the warnings about the nodes asked for: another node's bad annotation is
    # not this answer's business
    warnings = tuple(w for w in occ.warnings if w.node in nodes)
    return Occupancy(cards, occ.device_card, warnings)


def cards(rest: Rest, f: Flags, st: Style) -> str:
    snap = cluster.snapshot(rest)
    occ = _only(cluster_occupancy(snap.slices, snap.claims, snap.pods, snap.nodes),
                [f.node] if f.node else [])
    if f.output in ("json", "yaml"):
        return render.dump(render.cards_doc(occ), f.output)
    return render.cards_text(occ, f.output == "wide", st)


def _one(found: list[Any], kind: str, name: str) -> Any:
    if not found:
        raise PluginError(f'{kind} "{name}" not found in any namespace')
    if len(found) > 1:
        where = ", ".join(sorted(str(o["metadata"]["namespace"]) for o in found))
        raise PluginError(f'{kind} "{name}" exists in several namespaces ({where}); use -n')
    return found[0]


def _target(rest: Rest, f: Flags, namespace: str) -> tuple[str, Any, list[Any]]:
    """(subject line, pod or None, its claims) for `explain`."""
    if f.claim is not None:
        c = (_one(cluster.find_claim(rest, f.claim), "resourceclaim", f.claim)
             if f.all_namespaces else cluster.claim(rest, namespace, f.claim))
        if c is None:
            raise PluginError(f'resourceclaim "{f.claim}" not found in namespace "{namespace}"')
        return f"ResourceClaim {c['metadata']['namespace']}/{f.claim}", None, [c]
    name = str(f.pod)
    pod = (_one(cluster.find_pod(rest, name), "pod", name)
           if f.all_namespaces else cluster.pod(rest, namespace, name))
    if pod is None:
        raise PluginError(f'pod "{name}" not found in namespace "{namespace}"')
    ns = str(pod["metadata"]["namespace"])
    claims = []
    for claim_name in pod_claim_names(pod):
        c = cluster.claim(rest, ns, claim_name)
        if c is None:
            raise PluginError(f'resourceclaim "{claim_name}" of pod {ns}/{name} not found')
        claims.append(c)
    return f"Pod {ns}/{name}", pod, claims


def explain(rest: Rest, f: Flags, st: Style, namespace: str) -> str:
    subject, pod, claims = _target(rest, f, namespace)
    snap = cluster.snapshot(rest)
    occ = _only(dra_occupancy(snap.slices, snap.claims, snap.pods), f.nodes)
    classes = cluster.device_classes(rest)
    nodes = {str(n["metadata"]["name"]): n for n in snap.nodes}
    out: list[ClaimExplanation] = [
        explain_claim(c, pod, classes, snap.slices, occ, nodes, evaluate) for c in claims
    ]
    if f.output in ("json", "yaml"):
        return render.dump(render.explain_doc(subject, out), f.output)
    return render.explain_text(subject, out, st)


# ---- top -------------------------------------------------------------------------------


def _where(node: str | None, namespace: str | None) -> str:
    return (f" on node {node}" if node else "") + (
        f' in namespace "{namespace}"' if namespace else "")


class Scraper:
    """Where `top` reads the agents' metrics: the URLs of `--metrics-url`, else the
    agent pods found by label, each through the API server's pod proxy."""

    def __init__(self, f: Flags, rest: Rest | None) -> None:
        self._f = f
        self._rest = rest
        self._pool = urllib3.PoolManager(maxsize=SCRAPE_THREADS) if f.metrics_urls else None

    def __call__(self) -> tuple[list[Scrape], tuple[str, ...]]:
        """(one Scrape per agent, warnings about agent pods not scraped). Raises
        PluginError when no agent pod serves metrics, ApiError when the pods cannot
        be listed."""
        f = self._f
        with ThreadPoolExecutor(SCRAPE_THREADS) as ex:
            if self._pool is not None:
                pool = self._pool
                return list(ex.map(lambda u: metrics.scrape_url(pool, u), f.metrics_urls)), ()
            assert self._rest is not None
            rest = self._rest
            pods = cluster.agent_pods(rest, f.agents_namespace, f.node)
            targets, warnings = agent_targets(pods, f.node)
            if not targets:
                why = "".join(f"; {w}" for w in warnings)
                raise PluginError(
                    f"no node agent serving metrics{_where(f.node, f.agents_namespace)} "
                    f"(pods labelled {AGENT_SELECTOR}){why}")
            return list(ex.map(lambda t: metrics.scrape_agent(rest, t), targets)), warnings


def top(scrape: Callable[[], tuple[list[Scrape], tuple[str, ...]]], f: Flags,
        namespace: str | None) -> str:
    """One frame of `top`: scrape, aggregate in core, render. Raises PluginError when
    no agent could be read."""
    scrapes, skipped = scrape()
    t = usage_table(scrapes, namespace, f.node, f.sort_by)
    if t.failed:
        raise PluginError("no node agent's metrics could be read: " + "; ".join(t.warnings))
    t = replace(t, warnings=skipped + t.warnings)
    if f.output in ("json", "yaml"):
        return render.dump(render.top_doc(t), f.output)
    empty = f"No GPU usage reported{_where(f.node, namespace)}."
    return render.top_text(t, namespace is None, f.output == "wide", empty)


def watch(frame: Callable[[], str], out: TextIO, err: TextIO, interval: float,
          sleep: Callable[[float], None]) -> int:
    """A frame every `interval` seconds until Ctrl-C, which returns OK. On a terminal
    each frame replaces the screen (cursor home, clear); otherwise frames follow each
    other, a blank line between, so a pipe or a file gets every table. An error of
    the first frame propagates (nothing shown yet: exit 1); a later one is written to
    `err` and the next frame tries again. Memory does not grow with the frames."""
    redraw = out.isatty()
    first = True
    try:
        while True:
            try:
                text = frame()
            except (PluginError, ApiError) as e:
                if first:
                    raise
                err.write(f"error: {e}\n")
                err.flush()
            else:
                out.write((CLEAR if redraw else "" if first else "\n") + text)
                out.flush()
            first = False
            sleep(interval)
    except KeyboardInterrupt:
        return OK


# ---- run -------------------------------------------------------------------------------


def _namespace(f: Flags) -> str:
    """-n, else the kubeconfig context's, else "default"."""
    ns = f.namespace
    if ns is None and f.kubeconfig is not None:
        ns = kubeconfig_namespace(f.kubeconfig, f.context)
    return ns or "default"


def _run_top(f: Flags, out: TextIO, err: TextIO, sleep: Callable[[float], None]) -> int:
    rest = None if f.metrics_urls else Rest.from_kubeconfig(f.kubeconfig, f.context)
    namespace = None if f.all_namespaces else _namespace(f)
    scraper = Scraper(f, rest)

    def frame() -> str:
        return top(scraper, f, namespace)

    if f.watch:
        return watch(frame, out, err, f.interval, sleep)
    out.write(frame())
    return OK


def run(f: Flags, out: TextIO, env: Mapping[str, str], err: TextIO | None = None,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Run the command of `f`, writing its answer to `out` and errors to `err`
    (stderr); the exit code."""
    err = err or sys.stderr
    try:
        if f.command == "top":
            return _run_top(f, out, err, sleep)
        rest = Rest.from_kubeconfig(f.kubeconfig, f.context)
        st = style(out, env)
        text = (cards(rest, f, st) if f.command == "cards"
                else explain(rest, f, st, _namespace(f)))
    except (PluginError, ConfigError) as e:
        print(f"error: {e}", file=err)
        return FAILED
    except ApiError as e:
        print(f"Error from server ({e.reason}): {e.message}", file=err)
        return FAILED
    out.write(text)
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    return run(parse(sys.argv[1:] if argv is None else argv, env), sys.stdout, env)


def entry() -> None:
    """The `kubectl-vgpu` console script."""
    sys.exit(main())
