"""The figures of a generative task: FID over training with intervals over seeds, and sample grids per optimizer.

Both draw only what the reruns recorded at their FID epochs (:func:`~optarena.arena.analysis.views.generation_rows`)
and return nothing for other tasks. The FID figure says on what features the FID was computed and, for the
arena's own classifier, its test accuracy, and that such an FID is not Inception-FID.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from optarena.arena.analysis import stats
from optarena.arena.analysis.views import (
    CONFIDENCE,
    TaskView,
    generation_info,
    generation_rows,
    shared_samples,
    summarize_generation,
)
from optarena.arena.render import plotting
from optarena.arena.render.document import Block, Image, Paragraph, Span, Table, spans
from optarena.arena.render.formatting import fmt_ci, fmt_number
from optarena.arena.render.plotting import FOLDER, Colors

NOT_INCEPTION = (
    "This is not Inception-FID: its values rank the runs of this task against each other and cannot be compared "
    "with published FID numbers, which use the features of an ImageNet Inception-v3."
)


def _features_sentence(info: dict) -> str:
    if info.get("network") == "inception":
        return f"FID on {info.get('description', 'Inception features')}."
    accuracy = info.get("test_accuracy")
    accuracy_text = f"; its test accuracy is {100 * accuracy:.2f}%" if isinstance(accuracy, (int, float)) else ""
    described = info.get("description", "the penultimate features of a classifier trained on the task's data")
    return f"FID on the {described}{accuracy_text}. {NOT_INCEPTION}"


def _draw_fid(task: TaskView, colors: Colors, path: Path) -> None:
    fig = plotting.new_figure()
    ax = fig.add_subplot()
    for runs in task.runs:
        curves = [rows for rows in map(generation_rows, runs.curves()) if rows]
        if not curves:
            continue
        length = min(len(rows) for rows in curves)
        x = np.mean([[row["step"] for row in rows[:length]] for rows in curves], axis=0)
        mean, low, high = stats.curve_ci([[row["fid"] for row in rows[:length]] for rows in curves], CONFIDENCE)
        low = np.clip(low, 0, None)  # a t-interval over few seeds can pass below 0; a distance cannot
        style = plotting.linestyle(colors, runs.name)
        ax.plot(x, mean, color=colors[runs.name], linestyle=style, marker="o", label=runs.name)
        if len(curves) > 1 and length > 1:
            ax.fill_between(x, low, high, color=colors[runs.name], alpha=0.2, linewidth=0)
        elif len(curves) > 1:  # one FID epoch: a band of one point would not show
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], color=colors[runs.name], capsize=4, linestyle="none")
    ax.set_xlabel("step")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(f"{task.name}: FID (mean ± 95% CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plotting.save(fig, path)


def generation_curves(task: TaskView, colors: Colors, folder: Path) -> list[Block]:
    """FID against steps, mean and 95% band over the seeds, with the final FID, precision and recall."""
    summaries = {runs.name: summarize_generation(runs) for runs in task.runs}
    if not any(summaries.values()):
        return []
    info = generation_info(task)
    name = f"{plotting.slug(task.name)}_fid.png"
    _draw_fid(task, colors, folder / name)
    sampler = f" Samples: {info['samples']} by {info['sampler']}." if "samples" in info and "sampler" in info else ""
    rows = []
    for runs_name, summary in summaries.items():
        if summary is None:
            rows.append([spans(runs_name), spans("—"), spans("—"), spans("—"), spans("0")])
            continue
        rows.append(
            [
                spans(runs_name),
                spans(f"{fmt_ci(*summary.fid, summary.seeds, 'fid')} (epoch {summary.epoch})"),
                spans(fmt_number(summary.precision)),
                spans(fmt_number(summary.recall)),
                spans(str(summary.seeds)),
            ]
        )
    return [
        Paragraph(spans(Span("Generated samples.", bold=True), " " + _features_sentence(info) + sampler)),
        Image(
            f"{FOLDER}/{name}",
            f"{task.name}: FID over training",
            "FID of each rerun's samples against as many test images at its FID epochs: mean over the non-diverged "
            "seeds, band (a bar at a single FID epoch) = 95% CI (clipped at 0). The same initial noise at every "
            "epoch and, seed for seed, for every optimizer.",
        ),
        Table(["Optimizer", "Last FID: mean [95% CI, clipped at 0]", "Precision", "Recall", "Seeds"], rows),
        Paragraph(
            spans(
                "Precision: the fraction of samples inside the k-NN manifold (k = 3) of the test images' features "
                "(realism); recall: the fraction of test images inside the samples' manifold (coverage; a collapsed "
                "generator has low recall), as Kynkäänniemi et al. (2019); means over seeds."
            )
        ),
    ]


def _decode(png: str) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(png))))


def sample_grids(task: TaskView, colors: Colors, folder: Path) -> list[Block]:
    """Each optimizer's samples (rows) at each FID epoch (columns), from the same seed and so the same noise."""
    seed, grids = shared_samples(task)
    if seed is None:
        return []
    epochs = sorted({epoch for by_epoch in grids.values() for epoch in by_epoch})
    fig = plotting.new_figure(1.8 * len(epochs) + 1.2, 1.9 * len(grids) + 0.4)
    axes = fig.subplots(len(grids), len(epochs), squeeze=False)
    for row, (optimizer, by_epoch) in enumerate(grids.items()):
        for column, epoch in enumerate(epochs):
            ax = axes[row][column]
            ax.set_xticks([])
            ax.set_yticks([])
            if epoch in by_epoch:
                image = _decode(by_epoch[epoch])
                ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            if row == 0:
                ax.set_title(f"epoch {epoch}", fontsize=9)
            if column == 0:
                ax.set_ylabel(optimizer, fontsize=9, color=colors.get(optimizer, "black"))
    name = f"{plotting.slug(task.name)}_samples.png"
    plotting.save(fig, folder / name)
    ragged = any(set(by_epoch) != set(epochs) for by_epoch in grids.values())
    caption = (
        f"Samples of the seed-{seed} rerun of each optimizer (rows) at its FID epochs (columns): the first 16 of "
        "the FID samples, generated from the same initial noise for every optimizer and epoch, so differences "
        "are the weights'; blurring or collapse shows as smooth or repeated images."
        + (" An empty cell: that rerun stopped before the epoch." if ragged else "")
    )
    return [Image(f"{FOLDER}/{name}", f"{task.name}: samples per optimizer (seed {seed})", caption)]
