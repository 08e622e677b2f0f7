"""ImageNet's validation labels as the devkit ships them.

The flat validation folder (``ILSVRC2012_val_00000001.JPEG`` ... ``_00050000.JPEG``) comes with
``ILSVRC2012_devkit_t12``: ``data/ILSVRC2012_validation_ground_truth.txt`` holds one label per image, line ``n``
for image ``n``, as an *ILSVRC2012 id* (1-1000). Those ids are numbered in the devkit's own synset order, not in
the sorted-wnid order of the class indices every model uses, so ``data/meta.mat`` (id -> wnid) is read to map them.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["devkit_labels", "val_index"]

GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META = "meta.mat"
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.\w+$", re.IGNORECASE)


def val_index(filename: str) -> int | None:
    """The number of a validation image from its file name (``ILSVRC2012_val_00000042.JPEG`` -> 42)."""
    m = _VAL_NAME.match(filename)
    return int(m.group(1)) if m else None


def devkit_labels(path: str | os.PathLike[str], wnids: Sequence[str]) -> list[int]:
    """Class index (in ``wnids`` order) of validation image ``n`` at position ``n - 1``.

    ``path``: the ground-truth text file (``meta.mat`` must sit beside it), the devkit folder, or the devkit's
    ``.tar.gz``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidInputError(f"--labels {str(path)!r} does not exist; give the devkit's {GROUND_TRUTH}")
    if p.is_file() and tarfile.is_tarfile(p):
        ground_truth, meta = _from_tar(p)
    else:
        text_path = p if p.is_file() else _find(p, GROUND_TRUTH)
        meta_path = text_path.parent / META
        if not meta_path.exists():
            raise InvalidInputError(
                f"--labels: {META} is missing beside {str(text_path)!r}; the devkit's ids need its id -> wnid table "
                "(keep the devkit's data/ folder together, or pass the devkit folder or .tar.gz)"
            )
        ground_truth, meta = text_path.read_text("utf-8"), meta_path.read_bytes()
    id_to_wnid = _read_meta(meta)
    index = {w: i for i, w in enumerate(wnids)}
    out = []
    for n, line in enumerate(ground_truth.split(), start=1):
        try:
            wnid = id_to_wnid[int(line)]
        except (ValueError, KeyError):
            raise InvalidInputError(
                f"--labels: line {n} of the ground truth, {line!r}, is not an ILSVRC2012 id"
            ) from None
        if wnid not in index:
            raise InvalidInputError(f"--labels: {wnid} (ILSVRC2012 id {line}) is not an ImageNet-1k class")
        out.append(index[wnid])
    if not out:
        raise InvalidInputError(f"--labels {str(path)!r}: the ground truth is empty")
    return out


def _find(folder: Path, name: str) -> Path:
    found = sorted(folder.rglob(name))
    if not found:
        raise InvalidInputError(f"--labels: no {name} under {str(folder)!r}")
    return found[0]


def _from_tar(path: Path) -> tuple[str, bytes]:
    with tarfile.open(path) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        missing = [n for n in (GROUND_TRUTH, META) if n not in members]
        if missing:
            raise InvalidInputError(f"--labels {str(path)!r} has no {' or '.join(missing)}; is it the ImageNet devkit?")
        text = tar.extractfile(members[GROUND_TRUTH]).read().decode("utf-8")  # type: ignore[union-attr]
        meta = tar.extractfile(members[META]).read()  # type: ignore[union-attr]
    return text, meta


def _read_meta(data: bytes) -> dict[int, str]:
    """ILSVRC2012 id -> wnid of the 1000 leaf synsets in the devkit's ``meta.mat``."""
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise InvalidInputError(
            "--labels: reading the devkit's meta.mat needs scipy (pip install scipy), or sort the validation images "
            "into wnid folders and pass that folder without --labels"
        ) from err
    try:
        synsets: Any = loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        table = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise InvalidInputError(f"--labels: {META} is not the ImageNet devkit's synset table ({err})") from err
    if len(table) != 1000:
        raise InvalidInputError(f"--labels: {META} lists {len(table)} leaf synsets, expected 1000")
    return table
