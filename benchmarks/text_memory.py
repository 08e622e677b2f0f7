"""Long contexts: peak memory and time of SP, the gradient and Captum's LayerIntegratedGradients (not a unit test).

    flock /tmp/heavy.lock nice uv run python benchmarks/text_memory.py [--lengths 512,2048,8192] [--quick]

A random-weight Llama-style causal LM (4 layers, hidden size 256, 8 heads, 2 key/value heads, SwiGLU, RMSNorm,
sdpa attention, a 1,024-token vocabulary so that the logits do not hide the attention), one text of each length;
each method explains the log-probability of the last token. Measured side by side in one run, with the methods of
benchmarks/performance.py: peak tensor memory above the start of the call (on CPU from the profiler's allocation
events; on CUDA ``max_memory_allocated``) and the median wall time of interleaved calls.

LayerIntegratedGradients runs on the embedding layer with ``--ig-steps`` steps (16) in batches of
``--ig-batch`` (4); its memory grows with the batch, its time with the steps. Targets: SP's memory <= the
gradient's at every length.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from semantic_pullbacks.methods import Gradient, SoftPullback
from semantic_pullbacks.text import EmbeddingsForward, TokenLogProb

_spec = importlib.util.spec_from_file_location("perf", Path(__file__).with_name("performance.py"))
perf = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["perf"] = perf
_spec.loader.exec_module(perf)  # type: ignore[union-attr]

VOCAB = 1024


def build(impl: str, device: torch.device) -> torch.nn.Module:
    config = transformers.LlamaConfig(
        hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=16384,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=impl).eval().to(device)


def calls(model: torch.nn.Module, seq: int, cfg: argparse.Namespace, device: torch.device) -> dict[str, Callable]:
    """One explanation of the last token's log-probability per method, as a zero-argument call."""
    from captum.attr import LayerIntegratedGradients

    torch.manual_seed(1)
    ids = torch.randint(3, VOCAB, (1, seq), device=device)
    mask = torch.ones_like(ids)
    emb = model.get_input_embeddings()(ids).detach()
    target = TokenLogProb(int(ids[0, -1]), (seq - 2,))
    fm = EmbeddingsForward(model, "causal-lm")
    sp, grad = SoftPullback(fm), Gradient(fm)

    def log_prob(input_ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        return logits[:, seq - 2].log_softmax(-1)[:, int(ids[0, -1])]

    lig = LayerIntegratedGradients(log_prob, model.get_input_embeddings())
    return {
        "SP": lambda: sp.attribute(emb, target=target, additional_forward_args=(mask,)),
        "Gradient": lambda: grad.attribute(emb, target=target, additional_forward_args=(mask,)),
        "LayerIG": lambda: lig.attribute(
            ids, baselines=torch.zeros_like(ids), n_steps=cfg.ig_steps, internal_batch_size=cfg.ig_batch
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (0: time the first call)")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--ig-batch", type=int, default=4)
    parser.add_argument("--impl", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--no-ig", action="store_true", help="leave LayerIntegratedGradients out")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 128 and 256 tokens, one repeat")
    cfg = parser.parse_args()
    if cfg.quick:
        cfg.lengths, cfg.repeats, cfg.ig_steps, cfg.ig_batch = "128,256", 1, 4, 2
    warnings.filterwarnings("ignore")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build(cfg.impl, device)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device}, {cfg.impl} attention, "
          f"threads {torch.get_num_threads()}, LayerIG {cfg.ig_steps} steps in batches of {cfg.ig_batch}")  # fmt: skip
    print("| tokens | method | peak MiB | memory / gradient | time (s) | time / gradient |")
    print("|---|---|---|---|---|---|")
    for seq in (int(n) for n in cfg.lengths.split(",")):
        runs = calls(model, seq, cfg, device)
        if cfg.no_ig:
            del runs["LayerIG"]
        memory = {name: perf.peak_memory(fn, device) for name, fn in runs.items()}
        timed = perf.interleaved(runs, cfg.repeats, device)["median"] if cfg.repeats else _once(runs, device)
        for name in runs:
            print(f"| {seq} | {name} | {memory[name] / 2**20:.0f} | {memory[name] / memory['Gradient']:.2f} | "
                  f"{timed[name]:.2f} | {timed[name] / timed['Gradient']:.2f} |", flush=True)  # fmt: skip


def _once(runs: dict[str, Callable], device: torch.device) -> dict[str, float]:
    """One call per method, timed after the memory measurement's calls warmed it (``--repeats 0``)."""
    times = {}
    for name, fn in runs.items():
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times[name] = time.perf_counter() - start
    return times


if __name__ == "__main__":
    main()
