"""A random-weight Llama-style language model saved as a local folder, to run the LM pipeline offline.

    uv run python benchmarks/random_lm.py --out runs/random-llama
    uv run semantic-pullbacks evaluate --texts examples --model runs/random-llama --out runs/lm-random

Weights drawn with torch.manual_seed(0) (4 layers, hidden size 128, 4 heads, 2 key/value heads); the tokenizer is
the embedded all-MiniLM-L6-v2's WordPiece vocabulary (lower-case, 30,522 tokens), so nothing downloads. The model
has learned nothing: scores on it show that the pipeline runs and how the methods behave on an untrained network,
never how faithful they are on a real language model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

from semantic_pullbacks.text import load_text_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/random-llama"))
    args = parser.parse_args()
    tokenizer = load_text_model().tokenizer
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
