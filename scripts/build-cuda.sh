#!/usr/bin/env bash
# Builds kvbench with `--features cuda`; extra arguments go to cargo (e.g. `--example gpu_decode`).
# Usage: scripts/build-cuda.sh [CARGO_ARGS...]
#
# No GPU is needed to build. nvcc is taken from PATH; where there is none, the CUDA 13.0
# compiler, headers and link-time libraries are installed from PyPI wheels into $KVBENCH_CUDA_DIR
# (default /tmp/kvbench-cuda), once. 13.0 because PTX from a newer nvcc is refused by drivers that
# only know CUDA 13.0 (the 580 series); candle's kernels are shipped as PTX and JIT-compiled.
#
# candle 0.11 links CUDA dynamically (cudarc `dynamic-linking`): the binary needs libcuda.so.1,
# libcudart/libcublas/libcublasLt/libnvrtc.so.13 and libcurand.so.10 on LD_LIBRARY_PATH at run time.
# The wheels carry no libcuda (it comes with the driver), so a stub exporting the driver API names
# cudarc calls is generated for the link only, as the toolkit's own lib/stubs/libcuda.so is.
#
# The first build compiles candle-kernels' quantized (mmq/moe) kernels to sm_90a cubins: over an hour
# on 2 busy cores. Later builds reuse target-cuda/ (an example alone: seconds).
#
# Env: CUDA_COMPUTE_CAP (default 90, H100/H200), CARGO_TARGET_DIR (default target-cuda, kept apart
# from the CPU build so the two never rebuild each other), KVBENCH_CUDA_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
cuda_dir="${KVBENCH_CUDA_DIR:-/tmp/kvbench-cuda}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-cuda}"
# Pinned to 13.0.x, one set: torch 2.11 cu130's libraries at run time have the same sonames.
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14
)

if ! command -v nvcc >/dev/null; then
  root="$cuda_dir/nvidia/cu13"
  if [ ! -x "$root/bin/nvcc" ] || [ ! -f "$root/lib/libcublas.so.13" ]; then
    echo "nvcc not found: installing CUDA 13.0 wheels into $cuda_dir" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-compile --upgrade \
      --target "$cuda_dir" "${wheels[@]}"
  fi
  # The wheels hold only versioned sonames; the linker's -lcublas needs the plain names.
  for lib in cudart cublas cublasLt nvrtc; do ln -sf "lib$lib.so.13" "$root/lib/lib$lib.so"; done
  ln -sf libcurand.so.10 "$root/lib/libcurand.so"
  if [ ! -f "$root/lib/stubs/libcuda.so" ]; then
    cudarc_src=$(cargo metadata --format-version 1 --features cuda |
      python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
    mkdir -p "$root/lib/stubs"
    grep -ohP 'load::<_F>\("\K[A-Za-z0-9_]+' "$cudarc_src/src/driver/sys/mod.rs" | sort -u |
      sed 's/.*/int &(void) { return 999; }/' >"$root/lib/stubs/libcuda-stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/libcuda-stub.c"
  fi
  export PATH="$root/bin:$PATH" CUDA_HOME="$root"
fi

nvcc --version | tail -2
exec cargo build --release --features cuda "$@"
