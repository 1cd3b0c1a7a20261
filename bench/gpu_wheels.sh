#!/usr/bin/env bash
# The Python packages the GPU machine's image lacks, as wheels in .whl/ (git-ignored), for
# its Python 3.12 on manylinux x86_64, at the versions installed here (the ones CI tests).
# That machine has no package index: the wheels travel with the checkout, and
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
# installs them there. This script checks that such an install works, for that platform,
# before anything travels.
#   bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# the search stack: the image has torch, numpy, scipy, rich, PyYAML, safetensors,
# scikit-learn, matplotlib, narwhals, MarkupSafe, tqdm, PyTorch's triton, but not these
packages=(optuna sqlalchemy alembic colorlog mako plotly)
pins=()
for name in "${packages[@]}"; do
    version="$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" \
        "$name")" || { echo "gpu_wheels: $name is not installed here; run pip install -e .[dev] first" >&2; exit 1; }
    pins+=("$name==$version")
done
platform=(--python-version 3.12 --implementation cp --only-binary=:all:
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64)

rm -rf .whl
python3 -m pip download -q --no-deps "${platform[@]}" -d .whl "${pins[@]}"
# the install the GPU machine will do, without an index, for its platform
target="$(mktemp -d)"
trap 'rm -rf "$target"' EXIT
python3 -m pip install -q --no-index --no-deps "${platform[@]}" --target "$target" \
    --find-links .whl "${pins[@]}"
for name in "${packages[@]}"; do
    ls -d "$target"/"$name"* "$target"/"${name,,}"* >/dev/null 2>&1 \
        || { echo "gpu_wheels: $name did not install from .whl" >&2; exit 1; }
done
echo "gpu_wheels: ${pins[*]} in .whl/ ($(du -sh .whl | cut -f1)); they install without an index"
