"""Claims files: the seed papers' claims, each pre-registered with its metric, effect, margin and rule.

A claims file (TOML) holds a ``title``, hand-written ``commentary`` (shown as such, never as a finding),
``[[claim]]`` entries and ``[[untested]]`` entries.

A claim says, before it is run: which paper and what it claims (``paper_result`` quotes the paper), the
experiment file that re-tests it, the task, the method and baseline optimizers, and

* ``metric``: what is compared, ``"<split> <the task's metric>"`` (``"test accuracy"``, ``"train accuracy"``,
  ``"test nats_per_char"``), or ``"test <a measurement the task records>"`` (``Task.measurements``: a generative
  task's ``"test fid"``, at the epochs that computed it); ``split = "train"`` compares the training metric,
  ``at_epoch = N`` the value after epoch N (by default the last that recorded it);
* ``direction``: ``"higher"`` or ``"lower"`` is better (it must agree with the task's);
* ``paper_effect``: the paper's effect, method − baseline in the metric's units oriented so that positive
  favours the method (accuracy as a fraction: 0.0041 = 0.41 points), and ``paper_effect_source``: the
  table or sentence it comes from, or why the paper gives no number (then ``paper_effect`` is absent);
* ``margin`` (> 0, the metric's units): the smallest difference that counts as practically relevant;
* ``rule``: what *confirmed* means — ``"superiority"`` (the difference is above 0), ``"relevance"``
  (above the margin) or ``"non-inferiority"`` (above −margin: "matches or exceeds"); default superiority.

An ``[[untested]]`` entry names a claim the studies do not re-test (``id``, ``paper``, ``claim``, ``reason``)
and optionally the ``experiment`` file that would re-test it: the page says whether its store has runs yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from optarena.arena.spec.config import ConfigError

REQUIRED_KEYS = (
    "id", "paper", "claim", "paper_result", "experiment", "task", "method", "baseline",
    "metric", "direction", "margin", "paper_effect_source",
)  # fmt: skip
OPTIONAL_KEYS = ("paper_setup", "split", "at_epoch", "paper_effect", "rule", "commentary")
UNTESTED_REQUIRED = ("id", "paper", "claim", "reason")
UNTESTED_OPTIONAL = ("experiment",)
FILE_KEYS = ("title", "commentary", "claim", "untested")
SPLITS = ("test", "train")
DIRECTIONS = ("higher", "lower")
RULES = ("superiority", "relevance", "non-inferiority")


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
    metric: str = "test accuracy"
    direction: str = "higher"
    margin: float = 0.01
    paper_effect_source: str = ""
    paper_setup: str = ""
    split: str = "test"
    at_epoch: int | None = None  # None: the last epoch
    paper_effect: float | None = None  # None: the paper gives no number in this metric
    rule: str = "superiority"
    commentary: str = ""

    @property
    def measure(self) -> str:
        when = "final" if self.at_epoch is None else f"after epoch {self.at_epoch}"
        return f"{self.metric}, {when}"

    @property
    def confirm_bound(self) -> float:
        """The difference the interval must lie wholly above for *confirmed* (the pre-registered rule)."""
        return {"superiority": 0.0, "relevance": self.margin, "non-inferiority": -self.margin}[self.rule]

    @property
    def refute_bound(self) -> float:
        """The effect the interval must lie wholly below for *refuted*: the paper's (or, without a number,
        the margin); for non-inferiority, −margin (the method is relevantly worse)."""
        if self.rule == "non-inferiority":
            return -self.margin
        claimed = self.paper_effect if self.paper_effect is not None else self.margin
        return max(claimed, self.confirm_bound)


@dataclass(frozen=True)
class Untested:
    id: str
    paper: str
    claim: str
    reason: str
    experiment: Path | None = None


@dataclass(frozen=True)
class ClaimsFile:
    title: str
    commentary: str
    claims: list[Claim]
    untested: list[Untested]


def _number(label: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{label}: key {key!r} must be a finite number, got {value!r}")
    return float(value)


def _unknown_keys(label: str, entry: dict[str, Any], required: Sequence[str], optional: Sequence[str]) -> list[str]:
    """Raise for a key outside ``required`` and ``optional``; return the required keys ``entry`` lacks."""
    unknown = sorted(set(entry) - set(required) - set(optional))
    if unknown:
        raise ConfigError(f"{label}: unknown key {unknown[0]!r}; valid keys: {', '.join([*required, *optional])}")
    return [k for k in required if k not in entry]


def _claim(path: Path, i: int, entry: dict[str, Any]) -> Claim:
    label = f"{path}: claim {entry.get('id', i + 1)!r}"
    missing = _unknown_keys(label, entry, REQUIRED_KEYS, OPTIONAL_KEYS)
    for key in (*REQUIRED_KEYS, "paper_setup", "split", "rule", "commentary"):
        if key in entry and key != "margin" and not isinstance(entry[key], str):
            raise ConfigError(f"{label}: key {key!r} must be a string, got {entry[key]!r}")
    if missing:
        raise ConfigError(f"{label}: missing key {missing[0]!r}")
    split = entry.get("split", "test")
    if split not in SPLITS:
        raise ConfigError(f"{label}: split {split!r}; expected one of {', '.join(SPLITS)}")
    if not entry["metric"].startswith(split + " "):
        raise ConfigError(f"{label}: metric {entry['metric']!r} must start with its split ({split!r})")
    if entry["direction"] not in DIRECTIONS:
        raise ConfigError(f"{label}: direction {entry['direction']!r}; expected one of {', '.join(DIRECTIONS)}")
    rule = entry.get("rule", "superiority")
    if rule not in RULES:
        raise ConfigError(f"{label}: rule {rule!r}; expected one of {', '.join(RULES)}")
    margin = _number(label, "margin", entry["margin"])
    if margin <= 0:
        raise ConfigError(f"{label}: margin {margin!r}; expected a number > 0 in the metric's units")
    values: dict[str, Any] = {"margin": margin}
    if "paper_effect" in entry:
        values["paper_effect"] = _number(label, "paper_effect", entry["paper_effect"])
    at_epoch = entry.get("at_epoch")
    if at_epoch is not None and (isinstance(at_epoch, bool) or not isinstance(at_epoch, int) or at_epoch < 1):
        raise ConfigError(f"{label}: at_epoch {at_epoch!r}; expected an integer >= 1")
    return Claim(**{**entry, **values, "experiment": (path.parent / entry["experiment"]).resolve()})


def _untested(path: Path, i: int, entry: dict[str, Any]) -> Untested:
    label = f"{path}: untested {entry.get('id', i + 1)!r}"
    missing = _unknown_keys(label, entry, UNTESTED_REQUIRED, UNTESTED_OPTIONAL)
    if missing:
        raise ConfigError(f"{label}: missing key {missing[0]!r}")
    for key, value in entry.items():
        if not isinstance(value, str):
            raise ConfigError(f"{label}: key {key!r} must be a string, got {value!r}")
    experiment = (path.parent / entry["experiment"]).resolve() if "experiment" in entry else None
    return Untested(**{**entry, "experiment": experiment})


def _tables(path: Path, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{path}: {key!r} must be a list of tables ([[{key}]] entries), got {entries!r}")
    return entries


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
    for key in ("title", "commentary"):
        if not isinstance(data.get(key, ""), str):
            raise ConfigError(f"{path}: key {key!r} must be a string, got {data[key]!r}")
    claims = [_claim(path, i, entry) for i, entry in enumerate(_tables(path, data, "claim"))]
    untested = [_untested(path, i, entry) for i, entry in enumerate(_tables(path, data, "untested"))]
    if not claims:
        raise ConfigError(f"{path}: no [[claim]] entries")
    ids = [c.id for c in claims] + [u.id for u in untested]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    title = data.get("title", "Re-testing the seed papers' claims")
    return ClaimsFile(title, data.get("commentary", ""), claims, untested)


def load_claims(path: str | Path) -> list[Claim]:
    return load_claims_file(path).claims
