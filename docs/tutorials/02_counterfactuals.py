# %% [markdown]
# # Counterfactuals and accentuations
#
# A Semantic Pullback is a direction in input space. `PullbackAscent` follows it for a few steps: towards the class
# the model already sees, it **accentuates** the evidence; towards another class, it shows what would have to
# change — a **counterfactual**. This tutorial does both on two bundled photos with the embedded model.

# %%
import torch

from semantic_pullbacks import PullbackAscent, load
from semantic_pullbacks import visualize as viz
from semantic_pullbacks.examples import example_path

torch.manual_seed(0)
model = load()
x = torch.cat([model.load_image(example_path("chelsea")), model.load_image(example_path("coffee"))])
print([p[0].name for p in model.predict(x, k=1)])

# %% [markdown]
# ## Accentuation: ascend the predicted class
#
# With a `LoadedModel`, `PullbackAscent` takes the recommended ascent settings (for Lite0: the paper's
# temperatures, 5 steps of α = 10). `target=None` means each image's own top-1 class. `result.scores` holds the
# target logit at every step, starting from the input.

# %%
ascent = PullbackAscent(model, clip="last")
result = ascent.run(x, target=None)
print("target logit per step:\n", result.scores)
probs_before = model.model(x).softmax(-1).max(-1).values
print("top-1 probability before:", probs_before.detach())

# %%
fig = viz.plot_counterfactual(x[0], result.counterfactual[0], class_name="Egyptian cat")
fig  # a notebook shows the figure; fig.savefig(...) writes it

# %% [markdown]
# ## Counterfactual: ascend another class
#
# Now push the cat towards *tiger cat* and the coffee towards *espresso maker*. The difference image (counterfactual
# minus input) is where the model would need to see something else.

# %%
targets = [model.target("tiger cat"), model.target("espresso maker")]
counter = ascent.run(x, target=targets)
with torch.no_grad():
    before = model.model(x).softmax(-1)[range(2), targets]
    after = model.model(counter.counterfactual).softmax(-1)[range(2), targets]
for name, b, a in zip(["tiger cat", "espresso maker"], before, after):
    print(f"p({name}): {b:.3f} -> {a:.3f}")

# %%
fig = viz.plot_counterfactual_grid(x, counter.counterfactual[:, None], [["tiger cat"], ["espresso maker"]])
fig  # a notebook shows the figure; fig.savefig(...) writes it

# %% [markdown]
# `GradientAscent` runs the same loop with the ordinary gradient: its steps look like noise to a person, which is
# the difference a perceptually aligned map makes. `DoublePullback` takes one such step and explains the image it
# reaches, a sharper map of the same class.
