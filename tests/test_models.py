"""Model loading (offline), normalisation wrapper, class names and target resolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from semantic_pullbacks.errors import (
    InvalidInputError,
    SemanticPullbacksError,
    UnknownClassError,
    UnknownModelError,
    WeightsUnavailableError,
)
from semantic_pullbacks.examples import example_path, list_examples
from semantic_pullbacks.imagenet import imagenet_classes, resolve_target, search_classes, top_k
from semantic_pullbacks.models import IMAGENET_MEAN, IMAGENET_STD, NormalizedModel, load, wrap
from small_methods import small_net


@pytest.fixture(scope="module")
def lite0():
    return load()


def test_default_model_loads_offline_and_declares_its_contract(lite0):
    assert lite0.name == "efficientnet_lite0"
    assert lite0.source == "embedded"
    assert lite0.input_size == 224
    assert lite0.domain == (-1.0, 1.0)
    assert len(lite0.class_names) == 1000
    assert not lite0.model.training
    assert not any(p.requires_grad for p in lite0.model.parameters())


def test_default_model_classifies_every_bundled_example_as_the_manifest_says(lite0):
    examples = list_examples()
    assert len(examples) == 11
    batch = lite0.preprocess.load_batch([e.path for e in examples])
    predictions = lite0.predict(batch, k=1)
    for example, (best,) in zip(examples, predictions, strict=True):
        assert best.index == example.expected_class, (example.name, best)
        assert lite0.class_names[example.expected_class] == example.expected_name


def test_other_domain_gives_the_same_logits(lite0):
    unit = load(domain=(0.0, 1.0))
    x = lite0.load_image(example_path("coffee"))
    with torch.no_grad():
        torch.testing.assert_close(unit.model((x + 1) / 2), lite0.model(x), atol=1e-4, rtol=1e-4)


def test_normalized_model_equals_manual_normalisation():
    import torchvision

    net = small_net()
    x01 = torch.rand(2, 3, 16, 16)
    expected = net(torchvision.transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x01))
    assert torch.equal(NormalizedModel(net, IMAGENET_MEAN, IMAGENET_STD, domain=(0, 1))(x01), expected)
    wrapped = NormalizedModel(net, IMAGENET_MEAN, IMAGENET_STD, domain=(-1, 1))
    torch.testing.assert_close(wrapped(x01 * 2 - 1), expected)
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in net.state_dict()}


@pytest.mark.parametrize(
    "kwargs",
    [dict(mean=(0.5, 0.5), std=(0.5, 0.5, 0.5)), dict(std=(0.2, 0.0, 0.2)), dict(domain=(1.0, -1.0))],
)
def test_normalized_model_rejects_bad_arguments(kwargs):
    with pytest.raises(InvalidInputError):
        NormalizedModel(nn.Identity(), **kwargs)


def test_torchvision_model_without_cached_weights_raises_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SEMANTIC_PULLBACKS_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="downloads are off") as error:
        load("torchvision:mobilenet_v3_small")
    assert str(tmp_path / "hub" / "checkpoints") in str(error.value)  # says where to put the file


def test_torchvision_weights_from_local_file_and_from_hub_cache(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_small().eval()
    checkpoint = tmp_path / "mine.pth"
    torch.save(reference.state_dict(), checkpoint)
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    normalize = torchvision.transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        expected = reference(normalize((x + 1) / 2))
    loaded = load("torchvision:mobilenet_v3_small", weights=checkpoint)
    assert loaded.domain == (-1.0, 1.0) and loaded.source == "torchvision"
    assert isinstance(loaded.model, NormalizedModel)
    assert loaded.preprocess.size == 224 and loaded.preprocess.resize == 256
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), expected)

    # Already in the torch hub cache under torchvision's file name: loads without network.
    url = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = load("mobilenet_v3_small")
    with torch.no_grad():
        torch.testing.assert_close(cached.model(x), expected)


def test_timm_model_from_local_file(tmp_path):
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("resnet10t", pretrained=False).eval()
    checkpoint = tmp_path / "resnet10t.pth"
    torch.save(reference.state_dict(), checkpoint)
    loaded = load("timm:resnet10t", weights=checkpoint)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    cfg = reference.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(((x + 1) / 2 - mean) / std)
        torch.testing.assert_close(loaded.model(x), expected)
    assert loaded.name == "timm:resnet10t"


def test_random_weights_only_when_asked():
    loaded = load("timm:resnet10t", weights="random")
    assert loaded.weights == "random"


def test_timm_model_without_cached_weights_raises_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SEMANTIC_PULLBACKS_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"downloads are off.*timm\.create_model"):
        load("timm:resnet10t")


def test_unknown_model_names_suggest_alternatives():
    with pytest.raises(UnknownModelError, match="efficientnet_lite0"):
        load("efficientnet_lite9")
    with pytest.raises(UnknownModelError, match="source"):
        load("nosuchsource:resnet50")
    with pytest.raises(SemanticPullbacksError):
        load("embedded:resnet50")


def test_missing_weights_file_is_reported():
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load(weights="/nonexistent/lite0.pth")


def test_wrap_user_module():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3), nn.Dropout(0.5))
    loaded = wrap(net, domain=(0, 1), input_size=8, class_names=["a", "b", "c"])
    assert not net.training
    assert loaded.target("b") == 1
    assert loaded.predict(torch.rand(2, 3, 8, 8), k=2)[1][0].name in {"a", "b", "c"}
    with pytest.raises(InvalidInputError):
        wrap(lambda x: x)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- class names


def test_imagenet_class_names_are_packaged():
    names = imagenet_classes()
    assert len(names) == 1000
    assert names[0] == "tench" and names[285] == "Egyptian cat" and names[999] == "toilet tissue"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (285, 285),
        ("285", 285),
        (" 967 ", 967),
        ("Egyptian cat", 285),
        ("egyptian_CAT", 285),
        ("espreso", 967),  # typo, close match
        ("goldfsh", 1),
        ("great white", 2),  # unique substring
        ("Cardigan", 264),  # exact case wins: the corgi
        ("cardigan", 474),  # the sweater
    ],
)
def test_resolve_target(spec, expected):
    assert resolve_target(spec) == expected


@pytest.mark.parametrize("spec", ["cat", "dog", "retriever"])
def test_ambiguous_target_lists_candidates(spec):
    with pytest.raises(UnknownClassError, match="matches") as info:
        resolve_target(spec)
    assert len(info.value.candidates) > 1


@pytest.mark.parametrize("spec", ["zzqxv", 1000, -1, "1000"])
def test_unknown_target_raises(spec):
    with pytest.raises(UnknownClassError):
        resolve_target(spec)


def test_resolve_target_rejects_non_names():
    with pytest.raises(InvalidInputError):
        resolve_target(True)
    with pytest.raises(InvalidInputError):
        resolve_target("   ")


def test_search_classes_ranks_exact_and_prefix_first():
    found = search_classes("espresso")
    assert found[0] == (967, "espresso")
    assert (550, "espresso maker") in found
    assert search_classes("retriver", limit=3)[0][1].endswith("retriever")
    assert len(search_classes("", limit=7)) == 7


def test_top_k():
    logits = torch.full((2, 1000), -10.0)
    logits[0, 285] = 5.0
    logits[1, 967] = 5.0
    logits[1, 968] = 4.0
    result = top_k(logits, k=2)
    assert result[0][0].index == 285
    assert [(p.index, p.name) for p in result[1]] == [(967, "espresso"), (968, "cup")]
    assert result[1][0].prob > result[1][1].prob > 0
    with pytest.raises(InvalidInputError):
        top_k(torch.zeros(2, 10))


@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_larger_lite_models_load_offline_and_explain(name, size):
    """Lite1/Lite2 ship as weight packages too: offline, their own input size, most bundled photos right."""
    from semantic_pullbacks import pullback_mode

    m = load(name)
    assert m.input_size == size and m.domain == (-1.0, 1.0)
    examples = list_examples()
    x = torch.cat([m.load_image(example_path(e.name)) for e in examples])
    assert x.shape[-1] == size
    with torch.no_grad():
        top1 = m.model(x).argmax(1)
    correct = sum(int(t) == e.expected_class for t, e in zip(top1, examples))
    assert correct >= 4, f"{name} classified only {correct} of {len(examples)} bundled photos correctly"
    xr = x[:1].clone().requires_grad_(True)
    reference = m.model(xr)
    with pullback_mode() as pb:
        out = m.model(xr)
        out[0, examples[0].expected_class].backward()
    assert torch.equal(out, reference) and torch.isfinite(xr.grad).all() and pb.coverage.softened
