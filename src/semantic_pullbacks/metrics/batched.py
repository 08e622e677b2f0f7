"""Model calls on many inputs at once: outputs and target scores in chunks of ``batch_size``, without gradients.

Metrics score thousands of perturbed inputs per sample; these functions keep each model call at ``batch_size``
inputs, so memory stays bounded whatever the number of perturbations, and every metric checks the model's
output and the targets' range the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from semantic_pullbacks.errors import InvalidInputError

__all__ = ["ScoreStream", "chunks", "model_outputs", "target_scores"]


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``[0, size), [size, 2 size), ...`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def model_outputs(model: nn.Module, x: Tensor, *, batch_size: int) -> Tensor:
    """Model outputs for a stack of inputs, in chunks, without gradients (the model is called as is)."""
    outs = [model(x[sl]) for sl in chunks(x.shape[0], batch_size)]
    out = torch.cat(outs)
    if out.ndim != 2:
        raise InvalidInputError(f"model must return logits of shape (N, classes), got {tuple(out.shape)}")
    return out


def target_scores(model: nn.Module, x: Tensor, targets: Tensor, *, batch_size: int, softmax: bool = False) -> Tensor:
    """``f_c(x)`` per row of ``x``: the target logit (or probability with ``softmax=True``)."""
    out = model_outputs(model, x, batch_size=batch_size)
    if bool((targets >= out.shape[1]).any()):
        raise InvalidInputError(f"targets out of range: model has {out.shape[1]} classes, got max {int(targets.max())}")
    if softmax:
        out = out.softmax(dim=1)
    return out.gather(1, targets.reshape(-1, 1)).squeeze(1)


class ScoreStream:
    """Collects perturbed inputs as they are made and scores them in full chunks of ``batch_size``.

    Perturbations are produced in small groups (one patch size, one draw); they are copied into one reusable
    chunk buffer, so model calls run on full batches without holding every perturbed input in memory and
    without re-concatenating tensors.
    """

    def __init__(self, model: nn.Module, *, batch_size: int, softmax: bool) -> None:
        self.model, self.batch_size, self.softmax = model, batch_size, softmax
        self._buf: Tensor | None = None
        self._tbuf: Tensor | None = None
        self._fill = 0
        self._done: list[Tensor] = []

    def push(self, x: Tensor, targets: Tensor) -> None:
        """Queue ``x`` ``(N, ...)`` with its targets ``(N,)``; runs the model whenever a chunk is full."""
        if self._buf is None or self._tbuf is None:
            self._buf = x.new_empty((self.batch_size, *x.shape[1:]))
            self._tbuf = targets.new_empty((self.batch_size,))
        start = 0
        while start < x.shape[0]:
            k = min(self.batch_size - self._fill, x.shape[0] - start)
            self._buf[self._fill : self._fill + k].copy_(x[start : start + k])
            self._tbuf[self._fill : self._fill + k].copy_(targets[start : start + k])
            self._fill += k
            start += k
            if self._fill == self.batch_size:
                self._run()

    def result(self) -> Tensor:
        """All scores, in push order."""
        if self._fill:
            self._run()
        return torch.cat(self._done) if self._done else torch.empty(0)

    def _run(self) -> None:
        if self._buf is None or self._tbuf is None:
            return
        n = self._fill
        self._done.append(target_scores(self.model, self._buf[:n], self._tbuf[:n], batch_size=n, softmax=self.softmax))
        self._fill = 0
