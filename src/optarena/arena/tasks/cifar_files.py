"""CIFAR-10 and CIFAR-100 files: where they are found, and how they are read (no file can run code).

Where CIFAR-10 comes from, first found wins:

1. ``settings.data_dir``: the "python version" pickles (``data_batch_1`` ... ``data_batch_5``,
   ``test_batch``) in the folder or in ``cifar-10-batches-py/``, or ``cifar-10-python.tar.gz`` in
   it (or ``data_dir`` being that archive); the
   JPEG tarball ``cifar10-jpg.tar.gz`` (or ``data_dir`` being that tarball); an extracted JPEG
   folder ``cifar10/{train,test}/<class>/*.jpg`` (or ``{train,test}/<class>/*.jpg``).
2. ``cifar10-jpg.tar.gz`` in the shared data folder (``../shared/data`` beside the working
   directory, or ``$OPTARENA_SHARED_DATA``).

JPEGs are decoded once into a uint8 ``.npz`` in the cache folder (``$OPTARENA_CACHE``, else
``~/.cache/optarena``), keyed by the content, so later runs load in a fraction of a second.
CIFAR-100 is read only from the user's pickles (``train``, ``test`` in the folder or in
``cifar-100-python/``, or the archive ``cifar-100-python.tar.gz`` in it or as ``data_dir``), with the
100 fine labels.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle  # only through _CifarUnpickler, which refuses every global a CIFAR batch does not hold
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from optarena.arena.tasks.base import MissingDataError
from optarena.arena.tasks.idx import (
    DataFileError,
    as_path,
    cache_dir,
    file_digest,
    load_npz,
    save_npz_atomic,
    shared_data_dir,
)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_PICKLES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR100_PICKLES = ("train", "test")
JPEG_TARBALL = "cifar10-jpg.tar.gz"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------------------------------
# The "python version" pickles.


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that can build what a CIFAR batch holds, and nothing else.

    The official files are Python 2 pickles (protocol 2) of a dict of byte strings, lists of ints and
    byte strings, and uint8 numpy arrays. Rebuilding an array takes three globals, and a Python 3
    protocol-2 re-pickle of the same dict adds ``_codecs.encode`` for its byte strings (protocol 5
    adds ``_frombuffer``): each is admitted through a wrapper that accepts only what such a file
    passes it (numeric dtypes, latin-1 strings). Any other global — ``os.system``, ``builtins.eval``,
    any class — is refused before it is looked up, so a crafted file cannot run anything.
    """

    def find_class(self, module: str, name: str) -> Any:
        admitted = _ADMITTED.get((module, name))
        if admitted is None:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never holds")
        return admitted


def _numeric_dtype(spec: Any) -> np.dtype:
    if isinstance(spec, bytes):  # a Python 2 str, read with encoding='bytes'
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, (str, np.dtype)):
        raise pickle.UnpicklingError(f"it holds a dtype given as {type(spec).__name__}, not a type code")
    dtype = np.dtype(spec)
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"it holds an array of dtype {dtype}, not a plain numeric one")
    return dtype


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` as a pickle calls it, for plain numeric type codes only."""
    return np.dtype(_numeric_dtype(spec), bool(align), bool(copy))


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct``: the empty array a pickle then fills (``__setstate__``)."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"it rebuilds an array as {subtype!r}, not numpy.ndarray")
    return np.ndarray(shape, _numeric_dtype(dtype))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy._core.numeric._frombuffer`` (protocol 5): an array from its raw bytes."""
    if not isinstance(buffer, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"it rebuilds an array from a {type(buffer).__name__}, not bytes")
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"it gives the array order {order!r}, not 'C' or 'F'")
    array = np.frombuffer(buffer, _numeric_dtype(dtype))
    return array.reshape(shape, order=order).copy(order="K")


def _latin1(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes under protocol 2: ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"it encodes {type(text).__name__} with {encoding!r}, not a str with latin1")
    return text.encode("latin-1")


_ADMITTED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # the official (numpy 1) files
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # re-pickled under numpy 2
    ("numpy", "ndarray"): np.ndarray,  # only ever passed to _reconstruct, which checks it
    ("numpy", "dtype"): _dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1,
}


def read_cifar_pickle(data: bytes, name: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 32, 32)`` uint8 and int64 labels from one CIFAR pickle's bytes; ``name`` is used in errors.

    The bytes are read by :class:`_CifarUnpickler`: a file that refers to anything a CIFAR batch does
    not hold is refused with a :class:`DataFileError` naming it, and nothing in it runs.
    """
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:
        raise DataFileError(f"{name}: not a CIFAR python-version pickle ({type(error).__name__}: {error})") from error
    if not isinstance(batch, dict):
        raise DataFileError(f"{name}: not a CIFAR python-version pickle (holds a {type(batch).__name__}, not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DataFileError(f"{name}: expected the keys 'data' and {label_key!r}, found {sorted(map(str, batch))}")
    try:
        x = np.asarray(batch["data"])
        y = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as error:
        raise DataFileError(f"{name}: 'data' or {label_key!r} is not an array of numbers ({error})") from error
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.ndim != 1 or len(x) != len(y):
        raise DataFileError(
            f"{name}: 'data' is {x.dtype} {x.shape} with {y.size} labels, expected uint8 (n, 3072) with n labels"
        )
    return x.reshape(-1, 3, 32, 32), y


def _pickle_source(folder: Path, names: tuple[str, ...]) -> dict[str, Callable[[], bytes]] | None:
    """Readers of the pickles ``names`` in ``folder``; ``None`` if none is there, an error if only some are."""
    present = {n: folder / n for n in names if (folder / n).is_file()}
    if not present:
        return None
    missing = [n for n in names if n not in present]
    if missing:
        raise DataFileError(f"{folder}: incomplete CIFAR pickles, missing {', '.join(missing)}")
    return {n: p.read_bytes for n, p in present.items()}


def _load_pickles(readers: dict[str, Callable[[], bytes]], where: str, label_key: str, n_classes: int) -> Arrays:
    parts = {name: read_cifar_pickle(read(), f"{where}/{name}", label_key) for name, read in readers.items()}
    test_name = "test_batch" if "test_batch" in parts else "test"
    train = [parts[n] for n in readers if n != test_name]
    x_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    x_test, y_test = parts[test_name]
    for name, y in (("training", y_train), (test_name, y_test)):
        if y.min() < 0 or y.max() >= n_classes:
            raise DataFileError(f"{where}: {name} labels span {y.min()}..{y.max()}, expected 0..{n_classes - 1}")
    return x_train, y_train, x_test, y_test


def _tar_pickles(path: Path, names: tuple[str, ...], label_key: str, n_classes: int) -> Arrays:
    """The pickles ``names`` from an official ``cifar-*-python.tar.gz`` (whatever folder they sit in)."""
    try:
        with tarfile.open(path) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in names if n not in members]
            if missing:
                raise DataFileError(f"{path}: the tarball lacks {', '.join(missing)}")
            blobs = {n: tar.extractfile(members[n]).read() for n in names}
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataFileError(f"{path}: not a readable tar.gz ({error})") from error
    return _load_pickles({n: (lambda b=b: b) for n, b in blobs.items()}, str(path), label_key, n_classes)


# --------------------------------------------------------------------------------------------------
# JPEG images: a tarball or a folder with the layout cifar10/{train,test}/<class>/NNNN.jpg.


def _decode_jpegs(items: Iterator[tuple[str, Callable[[], bytes]]], where: str) -> Arrays:
    """Decode ``(path, read)`` pairs laid out as ``.../{train,test}/<class>/<name>.jpg`` into sorted uint8 arrays."""
    from PIL import Image, UnidentifiedImageError

    found: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], "test": []}
    for path, read in items:
        parts = Path(path).parts
        if not path.lower().endswith((".jpg", ".jpeg", ".png")) or len(parts) < 3 or parts[-3] not in found:
            continue
        label = parts[-2]
        if label not in CIFAR10_CLASSES:
            raise DataFileError(f"{where}: {path} is in an unknown class folder {label!r}; expected {CIFAR10_CLASSES}")
        try:
            with Image.open(io.BytesIO(read())) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DataFileError(f"{where}: {path} is not a readable image ({error})") from error
        if pixels.shape != (32, 32, 3):
            raise DataFileError(f"{where}: {path} is {pixels.shape[1]}x{pixels.shape[0]}, expected 32x32")
        found[parts[-3]].append((CIFAR10_CLASSES.index(label), parts[-1], pixels))
    arrays: list[np.ndarray] = []
    for split, images in found.items():
        if not images:
            raise DataFileError(f"{where}: no images in {split}/<class>/*.jpg (expected cifar10/{split}/airplane/...)")
        images.sort(key=lambda item: item[:2])  # a fixed order whatever the archive's or file system's order
        arrays += [np.stack([p for *_, p in images]).transpose(0, 3, 1, 2), np.array([c for c, *_ in images])]
    x_train, y_train, x_test, y_test = arrays
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def _cached(key: str, make: Callable[[], Arrays]) -> Arrays:
    """``make()``'s arrays, decoded once and kept as ``<cache>/<key>.npz``."""
    path = cache_dir() / f"{key}.npz"
    cached = load_npz(path)
    if cached is not None and {"x_train", "y_train", "x_test", "y_test"} <= set(cached):
        return cached["x_train"], cached["y_train"], cached["x_test"], cached["y_test"]
    arrays = make()
    with contextlib.suppress(OSError):  # a read-only or full cache folder costs a decode next time, not the run
        save_npz_atomic(path, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)))
    return arrays


def load_jpeg_tarball(path: Path) -> Arrays:
    """CIFAR-10 from the JPEG tarball ``path`` (decoded once, then from the cache)."""

    def decode() -> Arrays:
        try:
            with tarfile.open(path) as tar:
                items = ((m.name, tar.extractfile(m).read) for m in tar if m.isfile())
                return _decode_jpegs(items, str(path))
        except (tarfile.TarError, EOFError) as error:
            raise DataFileError(f"{path}: not a readable tar.gz ({error})") from error

    return _cached(f"cifar10-jpg-{file_digest(path)}", decode)


def load_jpeg_folder(folder: Path) -> Arrays:
    """CIFAR-10 from an extracted JPEG folder holding ``train/`` and ``test/`` (cached, keyed by the listing)."""
    files = sorted(p for split in ("train", "test") for p in (folder / split).glob("*/*") if p.is_file())
    listing = "\n".join(f"{p.relative_to(folder)} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    key = hashlib.sha256(f"{folder.resolve()}\n{listing}".encode()).hexdigest()[:16]
    items = ((str(p.relative_to(folder)), p.read_bytes) for p in files)
    return _cached(f"cifar10-jpgdir-{key}", lambda: _decode_jpegs(items, str(folder)))


# --------------------------------------------------------------------------------------------------
# Finding the data.


def find_cifar10(data_dir: str | Path | None) -> Callable[[], Arrays]:
    """The loader of the first CIFAR-10 source found (module docstring); :class:`MissingDataError` if none is.

    Finding reads no image: it is the cheap check ``optarena compare`` makes before any run starts.
    """
    tried: list[str] = []
    data_dir = as_path(data_dir)
    if data_dir is not None:
        if data_dir.is_file():  # the archive itself: the official pickles' or the JPEG one
            if data_dir.name.startswith("cifar-10-python"):
                return lambda: _tar_pickles(data_dir, CIFAR10_PICKLES, "labels", 10)
            return lambda: load_jpeg_tarball(data_dir)
        for folder in (data_dir, data_dir / "cifar-10-batches-py"):
            readers = _pickle_source(folder, CIFAR10_PICKLES)
            if readers is not None:
                return lambda readers=readers, folder=folder: _load_pickles(readers, str(folder), "labels", 10)
            tried.append(f"{folder}/{{data_batch_1..5,test_batch}}")
        for name, loader in (
            ("cifar-10-python.tar.gz", lambda p: _tar_pickles(p, CIFAR10_PICKLES, "labels", 10)),
            (JPEG_TARBALL, load_jpeg_tarball),
        ):
            tried.append(str(data_dir / name))
            if (data_dir / name).is_file():
                return lambda loader=loader, name=name: loader(data_dir / name)
        for folder in (data_dir / "cifar10", data_dir):
            tried.append(f"{folder}/{{train,test}}/<class>/*.jpg")
            if (folder / "train").is_dir() and (folder / "test").is_dir():
                return lambda folder=folder: load_jpeg_folder(folder)
    shared = shared_data_dir() / JPEG_TARBALL
    tried.append(str(shared))
    if shared.is_file():
        return lambda: load_jpeg_tarball(shared)
    raise MissingDataError(
        "CIFAR-10 not found; looked for: " + "; ".join(tried) + f". To get it: download the python version "
        f"(cifar-10-python.tar.gz) from {CIFAR_URL}, extract it and pass its folder as data_dir "
        f"(TaskSettings.data_dir), or put {JPEG_TARBALL} in the shared data folder {shared.parent}."
    )


def load_cifar10(data_dir: str | Path | None) -> Arrays:
    """CIFAR-10 as uint8 ``(n, 3, 32, 32)`` images and int64 labels, from the first source found (module docstring)."""
    return find_cifar10(data_dir)()


def find_cifar100(data_dir: str | Path | None) -> Callable[[], Arrays]:
    """The loader of the user's CIFAR-100 pickles; :class:`MissingDataError` if there are none (reads nothing)."""
    tried: list[str] = []
    data_dir = as_path(data_dir)
    if data_dir is not None:
        if data_dir.is_file():  # the official archive itself
            return lambda: _tar_pickles(data_dir, CIFAR100_PICKLES, "fine_labels", 100)
        for folder in (data_dir, data_dir / "cifar-100-python"):
            readers = _pickle_source(folder, CIFAR100_PICKLES)
            if readers is not None:
                return lambda readers=readers, folder=folder: _load_pickles(readers, str(folder), "fine_labels", 100)
            tried.append(f"{folder}/{{train,test}}")
        tarball = data_dir / "cifar-100-python.tar.gz"
        tried.append(str(tarball))
        if tarball.is_file():
            return lambda: _tar_pickles(tarball, CIFAR100_PICKLES, "fine_labels", 100)
    raise MissingDataError(
        "CIFAR-100 not found (it is not shipped offline); looked for: "
        + ("; ".join(tried) or "nothing: no data_dir given")
        + f". To get it: download the python version (cifar-100-python.tar.gz) from {CIFAR_URL}, put it or its "
        "extracted folder (with the files train, test, meta) in a folder and pass that folder as data_dir "
        "(TaskSettings.data_dir)."
    )


def load_cifar100(data_dir: str | Path | None) -> Arrays:
    """CIFAR-100 (fine labels) from the user's python-version pickles."""
    return find_cifar100(data_dir)()
