"""vgpu_dra.kubectl.app: flags, kubeconfig resolution, colour; render's determinism."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.core.published import card, slices
from vgpu_dra.core.occupancy import NodeWarning, dra_occupancy
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.kubectl import app, render


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "argv",
    [
        ["explain"],  # neither POD nor --claim
        ["explain", "p", "--claim", "c"],  # both
        ["cards", "-o", "xml"],
        ["explain", "Bad_Name"],
        ["-n", "NS!", "cards"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        app.parse(argv, {})
    assert e.value.code == 2


def test_flags_before_or_after_the_subcommand(tmp_path: Path) -> None:
    cfg = tmp_path / "kc"
    cfg.write_text("")
    a = app.parse(["--kubeconfig", str(cfg), "-n", "x", "explain", "p", "-o", "json"], {})
    b = app.parse(["explain", "p", "--kubeconfig", str(cfg), "-n", "x", "-o", "json"], {})
    assert a == b and a.namespace == "x" and a.output == "json" and a.pod == "p"
    assert app.parse(["cards"], {"HOME": str(tmp_path)}).output == "table"


def test_kubeconfig_resolution(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    second.write_text("")
    env = {"KUBECONFIG": f"{first}:{second}", "HOME": str(tmp_path)}
    assert app.parse(["cards"], env).kubeconfig == second  # the first that exists
    assert app.parse(["cards"], {"HOME": str(tmp_path)}).kubeconfig is None  # in-cluster
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("")
    assert app.parse(["cards"], {"HOME": str(tmp_path)}).kubeconfig == (
        tmp_path / ".kube" / "config")


@pytest.mark.parametrize(
    ("out", "env", "colour"),
    [
        (Tty(), {}, True),
        (Tty(), {"NO_COLOR": "1"}, False),
        (Tty(), {"TERM": "dumb"}, False),
        (io.StringIO(), {}, False),
    ],
)
def test_colour_only_on_a_terminal(out: io.StringIO, env: dict[str, str], colour: bool) -> None:
    assert app.style(out, env).colour is colour


def test_missing_kubeconfig_exits_1(tmp_path: Path) -> None:
    flags = app.parse(["--kubeconfig", str(tmp_path / "none"), "cards"], {})
    assert app.run(flags, io.StringIO(), {}) == 1


def test_render_is_deterministic_and_uncoloured_by_default() -> None:
    sl = slices("n1", [card(1, "GPU-1"), card(0, "GPU-0")], CapacityMode.CONSUMABLE)
    occ = dra_occupancy(sl, [])
    text = render.cards_text(occ, wide=False, style=render.Style())
    assert "\033[" not in text and text.index("gpu-0") < text.index("gpu-1")
    doc = render.dump(render.cards_doc(occ), "json")
    assert doc == render.dump(render.cards_doc(dra_occupancy(list(reversed(sl)), [])), "json")
    assert [i["card"] for i in json.loads(doc)["items"]] == ["gpu-0", "gpu-1"]
    styled = render.cards_text(occ, wide=False, style=render.Style(colour=True, bars=True))
    assert "[--------------------] 0% memory" in styled and "\033[32m" in styled


def test_a_node_filter_keeps_only_that_nodes_warnings() -> None:
    """`cards kv-a` reports what could not be read on kv-a, not another node's bad
    annotation (a full integration run once put other tests' garbage in the output)."""
    occ = dra_occupancy(slices("n1", [card(0, "GPU-a")], CapacityMode.CONSUMABLE), [], [])
    noisy = replace(
        occ,
        warnings=(NodeWarning("n1", "node n1: bad"), NodeWarning("n2", "node n2: bad")),
    )
    assert [str(w) for w in app._only(noisy, ["n1"]).warnings] == ["node n1: bad"]
    assert len(app._only(noisy, []).warnings) == 2
