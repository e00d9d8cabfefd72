"""optarena.integrations.lightning with a real ``lightning.Trainer.fit`` on CPU.

The callback feeds Adaburst's triggers what the arena's runner feeds them (every step's loss; the epoch's
metric), the recipe passes the run's length, and a checkpoint taken mid-run resumes to the same parameters,
optimizer state (burst clock included) and schedule state as the run that was never interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optarena.burst import LossTrendDetector, PlateauDetector
from tests.integration_helpers import assert_identical, noisy_classes

lightning = pytest.importorskip("lightning", reason="pip install -e '.[lightning]'")
pl = lightning.pytorch

from optarena.integrations import lightning as optarena_lightning  # noqa: E402

BATCH = 16


class TinyClassifier(pl.LightningModule):
    """A two-layer classifier that logs its training accuracy per epoch and builds its optimizer by the recipe."""

    def __init__(self, name: str = "adaburst", schedule: str | None = None, **options: Any) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
        self.name, self.schedule, self.options = name, schedule, options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
        return nn.functional.cross_entropy(logits, y)

    def configure_optimizers(self) -> Any:
        return optarena_lightning.configure_optimizers(self, self.name, schedule=self.schedule, **self.options)


class Recorder(pl.Callback):
    """What the trigger should have seen: every batch's loss and every epoch's logged training accuracy."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.accuracies: list[float] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.accuracies.append(float(trainer.callback_metrics["train_acc"]))


def loader() -> DataLoader:
    return DataLoader(TensorDataset(*noisy_classes()), batch_size=BATCH)  # 6 batches per epoch, in a fixed order


def trainer(epochs: int, callbacks: list[Any], root: Path, **options: Any) -> Any:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        default_root_dir=root,
        callbacks=callbacks,
        **options,
    )


def test_the_paper_trigger_sees_the_logged_epoch_metric(tmp_path: Path) -> None:
    hooks, recorder = optarena_lightning.OptarenaCallback(metric="train_acc", mode="max"), Recorder()
    module = TinyClassifier(lr=0.05, burst_trigger="metric_plateau", burst_patience=0)
    fit = trainer(8, [hooks, recorder], tmp_path)
    fit.fit(module, loader())
    optimizer = fit.optimizers[0]
    # The run's length came from the trainer, and the clock ticked once per optimizer step.
    assert optimizer.burst.horizon == fit.estimated_stepping_batches == fit.global_step == 48
    assert optimizer.burst.ticks == 48
    # The trigger saw exactly the logged accuracies: replaying them through the paper's detector gives its bursts.
    replay = PlateauDetector(mode="max", patience=0)
    expected = [6 * (epoch + 1) for epoch, value in enumerate(recorder.accuracies) if replay.update(value)]
    assert expected, "the accuracy never plateaued: the test would not show the trigger firing"
    assert hooks.events == {"burst": expected}
    assert optimizer.burst.plateau.best == max(recorder.accuracies)
    assert optimizer.burst.num_bursts == len(expected)


def test_the_loss_trend_trigger_sees_every_step_loss(tmp_path: Path) -> None:
    hooks, recorder = optarena_lightning.OptarenaCallback(), Recorder()
    module = TinyClassifier(lr=0.05, burst_window=6)
    fit = trainer(6, [hooks, recorder], tmp_path, accumulate_grad_batches=2)
    fit.fit(module, loader())
    optimizer = fit.optimizers[0]
    assert fit.global_step == optimizer.burst.ticks == optimizer.burst.horizon == 18  # 3 steps per epoch
    # The trigger saw each step's loss once: the mean of its two batches' losses (Lightning reports each divided
    # by 2 for the accumulation), not also the loss of the closure Lightning passes to step().
    pairs = zip(recorder.losses[0::2], recorder.losses[1::2])
    replay = LossTrendDetector(6, optimizer.burst.plateau.min_drop)
    fired = [step for step, (a, b) in enumerate(pairs, 1) if replay.update((2 * a + 2 * b) / 2)]
    assert optimizer.burst.plateau.state_dict() == replay.state_dict()
    assert hooks.events.get("burst", []) == fired


def _every_epoch(folder: Path) -> Any:
    return pl.callbacks.ModelCheckpoint(dirpath=folder, filename="{epoch}", save_top_k=-1, every_n_epochs=1)


def _final_state(fit: Any, module: Any, hooks: Any) -> dict[str, Any]:
    return {
        "parameters": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "optimizer": fit.optimizers[0].state_dict(),
        "scheduler": fit.lr_scheduler_configs[0].scheduler.state_dict(),
        "events": hooks.events,
    }


def _run(tmp_path: Path, label: str, ckpt_path: Path | None = None) -> dict[str, Any]:
    hooks = optarena_lightning.OptarenaCallback()
    module = TinyClassifier(lr=0.05, schedule="sgdr", schedule_options={"T_0": 1.5}, burst_window=6, burst_min_drop=0.3)
    fit = trainer(6, [hooks, _every_epoch(tmp_path / label)], tmp_path)
    fit.fit(module, loader(), ckpt_path=ckpt_path)
    return _final_state(fit, module, hooks)


def test_a_checkpoint_resumes_optimizer_clock_and_schedule_exactly(tmp_path: Path) -> None:
    whole = _run(tmp_path, "whole")
    checkpoint = tmp_path / "whole" / "epoch=2.ckpt"  # after 3 of the 6 epochs
    saved = torch.load(checkpoint, weights_only=False)
    clock = saved["optimizer_states"][0]["param_groups"][0]["burst_clock"]
    assert clock["ticks"] == 18 and clock["num_bursts"] >= 1, "the clock must have moved and fired before the save"
    assert whole["events"]["burst"][0] <= 18
    resumed = _run(tmp_path, "resumed", ckpt_path=checkpoint)
    assert_identical(resumed, whole)
    # The comparison can fail: the same resume with the burst clock of a fresh optimizer ends elsewhere.
    for group in saved["optimizer_states"][0]["param_groups"]:
        group["burst_clock"] = {**clock, "T_cur": 0, "length": 36, "ticks": 0, "num_bursts": 0}
    broken = tmp_path / "broken.ckpt"
    torch.save(saved, broken)
    restarted = _run(tmp_path, "broken", ckpt_path=broken)
    assert not torch.equal(restarted["parameters"]["net.0.weight"], whole["parameters"]["net.0.weight"])


def test_the_recipe_refuses_an_optimizer_with_hooks_and_no_callback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no OptarenaCallback is among the trainer's callbacks"):
        trainer(1, [], tmp_path).fit(TinyClassifier(), loader())
    plain = trainer(1, [], tmp_path)  # an optimizer with no hooks needs no callback
    plain.fit(TinyClassifier("adamw", schedule="adamnx"), loader())
    assert plain.global_step == 6 and plain.lr_scheduler_configs[0].scheduler.last_epoch == 6


def test_an_unlogged_metric_is_a_clear_error(tmp_path: Path) -> None:
    hooks = optarena_lightning.OptarenaCallback(metric="val_acc")
    with pytest.raises(ValueError, match=r"'val_acc' was not logged this epoch.*logged: train_acc"):
        trainer(1, [hooks], tmp_path).fit(TinyClassifier(), loader())


def test_the_lr_burst_schedule_is_fed_the_epoch_metric(tmp_path: Path) -> None:
    hooks, recorder = optarena_lightning.OptarenaCallback(metric="train_acc"), Recorder()
    module = TinyClassifier("sgdm", schedule="lr_burst", schedule_options={"patience": 0}, lr=0.1)
    fit = trainer(5, [hooks, recorder], tmp_path)
    fit.fit(module, loader())
    scheduler = fit.lr_scheduler_configs[0].scheduler
    replay = PlateauDetector(mode="max", patience=0)
    assert scheduler.num_bursts == sum(replay.update(v) for v in recorder.accuracies)
    assert scheduler.burst.plateau.best == max(recorder.accuracies)


@pytest.mark.parametrize("classification", [True, False])
def test_sophiag_refreshes_its_hessian_from_the_batch_on_a_classifier(tmp_path: Path, classification: bool) -> None:
    """Not only Adaburst: SophiaG's hooks take the loss's batch size and, every 10 steps, a Hessian estimate
    from the batch's inputs through the module's forward (labels sampled from its logits)."""
    hooks = optarena_lightning.OptarenaCallback(classification=classification)
    fit = trainer(2, [hooks], tmp_path)
    fit.fit(TinyClassifier("sophiag", lr=1e-3), loader())  # 12 steps: one refresh, at step 10
    optimizer = fit.optimizers[0]
    assert all(group["bs"] == BATCH for group in optimizer.param_groups)
    refreshed = [bool(state["hessian"].abs().sum() > 0) for state in optimizer.state.values()]
    assert refreshed == [classification] * 4
