#!/usr/bin/env bash
# Builds `strut` with `--features cuda` on a machine with no GPU and no CUDA
# install: CUDA 13.0's compiler, headers and libraries come from PyPI wheels
# into a cache folder, so CI compiles and links the GPU code on every run.
#
#   scripts/cuda-build.sh                  # release binary: $STRUT_CUDA_TARGET/release/strut
#   scripts/cuda-build.sh --clippy         # also clippy the workspace with the feature
#   scripts/cuda-build.sh --pack           # also $STRUT_CUDA_TARGET/strut.xz: stripped and
#                                          # compressed (~12 MB) to carry to a GPU machine
#   scripts/cuda-build.sh --env            # print the environment (eval it to run cargo yourself)
#
# Environment:
#   STRUT_CUDA_CACHE   where the toolkit goes (default ~/.cache/strut-cuda)
#   STRUT_CUDA_TARGET  cargo target dir for the CUDA build (default target/cuda:
#                      its own, so the CPU binary in target/release stays as it is)
#   CUDA_COMPUTE_CAP   GPU architecture the kernels are built for (default 90, H100/H200)
#
# Versions are pinned to one CUDA minor: the lent GPUs' driver (580, CUDA
# 13.0) cannot load PTX from a newer nvcc (../shared/reference/cuda-from-pypi.md).
# The binary links libcudart, cuBLAS, cuBLASLt, cuRAND and NVRTC by soname
# (the real libraries from the same wheels, so a missing symbol is a link
# error here); at run time they come from the CUDA image or from PyTorch's
# nvidia-* wheels (scripts/gpu-check.sh). The driver, libcuda, is the one
# library no wheel ships: the link uses a stub generated from the driver API
# that cudarc declares, as CUDA's own lib/stubs does, and the real one is
# loaded at run time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clippy=0 print_env=0 pack=0
for arg in "$@"; do
  case $arg in
    --clippy) clippy=1 ;;
    --pack) pack=1 ;;
    --env) print_env=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

cache="${STRUT_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strut-cuda}"
target="${STRUT_CUDA_TARGET:-${CARGO_TARGET_DIR:-$PWD/target}/cuda}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
pins=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
venv="$cache/cuda-13.0"
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "installing the CUDA 13.0 toolkit wheels into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${pins[@]}"
  echo "${pins[*]}" >"$venv/.pins"
fi
cuda=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
[ -x "$cuda/bin/nvcc" ] || { echo "no nvcc under $cuda" >&2; exit 1; }

# The wheels ship versioned sonames only; the linker's -lNAME wants NAME.so.
for lib in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
  ln -sf "lib$lib" "$cuda/lib/lib${lib%.so.*}.so"
done

# The driver stub: every cu* entry point cudarc's bindings name, each an
# empty function, under the real soname (never loaded: the driver is).
cudarc=$(cargo metadata --format-version 1 --locked --features strut/cuda 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(p["manifest_path"].rsplit("/", 1)[0]); break')
[ -n "$cudarc" ] || { echo "cudarc is not in Cargo.lock" >&2; exit 1; }
stub="$cuda/lib/stubs/libcuda.so"
if [ ! -f "$stub" ] || [ "$(cat "$stub.from" 2>/dev/null)" != "$cudarc" ]; then
  mkdir -p "$cuda/lib/stubs"
  grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/mod.rs" |
    sort -u | sed -E 's/pub unsafe fn (.*)/void \1(void) {}/' >"$cuda/lib/stubs/libcuda.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$cuda/lib/stubs/libcuda.c"
  echo "$cudarc" >"$stub.from"
fi

export CUDA_HOME="$cuda" NVCC="$cuda/bin/nvcc" PATH="$cuda/bin:$PATH"
# cuda_fp16.h includes CCCL's <nv/target>, which its wheel keeps apart.
export NVCC_APPEND_FLAGS="-I$cuda/include/cccl ${NVCC_APPEND_FLAGS:-}"
export CARGO_TARGET_DIR="$target"
# No debug info: the binary that travels is stripped anyway, and line tables
# for candle's CUDA build add ~1 GB to the target dir of a CI disk.
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-false}"
if [ "$print_env" = 1 ]; then
  for var in CUDA_HOME NVCC PATH NVCC_APPEND_FLAGS CARGO_TARGET_DIR CUDA_COMPUTE_CAP CARGO_PROFILE_RELEASE_DEBUG; do
    printf 'export %s=%q\n' "$var" "${!var}"
  done
  exit 0
fi

"$NVCC" --version | tail -2
cargo build --release --locked -p strut --features cuda
echo "built $target/release/strut (CUDA 13.0, sm_$CUDA_COMPUTE_CAP)"
if [ "$pack" = 1 ]; then
  # Stripped it is ~74 MB, over what travels to the GPU machine (64 MiB);
  # scripts/gpu-check.sh unpacks it there with Python's lzma.
  strip -o "$target/strut" "$target/release/strut"
  xz -T0 -6 -f -k "$target/strut"
  ls -l "$target/strut.xz"
fi
if [ "$clippy" = 1 ]; then
  # --release: the kernels' build script has already run for this profile.
  cargo clippy --release --locked --workspace --all-targets --features strut/cuda -- -D warnings
fi
