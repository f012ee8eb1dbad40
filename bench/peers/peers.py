"""kvbench against the Python peers, side by side: HF transformers (full cache, eager attention)
and NVIDIA kvpress (`DecodingPress` around its StreamingLLM and SnapKV presses).

Every engine gets the same f32 SmolLM2 folder (bench/peers/convert.py), the same chat-formatted
prompt, the same number of new tokens (greedy, end-of-sequence ignored) and the same threads.
The engines run alternately, round after round, so that drift in the machine's speed hits all of
them alike; the table gives each engine's median and the ratios kvbench / peer.

Matching budgets. kvbench's harness evicts when B + 1 tokens are cached and keeps the local W plus
the top ⌊r·(B + 1 − W)⌋ older ones, so its cache cycles between K = W + ⌊r·(B + 1 − W)⌋ and B + 1.
`DecodingPress(target_size=K, compression_interval=B + 1 − K)` cycles between the same two sizes.
StreamingLLM keeps 10 sink tokens in both; SnapKV scores by the attention of the last 32 queries
without pooling in both (kvbench's `snapkv` defaults; kvpress `window_size=32, kernel_size=1`).

Decode tokens/s = (new tokens − 1) / (time of the generation − time to the first token): the
forwards after the prompt's, for both engines.
"""

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def kvbench_generate(args, policy: str) -> dict:
    cmd = [
        args.kvbench, "generate", "--model", str(args.model_dir), "--prompt-file", str(args.prompt_file),
        "--max-new-tokens", str(args.new_tokens), "--ignore-eos", "--temperature", "0",
        "--policy", policy, "--budget", str(args.budget), "--window", str(args.window), "--ratio", str(args.ratio),
    ]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"kvbench failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    line = [l for l in p.stderr.splitlines() if l.startswith("policy=")][-1]
    f = dict(kv.split("=", 1) for kv in line.split())
    n = int(f["generated_tokens"])
    decode_secs = n / float(f["decode_tokens_per_s"])
    return {
        "prompt_tokens": int(f["prompt_tokens"]),
        "new_tokens": n,
        "ttft_s": float(f["prefill_s"]),
        "decode_tok_s": (n - 1) / decode_secs,
        "peak_kv": int(f["peak_kv"]),
        "text": p.stdout.strip(),
    }


def press_for(engine_policy: str, args):
    from kvpress import DecodingPress, SnapKVPress, StreamingLLMPress

    keep = args.window + int(args.ratio * (args.budget + 1 - args.window))
    interval = args.budget + 1 - keep
    if engine_policy == "streamingllm":
        base = StreamingLLMPress(n_sink=10)
    elif engine_policy == "snapkv":
        base = SnapKVPress(window_size=32, kernel_size=1)
    else:
        raise ValueError(engine_policy)
    return DecodingPress(base_press=base, compression_interval=interval, target_size=keep, hidden_states_buffer_size=32)


def hf_generate(model, tok, ids, args, policy: str) -> dict:
    def gen(n):
        press = press_for(policy, args) if policy != "full" else None
        with torch.inference_mode(), (press(model) if press else nullcontext()):
            t0 = time.perf_counter()
            # An explicit mask: SmolLM2's pad id is its <|im_end|>, which the chat prompt holds, and a
            # mask inferred from the pad id would hide those prompt tokens.
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                pad_token_id=tok.eos_token_id, eos_token_id=None,
            )
            return out, time.perf_counter() - t0

    _, ttft = gen(1)
    out, total = gen(args.new_tokens)
    new = out[0, ids.shape[1]:]
    return {
        "prompt_tokens": ids.shape[1],
        "new_tokens": len(new),
        "ttft_s": ttft,
        "decode_tok_s": (len(new) - 1) / (total - ttft),
        "peak_kv": None,
        "text": tok.decode(new, skip_special_tokens=True).strip(),
    }


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvbench", default="target/release/kvbench")
    ap.add_argument("--model-dir", type=Path, default=Path("target/smollm2-f32"))
    ap.add_argument("--prompt-file", type=Path, required=True)
    ap.add_argument("--new-tokens", type=int, default=768)
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--policies", default="full,streamingllm,snapkv")
    ap.add_argument("--out", type=Path, default=Path("bench/peers/results.csv"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    user = args.prompt_file.read_text()
    ids = tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, return_tensors="pt")
    if not isinstance(ids, torch.Tensor):
        ids = ids["input_ids"]

    policies = args.policies.split(",")
    peer = {"full": "transformers"}
    rows = []
    for r in range(args.rounds):
        for policy in policies:
            for engine in ["kvbench", peer.get(policy, "kvpress")]:
                res = kvbench_generate(args, policy) if engine == "kvbench" else hf_generate(model, tok, ids, args, policy)
                res.update(round=r + 1, engine=engine, policy=policy)
                rows.append(res)
                print(f"round {r + 1} {engine:12} {policy:12} prompt {res['prompt_tokens']} new {res['new_tokens']} "
                      f"ttft {res['ttft_s']:.3f}s decode {res['decode_tok_s']:.1f} tok/s", flush=True)

    fields = ["round", "engine", "policy", "prompt_tokens", "new_tokens", "ttft_s", "decode_tok_s", "peak_kv"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, args.out)

    med = lambda e, p: statistics.median(x["decode_tok_s"] for x in rows if x["engine"] == e and x["policy"] == p)
    print(f"\nSmolLM2-135M f32, {args.threads} threads, batch 1, prompt {rows[0]['prompt_tokens']} tokens, "
          f"{args.new_tokens} new tokens, B {args.budget} / W {args.window} / r {args.ratio}, "
          f"median of {args.rounds} alternating rounds (torch {torch.__version__}, transformers "
          f"{transformers.__version__})")
    print(f"{'policy':14}{'kvbench tok/s':>15}{'peer':>14}{'peer tok/s':>12}{'ratio':>8}")
    for policy in policies:
        e = peer.get(policy, "kvpress")
        a, b = med("kvbench", policy), med(e, policy)
        print(f"{policy:14}{a:15.1f}{e:>14}{b:12.1f}{a / b:8.2f}")
    kv = next(x for x in rows if x["engine"] == "kvbench" and x["policy"] == "full")["text"]
    hf = next((x for x in rows if x["engine"] == "transformers"), {"text": ""})["text"]
    print(f"full-cache greedy texts agree on their first {common_prefix(kv, hf)} of {len(kv)} characters")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
