#!/usr/bin/env bash
# strut on a GPU, checked in one call: parity (CUDA vs CPU vs PyTorch) and
# speed (vs PyTorch eager on the same card), on models it makes from a seed.
#
# Here (build the binary; what travels to the GPU machine is at most 64 MiB,
# so it goes stripped and compressed, ~12 MB):
#   scripts/cuda-build.sh --pack    # -> target/cuda/strut.xz
# On the GPU machine (PyTorch and its nvidia-* wheels, no Rust, no network),
# with target/cuda/strut.xz carried:
#   scripts/gpu-check.sh            # STRUT_BIN=target/cuda/strut by default
# Anywhere, no GPU (CI runs it): the same steps on the CPU, small shapes only,
# against a numpy reference:
#   scripts/gpu-check.sh --dry-run  # STRUT_BIN=target/debug/strut by default
#
# PYTHON picks the interpreter (it needs numpy, safetensors and tokenizers;
# torch and transformers for the GPU run). OUT, when set, gets gpu-check.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry=()
[ "${1:-}" = --dry-run ] && dry=(--dry-run)
py=${PYTHON:-python3}
if [ ${#dry[@]} = 1 ]; then
  bin=${STRUT_BIN:-${CARGO_TARGET_DIR:-target}/debug/strut}
else
  bin=${STRUT_BIN:-target/cuda/strut}
  if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
    "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$bin.xz" "$bin"
    chmod +x "$bin"
  fi
  # CUDA's libraries (cuBLAS, cuRAND, NVRTC, the runtime) from the
  # interpreter's nvidia-* wheels, PyTorch's, unless the system has them.
  libs=$("$py" - <<'PY' 2>/dev/null || true
import glob, os, nvidia
dirs = {os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ldd "$bin" | grep -q "not found"; then
    echo "libraries the binary needs are missing:" >&2
    ldd "$bin" | grep "not found" >&2
    exit 1
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
[ -x "$bin" ] || { echo "no strut binary at $bin (see the top of this script)" >&2; exit 1; }
exec "$py" scripts/gpu_check.py --bin "$bin" "${dry[@]}"
