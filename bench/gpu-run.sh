#!/usr/bin/env bash
# Device-side script for the GPU decode benchmark: finds the CUDA 13 libraries the binary links
# (libcuda from the driver; cuBLAS, cuRAND, NVRTC and the runtime from the image's pip wheels),
# runs a tiny correctness check, then the R1-Distill-Qwen-1.5B-shaped bench. Writes under $OUT.
# Usage (on the GPU machine): bench/gpu-run.sh PATH/TO/gpu_decode
set -uo pipefail
bin="${1:-.gpu/gpu_decode}"
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
dirs=""
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
  f=$(find /opt /usr /usr/local -name "$lib" 2>/dev/null | head -1)
  echo "$lib: ${f:-NOT FOUND}"
  [ -n "$f" ] && dirs="$dirs:$(dirname "$f")"
done
export LD_LIBRARY_PATH="${dirs#:}:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"
ldd "$bin" | grep -E "not found|cuda|cublas|curand|nvrtc|stdc"
echo "== check + tiny smoke"
timeout 180 "$bin" --tiny --check --prompt 256 --steps 32 --batch 1,4 --policy streamingllm,snapkv \
  --budget 300 --window 64 --policy-steps 64 --bw-gib 1 --csv "$out/tiny.csv" || echo "TINY FAILED rc=$?"
echo "== R1-Distill-Qwen-1.5B shape, bf16"
timeout 420 "$bin" --prompt 1024 --steps 128 --warmup 8 --batch "${BATCHES:-1,8,32}" \
  --policy streamingllm,snapkv --budget 1k --window 256 --ratio 0.3 --policy-steps 600 \
  --csv "$out/gpu_decode.csv" || echo "BENCH FAILED rc=$?"
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
