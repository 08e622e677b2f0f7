"""``semantic-pullbacks evaluate``: a benchmark table (methods × metrics, mean ± std, 95% CIs) in one command.

Images by default; ``--texts`` switches to texts (the text metrics, the embedded MiniLM unless ``--model``).
Rows are saved as they finish; Ctrl-C and rerunning the same command resumes where it stopped. ``--ablate``
sweeps temperatures, K and alpha of SoftPullback/PullbackAscent one at a time into one table. Under torchrun
(``torchrun --nproc-per-node N -m semantic_pullbacks evaluate ...``) every rank computes a share and rank 0
prints and writes the table.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from ..errors import InvalidInputError, SemanticPullbacksError
from ..evaluation import ABLATION_METHODS, EvaluationResult, MethodSpec, World, ablation_specs, evaluate, parse_ablation
from ..evaluation.images import ImageModality
from ..evaluation.job import JobFailedError
from ..evaluation.language import LanguageModality, is_causal_lm
from ..evaluation.modality import Modality, resolve_metrics
from ..evaluation.plan import resolve_methods
from ..evaluation.texts import TextModality
from ..text import load_text_model
from ._common import (
    RunSettings,
    add_command,
    add_model_options,
    add_output_options,
    add_settings_options,
    load_model,
    non_negative_int,
    positive_int,
    settings_from_args,
    split_list,
)
from ._output import output_folder

__all__ = ["register", "run"]

_DESCRIPTION = (
    "Score explanation methods with faithfulness, robustness, randomisation and localisation\n"
    "metrics on a set of images, or (--texts) with comprehensiveness, sufficiency, token deletion and the\n"
    "Sequence Pointing Game on a set of labelled texts. Writes per-item scores (scores.csv), summary.md\n"
    "(mean ± std, 95% bootstrap CIs, paired differences of each pullback method against its gradient\n"
    "counterpart), summary.json and chart.png. Interrupt with Ctrl-C and rerun the same command to resume."
)
_EPILOG = (
    "presets: --fast (default for the bundled examples) cuts sample counts (SmoothGrad 4 samples,\n"
    "FusionGrad 2x2, IG 4 steps, GradientShap 4, infidelity 1 draw, 4x coarser faithfulness steps,\n"
    "monotonicity 2 samples, max-sensitivity 2 samples); --paper (default for folders) uses the paper's\n"
    "exact settings.\n\nexamples:\n  semantic-pullbacks evaluate --out runs/default\n"
    "  semantic-pullbacks evaluate --images ~/imagenet/val --n-images 1000 --paper --device cuda --out runs/val\n"
    "  semantic-pullbacks evaluate --methods SoftPullback,Gradient --metrics infidelity,focus --out runs/q\n"
    "  semantic-pullbacks evaluate --ablate relu=0.3,0.6,3*std --ablate K=3,5 --out runs/ablation\n"
    "  semantic-pullbacks evaluate --texts examples --out runs/text      # 80 bundled reviews, MiniLM\n"
    "  semantic-pullbacks evaluate --texts reviews.csv --classes negative,positive \\\n"
    "      --template 'This review is {}.' --out runs/reviews\n"
    "  semantic-pullbacks evaluate --texts ./sst2 --split validation --model ./my-sst2-classifier --out runs/sst2\n"
    "  torchrun --nproc-per-node 8 -m semantic_pullbacks evaluate --images ~/imagenet/val \\\n"
    "      --labels ~/imagenet/ILSVRC2012_devkit_t12.tar.gz --paper --device cuda --out /shared/runs/val\n\n"
    "torchrun: each rank computes a share of the missing scores (on cuda:LOCAL_RANK with --device cuda; on CPU\n"
    "the cores are divided between the ranks of a machine); rank 0 writes the reports. Multi-node: torchrun's\n"
    "--nnodes/--rdzv-endpoint, with --out on a filesystem every node shares. Scores do not depend on the number\n"
    "of processes; interrupt the job and rerun it with any number to resume."
)
_MODEL_HELP = (
    "images: an embedded name, 'torchvision:NAME' or 'timm:NAME' (default: efficientnet_lite0); texts: "
    "a Hugging Face classifier or embedding model, a folder or hub name (default: the embedded all-MiniLM-L6-v2)"
)


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "evaluate", run, description=_DESCRIPTION, epilog=_EPILOG)
    add_model_options(parser, model_help=_MODEL_HELP)
    _add_benchmark_options(parser)
    _add_text_options(parser)
    add_settings_options(parser)
    _add_output_options(parser)
    _add_process_options(parser)


def _add_benchmark_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("benchmark")
    data.add_argument(
        "--images",
        default="examples",
        metavar="PATH",
        help="'examples' (the bundled labelled photos), a folder of images (targets: top-1), or an ImageFolder "
        "tree root/<wnid|class index|class name>/*.jpg (targets: the labels) (default: %(default)s)",
    )
    data.add_argument(
        "--labels",
        metavar="FILE",
        help="ImageNet's flat validation folder: the devkit's ILSVRC2012_validation_ground_truth.txt (with "
        "meta.mat beside it), the devkit folder or its .tar.gz",
    )
    data.add_argument(
        "--methods",
        action="append",
        metavar="A,B",
        help="methods to score (default: all; with --ablate: SoftPullback,PullbackAscent)",
    )
    data.add_argument(
        "--metrics",
        action="append",
        metavar="A,B",
        help="metrics to score (default: the paper's seven, then aliasing and top-layer randomisation; "
        "texts: all four)",
    )
    data.add_argument(
        "--n-images",
        type=positive_int,
        metavar="N",
        help="use a fixed subset of N images, drawn with --seed: the same subset for any number of processes, and "
        "a larger N keeps the smaller one's images (default: all)",
    )
    data.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="inputs per model call inside the metrics; larger is faster on a GPU (default: %(default)s)",
    )
    preset = data.add_mutually_exclusive_group()
    preset.add_argument("--fast", dest="preset", action="store_const", const="fast", help="reduced sample counts")
    preset.add_argument("--paper", dest="preset", action="store_const", const="paper", help="the paper's settings")
    data.add_argument(
        "--ablate",
        action="append",
        metavar="PARAM=V1,V2",
        help="sweep one setting of SoftPullback/PullbackAscent, one at a time: a temperature family "
        "(relu, gelu, silu, maxpool, attention, gate, norm; values as --temperatures takes them: 0.3, 3*std, "
        "'none' = ordinary gradient), K (ascent steps) or alpha; repeat for several",
    )


def _add_text_options(parser: argparse.ArgumentParser) -> None:
    texts = parser.add_argument_group("texts (--texts switches to a text benchmark)")
    texts.add_argument(
        "--texts",
        metavar="PATH",
        help="'examples' (80 bundled reviews), a .jsonl/.json/.csv/.tsv/.txt file of text,label rows, or a dataset "
        "folder (data files per split, class names from dataset_info.json or README.md)",
    )
    texts.add_argument("--split", help="the split of a dataset folder to use (train, validation, test)")
    texts.add_argument(
        "--classes",
        metavar="A,B",
        help="embedding models: the class names, in index order (default: the data's own, or its labels)",
    )
    texts.add_argument(
        "--template",
        metavar="TEXT",
        help="embedding models: a class's description, '{}' standing for its name (default: 'This example is {}.', "
        "or the data's own: 'This review is {}.' for the bundled reviews)",
    )
    texts.add_argument("--n-texts", type=positive_int, metavar="N", help="a fixed subset of N texts, drawn with --seed")
    texts.add_argument(
        "--n-pairs", type=positive_int, metavar="N", help="pairs joined for the pointing game (default: one per text)"
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    out = add_output_options(parser, default="evaluation", what="results folder", batch_size=False)
    out.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue the results in --out, skipping finished scores (default: on); --no-resume starts over "
        "(earlier results are moved to a previous-* sub-folder)",
    )
    out.add_argument(
        "--force",
        action="store_true",
        help="start over even if --out holds results computed with other settings (they are moved aside)",
    )
    out.add_argument("--no-chart", action="store_true", help="skip chart.png")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_process_options(parser: argparse.ArgumentParser) -> None:
    procs = parser.add_argument_group("processes")
    procs.add_argument(
        "--workers",
        type=non_negative_int,
        default=1,
        help="processes per rank decoding images ahead of use; 0 decodes in the rank itself (default: %(default)s)",
    )
    procs.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch threads per process (default: torch's own; under torchrun on CPU, the machine's cores divided "
        "between its ranks). Scores are bit-identical between runs with equal threads per process",
    )
    procs.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="under torchrun: how long the ranks wait for each other at start-up (default: %(default)s)",
    )


_IMAGE_ONLY = (("--images", "images", "examples"), ("--labels", "labels", None), ("--n-images", "n_images", None),
               ("--weights", "weights", None))  # fmt: skip
_TEXT_ONLY = (("--split", "split"), ("--classes", "classes"), ("--template", "template"), ("--n-texts", "n_texts"),
              ("--n-pairs", "n_pairs"))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    _check_modality(args)
    modality: type[Modality] = TextModality if args.texts is not None else ImageModality
    if args.texts is not None and args.model is not None and is_causal_lm(args.model):
        modality = LanguageModality  # type: ignore[assignment]
    if args.texts is None and args.model is None:
        args.model = "efficientnet_lite0"
    settings = settings_from_args(args)
    metrics = resolve_metrics(split_list(args.metrics), modality) if args.metrics else None
    methods = _methods(args, settings, modality)
    data = _data(args, modality)
    output_folder(args.out)
    with World.join(args.device, timeout=args.timeout, threads=args.threads) as world:
        model = _load(args, world.device)
        result = _evaluate(args, world, model, settings, methods, metrics, data)
    if isinstance(result, int):
        return result
    if world.is_main:
        _report(result, world)
    return 0


def _check_modality(args: argparse.Namespace) -> None:
    """Options of the other modality are refused by name, before anything loads."""
    if args.texts is not None:
        stray = [flag for flag, name, default in _IMAGE_ONLY if getattr(args, name) != default]
        if stray:
            raise InvalidInputError(f"{', '.join(stray)} cannot be used with --texts (a text benchmark)")
    else:
        stray = [flag for flag, name in _TEXT_ONLY if getattr(args, name) is not None]
        if stray:
            raise InvalidInputError(f"{', '.join(stray)} are for text benchmarks: add --texts PATH (or 'examples')")


def _methods(args: argparse.Namespace, settings: RunSettings, modality: type[Modality]) -> list[MethodSpec]:
    """The methods to score: named or the modality's defaults, or with ``--ablate`` one row per swept value."""
    names = split_list(args.methods)
    if not args.ablate:
        return resolve_methods(names if names else modality.default_methods())
    sweeps = parse_ablation(args.ablate)
    base = [s.method for s in resolve_methods(names)] if names else list(ABLATION_METHODS)
    return ablation_specs(sweeps, base, temperatures=settings.temperatures, ascent=_ascent(settings))


def _ascent(settings: RunSettings) -> dict[str, Any]:
    return {"steps": settings.steps, "alpha": settings.alpha}


def _data(args: argparse.Namespace, modality: type[Modality]) -> dict[str, Any]:
    """What to score on, as :func:`evaluate` takes it; a bad text file fails here, before the model loads."""
    if args.texts is None:
        return {"images": args.images, "n_images": args.n_images, "labels": args.labels}
    if modality is LanguageModality:
        given = {"classes": args.classes, "template": args.template, "n_pairs": args.n_pairs, "split": args.split}
        modality.prepare(texts=args.texts, n_texts=args.n_texts, **given)  # a bad file fails before the model loads
        return {"texts": args.texts, "n_texts": args.n_texts}
    return {
        "texts": modality.prepare(texts=args.texts, split=args.split)["texts"],
        "template": args.template,
        "n_texts": args.n_texts,
        "n_pairs": args.n_pairs,
        "classes": split_list([args.classes]) if args.classes else None,
    }


def _load(args: argparse.Namespace, device: Any) -> Any:
    if args.texts is not None:
        return load_text_model(args.model, offline=args.offline)
    return load_model(args, device=device)


def _evaluate(
    args: argparse.Namespace,
    world: World,
    model: Any,
    settings: RunSettings,
    methods: list[MethodSpec],
    metrics: list[str] | None,
    data: dict[str, Any],
) -> EvaluationResult | int:
    """The table, or the exit code of a run that was interrupted or failed on one of the ranks."""
    try:
        return evaluate(
            model,
            methods=methods,
            metrics=metrics,
            out=args.out,
            preset=args.preset,
            batch_size=args.batch_size,
            seed=args.seed,
            temperatures=settings.temperatures,
            ascent=_ascent(settings),
            ascent_temperatures=settings.ascent_temperatures,
            resume=args.resume,
            force=args.force,
            progress=not args.quiet,
            chart=not args.no_chart,
            workers=args.workers,
            world=world,
            **data,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished scores are saved in {args.out}/parts; run the same command again (with any "
            "number of processes) to resume",
            file=sys.stderr,
        )
        return 130
    except JobFailedError as err:
        print(f"error: {world.describe()} stopped: {err}", file=sys.stderr)
        return 1
    except SemanticPullbacksError:
        raise  # a user's mistake: one ``error:`` line and exit code 2 on every rank (see cli.main)
    except Exception as err:
        if world.size == 1:
            raise
        traceback.print_exc()
        print(f"error: {world.describe()} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def _report(result: EvaluationResult, world: World) -> None:
    """The table on stdout; the files written and the count of computed and resumed scores on stderr."""
    sys.stdout.write(result.markdown())
    for name in ("summary", "scores", "chart", "parquet"):
        if name in result.files:
            print(f"wrote {result.files[name]}", file=sys.stderr)
    print(
        f"{result.computed_rows} scores computed, {len(result.rows) - result.computed_rows} resumed, "
        f"{result.seconds:.0f} s" + ("" if world.size == 1 else f" on {world.size} processes"),
        file=sys.stderr,
    )
