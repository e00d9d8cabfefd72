"""Results as data: ``optarena export`` and ``results_frame`` on the store of a real (tiny) ``optarena compare``.

The rows must say what the report says (the final test metric of each seed, the curves it draws, every tuning
trial's learning rate and score) and be enough to redraw a figure of the report from the table alone.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from optarena.arena import cli
from optarena.arena.analysis import frames, stats, views
from optarena.arena.spec.experiment import default_storage_url
from optarena.arena.study.records import load_results

pandas = pytest.importorskip("pandas", reason='pip install -e ".[export]"')

NAME, OPTIMIZERS, EPOCHS, SEEDS = "tiny", ["adamw", "adaburst"], 2, 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``optarena compare`` on digits: 2 optimizers x (2 tuning trials + 2 seeds) x 2 epochs on 200 examples."""
    folder = tmp_path_factory.mktemp("compare")
    args = ["compare", "--name", NAME, "--task", "digits", "--optimizers", *OPTIMIZERS, "--trials", "2", "--seeds",
            str(SEEDS), "--epochs", str(EPOCHS), "--subset", "200", "--threads", "1", "--out", str(folder)]  # fmt: skip
    assert cli.main(args) == 0
    return folder


@pytest.fixture(scope="module")
def frame(out: Path) -> pandas.DataFrame:
    return frames.results_frame(default_storage_url(out), NAME)


def test_a_row_per_run_and_evaluation_with_configuration_and_seed(frame: pandas.DataFrame) -> None:
    assert list(frame.columns[:12]) == list(frames.LEADING)
    assert "params_lr" in frame.columns and "params_burst_max" in frame.columns
    assert {"epoch", "step", "wall_time", "train_loss", "train_metric", "val_metric", "test_metric"} <= set(
        frame.columns
    )
    assert set(frame.optimizer) == set(OPTIMIZERS) and set(frame.task) == {"digits"}
    assert (frame.metric == "accuracy").all() and (frame["mode"] == "max").all()
    finals = frame[frame.phase == "final"]
    # Every rerun has its epochs 0..EPOCHS, on seeds 1..SEEDS, with the tuned configuration.
    for _, runs in finals.groupby("optimizer"):
        assert sorted(runs.seed.unique()) == list(range(1, SEEDS + 1))
        assert all(sorted(rows.epoch) == list(range(EPOCHS + 1)) for _, rows in runs.groupby("seed"))
        assert runs.params_lr.nunique() == 1
    assert (frame[frame.phase == "tune"].seed == frames.TUNING_SEED).all()
    # tuning never scores the test split; every rerun evaluation does
    assert frame[frame.phase == "tune"].test_metric.isna().all() and finals.test_metric.notna().all()
    assert finals[finals.optimizer == "adamw"].params_burst_max.isna().all()
    assert all(isinstance(json.loads(e), dict) for e in frame.events)
    # AGR's relative change per layer type, on the reruns' evaluations after training started
    changes = [json.loads(c) for c in finals[finals.epoch > 0].agr_change]
    assert changes and all(c and all(0 < v < 1 for v in c.values()) for c in changes)
    assert all(json.loads(c) == {} for c in finals[finals.epoch == 0].agr_change)


def test_the_rows_hold_the_reports_numbers(out: Path, frame: pandas.DataFrame) -> None:
    view = views.collect(load_results(default_storage_url(out), NAME))
    (task,) = view.tasks
    last = frame[(frame.phase == "final") & (frame.epoch == EPOCHS)]
    for runs in task.runs:
        mine = last[last.optimizer == runs.name].sort_values("seed")
        # The final test metric per seed, as the summary table's mean and interval are computed from.
        assert list(mine.test_metric) == runs.values
        assert list(mine.value) == runs.values
        assert stats.mean_ci(list(mine.test_metric), views.CONFIDENCE) == views.summarize(task, runs).final
        # Every tuning trial's learning rate and score, as the sensitivity figure draws them.
        tune = frame[(frame.phase == "tune") & (frame.optimizer == runs.name)]
        scores = tune.groupby("trial").apply(lambda r: r.sort_values("epoch").val_metric.iloc[-1], include_groups=False)
        assert {t.number: (t.params["lr"], views.trial_score(t)) for t in runs.tune} == {
            n: (tune[tune.trial == n].params_lr.iloc[0], scores[n]) for n in tune.trial.unique()
        }
    bursts = [
        json.loads(e).get("burst", []) for e in frame[(frame.phase == "final") & (frame.optimizer == "adaburst")].events
    ]
    recorded = [t.run.events.get("burst", []) for r in task.runs if r.name == "adaburst" for t in r.finals]
    assert sorted(s for steps in bursts for s in steps) == sorted(s for steps in recorded for s in steps)


def test_a_figure_of_the_report_redrawn_from_the_table(out: Path, frame: pandas.DataFrame, tmp_path: Path) -> None:
    """The curves figure: test metric by step, mean and 95% band over the seeds, from the DataFrame alone."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    view = views.collect(load_results(default_storage_url(out), NAME))
    figure, axes = pyplot.subplots()
    for runs in view.tasks[0].runs:
        rows = frame[(frame.phase == "final") & (frame.optimizer == runs.name) & ~frame.diverged.astype(bool)]
        curves = rows.pivot(index="seed", columns="step", values="test_metric")
        mean, low, high = stats.curve_ci(curves.to_numpy().tolist(), views.CONFIDENCE)
        expected = stats.curve_ci([[r["test_metric"] for r in c] for c in runs.curves()], views.CONFIDENCE)
        assert np.array_equal(mean, expected[0]) and np.array_equal(low, expected[1])
        axes.plot(curves.columns, mean, marker="o", label=runs.name)
        axes.fill_between(curves.columns, low, high, alpha=0.2)
    axes.legend()
    path = tmp_path / "curves.png"
    figure.savefig(path)
    pyplot.close(figure)  # no figure left open for the tests that follow (tests/test_report.py counts them)
    assert path.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_optarena_export_writes_the_same_table(out: Path, frame: pandas.DataFrame, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"results.{fmt}"
    assert cli.main(["export", "--name", NAME, "--out", str(out), "--format", fmt, "--to", str(path)]) == 0
    read = pandas.read_csv(path) if fmt == "csv" else pandas.read_parquet(path)
    assert list(read.columns) == list(frame.columns) and len(read) == len(frame)
    for column in frame.columns:
        mine, theirs = frame[column].tolist(), read[column].tolist()
        if column == "diverged_reason":  # an empty reason reads back as a missing value from CSV
            theirs = ["" if isinstance(v, float) and math.isnan(v) else v for v in theirs]
        assert [None if _missing(v) else v for v in theirs] == [None if _missing(v) else v for v in mine], column


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_export_mistakes_are_one_line(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    to = str(tmp_path / "x.csv")
    assert cli.main(["export", "--name", "nope", "--out", str(out), "--to", to]) == 2
    assert "Unknown experiment 'nope'" in capsys.readouterr().out
    assert cli.main(["export", "--name", NAME, "--out", str(tmp_path / "empty"), "--to", to]) == 2
    assert "holds no optarena.db" in capsys.readouterr().out
    assert cli.main(["export", "--name", NAME, "--out", str(out), "--to", str(tmp_path / "no" / "such" / "x.csv")]) == 2
    assert "No such file or directory" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    assert cli.main(["export", "--name", NAME, "--out", str(out), "--format", "parquet", "--to", to]) == 2
    assert 'Parquet needs pyarrow: pip install "optarena[export]"' in capsys.readouterr().out
