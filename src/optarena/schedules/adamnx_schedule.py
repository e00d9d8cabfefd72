"""The learning-rate schedule of the AdamNX experiments (the paper's Eq. 15).

The paper's equation is lost in the extracted text; the authors' training code
(``lr_lambda.MyLRLambda`` stepped once per batch) decays linearly to a floor, then holds it::

    r_b = 1 + (r_min − 1)·b / t1    for b <= t1,       r_b = r_min    after,
    t1 = int(decay_fraction · total_steps),   r_min = 0.01,   lr_b = lr_0 · r_b

where ``b`` is the 0-based batch index. ``warmup_steps > 0`` selects the authors'
``MyLRLambdaWithWarmup`` shape: a linear warm-up from ``warmup_start_ratio·lr_0`` to ``lr_0``
over the first ``warmup_steps`` batches, then the linear decay reaches ``r_min`` at
``t1`` (counted from the start of training), then the floor.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from optarena.validation import check_int, check_range


def adamnx_lr_ratio(
    step: int,
    *,
    total_steps: int,
    decay_fraction: float = 0.6,
    min_ratio: float = 0.01,
    warmup_steps: int = 0,
    warmup_start_ratio: float = 0.0,
) -> float:
    """The multiplier ``r_b`` of batch ``step`` (0-based)."""
    t1 = int(decay_fraction * total_steps)
    if step < warmup_steps:
        return warmup_start_ratio + (1.0 - warmup_start_ratio) * step / warmup_steps
    if step <= t1:
        span = t1 - warmup_steps
        if span <= 0:
            return min_ratio
        return 1.0 + (min_ratio - 1.0) * (step - warmup_steps) / span
    return min_ratio


class AdamNXLR(LambdaLR):
    """Linear decay to ``min_ratio·lr`` at ``decay_fraction`` of training, then constant.

    Step it once per batch, after ``optimizer.step()``.

    Args:
        optimizer: the optimizer whose ``lr`` is scheduled.
        total_steps: batches in the whole run (epochs × batches per epoch).
        decay_fraction: where the decay ends, as a fraction of ``total_steps`` (default 0.6).
        min_ratio: the floor, as a fraction of the initial lr (default 0.01).
        warmup_steps: linear warm-up batches before the decay (default 0: none, as the
            published scripts).
        warmup_start_ratio: where the warm-up starts, as a fraction of the lr (default 0).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        *,
        decay_fraction: float = 0.6,
        min_ratio: float = 0.01,
        warmup_steps: int = 0,
        warmup_start_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        check_int("total_steps", total_steps, 1)
        check_range("decay_fraction", decay_fraction, 0.0, 1.0, low_open=True)
        check_range("min_ratio", min_ratio, 0.0, 1.0)
        t1 = int(decay_fraction * total_steps)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= t1:
            raise ValueError(
                f"Invalid warmup_steps: {warmup_steps!r}; expected an integer in [0, {t1}] (the end of the decay)"
            )
        check_range("warmup_start_ratio", warmup_start_ratio, 0.0, 1.0)
        self.total_steps = total_steps
        self.decay_fraction = decay_fraction
        self.min_ratio = min_ratio
        self.warmup_steps = warmup_steps
        self.warmup_start_ratio = warmup_start_ratio
        super().__init__(optimizer, self.ratio, last_epoch=last_epoch)

    def ratio(self, step: int) -> float:
        return adamnx_lr_ratio(
            step,
            total_steps=self.total_steps,
            decay_fraction=self.decay_fraction,
            min_ratio=self.min_ratio,
            warmup_steps=self.warmup_steps,
            warmup_start_ratio=self.warmup_start_ratio,
        )

    def state_dict(self) -> dict:
        # LambdaLR would store the bound method; everything needed is in plain attributes.
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)
        # the groups get the resumed rates whatever order things were loaded in
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr
