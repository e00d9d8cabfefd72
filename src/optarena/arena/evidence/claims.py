"""Claims files: the seed papers' claims, each with the experiment that re-tests it.

A claims file (TOML) holds a ``title``, free-text ``notes`` and ``[[claim]]`` entries: which paper,
what it claims, the paper's own number and setup, the experiment file that re-tests it (an ordinary
``optarena compare`` experiment), the task, and the method and baseline optimizers (registered names
or the experiment's variants). By default a claim compares the final *test* metric over seeds;
``split = "train"`` compares the training metric (Adaburst reports training accuracy) and
``at_epoch = N`` the metric after epoch N (the speed of early training).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

from optarena.arena.spec.config import ConfigError

REQUIRED_KEYS = ("id", "paper", "claim", "paper_result", "experiment", "task", "method", "baseline")
OPTIONAL_KEYS = ("paper_setup", "split", "at_epoch")
FILE_KEYS = ("title", "notes", "claim")
SPLITS = ("test", "train")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    claim: str
    paper_result: str
    experiment: Path  # the experiment TOML, resolved against the claims file's folder
    task: str
    method: str
    baseline: str
    paper_setup: str = ""
    split: str = "test"
    at_epoch: int | None = None  # None: the last epoch

    @property
    def measure(self) -> str:
        when = "final" if self.at_epoch is None else f"after epoch {self.at_epoch}"
        return f"{self.split} metric, {when}"


@dataclass(frozen=True)
class ClaimsFile:
    title: str
    notes: str
    claims: list[Claim]


def load_claims_file(path: str | Path) -> ClaimsFile:
    """Read a claims file; a missing or unknown key, or a value of the wrong type, is named with its claim."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: no such claims file") from error
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8"
        ) from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the claims file ({error.strerror or error})") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from error
    unknown_top = sorted(set(data) - set(FILE_KEYS))
    if unknown_top:
        raise ConfigError(f"{path}: unknown key {unknown_top[0]!r}; valid keys: {', '.join(FILE_KEYS)}")
    for key in ("title", "notes"):
        if not isinstance(data.get(key, ""), str):
            raise ConfigError(f"{path}: key {key!r} must be a string, got {data[key]!r}")
    entries = data.get("claim", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{path}: 'claim' must be a list of tables ([[claim]] entries), got {entries!r}")
    claims = []
    for i, entry in enumerate(entries):
        label = f"{path}: claim {entry.get('id', i + 1)!r}"
        unknown = sorted(set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        missing = [k for k in REQUIRED_KEYS if k not in entry]
        if unknown:
            valid = ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)
            raise ConfigError(f"{label}: unknown key {unknown[0]!r}; valid keys: {valid}")
        if missing:
            raise ConfigError(f"{label}: missing key {missing[0]!r}")
        for key in (*REQUIRED_KEYS, "paper_setup", "split"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"{label}: key {key!r} must be a string, got {entry[key]!r}")
        if entry.get("split", "test") not in SPLITS:
            raise ConfigError(f"{label}: split {entry['split']!r}; expected one of {', '.join(SPLITS)}")
        at_epoch = entry.get("at_epoch")
        if at_epoch is not None and (isinstance(at_epoch, bool) or not isinstance(at_epoch, int) or at_epoch < 1):
            raise ConfigError(f"{label}: at_epoch {at_epoch!r}; expected an integer >= 1")
        claims.append(Claim(**{**entry, "experiment": (path.parent / entry["experiment"]).resolve()}))
    if not claims:
        raise ConfigError(f"{path}: no [[claim]] entries")
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return ClaimsFile(data.get("title", "Re-testing the seed papers' claims"), data.get("notes", ""), claims)


def load_claims(path: str | Path) -> list[Claim]:
    return load_claims_file(path).claims
