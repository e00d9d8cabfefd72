"""The Adam family's effective second-moment decay β̂2(t): the closed forms and the report's figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from optarena.arena.analysis.views import ExperimentView
from optarena.arena.render import plotting
from optarena.arena.render.document import Block, Image
from optarena.arena.render.plotting import FOLDER, Colors

# The optimizers whose second-moment decay the β2(t) figure explains.
BETA2_OPTIMIZERS = frozenset({"adamnx", "adax", "adam", "adamw", "adafactor"})


def beta2_complements(t: np.ndarray) -> dict[str, np.ndarray]:
    """1 − β̂_t, the weight of the newest g² in each method's second moment, computed without cancellation.

    Adam (bias-corrected, β2 = 0.999): β̂ = β2(1−β2^{t−1})/(1−β2^t), so 1 − β̂ = (1−β2)/(1−β2^t).
    AdaX (β = 1e-4): 1 − β̂ = β/((1+β)^t − 1).
    AdamNX (Eq. 11, r = 1−β2): 1 − β̂ = β2^{r(t−1)}(1 − β2^r)/(1 − β2^{rt}), equal to 1 − ``adamnx_beta2``
    but exact where β̂ rounds to 1 (it falls below 1e-16 within the plotted range for β2 = 0.99).
    Adafactor: β̂ = 1 − t^−0.8.
    """
    t = np.asarray(t, dtype=float)
    out = {"Adam, β2 = 0.999": 1e-3 / -np.expm1(t * math.log(0.999))}
    beta = 1e-4
    out["AdaX, β = 1e-4"] = beta / np.expm1(t * math.log1p(beta))
    for beta2 in (0.99, 0.999):
        rate, log_b = 1 - beta2, math.log(beta2)
        newest = -math.expm1(rate * log_b)  # 1 − β2^r
        out[f"AdamNX, β2 = {beta2}"] = np.exp(rate * (t - 1) * log_b) * newest / -np.expm1(rate * t * log_b)
    out["Adafactor, 1 − t^−0.8"] = t**-0.8
    return out


def _draw_beta2(path: Path) -> None:
    t = np.unique(np.round(np.logspace(0, 6, 800)))
    fig = plotting.new_figure()
    ax = fig.add_subplot()
    for (label, values), style in zip(beta2_complements(t).items(), ("-", "--", "-", "-.", ":")):
        # AdaX (dashed) lies on AdamNX with β2 = 0.99: draw it on top so both stay visible.
        ax.plot(t, values, linestyle=style, linewidth=1.8, label=label, zorder=3 if label.startswith("AdaX") else 2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-12, 2)
    ax.set_xlabel("step t")
    ax.set_ylabel("1 − β̂2(t)  (weight of the newest g²)")
    ax.set_title("Effective second-moment decay β̂2(t)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    plotting.save(fig, path)


def beta2(view: ExperimentView, colors: Colors, folder: Path) -> list[Block]:
    """The effective second-moment decay of the Adam family, when the experiment has one of them."""
    if not BETA2_OPTIMIZERS & set(view.optimizers):
        return []
    _draw_beta2(folder / "beta2.png")
    return [
        Image(
            f"{FOLDER}/beta2.png",
            "Effective second-moment decay",
            "1 − β̂2(t), the weight each method gives the newest squared gradient, on log-log axes: Adam's "
            "levels off at 1 − β2, Adafactor's falls as t^−0.8, AdaX's and AdamNX's fall towards 0 (their "
            "preconditioner freezes); AdaX with β = 1e-4 all but coincides with AdamNX with β2 = 0.99, "
            "as β = β2^−(1−β2) − 1 makes them equal.",
        )
    ]
