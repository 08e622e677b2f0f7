"""A token's relevance is ``embedding . map`` summed over the hidden dimension, unless the method's maps already
carry the input (Captum's ``multiplies_by_inputs``): then it is the maps' plain sum. Checked against Captum and
autograd themselves, on a tiny random-init BERT classifier."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
captum_attr = pytest.importorskip("captum.attr")

from semantic_pullbacks.methods import METHODS, IntegratedGradients  # noqa: E402
from semantic_pullbacks.text import TextExplainer, TextModel, load_text_model  # noqa: E402
from semantic_pullbacks.text.explain import token_maps  # noqa: E402
from semantic_pullbacks.text.targets import ClassTarget  # noqa: E402

TEXT = "a moving and beautiful film"


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(
        "bert", hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2, num_labels=2
    )
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    return TextModel.wrap(model, load_text_model().tokenizer)


def _logit(model):
    return lambda emb, mask: model(inputs_embeds=emb, attention_mask=mask).logits[:, 1]


def test_the_flag_is_captums_own_for_every_method_run_by_captum():
    for name, cls in METHODS.items():
        captum_name = getattr(cls, "captum_name", "")
        if captum_name in ("IntegratedGradients", "GradientShap", "DeepLift", "Saliency"):
            expected = getattr(captum_attr, captum_name)(torch.nn.Linear(2, 1)).multiplies_by_inputs
            assert cls.multiplies_by_inputs is expected, name


def test_integrated_gradients_token_relevance_is_the_sum_of_captums_attribution(classifier):
    enc = classifier.encode([TEXT])
    emb = classifier.embed(enc.input_ids)
    reference = captum_attr.IntegratedGradients(_logit(classifier.model)).attribute(
        emb, additional_forward_args=(enc.attention_mask,), n_steps=50, method="gausslegendre"
    )
    result = TextExplainer(classifier, method="IntegratedGradients").attribute(TEXT, target=1)
    torch.testing.assert_close(torch.tensor(result.relevance), reference.sum(-1)[0], rtol=1e-3, atol=1e-6)


def test_gradient_token_relevance_is_embedding_dot_gradient(classifier):
    enc = classifier.encode([TEXT])
    emb = classifier.embed(enc.input_ids).requires_grad_(True)
    (grad,) = torch.autograd.grad(_logit(classifier.model)(emb, enc.attention_mask).sum(), emb)
    result = TextExplainer(classifier, method="Gradient").attribute(TEXT, target=1)
    torch.testing.assert_close(torch.tensor(result.relevance), (emb * grad).sum(-1)[0].detach(), rtol=1e-4, atol=1e-7)


def test_a_subclass_of_a_method_keeps_its_flag(classifier):
    class MyIntegratedGradients(IntegratedGradients):
        """A caller's own variant: its maps still carry the input."""

    enc = classifier.encode([TEXT])
    targets = [ClassTarget(1)]
    mine = token_maps(MyIntegratedGradients(classifier.forward_module), classifier, enc.input_ids,
                      enc.attention_mask, targets)  # fmt: skip
    theirs = token_maps(IntegratedGradients(classifier.forward_module), classifier, enc.input_ids,
                        enc.attention_mask, targets)  # fmt: skip
    torch.testing.assert_close(mine[0], theirs[0])
