#!/usr/bin/env bash
# Issue 15's measurements on a lent GPU machine, in one call of at most 10 minutes:
#
#   OUT=folder tools/gpu_bench.sh [quick]
#
# Run it on the GPU machine (.whl/ and .assets/ carried, see tools/gpu_env.sh); it works in
# the repository root whatever the current folder. It runs the CUDA tests
# (tests/test_gpu.py -m cuda), then benchmarks/bench_gpu.py in a series of settings, one
# process each (so that each starts cold and alike), at most $EACH (200) seconds each, the
# numbers that matter most first: the `paper` preset (ResNet-50-FPN, 800 px, batch 6; its
# pretrained architecture, frozen stem and batch norm, without loading weights: none can be
# downloaded there) as the kit trains it (fp16 AMP, the preset's 2 loader workers), then with 8
# loader workers; a torch.profiler trace of a `paper` step and its operators by part
# (OpCounter); evaluation of the committed `cpu` checkpoint, 8 images per batch, 4 loader
# workers, with COCO AP; the `cpu512` network (profiled); last, the `paper` step with the
# backbone, FCOS head and mask branch compiled (torch.compile, default mode, then
# reduce-overhead: CUDA graphs). The settings measured on 2026-11-25 that did not help
# (cudnn.benchmark, channels-last, bf16) or that are measured (evaluation one image at a time,
# the 256 px `cpu` network) are in results/bench_gpu.txt and stay bench_gpu.py options.
# Output: $OUT/bench_gpu.txt (every report, with the command
# before it), $OUT/bench_gpu.jsonl (one JSON line per setting), $OUT/log.txt (setup, tests),
# $OUT/profile_*.txt (tables by device and by host time), $OUT/ops_paper.txt. `quick`: a few
# steps of each, to check the script on a new machine in a few minutes; `check`: the script's
# own test on a CPU (the smoke preset for every setting, no CUDA tests).
set -uo pipefail
steps=30 warm=5 images=100 paper=paper cpu512=cpu512 device=cuda  # no silent CPU fallback
backend=inductor  # torch.compile's code generation (Triton on the GPU)
each=${EACH:-200}  # seconds one setting may take (a compilation that hangs does not eat the call)
case "${1:-}" in
  quick) steps=3 warm=1 images=10 ;;
  check) steps=1 warm=0 images=2 paper=smoke cpu512=smoke device=cpu backend=aot_eager ;;
  "") ;;
  *) echo "error: unknown mode '$1' (quick, check or none)" >&2; exit 2 ;;
esac
out=${OUT:?set OUT to the folder that comes back}
mkdir -p "$out"
out="$(cd "$out" && pwd)" log="$out/log.txt"
[ -n "${DATA:-}" ] && DATA="$(cd "$DATA" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"  # .whl/, .assets/, data/ and the scripts are the repository's
source tools/gpu_env.sh  # wheels, PYTHONPATH, assets, the benchmark in $data
txt="$out/bench_gpu.txt" jsonl="$out/bench_gpu.jsonl"
status=0
if [ "${1:-}" != check ]; then
  echo "== CUDA tests" >>"$log"
  $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_gpu.py >"$out/.tests" 2>&1 \
    || status=1
  cat "$out/.tests" >>"$log"; echo "tests/test_gpu.py -m cuda: $(tail -1 "$out/.tests")" >>"$txt"
  rm -f "$out/.tests"
fi
bench() {  # one setting: the command line, then its report; at most $each seconds
  echo "\$ python benchmarks/bench_gpu.py $*" >>"$txt"
  PYTHONUNBUFFERED=1 timeout -k 10 "$each" $PY benchmarks/bench_gpu.py --data "$data" \
    --device "$device" --json "$jsonl" "$@" >>"$txt" 2>>"$log" \
    || { echo "  (failed or cut after $each s: see log.txt)" >>"$txt"; status=1; }
}
train="--steps $steps --warmup $warm --eval-images 0"
# the numbers that matter most first: a call cut by its limit still brings back what was written
bench --preset $paper $train
bench --preset $paper $train --workers 8
bench --preset $paper --steps 1 --warmup $warm --eval-images 0 --workers 8 \
  --profile "$out/profile_paper.txt" --count-ops "$out/ops_paper.txt"
bench --steps 0 --eval-images "$images" --eval-batch 8 --eval-workers 4
bench --preset $cpu512 $train --workers 4 --profile "$out/profile_cpu512.txt"
compiled="--workers 8 --compile backbone,head,mask_branch --compile-backend $backend"
bench --preset $paper $train $compiled
bench --preset $paper $train $compiled --compile-mode reduce-overhead
date -u >>"$log"
[ $status = 0 ] || fail "a test or a benchmark failed"
