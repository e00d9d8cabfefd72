"""An experiment's results as a table: one row per run and evaluation, for pandas, notebooks and files.

:func:`result_rows` flattens :class:`~optarena.arena.study.records.ExperimentResults` (read through
:func:`~optarena.arena.study.records.load_results`, like the report) into rows; :func:`results_frame` returns
them as a ``pandas.DataFrame`` (``pip install "optarena[export]"``), and :func:`write_table` writes them as CSV
(no extra needed) or Parquet (``pyarrow``), which ``optarena export`` does. The columns:

* ``experiment``, ``task``, ``metric`` and ``mode`` (the task's metric and the direction it improves in),
  ``target``; ``optimizer`` (a registry name or a variant), ``phase`` (``'tune'`` or ``'final'``), ``trial`` (the
  trial's number in its study), ``state`` (``'complete'`` or ``'pruned'``), ``seed`` (a tuning trial trains on
  seed 0, a rerun on its own), ``value`` (what the trial scored: the last validation metric when tuning, the
  test metric of a rerun; a diverged run scores the task's worst), ``seconds`` (the trial's duration);
* ``params_<name>``: the configuration the run trained with (``params_lr``, ...);
* ``epoch``, ``step``, ``wall_time`` and every metric the run recorded at that evaluation (``train_loss``,
  ``train_metric``, ``val_metric``, ``test_metric``, ...; epoch 0 is before training). A pruned tuning trial
  stored no run: its rows are the validation values it reported (``epoch``, ``val_metric``);
* ``diverged``, ``diverged_reason``; ``events``: a JSON object of the events since the previous evaluation
  (``{"burst": [12, 40]}``: Adaburst's restarts, at the steps they followed; the last row also holds any later
  ones); ``update_magnitudes``: a JSON object, layer -> mean |Δθ| per step over the epoch that ended (reruns);
  ``threads`` and ``device``.

A function task's 2-D trajectory (one point per step) is not a row per evaluation: it is in the records.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from optarena.arena.analysis.views import seed_of
from optarena.arena.study.records import ExperimentResults, RunRecord, TrialRecord, load_results

TUNING_SEED = 0  # study/objectives.py: every tuning trial trains on seed 0
FORMATS = ("csv", "parquet")
LEADING = ("experiment", "task", "metric", "mode", "target", "optimizer", "phase", "trial", "state", "seed", "value",
           "seconds")  # fmt: skip
CURVE = ("epoch", "step", "wall_time")
TRAILING = ("diverged", "diverged_reason", "events", "update_magnitudes", "agr_change", "threads", "device")
PARAMS = "params_"


def _events_between(events: dict[str, list[int]], low: float, high: float) -> str:
    inside = {name: [s for s in steps if low < s <= high] for name, steps in sorted(events.items())}
    return json.dumps({name: steps for name, steps in inside.items() if steps})


def _curve_rows(run: RunRecord) -> list[dict[str, Any]]:
    rows = sorted(run.rows, key=lambda r: r.get("epoch", 0.0))
    out = []
    previous = -math.inf
    for i, row in enumerate(rows):
        high = math.inf if i == len(rows) - 1 else row.get("step", math.inf)
        epoch = int(row.get("epoch", 0))
        magnitudes = {
            layer: values[epoch - 1] for layer, values in run.update_magnitudes.items() if 0 < epoch <= len(values)
        }
        changes = {kind: values[epoch - 1] for kind, values in run.agr_change.items() if 0 < epoch <= len(values)}
        events = _events_between(run.events, previous, high)
        out.append(
            {**row, "events": events, "update_magnitudes": json.dumps(magnitudes), "agr_change": json.dumps(changes)}
        )
        previous = row.get("step", previous)
    return out


def _trial_rows(base: dict[str, Any], trial: TrialRecord) -> list[dict[str, Any]]:
    run = trial.run
    if run is None:  # pruned inside its run: only the validation values it reported were kept
        return [{**base, "epoch": float(e), "val_metric": v} for e, v in sorted(trial.intermediate_values.items())]
    measured = {"diverged": run.diverged, "diverged_reason": run.diverged_reason, "threads": run.threads,
                "device": run.device}  # fmt: skip
    curve = _curve_rows(run) or [{"events": _events_between(run.events, -math.inf, math.inf)}]
    return [{**base, **row, **measured} for row in curve]


def result_rows(results: ExperimentResults) -> list[dict[str, Any]]:
    """Every evaluation of every trial of ``results`` as a row (see the module docstring), tuning trials first."""
    out = []
    for (task, optimizer), pair in results.pairs.items():
        info = pair.config.task if pair.config is not None else None
        for trial in [*sorted(pair.tune, key=lambda t: t.number), *sorted(pair.final, key=seed_of)]:
            base = {
                "experiment": results.name,
                "task": task,
                "metric": info.metric if info else None,
                "mode": info.mode if info else None,
                "target": info.target if info else None,
                "optimizer": optimizer,
                "phase": trial.phase,
                "trial": trial.number,
                "state": trial.state,
                "seed": TUNING_SEED if trial.phase == "tune" else seed_of(trial),
                "value": trial.value,
                "seconds": trial.seconds,
                **{PARAMS + name: value for name, value in sorted(trial.params.items())},
            }
            out.extend(_trial_rows(base, trial))
    return out


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The rows' columns in a fixed order: who and what, the configuration, the curve, then how the run went."""
    seen = list(dict.fromkeys(key for row in rows for key in row))
    params = sorted(k for k in seen if k.startswith(PARAMS))
    metrics = [k for k in seen if k not in (*LEADING, *CURVE, *TRAILING) and not k.startswith(PARAMS)]
    return [*LEADING, *params, *CURVE, *metrics, *TRAILING]


def load_rows(url: str, experiment: str) -> list[dict[str, Any]]:
    """:func:`result_rows` of ``experiment`` in the store at ``url``."""
    return result_rows(load_results(url, experiment))


def results_frame(url: str, experiment: str) -> Any:
    """The rows of ``experiment`` in the store at ``url`` as a ``pandas.DataFrame`` (the columns of :func:`columns`).

    The same table ``optarena export`` writes: every figure of the report can be redrawn from it.
    """
    try:
        import pandas
    except ImportError:
        raise RuntimeError('results_frame needs pandas: pip install "optarena[export]"') from None
    rows = load_rows(url, experiment)
    return pandas.DataFrame.from_records(rows, columns=columns(rows))


def _uniform(values: list[Any]) -> list[Any]:
    """A column's values with integers as floats where floats are among them (one Parquet type per column)."""
    if any(isinstance(v, float) for v in values) and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
    ):
        return [None if v is None else float(v) for v in values]
    return values


def write_table(rows: list[dict[str, Any]], path: Path, fmt: str) -> None:
    """Write ``rows`` to ``path`` as ``'csv'`` (the standard library's writer) or ``'parquet'`` (pyarrow)."""
    if fmt not in FORMATS:
        raise ValueError(f"Invalid format: {fmt!r}; expected one of {', '.join(FORMATS)}")
    names = columns(rows)
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=names, restval="")
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        return
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise RuntimeError('Parquet needs pyarrow: pip install "optarena[export]" (or export --format csv)') from None
    table = pyarrow.table({name: _uniform([row.get(name) for row in rows]) for name in names})
    pyarrow.parquet.write_table(table, path)
