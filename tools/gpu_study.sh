#!/usr/bin/env bash
# Train several runs of the study side by side on one GPU machine and leave their float16
# weights in $OUT, to be adopted and evaluated on any CPU (blade/transfer.py says why).
#
#   OUT=folder tools/gpu_study.sh PRESET MAX_STEPS RUN [RUN ...]
#
# Run it in the repository root of the GPU machine. Each call trains every RUN for at most
# MAX_STEPS more iterations (the runner resumes from the last checkpoint, so a schedule longer
# than one call's time limit is finished by calling again while the machine holds the run
# folders), then exports those of them that are finished into $OUT as <run>.pt and writes
# $OUT/log.txt.
# What the machine lacks comes with the call (.whl/, .assets/: see tools/gpu_env.sh and
# results/README.md, "The study on a GPU"); numpy and Pillow there must draw and resize as
# here for the same benchmark: log.txt holds a digest of the generated files to compare.
# LIMIT (seconds, default 540) bounds the trainings of one call, so that the export runs
# within a command limit of 10 minutes; choose MAX_STEPS so that they end before it (a
# training stopped by the limit loses what it did since its last checkpoint, and is not
# exported: the call fails, naming it, after exporting the finished ones). Export takes the
# finished runs among this call's RUNs, not every run on the machine (a second call would then
# bring back more files than come back): at most 7 per call fit the 8 files.
set -euo pipefail
preset=${1:?preset}; steps=${2:?max steps per run in this call}; shift 2
[ $# -gt 0 ] || { echo "error: name at least one run" >&2; exit 2; }
out=${OUT:?set OUT to the folder that comes back}
mkdir -p "$out"
log="$out/log.txt"
source "$(dirname "$0")/gpu_env.sh"  # wheels, PYTHONPATH, assets, the benchmark in $data
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
only=$(IFS=,; echo "$*")  # this call's runs only: a second call must not bring back the first's
$PY -m blade.experiments export --preset "$preset" --only "$only" --out "$out" >>"$log" 2>&1 \
  || status=1
date -u >>"$log"
[ $status = 0 ] || fail "a training or the export failed"
