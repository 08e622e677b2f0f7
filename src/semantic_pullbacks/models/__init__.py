"""Pretrained classifiers to explain, loaded offline, plus wrappers for your own models.

```pycon
>>> from semantic_pullbacks.models import load
>>> m = load()                          # embedded EfficientNet-Lite0, inputs in [-1, 1], 224×224
>>> x = m.load_image("cat.jpg")
>>> m.predict(x)[0][0]
Prediction(index=285, name='Egyptian cat', prob=0.61)
```
"""

from semantic_pullbacks.errors import WeightsUnavailableError
from semantic_pullbacks.models.loaded import LoadedModel, Preprocess, wrap
from semantic_pullbacks.models.normalize import IMAGENET_MEAN, IMAGENET_STD, NormalizedModel
from semantic_pullbacks.models.registry import DEFAULT_MODEL, embedded_models, load

__all__ = [
    "DEFAULT_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedModel",
    "NormalizedModel",
    "Preprocess",
    "WeightsUnavailableError",
    "embedded_models",
    "load",
    "wrap",
]
