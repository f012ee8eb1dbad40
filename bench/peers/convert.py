"""SmolLM2-135M-Instruct from the test model's GGUF to an HF folder (safetensors, f32).

Both kvbench and the Python peers then load the very same f32 weights, tokenizer and chat
template (transformers dequantizes the Q4_1 tensors and un-permutes Q/K on load).

    python bench/peers/convert.py --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf --out target/smollm2-f32
"""

import argparse
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    gguf_dir, name = str(args.gguf.parent), args.gguf.name
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32)
    args.out.mkdir(parents=True, exist_ok=True)
    # transformers refuses to save a model it loaded from GGUF; its dequantized tensors are plain.
    tied = model.config.tie_word_embeddings
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(args.out / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(args.out)
    model.generation_config.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    digest = hashlib.sha256(args.gguf.read_bytes()).hexdigest()
    (args.out / "converted-from.json").write_text(json.dumps({"gguf": name, "sha256": digest}, indent=1) + "\n")
    print(f"wrote {args.out} ({sum(p.numel() for p in model.parameters()):,} parameters, f32)")


if __name__ == "__main__":
    main()
