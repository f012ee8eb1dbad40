#!/usr/bin/env bash
# Device-side script for the GPU decode benchmark: finds the CUDA 13 libraries the binary links
# (libcuda from the driver; cuBLAS, cuRAND, NVRTC and the runtime from the image's pip wheels),
# runs the equality check (tiny model, f32 and bf16, per sequence and slot pool with candle's ops
# and with the fused kernels, against CPU f32), then the R1-Distill-Qwen-1.5B- and 7B-shaped benches at batch 1/8/32/64. Writes under $OUT (CSV
# files and log.txt; copy them to bench/gpu-logs/).
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
# Every step is bounded; the whole script stays under 10 minutes of device time.
echo "== equality: tiny Qwen2 on the GPU (f32 and bf16; per sequence, slot pool, slot pool fused) vs CPU f32, then a smoke run"
timeout 90 "$bin" --shape tiny --check --prompt 256 --steps 32 --batch 1,4 --policy streamingllm,snapkv \
  --budget 300 --window 64 --policy-steps 64 --bw-gib 1 --csv "$out/tiny.csv" || echo "TINY FAILED rc=$?"
echo "== R1-Distill-Qwen-1.5B shape, bf16, slot pool (batch 1 again last: clock ramp / warm-up check)"
timeout 130 "$bin" --shape 1.5b --prompt 1024 --steps 128 --warmup 16 --batch "${BATCHES:-1,8,32,64,1}" \
  --policy streamingllm,snapkv --budget 1k --window 256 --ratio 0.3 --policy-steps 600 \
  --csv "$out/gpu_decode.csv" || echo "BENCH FAILED rc=$?"
echo "== the same shape, slot pool with the fused kernels (fewer launches per step)"
timeout 60 "$bin" --shape 1.5b --kernels fused --prompt 1024 --steps 64 --warmup 8 --batch 1,32 \
  --bw-gib 1 --csv "$out/gpu_decode_fused.csv" || echo "FUSED FAILED rc=$?"
echo "== the same shape, per-sequence attention (the path before the slot pool)"
timeout 60 "$bin" --shape 1.5b --decode per-sequence --prompt 1024 --steps 64 --warmup 8 --batch 8,32 \
  --bw-gib 1 --csv "$out/gpu_decode_per_sequence.csv" || echo "PER-SEQUENCE FAILED rc=$?"
echo "== the same shape in f32, slot pool"
timeout 60 "$bin" --shape 1.5b --dtype f32 --prompt 1024 --steps 64 --warmup 8 --batch 1,32 \
  --bw-gib 1 --csv "$out/gpu_decode_f32.csv" || echo "F32 FAILED rc=$?"
echo "== R1-Distill-Qwen-7B shape, bf16, slot pool"
timeout 120 "$bin" --shape 7b --prompt 1024 --steps 64 --warmup 8 --batch 1,8,32,64 \
  --bw-gib 1 --csv "$out/gpu_decode_7b.csv" || echo "7B FAILED rc=$?"
echo "== long context: 10k prompt; snapkv scores 9745 older slots (host top-k past 8192)"
timeout 60 "$bin" --prompt 10000 --steps 64 --warmup 8 --batch 1 --policy snapkv --budget 10k \
  --window 256 --ratio 0.3 --policy-steps 64 --bw-gib 1 --csv "$out/gpu_decode_10k.csv" || echo "LONG FAILED rc=$?"
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
