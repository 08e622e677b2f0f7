"""Hidden units of a transformer as text targets: a neuron, a direction and an SAE latent of the embedded MiniLM's
hidden states, each equal to the pullback of the network cut at that layer."""

from __future__ import annotations

import pytest
import torch

from semantic_pullbacks import Direction, Feature, Neuron, pullback_mode
from semantic_pullbacks.errors import InvalidInputError, UnknownLayerError
from semantic_pullbacks.text import TextExplainer, load_text_model

TEXT = "A man is playing a guitar."


@pytest.fixture(scope="module")
def minilm():
    return load_text_model()


def cut_reference(tm, layer: str, score) -> tuple[list[float], float]:
    """Token relevance ``sum_h e * d score / d e`` and the score, by hand: a hook inside pullback_mode."""
    enc = tm.encode(TEXT)
    emb = tm.embed(enc.input_ids).detach().requires_grad_(True)
    kept = {}
    handle = tm.forward_module.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    try:
        with pullback_mode():
            tm.forward_module(emb, enc.attention_mask)
            value = score(kept["a"])
            (g,) = torch.autograd.grad(value.sum(), emb)
    finally:
        handle.remove()
    return (emb * g).sum(-1)[0].detach().tolist(), float(value[0].detach())


def test_neuron_of_a_hidden_state(minilm):
    result = TextExplainer(minilm).attribute(TEXT, target=Neuron("encoder.layer.3", index=(2, 5)))
    relevance, score = cut_reference(minilm, "model.encoder.layer.3", lambda a: a[:, 2, 5])
    assert result.relevance == pytest.approx(relevance, rel=1e-6, abs=1e-9)
    assert result.score == pytest.approx(score, rel=1e-6)
    assert result.target == "encoder.layer.3[2, 5]"
    assert result.tokens[2] == "man"


def test_direction_and_sae_latent_of_hidden_states(minilm):
    torch.manual_seed(0)
    v = torch.randn(384)
    w, b = torch.randn(384, 32) / 20, torch.zeros(32)
    explainer = TextExplainer(minilm)
    got = explainer.attribute(TEXT, target=Direction("encoder.layer.1", v, position=(4,)))
    want, _ = cut_reference(minilm, "model.encoder.layer.1", lambda a: a[:, 4] @ v)
    assert got.relevance == pytest.approx(want, rel=1e-5, abs=1e-8)
    sae = explainer.attribute(TEXT, target=Feature("encoder.layer.1", lambda a: torch.relu(a @ w + b), 7))
    want, score = cut_reference(minilm, "model.encoder.layer.1", lambda a: torch.relu(a @ w + b)[..., 7].mean(1))
    assert sae.relevance == pytest.approx(want, rel=1e-5, abs=1e-8)
    assert sae.score == pytest.approx(score, rel=1e-6)


def test_bad_hidden_targets(minilm):
    explainer = TextExplainer(minilm)
    with pytest.raises(UnknownLayerError, match="closest"):
        explainer.attribute(TEXT, target=Neuron("encoder.layers.3", index=(0, 0)))
    with pytest.raises(InvalidInputError, match="does not fit"):
        explainer.attribute(TEXT, target=Neuron("encoder.layer.3", index=(0, 384)))
    with pytest.raises(InvalidInputError, match="drop pair"):
        explainer.attribute(TEXT, target=Neuron("encoder.layer.3", index=(0, 1)), pair="other")
