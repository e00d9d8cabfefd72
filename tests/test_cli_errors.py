"""A user's mistake is one clear line from the CLI, never a traceback, and nothing already computed is lost.

Most cases drive ``optarena.arena.cli.main`` in-process with training replaced by a function that fails
the test if it is called: the mistake must be found before any training starts. The cases whose
traceback came from Optuna's logging (a missing dataset, Ctrl-C) run the real command in a subprocess,
so that everything the process writes to its terminal is seen.

Unwritable locations: a path under a regular file, ``/proc`` (no new files there) and ``/sys`` (read-only
even for root, which file permissions would not stop); a folder that disappears or turns unwritable
during training is simulated by replacing it with a file, or by making ``Path.write_text`` raise.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import torch

from optarena.arena import cli
from optarena.arena.cli import main
from optarena.arena.run import runner, single
from optarena.arena.study import objectives

REPO = Path(__file__).resolve().parents[1]
TINY = ["--subset", "64", "--epochs", "1"]
COMPARE = ["compare", "--task", "digits", "--optimizers", "adamw", "--trials", "1", "--seeds", "1", *TINY]
RUN = ["run", "--task", "digits", "--optimizer", "adamw", *TINY]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run from a scratch folder (default outputs land there) and restore torch's thread count."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training fails the test: the mistake must be reported before any run starts."""

    def train(*args, **kwargs):
        raise AssertionError("training started before the mistake was reported")

    monkeypatch.setattr(runner, "train", train)
    monkeypatch.setattr(objectives, "train", train)


def cli_run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_one_line_error(code: int, output: str, *fragments: str, exit_code: int = 2) -> str:
    assert code == exit_code, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_claims(folder: Path, baseline: str = "sgdm") -> Path:
    (folder / "exp.toml").write_text(
        f'name = "exp"\ntasks = ["digits"]\noptimizers = ["adamw", "sgdm"]\nout = "{folder / "exp-out"}"\n'
    )
    claims = folder / "claims.toml"
    claims.write_text(
        '[[claim]]\nid = "x"\npaper = "P"\nclaim = "c"\npaper_result = "r"\nexperiment = "exp.toml"\n'
        f'task = "digits"\nmethod = "adamw"\nbaseline = "{baseline}"\n'
        'metric = "test accuracy"\ndirection = "higher"\nmargin = 0.01\npaper_effect_source = "none"\n'
    )
    return claims


# --- output locations, checked before anything runs ---------------------------------------------------------


def unusable(kind: str, tmp_path: Path) -> Path:
    if kind == "under a file":
        (tmp_path / "a-file").write_text("not a folder")
        return tmp_path / "a-file" / "out"
    return Path("/proc/optarena-test/out") if kind == "proc" else Path("/sys/optarena-test")


@pytest.mark.parametrize("kind", ["under a file", "proc", "sys (read-only)"])
@pytest.mark.parametrize("command", ["compare", "run", "report", "evidence"])
def test_an_unusable_out_is_one_line_before_any_training(
    command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    out = unusable(kind, tmp_path)
    if command == "compare":
        argv = [*COMPARE, "--out", out]
    elif command == "run":
        argv = [*RUN, "--out", out]
    elif command == "report":
        argv = ["report", "--storage", f"sqlite:///{tmp_path / 'store.db'}", "--out", out]
    else:
        argv = ["evidence", "--claims", write_claims(tmp_path), "--out", out / "results.md"]
    line = assert_one_line_error(*cli_run(capsys, *argv), "Invalid --out: cannot write to ", str(out))
    reason = "a-file is a file, not a folder" if kind == "under a file" else "takes no new files"
    assert reason in line
    assert not out.exists()


def test_unusable_store_and_tensorboard_locations_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    (tmp_path / "a-file").write_text("")
    bad_store = f"sqlite:///{tmp_path / 'a-file' / 'optarena.db'}"
    assert_one_line_error(
        *cli_run(capsys, *COMPARE, "--out", tmp_path / "out", "--storage", bad_store),
        f"Invalid --storage: cannot write to {tmp_path / 'a-file'}: it is a file, not a folder",
    )
    assert_one_line_error(
        *cli_run(capsys, *RUN, "--out", tmp_path / "out", "--tensorboard", tmp_path / "a-file" / "tb"),
        "Invalid --tensorboard: cannot write to",
    )
    assert_one_line_error(
        *cli_run(capsys, "evidence", "--claims", write_claims(tmp_path), "--out", tmp_path),
        f"Invalid --out: cannot write to {tmp_path}: it is a folder, not a file",
    )
    assert not (tmp_path / "out").exists()


# --- a finished run is never lost ---------------------------------------------------------------------------


def _out_turns_into_a_file(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    real = runner.train

    def train(*args, **kwargs):
        result = real(*args, **kwargs)
        shutil.rmtree(out)  # the folder disappears during training, and something else takes its name
        out.write_text("")
        return result

    monkeypatch.setattr(runner, "train", train)


def _out_turns_read_only(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    real = Path.write_text

    def write_text(self: Path, *args, **kwargs):
        if self.parent == out:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


@pytest.mark.parametrize("failure", [_out_turns_into_a_file, _out_turns_read_only])
def test_a_finished_run_that_cannot_be_written_is_saved_elsewhere(
    failure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    failure(monkeypatch, out)
    code, output = cli_run(capsys, *RUN, "--out", out)
    assert output.startswith("epoch   0  step") and "epoch   1  step" in output  # it trained to the end
    output = "\n".join(line for line in output.splitlines() if not line.startswith("epoch "))
    line = assert_one_line_error(code, output, f"cannot write the results to {out}", exit_code=1)
    saved = Path(line.split("curves are saved in ")[1].split(" ")[0])
    assert saved.parent.parent == tmp_path / "system-tmp"
    data = json.loads(saved.read_text())
    assert data["task"] == "digits" and len(data["records"]) == 2  # epoch 0 and epoch 1: the whole run
    assert saved.with_suffix(".png").stat().st_size > 0


def test_a_run_that_can_be_written_nowhere_prints_its_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _out_turns_read_only(monkeypatch, out)
    monkeypatch.setattr(single, "_fallback_folder", lambda: None)
    code, output = cli_run(capsys, *RUN, "--out", out)
    assert code == 1 and "Traceback" not in output
    assert "the curves are printed above" in output
    start = output.index('{\n "task"')
    data = json.loads(output[start : output.index("\n}\n", start) + 2])
    assert data["optimizer"] == "adamw" and len(data["records"]) == 2


# --- hyperparameters, targets, files -------------------------------------------------------------------------


def test_unknown_set_names_list_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    line = assert_one_line_error(
        *cli_run(capsys, *RUN, "--set", "bogus=1"), "Invalid --set bogus=1: adamw has no hyperparameter 'bogus'"
    )
    valid = line.split("valid: ")[1].split(", ")
    assert {"lr", "betas", "weight_decay", "lookahead", "lookahead_k", "agr", "compile", "decay_1d"} <= set(valid)


@pytest.mark.parametrize(
    "setting,fragment",
    [
        ("betas=oops", "Invalid --set betas='oops': adamw does not accept it ("),
        ("betas=[0.9]", "Invalid --set betas=[0.9]: adamw does not accept it"),
        ("weight_decay=-1", "Invalid --set weight_decay=-1: adamw does not accept it"),
        ("lookahead_k=3", "Invalid --set lookahead_k=3: adamw does not accept it"),  # needs lookahead=true
    ],
)
def test_set_values_of_the_wrong_type_name_the_key(
    setting: str, fragment: str, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    assert_one_line_error(*cli_run(capsys, *RUN, "--set", setting), fragment)


@pytest.mark.parametrize(
    "settings",
    [["lookahead=true", "lookahead_k=3"], ['agr="code"', "agr_stop_step=10"], ["amsgrad=true"]],
)
def test_set_values_that_go_together_pass_the_check(settings: list[str], no_training: None) -> None:
    argv = [*RUN, *(arg for setting in settings for arg in ("--set", setting))]
    with pytest.raises(AssertionError, match="training started"):  # the check let them through to training
        main(argv)


def test_good_set_values_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = cli_run(capsys, *RUN, "--out", tmp_path / "o", "--set", "betas=[0.8, 0.99]", "--set", "eps=1e-7")
    assert code == 0, output
    assert json.loads((tmp_path / "o" / "digits-adamw-seed0.json").read_text())["hyperparameters"] == {
        "betas": [0.8, 0.99],
        "eps": 1e-7,
    }


@pytest.mark.parametrize("target", ["nan", "inf", "-inf"])
def test_a_non_finite_target_is_refused(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    assert_one_line_error(
        *cli_run(capsys, *COMPARE, "--out", tmp_path / "o", f"--target={target}"), "Invalid --target:", "finite"
    )
    config = tmp_path / "study.toml"
    config.write_text(f'name = "s"\ntasks = ["digits"]\ntarget = {target}\n')
    assert_one_line_error(
        *cli_run(capsys, "compare", "--config", config, "--out", tmp_path / "o"),
        f"{config}:3: key 'target' must be a finite number",
    )
    assert not (tmp_path / "o").exists()


def test_files_that_are_not_utf8_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latin1 = tmp_path / "study.toml"
    latin1.write_bytes('name = "étude"\n'.encode("latin-1"))
    assert_one_line_error(
        *cli_run(capsys, "compare", "--config", latin1, "--out", tmp_path / "o"),
        f"{latin1}: not a UTF-8 text file (byte 0xe9 at offset 8)",
    )
    assert_one_line_error(
        *cli_run(capsys, "evidence", "--claims", latin1, "--out", tmp_path / "r.md"),
        f"{latin1}: not a UTF-8 text file (byte 0xe9 at offset 8)",
    )


@pytest.mark.parametrize(
    "argv,fragment",
    [
        ([*COMPARE, "--trials", "0"], "Invalid trials: 0"),
        ([*COMPARE, "--seeds", "-1"], "Invalid seeds: -1"),
        ([*COMPARE, "--threads", "0"], "Invalid threads: 0"),
        ([*COMPARE, "--eval-subset", "0"], "Invalid eval_subset: 0"),
        (["compare", "--task", "nope"], "Unknown task 'nope'; valid tasks: "),
        (["compare", "--optimizers", "nope"], "Unknown optimizer 'nope'; valid names: "),
        (["compare", "--config", "missing.toml"], "missing.toml: no such experiment file"),
        (["compare", "--config", "."], ".: not a file"),
        ([*COMPARE, "--data-dir", "no-such-folder"], "Invalid --data-dir: no-such-folder does not exist"),
        ([*RUN, "--nproc", "0"], "Invalid --nproc: 0"),
        ([*RUN, "--threads", "0"], "Invalid --threads: 0; expected an integer >= 1"),
        ([*RUN, "--eval-subset", "0"], "Invalid --eval-subset: 0"),
        ([*RUN, "--epochs", "0"], "Invalid --epochs: 0"),
        ([*RUN, "--seed", "-1"], "Invalid --seed: -1; expected an integer >= 0"),
        ([*RUN, "--device", "tpu"], "Invalid --device: 'tpu'"),
        ([*RUN, "--lr", "nan"], "Invalid --lr: adamw does not accept it"),
        ([*RUN, "--lr", "-1"], "Invalid --lr: adamw does not accept it"),
        ([*RUN, "--set", "lr"], "Invalid --set 'lr': expected KEY=VALUE"),
        (["run", "--task", "nope", "--optimizer", "adamw"], "Unknown task 'nope'"),
        (["run", "--task", "digits", "--optimizer", "nope"], "Unknown optimizer 'nope'"),
        (["worker", "--storage", "sqlite:///w.db", "--study", "x", "--poll", "0"], "Invalid --poll: 0.0"),
        (["report", "--out", "."], "Invalid --out: . holds no optarena.db"),
        (["evidence", "--claims", "missing.toml"], "missing.toml: no such claims file"),
        (["evidence", "--claims", "."], ".: cannot read the claims file"),
        (["evidence", "--claims", "c.toml", "--run", "--workers", "0"], "Invalid --workers: 0; expected an int"),
        (["evidence", "--claims", "c.toml", "--workers", "2"], "Invalid --workers: 2 without --run"),
    ],
)
def test_other_mistakes_are_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    assert_one_line_error(*cli_run(capsys, *argv), fragment)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ('claim = "x"\n', "'claim' must be a list of tables"),
        ('[[claim]]\nid = "x"\nwhatever = 1\n', "claim 'x': unknown key 'whatever'"),
        (
            '[[claim]]\nid = "x"\npaper = 3\nclaim = "c"\npaper_result = "r"\nexperiment = "e.toml"\n'
            'task = "digits"\nmethod = "adamw"\nbaseline = "sgdm"\n',
            "claim 'x': key 'paper' must be a string, got 3",
        ),
    ],
)
def test_bad_claims_files_are_one_line(
    text: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = tmp_path / "claims.toml"
    claims.write_text(text)
    assert_one_line_error(*cli_run(capsys, "evidence", "--claims", claims, "--out", tmp_path / "r.md"), fragment)


def test_a_claim_its_experiment_does_not_run_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claims = write_claims(tmp_path, baseline="lion")
    assert_one_line_error(
        *cli_run(capsys, "evidence", "--claims", claims, "--out", tmp_path / "r.md"),
        "claim 'x': baseline 'lion' is not among the optimizers of exp.toml (adamw, sgdm)",
    )


def test_os_errors_from_user_paths_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for error in (
        PermissionError(13, "Permission denied", "/some/file"),
        IsADirectoryError(21, "Is a directory", "/some/folder"),
        NotADirectoryError(20, "Not a directory", "/a/file/below"),
        FileNotFoundError(2, "No such file or directory", "/nowhere"),
    ):

        def fail(error: OSError = error) -> None:
            raise error

        monkeypatch.setattr(cli, "cmd_list", fail)
        assert_one_line_error(*cli_run(capsys, "list"), f"{error.filename}: {error.strerror}")


def test_ctrl_c_during_run_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def train(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train", train)
    code, output = cli_run(capsys, *RUN)
    assert code == 130 and "Traceback" not in output
    assert [line for line in output.splitlines() if line.strip()] == [
        "interrupted: the run was not finished, so nothing was written"
    ]


# --- in a real process: nothing but the message ---------------------------------------------------------------


def optarena(cwd: Path, *argv: str | Path, script: str = "") -> subprocess.CompletedProcess[str]:
    """``python -c SCRIPT`` then ``main(argv)``, as a user runs ``optarena``; everything the process prints."""
    code = f"import sys\n{script}\nfrom optarena.arena.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_a_missing_dataset_is_reported_first_and_alone(tmp_path: Path) -> None:
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    out = tmp_path / "out"
    result = optarena(
        tmp_path, "compare", "--task", "rosenbrock", "mnist_cnn", "--optimizers", "adamw", "--trials", "2",
        "--seeds", "1", "--epochs", "1", "--data-dir", empty, "--out", out,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "Trial" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: mnist needs the MNIST-format files"), output
    assert str(empty) in lines[0]
    assert not (out / "optarena.db").exists(), "nothing is written to the store"


CTRL_C_SCRIPT = """
from optarena.arena.study import objectives
real, calls = objectives.train, []
def train(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # during the second trial, as if Ctrl-C were pressed
        raise KeyboardInterrupt
    return real(*args, **kwargs)
objectives.train = train
"""


def test_ctrl_c_during_compare_prints_only_the_message_and_keeps_finished_trials(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = optarena(
        tmp_path, *COMPARE[:5], "--trials", "3", "--seeds", "1", *TINY, "--out", out, script=CTRL_C_SCRIPT
    )
    output = result.stdout + result.stderr
    assert result.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output and "Trial" not in output, output
    assert "interrupted: finished trials are in the store; rerun the same command to continue" in output
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'optarena.db'}")
    tune = optuna.load_study(study_name="default/digits/adamw/tune", storage=storage)
    states = [t.state for t in tune.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1, states  # the finished trial is kept


def test_a_bad_allocator_setting_is_one_line_before_any_training(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_training: None
):
    monkeypatch.setenv("OPTARENA_MALLOC", "fast")
    assert_one_line_error(*cli_run(capsys, *RUN), "Invalid OPTARENA_MALLOC: 'fast'", "'reuse', 'system'")


def test_the_training_commands_keep_freed_memory(monkeypatch: pytest.MonkeyPatch):
    from optarena.arena.run import allocator

    monkeypatch.setenv("OPTARENA_MALLOC", "system")
    assert allocator.keep_freed_memory().startswith("system malloc")
    monkeypatch.delenv("OPTARENA_MALLOC")
    done = allocator.keep_freed_memory()
    glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert done.startswith("reuse") if glibc else done.startswith("system malloc")


def test_evidence_prints_the_pages_verdicts_after_the_correction(monkeypatch, capsys, tmp_path):
    """The command's summary lines are the results page's verdicts (Holm-corrected), not each test's own."""
    from types import SimpleNamespace

    from optarena.arena.evidence import command

    judgement = SimpleNamespace(
        claim=SimpleNamespace(id="some-claim"), comparison=SimpleNamespace(verdict="refuted"), verdict="underpowered"
    )
    page = tmp_path / "results.md"
    monkeypatch.setattr(command, "evidence", lambda *a, **k: command.Outcome([judgement], [], page))
    claims = tmp_path / "claims.toml"
    claims.write_text("")
    assert main(["evidence", "--claims", str(claims), "--out", str(page)]) == 0
    out = capsys.readouterr().out
    assert "some-claim: underpowered" in out and "refuted" not in out


@pytest.mark.parametrize(
    "old,new,fragment",
    [
        ('metric = "test accuracy"', 'metric = "test fid"', "metric 'test fid'; digits measures 'test accuracy'"),
        ('direction = "higher"', 'direction = "lower"', "direction 'lower', but a higher test accuracy is better"),
    ],
)
def test_a_claims_metric_or_direction_the_task_does_not_record_is_one_line(
    old: str, new: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = write_claims(tmp_path)
    claims.write_text(claims.read_text().replace(old, new))
    assert_one_line_error(*cli_run(capsys, "evidence", "--claims", claims, "--out", tmp_path / "r.md"), fragment)


def test_a_bad_command_line_value_is_not_blamed_on_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    config = tmp_path / "study.toml"
    config.write_text('name = "s"\ntasks = ["digits"]\noptimizers = ["adamw"]\ntrials = 2\n')
    line = assert_one_line_error(
        *cli_run(capsys, "compare", "--config", config, "--out", tmp_path / "o", "--optimizers", "adamw,sgdm"),
        "--optimizers: Unknown optimizer 'adamw,sgdm'",
    )
    assert str(config) not in line
    assert_one_line_error(
        *cli_run(capsys, "compare", "--config", config, "--out", tmp_path / "o", "--trials", "0"),
        "--trials: Invalid trials: 0",
    )
    config.write_text('name = "s"\ntasks = ["digits"]\noptimizers = ["nope"]\n')  # the file's own mistake: its line
    assert_one_line_error(
        *cli_run(capsys, "compare", "--config", config, "--out", tmp_path / "o"), f"{config}:3: Unknown optimizer"
    )
