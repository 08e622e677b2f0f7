"""Private, restructured copies of the caller's model, for peer packages that can only read a model's module tree.

Rule-based packages (Zennit, Captum's LRP) attach one rule to each module and assume three things about the
tree: every module runs once per forward pass, every residual sum is a module, and a batch norm comes right after
its convolution in the order the modules were registered. Real models break all three (EfficientNet-Lite reuses
one ReLU6 per block, ResNets and MBConv blocks add their skip connections with ``+``, and padded convolutions are
containers, so the batch norm is not the next leaf). Instead of patching the caller's model, a peer works on a
copy that a probe forward pass has restructured:

- each module the pass calls several times becomes a :class:`PerUse` holder, one copy per call (hooks that keep
  per-module state then see each use on its own);
- each ``a + b`` of two tensors that both depend on the input becomes a call of a sum module of the peer's package,
  through :class:`ResidualSums` (the k-th sum of a pass goes to the k-th module);
- (linear, batch norm) pairs are found by following the tensors, not the registration order (:func:`norm_pairs`).

Nothing here imports a peer package; the peers pass in their own sum modules and merge their own pairs.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ...errors import UnsupportedModelError

__all__ = [
    "CopyCache",
    "PerUse",
    "ResidualSums",
    "Restructured",
    "norm_pairs",
    "private_copy",
    "restructure",
    "weights_fingerprint",
]

_SUMS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
         torch.Tensor.add_}  # fmt: skip
_ATTENTION = {torch.softmax, torch.Tensor.softmax, F.softmax, F.scaled_dot_product_attention,
              F.multi_head_attention_forward}  # fmt: skip


def private_copy(model: nn.Module, *, share_weights: bool) -> nn.Module:
    """A copy of ``model``'s module tree. ``share_weights``: its parameters and buffers are the caller's own
    tensors (for packages that only hook modules or set attributes on them); otherwise they are copied too,
    without ``requires_grad`` (for packages that rewrite weights, such as batch-norm merging)."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())} if share_weights else {}
    try:
        duplicate = copy.deepcopy(model, memo)
    except (TypeError, RuntimeError, copy.Error) as error:
        raise UnsupportedModelError(
            f"this method works on a private copy of the model (its package hooks or rewrites modules), and "
            f"{type(model).__name__} cannot be copied: {error}"
        ) from error
    if not share_weights:
        duplicate.requires_grad_(False)
    return duplicate


def weights_fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter or buffer is replaced or written in place, or a module changes mode."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return (id(model), tuple((id(t), t._version) for t in tensors), tuple(m.training for m in model.modules()))


class PerUse(nn.Module):
    """Stands for a module that one forward pass calls several times: the k-th call of a pass runs the k-th copy.

    The copies share the module's parameters, so weight tying stays tying.
    """

    def __init__(self, module: nn.Module, uses: int) -> None:
        super().__init__()
        self.uses = nn.ModuleList(private_copy(module, share_weights=True) for _ in range(uses))
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        module = self.uses[self.calls % len(self.uses)]
        self.calls += 1
        return module(*args, **kwargs)


def _is_residual(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if func not in _SUMS or len(args) != 2 or kwargs.get("alpha", 1) != 1:
        return False
    a, b = args
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.is_floating_point()
        and a.shape == b.shape
        and a.requires_grad
        and b.requires_grad
    )


class ResidualSums(TorchFunctionMode):
    """Counts (``sums=None``) or reroutes the sums of two input-dependent tensors of one forward pass, and counts
    its softmax and attention calls on such tensors.

    In the copies this module builds, parameters do not require gradients, so "requires grad" means "depends on
    the input": a skip connection, never a bias. ``call(module, a, b)`` runs a sum module of the peer's package.
    """

    def __init__(
        self,
        sums: nn.ModuleList | None = None,
        call: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.sums = sums
        self.call = call
        self.seen = 0
        self.attention = 0  # softmax and attention calls on input-dependent tensors

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _ATTENTION and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            self.attention += 1
        if not _is_residual(func, args, kwargs):
            return func(*args, **kwargs)
        k, self.seen = self.seen, self.seen + 1
        if self.sums is None or self.call is None:
            return func(*args, **kwargs)
        if k >= len(self.sums):
            raise UnsupportedModelError(
                f"the model's forward pass added {k + 1} skip connections where the probe pass saw {len(self.sums)}; "
                "peers need a forward pass whose structure does not depend on the input"
            )
        return self.call(self.sums[k], *args)


def norm_pairs(model: nn.Module, run: Callable[[], Any]) -> list[tuple[str, str]]:
    """``(linear name, batch-norm name)`` for every eval-mode batch norm whose input is the very tensor a
    convolution or linear layer returned, each called once in ``run()``, found by following the tensors."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, tuple[torch.Tensor, nn.Module]] = {}
    fed: list[tuple[nn.Module, torch.Tensor]] = []
    calls: Counter[nn.Module] = Counter()

    def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        calls[module] += 1
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(output, torch.Tensor):
            produced[id(output)] = (output, module)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.training and inputs:
            fed.append((module, inputs[0]))

    with _hooked(model, record):
        run()
    pairs = []
    for norm, tensor in fed:
        source = produced.get(id(tensor))
        if source is not None and source[0] is tensor and calls[source[1]] == 1 and calls[norm] == 1:
            pairs.append((names[source[1]], names[norm]))
    return pairs


@contextmanager
def _hooked(model: nn.Module, hook: Callable[..., None]) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class Restructured(nn.Module):
    """The restructured copy: ``inner`` with reused modules split per use, plus the sum modules of its skip
    connections, which a forward pass reaches through :class:`ResidualSums`."""

    def __init__(
        self,
        inner: nn.Module,
        sums: list[nn.Module],
        call: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__()
        self.inner = inner
        # no empty container when there are no sums: rule packages would take it for a leaf without a rule
        self.residual_sums = nn.ModuleList(sums) if sums else ()
        self._call = call

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        for module in self.inner.modules():
            if isinstance(module, PerUse):
                module.calls = 0
        if not isinstance(self.residual_sums, nn.ModuleList):
            return self.inner(*args, **kwargs)
        with ResidualSums(self.residual_sums, self._call):
            return self.inner(*args, **kwargs)


def restructure(
    model: nn.Module,
    run: Callable[[nn.Module], Any],
    make_sum: Callable[[], nn.Module] | None = None,
    call: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = lambda module, a, b: module(a, b),
    before_split: Callable[[nn.Module, Callable[[], Any]], None] | None = None,
) -> Restructured:
    """A private copy of ``model`` (own weights) with reused modules split and, given ``make_sum``, skip
    connections made modules (``call(module, a, b)`` runs one).

    ``run(module)`` does one forward pass of the probe input with gradients on; ``before_split(copy, probe)``
    may rewrite the copy (e.g. merge batch norms) while the module names are still the caller's.
    """
    own = private_copy(model, share_weights=False)
    calls: Counter[nn.Module] = Counter()
    counter = ResidualSums()
    with _hooked(own, lambda m, i, o: calls.update([m])), counter:
        run(own)
    if before_split is not None:
        before_split(own, lambda: run(own))
    _split_reused(own, {m: n for m, n in calls.items() if n > 1})
    sums = [make_sum() for _ in range(counter.seen)] if make_sum is not None else []
    restructured = Restructured(own, sums, call)
    restructured.attention_ops = counter.attention
    return restructured


def _split_reused(model: nn.Module, reused: dict[nn.Module, int]) -> None:
    holders = {m: PerUse(m, n) for m, n in reused.items() if m is not model}
    for parent in list(model.modules()):
        if isinstance(parent, PerUse):
            continue
        for key, child in list(parent._modules.items()):
            if child in holders:
                parent._modules[key] = holders[child]


class CopyCache:
    """One restructured copy per explainer, rebuilt when the caller's weights or modes change; calls take turns
    on it (the peer packages keep per-module state during a call)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._key: Any = None
        self._copy: nn.Module | None = None

    def get(self, model: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
        key = weights_fingerprint(model)
        if self._copy is None or key != self._key:
            self._copy, self._key = build(), key
        return self._copy


def check_same_function(copy: nn.Module, model: nn.Module, x: torch.Tensor, args: tuple[Any, ...], method: str) -> int:
    """Refuse a restructured copy that does not compute what the caller's model computes (a merge or a split
    that did not fit the model), rather than explain another function. Returns the number of outputs per sample."""
    with torch.enable_grad():
        probe = x.detach().requires_grad_(True)
        mine, theirs = _first_tensor(copy(probe, *args)), _first_tensor(model(probe, *args))
    scale = theirs.detach().abs().max().clamp_min(1e-12)
    gap = (mine.detach() - theirs.detach()).abs().max()
    if mine.shape != theirs.shape or not bool(gap <= 1e-3 * scale):
        raise UnsupportedModelError(
            f"{method}: the restructured copy of {type(model).__name__} (reused modules split, skip connections "
            f"and batch norms made explicit for the rules) does not reproduce the model's output (largest "
            f"difference {float(gap):.3g} of {float(scale):.3g}); its forward pass may depend on the input"
        )
    return theirs[0].numel()


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    return next(v for v in values if isinstance(v, torch.Tensor))
