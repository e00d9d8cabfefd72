#!/bin/bash
# Every GPU measurement of docs/performance.md ("On a GPU") in one call, for a short lease on a GPU machine:
#   bash benchmarks/cuda_run.sh OUT_DIR
# 1. tests/device_check.py: compiled ≡ eager on cuda for every compilable optimizer (float64, ≤ 1e-12), and no step
#    that waits for the device;
# 2. benchmarks/step_time.py --device cuda on the ResNet-18 set (foreach, compiled, compiled per tensor), then on the
#    transformer set (foreach, compiled);
# 3. benchmarks/profile_step.py on the ResNet-18 set: kernels per step, kernel and host time, steps through dynamo,
#    for the compiled step (and, with PROFILE_VARIANTS="--variant NAME:KEY=VALUE ...", inductor options to try).
# Each part has its own time limit (seconds, from the environment: CHECK_S, RESNET_S, TRANSFORMER_S, PROFILE_S) so
# that one stuck part still leaves the others' files in OUT_DIR. The defaults add up to 590 s (an H200's cold compile
# cache, the third session: 73, 178, more than 180 and 26 s): one call with a 600 s limit.
# Runs from any directory; uses $PYTHON (default: the python3 on the PATH) with this checkout's src/ first on
# PYTHONPATH. A dry run elsewhere (tests/test_benchmark_smoke.py): DEVICE=cpu, CHECK_NAMES (registry names for the
# check), OPTIMIZERS (step_time.py's, comma-separated), STEP_ARGS (more step_time.py arguments, e.g. "--scale 0.01").
set -u
out=${1:?usage: bash benchmarks/cuda_run.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
out=${out#"$PWD"/}  # inside the checkout: relative, as the reports' command lines then say
py=${PYTHON:-python3}
# TORCHDYNAMO_VERBOSE: a compile that fails logs inductor's own frames too (step_time.py logs the traceback)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TORCHDYNAMO_VERBOSE=1
{
  git rev-parse --short HEAD 2>/dev/null || echo "commit unknown"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc
} > "$out/env.txt" 2>&1
cat "$out/env.txt"
optimizers=${OPTIMIZERS:-adaburst,adamnx,adax,adabelief,lion,adan,adamw_agr}

SECONDS=0
device=${DEVICE:-cuda}
# shellcheck disable=SC2086  # CHECK_NAMES and STEP_ARGS are lists of words
timeout "${CHECK_S:-90}" "$py" tests/device_check.py "$device" ${CHECK_NAMES:-} > "$out/device_check.log" 2>&1
echo "device_check rc=$? ${SECONDS}s"
grep -E "^[a-z_]+ +(dev-vs-cpu|ERROR)|^failures" "$out/device_check.log"

step_time() {  # set modes seconds
  SECONDS=0
  # shellcheck disable=SC2086
  timeout "$3" "$py" benchmarks/step_time.py --device "$device" --sets "$1" --optimizers "$optimizers" --modes "$2" \
    --rounds 7 --steps 5 --warmup 3 ${STEP_ARGS:-} --out "$out/step_time_${device}_$1.md" > "$out/step_time_$1.log" 2>&1
  echo "step_time $1 rc=$? ${SECONDS}s; compiles that fell back to eager: $(grep -c 'RuntimeWarning: .*torch.compile failed' "$out/step_time_$1.log")"
}
step_time resnet18 foreach,compiled,compiled-per-tensor "${RESNET_S:-210}"
step_time transformer foreach,compiled "${TRANSFORMER_S:-240}"

SECONDS=0
# shellcheck disable=SC2086
timeout "${PROFILE_S:-50}" "$py" benchmarks/profile_step.py --device "$device" --set "${PROFILE_SET:-resnet18}" \
  --optimizers "${PROFILE_OPTIMIZERS:-adaburst,lion,adan,adamw_agr}" --foreach --steps 20 \
  ${PROFILE_VARIANTS:-} --out "$out/profile_${device}.md" > "$out/profile.log" 2>&1
echo "profile rc=$? ${SECONDS}s"
