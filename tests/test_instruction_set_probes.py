"""Inductor's probes of the CPU's vector instruction sets start when a compiled step is made, in threads of their own
(optarena.optim.codegen.start_instruction_set_probes), and inductor then picks what it picks without them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optarena.optim import codegen, create_optimizer

REPO = Path(__file__).resolve().parents[1]
X86_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"

# In a fresh process with an empty inductor cache: what inductor picks (its instruction set and the flags it builds
# kernels with), with optarena's probes started first (argv[1] == "probes") or with inductor probing alone.
PICK = r"""
import json, sys, threading
import torch
from torch._inductor import cpu_vec_isa
started, checks = [], []
check_build = cpu_vec_isa.VecISA.check_build
def counted(self, code):  # every probe build, whichever thread runs it
    checks.append(str(self))
    return check_build(self, code)
cpu_vec_isa.VecISA.check_build = counted
flags = cpu_vec_isa.x86_isa_checker()
candidates = [str(i) for i in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(i).split())]
if sys.argv[1] == "probes":
    import optarena
    p = torch.nn.Parameter(torch.randn(1000)); p.grad = torch.randn(1000)
    opt = optarena.create_optimizer([p], "lion", compile="per_tensor")
    from optarena.optim import codegen
    started = [t.name for t in codegen._PROBES]
    opt.step()
    assert not any(t.is_alive() for t in codegen._PROBES), "a probe still running after the compiled step"
isa = cpu_vec_isa.pick_vec_isa()
print(json.dumps({"isa": str(isa), "flags": isa.build_arch_flags(), "started": started, "checks": len(checks),
                  "candidates": candidates}))
"""


def pick(mode: str, cache: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", PICK, mode], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not X86_LINUX, reason="inductor probes the instruction sets this way on x86-64 Linux")
def test_probes_started_with_a_compiled_step_leave_inductor_picking_what_it_picks_alone(tmp_path):
    """With empty caches: the probes start when the compiled optimizer is made (one thread), are done once its
    first step has compiled, and inductor then picks the same instruction set and build flags as a process in which
    it probed alone, every candidate one after the other; the probes stop at the one it picks, so where a candidate
    comes after it they build fewer test libraries."""
    with_probes = pick("probes", tmp_path / "with")
    alone = pick("alone", tmp_path / "alone")
    assert with_probes["started"] and all(name.startswith("optarena-probe-") for name in with_probes["started"])
    assert {k: with_probes[k] for k in ("isa", "flags")} == {k: alone[k] for k in ("isa", "flags")}
    assert 1 <= with_probes["checks"] <= alone["checks"]
    if alone["isa"] in alone["candidates"][:-1]:  # a candidate comes after the one inductor picks
        assert with_probes["checks"] < alone["checks"]


def test_probes_start_once_for_cpu_parameters_and_not_where_inductor_is_told(monkeypatch):
    """Once a process: a second compiled optimizer starts nothing more; none for an optimizer with no CPU parameter,
    and none where ``cpp.vec_isa_ok`` decides for inductor."""
    started: list[object] = []
    monkeypatch.setattr(codegen, "_probe_until_valid", lambda candidates: started.append(candidates))
    monkeypatch.setattr(codegen, "_PROBES", [])
    meta = torch.nn.Parameter(torch.empty(10, device="meta"))
    create_optimizer([meta], "lion", compile="per_tensor")
    assert codegen._PROBES == []
    with torch._inductor.config.patch({"cpp.vec_isa_ok": True}):
        create_optimizer([torch.nn.Parameter(torch.zeros(10))], "lion", compile=True)
    assert codegen._PROBES == []
    create_optimizer([torch.nn.Parameter(torch.zeros(10))], "lion", compile=True)
    codegen.wait_for_instruction_set_probes()
    if X86_LINUX:
        assert len(codegen._PROBES) == len(started) == 1 and started[0]
    first = list(codegen._PROBES)
    create_optimizer([torch.nn.Parameter(torch.zeros(10))], "adamnx", compile="per_tensor")
    assert first == codegen._PROBES
