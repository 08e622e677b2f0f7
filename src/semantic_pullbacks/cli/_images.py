"""Image arguments: files, folders and bundled examples, expanded up front and decoded one batch at a time.

Paths are checked before any model is loaded, so a typo fails in a second; decoding is lazy, so a thousand
photos never sit in memory together and one corrupt file cannot cost the results of the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ImageLoadError, InvalidInputError
from ..examples import get_example, list_examples
from ..models import LoadedModel

__all__ = ["IMAGE_SUFFIXES", "ImageBatch", "ImageSource", "expand_images", "iter_batches"]

#: file name endings read as images when a folder is given
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_EXAMPLE_PREFIX = "example:"


@dataclass(frozen=True)
class ImageSource:
    """One image to explain: ``name`` (unique among the run's images, used in output file names) and ``path``."""

    name: str
    path: Path
    label: str


@dataclass(frozen=True)
class ImageBatch:
    """Decoded images ``(B, 3, H, W)`` on the model's device, with the sources they came from."""

    sources: list[ImageSource]
    tensor: torch.Tensor


def expand_images(specs: Sequence[str]) -> list[ImageSource]:
    """Turn command-line image arguments into sources, in the given order.

    ``example:NAME`` is a bundled photo, ``examples`` all of them, a folder every image directly inside it
    (sorted by name); anything else must be an existing file. An existing path wins over the keywords.
    """
    found: list[tuple[str, Path, str]] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.exists():
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise InvalidInputError(
                        f"folder {spec!r} contains no images ({', '.join(IMAGE_SUFFIXES)}); give image files or "
                        "another folder"
                    )
                found += [(p.stem, p, str(p)) for p in files]
            else:
                found.append((path.stem, path, spec))
        elif spec.lower().startswith(_EXAMPLE_PREFIX):
            example = get_example(spec[len(_EXAMPLE_PREFIX) :])
            found.append((example.name, example.path, f"example:{example.name}"))
        elif spec.lower() == "examples":
            found += [(e.name, e.path, f"example:{e.name}") for e in list_examples()]
        else:
            names = ", ".join(e.name for e in list_examples())
            raise ImageLoadError(
                f"cannot load image {spec!r}: file not found. Check the path, or use 'example:NAME' for a bundled "
                f"photo ({names}) or 'examples' for all of them"
            )
    return _unique(found)


def _unique(found: list[tuple[str, Path, str]]) -> list[ImageSource]:
    seen: dict[str, int] = {}
    sources = []
    for stem, path, label in found:
        key = _safe(stem)
        count = seen.get(key, 0) + 1
        seen[key] = count
        sources.append(ImageSource(key if count == 1 else f"{key}-{count}", path, label))
    return sources


def _safe(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._")
    return cleaned or "image"


def iter_batches(
    model: LoadedModel,
    sources: Sequence[ImageSource],
    batch_size: int,
    on_error: Callable[[ImageSource, str], None],
) -> Iterator[ImageBatch]:
    """Decode ``sources`` in batches of at most ``batch_size``; an unreadable file is handed to ``on_error``
    (source, message) and skipped, so the readable ones still get explained."""
    for start in range(0, len(sources), batch_size):
        ok, tensors = [], []
        for source in sources[start : start + batch_size]:
            try:
                tensors.append(model.preprocess.load(source.path))
            except ImageLoadError as error:
                on_error(source, str(error))
                continue
            ok.append(source)
        if ok:
            yield ImageBatch(ok, torch.stack(tensors).to(model.device))
