"""The report's readability defects of issue 18, each checked on a real (synthetic) store: panels of at most
8 series with legends outside the data, 77 distinct colours, a profile that carries information when the
fixed target is out of reach, the QMC sampler's text and variants the store does not describe."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from optarena.arena.analysis.stats import reachable_target
from optarena.arena.analysis.views import collect
from optarena.arena.render import figures, plotting, report
from optarena.arena.render.report import build_report
from optarena.arena.study.records import load_results
from tests.test_report import _synthetic_store

MANY = [f"opt{i:02d}" for i in range(20)]


@pytest.fixture(scope="module")
def many_view(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("many")
    finals = {name: [0.40 + 0.01 * i, 0.41 + 0.01 * i, 0.42 + 0.01 * i] for i, name in enumerate(MANY)}
    url = _synthetic_store(tmp, finals)
    return url, collect(load_results(url, "syn"))


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    saved: list[Figure] = []
    original = plotting.save

    def keep(fig: Figure, path: Path) -> None:
        fig.canvas.draw()  # lay out (constrained layout) before measuring
        saved.append(
            [
                (ax.get_window_extent(), [t.get_text() for t in ax.get_legend().get_texts()], ax.get_legend())
                for ax in fig.axes
            ]
        )
        original(fig, path)

    monkeypatch.setattr(plotting, "save", keep)
    return saved


@pytest.mark.parametrize("draw", ["curves", "sensitivity", "profile"])
def test_at_most_eight_series_per_axes_and_legends_outside(many_view, tmp_path, monkeypatch, draw):
    _, view = many_view
    task = view.tasks[0]
    colors = plotting.optimizer_colors(view.optimizers)
    saved = _capture(monkeypatch)
    if draw == "curves":
        figures.curves_by_step(task, colors, tmp_path)
    elif draw == "sensitivity":
        figures.lr_sensitivity(task, colors, tmp_path)
    else:
        figures.performance_profile(view, colors, tmp_path)
    (axes,) = saved
    assert len(axes) == math.ceil(len(MANY) / 8)  # 20 optimizers: three panels (7, 7, 6)
    shown = []
    for extent, labels, legend in axes:
        names = [label for label in labels if label in MANY]
        assert 0 < len(names) <= 8
        shown += names
        box = legend.get_window_extent()
        assert box.x0 >= extent.x1, "the legend lies right of the data, not over it"
    assert sorted(shown) == MANY  # every optimizer once


def test_colours_are_distinct_for_many_optimizers():
    names = [f"o{i}" for i in range(77)]
    colors = plotting.optimizer_colors(names)
    assert len({tuple(np.round(c, 6)) for c in colors.values()}) == 77
    assert plotting.chunks(list(range(28))) == [list(range(i, i + 7)) for i in range(0, 28, 7)]
    assert plotting.chunks([]) == [[]]


def test_profile_uses_a_reachable_target_when_the_fixed_one_is_out_of_reach(many_view, tmp_path):
    _, view = many_view  # the store's target is 0.8; the best rerun ends at 0.61
    costs, derived = figures.profile_costs(view)
    best = [max(r["test_metric"] for r in c) for runs in view.tasks[0].runs for c in runs.curves()]
    assert max(best) < 0.8
    medians = [
        float(np.median([max(r["test_metric"] for r in c) for c in runs.curves()])) for runs in view.tasks[0].runs
    ]
    assert derived == {"digits": reachable_target(medians, "max")}
    row = costs["digits"]
    reached = [name for name, cost in row.items() if math.isfinite(cost)]
    assert len(reached) >= len(MANY) / 2 and len(reached) < len(MANY)  # half reach it: the profile separates them
    blocks = figures.performance_profile(view, plotting.optimizer_colors(view.optimizers), tmp_path)
    assert "derived from the data" in blocks[0].caption and "digits: " in blocks[0].caption


def test_qmc_sampler_text_and_undescribed_variants(tmp_path):
    config = {"sampler": "qmc", "sampler_seed": 0, "trials": 5}
    text = report._sampler_text(config)
    assert "?" not in text and "no random start-up phase" in text and text.startswith("QMCSampler (seed 0")
    url = _synthetic_store(tmp_path, {"adamw": [0.5, 0.6, 0.55], "my_variant": [0.5, 0.6, 0.56]})
    md = build_report(url, "syn", tmp_path / "out").read_text(encoding="utf-8")
    assert "not registered" not in md
    row = next(line for line in md.splitlines() if line.startswith("| `my_variant` |"))
    assert "tried 0.001 … 0.01 (2 values)" in row and "does not describe" in row


def test_a_report_takes_the_callers_colours(many_view, tmp_path, monkeypatch):
    url, view = many_view
    chosen = {name: plotting.PALETTE[-1 - i] for i, name in enumerate(reversed(view.optimizers))}
    seen: list[dict] = []
    original = figures.curves_by_step

    def spy(task, colors, folder):
        seen.append(dict(colors))
        return original(task, colors, folder)

    monkeypatch.setattr(figures, "TASK_FIGURES", (spy,))
    build_report(url, "syn", tmp_path / "out", colors=chosen)
    assert seen == [chosen]
    build_report(url, "syn", tmp_path / "out2", colors={"opt00": "red"})  # missing names: the report's own
    assert seen[-1] == plotting.optimizer_colors(view.optimizers)


def test_evidence_small_multiples_keep_accuracy_bands_in_range(tmp_path, monkeypatch):
    from optarena.arena.evidence import figures as evidence_figures

    url = _synthetic_store(tmp_path, {"adamw": [0.1, 0.9], "sgdm": [0.2, 0.95]})  # two far-apart seeds
    results = {"syn": load_results(url, "syn")}
    panel = dict(title="c", experiment="syn", task="digits", key="test_metric", optimizers=["adamw", "sgdm"],
                 ylabel="test accuracy", at_step=None)  # fmt: skip
    bands: list[np.ndarray] = []

    def keep(fig, path):
        for ax in fig.axes:
            bands.extend(c.get_paths()[0].vertices[:, 1] for c in ax.collections)

    monkeypatch.setattr(plotting, "save", keep)
    evidence_figures.small_multiples([panel], results, evidence_figures.palette(["adamw", "sgdm"]), tmp_path / "c.png")
    assert len(bands) == 2
    assert all(band.min() >= 0 and band.max() <= 1 for band in bands)
    assert any(band.max() == 1 for band in bands)  # the interval did reach past 1 and was clipped
