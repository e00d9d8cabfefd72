"""Reading dataset files: MNIST-format IDX files, plus the cache and shared-data locations the data tasks share.

The IDX format (LeCun's MNIST page): two zero bytes, a type code (0x08 = uint8, ...), the number of
dimensions, one big-endian int32 per dimension, then the values in big-endian row-major order.
Files may be gzip-compressed (detected by their content, not their name).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# IDX type code -> big-endian numpy dtype
IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# The four files of an MNIST-format dataset, by role; the names are those of LeCun's and Zalando's downloads.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataFileError(ValueError):
    """A dataset file exists but is not what was expected; the message names the file."""


def read_idx(path: str | Path, *, ndim: int | None = None, shape: Sequence[int | None] | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` or not), in native byte order.

    ``ndim`` and ``shape`` (``None`` entries match any size) are checked against the header; a
    mismatch, a wrong magic number or a truncated file raises :class:`DataFileError` naming the file.
    A missing file raises ``FileNotFoundError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decompress whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataFileError(f"{path}: not a valid gzip file ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataFileError(
            f"{path}: not an IDX file: magic bytes {raw[:4].hex() or '(empty)'}, expected 0000 followed by a "
            f"type code ({', '.join(f'{c:02x}' for c in IDX_TYPES)}) and the number of dimensions (e.g. 00000803 "
            "for uint8 images, 00000801 for uint8 labels)"
        )
    dtype = np.dtype(IDX_TYPES[raw[2]])
    dims = raw[3]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated IDX header ({len(raw)} bytes, the header needs {header})")
    found = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=dims, offset=4))
    if ndim is not None and dims != ndim:
        raise DataFileError(f"{path}: IDX file has {dims} dimensions {found}, expected {ndim}")
    if shape is not None and (
        len(shape) != dims or any(want is not None and want != got for want, got in zip(shape, found))
    ):
        wanted = tuple("any" if s is None else s for s in shape)
        raise DataFileError(f"{path}: IDX file has shape {found}, expected {wanted}")
    count = int(np.prod(found, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise DataFileError(
            f"{path}: IDX header says shape {found} ({count * dtype.itemsize} bytes of data) "
            f"but the file holds {len(raw) - header} bytes after the header"
        )
    return np.frombuffer(raw, dtype, count=count, offset=header).reshape(found).astype(dtype.newbyteorder("="))


def find_mnist_files(folder: Path) -> dict[str, Path] | None:
    """The four MNIST-format files in ``folder`` (``.gz`` or not, ``-idx`` or ``.idx``); ``None`` if none is there.

    A folder holding only some of the four raises :class:`DataFileError` naming the missing ones,
    rather than falling back silently to another copy.
    """
    found: dict[str, Path] = {}
    for role, name in MNIST_FILES.items():
        dotted = name.replace("-idx", ".idx")  # the spelling of some re-distributions (e.g. Kaggle's)
        for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
            if (folder / candidate).is_file():
                found[role] = folder / candidate
                break
    if not found:
        return None
    missing = [MNIST_FILES[role] for role in MNIST_FILES if role not in found]
    if missing:
        raise DataFileError(f"{folder}: incomplete MNIST-format dataset, missing {', '.join(missing)} (or .gz)")
    return found


def load_mnist_format(files: dict[str, Path], size: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)``: uint8 images ``(n, size, size)``, int64 labels."""
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], shape=(None, size, size))
        labels = read_idx(files[f"{split}_labels"], ndim=1)
        if images.dtype != np.uint8:
            raise DataFileError(f"{files[f'{split}_images']}: IDX images of type {images.dtype}, expected uint8")
        if len(labels) != len(images):
            raise DataFileError(
                f"{files[f'{split}_labels']}: {len(labels)} labels for the {len(images)} images of "
                f"{files[f'{split}_images']}"
            )
        arrays[split] = (images, labels.astype(np.int64))
    return (*arrays["train"], *arrays["test"])


# --------------------------------------------------------------------------------------------------
# Where data and caches live (shared by the data tasks).


def as_path(data_dir: str | Path | None) -> Path | None:
    """``TaskSettings.data_dir`` as a ``Path`` (``~`` expanded), accepting a string from a CLI or a config file."""
    return None if data_dir is None else Path(data_dir).expanduser()


def shared_data_dir() -> Path:
    """The shared data folder: ``$OPTARENA_SHARED_DATA``, else ``../shared/data`` beside the working directory."""
    return Path(os.environ.get("OPTARENA_SHARED_DATA", Path.cwd().parent / "shared" / "data"))


def cache_dir() -> Path:
    """Where decoded or generated datasets are cached: ``$OPTARENA_CACHE``, else ``~/.cache/optarena``."""
    return Path(os.environ.get("OPTARENA_CACHE") or Path.home() / ".cache" / "optarena")


def file_digest(path: Path, length: int = 16) -> str:
    """The first ``length`` hex digits of ``path``'s SHA-256: a cache key that follows the content, not the name."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` through a temporary file and a rename, so parallel runs never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is readable like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays cached at ``path``, or ``None`` when there is no readable cache (a bad one is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


__all__ = [
    "MNIST_FILES",
    "DataFileError",
    "as_path",
    "cache_dir",
    "file_digest",
    "find_mnist_files",
    "load_mnist_format",
    "load_npz",
    "read_idx",
    "save_npz_atomic",
    "shared_data_dir",
]
