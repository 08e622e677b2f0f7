# %% [markdown]
# # Benchmark methods on your data
#
# `evaluate` scores explanation methods with the paper's metrics on a folder of images, and summarises them with
# bootstrap confidence intervals and paired differences against each method's gradient counterpart. The same call
# runs on one process or spread over a `torchrun` job, and resumes where an interrupted run stopped. This tutorial
# runs a deliberately tiny benchmark — two photos, two methods, two metrics — so that it finishes in seconds; real
# numbers need hundreds of images.

# %%
import shutil
import tempfile
from pathlib import Path

from semantic_pullbacks.evaluation import evaluate
from semantic_pullbacks.examples import example_path

work = Path(tempfile.mkdtemp())
photos = work / "my_photos"  # stands in for your own folder of images
photos.mkdir()
for name in ("chelsea", "coffee"):
    shutil.copy(example_path(name), photos / f"{name}.jpg")
print(sorted(p.name for p in photos.iterdir()))

# %% [markdown]
# Unlabelled images are explained for the model's top-1 class. An ImageFolder tree (`root/<class>/...`) or
# ImageNet's validation folder with `labels=` gives the true classes instead. `preset="fast"` trims the metrics'
# sample counts; `preset="paper"` uses the paper's.

# %%
result = evaluate(
    "efficientnet_lite0",
    images=photos,
    methods=["SoftPullback", "Gradient"],
    metrics=["infidelity", "max_sensitivity"],
    preset="fast",
    out=work / "run",
    progress=False,
)
print(result.markdown())

# %% [markdown]
# The folder holds every score as it was computed (`parts/`), then `scores.csv`, `summary.md`, `summary.json` and
# `chart.png`. Run the same call again and nothing is recomputed: finished scores are read back.

# %%
print(sorted(p.name for p in (work / "run").iterdir()))
again = evaluate(
    "efficientnet_lite0", images=photos, methods=["SoftPullback", "Gradient"],
    metrics=["infidelity", "max_sensitivity"], preset="fast", out=work / "run", progress=False,
)  # fmt: skip
print("rows computed on the second run:", again.computed_rows)

# %%
import matplotlib.pyplot as plt

plt.figure(figsize=(8, 4))
plt.imshow(plt.imread(work / "run" / "chart.png"))
plt.axis("off")
plt.show()

# %% [markdown]
# ## The same on the command line, and on many processes
#
# ```bash
# uv run semantic-pullbacks evaluate --images my_photos --methods SoftPullback,Gradient \
#     --metrics infidelity,max_sensitivity --out runs/mine
# # two processes on one machine (CPU: the cores are shared between the ranks)
# torchrun --nproc-per-node 2 -m semantic_pullbacks evaluate --images my_photos --out runs/mine
# # eight GPUs: each rank on cuda:LOCAL_RANK, rank 0 writes the table
# torchrun --nproc-per-node 8 -m semantic_pullbacks evaluate --images ~/imagenet/val \
#     --labels ~/imagenet/ILSVRC2012_devkit_t12.tar.gz --n-images 1000 --paper --device cuda --out runs/val
# ```
#
# The scores are the same whatever the number of processes (every random draw is seeded from the run's seed and
# the names of the image, method and metric), and a job killed midway resumes with any number of processes. The
# [scale guide](../guides/scale.md) has the details and the measured speed-up.

# %%
shutil.rmtree(work)
