"""What a benchmark scores, one item at a time, and how items are decoded while the model computes.

An :class:`Item` is one input of the table (an image, a Focus mosaic, a text, two texts joined): the key of its
rows, its label and the class it is explained for, its ``kind`` (which metrics run on it) and a ``source`` that a
:class:`Decoder` turns into model inputs. Decoders are plain picklable objects, run by a
:class:`torch.utils.data.DataLoader` in worker processes, so reading and preprocessing the next items overlaps the
explanation and scoring of the current one. A new modality brings its own items and decoder; nothing else changes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from semantic_pullbacks.errors import InvalidInputError, SemanticPullbacksError

__all__ = ["Decoder", "Inputs", "Item", "ItemSource", "combined_digest", "decoded", "file_digest", "text_digest"]


@dataclass(frozen=True)
class Item:
    """One scored input: ``id`` (unique; the key of its rows), ``label`` (true class, None when unknown),
    ``target`` (class explained), ``kind`` (e.g. ``"image"``, ``"mosaic"``) and ``source`` (what the decoder reads:
    a path, or the parts of a mosaic) and ``digest``, a hash of its content: a row is reused on a resumed run only
    while its item's content is unchanged (see :func:`file_digest`)."""

    id: str
    label: int | None
    target: int
    kind: str
    source: Any
    digest: str = ""


def _short(h: Any) -> str:
    return str(h.hexdigest()[:32])


def file_digest(path: str | os.PathLike[str]) -> str:
    """What identifies a file's content: a hash of its bytes, never its name, size or time (a photo replaced by
    another of the same name and size is a new item). The one rule for ``evaluate`` (images and texts) and
    ``explain --resume``. Hashing is cheap next to explaining the file."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as err:  # a dangling link, a loop, a file gone: like a corrupt file, never skipped
        raise InvalidInputError(f"cannot read {os.fsdecode(path)!r}: {err.strerror or err}") from None
    return _short(h)


def text_digest(text: str) -> str:
    """:func:`file_digest` for a text held in memory (lone surrogates hashed as they are, never refused here)."""
    return _short(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16))


def combined_digest(*digests: str) -> str:
    """The digest of an item made of other items (a mosaic, a pair of texts), in order."""
    return text_digest("\x1f".join(digests))


@dataclass
class Inputs:
    """A decoded item: ``x`` (a batch of one, as the model takes it) and ``extra`` keyword arguments the
    metrics of this kind need (Focus: the target's quadrants)."""

    x: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device) -> Inputs:
        return Inputs(self.x.to(device, non_blocking=True), {k: v.to(device) for k, v in self.extra.items()})

    def pin_memory(self) -> Inputs:
        """Page-locked copies, so the copy to a GPU overlaps compute (called by the DataLoader)."""
        return Inputs(self.x.pin_memory(), {k: v.pin_memory() for k, v in self.extra.items()})


class Decoder(Protocol):
    """Turns an item's ``source`` into model inputs; must be picklable (it runs in DataLoader workers). A decoder
    whose work is cheaper than a hop to another process (tokenising a sentence) sets ``in_process = True``."""

    def __call__(self, item: Item) -> Inputs: ...


class ItemSource(Protocol):
    """Where a benchmark's items come from: the one modality-specific step of the pipeline.

    ``items`` lists them (the same list on every rank; ``world`` lets ranks share work such as finding top-1
    targets), with notes on anything left out; ``decoder`` turns them into model inputs. Images:
    :class:`~.images.ImageModality` (files, a decoder that reads and resizes); texts: :class:`~.texts.
    TextModality` (strings, a tokenising decoder).
    """

    def items(self, world: Any, *, metrics: Sequence[str], seed: int, workers: int) -> tuple[list[Item], list[str]]: ...

    def decoder(self) -> Decoder: ...

    def record(self) -> dict[str, Any]:
        """What the run's settings say about the model and data (part of the fingerprint)."""
        ...


class _Decoding(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, items: Sequence[Item], decoder: Decoder) -> None:
        self.items, self.decoder = list(items), decoder

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Inputs | _Failed]:
        try:
            return i, self.decoder(self.items[i])
        except SemanticPullbacksError as err:  # in a worker, DataLoader would wrap it in 30 lines of traceback
            return i, _Failed(err)


@dataclass(frozen=True)
class _Failed:
    """A decoding error carried out of a worker process, raised again as it is in the process that reads it."""

    error: SemanticPullbacksError


def _keep(batch: Any) -> Any:
    return batch


def decoded(
    items: Sequence[Item], decoder: Decoder, device: torch.device, *, workers: int = 1
) -> Iterator[tuple[Item, Inputs]]:
    """``(item, inputs on device)`` in the order of ``items``, decoded by ``workers`` processes ahead of use
    (0: in this process)."""
    if not items:
        return
    if getattr(decoder, "in_process", False):
        workers = 0
    loader = torch.utils.data.DataLoader(
        _Decoding(items, decoder),
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(items)),
        collate_fn=_keep,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for i, inputs in loader:
        if isinstance(inputs, _Failed):
            raise inputs.error
        yield items[i], inputs.to(device)
