"""optarena.integrations.hf with a real ``transformers.Trainer`` on CPU, on a tiny BERT built from a config.

The callback feeds Adaburst's trigger every step's loss and the evaluation metric it is told to watch, the
recipe passes the run's length the Trainer will use, and a checkpoint saved in the middle of an epoch resumes to
the same parameters, optimizer state (burst clock included) and schedule state as the uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from optarena.burst import LossTrendDetector, PlateauDetector
from tests.integration_helpers import assert_identical

transformers = pytest.importorskip("transformers", reason="pip install -e '.[hf]'")

from optarena.integrations import hf as optarena_hf  # noqa: E402

EXAMPLES, BATCH, LENGTH, VOCAB = 48, 8, 8, 32


class Sequences(Dataset):
    """Token sequences labelled by whether token 1 occurs more often than token 2 (three classes with ties)."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 4, (EXAMPLES, LENGTH), generator=generator)
        ones, twos = (self.ids == 1).sum(1), (self.ids == 2).sum(1)
        self.labels = (ones > twos).long() + (ones >= twos).long()

    def __len__(self) -> int:
        return EXAMPLES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": self.labels[i],
        }


def tiny_bert() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=LENGTH, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def arguments(out: Path, **options: Any) -> Any:
    settings = dict(
        output_dir=str(out), per_device_train_batch_size=BATCH, num_train_epochs=3, learning_rate=1e-2,
        logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0,
    )  # fmt: skip
    return transformers.TrainingArguments(**{**settings, **options})


def accuracy(prediction: Any) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


class Recorder(transformers.TrainerCallback):
    """What the trigger should have seen: each step's loss (from the model's outputs) and each evaluation's metric."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.accuracies: list[float] = []
        self.handle: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        def record(module: Any, inputs: Any, output: Any) -> None:
            if module.training and output.loss is not None:
                self.losses.append(float(output.loss.detach()))

        self.handle = model.register_forward_hook(record)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        self.accuracies.append(metrics["eval_accuracy"])

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self.handle.remove()


def train(
    out: Path,
    callback: Any,
    *,
    name: str = "adaburst",
    resume: Path | None = None,
    extra: tuple[Any, ...] = (),
    **options: Any,
) -> Any:
    model, data = tiny_bert(), Sequences()
    args = arguments(out, **options.pop("args", {}))
    optimizers = optarena_hf.create_optimizers(model, name, args, data, callback=callback, **options)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=data, optimizers=optimizers,
        callbacks=[callback, *extra], compute_metrics=accuracy,
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    return trainer


def test_the_loss_trend_trigger_sees_every_step_loss(tmp_path: Path) -> None:
    callback, recorder = optarena_hf.OptarenaTrainerCallback(), Recorder()
    trainer = train(tmp_path, callback, extra=(recorder,), burst_window=4, burst_min_drop=0.2)
    optimizer = trainer.optimizer.optimizer  # accelerate's wrapper around the Adaburst
    assert (
        trainer.state.max_steps == trainer.state.global_step == optimizer.burst.horizon == optimizer.burst.ticks == 18
    )
    replay = LossTrendDetector(4, 0.2)
    fired = [step for step, loss in enumerate(recorder.losses, 1) if replay.update(loss)]
    assert fired, "the trigger never fired: the test would not show it"
    assert callback.events == {"burst": fired}
    assert optimizer.burst.plateau.state_dict() == replay.state_dict()


def test_the_paper_trigger_sees_the_evaluation_metric(tmp_path: Path) -> None:
    callback, recorder = optarena_hf.OptarenaTrainerCallback(metric="eval_accuracy"), Recorder()
    args = {"eval_strategy": "epoch", "num_train_epochs": 5}
    trainer = train(tmp_path, callback, extra=(recorder,), args=args, burst_trigger="metric_plateau", burst_patience=0)
    optimizer = trainer.optimizer.optimizer
    replay = PlateauDetector(mode="max", patience=0)
    fired = [6 * epoch for epoch, value in enumerate(recorder.accuracies, 1) if replay.update(value)]
    assert len(recorder.accuracies) == 5 and fired
    assert callback.events == {"burst": fired}
    assert optimizer.burst.plateau.best == max(recorder.accuracies)


def _final(trainer: Any, callback: Any) -> dict[str, Any]:
    return {
        "parameters": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "optimizer": trainer.optimizer.optimizer.state_dict(),
        "scheduler": trainer.lr_scheduler.state_dict(),
        "events": callback.events,
    }


def test_a_checkpoint_saved_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    options = dict(schedule="lr_burst", schedule_options={"patience": 0}, burst_window=4, burst_min_drop=0.2)
    saving = {"save_strategy": "steps", "save_steps": 9}  # step 9 of 18: the middle of the second epoch
    callback = optarena_hf.OptarenaTrainerCallback()
    whole = _final(train(tmp_path / "whole", callback, args=saving, **options), callback)
    assert whole["events"]["burst"][0] <= 9, "the trigger must have fired before the checkpoint"
    checkpoint = tmp_path / "whole" / "checkpoint-9"
    callback = optarena_hf.OptarenaTrainerCallback()
    resumed = _final(train(tmp_path / "resumed", callback, resume=checkpoint, args=saving, **options), callback)
    assert_identical(resumed, whole)
    # The comparison can fail: without the saved clock (a fresh one at step 9) the run ends elsewhere.
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    for group in state["param_groups"]:
        group["burst_clock"] = {**group["burst_clock"], "T_cur": 0, "length": 18, "num_bursts": 0}
    torch.save(state, checkpoint / "optimizer.pt")
    callback = optarena_hf.OptarenaTrainerCallback()
    broken = _final(train(tmp_path / "broken", callback, resume=checkpoint, args=saving, **options), callback)
    assert not torch.equal(broken["parameters"]["classifier.weight"], whole["parameters"]["classifier.weight"])


def test_an_optimizer_built_for_another_run_length_is_refused(tmp_path: Path) -> None:
    model, data, callback = tiny_bert(), Sequences(), optarena_hf.OptarenaTrainerCallback()
    optimizers = optarena_hf.create_optimizers(model, "adaburst", arguments(tmp_path), data, callback=callback)
    trainer = transformers.Trainer(
        model=model, args=arguments(tmp_path, num_train_epochs=4), train_dataset=data, optimizers=optimizers,
        callbacks=[callback],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"built for a run of 18 steps and the Trainer runs 24"):
        trainer.train()


def test_sophiag_refreshes_its_hessian_from_the_models_logits(tmp_path: Path) -> None:
    """SophiaG's hooks through the Trainer: the batch's inputs (without labels) go to the model, labels are
    sampled from its logits, and the Hessian estimate is refreshed at step 10 of 18."""
    callback = optarena_hf.OptarenaTrainerCallback(classification=True)
    trainer = train(tmp_path, callback, name="sophiag", lr=1e-3)
    optimizer = trainer.optimizer.optimizer
    assert all(group["bs"] == BATCH for group in optimizer.param_groups)
    assert all(state["hessian"].abs().sum() > 0 for state in optimizer.state.values())
