"""The step-time benchmark script runs and writes the table it promises (it checks the script works, not speed)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_time.py"


def load_script() -> ModuleType:
    """Import ``benchmarks/step_time.py`` by path (``benchmarks`` is not a package)."""
    spec = importlib.util.spec_from_file_location("optarena_bench_step_time", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_step_time_script_writes_a_ratio_row_per_configuration(tmp_path: Path) -> None:
    bench = load_script()
    out = tmp_path / "step_time.md"
    threads = torch.get_num_threads()
    argv = ["--sets", "resnet18", "--optimizers", "adaburst,lion", "--scale", "0.001", "--rounds", "1"]
    # One thread, few steps and a small copy probe keep it to seconds even on a busy machine.
    argv += [
        "--steps",
        "2",
        "--warmup",
        "1",
        "--copy-mb",
        "8",
        "--threads",
        "1",
        "--malloc",
        "system",
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    assert torch.get_num_threads() == threads  # the script gives the caller its thread count back

    text = out.read_text()
    assert out.with_suffix(".png").stat().st_size > 0
    header = next(line for line in text.splitlines() if line.startswith("| optimizer | mode |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == list(bench.COLUMNS)
    for expected in ("× torch fused AdamW", "× torch foreach AdamW", "state B/param", "peak extra MiB"):
        assert expected in columns

    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) == len(columns) and cells[1] in bench.MODES:
            rows[(cells[0], cells[1])] = dict(zip(columns, cells))
    expected_keys = {("torch AdamW", "fused"), ("torch AdamW", "foreach")}
    modes = ("for-loop", "foreach", "foreach-lists", "compiled")
    expected_keys |= {(name, mode) for name in ("adaburst", "lion") for mode in modes}
    expected_keys.add(("lion", "kozistr"))  # pytorch-optimizer's Lion, timed beside ours
    assert set(rows) == expected_keys
    for row in rows.values():
        assert float(row["× torch fused AdamW"]) > 0
        assert float(row["× torch foreach AdamW"]) > 0
    assert float(rows[("torch AdamW", "fused")]["× torch fused AdamW"]) == 1.0
    assert float(rows[("torch AdamW", "foreach")]["× torch foreach AdamW"]) == 1.0
    # Measured from optimizer.state: Adam-like moments are 8 bytes per parameter, Lion's one is 4 (plus
    # the per-tensor step counters, which are visible at this tiny scale).
    assert 8.0 <= float(rows[("adaburst", "foreach")]["state B/param"]) < 8.2
    assert 4.0 <= float(rows[("lion", "foreach")]["state B/param"]) < 4.2


def test_step_time_thread_clock_on_the_small_cnn_set(tmp_path: Path) -> None:
    bench = load_script()
    out = tmp_path / "small.md"
    argv = ["--sets", "small_cnn", "--optimizers", "adamw_agr,lion", "--modes", "foreach,foreach-lists"]
    argv += ["--rounds", "1", "--steps", "2", "--warmup", "1", "--copy-mb", "8", "--threads", "1", "--clock", "thread"]
    argv += ["--no-memory"]
    assert bench.main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    assert "thread clock" in text
    assert "small_cnn (scale 1): 6 tensors, 20,490 parameters" in text
    # the flat step (the default foreach step of a small group) beside the list path it replaces
    for name in ("adamw_agr", "lion"):
        assert f"| {name} | foreach |" in text and f"| {name} | foreach-lists |" in text


def test_a_compiled_mode_that_fell_back_to_eager_is_reported_so_not_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A compile that fails (torch 2.11's dynamo refused two list idioms on a GPU machine) warns and runs the eager
    step: its row must say so, and its target must not be judged on the eager time."""
    from optarena.optim import compiled

    def refuse(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(compiled, "_compiled_update_for", refuse)
    bench = load_script()
    out = tmp_path / "fallback.md"
    argv = ["--sets", "resnet18", "--scale", "0.001", "--optimizers", "lion", "--modes", "foreach,compiled"]
    argv += ["--rounds", "1"]
    argv += ["--steps", "1", "--warmup", "1", "--copy-mb", "8", "--threads", "1", "--no-memory", "--out", str(out)]
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        assert bench.main(argv) == 0
    # The benchmark's log has where it failed: the traceback, beside the warning.
    assert any("torch.compile failed" in r.getMessage() and r.exc_info for r in caplog.records)
    rows = [line for line in out.read_text().splitlines() if line.startswith("| lion |")]
    compiled_row = next(r for r in rows if r.startswith("| lion | compiled |"))
    foreach_row = next(r for r in rows if r.startswith("| lion | foreach |"))
    assert bench.COMPILE_FAILED in compiled_row and bench.COMPILE_FAILED not in foreach_row
    target = next(r for r in rows if "compiled ≤" in r)
    assert "not measured: torch.compile failed" in target and "| met" not in target and "| missed" not in target


def test_device_check_script_finds_compiled_equal_to_eager_on_the_cpu() -> None:
    """tests/device_check.py (run by hand on a GPU machine) works: here on the CPU, for two optimizers."""
    import subprocess

    root = SCRIPT.parents[1]
    script = root / "tests" / "device_check.py"
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run(
        [sys.executable, str(script), "cpu", "adamw_agr", "lion"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith(("adamw_agr", "lion"))]
    assert [line[0] for line in lines] == ["adamw_agr", "lion"] and all(line[-2] == "ok" for line in lines)
    assert all(float(line[4]) <= 1e-12 and float(line[6]) <= 1e-12 for line in lines)


def test_the_gpu_session_script_runs_every_part_and_leaves_its_files(tmp_path: Path) -> None:
    """benchmarks/cuda_run.sh (a short GPU lease's one call) dry-run on the CPU: the check, both step-time sets and
    the profile."""
    import subprocess

    root = SCRIPT.parents[1]
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "CHECK_NAMES": "lion",
        "OPTIMIZERS": "lion",
        "STEP_ARGS": "--scale 0.01 --rounds 1 --steps 1 --warmup 1 --copy-mb 8 --no-memory --threads 1",
        "PROFILE_SET": "small_cnn",
        "PROFILE_OPTIMIZERS": "lion",
        "PROFILE_VARIANTS": "--variant combo:combo_kernels=True",
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", str(root / "benchmarks" / "cuda_run.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "device_check rc=0" in done.stdout and "failures: 0" in done.stdout
    for set_name in ("resnet18", "transformer"):
        assert f"step_time {set_name} rc=0" in done.stdout
        table = (tmp_path / f"step_time_cpu_{set_name}.md").read_text()
        assert "| lion | compiled |" in table
    assert "| lion | compiled-per-tensor |" in (tmp_path / "step_time_cpu_resnet18.md").read_text()
    assert "profile rc=0" in done.stdout
    profile = (tmp_path / "profile_cpu.md").read_text()
    assert all(f"| {row} |" in profile for row in ("torch AdamW fused", "lion compiled", "lion compiled combo"))
    parts = profile.split("The engine's parts of a compiled step")[1]
    assert "| lion compiled | " in parts and "direct call, all of it" in parts  # the step's Python, part by part


@pytest.mark.parametrize("compile", [False, "whole", "per_tensor"])
def test_relayout_moves_large_tensors_to_the_drawn_places_and_the_steps_stay_right(compile) -> None:
    """Each round's relayout puts every large parameter, gradient and state tensor at a drawn place within a page,
    the k-th state of every optimizer at the same one, leaves small tensors alone, keeps every value, and the
    optimizers' later steps (a compiled step's cached views and direct calls included) equal steps of copies that
    never moved."""
    import random

    import optarena

    bench = load_script()
    torch.manual_seed(0)
    shapes = [(300, 256), (7,), (130, 257)]  # 300 KiB, a small one, 130 KiB (not a multiple of a page)
    params = [torch.nn.Parameter(torch.randn(s, dtype=torch.float32)) for s in shapes]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, t in zip(params, twins):
        p.grad = torch.randn_like(p)
        t.grad = p.grad.clone()
    ours = optarena.create_optimizer(params, "adabelief", lr=1e-2, compile=compile)
    torchs = torch.optim.AdamW(params, lr=1e-2)
    twin_ours = optarena.create_optimizer(twins, "adabelief", lr=1e-2, compile=compile)
    twin_torchs = torch.optim.AdamW(twins, lr=1e-2)
    rng = random.Random(0)
    for _ in range(3):
        for opt in (ours, torchs, twin_ours, twin_torchs):
            opt.step()
        small = params[1].data_ptr(), params[1].grad.data_ptr()
        before = [(p.detach().clone(), ours.state[p]["exp_avg_var"].clone()) for p in params]
        draws = random.Random(rng.random())
        bench.relayout(params, [ours, torchs], bench.random_offsets(draws))
        assert (params[1].data_ptr(), params[1].grad.data_ptr()) == small
        for (value, second), p in zip(before, params):
            torch.testing.assert_close(p.detach(), value, rtol=0, atol=0)
            torch.testing.assert_close(ours.state[p]["exp_avg_var"], second, rtol=0, atol=0)
        for p in (params[0], params[2]):
            offsets = [t.data_ptr() % bench.PAGE for t in (p, p.grad)]
            mine = [ours.state[p][k].data_ptr() % bench.PAGE for k in ("exp_avg", "exp_avg_var")]
            theirs = [torchs.state[p][k].data_ptr() % bench.PAGE for k in ("exp_avg", "exp_avg_sq")]
            assert mine == theirs  # one draw for the k-th state of every optimizer
            assert all(o % bench.CPU_ALIGNMENT == 0 for o in offsets + mine)
            assert p.untyped_storage().data_ptr() != p.grad.untyped_storage().data_ptr()
    for opt in (ours, torchs, twin_ours, twin_torchs):
        opt.step()
    for p, t in zip(params, twins):
        torch.testing.assert_close(p.detach(), t.detach(), rtol=0, atol=0)
    for a, b, keys in ((ours, twin_ours, ("exp_avg", "exp_avg_var")), (torchs, twin_torchs, ("exp_avg", "exp_avg_sq"))):
        for p, t in zip(params, twins):
            for key in keys:
                torch.testing.assert_close(a.state[p][key], b.state[t][key], rtol=0, atol=0)


def test_relayout_draws_cover_the_page() -> None:
    """Over many draws the places are spread over the whole page, in steps of the allocator's alignment."""
    import random

    bench = load_script()
    p = torch.nn.Parameter(torch.zeros(64 * 1024))
    p.grad = torch.zeros_like(p)
    rng = random.Random(1)
    seen = set()
    for _ in range(400):
        bench.relayout([p], [], bench.random_offsets(rng))
        seen.add(p.data_ptr() % bench.PAGE)
    assert seen <= set(range(0, bench.PAGE, bench.CPU_ALIGNMENT))
    assert len(seen) > bench.PAGE // bench.CPU_ALIGNMENT // 2


def test_step_time_thread_clock_needs_one_cpu_thread() -> None:
    bench = load_script()
    with pytest.raises(SystemExit):
        bench.parse_args(["--clock", "thread", "--threads", "2"])


def test_arena_overhead_script_checks_the_runs_agree_and_writes_ratios(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("optarena_bench_arena_overhead", SCRIPT.parent / "arena_overhead.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "overhead.md"
    threads = torch.get_num_threads()
    try:
        module.main(["--task", "digits", "--subset", "0", "--rounds", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    from optarena.arena.run import single

    assert single.console.file is sys.stdout  # the benchmark left optarena run's console as it found it
    text = out.read_text()
    assert "the four runs end at the same test metric" in text
    ratios = [line for line in text.splitlines() if line.startswith("| arena") and "| against |" not in line]
    assert [line.split("|")[1:3] for line in ratios] == [
        [" arena ", " loop, same evaluations "],
        [" arena, final evaluation ", " loop, final evaluation "],
        [" arena ", " loop, final evaluation "],
    ]
    assert all(float(line.split("|")[3]) > 0 for line in ratios)
    with pytest.raises(SystemExit):
        module.main(["--workers", "1"])


def test_targets_hold_agr_to_its_base_and_name_the_roofline() -> None:
    bench = load_script()
    assert bench.TARGET_COMPILED_DEFAULT == 1.05
    assert bench.TARGET_COMPILED_VS_FUSED == {"adan": 1.65, "adamw_agr": 1.20}
    assert set(bench.TARGET_SETS) == {"resnet18", "transformer"}


def test_compile_time_script_splits_the_cold_compile_into_phases(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("optarena_bench_compile_time", SCRIPT.parent / "compile_time.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):  # a set step_time.py does not define is refused before anything runs
        module.main(["--optimizers", "lion", "--sets", "no_such_set", "--out", str(tmp_path / "x.md")])
    with pytest.raises(SystemExit):  # so is an unknown kind of graph
        module.main(["--optimizers", "lion", "--graphs", "fast", "--out", str(tmp_path / "x.md")])
    out = tmp_path / "compile.md"
    module.main(["--optimizers", "lion", "--sets", "small_cnn", "--graphs", "per_tensor", "--out", str(out)])
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| small_cnn")]
    assert len(rows) == 1
    _, name, graphs, cold, phases, probes, primed, warm, later = (cell.strip() for cell in rows[0])
    assert name == "lion" and graphs == "per_tensor"
    parts = [float(x) for x in phases.split(" / ")]
    assert len(parts) == 5 and all(x >= 0 for x in parts)  # capture, lowering, C++, waiting for the probes, rest
    assert sum(parts) == pytest.approx(float(cold), abs=0.25)  # the phases and the rest make up the cold step
    assert parts[2] > 0  # an empty cache compiles C++ (the kernel, in the compiling thread)
    assert float(probes) > 0  # and the probes' test programs, in their own threads
    assert float(cold) > float(warm) > 0 and float(primed) > 0 and float(later) > 0


def load_profile_step():
    spec = importlib.util.spec_from_file_location("optarena_bench_profile_step", SCRIPT.parent / "profile_step.py")
    assert spec is not None and spec.loader is not None
    profile_step = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = profile_step  # its dataclasses look their module up
    spec.loader.exec_module(profile_step)
    return profile_step


def test_profile_step_times_the_parts_inside_real_steps_and_puts_the_step_back(tmp_path) -> None:
    """The table "inside real steps": per row, the step, the kernels (torch's fused kernel, optarena's compiled
    module), the step less the kernels and the engine's parts, timed while real steps run; afterwards the optimizer's
    own methods and torch's fused kernel are what they were."""
    import torch

    profile_step = load_profile_step()
    fused = torch._fused_adamw_
    out = tmp_path / "profile.md"
    profile_step.main(
        ["--set", "resnet18", "--scale", "0.01", "--optimizers", "lion", "--steps", "3", "--out", str(out)]
    )
    assert torch._fused_adamw_ is fused
    text = out.read_text()
    table = text[text.index("The same inside real steps") :]
    header = next(line for line in table.splitlines() if line.startswith("| step |"))
    names = [cell.strip() for cell in header.split("|")[2:-1]]
    assert names[:3] == ["step()", "the kernels", "step() less the kernels"]
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:-1] for line in table.splitlines()[4:] if line.startswith("| ")
    }
    assert set(rows) == {"torch AdamW fused", "lion compiled"}  # the foreach rows have no parts to time
    for label, cells in rows.items():
        values = dict(zip(names, cells))
        step, kernels, rest = (float(values[n]) for n in names[:3])
        assert step > 0 and kernels > 0 and rest == pytest.approx(step - kernels, abs=0.2)
        parts = {n: float(values[n]) for n in names[3:] if values[n].strip() != "—"}
        # At 1 % of ResNet-18 the group is a flat one: no aliasing check (its buffers are the engine's own).
        expected = {"gather and count", "slices", "direct call (aliasing check included)"}
        assert set(parts) == (expected if label == "lion compiled" else set()) and all(v > 0 for v in parts.values())


def test_profile_step_refuses_a_bad_variant_by_name() -> None:
    """--variant NAME:KEY=VALUE: a missing part, an option inductor does not have, a value that is not a literal."""
    import argparse

    profile_step = load_profile_step()
    assert profile_step.parse_variant("combo:combo_kernels=True") == ("combo", {"combo_kernels": True})
    for text, says in [
        ("combo", "expected NAME:KEY=VALUE"),
        ("x:no_such_option=1", "'no_such_option' is not an option of torch._inductor.config"),
        ("x:combo_kernels=__import__('os')", "is not a Python literal"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(says)):
            profile_step.parse_variant(text)


def test_layout_script_times_each_configuration_against_itself_per_layout(tmp_path) -> None:
    """benchmarks/layout.py writes one row per configuration, a step time for the 'same' layout and a ratio for each
    other layout (tensors of a scaled-down set still reach the size the script moves)."""
    spec = importlib.util.spec_from_file_location("optarena_bench_layout", SCRIPT.parent / "layout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "layout.md"
    threads = torch.get_num_threads()
    argv = ["--set", "huge", "--optimizers", "lion", "--modes", "foreach", "--rounds", "2", "--steps", "1"]
    assert module.main([*argv, "--warmup", "1", "--malloc", "system", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "configuration" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["torch AdamW fused", "lion foreach"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0
        assert len(cells) == 8 and all(re.fullmatch(r"\d+\.\d\d \(\d+\.\d\d–\d+\.\d\d\)", c) for c in cells[2:])
