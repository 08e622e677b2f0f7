# %% [markdown]
# # Calibrate temperatures for your model
#
# The paper's absolute temperatures suit networks whose gate inputs are of order one. Other models want others, and
# `calibrate` finds them on your images: it scores candidate temperatures against the gradient with the paper's
# metrics, each criterion under its own bound (so that no metric is bought with another), and chooses by k-fold
# cross-validation, reporting the held-out numbers. This tutorial runs a deliberately tiny search — the embedded
# Lite0 on four photos at 48 × 48, two candidates, two criteria — so that it finishes quickly. A real search takes
# the default candidates and all eight criteria, on a few dozen images at the model's own size, for an hour or more
# (`uv run semantic-pullbacks calibrate my_photos --folds 3 --out calibration/`).

# %%
import matplotlib.pyplot as plt
import torch

from semantic_pullbacks import Relative, SoftPullback, load
from semantic_pullbacks.calibration import Criterion, calibrate, load_settings, save_settings
from semantic_pullbacks.examples import example_path
from semantic_pullbacks.images import load_image

torch.manual_seed(0)
model = load()
names = ("chelsea", "coffee", "rocket", "china")
x = torch.stack([load_image(example_path(n), size=48) for n in names])  # pixels in [-1, 1], Lite0's domain
print(x.shape)

# %% [markdown]
# Candidates are given per family (every combination is tried); criteria compare SP with the gradient: a `ratio`
# (SP / gradient, lower is better), an `absolute` bound, or a `shortfall` (how much worse than the gradient SP may
# be). The metrics' settings can be lowered for a quick search.

# %%
quick = {"infidelity": {"n_draws": 1}, "max_sensitivity": {"nr_samples": 2}}
result = calibrate(
    model.model,
    x,
    candidates={"relu": [0.6, Relative(2.0)]},
    criteria=[Criterion("infidelity", "ratio", 0.5), Criterion("max_sensitivity", "ratio", 0.6)],
    folds=2,
    metric_settings=quick,
    report_metric_settings=quick,
)
print(result.markdown())

# %% [markdown]
# The result's settings are a file the CLI, the app and the methods read. Explicit arguments win over it.

# %%
import tempfile
from pathlib import Path

path = Path(tempfile.mkdtemp()) / "settings.json"
save_settings(result.settings, path)
settings = load_settings(path)
print(settings.temperatures)
sp = SoftPullback(model.model, settings.temperatures)
attr = sp.attribute(x[:1], target=int(model.model(x[:1]).argmax()))
print(attr.shape)

# %%
result.plot(path.with_suffix(".png"))
plt.figure(figsize=(8, 4))
plt.imshow(plt.imread(path.with_suffix(".png")))
plt.axis("off")
plt.show()

# %% [markdown]
# On the command line: `semantic-pullbacks calibrate my_photos --folds 3 --out calibration/`, then
# `semantic-pullbacks explain photo.jpg --settings calibration/settings.json`. How the embedded model's own
# settings were chosen, with their held-out and unseen-photo numbers, is in
# [Temperatures and calibration](../guides/calibration.md).
