"""Hostile and unusual inputs, tried as a new user would: each gets a typed error naming what to do, or a result
checked against a reference. None may crash inside torch or return a silently wrong map.

Every case is one row of ``CASES``: ``(id, run, expected)`` where ``expected`` is ``(ErrorClass, phrase)`` or
``"ok"`` (``run`` then checks its result against a reference itself).
"""

from __future__ import annotations

import copy
import json
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.checkpoint import checkpoint

from semantic_pullbacks import (
    ImageLoadError,
    InvalidInputError,
    NotDifferentiableError,
    Relative,
    SemanticPullbacksError,
    Temperatures,
    UnexpectedArgumentError,
    UnknownClassError,
    UnsupportedModelError,
)
from semantic_pullbacks.calibration import load_settings
from semantic_pullbacks.images import load_image
from semantic_pullbacks.methods import (
    METHODS,
    DeepLift,
    DoublePullback,
    Explainer,
    FusionGrad,
    Gradient,
    GuidedGradCam,
    IntegratedGradients,
    PullbackAscent,
    SoftPullback,
)
from small_methods import ignoring_captum_notes, small_explainer
from small_methods import small_net as net

torch.set_num_threads(1)  # the cases are tiny; threads only add noise on a shared machine


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def sp(x: Any = X, target: Any = 1, model: Any = None, temperatures: Any = None) -> torch.Tensor:
    return SoftPullback(net() if model is None else model, temperatures).attribute(x, target=target)


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# --- tensors ---------------------------------------------------------------------------------------------------
def fp64_equals_fp32() -> None:
    model = net()
    close(SoftPullback(copy.deepcopy(model).double()).attribute(X.double(), target=1).float(), sp(), 1e-4, 1e-6)


def channels_last_equals_contiguous() -> None:
    close(sp(X.to(memory_format=torch.channels_last)), sp())


def non_contiguous_equals_contiguous() -> None:
    transposed = X.transpose(2, 3).contiguous().transpose(2, 3)
    assert not transposed.is_contiguous()
    close(sp(transposed), sp())


def inference_tensor_equals_normal() -> None:
    with torch.inference_mode():
        xi = X.clone()
    close(sp(xi), sp())


def under_inference_mode() -> None:
    with torch.inference_mode():
        sp()


def batch_of_one_equals_its_row() -> None:
    temperatures = {"relu": Relative(2.0), "gelu": Relative(1.0), "maxpool": Relative(0.5)}
    both = sp(temperatures=temperatures)
    close(sp(X[1:], temperatures=temperatures), both[1:])


# --- targets ---------------------------------------------------------------------------------------------------
def target_tensor_equals_per_sample_ints() -> None:
    both = sp(target=torch.tensor([3, 0]))
    close(both[:1], sp(X[:1], target=3))
    close(both[1:], sp(X[1:], target=0))


def direction_target_equals_class_target() -> None:
    one_hot = torch.zeros(2, 5)
    one_hot[:, 4] = 1.0
    close(sp(target=one_hot), sp(target=4))


def callable_target_equals_class_target() -> None:
    close(sp(target=lambda out: out[:, 2]), sp(target=2))


# --- temperatures ----------------------------------------------------------------------------------------------
def integer_zero_is_the_gradient() -> None:
    close(sp(temperatures={"relu": 0, "maxpool": 0, "gelu": None}), Gradient(net()).attribute(X, target=1))


def settings_file_with_integer_zero(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"temperatures": {"relu": 0, "maxpool": 0, "gelu": None}}))
    close(sp(temperatures=load_settings(path).temperatures), Gradient(net()).attribute(X, target=1))


def settings_file(text: str) -> Callable[[Path], Any]:
    def run(tmp_path: Path) -> Any:
        path = tmp_path / "s.json"
        path.write_text(text)
        return load_settings(path)

    return run


# --- models ----------------------------------------------------------------------------------------------------
class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = net()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out, out.softmax(-1)


class DictOut(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"logits": self.net(x), "features": x.mean((2, 3))}


class DictWithoutLogits(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"scores": self.net(x)}


class Checkpointed(TupleOut):
    def __init__(self, use_reentrant: bool) -> None:
        super().__init__()
        self.use_reentrant = use_reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = checkpoint(self.net[:6], x, use_reentrant=self.use_reentrant)
        return self.net[6:](h)


class CheckpointedBody(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = net()[:6], net()[6:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(checkpoint(self.body, x, use_reentrant=True))


class NoGradForward(TupleOut):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with torch.no_grad():
            return self.net(x)


class DetachesInput(TupleOut):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(torch.from_numpy(x.detach().numpy()))


class NoBatchDim(TupleOut):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(x).sum(0)


def tuple_output_explains_the_first() -> None:
    close(sp(model=TupleOut().eval()), sp())


def dict_output_explains_the_logits() -> None:
    close(sp(model=DictOut().eval()), sp())


def checkpointed_equals_plain(use_reentrant: bool) -> Callable[[], None]:
    def run() -> None:
        close(sp(model=Checkpointed(use_reentrant).eval()), sp())

    return run


def data_parallel_on_cpu_equals_the_module() -> None:
    close(sp(model=nn.DataParallel(net()).eval()), sp())


def scripted_net() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(net())


def compiled_net() -> nn.Module:
    model = net()
    model.compile()
    return model


def inference_mode_parameters() -> Any:
    with torch.inference_mode():
        model = net()
    return sp(model=model)


def train_mode_bn_is_restored_and_warned() -> None:
    model = net().train()
    state = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match=r"training mode \(1\)"):
        PullbackAscent(model, steps=3).attribute(X, target=1)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.training


def dropout_in_train_mode_warns() -> None:
    model = nn.Sequential(net(), nn.Dropout(0.5))  # top level in eval mode, only the dropout in training mode
    model.eval()[1].train()
    with pytest.warns(UserWarning, match=r"training mode \(1\)"):
        sp(model=model)


# --- files -----------------------------------------------------------------------------------------------------
def png_bytes(width: int, height: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def decompression_bomb(tmp_path: Path) -> Any:
    """A 50 000 x 50 000 PNG header over a few kilobytes: refused before anything is decoded."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(50_000, 50_000, bytes(50_001) * 4))
    return load_image(path)


def one_pixel_image(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "one.png")
    x = load_image(tmp_path / "one.png", size=8)[None]
    assert x.shape == (1, 3, 8, 8)
    attr = sp(x, target=0)
    assert attr.shape == x.shape and bool(torch.isfinite(attr).all())


def truncated_png(tmp_path: Path) -> Any:
    Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    return load_image(tmp_path / "cut.png")


def text_as_image(tmp_path: Path) -> Any:
    (tmp_path / "photo.jpg").write_text("not a JPEG at all")
    return load_image(tmp_path / "photo.jpg")


Expected = tuple[type[BaseException], str] | str
CASES: list[tuple[str, Callable[..., Any], Expected]] = [
    # tensors: shapes, dtypes, layouts, values
    ("unbatched image", lambda: sp(X[0]), (InvalidInputError, r"inputs\[None\]")),
    ("1-d input", lambda: sp(torch.rand(3)), (InvalidInputError, "batch dimension")),
    ("5-d input into a 2-d conv", lambda: sp(X[None]), (InvalidInputError, r"\(batch, channels, height, width\)")),
    ("empty batch", lambda: sp(X[:0]), (InvalidInputError, "empty batch")),
    ("zero-size image", lambda: sp(torch.rand(1, 3, 0, 0)), (InvalidInputError, "no values")),
    ("float16 into float32 model", lambda: sp(X.half()), (InvalidInputError, r"float16 .*inputs\.float\(\)")),
    ("bfloat16 into float32 model", lambda: sp(X.bfloat16()), (InvalidInputError, r"bfloat16 .*inputs\.float\(\)")),
    ("float64 into float32 model", lambda: sp(X.double()), (InvalidInputError, "float64")),
    ("float64 model and input", fp64_equals_fp32, "ok"),
    ("int input", lambda: sp(X.int()), (InvalidInputError, "floating-point")),
    ("bool input", lambda: sp(X > 0), (InvalidInputError, "floating-point")),
    ("complex input", lambda: sp(X.to(torch.complex64)), (InvalidInputError, "floating-point")),
    ("numpy input", lambda: sp(X.numpy()), (InvalidInputError, r"torch\.Tensor")),
    ("channels_last", channels_last_equals_contiguous, "ok"),
    ("non-contiguous", non_contiguous_equals_contiguous, "ok"),
    ("NaN pixel", lambda: sp(X.clone().index_fill_(3, torch.tensor([2]), float("nan"))), (InvalidInputError, "NaN")),
    ("inf pixel", lambda: sp(X * float("inf")), (InvalidInputError, "Inf")),
    ("meta-device input", lambda: sp(X.to("meta")), (InvalidInputError, "meta device")),
    ("inference tensor", inference_tensor_equals_normal, "ok"),
    ("inside torch.inference_mode", under_inference_mode, (NotDifferentiableError, "inference_mode")),
    ("batch of one", batch_of_one_equals_its_row, "ok"),
    # targets
    ("target out of range", lambda: sp(target=5), (UnknownClassError, "out of range")),
    ("negative target", lambda: sp(target=-1), (UnknownClassError, "out of range")),
    ("too many targets", lambda: sp(target=[0, 1, 2]), (InvalidInputError, "3 targets for a batch of 2")),
    ("tuple target of the wrong length", lambda: sp(target=(1, 2, 3)), (SemanticPullbacksError, "target")),
    ("string target", lambda: sp(target="cat"), (InvalidInputError, "LoadedModel.target")),
    ("float target", lambda: sp(target=1.5), (InvalidInputError, "unsupported target")),
    ("bool target", lambda: sp(target=True), (InvalidInputError, "not a bool")),
    ("float tensor target of the wrong shape", lambda: sp(target=torch.ones(2)), (InvalidInputError, "direction")),
    ("per-sample tensor target", target_tensor_equals_per_sample_ints, "ok"),
    ("one-hot direction target", direction_target_equals_class_target, "ok"),
    ("callable target", callable_target_equals_class_target, "ok"),
    ("callable of the wrong shape", lambda: sp(target=lambda o: o), (InvalidInputError, "one scalar per sample")),
    ("callable ignoring the output", lambda: sp(target=lambda o: torch.ones(2)), (InvalidInputError, "output")),
    # temperatures
    ("integer 0", integer_zero_is_the_gradient, "ok"),
    ("settings file with integer 0", settings_file_with_integer_zero, "ok"),
    ("negative", lambda: sp(temperatures={"relu": -0.5}), (InvalidInputError, "non-negative")),
    ("NaN", lambda: sp(temperatures={"relu": float("nan")}), (InvalidInputError, "non-negative finite")),
    ("inf", lambda: sp(temperatures={"gelu": float("inf")}), (InvalidInputError, "non-negative finite")),
    ("string", lambda: sp(temperatures={"relu": "warm"}), (InvalidInputError, "cannot read temperature 'warm'")),
    ("unknown family", lambda: sp(temperatures={"rleu": 0.05}), (InvalidInputError, "did you mean 'relu'")),
    ("relative attention", lambda: Temperatures(attention=Relative(2)), (InvalidInputError, "absolute")),
    ("Relative(min_tau=0)", lambda: Relative(2.0, min_tau=0), (InvalidInputError, "min_tau")),
    ("temperatures as a list", lambda: sp(temperatures=[0.5]), (InvalidInputError, "mapping")),
    ("alpha as a string", lambda: PullbackAscent(net(), alpha="20"), (InvalidInputError, "alpha")),
    ("alpha NaN", lambda: DoublePullback(net(), alpha=float("nan")), (InvalidInputError, "alpha")),
    ("zero steps", lambda: PullbackAscent(net(), steps=0), (InvalidInputError, "steps")),
    ("misspelt Captum setting", lambda: IntegratedGradients(net(), n_stepz=3), (UnexpectedArgumentError, "n_stepz")),
    # models
    ("TorchScript module", lambda: SoftPullback(scripted_net()), (UnsupportedModelError, "TorchScript")),
    ("torch.compile'd", lambda: SoftPullback(torch.compile(net())), (UnsupportedModelError, "compile")),
    ("compiled in place", lambda: SoftPullback(compiled_net()), (UnsupportedModelError, "compiled in place")),
    ("train mode BatchNorm", train_mode_bn_is_restored_and_warned, "ok"),
    ("dropout in training mode", dropout_in_train_mode_warns, "ok"),
    ("tuple output", tuple_output_explains_the_first, "ok"),
    ("dict output", dict_output_explains_the_logits, "ok"),
    ("dict without logits", lambda: sp(model=DictWithoutLogits().eval()), (InvalidInputError, "output_selector")),
    ("reentrant checkpointing", checkpointed_equals_plain(True), "ok"),
    ("non-reentrant checkpointing", checkpointed_equals_plain(False), "ok"),
    ("reentrant checkpointing under hooks", lambda: DeepLift(CheckpointedBody().eval()).attribute(X, target=1),
     (UnsupportedModelError, r"submodule 'body' \(Sequential\) under reentrant .*use_reentrant=False")),
    ("DataParallel", data_parallel_on_cpu_equals_the_module, "ok"),
    ("forward under no_grad", lambda: sp(model=NoGradForward().eval()), (UnsupportedModelError, "no_grad")),
    ("forward detaching its input", lambda: sp(model=DetachesInput().eval()), (UnsupportedModelError, "detach")),
    ("output without batch dim", lambda: sp(model=NoBatchDim().eval()), (InvalidInputError, "batch dimension")),
    ("inference-mode parameters", inference_mode_parameters, (NotDifferentiableError, "inference")),
    ("not a model", lambda: SoftPullback("resnet50"), (UnsupportedModelError, "nn.Module or a callable")),
    # files
    ("missing image", lambda tmp_path: load_image(tmp_path / "nope.png"), (ImageLoadError, "not found")),
    ("folder as image", lambda tmp_path: load_image(tmp_path), (ImageLoadError, "not a regular file")),
    ("text file as image", text_as_image, (ImageLoadError, "not a recognised image")),
    ("truncated PNG", truncated_png, (ImageLoadError, "corrupt or truncated")),
    ("1x1 image", one_pixel_image, "ok"),
    ("decompression bomb", decompression_bomb, (ImageLoadError, "pixels")),
    ("missing settings file", lambda tmp_path: load_settings(tmp_path / "x.json"), (InvalidInputError, "not exist")),
    ("settings: not JSON", settings_file("{relu: 0.5"), (InvalidInputError, "not valid JSON")),
    ("settings: a list", settings_file("[0.5]"), (InvalidInputError, "JSON object")),
    ("settings: typo in a key", settings_file('{"temperature": {}}'), (InvalidInputError, "unknown key")),
    ("settings: typo in ascent family", settings_file('{"ascent": {"temperatures": {"rleu": 1}}}'),
     (InvalidInputError, "did you mean 'relu'")),
    ("settings: negative", settings_file('{"temperatures": {"relu": -1}}'), (InvalidInputError, "non-negative")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "run", "expected"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input(name, run, expected, tmp_path):
    call = (lambda: run(tmp_path)) if "tmp_path" in run.__code__.co_varnames[: run.__code__.co_argcount] else run
    if expected == "ok":
        call()
        return
    error, phrase = expected
    assert issubclass(error, SemanticPullbacksError)
    with pytest.raises(error, match=phrase):
        call()


#: every error a bad tensor, target, setting, model or file can raise (loading a model by name has its own tests)
INPUT_ERRORS = {
    InvalidInputError, UnknownClassError, NotDifferentiableError, UnsupportedModelError, ImageLoadError,
    UnexpectedArgumentError,
}  # fmt: skip


def _body(run: Callable[..., Any]) -> tuple[Any, ...]:
    """What a case does: its code, constants, names and the values it closed over (not its row's name)."""
    code = run.__code__
    return code.co_code, code.co_consts, code.co_names, tuple(repr(c.cell_contents) for c in run.__closure__ or ())


def test_the_cases_are_distinct_and_reach_every_input_error():
    """A row copied under another name tests nothing new, and an error type no row raises is untested here."""
    names = [name for name, _, _ in CASES]
    assert sorted(name for name in names if names.count(name) > 1) == []
    bodies = [(_body(run), repr(expected)) for _, run, expected in CASES]
    assert [name for name, body in zip(names, bodies) if bodies.count(body) > 1] == []
    raised = {expected[0] for _, _, expected in CASES if expected != "ok"}
    assert INPUT_ERRORS - raised == set()


# --- output folders on the command line ------------------------------------------------------------------------
def run_cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from semantic_pullbacks.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.mark.parametrize("command", ["explain", "compare", "counterfactuals", "calibrate", "evaluate", "explain-text"])
def test_unwritable_output_folder_is_exit_2_with_an_error_line(command, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = {"evaluate": ["evaluate", "--images", "examples"], "calibrate": ["calibrate", "example:chelsea"],
            "explain-text": ["explain-text", "A film.", "--pair", "A movie."]}  # fmt: skip
    base = argv.get(command, [command, "example:chelsea"])
    code, err = run_cli(*base, "--out", str(blocker / "sub"))
    assert code == 2, err
    assert err.startswith("error: --out") and "Not a directory" in err and "Traceback" not in err
    code, err = run_cli(*base, "--out", str(blocker))
    assert code == 2 and err.startswith("error: --out") and "is a file" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/sys is read-only for everyone on Linux only")
def test_output_folder_on_a_read_only_file_system():
    from semantic_pullbacks.cli._output import output_folder

    with pytest.raises(InvalidInputError, match=r"--out '/sys/semantic-pullbacks-test': cannot write there"):
        output_folder("/sys/semantic-pullbacks-test")


# --- every method ----------------------------------------------------------------------------------------------
# The model, tensor and target cases above, tried on each of the 17 methods: the Captum-based ones reach the model
# through Captum's own code (noise, interpolation paths, baselines, hooks), which is where torch's own errors used
# to surface.
def explainer(method: str, model: Any = None, **settings: Any) -> Explainer:
    return small_explainer(method, net() if model is None else model, **settings)


def explain(method: str, x: Any = X, target: Any = 1, model: Any = None, **settings: Any) -> torch.Tensor:
    return explainer(method, model, **settings).attribute(x, target=target)


def same_map(a: torch.Tensor, b: torch.Tensor, relative: float = 1e-5) -> None:
    """Equal up to ``relative`` of the reference's largest value (maps are compared as pictures, not per pixel)."""
    assert a.shape == b.shape
    scale = float(b.abs().max())
    assert scale > 0, "the reference map is all zeros"
    torch.testing.assert_close(a, b, rtol=0, atol=relative * scale)


def equals_on_the_plain_model(make: Callable[[], nn.Module], relative: float = 1e-5) -> Callable[[str], None]:
    def run(method: str) -> None:
        same_map(explain(method, model=make()), explain(method), relative)

    return run


def channels_last_equals_contiguous_for(method: str) -> None:
    same_map(explain(method, X.to(memory_format=torch.channels_last)), explain(method))


def direction_target_equals_class_targets_for(method: str) -> None:
    """Captum expands the batch (noise samples, path steps, baselines): each sample's direction must follow it."""
    directions = torch.zeros(2, 5)
    directions[0, 3] = directions[1, 0] = 1.0
    same_map(explain(method, target=directions), explain(method, target=torch.tensor([3, 0])))


class Softmaxed(TupleOut):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(x).softmax(-1)


def output_selector_picks_the_second_output(method: str) -> None:
    same_map(explain(method, model=TupleOut().eval(), output_selector=1), explain(method, model=Softmaxed().eval()))


def output_selector_picks_a_key(method: str) -> None:
    same_map(explain(method, model=DictWithoutLogits().eval(), output_selector="scores"), explain(method))


def train_mode_is_restored_and_warned(method: str) -> None:
    model = net().train()
    state = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match=r"training mode \(1\)"):
        explain(method, model=model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.training


def dropout_in_train_mode_is_warned(method: str) -> None:
    model = nn.Sequential(net(), nn.Dropout(0.5)).eval()
    model[1].train()
    with pytest.warns(UserWarning, match=r"training mode \(1\)"):
        explain(method, model=model)


#: Methods whose Captum implementation hooks the model's modules.
HOOKING_METHODS = (DeepLift, GuidedGradCam)


def checkpointing(use_reentrant: bool) -> Callable[[str], None]:
    """Methods that hook the model's modules cannot see inside a reentrant checkpoint (its first forward runs under
    ``no_grad``): refused. Otherwise the map is the unchecked model's."""

    def run(method: str) -> None:
        if use_reentrant and issubclass(METHODS[method], HOOKING_METHODS):
            with pytest.raises(UnsupportedModelError, match="use_reentrant=False"):
                explain(method, model=Checkpointed(True).eval())
            return
        # guided backprop's hooks clone each ReLU's input, so on the plain model the soft ReLU keeps its gate in
        # float16 (<= 1.3e-4 off, engine/rules/activations.py); under a checkpoint it keeps float32
        relative = 3e-4 if method == "GuidedPullbackCam" else 1e-5
        equals_on_the_plain_model(lambda: Checkpointed(use_reentrant).eval(), relative)(method)

    return run


def function_as_the_model_for(method: str) -> None:
    """A plain function is explained like the module it calls, except by methods that need the module itself."""
    model = net()
    if issubclass(METHODS[method], (*HOOKING_METHODS, FusionGrad)):
        with pytest.raises(UnsupportedModelError, match=r"needs an nn\.Module"):
            explain(method, model=lambda x: model(x))
        return
    same_map(explain(method, model=lambda x: model(x)), explain(method))


def under_inference_mode_for(method: str) -> None:
    with torch.inference_mode():
        explain(method)


MethodCase = tuple[str, Callable[[str], Any], Expected]
EVERY_METHOD: list[MethodCase] = [
    # tensors
    ("unbatched image", lambda m: explain(m, X[0]), (InvalidInputError, r"inputs\[None\]")),
    ("NaN pixel", lambda m: explain(m, X.clone().index_fill_(3, torch.tensor([2]), float("nan"))),
     (InvalidInputError, "NaN")),
    ("int input", lambda m: explain(m, X.int()), (InvalidInputError, "floating-point")),
    ("float16 into float32 model", lambda m: explain(m, X.half()), (InvalidInputError, r"inputs\.float\(\)")),
    ("meta-device input", lambda m: explain(m, X.to("meta")), (InvalidInputError, "meta device")),
    ("inside torch.inference_mode", under_inference_mode_for, (NotDifferentiableError, "inference_mode")),
    ("channels_last", channels_last_equals_contiguous_for, "ok"),
    # targets
    ("target out of range", lambda m: explain(m, target=5), (UnknownClassError, "out of range")),
    ("negative target", lambda m: explain(m, target=-1), (UnknownClassError, "out of range")),
    ("too many targets", lambda m: explain(m, target=[0, 1, 2]), (InvalidInputError, "3 targets for a batch of 2")),
    ("bool target", lambda m: explain(m, target=True), (InvalidInputError, "not a bool")),
    ("string target", lambda m: explain(m, target="cat"), (InvalidInputError, "LoadedModel.target")),
    ("per-sample direction target", direction_target_equals_class_targets_for, "ok"),
    ("numpy integer target", lambda m: same_map(explain(m, target=np.int64(2)), explain(m, target=2)), "ok"),
    ("callable target", lambda m: same_map(explain(m, target=lambda o: o[:, 2]), explain(m, target=2)), "ok"),
    ("callable of the wrong shape", lambda m: explain(m, target=lambda o: o),
     (InvalidInputError, r"one scalar per sample, shape \(2,\)")),
    ("callable ignoring the output", lambda m: explain(m, target=lambda o: torch.zeros(o.shape[0])),
     (InvalidInputError, "does not depend on the model's output")),
    # models
    ("TorchScript module", lambda m: explainer(m, scripted_net()), (UnsupportedModelError, "TorchScript")),
    ("torch.compile'd", lambda m: explainer(m, torch.compile(net())), (UnsupportedModelError, "compile")),
    ("compiled in place", lambda m: explainer(m, compiled_net()), (UnsupportedModelError, "compiled in place")),
    ("plain function as the model", function_as_the_model_for, "ok"),
    ("train mode BatchNorm", train_mode_is_restored_and_warned, "ok"),
    ("dropout in training mode", dropout_in_train_mode_is_warned, "ok"),
    ("tuple output", equals_on_the_plain_model(lambda: TupleOut().eval()), "ok"),
    ("dict output", equals_on_the_plain_model(lambda: DictOut().eval()), "ok"),
    ("output_selector index", output_selector_picks_the_second_output, "ok"),
    ("output_selector key", output_selector_picks_a_key, "ok"),
    ("dict without logits", lambda m: explain(m, model=DictWithoutLogits().eval()),
     (InvalidInputError, "output_selector")),
    ("forward under no_grad", lambda m: explain(m, model=NoGradForward().eval()), (UnsupportedModelError, "no_grad")),
    ("forward detaching its input", lambda m: explain(m, model=DetachesInput().eval()),
     (UnsupportedModelError, "detach")),
    ("output without batch dim", lambda m: explain(m, model=NoBatchDim().eval()),
     (InvalidInputError, "batch dimension")),
    ("reentrant checkpointing", checkpointing(use_reentrant=True), "ok"),
    ("non-reentrant checkpointing", checkpointing(use_reentrant=False), "ok"),
]  # fmt: skip


@ignoring_captum_notes
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("name", "run", "expected"), EVERY_METHOD, ids=[c[0] for c in EVERY_METHOD])
def test_hostile_input_for_every_method(name, run, expected, method):
    if expected == "ok":
        run(method)
        return
    error, phrase = expected
    with pytest.raises(error, match=phrase):
        run(method)
