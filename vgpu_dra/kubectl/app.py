"""Composition root of `kubectl-vgpu` (run as `kubectl vgpu ...`): its flags, the
kubeconfig, then read the cluster, decide in core, render.

    kubectl vgpu cards [NODE]            who holds shares of each card
    kubectl vgpu explain POD             why the pod's claims do not fit
    kubectl vgpu explain --claim NAME    the same for one ResourceClaim

kubectl's conventions: `--kubeconfig` (else $KUBECONFIG, else ~/.kube/config, else
the in-cluster service account), `--context`, `-n/--namespace` (else the context's,
else "default"), `-A/--all-namespaces`, `-o table|wide|json|yaml`; flags go before
or after the subcommand. Exit codes: 0 ok, 1 not found or an error, 2 usage.
Cards come from our ResourceSlices, and from HAMi's annotations on nodes without
any (`core.occupancy.cluster_occupancy`); explain covers DRA claims only.
Colour and bars only when stdout is a terminal and NO_COLOR is unset or empty.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from vgpu_dra import cel
from vgpu_dra.core.explain import ClaimExplanation, explain_claim, pod_claim_names
from vgpu_dra.core.names import validate_namespace, validate_object_name
from vgpu_dra.core.occupancy import Occupancy, cluster_occupancy, dra_occupancy
from vgpu_dra.kube.rest import ApiError, ConfigError, Rest, kubeconfig_namespace
from vgpu_dra.kubectl import cluster, render
from vgpu_dra.kubectl.render import Style

OK, FAILED, USAGE = 0, 1, 2
OUTPUTS = ("table", "wide", "json", "yaml")
MIN_BAR_COLUMNS = 60


class PluginError(Exception):
    """Something asked about does not exist, or cannot be answered: exit 1."""


def _common(p: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS  # set in either position; absent -> the defaults of `Flags`
    p.add_argument("--kubeconfig", default=s, help="path to the kubeconfig file")
    p.add_argument("--context", default=s, help="the kubeconfig context to use")
    p.add_argument("-n", "--namespace", default=s, help="namespace of the pod or claim")
    p.add_argument("-A", "--all-namespaces", action="store_true", default=s,
                   help="look the pod or claim up in every namespace")
    p.add_argument("-o", "--output", choices=OUTPUTS, default=s, help="output format")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubectl vgpu", description="Shared GPUs (vgpu.hami.io): tenants and fit."
    )
    _common(p)
    sub = p.add_subparsers(dest="command", required=True)
    cards = sub.add_parser("cards", help="each card's use and the pods holding shares")
    _common(cards)
    cards.add_argument("node", nargs="?", help="only this node's cards")
    ex = sub.add_parser("explain", help="why a pod's (or claim's) requests do not fit")
    _common(ex)
    ex.add_argument("pod", nargs="?", help="the pending pod")
    ex.add_argument("--claim", help="explain this ResourceClaim instead of a pod")
    ex.add_argument("--node", dest="nodes", action="append", default=[],
                    help="only this node (repeatable); default: every node with our cards")
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


def parse(argv: Sequence[str], env: Mapping[str, str]) -> Flags:
    """Flags from argv. Exits 2 (argparse) on a usage error."""
    p = parser()
    a = p.parse_args(argv)
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
    )
    try:
        if f.command == "explain" and (f.pod is None) == (f.claim is None):
            raise ValueError("explain takes a POD or --claim NAME (one of them)")
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
    return Occupancy(cards, occ.device_card, occ.warnings)


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


def run(f: Flags, out: TextIO, env: Mapping[str, str]) -> int:
    try:
        rest = Rest.from_kubeconfig(f.kubeconfig, f.context)
        namespace = f.namespace
        if namespace is None and f.kubeconfig is not None:
            namespace = kubeconfig_namespace(f.kubeconfig, f.context)
        st = style(out, env)
        text = (cards(rest, f, st) if f.command == "cards"
                else explain(rest, f, st, namespace or "default"))
    except (PluginError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return FAILED
    except ApiError as e:
        print(f"Error from server ({e.reason}): {e.message}", file=sys.stderr)
        return FAILED
    out.write(text)
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    return run(parse(sys.argv[1:] if argv is None else argv, env), sys.stdout, env)


def entry() -> None:
    """The `kubectl-vgpu` console script."""
    sys.exit(main())
