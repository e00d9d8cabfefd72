"""One card per registered optimizer for the documentation site, generated from the registry and the repository.

A card (``optimizers/<name>.md``) gathers what is known about one registry entry: its description, paper and
code; the update and the defaults' sources from its page in ``docs/algorithms/``; every constructor keyword's
default and declared constraint (``OptimizerInfo.hyperparameter_defaults``, ``declared_hyperparameters``); the
state bytes per parameter, measured here by building it on a tensor and taking a step; the loop hooks it
declares; its step-time ratios from ``benchmarks/results/step_time_resnet18.md``; the test files that cover it
(the registry-driven suites cover every entry; the others are found by its name in ``tests/``); and the claims of
``docs/results.md`` it appears in.

MkDocs runs this file as a hook (``mkdocs.yml``: ``hooks``): the cards are generated into every build, so they
always describe the registry as it is, and listed under "Optimizers" in the navigation; so is the API page of
``optarena.optim``, which documents every optimizer class of the registry. By hand::

    python docs/gen_cards.py --out /tmp/cards      # writes the cards (and index.md) there
"""

from __future__ import annotations

import argparse
import inspect
import re
from functools import cache
from pathlib import Path
from typing import Any

import torch

import optarena
from optarena.optim.hooks import NO_HOOKS
from optarena.optim.registry import declared_hyperparameters, get_optimizer_info, list_optimizers

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FOLDER = "optimizers"
BENCHMARK = ROOT / "benchmarks" / "results" / "step_time_resnet18.md"
REGISTRY_DRIVEN = ("list_optimizers()", "registry_configs(", "import CONFIGS", "distributed_cases import CASES")


# --- what the repository says about an entry -----------------------------------------------------------------


def algorithm_pages(name: str) -> list[str]:
    """The pages of ``docs/algorithms/`` that describe entry ``name``, the one with its update first."""
    info = get_optimizer_info(name)
    module = info.cls.__module__.rsplit(".", 1)[-1]
    pages = [f"{module}.md"] if (DOCS / "algorithms" / f"{module}.md").is_file() else []
    if info.defaults.get("lookahead"):
        pages.insert(0, "lookahead.md")
    if info.defaults.get("agr") and "agr.md" not in pages:
        pages.append("agr.md")
    return pages


def section(page: str, heading: str) -> str:
    """The ``## `` section of ``docs/algorithms/<page>`` whose title starts with ``heading``, its links made to
    work from ``docs/optimizers/`` (empty if there is none)."""
    text = (DOCS / "algorithms" / page).read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if match is None:
        return ""

    def relink(link: re.Match[str]) -> str:
        target = link.group(2)
        if re.match(r"[a-z]+:|\.\./|/", target):
            return link.group(0)
        return f"{link.group(1)}(../algorithms/{page if target.startswith('#') else ''}{target})"

    body = re.sub(r"(\[[^\]]*\])\(([^)]+)\)", relink, match.group(1).strip())
    return re.sub(r"^###", "####", body, flags=re.M)


FIDELITY = re.compile(r"^## ((?:Deviations|Quirks|Open choices|Paper vs|Differences|Two modes).*)$", re.M)


def fidelity_sections(page: str) -> list[str]:
    """The titles of the page's sections about departures from the paper or the authors' code."""
    return FIDELITY.findall((DOCS / "algorithms" / page).read_text(encoding="utf-8"))


def anchor(title: str) -> str:
    """The id MkDocs gives a heading (``mkdocs.yml``: toc's slugify), from its Markdown title."""
    from pymdownx.slugs import slugify

    return slugify(case="lower")(re.sub(r"`([^`]*)`", r"\1", title), "-")


def state_bytes(name: str) -> tuple[float, int]:
    """(bytes of state per parameter, the number of state tensors per parameter tensor) after one step on a
    4,096-value fp32 tensor: every tensor of ``optimizer.state_dict()['state']``, step counters included."""
    info = get_optimizer_info(name)
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(64, 64))
    options = {**info.test_defaults}
    optimizer = optarena.create_optimizer([param], name, **options)
    param.grad = torch.randn_like(param)
    optimizer.step()
    tensors = [
        value
        for entry in optimizer.state_dict()["state"].values()
        for value in entry.values()
        if isinstance(value, torch.Tensor)
    ]
    return sum(t.numel() * t.element_size() for t in tensors) / param.numel(), len(tensors)


@cache
def benchmark_rows() -> dict[str, list[list[str]]]:
    """optimizer -> its rows of the ResNet-18 step-time table (mode, ms, × fused AdamW, × foreach AdamW, ...)."""
    rows: dict[str, list[list[str]]] = {}
    for line in BENCHMARK.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 5 and cells[1] in ("for-loop", "foreach", "compiled", "fused"):
            rows.setdefault(cells[0], []).append(cells)
    return rows


@cache
def test_files() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "tests").glob("test_*.py"))}


def registry_driven(text: str) -> bool:
    """A test file runs over the whole registry: a line takes its entries (or a suite's that does), naming none."""
    quoted = re.compile("|".join(rf"[\"']{re.escape(n)}[\"']" for n in list_optimizers()))
    return any(marker in line and not quoted.search(line) for line in text.splitlines() for marker in REGISTRY_DRIVEN)


def covering_tests(name: str) -> tuple[list[str], list[str]]:
    """(the registry-driven suites, which run every entry; the other test files that name this one)."""
    driven = [f for f, text in test_files().items() if registry_driven(text)]
    info = get_optimizer_info(name)
    names = [f'"{name}"', f"'{name}'"]
    if info.cls.__module__ != "optarena.optim.baselines" and not info.defaults:
        names += [f"{info.cls.__name__}(", f"optarena.{info.cls.__name__}"]
    named = [f for f, text in test_files().items() if f not in driven and any(n in text for n in names)]
    return driven, named


@cache
def claims() -> list[dict[str, str]]:
    """The claim rows of ``docs/results.md``: their section, and each column by its header."""
    out, header, heading = [], None, ""
    for line in (DOCS / "results.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading, header = line[3:].strip(), None
        elif line.startswith("| claim |"):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
        elif header and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == len(header):
                out.append({"section": heading, **dict(zip(header, cells))})
        elif not line.startswith("|"):
            header = None
    return out


# --- the card ---------------------------------------------------------------------------------------------------


def _code(value: Any) -> str:
    return f"`{value!r}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def card(name: str) -> str:
    info = get_optimizer_info(name)
    pages = algorithm_pages(name)
    baseline = info.cls.__module__ == "optarena.optim.baselines"
    qualified = f"{info.cls.__module__}.{info.cls.__name__}"
    lines = [f"# `{name}`", "", f"{info.description}.", ""]
    facts = [
        ("class", f"[`{qualified}`][{qualified}]" if not baseline else f"`{qualified}` (torch's, guarded)"),
        ("paper", info.paper or "—"),
        ("code", info.code or "—"),
        ("registry defaults", ", ".join(f"`{k}={v!r}`" for k, v in info.defaults.items()) or "none"),
        ("arena learning-rate range", f"{info.lr_range[0]:g} – {info.lr_range[1]:g} (log-uniform)"),
        ("arena search space", ", ".join(f"`{k}` {v}" for k, v in info.search_space.items()) or "`lr` only"),
        (
            "supports",
            ", ".join(
                f"{k} {'✔' if getattr(info, 'supports_' + k) else '✘'}"
                for k in ("complex", "sparse", "foreach", "fused", "maximize", "agr")
            ),
        ),
    ]
    if info.notes:
        facts.append(("notes", info.notes))
    lines += ["| | |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in facts), ""]
    pages_text = ", ".join(f"[{p.removesuffix('.md')}](../algorithms/{p})" for p in pages)
    lines += [f"Equations, every default's source and every deviation from the paper or the authors' code: "
              f"{pages_text or '[the baselines](../algorithms/README.md#baselines-torch-registered-for-comparison)'}.",
              ""]  # fmt: skip

    lines += ["## The update", ""]
    update = next((section(p, h) for p in pages for h in ("Update", "The transform") if section(p, h)), "")
    lines += [update or f"`torch.optim.{info.cls.__name__}`'s, unchanged: see torch's documentation.", ""]

    lines += ["## Defaults", "", "| keyword | default | allowed (checked) |", "|---|---|---|"]
    declared = declared_hyperparameters(name)
    for key, default in info.hyperparameter_defaults().items():
        constraint = declared.get(key)
        allowed = ("None or " if constraint.optional else "") + constraint.describe() if constraint else "—"
        lines.append(f"| `{key}` | {_code(default)} | {_cell(allowed)} |")
    sources = next((section(p, "Defaults") for p in pages if section(p, "Defaults")), "")
    if sources:
        lines += ["", "### Their sources", "", sources]
    lines.append("")

    notes = [(page, title) for page in pages for title in fidelity_sections(page)]
    if notes:
        lines += ["## Fidelity", "", "Where it departs from the paper or the authors' code, and why:", ""]
        lines += [
            f"* [{title}](../algorithms/{page}#{anchor(title)}) ({page.removesuffix('.md')})" for page, title in notes
        ]
        lines.append("")

    hooks = info.hooks
    lines += ["## What a training loop must do", ""]
    if hooks is NO_HOOKS:
        lines += ["Nothing beyond `zero_grad`, `backward` and `step`.", ""]
    else:
        lines += [inspect.cleandoc(type(hooks).__doc__ or ""), "",
                  "The arena's runner, `optarena.integrations.lightning.OptarenaCallback` and "
                  "`optarena.integrations.hf.OptarenaTrainerCallback` do it "
                  "(see [the integrations](../integrations.md)).",
                  ""]  # fmt: skip

    per_param, tensors = state_bytes(name)
    lines += ["## Memory and speed", "",
              f"State after one step on a 64 × 64 fp32 parameter: **{per_param:.2f} bytes per parameter** in {tensors} "
              f"tensor(s), step counters included (measured when this page was built).", ""]  # fmt: skip
    rows = benchmark_rows().get(name, [])
    if rows:
        lines += ["Step time on the ResNet-18 parameter set, as ratios to torch's AdamW measured in the same run "
                  "(`benchmarks/results/step_time_resnet18.md`; the protocol: [performance](../performance.md)):", "",
                  "| mode | × torch fused AdamW | × torch foreach AdamW |", "|---|---|---|",
                  *(f"| {r[1]} | {r[3]} | {r[4]} |" for r in rows), ""]  # fmt: skip
    else:
        lines += ["Its step time is not in the benchmark's ResNet-18 results.", ""]

    driven, named = covering_tests(name)
    lines += ["## Tests", "", "Registry-driven suites, which run every entry and the variants it declares: "
              + ", ".join(f"`tests/{f}`" for f in driven) + ".", ""]  # fmt: skip
    if named:
        lines += ["Tests that name it (oracles, parity with other implementations, its own behaviour): "
                  + ", ".join(f"`tests/{f}`" for f in named) + ".", ""]  # fmt: skip

    mine = [c for c in claims() if "method" in c and name in (c["method"].split(" ")[0], c["baseline"].split(" ")[0])]
    lines += ["## Arena results", ""]
    if mine:
        lines += ["Claims of the seed papers it takes part in ([all results](../results.md)):", "",
                  "| claim | setup | method | baseline | difference | verdict |", "|---|---|---|---|---|---|",
                  *(f"| {c['claim']} | {c['our setup']} | {c['method']} | {c['baseline']} | "
                    f"{c['difference (better > 0)']} | {c['verdict']} |" for c in mine), ""]  # fmt: skip
    else:
        lines += ["It takes part in none of the re-tested claims ([the results](../results.md)).", ""]
    return "\n".join(lines)


def index() -> str:
    lines = ["# Optimizers", "", "One card per registry entry (`optarena.list_optimizers()`), generated from the "
             "registry when this site is built.", "", "| name | what |", "|---|---|"]  # fmt: skip
    lines += [f"| [`{n}`]({n}.md) | {_cell(get_optimizer_info(n).description)} |" for n in list_optimizers()]
    return "\n".join(lines) + "\n"


def api_page() -> str:
    """The API reference of ``optarena.optim``: the registry's pieces, then every optimizer class the registry
    holds (generated, so that a new optimizer is documented, and its card's link to it resolves)."""
    classes = dict.fromkeys(
        f"{info.cls.__module__}.{info.cls.__name__}"
        for info in map(get_optimizer_info, list_optimizers())
        if info.cls.__module__ != "optarena.optim.baselines"
    )
    parts = ["optarena.optim.info.OptimizerInfo", "optarena.optim.hooks", *sorted(classes, key=str.lower),
             "optarena.optim.lookahead.Lookahead", "optarena.optim.base.OptarenaOptimizer"]  # fmt: skip
    intro = "The optimizers, the registry's record of each, and what a training loop must do for them (the hooks)."
    return "\n\n".join(["# `optarena.optim`", intro, *(f"::: {part}" for part in parts)]) + "\n"


def cards() -> dict[str, str]:
    """``optimizers/<name>.md`` -> its Markdown, ``optimizers/index.md``, and the API page ``api/optim.md``."""
    pages = {f"{FOLDER}/index.md": index(), **{f"{FOLDER}/{n}.md": card(n) for n in list_optimizers()}}
    return {**pages, "api/optim.md": api_page()}


# --- MkDocs hooks --------------------------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    """List the cards under the navigation's "Optimizers" entry."""
    for i, item in enumerate(config["nav"] or []):
        if isinstance(item, dict) and "Optimizers" in item:
            config["nav"][i] = {"Optimizers": [f"{FOLDER}/index.md", *(f"{FOLDER}/{n}.md" for n in list_optimizers())]}
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for path, text in cards().items():
        files.append(File.generated(config, path, content=text))
    return files


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the optimizer cards as Markdown files.")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write optimizers/*.md into")
    out = parser.parse_args().out
    for path, text in cards().items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text, encoding="utf-8")
    print(f"{len(list_optimizers())} cards in {out / FOLDER}, and {out / 'api' / 'optim.md'}")
