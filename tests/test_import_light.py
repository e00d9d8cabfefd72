"""Importing optarena (the optimizers, the schedules, the arena's command line) never imports a training framework,
pandas or the documentation tools: those are optional extras, imported only by the modules that use them."""

from __future__ import annotations

import json
import subprocess
import sys

OPTIONAL = ("lightning", "pytorch_lightning", "transformers", "accelerate", "pandas", "pyarrow", "mkdocs")


def imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_importing_optarena_imports_no_optional_extra() -> None:
    loaded = imported_after("import optarena, optarena.optim, optarena.schedules, optarena.integrations\n"
                            "import optarena.integrations.loop, optarena.arena.cli")  # fmt: skip
    assert "torch" in loaded and "optarena" in loaded
    assert [name for name in OPTIONAL if name in loaded] == []


def test_the_framework_modules_import_their_framework() -> None:
    assert "lightning" in imported_after("import optarena.integrations.lightning")
    assert "transformers" in imported_after("import optarena.integrations.hf")
