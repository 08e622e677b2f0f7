# %% [markdown]
# # Your first explanation
#
# This tutorial explains one photo with the embedded EfficientNet-Lite0 (pretrained on ImageNet, shipped on PyPI,
# so nothing downloads): the model's prediction, the Semantic Pullback of the predicted class, how it differs from
# the gradient, and what the engine did. Run it yourself with `uv run --group docs jupyter lab`, or as a script:
# `uv run python docs/tutorials/01_first_explanation.py`.

# %%
import torch

from semantic_pullbacks import Gradient, SoftPullback, load
from semantic_pullbacks import visualize as viz
from semantic_pullbacks.examples import example_path

torch.manual_seed(0)
model = load()  # embedded EfficientNet-Lite0, inputs in [-1, 1], 224 x 224
x = model.load_image(example_path("chelsea"))
for prediction in model.predict(x, k=3)[0]:
    print(f"{prediction.index:4d}  {prediction.name:<20s} {prediction.prob:.3f}")

# %% [markdown]
# `SoftPullback(model)` picks up the model's recommended temperatures (for Lite0: per stage, `1*std;112:3*std;
# 56:1.5*std`). `attribute` has Captum's call: inputs, then the target class. The map has the input's shape and a
# sign: red is evidence for the class, blue against.

# %%
target = model.target("egyptian cat")
sp = SoftPullback(model)
attr = sp.attribute(x, target=target)
print(attr.shape, f"positive share: {(attr > 0).float().mean():.2f}")
fig = viz.plot_explanation(x[0], attr[0], class_name="Egyptian cat", method="SoftPullback")
fig  # a notebook shows the figure; fig.savefig(...) writes it

# %% [markdown]
# ## Against the gradient
#
# The gradient is the same backward pass with hard gates. Side by side, the pullback follows the cat's outline and
# face where the gradient is speckled:

# %%
maps = {"Gradient": Gradient(model).attribute(x, target=target), "SoftPullback": attr}
fig = viz.plot_method_grid(x, maps, class_name="Egyptian cat")
fig  # a notebook shows the figure; fig.savefig(...) writes it

# %% [markdown]
# ## What the engine softened
#
# Every explainer built on the engine keeps the coverage report of its last pass: which nonlinear ops were met and
# softened, which kept their ordinary gradient, which had no rule.

# %%
print(sp.coverage)

# %% [markdown]
# ## Temperatures
#
# A temperature is how soft each gate is. `Temperatures.hard()` (τ = 0) gives back the gradient on ReLU networks;
# the paper's absolute defaults and scale-aware `Relative` temperatures are the other common choices. The
# [concepts page](../concepts.md) explains them.

# %%
from semantic_pullbacks import Relative, Temperatures

settings = {
    "paper (relu 0.6)": Temperatures(),
    "relu = 1*std": {"relu": Relative(1.0)},
    "relu = 3*std": {"relu": Relative(3.0)},
}
maps = {name: SoftPullback(model.model, t).attribute(x, target=target) for name, t in settings.items()}
fig = viz.plot_method_grid(x, maps, class_name="Egyptian cat")
fig  # a notebook shows the figure; fig.savefig(...) writes it
