"""The real-data tasks: loaders on tiny synthetic fixtures, task builds, models, errors and caches.

Every fixture is a few dozen examples written to ``tmp_path`` in the real on-disk format, so the
whole file runs in seconds; two tests read the real Debian Fashion-MNIST files and the shared
CIFAR-10 tarball, only partially, where they are installed.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from optarena.arena.tasks import TaskSettings, cifar, cifar_files, get_task, idx, list_tasks, mnist1d, shakespeare
from optarena.arena.tasks.base import MissingDataError
from optarena.arena.tasks.fashion_mnist import DEBIAN_FASHION_MNIST, load_mnist_format_splits
from optarena.arena.tasks.idx import (
    MNIST_FILES,
    DataFileError,
    cache_dir,
    find_mnist_files,
    read_idx,
    shared_data_dir,
)
from optarena.arena.tasks.models import (
    CharTransformer,
    Conv1DNet,
    ResNet18,
    Standardize,
    resnet20,
    standardized,
    vit_tiny,
)

DATA_TASKS = {
    "mnist1d_mlp",
    "mnist1d_cnn",
    "fashion_mnist_mlp",
    "fashion_mnist_cnn",
    "mnist_cnn",
    "cifar10_resnet20",
    "cifar10_resnet18",
    "cifar10_vit_tiny",
    "cifar100_resnet20",
    "shakespeare_char",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tensors are tiny, and on a busy 2-core machine a second thread waiting at
    every barrier multiplies the run time rather than halving it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optarena-cache")


@pytest.fixture(autouse=True)
def isolated_locations(monkeypatch: pytest.MonkeyPatch, session_cache: Path) -> None:
    """No test writes to the user's cache; MNIST-1D is generated once per session into this cache."""
    monkeypatch.setenv("OPTARENA_CACHE", str(session_cache))


@pytest.fixture
def no_shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    empty = tmp_path / "empty-shared"
    empty.mkdir()
    monkeypatch.setenv("OPTARENA_SHARED_DATA", str(empty))
    return empty


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_step_and_evaluate(problem) -> dict[str, float]:
    """One forward/backward on the first batch (gradients must reach every parameter), then an evaluation."""
    batch = next(iter(problem.batches(1)))
    loss = problem.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in problem.model.parameters())
    metrics = problem.evaluate()
    assert {"train_loss", "train_metric", "val_metric", "test_metric"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    return metrics


# --------------------------------------------------------------------------------------------------
# Fixture writers in the real formats.


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C}
    array = np.asarray(array)
    if array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.array(array.shape, ">i4").tobytes()
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_mnist_dir(folder: Path, n_train: int = 120, n_test: int = 20, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for role, name in MNIST_FILES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[role], gz=gz)
    return arrays


def cifar_batch(n: int, rng: np.random.Generator, label_key: str, classes: int) -> dict:
    batch = {
        b"batch_label": b"tiny batch",
        label_key.encode(): rng.integers(0, classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if label_key == "fine_labels":
        batch[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
    return batch


def write_cifar10_pickles(folder: Path, per_batch: int = 8, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in cifar_files.CIFAR10_PICKLES:
        batches[name] = cifar_batch(per_batch, rng, "labels", 10)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [c.encode() for c in cifar_files.CIFAR10_CLASSES]})
    )
    return batches


def write_cifar100_pickles(folder: Path, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {"train": cifar_batch(30, rng, "fine_labels", 100), "test": cifar_batch(8, rng, "fine_labels", 100)}
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    return batches


def jpeg_bytes(color: tuple[int, int, int], size: int = 32) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="JPEG", quality=95)
    return out.getvalue()


def class_color(label: int) -> tuple[int, int, int]:
    return (20 * label + 10, 200 - 15 * label, 128)


def jpeg_layout(per_class: dict[str, int]) -> dict[str, bytes]:
    """``cifar10/<split>/<class>/NNNN.jpg`` -> JPEG bytes, each image one solid colour that encodes its class."""
    files = {}
    for split, n in per_class.items():
        for label, name in enumerate(cifar_files.CIFAR10_CLASSES):
            for i in range(n):
                files[f"cifar10/{split}/{name}/{i:04d}.jpg"] = jpeg_bytes(class_color(label))
    return files


def write_tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(files, reverse=True):  # not the sorted order: the loader must sort
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    return path


def write_text(path: Path, n: int = 3000, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    text = "".join(rng.choice(list("abcdefgh \n"), n))
    path.write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------------------------------------
# Registry.


def test_data_tasks_are_registered_with_budget_target_and_needs() -> None:
    assert set(list_tasks()) >= DATA_TASKS
    for name in DATA_TASKS:
        task = get_task(name)
        assert task.epochs > 0 and task.needs and task.description
        if task.mode == "max":
            assert 0 < task.target < 1 and task.metric == "accuracy"
    assert get_task("shakespeare_char").mode == "min"
    assert get_task("fashion_mnist_cnn").target == 0.90


# --------------------------------------------------------------------------------------------------
# IDX reader.


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_uint8_and_int32(tmp_path: Path, gz: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", images, gz=gz), shape=(None, 3, 4)), images)
    values = np.array([-5, 0, 70000], dtype=">i4")
    out = read_idx(write_idx(tmp_path / "b", values, gz=gz), ndim=1)
    assert out.tolist() == [-5, 0, 70000] and out.dtype.isnative


def test_read_idx_errors_name_the_file_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere-idx1-ubyte"):
        read_idx(tmp_path / "nothere-idx1-ubyte")
    (tmp_path / "text").write_text("hello, not an IDX file")
    with pytest.raises(DataFileError, match=r"text: not an IDX file: magic bytes 68656c6c, expected 0000"):
        read_idx(tmp_path / "text")
    path = write_idx(tmp_path / "images", np.zeros((4, 5, 5), np.uint8))
    with pytest.raises(DataFileError, match=r"images: IDX file has shape \(4, 5, 5\), expected \('any', 28, 28\)"):
        read_idx(path, shape=(None, 28, 28))
    with pytest.raises(DataFileError, match="has 3 dimensions"):
        read_idx(path, ndim=1)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataFileError, match=r"images: IDX header says shape \(4, 5, 5\) \(100 bytes"):
        read_idx(path)
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(10))[:-6])
    with pytest.raises(DataFileError, match=r"broken\.gz: not a valid gzip file"):
        read_idx(tmp_path / "broken.gz")


def test_incomplete_mnist_folder_names_the_missing_files(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileError, match="missing t10k-labels-idx1-ubyte"):
        find_mnist_files(tmp_path)
    assert find_mnist_files(tmp_path / "elsewhere") is None


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST and MNIST.


def test_mnist_format_splits_from_a_user_folder(tmp_path: Path) -> None:
    arrays = write_mnist_dir(tmp_path / "fashion-mnist", gz=False)
    splits = load_mnist_format_splits("fashion_mnist", tmp_path)
    assert [len(splits[s][1]) for s in ("train", "val", "test")] == [110, 10, 20]  # 1/12 of the training set
    assert splits["train"][0].shape[1:] == (1, 28, 28) and splits["train"][0].dtype == torch.uint8
    assert torch.equal(splits["test"][0][:, 0], torch.from_numpy(arrays["test_images"]))
    # train + val is a permutation of the file's training set
    labels = torch.cat([splits["train"][1], splits["val"][1]]).sort().values
    assert torch.equal(labels, torch.from_numpy(arrays["train_labels"].astype(np.int64)).sort().values)
    assert len(load_mnist_format_splits("fashion_mnist", tmp_path, subset=16)["train"][1]) == 16


@pytest.mark.parametrize("name", ["fashion_mnist_mlp", "fashion_mnist_cnn", "mnist_cnn"])
def test_mnist_format_tasks_build_and_train(tmp_path: Path, name: str) -> None:
    write_mnist_dir(tmp_path / ("mnist" if name == "mnist_cnn" else "fashion-mnist"))
    problem = get_task(name).build(TaskSettings(seed=1, data_dir=tmp_path, subset=64, batch_size=32))
    assert problem.steps_per_epoch == 2
    train_step_and_evaluate(problem)


def test_mnist_missing_says_which_files_and_where(tmp_path: Path) -> None:
    for data_dir in (tmp_path, None):
        with pytest.raises(MissingDataError) as error:
            get_task("mnist_cnn").build(TaskSettings(data_dir=data_dir))
        message = str(error.value)
        assert all(name in message for name in MNIST_FILES.values())
        assert "<data_dir>/mnist/" in message
        if data_dir is not None:
            assert str(tmp_path / "mnist") in message and str(tmp_path / "MNIST" / "raw") in message


def test_a_partial_fashion_folder_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path / "fashion-mnist")
    (tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataFileError, match="missing train-images-idx3-ubyte"):
        get_task("fashion_mnist_mlp").build(TaskSettings(data_dir=tmp_path))


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_files() -> None:
    files = find_mnist_files(DEBIAN_FASHION_MNIST)
    assert files is not None
    labels = read_idx(files["train_labels"], ndim=1)
    assert len(labels) == 60_000 and np.bincount(labels).tolist() == [6000] * 10
    test_images = read_idx(files["test_images"], shape=(10_000, 28, 28))
    assert test_images.dtype == np.uint8
    problem = get_task("fashion_mnist_mlp").build(TaskSettings(subset=256))  # no data_dir: the Debian copy
    assert [len(problem.splits[s][1]) for s in ("train", "val", "test")] == [256, 5000, 10_000]
    train_step_and_evaluate(problem)


# --------------------------------------------------------------------------------------------------
# CIFAR.


def _expected_cifar10(batches: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    x = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32)
    return x, np.concatenate([b[b"labels"] for b in train])


@pytest.mark.parametrize("layout", ["flat", "nested", "tarball"])
def test_cifar10_pickles(tmp_path: Path, layout: str, no_shared_data: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py" if layout != "flat" else tmp_path
    batches = write_cifar10_pickles(folder)
    if layout == "tarball":
        with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    x_train, y_train, x_test, y_test = cifar_files.load_cifar10(tmp_path)
    x, y = _expected_cifar10(batches)
    assert np.array_equal(x_train, x) and np.array_equal(y_train, y) and y_train.dtype == np.int64
    assert np.array_equal(x_test, batches["test_batch"][b"data"].reshape(-1, 3, 32, 32))
    assert y_test.tolist() == batches["test_batch"][b"labels"]
    if layout == "tarball":  # the archive itself as data_dir, given as a string
        assert np.array_equal(cifar_files.load_cifar10(str(tmp_path / "cifar-10-python.tar.gz"))[0], x)


def test_cifar_wrong_files_name_the_file(tmp_path: Path) -> None:
    write_cifar10_pickles(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataFileError, match="incomplete CIFAR pickles, missing test_batch"):
        cifar_files.load_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"this is not a pickle")
    with pytest.raises(DataFileError, match="test_batch: not a CIFAR python-version pickle"):
        cifar_files.load_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataFileError, match=r"test_batch: 'data' is uint8 \(2, 100\) with 2 labels, expected"):
        cifar_files.load_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataFileError, match="test_batch: expected the keys 'data' and 'labels'"):
        cifar_files.load_cifar10(tmp_path)


def test_cifar100_pickles_use_fine_labels(tmp_path: Path) -> None:
    batches = write_cifar100_pickles(tmp_path / "cifar-100-python")
    x_train, y_train, _, y_test = cifar_files.load_cifar100(tmp_path)
    assert x_train.shape == (30, 3, 32, 32)
    assert y_train.tolist() == batches["train"][b"fine_labels"] and y_test.tolist() == batches["test"][b"fine_labels"]
    archive = tmp_path / "archive" / "cifar-100-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-100-python", arcname="cifar-100-python")
    for data_dir in (archive.parent, archive):
        assert np.array_equal(cifar_files.load_cifar100(data_dir)[1], y_train)


def _string(value: bytes) -> bytes:  # Python 2 str: SHORT_BINSTRING or BINSTRING
    return b"U" + bytes([len(value)]) + value if len(value) < 256 else b"T" + struct.pack("<i", len(value)) + value


def _int(value: int) -> bytes:  # BININT1, BININT2 or BININT
    if 0 <= value < 256:
        return b"K" + bytes([value])
    return b"M" + struct.pack("<H", value) if 0 <= value < 65536 else b"J" + struct.pack("<i", value)


def python2_cifar_pickle(batch: dict) -> bytes:
    """``batch`` pickled as the CIFAR site's files are: Python 2's cPickle, protocol 2.

    Byte strings are Python 2 ``str`` opcodes, and each array is ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype`` with numpy 1's states — the opcodes ``pickletools.dis`` shows in
    the official ``data_batch_1`` (less its memo entries).
    """
    out = bytearray(b"\x80\x02}(")  # PROTO 2, EMPTY_DICT, MARK
    for key, value in batch.items():
        out += _string(key)
        if isinstance(value, np.ndarray):
            out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85" + _string(b"b")
            out += b"\x87R(" + _int(1) + b"".join(_int(d) for d in value.shape) + b"\x86"
            out += b"cnumpy\ndtype\n" + _string(b"u1") + _int(0) + _int(1) + b"\x87R"
            out += b"(" + _int(3) + _string(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _int(0) + b"tb"
            out += b"\x89" + _string(value.tobytes()) + b"tb"
        elif isinstance(value, list):
            out += b"](" + b"".join(_int(v) if isinstance(v, int) else _string(v) for v in value) + b"e"
        else:
            out += _string(value)
    return bytes(out + b"u.")  # SETITEMS, STOP


def test_python2_cifar_pickles_as_distributed_load(tmp_path: Path, no_shared_data: Path) -> None:
    rng = np.random.default_rng(3)
    batches = {name: cifar_batch(8, rng, "labels", 10) for name in cifar_files.CIFAR10_PICKLES}
    for name, batch in batches.items():
        (tmp_path / name).write_bytes(python2_cifar_pickle(batch))
    raw = (tmp_path / "data_batch_1").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"_codecs" not in raw  # the official files' form
    x_train, y_train, x_test, y_test = cifar_files.load_cifar10(tmp_path)
    x, y = _expected_cifar10(batches)
    assert np.array_equal(x_train, x) and np.array_equal(y_train, y)
    assert np.array_equal(x_test, batches["test_batch"][b"data"].reshape(-1, 3, 32, 32))
    assert y_test.tolist() == batches["test_batch"][b"labels"]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_pickles_written_by_python3_load_under_every_protocol(protocol: int) -> None:
    batch = cifar_batch(5, np.random.default_rng(protocol), "fine_labels", 100)
    x, y = cifar_files.read_cifar_pickle(pickle.dumps(batch, protocol=protocol), "train", "fine_labels")
    assert np.array_equal(x, batch[b"data"].reshape(-1, 3, 32, 32)) and y.tolist() == batch[b"fine_labels"]


class _System:
    """Unpickling this runs a shell command (os.system) that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    """Unpickling this runs Python code (builtins.exec) that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("attack", [_System, _Exec])
def test_a_crafted_cifar_pickle_runs_nothing_and_names_the_file(
    tmp_path: Path, no_shared_data: Path, attack: type, protocol: int
) -> None:
    write_cifar10_pickles(tmp_path)
    marker = tmp_path / "it-ran"
    crafted = pickle.dumps({b"data": attack(marker), b"labels": [0]}, protocol=protocol)
    (tmp_path / "data_batch_1").write_bytes(crafted)
    with pytest.raises(ValueError) as error:  # DataFileError is a ValueError
        get_task("cifar10_resnet20").build(TaskSettings(data_dir=tmp_path))
    assert not marker.exists(), "the crafted pickle ran its payload"
    assert isinstance(error.value, DataFileError)
    message = str(error.value)
    assert message.startswith(f"{tmp_path}/data_batch_1: not a CIFAR python-version pickle")
    assert ("system" if attack is _System else "exec") in message and "a CIFAR batch never holds" in message
    # The control: plain pickle.loads runs the very same bytes.
    pickle.loads(crafted)
    assert marker.exists()


def test_a_crafted_pickle_in_the_official_tarball_runs_nothing(tmp_path: Path, no_shared_data: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_pickles(folder)
    marker = tmp_path / "it-ran"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _System(marker), b"labels": [0]}, protocol=2))
    archive = tmp_path / "archive" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(DataFileError, match=rf"^{re.escape(str(archive))}/data_batch_1: not a CIFAR"):
        cifar_files.load_cifar10(archive.parent)
    assert not marker.exists()


@pytest.mark.parametrize(
    "value,refused",
    [
        (np.array([1, 2], dtype=object), "dtype object"),  # object arrays hold arbitrary pickled objects
        (np.array([("a", 1)], dtype=[("s", "U1"), ("i", "i4")]), "dtype"),  # structured, not plain numeric
        (np.ma.masked_array([1, 2]), "numpy.ma"),  # another class than numpy.ndarray
        (np.int64(3), "scalar"),  # numpy scalars are not part of a batch either
    ],
)
def test_only_plain_numeric_arrays_are_rebuilt(value: object, refused: str) -> None:
    data = pickle.dumps({b"data": value, b"labels": [0]}, protocol=2)
    with pytest.raises(DataFileError, match=rf"test_batch: not a CIFAR python-version pickle .*{refused}"):
        cifar_files.read_cifar_pickle(data, "test_batch", "labels")


def test_data_tasks_check_their_data_without_reading_it(
    tmp_path: Path, no_shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Task.check_data`` raises what ``build`` would for missing data, and reads nothing when the data are there."""
    for name in DATA_TASKS:
        assert get_task(name).check is not None, name
    settings = TaskSettings(data_dir=tmp_path)
    for name, error in (
        ("cifar10_resnet20", "CIFAR-10 not found"),
        ("cifar100_resnet20", "CIFAR-100 not found"),
        ("mnist_cnn", "mnist needs the MNIST-format files"),
        ("shakespeare_char", "Tiny Shakespeare not found"),
    ):
        with pytest.raises(MissingDataError, match=error):
            get_task(name).check_data(settings)
        with pytest.raises(MissingDataError, match=error):
            get_task(name).build(settings)

    def no_reading(*args, **kwargs):
        raise AssertionError("check_data read a data file")

    write_cifar10_pickles(tmp_path / "cifar-10-batches-py")
    write_cifar100_pickles(tmp_path / "cifar-100-python")
    write_mnist_dir(tmp_path / "mnist")
    write_text(tmp_path / shakespeare.FILENAME)
    for module, function in ((cifar_files, "read_cifar_pickle"), (shakespeare, "load_corpus"), (idx, "read_idx")):
        monkeypatch.setattr(module, function, no_reading)
    for name in ("cifar10_resnet20", "cifar100_resnet20", "mnist_cnn", "shakespeare_char", "digits"):
        get_task(name).check_data(settings)
    (tmp_path / "cifar-100-python" / "test").unlink()  # half a dataset is an error naming what is missing
    with pytest.raises(DataFileError, match="incomplete CIFAR pickles, missing test"):
        get_task("cifar100_resnet20").check_data(settings)


def test_missing_cifar_names_the_paths_tried_and_how_to_get_it(tmp_path: Path, no_shared_data: Path) -> None:
    with pytest.raises(MissingDataError) as error:
        get_task("cifar10_resnet20").build(TaskSettings(data_dir=tmp_path))
    message = str(error.value)
    assert (
        str(tmp_path / "cifar-10-batches-py") in message and str(no_shared_data / cifar_files.JPEG_TARBALL) in message
    )
    assert cifar_files.CIFAR_URL in message and "cifar-10-python.tar.gz" in message
    with pytest.raises(MissingDataError, match=r"CIFAR-100 not found .*cifar-100-python\.tar\.gz"):
        get_task("cifar100_resnet20").build(TaskSettings(data_dir=tmp_path))
    with pytest.raises(MissingDataError, match="no data_dir given"):
        cifar_files.load_cifar100(None)


def test_jpeg_tarball_is_decoded_once_then_read_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTARENA_CACHE", str(tmp_path / "cache"))
    tarball = write_tarball(tmp_path / cifar_files.JPEG_TARBALL, jpeg_layout({"train": 2, "test": 1}))
    x_train, y_train, x_test, y_test = cifar_files.load_cifar10(tmp_path)
    assert x_train.shape == (20, 3, 32, 32) and x_test.shape == (10, 3, 32, 32) and x_train.dtype == np.uint8
    assert y_train.tolist() == [c for c in range(10) for _ in range(2)] and y_test.tolist() == list(range(10))
    for image, label in zip(x_train, y_train):  # each image is its class's colour, up to JPEG's loss
        assert np.abs(image.mean(axis=(1, 2)) - np.array(class_color(label))).max() < 3
    cached = list((tmp_path / "cache").glob("cifar10-jpg-*.npz"))
    assert len(cached) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(cifar_files, "_decode_jpegs", no_decoding)
    again = cifar_files.load_cifar10(tarball)  # data_dir may also be the tarball itself
    assert all(np.array_equal(a, b) for a, b in zip(again, (x_train, y_train, x_test, y_test)))
    monkeypatch.undo()
    monkeypatch.setenv("OPTARENA_CACHE", str(tmp_path / "cache"))
    cached[0].write_bytes(b"a damaged cache is rebuilt, not trusted")
    assert np.array_equal(cifar_files.load_cifar10(tmp_path)[0], x_train)


def test_jpeg_folder_and_the_shared_tarball_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = jpeg_layout({"train": 1, "test": 1})
    for name, data in files.items():
        (tmp_path / "user" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "user" / name).write_bytes(data)
    x_train, y_train, _, _ = cifar_files.load_cifar10(tmp_path / "user")
    assert x_train.shape == (10, 3, 32, 32) and y_train.tolist() == list(range(10))
    shared = tmp_path / "shared"
    shared.mkdir()
    write_tarball(shared / cifar_files.JPEG_TARBALL, files)
    monkeypatch.setenv("OPTARENA_SHARED_DATA", str(shared))
    assert np.array_equal(cifar_files.load_cifar10(tmp_path / "nothing-here")[0], x_train)
    assert np.array_equal(cifar_files.load_cifar10(None)[0], x_train)


def test_jpeg_with_a_wrong_class_or_size_names_the_file(tmp_path: Path) -> None:
    files = jpeg_layout({"train": 1, "test": 1})
    files["cifar10/train/unicorn/0000.jpg"] = jpeg_bytes((0, 0, 0))
    with pytest.raises(DataFileError, match=r"cifar10/train/unicorn/0000.jpg is in an unknown class folder"):
        cifar_files.load_cifar10(write_tarball(tmp_path / "a.tar.gz", files))
    del files["cifar10/train/unicorn/0000.jpg"]
    files["cifar10/test/cat/0007.jpg"] = jpeg_bytes((0, 0, 0), size=28)
    with pytest.raises(DataFileError, match=r"cifar10/test/cat/0007.jpg is 28x28, expected 32x32"):
        cifar_files.load_cifar10(write_tarball(tmp_path / "b.tar.gz", files))
    files["cifar10/test/cat/0007.jpg"] = b"not a jpeg"
    with pytest.raises(DataFileError, match=r"cifar10/test/cat/0007.jpg is not a readable image"):
        cifar_files.load_cifar10(write_tarball(tmp_path / "c.tar.gz", files))


def test_random_crop_flip_matches_pad_crop_flip() -> None:
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = cifar.random_crop_flip(x, torch.Generator().manual_seed(3), padding=2)
    g = torch.Generator().manual_seed(3)  # replay the same draws
    dy, dx = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        crop = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], crop.flip(2) if flip[i] else crop)
    assert out.dtype == torch.uint8 and flip.any() and not flip.all()


@pytest.mark.parametrize("name", ["cifar10_resnet20", "cifar10_resnet18", "cifar10_vit_tiny", "cifar100_resnet20"])
def test_cifar_tasks_build_and_train(tmp_path: Path, name: str) -> None:
    if name.startswith("cifar100"):
        write_cifar100_pickles(tmp_path)
    else:
        write_cifar10_pickles(tmp_path)
    problem = get_task(name).build(TaskSettings(seed=0, data_dir=tmp_path, subset=16, batch_size=8))
    assert [len(problem.splits[s][1]) for s in ("train", "val", "test")] == [16, 4 if "10_" in name else 3, 8]
    assert problem.splits["train"][0].dtype == torch.uint8  # uint8 in memory, standardised by the model
    x, _ = next(iter(problem.batches(1)))
    x_again, _ = next(iter(problem.batches(1)))
    assert torch.equal(x, x_again)  # the epoch's generator makes batches and augmentation reproducible
    train_step_and_evaluate(problem)


@pytest.mark.skipif(
    not (shared_data_dir() / cifar_files.JPEG_TARBALL).is_file(), reason="the shared cifar10-jpg.tar.gz is not present"
)
def test_real_shared_cifar10_tarball_layout() -> None:
    """The real tarball: names and counts of all 60,000 members, and a few decoded images (not the whole set)."""
    counts: dict[tuple[str, str], int] = {}
    sample: dict[str, bytes] = {}
    with tarfile.open(shared_data_dir() / cifar_files.JPEG_TARBALL) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                _, split, label, _ = Path(member.name).parts
                counts[split, label] = counts.get((split, label), 0) + 1
                if counts[split, label] <= 2:
                    sample[member.name] = tar.extractfile(member).read()
    assert counts == {(s, c): n for s, n in (("train", 5000), ("test", 1000)) for c in cifar_files.CIFAR10_CLASSES}
    items = ((name, lambda data=data: data) for name, data in sample.items())
    x_train, y_train, x_test, _ = cifar_files._decode_jpegs(items, "sample")
    assert x_train.shape == (20, 3, 32, 32) and y_train.tolist() == [c for c in range(10) for _ in range(2)]
    assert 40 < x_test.mean() < 200


# --------------------------------------------------------------------------------------------------
# MNIST-1D.


def test_mnist1d_is_generated_once_and_cached(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = np.random.get_state()
    data = mnist1d.load_mnist1d()
    assert np.array_equal(np.random.get_state()[1], state[1])  # the package's global seeding is undone
    assert data["x"].shape == (4000, 40) and data["x_test"].shape == (1000, 40) and data["x"].dtype == np.float32
    assert sorted(np.unique(data["y"]).tolist()) == list(range(10))
    assert len(list(session_cache.glob("mnist1d-*.npz"))) == 1

    def no_generation():
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(mnist1d, "generate_mnist1d", no_generation)
    assert np.array_equal(mnist1d.load_mnist1d()["x"], data["x"])


@pytest.mark.parametrize("name", ["mnist1d_mlp", "mnist1d_cnn"])
def test_mnist1d_tasks_build_and_train(name: str) -> None:
    problem = get_task(name).build(TaskSettings(seed=0, subset=256))
    assert [len(problem.splits[s][1]) for s in ("train", "val", "test")] == [256, 400, 1000]
    assert problem.steps_per_epoch == 2
    train_step_and_evaluate(problem)


# --------------------------------------------------------------------------------------------------
# Tiny Shakespeare.


def test_shakespeare_corpus_splits_by_position(tmp_path: Path) -> None:
    text = write_text(tmp_path / shakespeare.FILENAME)
    vocab, streams = shakespeare.load_corpus(shakespeare.find_corpus(tmp_path))
    assert vocab == "".join(sorted(set(text)))
    assert [len(streams[s]) for s in ("train", "val", "test")] == [2700, 150, 150]
    decoded = "".join(vocab[i] for s in ("train", "val", "test") for i in streams[s].tolist())
    assert decoded == text


def test_shakespeare_task_batches_windows_and_evaluation(tmp_path: Path) -> None:
    write_text(tmp_path / shakespeare.FILENAME)
    task = get_task("shakespeare_char")
    problem = task.build(TaskSettings(seed=0, data_dir=tmp_path, batch_size=4))
    assert problem.steps_per_epoch == shakespeare.STEPS_PER_EPOCH
    x, y = next(iter(problem.batches(1)))
    assert x.shape == y.shape == (4, shakespeare.CONTEXT) and torch.equal(x[:, 1:], y[:, :-1])  # next characters
    assert torch.equal(x, next(iter(problem.batches(1)))[0]) and not torch.equal(x, next(iter(problem.batches(2)))[0])
    metrics = train_step_and_evaluate(problem)
    assert metrics["train_metric"] == metrics["train_loss"]
    assert abs(metrics["val_metric"] - math.log(len(set((tmp_path / shakespeare.FILENAME).read_text())))) < 0.5
    assert problem.evaluate() == problem.evaluate()  # fixed evaluation windows
    small = task.build(TaskSettings(data_dir=tmp_path, subset=10, batch_size=4))
    assert len(small.streams["train"]) == 10 + shakespeare.CONTEXT


def test_shakespeare_missing_or_too_short(tmp_path: Path, no_shared_data: Path) -> None:
    with pytest.raises(MissingDataError, match=r"tinyshakespeare.txt.*input.txt"):
        get_task("shakespeare_char").build(TaskSettings(data_dir=tmp_path))
    write_text(tmp_path / shakespeare.FILENAME, n=500)
    with pytest.raises(DataFileError, match="500 characters leave the val split 25 characters"):
        get_task("shakespeare_char").build(TaskSettings(data_dir=tmp_path))


@pytest.mark.skipif(
    not (shared_data_dir() / shakespeare.FILENAME).is_file(), reason="the shared tinyshakespeare.txt is not present"
)
def test_real_tiny_shakespeare() -> None:
    vocab, streams = shakespeare.load_corpus(shakespeare.find_corpus(None))
    assert len(vocab) == 65 and sum(len(s) for s in streams.values()) == 1_115_394


# --------------------------------------------------------------------------------------------------
# Models.


def test_resnet_and_vit_shapes_and_sizes() -> None:
    x = torch.randn(2, 3, 32, 32)
    for model, low, high, classes in (
        (resnet20(), 0.26e6, 0.28e6, 10),
        (resnet20(100), 0.27e6, 0.29e6, 100),
        (ResNet18(), 11.1e6, 11.3e6, 10),
        (vit_tiny(), 5.3e6, 5.5e6, 10),
    ):
        assert low < n_params(model) < high, (type(model).__name__, n_params(model))
        assert model(x).shape == (2, classes)
    small = vit_tiny(depth=2, dim=64, heads=2)
    assert n_params(small) < 0.2e6 and small(x).shape == (2, 10)
    # option A: ResNet-20's shortcuts have no parameters; ResNet-18 projects with 1x1 convolutions
    assert not any("shortcut" in name for name, _ in resnet20().named_parameters())
    assert any("shortcut" in name for name, _ in ResNet18().named_parameters())


def test_char_transformer_is_causal() -> None:
    torch.manual_seed(0)
    model = CharTransformer(vocab=11, context=16, dim=32, layers=2, heads=4).eval()
    idx = torch.randint(0, 11, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 11)
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 11
    after = model(changed)
    assert torch.allclose(after[:, :10], logits[:, :10], atol=1e-6)  # the past does not see the future
    assert not torch.allclose(after[:, 10:], logits[:, 10:])
    with pytest.raises(ValueError, match="exceed the context"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_conv1d_and_standardize() -> None:
    model = Conv1DNet()
    assert model(torch.randn(5, 40)).shape == (5, 10) and 5000 < n_params(model) < 6000
    pixels = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # (1, 2 channels, 1, 2)
    out = Standardize([0.5, 0.2], [0.5, 0.1])(pixels)
    assert torch.allclose(out, torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]]]]), atol=1e-6)
    wrapped = standardized(nn.Flatten(), [0.0], [1.0])
    assert n_params(wrapped) == 0 and wrapped(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).tolist() == [[1.0] * 4]


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPTARENA_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("OPTARENA_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "optarena"


def test_eval_subset_scores_the_first_examples_of_each_split():
    from optarena.arena.tasks import TaskSettings, get_task

    task = get_task("digits")
    whole = task.build(TaskSettings(seed=2))
    part = task.build(TaskSettings(seed=2, eval_subset=50))
    metrics = part.evaluate()
    model = whole.model.eval()
    with torch.no_grad():
        for split, key in (("val", "val_metric"), ("test", "test_metric")):
            x, y = whole.splits[split]
            assert len(y) > 50
            expected = (model(x[:50]).argmax(1) == y[:50]).sum().item() / 50
            assert metrics[key] == pytest.approx(expected, abs=1e-12)
    assert len(part.splits["train"][1]) == len(whole.splits["train"][1])  # training data untouched


@pytest.mark.parametrize("name", ["digits", "mnist1d_mlp", "fashion_mnist_mlp", "cifar10_resnet20"])
def test_every_split_prefix_holds_every_class(name):
    """subset and eval_subset take prefixes: each split must come in a class-mixed order (CIFAR's JPEGs do not)."""
    if name == "fashion_mnist_mlp" and not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    if name == "cifar10_resnet20" and not (shared_data_dir() / cifar_files.JPEG_TARBALL).is_file():
        pytest.skip("the shared cifar10-jpg.tar.gz is not present")
    problem = get_task(name).build(TaskSettings(seed=0))
    for split, (_, labels) in problem.splits.items():
        counts = torch.bincount(labels[:200], minlength=10)
        assert (counts > 0).all(), (split, counts.tolist())
