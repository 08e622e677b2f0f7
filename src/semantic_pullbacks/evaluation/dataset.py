"""Which images a benchmark runs on, and their labels when known.

Sources: the bundled example photos (labels from ``examples.json`` where an ImageNet class
applies, else the top-1); an ImageFolder tree ``root/<class>/<image>``
whose folder names are ImageNet wnids (``n01440764``), class indices (``0``) or class names (``tench``) — the
layout of ImageNet's validation set after the usual re-sorting; the flat validation folder as ImageNet ships it
(``ILSVRC2012_val_00000001.JPEG`` ...) with the devkit's ground-truth file; or a flat folder of any images (no
labels: each is explained for the model's top-1 class). ``n_images`` picks a seeded subset, the same whatever
the number of processes. Everything is resolved before the model runs, so a bad folder fails in a second.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from semantic_pullbacks.errors import InvalidInputError, UnknownClassError
from semantic_pullbacks.evaluation.devkit import devkit_labels, val_index
from semantic_pullbacks.evaluation.seeds import derive_seed
from semantic_pullbacks.examples import list_examples

__all__ = ["IMAGE_SUFFIXES", "EvalImage", "find_images", "imagenet_wnids"]

#: file name endings read as images when a folder is given
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class EvalImage:
    """One image of the benchmark: ``id`` (unique, the key of its result rows), ``path``, ``label`` (class
    index, or None when unknown)."""

    id: str
    path: Path
    label: int | None


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (from timm's bundled synset list)."""
    import importlib.util

    try:  # find the file without importing timm, which takes seconds
        spec = importlib.util.find_spec("timm")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("timm")
        folder = Path(next(iter(spec.submodule_search_locations)))
        text = (folder / "data" / "_info" / "imagenet_synsets.txt").read_text("utf-8")
    except (ImportError, FileNotFoundError, OSError) as err:
        raise InvalidInputError(
            "folder names look like ImageNet wnids (n01440764), but the wnid list comes with timm, which is not "
            "installed; install semantic-pullbacks[vision] or rename the folders to class indices"
        ) from err
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(wnids) != 1000:
        raise InvalidInputError(f"timm's ImageNet synset list has {len(wnids)} entries, expected 1000")
    return wnids


def _image_files(folder: Path) -> list[Path]:
    """The images directly in ``folder``; a link that leads nowhere is an error, like a corrupt file."""
    _check_links(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_links(folder: Path) -> None:
    broken = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_symlink() and not _resolves(p))
    if broken:
        names = ", ".join(repr(_display(p.name)) for p in broken[:5])
        raise InvalidInputError(
            f"images folder {_display(str(folder))!r}: {len(broken)} symbolic link(s) lead nowhere (dangling, or a "
            f"loop): {names}; remove them or point them at images"
        )


def _resolves(path: Path) -> bool:
    try:
        path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop
        return False
    return True


def _display(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (a Latin-1 name) as ``\\xe9`` escapes, never lone surrogates
    that no report, console or seed could encode."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _resolve_folder_class(name: str, class_names: Sequence[str]) -> int:
    """A class folder's name as a class index: wnid, index or exact (case-insensitive) class name."""
    text = name.strip()
    if len(text) == 9 and text[0] == "n" and text[1:].isdigit():
        if len(class_names) != 1000:
            raise InvalidInputError(
                f"folder {name!r} is an ImageNet wnid, but the model has {len(class_names)} classes, not 1000"
            )
        wnids = imagenet_wnids()
        if text not in wnids:
            raise UnknownClassError(f"folder {name!r} is not an ImageNet-1k wnid")
        return wnids.index(text)
    if text.isdigit():
        index = int(text)
        if index >= len(class_names):
            raise UnknownClassError(f"folder {name!r}: class index out of range (the model has {len(class_names)})")
        return index
    lowered = [c.lower() for c in class_names]
    for candidate in (text.lower(), text.lower().replace("_", " ")):
        if candidate in lowered:
            return lowered.index(candidate)
    raise UnknownClassError(
        f"folder {name!r} is not a class of the model: name class folders by ImageNet wnid (n01440764), class "
        "index (0) or exact class name (tench)"
    )


def _round_robin(groups: list[list[EvalImage]]) -> list[EvalImage]:
    """Interleave classes, so the first n images cover as many classes as possible (Focus needs 3)."""
    out: list[EvalImage] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def find_images(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    class_names: Sequence[str],
    n_images: int | None = None,
    *,
    labels: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> list[EvalImage]:
    """Resolve ``images`` (``"examples"``, a folder, an ImageFolder tree, or a list of files) to labelled images;
    with ``n_images``, a subset of that many drawn with ``seed``.

    ``labels``: the ImageNet devkit's ground truth for a flat validation folder (its
    ``ILSVRC2012_validation_ground_truth.txt`` with ``meta.mat`` beside it, the devkit folder, or its
    ``.tar.gz``). ImageFolder trees are listed class by class in turn (first image of each class, then the
    second, ...). The subset is the ``n_images`` images ranked first by a hash of (seed, image id): fixed for a
    seed, independent of how the work is split, and a larger ``n_images`` adds images without dropping any.
    """
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1):
        raise InvalidInputError(f"n_images must be a positive int or None, got {n_images!r}")
    found = _find(images, class_names)
    if not found:
        raise InvalidInputError(f"no images found in {images!r}")
    if labels is not None:
        found = _with_devkit_labels(found, labels, class_names)
    if n_images is None or n_images >= len(found):
        return found
    ranked = sorted(range(len(found)), key=lambda i: derive_seed(seed, "image subset", found[i].id))
    keep = set(ranked[:n_images])
    return [im for i, im in enumerate(found) if i in keep]


def _with_devkit_labels(
    found: list[EvalImage], labels: str | os.PathLike[str], class_names: Sequence[str]
) -> list[EvalImage]:
    """Label ``ILSVRC2012_val_<n>`` files from the devkit's ground truth (line ``n``, an ILSVRC2012 id)."""
    if len(class_names) != 1000:
        raise InvalidInputError(
            f"--labels: the ImageNet devkit labels 1000 classes, but the model has {len(class_names)}"
        )
    by_line = devkit_labels(labels, imagenet_wnids())
    out = []
    for im in found:
        n = val_index(im.path.name)
        if n is None:
            raise InvalidInputError(
                f"--labels: {im.path.name!r} is not named like an ImageNet validation image "
                "(ILSVRC2012_val_00000001.JPEG); the devkit's ground truth labels those files by number"
            )
        if not 1 <= n <= len(by_line):
            raise InvalidInputError(f"--labels: the ground truth has {len(by_line)} lines, no label for {im.path.name}")
        out.append(EvalImage(im.id, im.path, by_line[n - 1]))
    return out


def _find(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], class_names: Sequence[str]
) -> list[EvalImage]:
    if isinstance(images, (list, tuple)):
        files = [Path(p).expanduser() for p in images]
        for f in files:
            if not f.is_file():
                raise InvalidInputError(f"image file {str(f)!r} does not exist")
        return _unique([EvalImage(_display(f.stem), f, None) for f in files])
    if not isinstance(images, (str, os.PathLike)):
        raise InvalidInputError(f"images must be 'examples', a folder or a list of files, got {type(images)!r}")
    path = Path(images).expanduser()
    if not path.exists() and str(images).strip().lower() == "examples":
        return [EvalImage(e.name, e.path, e.label) for e in list_examples()]  # no label: the top-1
    if not path.exists():
        raise InvalidInputError(f"images folder {str(path)!r} does not exist (or pass 'examples' for the bundled set)")
    if path.is_file():
        return [EvalImage(_display(path.stem), path, None)]
    files = _image_files(path)
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    groups = []
    for d in class_dirs:
        inside = _image_files(d)
        if inside:
            label = _resolve_folder_class(_display(d.name), class_names)
            groups.append([EvalImage(f"{_display(d.name)}/{_display(f.stem)}", f, label) for f in inside])
    if groups:
        _refuse_mixed(path, files, [g[0].path.parent for g in groups])
        return _unique(_round_robin(groups))
    if not files:
        raise InvalidInputError(
            f"images folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}), directly or in class "
            "sub-folders"
        )
    return _unique([EvalImage(_display(f.stem), f, None) for f in files])


def _refuse_mixed(path: Path, files: list[Path], class_dirs: list[Path]) -> None:
    """One rule: a folder is either a class tree or a flat folder of images, never both (images beside class
    folders would have no class, and silently leaving them out loses them)."""
    if files:
        names = ", ".join(repr(_display(f.name)) for f in files[:5])
        folders = ", ".join(repr(_display(d.name) + "/") for d in class_dirs[:3])
        raise InvalidInputError(
            f"images folder {_display(str(path))!r} has class sub-folders ({folders}) and {len(files)} image(s) at "
            f"its top ({names}): move those into the folder of their class, or into a folder of their own"
        )


def _unique(images: list[EvalImage]) -> list[EvalImage]:
    """Ids key the result rows, so two files with one stem (a.jpg, a.png) get distinct ids."""
    seen: dict[str, int] = {}
    out = []
    for im in images:
        n = seen.get(im.id, 0)
        seen[im.id] = n + 1
        out.append(im if n == 0 else EvalImage(f"{im.id}~{n}", im.path, im.label))
    return out
