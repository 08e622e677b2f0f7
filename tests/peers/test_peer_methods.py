"""Each peer gives the map its own package gives when called directly, in the input's shape, and leaves the
caller's model as it found it."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torchvision
from torch import nn

from semantic_pullbacks.errors import (
    InvalidInputError,
    MissingDependencyError,
    UnexpectedArgumentError,
    UnsupportedModelError,
)
from semantic_pullbacks.evaluation import MethodSpec
from semantic_pullbacks.methods import get_method
from semantic_pullbacks.methods.peers import (
    PEERS,
    CaptumLRP,
    GradCAM,
    HiResCAM,
    LayerCAM,
    ZennitBetaSmooth,
    ZennitEpsilonPlusFlat,
    installed_peers,
)

pytest.importorskip("zennit")
pytest.importorskip("pytorch_grad_cam")

pytestmark = [
    pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning"),
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning"),
]


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():  # BN statistics that are not the identity, so that merging them matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


class PlainCNN(nn.Module):
    """A VGG-like network Captum's LRP rules cover module by module (it has no rule for ``nn.Flatten``, so the
    forward flattens), each module used once."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def plain_cnn() -> nn.Module:
    return PlainCNN().eval()


def image(batch: int = 2, side: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def one_hot(output: torch.Tensor, target: list[int]) -> torch.Tensor:
    return torch.eye(output.shape[1])[target]


def test_zennit_epsilon_plus_flat_equals_zennit_with_its_resnet_canonizer():
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    model, x, target = resnet18(), image(), [3, 7]
    ours = ZennitEpsilonPlusFlat(model).attribute(x, target=target)
    theirs_model = copy.deepcopy(model)
    with Gradient(theirs_model, EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
        _, theirs = attributor(x, lambda out: one_hot(out, target))
    assert ours.shape == x.shape
    # Zennit's own merge leaves each batch norm dividing by sqrt(1 + 1e-5), ours removes it: 1e-5 per layer
    torch.testing.assert_close(ours, theirs, rtol=2e-3, atol=2e-3 * float(theirs.abs().max()))
    assert not torch.equal(ours, torch.zeros_like(ours))


def test_zennit_beta_smooth_equals_zennit_on_a_relu_network():
    from zennit.attribution import Gradient
    from zennit.composites import BetaSmooth

    model, x = plain_cnn(), image(seed=2)
    ours = ZennitBetaSmooth(model, beta=3.0).attribute(x, target=[1, 4])
    with Gradient(copy.deepcopy(model), BetaSmooth(beta_smooth=3.0)) as attributor:
        _, theirs = attributor(x, lambda out: one_hot(out, [1, 4]))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", [GradCAM, HiResCAM, LayerCAM])
def test_cams_equal_pytorch_grad_cam_broadcast_over_channels(cls):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = resnet18(), image(side=96)
    ours = cls(model).attribute(x, target=[2, 5])
    theirs_model = copy.deepcopy(model)
    with getattr(pytorch_grad_cam, cls.__name__)(model=theirs_model, target_layers=[theirs_model.layer4]) as cam:
        theirs = torch.as_tensor(cam(input_tensor=x, targets=[ClassifierOutputTarget(2), ClassifierOutputTarget(5)]))
    assert ours.shape == x.shape
    for c in range(3):
        torch.testing.assert_close(ours[:, c], theirs, rtol=1e-5, atol=1e-6)
    assert cls(model).layer(x) == ("layer4", None)


def test_captum_lrp_equals_captum_where_its_rules_cover_the_model():
    from captum.attr import LRP

    model, x = plain_cnn(), image(seed=3)
    ours = CaptumLRP(model).attribute(x, target=[0, 5])
    theirs = LRP(copy.deepcopy(model)).attribute(x, target=[0, 5])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_captum_lrp_runs_on_a_resnet_once_restructured_and_conserves_relevance():
    """Captum alone cannot: torchvision's ResNet reuses one ReLU per block and adds its skip connections with
    ``+``. On the restructured copy every skip is an epsilon-rule sum, so relevance is (nearly) conserved."""
    model = resnet18()
    x = image(batch=1, side=64, seed=4)
    relevance = CaptumLRP(model).attribute(x, target=3)
    logit = model(x)[0, 3].detach()
    assert relevance.shape == x.shape
    assert abs(float(relevance.sum()) - float(logit)) < 0.5 * abs(float(logit))


def test_captum_lrp_refuses_a_model_its_rules_do_not_cover_naming_the_modules():
    vit = torchvision.models.VisionTransformer(32, 8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32).eval()
    with pytest.raises(UnsupportedModelError, match=r"no rule for these modules of VisionTransformer: LayerNorm"):
        CaptumLRP(vit).attribute(image(side=32), target=0)


def test_zennit_lrp_refuses_attention_rather_than_fail_inside_zennit():
    vit = torchvision.models.VisionTransformer(32, 8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32).eval()
    with pytest.raises(UnsupportedModelError, match="no LRP rule for attention"):
        ZennitEpsilonPlusFlat(vit).attribute(image(side=32), target=0)
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3).eval()
    with pytest.raises(UnsupportedModelError, match="no LRP rule for attention"):  # written with SDPA, not a module
        ZennitEpsilonPlusFlat(vit).attribute(image(side=32), target=0)


def test_cams_fold_vit_tokens_into_their_grid():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32).eval()
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: every gradient would be 0
    explainer = GradCAM(vit)
    name, fold = explainer.layer(image(side=32))
    assert name == "encoder.layers.encoder_layer_1.ln_1" and fold is not None
    cam = explainer.attribute(image(side=32), target=[1, 2])
    assert cam.shape == (2, 3, 32, 32) and float(cam.max()) == pytest.approx(1.0, abs=1e-5)


def _state(model: nn.Module) -> tuple:
    return (
        [(n, type(m), m.training, dict(vars(m)).keys()) for n, m in model.named_modules()],
        [(n, p, p.detach().clone(), p.grad, p.requires_grad) for n, p in model.named_parameters()],
        [(n, b.detach().clone()) for n, b in model.named_buffers()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
    )


@pytest.mark.parametrize("name", list(PEERS))
def test_the_callers_model_is_left_as_found(name):
    model = resnet18()
    before = _state(model)
    x = image(batch=1)
    explainer = get_method(name)(model)
    first = explainer.attribute(x, target=4)
    modules, params, buffers, hooks = _state(model)
    assert hooks == 0 == before[3]
    assert [(n, t, training, keys) for n, t, training, keys in modules] == before[0]
    for (_, p, value, grad, rg), (_, p0, value0, grad0, rg0) in zip(params, before[1]):
        assert p is p0 and torch.equal(value, value0) and grad is None and grad0 is None and rg == rg0
    for (n, b), (_, b0) in zip(buffers, before[2]):
        assert torch.equal(b, b0), n
    # the cached copy follows the caller's weights: change one in place and the map changes with it
    with torch.no_grad():
        model.fc.weight.mul_(-1)
    assert not torch.allclose(explainer.attribute(x, target=4), first)


def test_peers_are_found_by_their_table_names_and_build_from_method_specs():
    assert get_method("Zennit-EpsilonPlusFlat") is ZennitEpsilonPlusFlat
    assert get_method("zennit_betasmooth") is ZennitBetaSmooth
    assert get_method("hirescam") is HiResCAM and get_method("Captum-LRP") is CaptumLRP
    assert set(installed_peers()) == set(PEERS)
    spec = MethodSpec.of("zennit-epsilonplusflat")
    assert spec.label == "Zennit-EpsilonPlusFlat"
    from semantic_pullbacks.engine import Temperatures

    built = spec.build(plain_cnn(), temperatures=Temperatures(), ascent={"steps": 5, "alpha": 20.0}, seed=0)
    assert isinstance(built, ZennitEpsilonPlusFlat)


def test_a_missing_package_is_a_typed_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "zennit", None)  # what Python does when the package is absent
    with pytest.raises(MissingDependencyError, match=r"pip install 'semantic-pullbacks\[peers\]'"):
        ZennitEpsilonPlusFlat(plain_cnn())
    assert issubclass(MissingDependencyError, ImportError)


def test_bad_calls_are_refused_by_name():
    model = plain_cnn()
    with pytest.raises(UnsupportedModelError, match=r"nn\.Module"):
        GradCAM(lambda x: x.sum((2, 3)))
    with pytest.raises(InvalidInputError, match="not a module of the model"):
        GradCAM(model, target_layer="nope")
    with pytest.raises(UnexpectedArgumentError, match="n_steps"):
        ZennitEpsilonPlusFlat(model).attribute(image(), target=0, n_steps=3)
    for cls in (GradCAM, CaptumLRP):
        with pytest.raises(InvalidInputError, match="out of range"):
            cls(model).attribute(image(), target=6)
