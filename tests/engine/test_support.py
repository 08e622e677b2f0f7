"""Models whose ops the mode cannot see are refused up front, with the submodule named; the rest are not."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semantic_pullbacks import UnsupportedModelError, check_model_supported, pullback_mode
from semantic_pullbacks.methods import Gradient, SoftPullback
from small_methods import small_net

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, and still used in the wild

    @torch.jit.script
    def scripted_act(x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) * 2.0


def helper(x: torch.Tensor) -> torch.Tensor:
    return scripted_act(x) + 1.0


class CallsScript(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(scripted_act(x))


class CallsScriptThroughHelper(CallsScript):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(helper(x))


class HoldsScript(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.act = scripted_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(x))


@pytest.mark.parametrize("cls", [CallsScript, CallsScriptThroughHelper, HoldsScript])
def test_torchscript_functions_in_a_forward_are_refused(cls):
    model = nn.Sequential(nn.Linear(4, 4), cls()).eval()
    with pytest.raises(UnsupportedModelError, match=r"submodule '1' .*TorchScript function 'scripted_act'"):
        SoftPullback(model)
    with pytest.raises(UnsupportedModelError, match="scripted_act"), pullback_mode(model=model):
        pass


def test_a_scripted_function_as_the_model_is_refused():
    with pytest.raises(UnsupportedModelError, match="TorchScript"):
        Gradient(scripted_act)
    with pytest.raises(UnsupportedModelError, match="scripted_act"):
        Gradient(lambda x: helper(x).sum(1, keepdim=True))


def test_in_place_compile_is_refused_and_its_copy_before_compile_is_not():
    model = small_net()
    model(torch.randn(1, 3, 8, 8))
    plain = copy.deepcopy(model)
    model[2].compile()  # in place, on a submodule: no OptimizedModule wrapper anywhere
    with pytest.raises(UnsupportedModelError, match=r"submodule '2' \(ReLU\).*compiled in place"):
        SoftPullback(model)
    check_model_supported(plain)


def test_data_parallel_over_several_devices_is_refused_and_on_one_it_is_exact():
    model = small_net()
    x = torch.randn(2, 3, 8, 8)
    model(x)
    parallel = nn.DataParallel(model).eval()  # on a machine without GPUs this runs the module in the calling thread
    torch.testing.assert_close(
        SoftPullback(parallel).attribute(x, target=1), SoftPullback(model).attribute(x, target=1), rtol=0, atol=0
    )
    parallel.device_ids = [0, 1]  # what DataParallel holds on a machine with two GPUs
    with pytest.raises(UnsupportedModelError, match="DataParallel over several devices"):
        SoftPullback(parallel)


def test_real_architectures_pass_the_check_quickly():
    import time

    import timm
    import torchvision

    models = [torchvision.models.resnet18(), torchvision.models.convnext_tiny()]
    models.append(timm.create_model("vit_tiny_patch16_224"))
    start = time.perf_counter()
    for model in models:
        check_model_supported(model)
    assert time.perf_counter() - start < 2.0


def test_attention_dropout_is_refused_alike_in_sdpa_and_multihead_attention():
    """Dropout randomises the weights the forward used; the soft adjoint would freeze other ones."""
    q = torch.randn(2, 2, 5, 8, requires_grad=True)
    sdpa_message = r"scaled_dot_product_attention with dropout \(p=0.1\)"
    with pytest.raises(UnsupportedModelError, match=sdpa_message), pullback_mode():
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    mha = nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=True)
    t = torch.randn(2, 5, 8, requires_grad=True)
    with pytest.raises(UnsupportedModelError, match=r"MultiheadAttention with dropout \(p=0.1\)"), pullback_mode():
        mha(t, t, t)
    with pullback_mode() as pb:  # in eval mode attention dropout is off, and attention is softened as usual
        mha.eval()(t, t, t)[0].sum().backward()
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.0).sum().backward()
    assert pb.coverage.softened == {"multi_head_attention": 1, "scaled_dot_product_attention": 1}
    with pullback_mode({"attention": None}):  # or keep attention's ordinary gradient, dropout and all
        mha.train()(t, t, t)
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
