"""Internal targets (Neuron, Direction, Feature) and layer attributions: the pullback of a unit is the pullback of
the network cut at its layer, the forward pass and the model are left as they were, and every bad input is a typed
error."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import timm
import torch
import torchvision
import transformers
from torch import nn

from semantic_pullbacks import (
    Direction,
    Feature,
    Gradient,
    GradientAscent,
    IntegratedPullbacks,
    Neuron,
    PullbackAscent,
    SmoothPullback,
    SoftPullback,
    pullback_mode,
)
from semantic_pullbacks.errors import InvalidInputError, UnknownLayerError
from semantic_pullbacks.methods import layer_names, target_value
from small_methods import ignoring_captum_notes, small_net


def _vision(lib: str, name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    if lib == "torchvision":
        return getattr(torchvision.models, name)(num_classes=10, **kwargs).eval()
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


# (library, model, layer, channel, constructor kwargs): a ResNet stage, an inverted-residual block with
# hard-swish and squeeze-excitation gates, a ConvNeXt stage (LayerNorm, GELU) and a ViT block (tokens, channels last)
ARCHITECTURES = [
    ("torchvision", "resnet18", "layer2", 5, {}),
    ("torchvision", "mobilenet_v3_small", "features.4", 7, {}),
    ("timm", "convnext_atto", "stages.1", 3, {}),
    ("timm", "vit_tiny_patch16_224", "blocks.1", 11, {"img_size": 32, "patch_size": 8}),
]


def reference(model: nn.Module, layer: str, x: torch.Tensor, score, soft: bool = True) -> torch.Tensor:
    """The cut network's pullback by hand: a hook keeps the layer's output, autograd goes back from it."""
    kept = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    x = x.clone().requires_grad_(True)
    try:
        with pullback_mode() if soft else torch.enable_grad():
            model(x)
            (g,) = torch.autograd.grad(score(kept["a"]).sum(), x)
    finally:
        handle.remove()
    return g


def _channel_mean(c: int, dim: int = 1):
    return lambda a: a.movedim(dim, -1)[..., c].flatten(1).mean(1)


@pytest.mark.parametrize(
    ("lib", "name", "layer", "channel", "kwargs"), ARCHITECTURES, ids=[a[1] for a in ARCHITECTURES]
)
def test_neuron_pullback_is_the_cut_networks(lib, name, layer, channel, kwargs) -> None:
    model = _vision(lib, name, **kwargs)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    dim = -1 if "vit" in name else 1
    want = reference(model, layer, x, _channel_mean(channel, dim))
    got = SoftPullback(model).attribute(x, target=Neuron(layer, channel=channel))
    assert torch.equal(got, want)
    again = SoftPullback(model).attribute(x, target=Neuron(layer, channel=channel))  # the forward now stops early
    assert torch.equal(again, want)
    assert all(not m._forward_hooks for m in model.modules())


def test_hugging_face_hidden_state_neuron_is_the_cut_networks() -> None:
    config = transformers.BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2,
                                     vocab_size=100, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()

    class Embedded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = bert

        def forward(self, emb: torch.Tensor) -> torch.Tensor:
            return self.model(inputs_embeds=emb).last_hidden_state.mean(1)

    wrapped = Embedded().eval()
    emb = torch.randn(2, 6, 32)
    target = Neuron("encoder.layer.0", index=(2, 9))  # token 2, hidden dimension 9; the wrapper's names work too
    want = reference(wrapped, "model.encoder.layer.0", emb, lambda a: (a[0] if isinstance(a, tuple) else a)[:, 2, 9])
    assert torch.equal(SoftPullback(wrapped).attribute(emb, target=target), want)


def test_gradient_methods_equal_autograd_and_captum_neuron_gradient() -> None:
    from captum.attr import LayerGradientXActivation, NeuronGradient

    model = small_net()
    x = torch.randn(3, 3, 8, 8)
    want = reference(model, "4", x, lambda a: a[:, 2, 1, 3], soft=False)
    got = Gradient(model).attribute(x, target=Neuron("4", channel=2, position=(1, 3)))
    assert torch.equal(got, want)
    captum = NeuronGradient(model, model[4]).attribute(x.clone().requires_grad_(True), neuron_selector=(2, 1, 3))
    torch.testing.assert_close(got, captum, rtol=0, atol=0)
    hard = SoftPullback(model, {"relu": 0.0, "gelu": 0.0, "maxpool": 0.0})
    hard_map = hard.attribute(x, target=Neuron("4", channel=2, position=(1, 3)))
    torch.testing.assert_close(hard_map, want, rtol=1e-6, atol=1e-7)
    # layer attributions: Captum's LayerGradient (LayerGradientXActivation without the activation factor)
    layer_map = Gradient(model).attribute(x, target=1, layer="1")
    layer_captum = LayerGradientXActivation(model, model[1], multiply_by_inputs=False).attribute(x, target=1)
    torch.testing.assert_close(layer_map, layer_captum, rtol=1e-6, atol=0)


def test_layer_attribution_is_the_pullback_to_the_layer_output() -> None:
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    kept = {}
    handle = model[3].register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    with pullback_mode():
        out = model(x.requires_grad_(True))
        (want,) = torch.autograd.grad(out[:, 4].sum(), kept["a"])
    handle.remove()
    got = SoftPullback(model).attribute(x, target=4, layer="3")
    assert torch.equal(got, want)
    assert all(not m._forward_hooks for m in model.modules())


def test_direction_is_linear_in_the_channels() -> None:
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    v = torch.randn(6, dtype=torch.float64).float()
    sp = SoftPullback(model)
    direction = sp.attribute(x, target=Direction("4", v))
    channels = torch.stack([sp.attribute(x, target=Neuron("4", channel=c)) for c in range(6)])
    torch.testing.assert_close(direction, torch.einsum("c,c...->...", v, channels), rtol=1e-5, atol=1e-7)


def test_feature_of_a_sparse_autoencoder_is_its_latents_pullback() -> None:
    model = small_net()
    torch.manual_seed(3)
    w_enc, b_enc = torch.randn(6, 16), torch.randn(16)

    def encode(a: torch.Tensor) -> torch.Tensor:  # an SAE encoder over channels, per position
        return torch.relu(a.movedim(1, -1) @ w_enc + b_enc)

    x = torch.randn(2, 3, 8, 8)
    want = reference(model, "4", x, lambda a: encode(a)[..., 5].flatten(1).mean(1))
    assert torch.equal(SoftPullback(model).attribute(x, target=Feature("4", encode, 5)), want)
    at = reference(model, "4", x, lambda a: encode(a)[:, 1, 2, 5])
    assert torch.equal(SoftPullback(model).attribute(x, target=Feature("4", encode, (1, 2, 5))), at)


def test_forward_up_to_the_layer_is_bit_identical_and_the_model_left_as_found() -> None:
    model = _vision("torchvision", "resnet18")
    x = torch.randn(2, 3, 32, 32)
    plain = {}
    handle = model.layer3.register_forward_hook(lambda m, i, o: plain.setdefault("a", o.detach()))
    with torch.no_grad():
        before = model(x)
    handle.remove()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen = {}

    def read(a: torch.Tensor) -> torch.Tensor:
        seen["a"] = a.detach()
        return a[:, 0].flatten(1).mean(1)

    SoftPullback(model).attribute(x, target=Feature("layer3", lambda a: a.flatten(1), (0,)))
    SoftPullback(model).attribute(x, target=Feature("layer3", lambda a: read(a)[:, None], 0))
    assert torch.equal(seen["a"], plain["a"])
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())


def test_hooks_are_removed_when_the_call_fails() -> None:
    model = small_net()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(InvalidInputError, match="out of range"):
        SoftPullback(model).attribute(x, target=Neuron("4", channel=6))
    with pytest.raises(RuntimeError, match="boom"):
        SoftPullback(model).attribute(x, target=Feature("4", lambda a: (_ for _ in ()).throw(RuntimeError("boom")), 0))
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.equal(model(x), small_net()(x))


@ignoring_captum_notes
@pytest.mark.parametrize("method", [SoftPullback, Gradient, IntegratedPullbacks, SmoothPullback])
def test_batch_equals_single(method) -> None:
    model = small_net()
    x = torch.randn(3, 3, 8, 8)
    settings = {"n_steps": 3} if method is IntegratedPullbacks else {}
    settings = {"nt_samples": 2, "seed": 0, "stdevs": 0.0} if method is SmoothPullback else settings
    target = Neuron("4", channel=1)
    batch = method(model, **settings).attribute(x, target=target)
    singles = torch.cat([method(model, **settings).attribute(x[i : i + 1], target=target) for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-6)


def test_accentuation_raises_the_unit() -> None:
    model = small_net()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    target = Neuron("4", channel=0)
    for ascent in (PullbackAscent(model, steps=3, alpha=1.0), GradientAscent(model, steps=3, alpha=1.0)):
        result = ascent.run(x, target=target)
        assert bool((result.scores[-1] > result.scores[0]).all())
        kept: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            h = model[4].register_forward_hook(lambda m, i, o, kept=kept: kept.setdefault("a", o))
            model(result.counterfactual)
            h.remove()
        torch.testing.assert_close(result.scores[-1], kept["a"][:, 0].flatten(1).mean(1))


class _Shared(nn.Module):
    """One block applied twice, a layer never reached, and a layer with a tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv2d(3, 3, 1)
        self.unused = nn.Conv2d(3, 3, 1)
        self.split = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(self.block(x))
        a, b = self.split((y, 2 * y))
        return (a + b).flatten(1)


def test_module_called_twice_needs_call_index() -> None:
    model = _Shared().eval()
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(InvalidInputError, match=r"called 2 times.*call=0\.\.1"):
        SoftPullback(model).attribute(x, target=Neuron("block", channel=0))
    second = SoftPullback(model).attribute(x, target=Neuron("block", channel=0, call=1))
    kept = []
    h = model.block.register_forward_hook(lambda m, i, o: kept.append(o))
    xr = x.clone().requires_grad_(True)
    with pullback_mode():
        model(xr)
        (want,) = torch.autograd.grad(kept[1][:, 0].flatten(1).mean(1).sum(), xr)
    h.remove()
    assert torch.equal(second, want)
    with pytest.raises(InvalidInputError, match="call=2 is out of range"):
        SoftPullback(model).attribute(x, target=Neuron("block", channel=0, call=2))


def test_tuple_output_takes_an_output_selector() -> None:
    model = _Shared().eval()
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(InvalidInputError, match="output_selector"):
        SoftPullback(model).attribute(x, target=Neuron("split", channel=0))
    assert SoftPullback(model).attribute(x, target=Neuron("split", channel=0, output_selector=1)).shape == x.shape


BAD = [
    (lambda: Neuron("blokc", channel=0), UnknownLayerError, "closest: block"),
    (lambda: Neuron("unused", channel=0), InvalidInputError, "never called"),
    (lambda: Neuron("block", channel=3, call=0), InvalidInputError, "3 channels"),
    (lambda: Neuron("block", index=(0, 4, 0), call=0), InvalidInputError, "does not fit"),
    (lambda: Neuron("block", channel=0, position=(9, 9), call=0), InvalidInputError, "does not fit"),
    (lambda: Direction("block", torch.ones(4), call=0), InvalidInputError, "vector has 4 entries"),
    (lambda: Feature("block", lambda a: a.flatten(1), 999, call=0), InvalidInputError, "48 latents"),
    (lambda: Feature("block", lambda a: a.flatten(1), (0, 1), call=0), InvalidInputError, "does not fit"),
    (lambda: Feature("block", lambda a: a.sum(), 0, call=0), InvalidInputError, "encode must return"),
]


@pytest.mark.parametrize(("make", "error", "message"), BAD)
def test_bad_targets_at_the_call(make, error, message) -> None:
    with pytest.raises(error, match=message):
        SoftPullback(_Shared().eval()).attribute(torch.randn(1, 3, 4, 4), target=make())


@pytest.mark.parametrize(
    "make",
    [
        lambda: Neuron("", channel=0),
        lambda: Neuron("a"),
        lambda: Neuron("a", channel=1, index=(1,)),
        lambda: Neuron("a", channel=-1),
        lambda: Neuron("a", channel=1.5),
        lambda: Neuron("a", channel=True),
        lambda: Neuron("a", channel=0, position=(1.0, 2)),
        lambda: Neuron("a", channel=0, call=-1),
        lambda: Direction("a", [1.0, 2.0]),
        lambda: Direction("a", torch.ones(2, 2)),
        lambda: Direction("a", torch.tensor([1.0, float("nan")])),
        lambda: Feature("a", "encode", 0),
        lambda: Feature("a", torch.relu, None),
    ],
)
def test_bad_targets_at_construction(make) -> None:
    with pytest.raises(InvalidInputError):
        make()


def test_ambiguous_tail_and_layer_listing() -> None:
    def stage() -> nn.Module:
        return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 3, 1)))

    model = nn.Sequential(OrderedDict(a=stage(), b=stage())).eval()
    assert layer_names(model) == ["a", "a.conv", "b", "b.conv"]
    with pytest.raises(UnknownLayerError, match=r"ambiguous.*a\.conv, b\.conv"):
        SoftPullback(model).attribute(torch.randn(1, 3, 2, 2), target=Neuron("conv", channel=0))


def test_layer_attribution_refuses_double_pullback_and_unknown_layers() -> None:
    from semantic_pullbacks import DoublePullback
    from semantic_pullbacks.errors import UnexpectedArgumentError

    model = small_net()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(UnexpectedArgumentError):
        DoublePullback(model).attribute(x, target=0, layer="4")
    with pytest.raises(UnknownLayerError, match="closest"):
        SoftPullback(model).attribute(x, target=0, layer="44")


@ignoring_captum_notes
def test_every_gradient_type_method_takes_layer_targets() -> None:
    from semantic_pullbacks.methods import METHODS

    model = small_net()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 8)
    target = Neuron("4", channel=3)
    gradient = Gradient(model).attribute(x, target=target)
    # noise-free SmoothGrad is the gradient; Integrated Gradients is complete for the unit as for a logit
    smooth = METHODS["SmoothGrad"](model, nt_samples=2, stdevs=0.0, seed=0).attribute(x, target=target)
    torch.testing.assert_close(smooth, gradient, rtol=1e-5, atol=1e-7)
    ig = METHODS["IntegratedGradients"](model, n_steps=256).attribute(x, target=target)
    change = target_value(model, target, x) - target_value(model, target, torch.zeros_like(x))
    torch.testing.assert_close(ig.flatten(1).sum(1), change, rtol=0, atol=2e-4)
    for name in ("DoublePullback", "SmoothPullback", "FusionPullback", "FusionGrad", "IntegratedPullbacks",
                 "PullbackShap", "GradientShap"):  # fmt: skip
        settings = {"nt_samples": 2, "model_samples": 2, "n_steps": 3, "n_samples": 2}
        cls = METHODS[name]
        kept = {k: v for k, v in settings.items() if k in getattr(cls, "defaults", {})}
        explainer = cls(model, **kept, **({"seed": 0} if cls.stochastic else {}))
        maps = explainer.attribute(x, target=target)
        assert maps.shape == x.shape and bool(torch.isfinite(maps).all()) and float(maps.abs().sum()) > 0, name
    assert all(not m._forward_hooks for m in model.modules())
