# %% [markdown]
# # Explain your own model: torchvision, timm, Hugging Face
#
# The engine works at the level of torch functions, so any eager PyTorch model can be explained without changing
# it. This tutorial uses **random weights** so that it runs offline and quickly; the line that loads the real
# weights is shown next to each model (it downloads once, into torchvision's, timm's or the hub's usual cache).
# Inputs are small (112 × 112) to keep the tutorial fast; use the model's own size in practice.

# %%
import timm
import torch
import torchvision
import transformers

from semantic_pullbacks import Gradient, SoftPullback, pullback_mode
from semantic_pullbacks import visualize as viz
from semantic_pullbacks.examples import example_path
from semantic_pullbacks.images import load_image
from semantic_pullbacks.models import NormalizedModel, wrap

torch.manual_seed(0)
x = load_image(example_path("chelsea"), size=112, domain=(0.0, 1.0))[None]  # (1, 3, 112, 112), in [0, 1]
print(x.shape)

# %% [markdown]
# ## torchvision
#
# `NormalizedModel` puts the mean/std normalisation inside the model, so that maps come out in pixel units and the
# pullback through the (affine) normalisation is exact. `wrap` describes the model to the CLI, app and figures.

# %%
net = torchvision.models.resnet18().eval()
# real weights, one line: net = torchvision.models.resnet18(weights="IMAGENET1K_V1").eval()
resnet = wrap(NormalizedModel(net, domain=(0.0, 1.0)), domain=(0.0, 1.0), input_size=112, name="resnet18")
target = int(resnet.model(x).argmax())
maps = {
    "Gradient": Gradient(resnet.model).attribute(x, target=target),
    "SoftPullback": SoftPullback(resnet.model).attribute(x, target=target),
}
fig = viz.plot_method_grid(x, maps, domain=(0.0, 1.0), class_name=f"class {target} (random weights)")
fig  # a notebook shows the figure; fig.savefig(...) writes it

# %% [markdown]
# The library's own loader does the same for named models: `load("torchvision:resnet50")` or
# `load("timm:vit_tiny_patch16_224")` fetch the pretrained weights on first use and pick the family's recommended
# temperatures.
#
# ## timm
#
# A vision transformer: GELU, LayerNorm and attention are all softened (attention weights frozen, no gradient into
# queries and keys). `pullback_mode` used directly shows the coverage.

# %%
vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=112).eval()
# real weights, one line: vit = timm.create_model("vit_tiny_patch16_224", pretrained=True).eval()
xv = x.clone().requires_grad_(True)
with pullback_mode() as pb:
    vit(xv)[0, 285].backward()
print(pb.coverage)
print("map:", xv.grad.shape)

# %% [markdown]
# ## Hugging Face
#
# A transformers model built from its config (random weights; nothing downloads). Its output is a `ModelOutput`,
# so `output_selector="logits"` tells the explainer which tensor holds the scores.

# %%
config = transformers.ViTConfig(
    image_size=112, patch_size=16, hidden_size=96, num_hidden_layers=2, num_attention_heads=3,
    intermediate_size=192, num_labels=10,
)  # fmt: skip
hf = transformers.ViTForImageClassification(config).eval()
# real weights, one line: hf = transformers.ViTForImageClassification.from_pretrained("google/vit-base-patch16-224")
explainer = SoftPullback(hf, output_selector="logits")
attr = explainer.attribute(x, target=3)
print(explainer.coverage)
fig = viz.plot_explanation(x[0], attr[0], domain=(0.0, 1.0), class_name="label 3 (random weights)")
fig  # a notebook shows the figure; fig.savefig(...) writes it

# %% [markdown]
# What is refused, and why: TorchScript and `torch.compile`d models hide their ops from the engine, so explaining
# them raises `UnsupportedModelError` — explain the eager model instead. The
# [guarantees page](../guides/guarantees.md) lists the rest.
