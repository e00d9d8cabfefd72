"""The arena report: built from a real (tiny) store, checked as files and in a real headless browser.

The store is built once per module with ``protocol.compare`` on tiny budgets; the winner-marking
rule is checked on small synthetic stores whose confidence intervals do or do not overlap.
"""

from __future__ import annotations

import html
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution

from optarena.arena.render.beta2 import beta2_complements
from optarena.arena.render.document import Heading, Image, Paragraph, Span, Table, render_html, render_markdown
from optarena.arena.render.report import build_report, table_headers
from optarena.arena.spec.experiment import Experiment, default_storage_url
from optarena.arena.study import store
from optarena.arena.study.protocol import compare
from optarena.optim.adamnx import adamnx_beta2

TASKS = ["digits", "rosenbrock"]
OPTIMIZERS = ["adamw", "sgdm", "adaburst", "adamnx"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = (
    "The report's browser check needs Chromium and its driver: apt-get install chromium chromium-driver "
    f"(expected {CHROMIUM} and {CHROMEDRIVER}) and pip install selenium."
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    """A real comparison on tiny budgets: 2 tasks x 4 optimizers x (2 trials + 2 seeds) x 2 epochs.

    One thread: these models are tiny, and two threads on a loaded two-core machine spin-wait each other
    into 100x slower steps. ``compare`` sets the process-wide count, so it is restored afterwards.
    """
    threads = torch.get_num_threads()
    exp = Experiment(
        name="tiny",
        out=tmp_path_factory.mktemp("store"),
        tasks=TASKS,
        optimizers=OPTIMIZERS,
        trials=2,
        seeds=2,
        epochs=2,
        subset=300,
        threads=1,
    )
    try:
        compare(exp)
    finally:
        torch.set_num_threads(threads)
    return exp


@pytest.fixture(scope="module")
def report(experiment: Experiment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(experiment.storage_url, experiment.name, tmp_path_factory.mktemp("report"))


def _md_figures(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def _html_figures(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


# --- content -----------------------------------------------------------------------------------------------


def test_report_names_every_task_optimizer_header_and_protocol(report: Path) -> None:
    md = report.read_text(encoding="utf-8")
    assert md.startswith("# optarena report: tiny\n")
    for name in OPTIMIZERS + TASKS:
        assert name in md
    for task in TASKS:
        assert f"## Task: {task}" in md
    for metric in ("accuracy", "value"):
        assert "| " + " | ".join(table_headers(metric)) + " |" in md
    # The protocol: budget, seeds, epochs, sampler, pruner and every search space.
    assert "2 tuning trials per optimizer" in md
    assert "seeds 1..2" in md
    assert "Epochs: 2" in md
    assert "Sampler: TPESampler (seed 0" in md
    assert "Pruner: MedianPruner" in md
    assert "| `adaburst` | [0.0001, 0.1] log | burst_max ∈ [0.1, 10] log |" in md
    assert "| `sgdm` | [0.001, 1] log | none |" in md
    assert "Versions:" in md and "torch " in md and "optuna " in md
    assert re.search(r"Timings: device cpu, \d+ thread\(s\), 1-minute load average", md)
    assert "Do not pick an optimizer from one plot" in md
    # Accuracy as a percentage; a winner sentence or the no-separation sentence for every task.
    assert re.search(r"\d+\.\d\d% \[", md)
    assert md.count("No optimizer is") + md.count("★") >= len(TASKS)


def test_every_referenced_figure_is_a_png(report: Path) -> None:
    out = report.parent
    md_refs = _md_figures(report.read_text(encoding="utf-8"))
    html_refs = _html_figures((out / "report.html").read_text(encoding="utf-8"))
    assert md_refs == html_refs, "report.md and report.html must show the same figures"
    assert len(set(md_refs)) == len(md_refs), "each figure is shown once"
    files = sorted(p.relative_to(out).as_posix() for p in (out / "figures").iterdir())
    assert sorted(md_refs) == files, "the figures folder holds exactly the figures the report shows"
    for ref in md_refs:
        assert ref.startswith("figures/") and ref.endswith(".png")
        data = (out / ref).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), ref
    expected = {
        "figures/digits_curves_step.png",
        "figures/digits_curves_time.png",
        "figures/digits_lr_sensitivity.png",
        "figures/digits_update_magnitudes.png",
        "figures/rosenbrock_curves_step.png",
        "figures/rosenbrock_curves_time.png",
        "figures/rosenbrock_lr_sensitivity.png",
        "figures/rosenbrock_trajectories.png",
        "figures/performance_profile.png",
        "figures/beta2.png",  # adamw and adamnx are compared
    }
    assert expected <= set(md_refs)


def test_html_is_self_contained_and_escaped(report: Path) -> None:
    page = (report.parent / "report.html").read_text(encoding="utf-8")
    assert "<title>optarena report: tiny</title>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no external resources"
    assert "<style>" in page
    assert "AdaX with β = 1e-4" in page  # UTF-8 text survives
    assert "<script" not in page


def test_text_is_escaped_in_both_formats() -> None:
    blocks = [
        Heading(2, "a <b> & c"),
        Paragraph([Span("x < y & *not bold*"), Span("<i>", bold=True)]),
        Table(["h|1", "h2"], [[[Span("a|b")], [Span("<script>alert(1)</script>", code=True)]]]),
        Image("figures/a.png", 'alt "quoted" <x>', "caption & more"),
    ]
    page = render_html(blocks, "t <&>")
    assert "<title>t &lt;&amp;&gt;</title>" in page
    assert "<h2>a &lt;b&gt; &amp; c</h2>" in page
    assert "<strong>&lt;i&gt;</strong>" in page
    assert "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in page and "<script>" not in page
    assert 'alt="alt &quot;quoted&quot; &lt;x&gt;"' in page
    md = render_markdown(blocks)
    assert "## a &lt;b&gt; &amp; c" in md
    assert "x &lt; y &amp; \\*not bold\\***&lt;i&gt;**" in md
    assert "| h\\|1 | h2 |" in md and "| a\\|b |" in md


def test_rebuild_is_identical_and_leaves_no_open_figures(experiment: Experiment, report: Path, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    again = build_report(experiment.storage_url, experiment.name, tmp_path / "again")
    assert again.read_text(encoding="utf-8") == report.read_text(encoding="utf-8")
    assert (again.parent / "report.html").read_text(encoding="utf-8") == (report.parent / "report.html").read_text(
        encoding="utf-8"
    )
    assert plt.get_fignums() == [], "the report must not leave figures open in pyplot"
    # A stale figure from an earlier build is removed, so the folder matches the report.
    stale = again.parent / "figures" / "stale.png"
    shutil.copy(again.parent / "figures" / "beta2.png", stale)
    build_report(experiment.storage_url, experiment.name, again.parent)
    assert not stale.exists()


def test_unknown_experiment_names_the_known_ones(experiment: Experiment, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny"):
        build_report(experiment.storage_url, "nope", tmp_path)


# --- the winner rule on synthetic stores ----------------------------------------------------------------------


def _synthetic_store(
    tmp_path: Path,
    finals: dict[str, list[float]],
    burst_events: bool = False,
    name: str = "syn",
    diverged: dict[tuple[str, int], str] | None = None,
) -> str:
    """A store with one 'digits'-like task whose reruns end at the given test accuracies."""
    url = default_storage_url(tmp_path)
    storage = store.open_storage(url)
    config = {"name": name, "tasks": ["digits"], "optimizers": list(finals), "trials": 2, "seeds": 3, "epochs": 2}
    config |= {"sampler_seed": 0, "prune": False, "subset": None, "device": "cpu", "threads": None}
    distribution = {"lr": FloatDistribution(1e-4, 1.0, log=True)}
    for optimizer, values in finals.items():
        tune = optuna.create_study(storage=storage, study_name=f"{name}/digits/{optimizer}/tune", direction="maximize")
        attrs = {"config": config, "versions": {"torch": "x"}, "target": 0.8, "mode": "max", "metric": "accuracy"}
        for key, value in (attrs | {"kind": "classification"}).items():
            tune.set_user_attr(key, value)
        for lr, value in ((1e-3, 0.5), (1e-2, 0.7)):
            tune.add_trial(optuna.trial.create_trial(params={"lr": lr}, distributions=distribution, value=value))
        final = optuna.create_study(
            storage=storage, study_name=f"{name}/digits/{optimizer}/final", direction="maximize"
        )
        for seed, value in enumerate(values, start=1):
            records = [
                {"epoch": float(e), "step": 10.0 * e, "wall_time": 0.1 * e, "train_loss": 2.0 / (e + 1)}
                | {"train_metric": value * e / 2, "val_metric": value * e / 2, "test_metric": value * e / 2}
                for e in range(3)
            ]
            user_attrs = {"seed": seed, "param_lr": 1e-2, "records": records, "diverged": False, "threads": 1}
            user_attrs |= {"load_average": [0.5, 0.5, 0.5], "device": "cpu"}
            if burst_events and optimizer == "adaburst":
                user_attrs["burst_events"] = [10]
            if diverged and (optimizer, seed) in diverged:
                user_attrs |= {"diverged": True, "diverged_reason": diverged[optimizer, seed]}
            final.add_trial(optuna.trial.create_trial(value=value, user_attrs=user_attrs))
    return url


def test_separated_intervals_mark_the_winner(tmp_path: Path) -> None:
    url = _synthetic_store(tmp_path, {"adaburst": [0.90, 0.91, 0.92], "sgdm": [0.50, 0.52, 0.51]}, burst_events=True)
    md = build_report(url, "syn", tmp_path / "out").read_text(encoding="utf-8")
    assert "| **★ adaburst** |" in md
    assert "| sgdm |" in md
    assert "★ adaburst: its 95% confidence interval" in md
    assert "No optimizer is separated" not in md
    assert "burst restarts" in md  # the burst events are drawn and said so
    assert "91.00% [88.52%, 93.48%]" in md  # mean_ci of 0.90, 0.91, 0.92 as percentages
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<strong>★ adaburst</strong>" in html


def test_overlapping_intervals_mark_nobody(tmp_path: Path) -> None:
    url = _synthetic_store(tmp_path, {"adaburst": [0.9, 0.5, 0.7], "sgdm": [0.6, 0.8, 0.7]})
    md = build_report(url, "syn", tmp_path / "out").read_text(encoding="utf-8")
    assert "★" not in md
    assert "No optimizer is separated" in md
    assert "burst restarts" not in md


def test_diverged_reruns_say_why_they_stopped(tmp_path: Path) -> None:
    reason = "step 7: Lion: non-finite gradient: 1 NaN/inf value(s) in 1 of 4 gradient(s)"
    url = _synthetic_store(
        tmp_path, {"lion": [0.9, 0.8, 0.85], "sgdm": [0.6, 0.8, 0.7]}, diverged={("lion", 2): reason}
    )
    md = build_report(url, "syn", tmp_path / "out").read_text(encoding="utf-8")
    assert "Diverged reruns, and why they stopped:" in md
    assert f"- `lion` seed 2: {reason}" in md
    assert "| lion |" in md and "| 1/3 |" in md
    url = _synthetic_store(tmp_path / "clean", {"lion": [0.9, 0.8, 0.85], "sgdm": [0.6, 0.8, 0.7]})
    assert "why they stopped" not in build_report(url, "syn", tmp_path / "out2").read_text(encoding="utf-8")


def test_beta2_complements_match_the_optimizers_formulas() -> None:
    t = np.array([1.0, 2.0, 10.0, 1000.0, 1e5])
    curves = beta2_complements(t)
    for beta2 in (0.99, 0.999):
        expected = [1 - adamnx_beta2(beta2, float(s)) for s in t]
        np.testing.assert_allclose(curves[f"AdamNX, β2 = {beta2}"], expected, rtol=1e-6, atol=1e-15)
    adam = [1 - 0.999 * (1 - 0.999 ** (s - 1)) / (1 - 0.999**s) for s in t]
    np.testing.assert_allclose(curves["Adam, β2 = 0.999"], adam, rtol=1e-9)
    np.testing.assert_allclose(curves["AdaX, β = 1e-4"], [1e-4 / ((1 + 1e-4) ** s - 1) for s in t], rtol=1e-9)
    np.testing.assert_allclose(curves["Adafactor, 1 − t^−0.8"], t**-0.8)
    assert all(math.isclose(v[0], 1.0) for v in curves.values()), "every method starts with β̂ = 0"


# --- hostile names: no way out of a code span, a table cell or into raw HTML -----------------------------------

# Names a user may choose (anything but '/'): backtick runs, raw HTML, table pipes, a backslash before a pipe,
# a line break, link syntax, leading and trailing backticks and spaces.
HOSTILE = [
    "a`b``c",
    "`<script>alert(1)</script>`",
    "x | y",
    "p\\|q",
    "two\nlines",
    "[click](javascript:alert(1))",
    " ``` ",
    "<img src=x onerror=alert(1)>&amp;",
]


def _parse_markdown(md: str) -> list[Any]:
    from markdown_it import MarkdownIt  # CommonMark with GitHub's tables; markdown-it-py comes with rich

    return MarkdownIt("commonmark").enable("table").parse(md)


def _inline(tokens: list[Any], kind: str) -> list[str]:
    return [c.content for t in tokens for c in (t.children or []) if c.type == kind]


def _assert_safe_markdown(md: str, names: Sequence[str]) -> list[Any]:
    """No raw HTML or link anywhere, every table row has its header's width, and each name is one code span."""
    tokens = _parse_markdown(md)
    raw = [t.content for t in tokens if t.type == "html_block"] + _inline(tokens, "html_inline")
    assert raw == [], f"raw HTML in the Markdown: {raw}"
    assert not any(c.type == "link_open" for t in tokens for c in (t.children or [])), "a name became a link"
    width = None
    for token in tokens:
        if token.type == "thead_open":
            width = 0
        elif token.type == "th_open":
            width += 1
        elif token.type == "tr_open":
            cells = 0
        elif token.type == "td_open":
            cells += 1
        elif token.type == "tr_close" and cells:
            assert cells == width, "a name split a table row"
    code = _inline(tokens, "code_inline")
    for name in names:
        assert name.replace("\n", " ") in code, f"{name!r} is not one code span: {code}"
    return tokens


def test_code_spans_and_text_survive_hostile_names() -> None:
    for name in HOSTILE:
        blocks = [
            Heading(1, f"report: {name}"),
            Paragraph([Span("Experiment: "), Span(name, code=True), Span(f" and {name}")]),
            Table(["Optimizer", "Fixed"], [[[Span(name, code=True)], [Span(name)]], [[Span(name)], [Span("—")]]]),
        ]
        md = render_markdown(blocks)
        tokens = _assert_safe_markdown(md, [name])
        # As plain text (a heading, a paragraph, table cells) the name reads exactly as given.
        texts = " ".join(_inline(tokens, "text"))  # (a table cell's outer spaces are trimmed, as always)
        assert texts.count(name.replace("\n", " ").strip()) >= 4, (name, texts)
        page = render_html(blocks, name)
        assert "<script" not in page and "<img" not in page
        assert f"<code>{html.escape(name)}</code>" in page


def test_report_of_an_experiment_with_hostile_names_is_safe(tmp_path: Path) -> None:
    optimizers = ["ok", *(n for n in HOSTILE if "/" not in n and "\n" not in n)]  # study names split at '/'
    experiment = "exp`<script>alert(1)` | <img src=x onerror=alert(1)>"
    url = _synthetic_store(tmp_path, {o: [0.9, 0.8, 0.85] for o in optimizers}, name=experiment)
    md = build_report(url, experiment, tmp_path / "out").read_text(encoding="utf-8")
    _assert_safe_markdown(md, [experiment, *optimizers])
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page  # (the figures are <img src="figures/...">)
    for name in [experiment, *optimizers]:
        assert f"<code>{html.escape(name)}</code>" in page


def test_evidence_page_with_hostile_claims_is_safe(tmp_path: Path) -> None:
    from optarena.arena.evidence.claims import Claim
    from optarena.arena.evidence.judgement import Judgement, compare_seeds
    from optarena.arena.evidence.page import render

    names = {
        "experiment": "e`x|p <b>.toml",
        "id": "c`1 | <i>",
        "paper": "P <script>alert(1)</script>",
        "claim": "beats | `x` *y*",
        "paper_result": "r & <b>bold</b>",
        "method": "m`|<s>",
    }
    experiment = Experiment(name="ev`|<script>", tasks=["digits"], optimizers=["adamw", "sgdm"], out=tmp_path)
    claim = Claim(
        id=names["id"], paper=names["paper"], claim=names["claim"], paper_result=names["paper_result"],
        experiment=tmp_path / names["experiment"], task="digits", method=names["method"], baseline="sgdm",
        paper_setup="setup | <u>", paper_effect_source="src <b>x</b> | `y`", commentary="note <i>z</i>",
    )  # fmt: skip
    comparison = compare_seeds([0.90, 0.92], [0.80, 0.81], "max", paired=True)
    judgement = Judgement(claim, experiment, comparison, {1: 0.90, 2: 0.92}, {1: 0.80, 2: 0.81})
    md = render([judgement], title="T`<script>", missing=[claim])
    _assert_safe_markdown(md, [names["experiment"]])
    rows = [line for line in md.splitlines() if line.startswith("| c\\`1")]
    assert len(rows) == 2 and all(row.endswith("| **confirmed** |") for row in rows)  # summary and paper rows
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert not re.search(r"<(script|b|i|u|s)>", rendered), "a claim's text became HTML"
    texts = " ".join(_inline(_parse_markdown(md), "text"))
    assert "src <b>x</b> | `y`" in texts and "note <i>z</i>" in texts
    for key in ("id", "paper", "paper_result"):
        assert names[key] in texts, key


# --- the browser check ---------------------------------------------------------------------------------------


def _find(*candidates: str) -> str | None:
    """The first candidate (a path, or a name looked up on PATH) that is an executable."""
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    """Open report.html from disk in real Chromium: every figure loads, headings are there, a screenshot works."""
    chromium = _find(CHROMIUM, "chromium", "chromium-browser")
    chromedriver = _find(CHROMEDRIVER, "chromedriver")
    if chromium is None or chromedriver is None:
        # Never a skip: CI installs both, and a silent skip would hide a report that does not render.
        missing = [name for name, path in (("chromium", chromium), ("chromedriver", chromedriver)) if path is None]
        pytest.fail(f"Missing {' and '.join(missing)}. {INSTALL_HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        pytest.fail(f"selenium is not installed. {INSTALL_HINT}")

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # offline machines: no flood of refused connections
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get((report.parent / "report.html").resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        page = driver.execute_script(
            """
            const images = Array.from(document.images);
            return {
                title: document.title,
                h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent),
                h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
                images: images.length,
                broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
                tables: document.querySelectorAll('table').length,
                height: document.documentElement.scrollHeight,
            };
            """
        )
        assert page["title"] == "optarena report: tiny"
        assert page["h1"] == ["optarena report: tiny"]
        assert page["h2"] == [*(f"Task: {t}" for t in TASKS), "Across tasks"]
        assert page["broken"] == [], f"images that did not load: {page['broken']}"
        assert page["images"] == len(list((report.parent / "figures").glob("*.png")))
        assert page["tables"] == 1 + len(TASKS)  # the search space and one summary per task
        # The whole page in one screenshot: a tall window instead of scrolling.
        driver.set_window_size(1280, min(int(page["height"]) + 100, 16000))
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    data = shot.read_bytes()
    assert len(data) > 10_000 and data.startswith(PNG_MAGIC)


def test_the_protocol_line_says_how_the_study_tuned():
    from optarena.arena.render.report import _protocol_text

    quick = _protocol_text({"trials": 8, "seeds": 3})
    assert quick == (
        "8 tuning trials per optimizer, each on seed 0, scored on the final validation metric; the best "
        "configuration rerun on seeds 1..3, scored on the test split"
    )
    config = {"trials": 16, "seeds": 10, "tune_seeds": 2, "max_widenings": 2, "widen_factor": 10.0}
    powered = _protocol_text({**config, "protocol": "powered", "tune_weight_decay": True})
    assert "each on seeds 0, 1000001 (mean score)" in powered
    assert "widened ×10 and searched again, up to 2 time(s)" in powered
    assert "weight decay tuned" in powered and "(the 'powered' protocol)" in powered
    assert powered.endswith("rerun on seeds 1..10, scored on the test split")


def test_a_target_no_optimizer_reaches_is_replaced_by_the_reachable_one(experiment: Experiment):
    from optarena.arena.analysis import stats
    from optarena.arena.analysis.views import collect, reporting_target
    from optarena.arena.study.records import load_results

    view = collect(load_results(experiment.storage_url, experiment.name))
    for task in view.tasks:
        unreachable = 1e9 if task.mode == "max" else -1e9
        easy = -1e9 if task.mode == "max" else 1e9
        task.stored_target = easy
        assert reporting_target(task) == (easy, False)  # every rerun reaches it: kept
        task.stored_target = unreachable
        target, derived = reporting_target(task)
        bests = [float(np.median([stats.best_value(c, task.mode) for c in runs.curves()])) for runs in task.runs]
        assert derived and target == stats.reachable_target(bests, task.mode)
        # at least half of the optimizers' median reruns reach the derived target
        reached = [
            math.isfinite(float(np.median([stats.steps_to_target(c, target, task.mode) for c in runs.curves()])))
            for runs in task.runs
        ]
        assert 2 * sum(reached) >= len(reached)


def test_the_report_says_when_its_target_was_derived(tmp_path: Path):
    threads = torch.get_num_threads()
    exp = Experiment(name="far", out=tmp_path / "store", tasks=["digits"], optimizers=["adamw", "sgdm"], trials=1,
                     seeds=2, epochs=1, subset=200, threads=1, target=0.9999)  # fmt: skip
    try:
        compare(exp)
    finally:
        torch.set_num_threads(threads)
    text = (build_report(exp.storage_url, exp.name, tmp_path / "report")).read_text()
    assert "(derived from the reruns: the median over the optimizers of each one's median best test accuracy" in text
    assert "reached the experiment's target, 99.99%)" in text
