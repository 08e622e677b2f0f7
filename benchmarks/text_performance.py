"""Token attributions at the price of a gradient? A GPT-2-small-sized random-init model on CPU (not a unit test).

    uv run python benchmarks/text_performance.py [--seq 64] [--repeats 7] [--tokens 8]

GPT-2 small's shape (12 layers, 768 wide, 12 heads, 50257-token vocabulary), random weights, eager and sdpa
attention. Compared side by side, with the timing and memory methods of benchmarks/performance.py (interleaved
runs, the median over rounds of per-round ratios; peak tensor memory above the start, from the profiler):

* SoftPullback vs Gradient for the log-probability of the next token: time (target <= 1.10x), memory (<= 1.15x);
* several continuation tokens from one forward pass (``attribute_targets``) vs one call per token.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path

import torch
import transformers

from semantic_pullbacks.methods import Gradient, SoftPullback
from semantic_pullbacks.text import EmbeddingsForward, TokenLogProb

_spec = importlib.util.spec_from_file_location("perf", Path(__file__).with_name("performance.py"))
perf = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["perf"] = perf
_spec.loader.exec_module(perf)  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=8, help="continuation tokens explained at once")
    cfg = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    device = torch.device("cpu")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    print("| attention | comparison | A (s) | B (s) | time A/B | memory A/B |")
    print("|---|---|---|---|---|---|")
    for impl in ("eager", "sdpa"):
        bench(impl, cfg, device)


def bench(impl: str, cfg: argparse.Namespace, device: torch.device) -> None:
    config = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=impl).eval()
    fm = EmbeddingsForward(model, "causal-lm")
    ids = torch.randint(0, 50257, (1, cfg.seq))
    mask = torch.ones_like(ids)
    emb = model.get_input_embeddings()(ids).detach()
    last = (cfg.seq - 1,)
    target = TokenLogProb(int(ids[0, -1]), last)
    sp, grad = SoftPullback(fm), Gradient(fm)
    runs = {
        "SoftPullback": lambda: sp.attribute(emb, target=target, additional_forward_args=(mask,)),
        "Gradient": lambda: grad.attribute(emb, target=target, additional_forward_args=(mask,)),
    }
    res = perf.interleaved(runs, cfg.repeats, device)
    mem = perf.peak_memory(runs["SoftPullback"], device) / perf.peak_memory(runs["Gradient"], device)
    a, b = (res["median"][k] for k in ("SoftPullback", "Gradient"))
    print(f"| {impl} | SoftPullback vs Gradient | {_s(a)} | {_s(b)} | "
          f"{perf.paired_ratio(res, 'SoftPullback', 'Gradient'):.3f} | {mem:.3f} |")  # fmt: skip
    positions = [cfg.seq - 1 - cfg.tokens + j for j in range(cfg.tokens)]
    targets = [TokenLogProb(int(ids[0, p + 1]), (p,)) for p in positions]
    multi = {
        "one forward": lambda: sp.attribute_targets(emb, targets, additional_forward_args=(mask,)),
        "per token": lambda: [sp.attribute(emb, target=t, additional_forward_args=(mask,)) for t in targets],
    }
    res = perf.interleaved(multi, max(3, cfg.repeats // 2), device)
    a, b = (res["median"][k] for k in ("one forward", "per token"))
    print(f"| {impl} | {cfg.tokens} tokens: one forward vs one call each | {_s(a)} | {_s(b)} | "
          f"{perf.paired_ratio(res, 'one forward', 'per token'):.3f} | |")  # fmt: skip


def _s(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()
