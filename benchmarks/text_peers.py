"""SP against the text peers (LXT, Captum, inseq) on the same texts and models.

    uv run --project benchmarks/envs/text-peers python benchmarks/text_peers.py [--quick] [--out DIR]

(the text-peers environment has LXT, which needs transformers < 5; in the main environment the LXT and inseq rows
are listed as not installed and the rest runs.)

1. Quality (all but the peers that explain only next tokens of causal LMs: inseq's and Captum-LLM-LayerIG): the
   embedded all-MiniLM-L6-v2 on the bundled reviews (zero-shot against the class descriptions), scored by
   ``evaluate --texts`` itself: comprehensiveness, sufficiency, deletion and the Sequence Pointing Game, each
   method's mean and its paired difference from SoftPullback with a bootstrap 95 % CI.
2. Cost: a random-weight Llama-style model at 512 and 2048 tokens, the log-probability of the next token: time
   (interleaved rounds, median) and peak CPU tensor memory above the start (the profiler method of
   benchmarks/performance.py), each method as a ratio to the gradient, side by side in one run.

Captum-LayerIG, Captum-LLM-LayerIG and inseq-IntegratedGradients run ``--ig-steps`` steps (50, Captum's default) in
chunks of ``--ig-batch`` (Captum's ``internal_batch_size``): peak memory grows with the chunk, time with the steps;
both are printed beside them.

``--peak-breakdown SoftPullback,LXT-AttnLRP`` prints, instead of the tables, what is live at each method's peak
memory at 2048 tokens (the allocations the profiler reports, grouped by the op and Python frames that made them).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers

from semantic_pullbacks.evaluation import evaluate
from semantic_pullbacks.text import TextExplainer, TextModel, TokenLogProb
from semantic_pullbacks.text.explain import token_maps
from semantic_pullbacks.text.peers import TEXT_PEERS, installed_text_peers


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


perf = _load("performance")
peers = _load("peers")

OURS = ["SoftPullback", "Gradient", "IntegratedGradients"]
IG_PEERS = ("Captum-LayerIG", "Captum-LLM-LayerIG", "inseq-IntegratedGradients")
METRICS = ("comprehensiveness", "sufficiency", "deletion_abc", "pointing_game")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 texts, 128/256 tokens, 2 repeats")
    parser.add_argument("--out", default=None, help="folder for evaluate's results (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ig-batch", type=int, default=10, help="the IG peers' internal_batch_size")
    parser.add_argument("--ig-steps", type=int, default=50, help="the IG peers' n_steps in the cost part")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--peak-breakdown", default=None, metavar="METHODS",
                        help="instead of the tables: what is live at the peak of these methods (comma-separated) "
                             "at the longest length")  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    installed = installed_text_peers()
    missing = [n for n in TEXT_PEERS if n not in installed]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    if missing:
        print(f"not installed here (see benchmarks/envs/text-peers): {', '.join(missing)}")
    methods = OURS + installed
    if args.peak_breakdown:
        breakdown(args.peak_breakdown.split(","), args)
        return
    if not args.skip_quality:  # the generation-only peers cannot explain the embedding model's similarities
        quality([m for m in methods if not getattr(TEXT_PEERS.get(m), "causal_lm_only", False)], args)
    cost(["SoftPullback", "Gradient", *installed], args)


def quality(methods: list[str], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        few = 4 if args.quick else None
        result = evaluate(None, texts="examples", methods=methods, metrics=list(METRICS), out=out, progress=False,
                          chart=False, n_texts=few, n_pairs=few)  # fmt: skip
        texts = len({r.item for r in result.rows if not r.item.startswith("pair-")})
        pairs = len({r.item for r in result.rows if r.item.startswith("pair-")})
        print(f"\n### Quality: all-MiniLM-L6-v2 on the bundled reviews ({texts} texts, {pairs} pointing pairs), "
              "paired differences from SoftPullback, bootstrap 95 % CI\n")  # fmt: skip
        print("\n".join(peers.compare_table(result, methods, METRICS, "SoftPullback")))
        for note in result.notes[:5]:
            print(f"- note: {note}")


def llama(vocab: int) -> TextModel:
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=688,
                                      num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                                      max_position_embeddings=4096)  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    tokenizer = word_tokenizer(vocab)
    return TextModel(model, tokenizer, "causal-lm", "random Llama-style (4 layers, 256 wide)", 4096)


def word_tokenizer(vocab: int) -> Any:
    """Words ``w4 .. w{vocab-1}`` and a beginning-of-sequence token: decoded ids tokenise back to the same ids, as
    inseq (which reads text) needs."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, vocab)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>")  # fmt: skip


def cost(methods: list[str], args: argparse.Namespace) -> None:
    tm = llama(8192)
    print("\n### Cost: random Llama-style model (4 layers, 256 wide, 8 heads, 8192-token vocabulary), next-token "
          "log-probability, CPU\n")  # fmt: skip
    print("| tokens | method | time (s) | time / Gradient | peak memory (MiB) | memory / Gradient |")
    print("|---:|---|---:|---:|---:|---:|")
    for length in (128, 256) if args.quick else (512, 2048):
        ids = torch.cat([torch.ones(1, 1, dtype=torch.long), torch.randint(4, 8192, (1, length - 1))], 1)
        mask = torch.ones_like(ids)
        target = TokenLogProb(int(ids[0, -1]), (length - 1,))
        runs = {m: _run(tm, m, ids, mask, target, args) for m in methods}
        res = perf.interleaved(runs, args.repeats, torch.device("cpu"))
        mem = {m: perf.peak_memory(f, torch.device("cpu")) for m, f in runs.items()}
        for m in methods:
            ig = m in IG_PEERS
            label = f"{m} ({args.ig_steps} steps, internal batch {args.ig_batch})" if ig else m
            t = res["median"][m]
            print(f"| {length} | {label} | {t:.3g} | {perf.paired_ratio(res, m, 'Gradient'):.2f} | "
                  f"{mem[m] / 2**20:.0f} | {mem[m] / mem['Gradient']:.2f} |")  # fmt: skip


def breakdown(methods: list[str], args: argparse.Namespace) -> None:
    """For each method, the allocations live at its CPU peak, grouped by the op and Python frames that made them."""
    tm = llama(8192)
    length = 256 if args.quick else 2048
    ids = torch.cat([torch.ones(1, 1, dtype=torch.long), torch.randint(4, 8192, (1, length - 1))], 1)
    target = TokenLogProb(int(ids[0, -1]), (length - 1,))
    for m in methods:
        rows = perf.live_at_peak(_run(tm, m, ids, torch.ones_like(ids), target, args))
        print(f"\n### {m} at {length} tokens: {sum(r[0] for r in rows) / 2**20:.1f} MiB live at its peak\n")
        print("| MiB | tensors | made by (op <- Python frames) |\n|---:|---:|---|")
        for size, n, where in rows:
            if size >= 2**19:
                print(f"| {size / 2**20:.1f} | {n} | `{where}` |")


def _run(tm: TextModel, method: str, ids: torch.Tensor, mask: torch.Tensor, target: Any, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    settings: dict[str, Any] = {}
    if method in IG_PEERS:
        settings = {"n_steps": args.ig_steps, "internal_batch_size": args.ig_batch}
    explainer = TextExplainer(tm, method=method, **settings).explainer
    return lambda: token_maps(explainer, tm, ids, mask, [target])


if __name__ == "__main__":
    main()
