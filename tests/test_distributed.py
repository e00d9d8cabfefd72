"""Every registered optimizer on DTensor shards (FSDP2's layout) in 2 and 3 gloo processes equals
one process; whole-tensor reductions (AGR's Σ|g|, SWATS's projections, Adan's clip) are global."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from .distributed_cases import CASES, FSDP_CASES, full_gradients, full_parameters, run_steps, train_one_process
from .helpers import max_diff

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

# torch's own Adafactor cannot run on DTensor (2.13): its in-place pow_ on a norm's partial result has
# no sharding strategy. It is a torch baseline, not an optarena algorithm.
TORCH_LIMITS = {"adafactor": "aten.pow_.Scalar: in-place operations that require placement changes"}


def single_process(dtype: torch.dtype, steps: int) -> dict[str, dict]:
    out = {}
    for case_id, name, kwargs in CASES:
        params = [torch.nn.Parameter(p) for p in full_parameters(dtype)]

        def set_grads(step: int, params: list[torch.Tensor] = params) -> None:
            for p, g in zip(params, full_gradients(step, dtype)):
                p.grad = g

        opt = run_steps(name, kwargs, params, set_grads, steps=steps)
        out[case_id] = {"params": [p.detach() for p in params], "state": [dict(opt.state[p]) for p in params]}
    return out


def ulps(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest difference in units in the last place of ``want`` (float32)."""
    if got.numel() == 0:
        return 0.0
    spacing = torch.nextafter(want.abs(), torch.full_like(want, float("inf"))) - want.abs()
    return ((got - want).abs() / spacing).max().item()


# float64: within 1e-12 after 6 steps. float32: within 4 ULP after one step — the order in which the
# shards' partial sums (AGR's Σ|g|, Adan's norm, SWATS's dots) are added is the only difference, and
# later steps compound it like any rounding difference.
@pytest.mark.parametrize("world,dtype,steps", [(2, "float64", 6), (3, "float64", 6), (3, "float32", 1)])
def test_sharded_optimizers_equal_one_process(world, dtype, steps, tmp_path):
    reference = single_process(getattr(torch, dtype), steps)
    out = tmp_path / f"world{world}.pt"
    script = str(REPO / "tests" / "distributed_check.py")
    run = subprocess.run(
        [sys.executable, script, "--world", str(world), "--out", str(out), "--dtype", dtype, "--steps", str(steps)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = torch.load(out, weights_only=False)["results"]
    assert set(results) == {c[0] for c in CASES}
    failures = {}
    for case_id, _, _ in CASES:
        got = results[case_id]
        if case_id in TORCH_LIMITS:
            assert TORCH_LIMITS[case_id] in got.get("error", ""), got  # still torch's limit, not ours
            continue
        if "error" in got:
            failures[case_id] = got["error"]
            continue
        want = reference[case_id]
        pairs = list(zip(got["params"], want["params"]))
        for got_state, want_state in zip(got["state"], want["state"]):
            assert set(got_state) == set(want_state), case_id
            pairs += [
                (got_state[k], v)
                for k, v in want_state.items()
                if isinstance(v, torch.Tensor) and v.is_floating_point()
            ]
        if dtype == "float64":
            diff = max(max_diff([a], [b]) for a, b in pairs)
            if not diff <= 1e-12:
                failures[case_id] = f"max difference {diff:.3g}"
        else:
            worst = max(ulps(a, b) for a, b in pairs)
            if not worst <= 4:
                failures[case_id] = f"{worst:.1f} ULP"
    assert not failures, failures


def test_burst_trigger_acts_on_the_agreed_metric(tmp_path):
    out = tmp_path / "burst"
    script = str(REPO / "tests" / "distributed_check.py")
    run = subprocess.run(
        [sys.executable, script, "--world", "2", "--out", str(out), "--check", "burst"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(2)]
    for reduce in ("mean", "max"):
        assert ranks[0][reduce] == ranks[1][reduce]  # same bursts, same rates, on every rank
    # mean of (0.5 + 0.05e, 0.5 − 0.05e) stays 0.5: a plateau from epoch 1 on every rank.
    assert ranks[0]["mean"]["adaburst"] == [False, True, True, True, True, True]
    assert ranks[0]["max"]["adaburst"] == [False] * 6  # rank 0's rising value is the max: never a plateau
    # Without agreement, the ranks diverge: what the default prevents.
    assert ranks[0]["none"]["adaburst"] != ranks[1]["none"]["adaburst"]
    assert ranks[0]["none"]["lrburst"] != ranks[1]["none"]["lrburst"]


def test_a_nan_in_one_ranks_shard_is_seen_by_every_rank(tmp_path):
    out = tmp_path / "nonfinite"
    run_check("--world", "2", "--out", str(out), "--check", "nonfinite")
    ranks = [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(2)]
    for name in ("adamw", "adaburst", "lion"):
        for outcome in ranks:  # rank 0's shard is finite, yet it skips and raises with rank 1
            assert outcome[name] == {"skipped": 1, "unchanged": True, "raised": True}, name


def run_check(*args: str) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "tests" / "distributed_check.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]


def test_fsdp2_checkpoint_reshards_from_2_to_3_ranks_and_training_continues_exactly(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    saved, loaded = tmp_path / "two.pt", tmp_path / "three.pt"
    # 2 ranks: 3 steps, a DCP checkpoint, 3 more. 3 ranks: load that checkpoint, the same 3 more.
    run_check(
        "--world", "2", "--check", "fsdp", "--phase", "save", "--checkpoint", str(checkpoint), "--out", str(saved)
    )
    run_check(
        "--world", "3", "--check", "fsdp", "--phase", "load", "--checkpoint", str(checkpoint), "--out", str(loaded)
    )
    two, three = torch.load(saved, weights_only=False), torch.load(loaded, weights_only=False)
    for case_id, name, kwargs in FSDP_CASES:
        assert "error" not in two[case_id] and "error" not in three[case_id], (two[case_id], three[case_id])
        assert max_diff(three[case_id]["params"], two[case_id]["params"]) <= 1e-12, case_id
        # FSDP2 averages the ranks' gradients: the same training as one process on the whole batch.
        assert max_diff(two[case_id]["params"], train_one_process(name, kwargs)) <= 1e-12, case_id


def test_ddp_equals_one_process_for_every_optimizer(tmp_path):
    out = tmp_path / "ddp.pt"
    run_check("--world", "2", "--check", "ddp", "--out", str(out))
    results = torch.load(out, weights_only=False)
    for case_id, name, kwargs in CASES:
        assert max_diff(results[case_id]["params"], train_one_process(name, kwargs)) <= 1e-12, case_id


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_optarena_run_nproc_2_trains_like_one_process(parallel, tmp_path):
    """`optarena run --nproc 2`: each rank takes half of every batch; the records equal one process's."""
    base = ["run", "--task", "digits", "--optimizer", "adaburst", "--epochs", "3", "--subset", "400", "--threads", "1"]
    records = []
    for extra in ([], ["--nproc", "2", "--parallel", parallel]):
        out = tmp_path / ("two" if extra else "one")
        run = subprocess.run(
            [sys.executable, "-m", "optarena", *base, "--out", str(out), *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        records.append(json.loads((out / "digits-adaburst-seed0.json").read_text())["records"])
    one, two = records
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert a["step"] == b["step"]
        # float32: the ranks' averaged gradients differ from the whole batch's in the last bits only
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert (b["train_metric"], b["val_metric"], b["test_metric"]) == (
            a["train_metric"],
            a["val_metric"],
            a["test_metric"],
        )


def test_spawned_ranks_meet_through_a_private_file_and_torchruns_through_its_environment(monkeypatch, tmp_path):
    """`--nproc N`'s processes find each other through a file of spawn()'s private directory, not a port found free
    beforehand (another process can take that port before rank 0 listens); torchrun's through its environment."""
    from optarena.arena.run import launch

    monkeypatch.delenv(launch.RENDEZVOUS_ENV, raising=False)
    assert launch.init_method() == "env://"
    store = tmp_path / "store"
    monkeypatch.setenv(launch.RENDEZVOUS_ENV, str(store))
    assert launch.init_method() == store.as_uri()
