"""Forward bit-identical, finite soft pullbacks that differ from the gradient, on real architectures."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from semantic_pullbacks import pullback_mode

# (library, name, input size, extra kwargs, families that must be softened)
ARCHITECTURES = [
    ("torchvision", "resnet18", 64, {}, {"relu", "max_pool2d"}),
    ("torchvision", "vgg11_bn", 32, {}, {"relu", "max_pool2d"}),
    ("torchvision", "densenet121", 32, {}, {"relu", "max_pool2d"}),
    ("torchvision", "mobilenet_v3_small", 64, {}, {"hardswish", "hardsigmoid", "relu"}),
    ("torchvision", "efficientnet_b0", 64, {}, {"silu", "sigmoid"}),
    ("torchvision", "convnext_tiny", 32, {}, {"gelu", "layer_norm"}),
    ("torchvision", "swin_t", 64, {}, {"gelu", "layer_norm", "softmax"}),
    (
        "torchvision",
        "VisionTransformer",
        32,
        {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
        {"multi_head_attention", "gelu"},
    ),
    ("timm", "vit_tiny_patch16_224", 64, {"img_size": 64}, {"scaled_dot_product_attention", "gelu"}),
    ("timm", "deit_tiny_patch16_224", 64, {"img_size": 64}, {"scaled_dot_product_attention", "layer_norm"}),
    ("timm", "pvt_v2_b0", 64, {}, {"scaled_dot_product_attention", "gelu"}),
    ("timm", "swin_tiny_patch4_window7_224", 64, {"img_size": 64, "window_size": 2}, {"softmax", "gelu"}),
    ("timm", "mixer_s16_224", 64, {"img_size": 64}, {"gelu", "layer_norm"}),
    ("timm", "convnext_atto", 64, {}, {"gelu", "layer_norm"}),
    ("timm", "mobilenetv3_small_050", 64, {}, {"hardswish", "relu"}),
    ("timm", "efficientnet_b0", 64, {}, {"silu", "sigmoid"}),
]


def build(lib: str, name: str, kwargs: dict) -> nn.Module:
    torch.manual_seed(0)
    if lib == "torchvision":
        model = getattr(torchvision.models, name)(num_classes=10, **kwargs)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    # random heads are often zero-initialised; give every output a non-trivial dependence on the input
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.out_features == 10:
            nn.init.normal_(m.weight, std=0.5)
    return model.eval()


def check(model: nn.Module, x: torch.Tensor, must_soften: set[str]) -> None:
    x = x.requires_grad_(True)
    reference = model(x)
    v = torch.randn_like(reference)
    with pullback_mode() as pb:
        out = model(x)
        (soft,) = torch.autograd.grad(out, x, v)
    assert torch.equal(out, reference), "forward pass changed inside pullback_mode"
    (grad,) = torch.autograd.grad(model(x), x, v)
    assert torch.isfinite(soft).all()
    assert soft.abs().sum() > 0
    assert not torch.allclose(soft, grad, rtol=1e-3, atol=1e-6 * grad.abs().max().item()), "no-op backward"
    missing = must_soften - set(pb.coverage.softened)
    assert not missing, f"expected these ops to be softened: {missing}; report:\n{pb.coverage}"


@pytest.mark.parametrize("lib,name,size,kwargs,must", ARCHITECTURES, ids=[f"{a[0]}:{a[1]}" for a in ARCHITECTURES])
def test_architecture(lib, name, size, kwargs, must):
    model = build(lib, name, kwargs)
    check(model, torch.randn(2, 3, size, size), must)


def test_pretrained_efficientnet_lite0():
    from semantic_pullbacks.models import load

    loaded = load("efficientnet_lite0")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    check(loaded.model, x, {"hardtanh"} | set())


def test_transformer_encoder_and_mha_need_weights():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.Sequential(
        nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Flatten(), nn.Linear(16 * 5, 3)
    )
    model.eval()
    x = torch.randn(2, 5, 16)
    check(model, x, {"multi_head_attention", "layer_norm"})
