#!/usr/bin/env python3
"""Produce committed reference data for kvbench's Rust side from HF transformers.

Loads SmolLM2-135M-Instruct straight from its GGUF with HF transformers (weights
dequantized to float32, tokenizer rebuilt from the GGUF metadata), then writes:

  <out>/smollm2_greedy_reference.json      greedy generations for fixed chat prompts
  <out>/smollm2_tokenizer_reference.jsonl  token-id hashes for every gsm8k/math500 question

No dataset text is written, only hashes of the token ids (plus the full ids of the
first few entries per dataset, for debugging). Nothing is fetched from any hub.

Pre-tokenizer fix-up: transformers' GGUF converter builds a plain GPT-2 ByteLevel
pre-tokenizer for tokenizer.ggml.model == "gpt2", ignoring tokenizer.ggml.pre. For
tokenizer.ggml.pre == "smollm" the upstream tokenizer.json (and llama.cpp) first isolate
every \p{N} digit, then apply the GPT-2 regex: Sequence[Digits(individual_digits=True),
ByteLevel]. The two differ where a whitespace run precedes a digit ("and  2" -> "ĠĠ","2"
upstream, but "Ġ","Ġ","2" with ByteLevel alone). This script installs the upstream
pre-tokenizer and records, in the greedy reference's "tokenizer" object, which dataset
texts the plain-ByteLevel tokenizer would have encoded differently.

Usage (from the repository root):
  .venv-ref/bin/python scripts/reference/make_reference.py \
      --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --data-dir /work/shared/datasets --out tests/data
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import time
from pathlib import Path

# Never touch the network: everything is loaded from the local GGUF.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

MAX_NEW_TOKENS = 96
MIN_NEW_TOKENS = 64
N_FULL_IDS = 5
TOP_K_LOGITS = 20

# Each case is a single user message. Chosen so that greedy decoding runs for at
# least MIN_NEW_TOKENS tokens before EOS (checked at run time).
PROMPTS = [
    "Explain in detail, in several paragraphs, how photosynthesis works in plants, "
    "including the light-dependent reactions and the Calvin cycle.",
    "A baker makes 24 cupcakes in the morning and 18 more in the afternoon. She sells "
    "29 of them and gives 5 to her neighbors. How many cupcakes does she have left? "
    "Explain your reasoning step by step.",
    "Write a detailed, multi-paragraph explanation of why the sky is blue and why "
    "sunsets are red or orange.",
]

DATASETS = [("gsm8k", "question"), ("math500", "problem")]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ids_sha256(ids) -> str:
    return hashlib.sha256(struct.pack(f"<{len(ids)}I", *ids)).hexdigest()


def setup_torch() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)


def gguf_metadata(path: Path) -> dict:
    """A few tokenizer-related GGUF metadata values, read with the gguf package."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    wanted = [
        "general.architecture",
        "general.name",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.add_space_prefix",
        "tokenizer.chat_template",
    ]
    out = {}
    for key in wanted:
        field = reader.fields.get(key)
        if field is None:
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.STRING:
            out[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        elif vtype == GGUFValueType.ARRAY:
            out[key] = f"<array of {len(field.data)}>"
        else:
            out[key] = field.parts[field.data[0]].tolist()[0]
    return out


SMOLLM_PRE_TOKENIZER = (
    "Sequence[Digits(individual_digits=true), "
    "ByteLevel(add_prefix_space=false, trim_offsets=true, use_regex=true)]"
)


def fix_pre_tokenizer(tok, ggml_pre: str) -> str:
    """Make the GGUF-built tokenizer match tokenizer.ggml.pre; returns a description."""
    from tokenizers import pre_tokenizers as pt

    current = json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"]
    if ggml_pre != "smollm":
        return json.dumps(current)
    assert current == {
        "type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True
    }, current
    tok.backend_tokenizer.pre_tokenizer = pt.Sequence(
        [
            pt.Digits(individual_digits=True),
            pt.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    # " and  2": the whitespace run before a digit stays one pre-token ("ĠĠ").
    got = tok.convert_ids_to_tokens(tok(" and  2", add_special_tokens=False)["input_ids"])
    assert got == ["Ġand", "ĠĠ", "2"], got
    return SMOLLM_PRE_TOKENIZER


def to_json(obj, indent: int = 0) -> str:
    """Pretty JSON with lists of scalars (and lists of [id, logit] pairs) kept on one line."""
    pad, inner = " " * indent, " " * (indent + 1)

    def flat(x):
        return not isinstance(x, (dict, list)) or (
            isinstance(x, list) and all(not isinstance(y, (dict, list)) for y in x)
        )

    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {to_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(obj, list) and all(flat(x) for x in obj):
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, list):
        items = [inner + to_json(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]" if items else "[]"
    return json.dumps(obj, ensure_ascii=False)


def greedy_cases(tok, model, eos_id: int, tok_plain) -> list:
    cases = []
    for i, prompt in enumerate(PROMPTS):
        messages = [{"role": "user", "content": prompt}]
        prompt_text = tok.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
        assert prompt_ids == tok_plain(prompt_text, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        attn = torch.ones_like(input_ids)
        t0 = time.time()
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attn,
                do_sample=False,
                max_new_tokens=MAX_NEW_TOKENS,
                eos_token_id=eos_id,
                pad_token_id=eos_id,
                output_logits=True,
                return_dict_in_generate=True,
            )
        gen = out.sequences[0, len(prompt_ids):].tolist()
        # Keep tokens up to and including the first EOS (generate may pad after it).
        if eos_id in gen:
            gen = gen[: gen.index(eos_id) + 1]
        n_new = len(gen)
        if n_new < MIN_NEW_TOKENS:
            sys.exit(
                f"case {i}: only {n_new} new tokens (< {MIN_NEW_TOKENS}); choose another prompt"
            )
        # Per step: raw-logit gap between the chosen (argmax) token and the runner-up.
        # Small gaps mark where a numerically different implementation may diverge.
        margins = []
        for step, logits in enumerate(out.logits[: len(gen)]):
            top2 = torch.topk(logits[0].to(torch.float32), 2)
            assert int(top2.indices[0]) == gen[step]
            margins.append(round(float(top2.values[0] - top2.values[1]), 5))
        case = {
            "messages": messages,
            "prompt_text": prompt_text,
            "prompt_ids": prompt_ids,
            "generated_ids": gen,
            "top2_logit_margins": margins,
        }
        if i == 0:
            with torch.no_grad():
                logits = model(input_ids=input_ids, attention_mask=attn).logits[0, -1]
            logits = logits.to(torch.float32).numpy()
            top = np.argsort(-logits, kind="stable")[:TOP_K_LOGITS]
            case["prefill_last_logits_top20"] = [
                [int(t), round(float(logits[t]), 5)] for t in top
            ]
            # Sanity: the greedy first token is the argmax of the prefill logits.
            assert int(top[0]) == gen[0], (int(top[0]), gen[0])
        cases.append(case)
        imin = int(np.argmin(margins))
        print(
            f"case {i}: prompt {len(prompt_ids)} ids, generated {n_new} ids "
            f"(eos {'yes' if gen and gen[-1] == eos_id else 'no'}) in {time.time() - t0:.1f}s; "
            f"smallest top-2 margin {margins[imin]} at step {imin}"
        )
        print("  text:", repr(tok.decode(gen)[:200]))
    return cases


def tokenizer_reference(tok, tok_plain, data_dir: Path, out_path: Path):
    counts = {}
    differs = []
    with open(out_path, "w", encoding="utf-8") as out:
        for name, field in DATASETS:
            path = data_dir / name / "test.jsonl"
            n = 0
            with open(path, encoding="utf-8") as f:
                for index, line in enumerate(f):
                    text = json.loads(line)[field]
                    ids = tok(text, add_special_tokens=False)["input_ids"]
                    rec = {
                        "dataset": name,
                        "index": index,
                        "n_ids": len(ids),
                        "ids_sha256": ids_sha256(ids),
                    }
                    if index < N_FULL_IDS:
                        rec["ids"] = ids
                    if tok_plain(text, add_special_tokens=False)["input_ids"] != ids:
                        differs.append([name, index])
                    out.write(json.dumps(rec) + "\n")
                    n += 1
            counts[name] = n
    return counts, differs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, type=Path)
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    setup_torch()
    gguf_dir, gguf_name = str(args.gguf.parent), args.gguf.name
    args.out.mkdir(parents=True, exist_ok=True)

    meta = gguf_metadata(args.gguf)
    print("GGUF metadata:")
    for k, v in meta.items():
        print(f"  {k} = {v!r}")

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    # The tokenizer exactly as transformers builds it from the GGUF, for comparison.
    tok_plain = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    pre_desc = fix_pre_tokenizer(tok, meta.get("tokenizer.ggml.pre", ""))
    print(f"pre-tokenizer: {pre_desc}")
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, dtype=torch.float32
    )
    model.eval()
    assert next(model.parameters()).dtype == torch.float32

    eos_id = tok.eos_token_id
    print(f"tokenizer: {type(tok).__name__}, vocab {len(tok)}, "
          f"bos {tok.bos_token_id} eos {eos_id} pad {tok.pad_token_id} unk {tok.unk_token_id}")

    tok_path = args.out / "smollm2_tokenizer_reference.jsonl"
    counts, differs = tokenizer_reference(tok, tok_plain, args.data_dir, tok_path)

    cases = greedy_cases(tok, model, eos_id, tok_plain)
    ref = {
        "model_file": gguf_name,
        "model_sha256": sha256_file(args.gguf),
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, "
        "float32 dequantized GGUF, greedy",
        "max_new_tokens": MAX_NEW_TOKENS,
        "eos_token_id": eos_id,
        "tokenizer": {
            "gguf_pre": meta.get("tokenizer.ggml.pre"),
            "pre_tokenizer": pre_desc,
            "reference_file": tok_path.name,
            "texts_differing_with_plain_bytelevel": differs,
        },
        "cases": cases,
    }
    greedy_path = args.out / "smollm2_greedy_reference.json"
    with open(greedy_path, "w", encoding="utf-8") as f:
        f.write(to_json(ref) + "\n")

    print("summary:")
    print(f"  {ref['generator']}")
    print(f"  {greedy_path}: {len(cases)} cases, generated "
          f"{[len(c['generated_ids']) for c in cases]} tokens")
    print(f"  {tok_path}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; {len(differs)} texts would differ with transformers' plain ByteLevel pre-tokenizer")


if __name__ == "__main__":
    main()
