#!/usr/bin/env bash
# kvbench against HF transformers and kvpress on SmolLM2-135M (f32), side by side; see peers.py.
#   bench/peers/run.sh [peers.py options, e.g. --rounds 5 --threads 2]
# Creates .venv-bench (≈ 6 GB: torch with its CUDA packages, of which only the CPU is used),
# converts the test model's GGUF to target/smollm2-f32 and builds kvbench first.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-bench
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import kvpress" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet -r bench/peers/requirements.txt
fi
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$gguf" ] || scripts/fetch-test-model.sh models
[ -f target/smollm2-f32/model.safetensors ] || "$venv/bin/python" bench/peers/convert.py --gguf "$gguf" --out target/smollm2-f32
cargo build --release --quiet
data_dir=${KVBENCH_DATA_DIR:-../shared/datasets}
# The prompt: GSM8K's first test question with the run's instruction.
"$venv/bin/python" - "$data_dir/gsm8k/test.jsonl" > target/peers-prompt.txt <<'PY'
import json, sys
q = json.loads(open(sys.argv[1]).readline())["question"]
print(q + "\nPlease reason step by step, and put your final answer within \\boxed{}.", end="")
PY
exec "$venv/bin/python" bench/peers/peers.py --prompt-file target/peers-prompt.txt "$@"
