"""``optarena evidence``: (run and) judge every claim of a claims file, write the page and the full reports.

Every claim's experiment file is read (with ``--smoke``: at CI size, each in its own store under
``runs/evidence-smoke/``), every claim is checked against its experiment's tasks and optimizers, and
every output is checked before anything runs. With ``run`` each experiment is compared first
(resuming whatever its store holds). The verdicts go to the page; figures and each experiment's
full report to the folder of the same name beside it (``docs/results.md`` -> ``docs/results/``).
With ``workers`` > 1 each experiment's trials are shared with ``optarena worker`` processes on its store.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optarena.arena.evidence.claims import Claim, load_claims_file
from optarena.arena.evidence.figures import palette
from optarena.arena.evidence.judgement import Judgement, MissingRuns, correct, judge, measured
from optarena.arena.evidence.page import render
from optarena.arena.render import markdown
from optarena.arena.render.report import build_report
from optarena.arena.run import preflight
from optarena.arena.spec.config import ConfigError, load_experiment_file
from optarena.arena.spec.experiment import Experiment, default_storage_url
from optarena.arena.study import store
from optarena.arena.study.protocol import check_experiment, compare
from optarena.arena.tasks import get_task

# CI size: every study's tasks, optimizers and variants, on a few hundred examples; one tuning seed and at most one
# widening keep the powered studies' smoke runs to about 5 runs per pair (tests/test_protocol_power.py covers
# the tuning seeds and widenings themselves).
SMOKE = {"subset": 256, "eval_subset": 64, "epochs": 2, "trials": 2, "seeds": 2, "tune_seeds": 1, "max_widenings": 1}


@dataclass(frozen=True)
class Outcome:
    judgements: list[Judgement]
    missing: list[Claim]  # claims whose experiment has not run their optimizers yet
    page: Path


def evidence(
    claims_path: Path,
    out: Path,
    *,
    run: bool = False,
    smoke: bool = False,
    on_run: Callable[[Path, str], None] | None = None,
    workers: int = 1,
) -> Outcome:
    """Judge every claim of ``claims_path`` and write the page to ``out``; ``run``: compare each experiment first.

    ``on_run(experiment file, store URL)`` is called before each experiment runs; ``workers``: processes that
    run each experiment's trials together (this one and ``workers - 1`` ``optarena worker`` processes).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Invalid workers: {workers!r}; expected an integer >= 1")
    claims_file = load_claims_file(claims_path)
    overrides: dict[Path, dict[str, Any]] = {}
    for claim in claims_file.claims:
        extra: dict[str, Any] = {}
        if smoke:  # its own store too: never the full study's (which an experiment file may name)
            folder = Path("runs/evidence-smoke") / claim.experiment.stem
            extra = dict(SMOKE, out=folder, storage=default_storage_url(folder))
        overrides[claim.experiment] = extra
    experiments = {path: load_experiment_file(path, **extra) for path, extra in overrides.items()}
    for claim in claims_file.claims:  # a claim its experiment does not run would stay "not run yet" forever
        experiment = experiments[claim.experiment]
        for what, name, among in (
            ("task", claim.task, experiment.tasks),
            ("method", claim.method, experiment.optimizers),
            ("baseline", claim.baseline, experiment.optimizers),
        ):
            if name not in among:
                raise ConfigError(
                    f"{claims_path}: claim {claim.id!r}: {what} {name!r} is not among the "
                    f"{'tasks' if what == 'task' else 'optimizers'} of {claim.experiment.name} ({', '.join(among)})"
                )
        try:  # the check judge() makes, before anything runs
            measured(claim, get_task(claim.task))
        except ValueError as error:
            raise ConfigError(f"{claims_path}: {error}") from None
    extras = out.parent / out.stem  # docs/results.md -> docs/results/: figures and full reports
    preflight.check_writable_file(out, "--out")
    preflight.check_writable_dir(extras, "--out (its figures and reports folder)")
    if run:
        for path, experiment in experiments.items():  # every study's outputs and data, before the first runs
            check_experiment(experiment, option=f"{path}: out", storage_option=f"{path}: storage")
        for path, experiment in experiments.items():
            if on_run is not None:
                on_run(path, experiment.storage_url)
            compare_with_workers(experiment, workers)
    judgements, missing = [], []
    for claim in claims_file.claims:
        if not _store_exists(experiments[claim.experiment]):  # never create an empty store by reading it
            missing.append(claim)
            continue
        try:
            judgements.append(judge(claim, overrides[claim.experiment]))
        except MissingRuns:
            missing.append(claim)
    title = claims_file.title + (" (smoke scale: not evidence)" if smoke else "")
    judgements = correct(judgements)  # Holm over the page's claims
    # one colour per optimizer on the page and in every full report: every optimizer a claim or a study names
    names = [n for c in claims_file.claims for n in (c.method, c.baseline)]
    colors = palette(names + [n for e in experiments.values() for n in e.optimizers])
    text = render(
        judgements, title, claims_file.commentary, figures=extras / "figures", page=out, missing=missing,
        untested=claims_file.untested, colors=colors,
    )  # fmt: skip
    reports = []
    for path, experiment in experiments.items():
        if not _store_exists(experiment) or experiment.name not in store.list_experiments(experiment.storage_url):
            continue  # nothing run yet: its claims are listed as such
        report = build_report(experiment.storage_url, experiment.name, extras / experiment.name, colors)
        link = report.relative_to(out.parent).as_posix()
        reports.append(f"- {markdown.code_span(path.name)}: [{markdown.text(link)}]({markdown.link_target(link)})")
    text += "\n## Full reports\n\nEvery optimizer's curves, tables and sensitivity, per experiment:\n\n"
    text += "\n".join(reports) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return Outcome(judgements, missing, out)


def worker_command(experiment: Experiment) -> list[str]:
    """The ``optarena worker`` command line that joins ``experiment`` in its store."""
    return [sys.executable, "-m", "optarena", "worker", "--storage", experiment.storage_url, "--study", experiment.name]


def compare_with_workers(experiment: Experiment, workers: int) -> None:
    """``compare(experiment)`` in this process beside ``workers - 1`` ``optarena worker`` processes on its store.

    The budget is queued before any worker starts (a worker joins only a queued experiment); every trial runs
    once, whoever takes it. A worker that fails is reported once this process has finished the budget: its
    trial was given back and run here, and every finished run stays in the store.
    """
    if workers == 1:
        compare(experiment)
        return
    compare(experiment, prepare_only=True)
    # a worker's progress lines would interleave with this command's; its errors go to stderr
    helpers = [subprocess.Popen(worker_command(experiment), stdout=subprocess.DEVNULL) for _ in range(workers - 1)]
    try:
        compare(experiment)
        codes = [helper.wait() for helper in helpers]
    finally:
        for helper in helpers:  # interrupted, or compare failed: no worker is left running
            if helper.poll() is None:
                helper.terminate()
                helper.wait()
    failed = [code for code in codes if code != 0]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of the {len(helpers)} 'optarena worker' processes on experiment {experiment.name!r} "
            f"exited with code {', '.join(map(str, failed))} (their errors are above); this process ran the rest of "
            f"its budget, and every finished run is in {experiment.storage_url}"
        )


def _store_exists(experiment: Experiment) -> bool:
    """Whether the experiment's store is there to read (a server store always is; a SQLite file may not be)."""
    sqlite = store.sqlite_file(experiment.storage_url)
    return sqlite is None or sqlite.exists()
