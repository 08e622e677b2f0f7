"""``semantic-pullbacks explain-text``: which words a text model's output rests on.

Prints the text with words coloured by signed relevance (red: towards the target, blue: against) and writes a
self-contained HTML page (and, on request, a PNG figure and the JSON result), named after the text and what was
explained, so explaining another text never overwrites them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

from rich.console import Console

from ..errors import InvalidInputError
from ..text import TextExplainer, load_text_model, save_html, save_png, to_rich
from ..text.generate import generation_settings
from ..text.matrix import TokenMatrix
from ..text.peers import get_text_method
from ..text.views import matrix_rich, save_matrix_html, save_matrix_png
from ._common import add_command, add_output_options, non_negative_int, positive_int
from ._output import Output, slug

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "explain-text",
        run,
        description="Explain a Hugging Face text model with token attributions (soft pullbacks over the input\n"
        "embeddings). Default model: the embedded all-MiniLM-L6-v2 (offline), which explains similarities.",
        epilog="examples:\n"
        "  semantic-pullbacks explain-text 'A man is playing a guitar.' --pair 'Someone plays music.'\n"
        "  semantic-pullbacks explain-text 'A moving, beautiful film.' "
        "--labels 'This review is positive.,This review is negative.'\n"
        "  semantic-pullbacks explain-text 'The capital of France is' --model gpt2 --continuation ' Paris'\n"
        "  semantic-pullbacks explain-text 'Great movie!' --model ./my-sentiment-model --target positive\n"
        "  semantic-pullbacks explain-text 'The capital of France is' --model ./my-llm --max-new-tokens 8\n\n"
        "files: OUT/text-<first words>-<hash>.html (.png, .json), the hash taken over the text and every option\n"
        "that changes the explanation: another text or target never overwrites them, the same command rewrites\n"
        "its own files. With --max-new-tokens, --per-token or an encoder-decoder the page is a heatmap (rows:\n"
        "generated or target tokens; columns: the tokens before them) and the JSON loads with TokenMatrix.load;\n"
        "otherwise the JSON is one result, read with TokenAttribution.load.",
    )
    parser.add_argument("text", help="the text to explain")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--pair", metavar="OTHER", help="embedding model: explain the similarity to this text")
    what.add_argument("--labels", metavar="A,B,...", help="embedding model: zero-shot label descriptions")
    what.add_argument("--continuation", metavar="TEXT", help="causal LM: explain the log-probability of this text")
    parser.add_argument("--target", help="class label or index (classifier), chosen label (--labels), next token (LM)")
    parser.add_argument("--foil", help="causal LM: explain logit(target) - logit(foil)")
    parser.add_argument("--per-token", action="store_true", help="with --continuation: one row per token")
    gen = parser.add_argument_group("generate and explain (causal LMs and encoder-decoders)")
    gen.add_argument("--max-new-tokens", type=positive_int, metavar="N", help="let the model write N tokens (greedy)")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding (needs --seed)")
    gen.add_argument("--seed", type=non_negative_int, help="the seed that makes --sample reproducible")
    parser.add_argument("--model", help="local Hugging Face model folder or hub name (default: embedded MiniLM)")
    parser.add_argument("--offline", action="store_true", help="never download; a missing model is an error")
    parser.add_argument("--method", default="SoftPullback", help="explanation method (default: %(default)s)")
    parser.add_argument("--tokens", action="store_true", help="show sub-word tokens instead of words")
    output = add_output_options(parser, default="explanations", what="output folder", batch_size=False)
    output.add_argument("--png", action="store_true", help="also write a PNG figure")
    output.add_argument("--json", action="store_true", help="also write the result as JSON")


def run(args: argparse.Namespace) -> int:
    get_text_method(args.method)  # validate before loading anything
    if not args.text.strip():
        raise InvalidInputError("TEXT is empty: give some text to explain")
    labels = [s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else None
    tm = load_text_model(args.model, offline=args.offline)
    target: Any = args.target
    if target is not None and target.isdigit() and tm.kind == "classifier":
        target = int(target)
    explainer = TextExplainer(tm, method=args.method)
    gen = generation(args, tm.kind, labels)
    with Output(args.out, 1, "explain-text") as out:  # after the arguments and the model proved good
        result = explain(explainer, args, target, labels, gen)
        level = "tokens" if args.tokens else "words"
        console = Console(highlight=False)
        console.print(matrix_rich(result, level) if isinstance(result, TokenMatrix) else to_rich(result, level))
        coverage = getattr(explainer, "coverage", None)
        if coverage is not None and coverage.unhandled:
            console.print(f"note: ops kept their ordinary gradient: {coverage.unhandled}")
        write(out, file_stem(args, tm.name), result, args, level)
    return 0


def generation(args: argparse.Namespace, kind: str, labels: Any) -> dict[str, Any] | None:
    """``attribute``'s generation keywords, checked before any file is written (None: no generation)."""
    if args.max_new_tokens is None and kind != "seq2seq":
        if args.sample or args.seed is not None:
            raise InvalidInputError("--sample and --seed choose how --max-new-tokens generates: add --max-new-tokens N")
        return None
    if args.pair or labels or args.target or args.foil:
        raise InvalidInputError("--max-new-tokens and encoder-decoders take no --pair, --labels, --target, --foil")
    settings: dict[str, Any] = {"do_sample": True} if args.sample else {}
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.max_new_tokens is not None:
        generation_settings(args.max_new_tokens, settings)  # sampling without a seed fails here
    elif args.continuation is None:
        raise InvalidInputError("an encoder-decoder needs decoder inputs: add --continuation or --max-new-tokens N")
    return {"continuation": args.continuation, "max_new_tokens": args.max_new_tokens, **settings}


def explain(explainer: TextExplainer, args: argparse.Namespace, target: Any, labels: Any, gen: Any) -> Any:
    """One TokenAttribution, or a TokenMatrix (generated tokens, --per-token, or an encoder-decoder)."""
    if gen is not None:
        return explainer.attribute(args.text, **gen)
    result = explainer.attribute(args.text, target, pair=args.pair, labels=labels, continuation=args.continuation,
                                 foil=args.foil, per_token=args.per_token)  # fmt: skip
    per_token = args.per_token and args.continuation is not None
    return TokenMatrix.from_results(result, args.continuation) if per_token else result


def write(out: Output, stem: str, result: Any, args: argparse.Namespace, level: str) -> None:
    """The page, and on request the PNG and the JSON: one file per text, which ``load`` reads back."""
    if isinstance(result, TokenMatrix):
        out.file(stem + ".html", lambda path: save_matrix_html(result, path, level))
        if args.png:
            out.file(stem + ".png", lambda path: save_matrix_png(result, path, level))
    else:
        out.file(stem + ".html", lambda path: save_html([result], path, level))
        if args.png:
            out.file(stem + ".png", lambda path: save_png([result], path, level))
    if args.json:
        out.file(stem + ".json", lambda path: result.save(path))


def file_stem(args: argparse.Namespace, model: str) -> str:
    """``text-<first words>-<hash>``: readable, and unique to the text and everything that changes its
    explanation (target, pair, labels, continuation, foil, method, model, level)."""
    what = [args.text, args.pair, args.labels, args.continuation, args.target, args.foil, args.per_token,
            args.method, model, args.tokens]  # fmt: skip
    if args.max_new_tokens is not None or args.sample or args.seed is not None:
        what += [args.max_new_tokens, args.sample, args.seed]  # older commands keep their file names
    digest = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:10]
    return f"text-{slug(' '.join(args.text.split()[:5]))[:40].strip('-') or 'x'}-{digest}"
