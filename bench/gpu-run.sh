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
timeout 90 "$bin" --tiny --check --prompt 256 --steps 32 --batch 1,4 --policy streamingllm,snapkv \
  --budget 300 --window 64 --policy-steps 64 --bw-gib 1 --csv "$out/tiny.csv" || echo "TINY FAILED rc=$?"
echo "== cross-check: PyTorch copy, 4 GiB, CUDA events"
timeout 60 python3 - <<'PY' || echo "TORCH FAILED"
import torch
x = torch.empty(2**30, dtype=torch.float32, device="cuda").uniform_()
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
ts = []
for _ in range(10):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); y.copy_(x); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
ts.sort()
print(f"torch copy (4 GiB, read + write): {2 * x.numel() * 4 / ts[5] / 1e6:.1f} GB/s")
PY
echo "== R1-Distill-Qwen-1.5B shape, bf16 (batch 1 again last: clock ramp / warm-up check)"
timeout 200 "$bin" --prompt 1024 --steps 128 --warmup 16 --batch "${BATCHES:-1,8,32,1}" \
  --policy streamingllm,snapkv --budget 1k --window 256 --ratio 0.3 --policy-steps 600 \
  --csv "$out/gpu_decode.csv" || echo "BENCH FAILED rc=$?"
echo "== long context: 10k prompt; snapkv scores 9745 older slots (host top-k past 8192)"
timeout 100 "$bin" --prompt 10000 --steps 64 --warmup 8 --batch 1 --policy snapkv --budget 10k \
  --window 256 --ratio 0.3 --policy-steps 64 --bw-gib 1 --csv "$out/gpu_decode_10k.csv" || echo "LONG FAILED rc=$?"
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
