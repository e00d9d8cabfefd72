"""The diffusion tasks: the DDPM pieces against their formulas, FID against scipy and on real images, the task
through the runner, the protocol (with resume) and the report.

The FID checks on real images and every run use Debian's Fashion-MNIST (skipped where it is not installed). The
FID classifier is trained on a few thousand images (the ``feature_examples`` option), once per session, in a
temporary cache.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
import signal
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image
from scipy import linalg

from optarena.arena.render.report import build_report
from optarena.arena.run.runner import train
from optarena.arena.spec.config import load_experiment_file
from optarena.arena.spec.experiment import Experiment, default_storage_url
from optarena.arena.study import store, workers
from optarena.arena.study.protocol import compare
from optarena.arena.study.records import load_results
from optarena.arena.tasks import TaskSettings, cifar_files, get_task, idx
from optarena.arena.tasks.base import MissingDataError
from optarena.arena.tasks.ddpm import EMA, NoiseSchedule, from_uint8, png_grid, to_uint8
from optarena.arena.tasks.diffusion import FASHION, DiffusionProblem
from optarena.arena.tasks.fashion_mnist import DEBIAN_FASHION_MNIST, load_mnist_format_splits
from optarena.arena.tasks.fid import fid, precision_recall, statistics
from optarena.arena.tasks.fid_features import classifier_features
from optarena.arena.tasks.unet import UNet
from tests.test_tasks_data import write_cifar10_pickles, write_mnist_dir

REPO = Path(__file__).resolve().parents[1]
TASK = "fashion_mnist_ddpm"
FEATURE_EXAMPLES = 3000  # the FID classifier of these tests: seconds to train, accurate enough to rank noise
# The CI size of the task: 4 steps of 64 per epoch, 32 images per split scored, 32 FID samples by DDIM-5.
CI_OPTIONS = {"feature_examples": FEATURE_EXAMPLES, "ddim_steps": 5, "fid_every": 1}
CI_SETTINGS = TaskSettings(subset=256, eval_subset=32, options=CI_OPTIONS)
needs_fashion = pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's Fashion-MNIST is not installed")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optarena-fid-cache")


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch: pytest.MonkeyPatch, feature_cache: Path) -> None:
    monkeypatch.setenv("OPTARENA_CACHE", str(feature_cache))


# --- FID and precision/recall ------------------------------------------------------------------------------


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID as pytorch-fid computes it: scipy's sqrtm of the product of the covariances."""
    mu1, sigma1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, sigma2 = b.mean(0), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sigma1 @ sigma2).real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim", [8, 64])
def test_fid_matches_the_scipy_sqrtm_formula_on_random_gaussian_features(dim: int) -> None:
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(400, dim))
    b = rng.normal(size=(300, dim)) @ rng.normal(size=(dim, dim)) * 0.5 + rng.normal(size=dim)
    for x, y in ((a, b), (a, a[::-1] + 0.1), (b, b + rng.normal(scale=0.01, size=b.shape))):
        expected = scipy_fid(x, y)
        assert fid(x, y) == pytest.approx(expected, rel=1e-6)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fid_and_precision_recall_reject_what_they_cannot_measure() -> None:
    with pytest.raises(ValueError, match="Invalid features"):
        statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="Invalid k"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))


@pytest.fixture(scope="module")
def fashion_features():
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's Fashion-MNIST is not installed")
    splits = load_mnist_format_splits("fashion_mnist", None)
    train = tuple(v[:FEATURE_EXAMPLES] for v in splits["train"])
    return classifier_features(TASK, FASHION.classifier, train, splits["test"], "cpu"), splits["test"][0]


def test_fid_of_two_real_halves_is_small_and_grows_with_added_noise(fashion_features) -> None:
    features, test = fashion_features
    assert features.info["network"] == "classifier" and 0.6 < features.info["test_accuracy"] <= 1
    half, other = features.extract(test[:1000]), test[1000:2000]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(other.shape, generator=generator)
    levels = [0.0, 0.1, 0.2, 0.4, 0.8]
    fids = [fid(half, features.extract(to_uint8(from_uint8(other) + level * noise))) for level in levels]
    pure_noise = fid(half, features.extract(to_uint8(noise)))
    assert fids[0] < 0.05 * pure_noise  # two halves of the test set: close
    assert all(a < b for a, b in itertools.pairwise(fids)), fids  # more noise, larger distance
    # Precision/recall: real halves cover each other; 10 images repeated 100 times cover almost nothing.
    precision, recall = precision_recall(half, features.extract(other))
    assert precision > 0.5 and recall > 0.5
    _, collapsed_recall = precision_recall(half, features.extract(other[:10].repeat(100, 1, 1, 1)))
    assert collapsed_recall < 0.1


# --- the DDPM pieces -----------------------------------------------------------------------------------------


def test_the_schedule_is_ddpms_and_q_sample_has_its_mean_and_variance() -> None:
    schedule = NoiseSchedule()
    assert schedule.betas[0] == pytest.approx(1e-4) and schedule.betas[-1] == pytest.approx(0.02)
    assert torch.allclose(schedule.alpha_bars, torch.tensor(np.cumprod(1 - schedule.betas.numpy())))
    n = 200_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    for step in (0, 100, 500, 999):
        alpha_bar = float(schedule.alpha_bars[step])
        noise = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
        x_t = schedule.q_sample(x0, torch.full((n,), step), noise)
        std = (1 - alpha_bar) ** 0.5
        assert abs(float(x_t.mean()) - alpha_bar**0.5 * 0.7) < 5 * std / n**0.5
        assert float(x_t.var()) == pytest.approx(1 - alpha_bar, rel=0.02)


class PointMassOracle(torch.nn.Module):
    """The exact ε-predictor when the data are the single image ``x_star``: ε = (x_t − √ᾱ x*) / √(1 − ᾱ)."""

    def __init__(self, schedule: NoiseSchedule, x_star: torch.Tensor) -> None:
        super().__init__()
        self.schedule, self.x_star = schedule, x_star

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = self.schedule.alpha_bar(t, x)
        return (x - alpha_bar.sqrt() * self.x_star) / (1 - alpha_bar).sqrt()


@pytest.mark.parametrize("steps", [1, 5, 20, 1000])
def test_ddim_with_the_exact_noise_predictor_returns_the_data(steps: int) -> None:
    schedule = NoiseSchedule()
    x_star = torch.linspace(-0.9, 0.9, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    x_T = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    samples = schedule.ddim_sample(PointMassOracle(schedule, x_star), x_T, steps)
    assert torch.allclose(samples, x_star.expand_as(samples), atol=1e-9)


def test_ddim_timesteps_are_the_papers_and_the_sampler_is_deterministic() -> None:
    schedule = NoiseSchedule()
    assert schedule.ddim_timesteps(20) == list(range(950, -1, -50))
    assert schedule.ddim_timesteps(1) == [0] and schedule.ddim_timesteps(1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError, match=r"Invalid steps: 0"):
        schedule.ddim_timesteps(0)
    torch.manual_seed(0)
    model = UNet(1, 8, base=8, multipliers=(1, 2))
    torch.nn.init.normal_(model.output[-1].weight, std=0.1)  # a non-zero ε̂, so the samples depend on the model
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    first = schedule.ddim_sample(model, noise, 10)
    assert torch.equal(first, schedule.ddim_sample(model, noise.clone(), 10))
    assert torch.allclose(first, schedule.ddim_sample(model, noise, 10, batch_size=3), atol=1e-5)  # two batches
    assert not torch.equal(first, schedule.ddim_sample(model, noise + 0.1, 10))
    assert first.abs().max() <= 1 and model.training  # clipped x̂_0 at the last step; the mode is restored


def test_the_ema_follows_its_formula() -> None:
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    expected = [p.detach().clone() for p in model.parameters()]
    for n in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        decay = min(0.9, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(decay)
        ema.update(model)
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
        assert all(torch.allclose(a, e, atol=1e-7) for a, e in zip(ema.model.parameters(), expected))
    still = EMA(model, decay=0.0)  # decay 0: the average is the weights
    with torch.no_grad():
        model.weight.add_(1.0)
    still.update(model)
    assert torch.equal(still.model.weight, model.weight)
    with pytest.raises(ValueError, match="Invalid ema_decay"):
        EMA(model, decay=1.0)


def test_the_unet_predicts_zero_at_first_and_has_the_images_shape() -> None:
    torch.manual_seed(0)
    net = UNet(3, 32, base=8, multipliers=(1, 2, 2, 2), blocks=2, attention=(16,), dropout=0.1)
    x = torch.randn(2, 3, 32, 32)
    out = net(x, torch.tensor([0, 999]))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))  # DDPM's zero-initialised last layers
    out.sum().backward()
    assert net.output[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="Invalid size: 28"):
        UNet(1, 28, multipliers=(1, 2, 2, 2))


def test_png_grid_tiles_the_images() -> None:
    images = torch.arange(6 * 4 * 4, dtype=torch.int64).reshape(6, 1, 4, 4).to(torch.uint8)
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_grid(images, columns=4, padding=1)))))
    assert grid.shape == (2 * 5 + 1, 4 * 5 + 1)
    assert np.array_equal(grid[1:5, 1:5], images[0, 0].numpy()) and np.array_equal(grid[6:10, 6:10], images[5, 0])
    assert (grid[6:10, 11:] == 255).all()  # the cells after the last image stay white


# --- the task -----------------------------------------------------------------------------------------------


def test_task_options_are_checked_and_name_the_option(tmp_path: Path) -> None:
    task = get_task(TASK)
    assert task.kind == "diffusion" and task.mode == "min" and task.metric == "denoising_loss"
    assert task.parse_options({"fid_samples": 64}).fid_samples == 64
    for options, match in (
        ({"fid_samples": 5}, r"fashion_mnist_ddpm\.fid_samples = 5; expected an integer >= 10"),
        ({"ddim_steps": True}, r"ddim_steps = True"),
        ({"ema_decay": 1}, r"ema_decay = 1; expected a number in \[0, 1\)"),
        ({"inception": str(tmp_path / "none.pt")}, r"inception = .*an existing TorchScript file"),
        ({"fid_sample": 5}, r"has no option 'fid_sample'; valid: fid_every"),
    ):
        with pytest.raises(ValueError, match=match):
            task.parse_options(options)
        with pytest.raises(ValueError, match=match):
            Experiment(out=tmp_path, tasks=[TASK], task_options={TASK: options})
    with pytest.raises(ValueError, match="Invalid task_options: 'cifar10_ddpm' is not one of the tasks"):
        Experiment(out=tmp_path, tasks=[TASK], task_options={"cifar10_ddpm": {}})
    with pytest.raises(ValueError, match="Invalid task_options: digits takes no options, got lr"):
        Experiment(out=tmp_path, tasks=["digits"], task_options={"digits": {"lr": 1}})


@needs_fashion
def test_a_seed_fixes_weights_noise_batches_and_samples() -> None:
    def run(seed: int):
        return train(get_task(TASK), "adamw", {"lr": 2e-3}, seed=seed, epochs=2, settings=CI_SETTINGS, diagnostics=True)

    def measured(rows: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]

    first, again, other = run(1), run(1), run(2)
    assert measured(first.records) == measured(again.records) and first.samples == again.samples
    assert measured(first.records) != measured(other.records) and first.samples != other.samples
    # Epoch 0 scores the same noisy examples for every seed; the initial weights differ but predict ε̂ = 0 alike.
    assert first.records[0]["test_metric"] == other.records[0]["test_metric"]
    assert [("fid" in row) for row in first.records] == [False, True, True]  # fid_every = 1
    assert sorted(first.samples) == [1, 2] and first.generation["samples"] == 32
    assert first.records[-1]["test_metric"] < first.records[0]["test_metric"]  # it learns to denoise
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(first.samples[2]))))
    assert grid.shape == (4 * 30 + 2, 4 * 30 + 2)  # 16 samples of 28 x 28, padded by 2
    # Without diagnostics (a tuning trial) nothing is generated, and measuring the samples changes no other value.
    untuned = train(get_task(TASK), "adamw", {"lr": 2e-3}, seed=1, epochs=2, settings=CI_SETTINGS)
    assert not any("fid" in row for row in untuned.records) and not untuned.samples
    kept = ("step", "train_loss", "val_metric", "test_metric")
    assert [[r[k] for k in kept] for r in untuned.records] == [[r[k] for k in kept] for r in first.records]


@needs_fashion
def test_a_local_inception_file_replaces_the_classifier(tmp_path: Path) -> None:
    class FakeInception(torch.nn.Module):
        """The call of the TorchScript FID Inception: uint8 (n, 3, h, w), return_features=True -> (n, d)."""

        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.dtype == torch.uint8 and x.shape[1] == 3 and return_features
            x = x.float()
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x[:, :, ::7, ::7].flatten(1)], dim=1)

    path = tmp_path / "inception.pt"
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, the format of the Inception file
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(FakeInception()).save(str(path))
    settings = replace(CI_SETTINGS, options={"inception": str(path), "ddim_steps": 2}, epochs=1, diagnostics=True)
    problem = DiffusionProblem(FASHION, settings)
    measured = problem.measure_generation(1)
    assert problem.generation["network"] == "inception" and problem.generation["test_accuracy"] is None
    assert measured["fid"] > 0 and 0 <= measured["recall"] <= 1
    (tmp_path / "broken.pt").write_bytes(b"not torchscript")
    broken = DiffusionProblem(FASHION, replace(settings, options={"inception": str(tmp_path / "broken.pt")}))
    with pytest.raises(ValueError, match=r"Invalid inception: .*broken\.pt is not a loadable TorchScript file"):
        broken.measure_generation(1)


def test_the_cifar10_configuration_builds_and_trains_on_tiny_pickles(tmp_path: Path) -> None:
    write_cifar10_pickles(tmp_path)
    options = {"fid_samples": 10, "ddim_steps": 2}
    settings = TaskSettings(data_dir=tmp_path, batch_size=8, epochs=1, diagnostics=True, options=options)
    problem = get_task("cifar10_ddpm").build(settings)
    assert sum(p.numel() for p in problem.model.parameters()) > 5_000_000  # a GPU-sized U-Net
    batch = next(iter(problem.batches(1)))
    assert [tuple(v.shape) for v in batch] == [(8, 3, 32, 32), (8,), (8, 3, 32, 32)]
    problem.loss(batch).backward()
    problem.after_step()
    problem.steps = problem.steps_per_epoch  # as after a whole epoch
    row = problem.evaluate()
    assert {"fid", "precision", "recall"} <= set(row) and problem.fid_samples == 8  # the tiny test split
    assert Image.open(io.BytesIO(base64.b64decode(problem.samples[1]))).mode == "RGB"


def test_the_diffusion_tasks_find_their_data_without_reading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPTARENA_SHARED_DATA", str(tmp_path / "no-shared-data"))
    for name, error in (("cifar10_ddpm", "CIFAR-10 not found"), (TASK, "fashion_mnist needs the MNIST-format files")):
        if name == TASK and DEBIAN_FASHION_MNIST.is_dir():
            continue  # Debian's copy is found wherever data_dir points
        with pytest.raises(MissingDataError, match=error):
            get_task(name).check_data(TaskSettings(data_dir=tmp_path))

    def no_reading(*args, **kwargs):
        raise AssertionError("check_data read a data file")

    write_cifar10_pickles(tmp_path / "cifar-10-batches-py")
    write_mnist_dir(tmp_path / "fashion-mnist")
    monkeypatch.setattr(cifar_files, "read_cifar_pickle", no_reading)
    monkeypatch.setattr(idx, "read_idx", no_reading)
    for name in ("cifar10_ddpm", TASK):
        get_task(name).check_data(TaskSettings(data_dir=tmp_path))


def test_the_experiment_files_compare_the_issues_optimizers() -> None:
    seven = ["adamw", "sgdm", "adaburst", "swats", "adan", "adan_agr", "adamw_agr"]
    cpu = load_experiment_file(REPO / "experiments" / "diffusion" / "fashion_ddpm.toml")
    assert cpu.optimizers == seven and cpu.tasks == [TASK] and cpu.threads == 1
    assert get_task(TASK).parse_options(cpu.task_options[TASK]).fid_every == 2
    gpu_file = REPO / "experiments" / "diffusion" / "cifar10_ddpm_gpu.toml"
    gpu = load_experiment_file(gpu_file, device="cpu")  # the file asks for CUDA, which this machine may not have
    assert gpu.optimizers[:7] == seven and gpu.tasks == ["cifar10_ddpm"]
    assert 'device = "cuda"' in gpu_file.read_text()


# --- the protocol and the report ----------------------------------------------------------------------------


@needs_fashion
def test_compare_and_report_show_fid_curves_and_sample_grids(tmp_path: Path) -> None:
    experiment = Experiment(
        out=tmp_path, tasks=[TASK], optimizers=["adamw", "sgdm"], trials=1, seeds=2, epochs=2, subset=128,
        eval_subset=32, task_options={TASK: CI_OPTIONS},
    )  # fmt: skip
    compare(experiment)
    pairs = load_results(experiment.storage_url, experiment.name).pairs
    for pair in pairs.values():
        assert len(pair.tune) == 1 and sorted(t.seed for t in pair.final) == [1, 2]
        assert all(not t.run.samples for t in pair.tune)  # tuning trials score the validation loss only
        assert all(sorted(t.run.samples) == [1, 2] and "fid" in t.run.rows[-1] for t in pair.final)
        assert pair.config.task.mode == "min" and pair.config.task.kind == "diffusion"
    report = build_report(experiment.storage_url, experiment.name, tmp_path).read_text()
    for figure in ("fashion_mnist_ddpm_fid.png", "fashion_mnist_ddpm_samples.png"):
        assert f"(figures/{figure})" in report and (tmp_path / "figures" / figure).stat().st_size > 0
    assert "This is not Inception-FID" in report and "its test accuracy is" in report
    assert "seed-1 rerun of each optimizer" in report and "| Last FID: mean [95% CI, clipped at 0] |" in report
    # Other task options would change what the stored runs mean: a second compare is refused.
    changed = replace(experiment, task_options={TASK: {**CI_OPTIONS, "ddim_steps": 10}})
    (conflict,) = workers.conflicts(changed, store.open_storage(experiment.storage_url))
    stored, asked = conflict.split(" (stored) vs ")
    assert stored.startswith("task_options {") and "'ddim_steps': 5" in stored and "'ddim_steps': 10" in asked
    assert workers.conflicts(experiment, store.open_storage(experiment.storage_url)) == []


@needs_fashion
def test_a_worker_runs_a_prepared_diffusion_study_with_its_task_options(tmp_path: Path) -> None:
    options = {**CI_OPTIONS, "fid_samples": 16}
    experiment = Experiment(
        out=tmp_path, tasks=[TASK], optimizers=["adamw"], trials=1, seeds=1, epochs=1, subset=128, eval_subset=32,
        task_options={TASK: options},
    )  # fmt: skip
    compare(experiment, prepare_only=True)
    joined = workers.worker_experiment(experiment.storage_url, experiment.name)  # as `optarena worker` reads it
    assert joined.task_options == {TASK: options}
    assert workers.work(joined, store.open_storage(experiment.storage_url), poll_seconds=0.1) == 2
    (pair,) = load_results(experiment.storage_url, experiment.name).pairs.values()
    assert pair.final[0].run.generation["samples"] == 16 and "fid" in pair.final[0].run.rows[-1]


@needs_fashion
def test_a_killed_diffusion_compare_resumes_like_any_task(tmp_path: Path, feature_cache: Path) -> None:
    experiment = (
        f"Experiment(out={str(tmp_path)!r}, tasks=[{TASK!r}], optimizers=['adamw'], trials=2, seeds=1, epochs=2,"
        f" subset=256, eval_subset=32, threads=1, task_options={{{TASK!r}: {CI_OPTIONS!r}}})"
    )
    killing = (
        "import os, signal\n"
        "from optarena.arena.spec.experiment import Experiment\n"
        "from optarena.arena.study import objectives, protocol\n"
        "real_train, calls = objectives.train, []\n"
        "def train(*args, on_epoch, **kwargs):\n"
        "    calls.append(1)\n"
        "    def report(epoch, row):\n"
        "        on_epoch(epoch, row)\n"
        "        if len(calls) == 2 and epoch == 1:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real_train(*args, on_epoch=report, **kwargs)\n"
        "objectives.train = train\n"
        f"protocol.compare({experiment})\n"
    )
    resuming = (
        "from optarena.arena.spec.experiment import Experiment\n"
        f"from optarena.arena.study.protocol import compare\ncompare({experiment})\n"
    )
    env = {**os.environ, "OPTARENA_CACHE": str(feature_cache)}
    killed = subprocess.run([sys.executable, "-c", killing], cwd=REPO, timeout=600, env=env)
    assert killed.returncode == -signal.SIGKILL
    url = default_storage_url(tmp_path)
    name = store.study_name("default", TASK, "adamw", "tune")

    def states() -> list[tuple[int, str, float | None]]:
        return [(t.number, t.state.name, t.value) for t in optuna.load_study(study_name=name, storage=url).trials]

    before = states()
    assert [s[:2] for s in before if s[1] != "WAITING"] == [(0, "COMPLETE"), (1, "RUNNING")]  # what the kill left
    assert subprocess.run([sys.executable, "-c", resuming], cwd=REPO, timeout=600, env=env).returncode == 0
    after = states()
    assert after[0] == before[0]  # the finished trial is kept as it was
    assert sorted(s[1] for s in after) == ["COMPLETE"] * 2 + ["FAIL"]  # the budget, exactly; the killed one closed
    (pair,) = load_results(url, "default").pairs.values()
    assert len(pair.tune) == 2 and [t.seed for t in pair.final] == [1] and "fid" in pair.final[0].run.rows[-1]
