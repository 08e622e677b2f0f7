"""Internal targets: a neuron, a channel, a direction or an encoder's latent at any layer, in place of a class.

A layer target turns the model into the network *cut at that layer*: :class:`LayerCut` runs the model's forward
pass up to the layer, reads its output with a forward hook and returns it; the target's :meth:`~LayerTarget.score`
then makes one scalar per sample of it. Every explainer takes the cut model and the score as it takes any model
and callable target, so the pullback of an internal target is, by construction, the pullback of the cut network.

Layer names are ``model.named_modules()`` names, as Captum's ``layer=`` and torchvision's feature extraction use
them; a name that is the unique dotted tail of a module's name is accepted too, so a wrapped model (a
:class:`~semantic_pullbacks.models.LoadedModel`, a text model's forward module) takes its inner network's names.

Channels: dimension 1 of a 4-D or higher output (``(B, C, H, W)`` conv maps), the last dimension of a 2-D or 3-D
one (``(B, D)`` features, ``(B, T, D)`` tokens); ``channel_dim=`` overrides this.

A module called several times in one forward pass (a shared block, a module reused in a loop) is refused unless
``call=k`` says which call (0-based) to read; it is never silently the last one. The forward pass stops at the
layer (a private exception from the hook, caught by the cut model) once a full pass has shown that the layer is
called once, or as soon as call ``k`` is reached: what lies above the layer plays no part in its pullback.
"""

from __future__ import annotations

import contextlib
import difflib
import numbers
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError, UnknownLayerError

__all__ = [
    "Direction",
    "Feature",
    "LayerCut",
    "LayerInfo",
    "LayerTap",
    "LayerTarget",
    "Neuron",
    "layer_names",
    "layer_output",
    "layer_shapes",
    "resolve_layer",
    "target_value",
]

Index = tuple[int, ...]


# --- naming layers -------------------------------------------------------------------------------------------
def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of ``model`` (not the model itself), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: Any, name: Any) -> str:
    """The full ``named_modules()`` name of layer ``name`` in ``model``, or an error naming the closest ones."""
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"layer targets need an nn.Module model, got {type(model).__name__}")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"a layer is named by a non-empty string from model.named_modules(), got {name!r}")
    names = layer_names(model)
    if name in names:
        return name
    tails = [n for n in names if n.endswith("." + name)]
    if len(tails) == 1:
        return tails[0]
    if tails:
        raise UnknownLayerError(f"layer {name!r} is ambiguous: it ends {len(tails)} names ({', '.join(tails[:5])})")
    short = {n.split(".", 1)[1] if "." in n else n: n for n in names}
    close = difflib.get_close_matches(name, [*names, *short], n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(dict.fromkeys(close))}" if close else ""
    raise UnknownLayerError(
        f"the model has no layer {name!r}{hint} (list them with `semantic-pullbacks layers` or model.named_modules())"
    )


@dataclass(frozen=True)
class LayerInfo:
    """A module as one forward pass met it: its name, type, output shape (``None`` for a non-tensor output) and
    how many times it ran (0: never reached; more than 1: a target there needs ``call=``)."""

    name: str
    kind: str
    shape: tuple[int, ...] | None
    calls: int


def layer_shapes(model: nn.Module, *inputs: Any) -> list[LayerInfo]:
    """Every named module of ``model`` with the output shape of its first call on ``inputs`` (one forward pass
    without gradients; the hooks are removed afterwards, also on failure)."""
    seen: dict[str, list[Any]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            entry = seen.setdefault(name, [None, 0])
            if entry[1] == 0 and not isinstance(output, torch.Tensor) and isinstance(output, (tuple, list)):
                output = output[0] if len(output) == 1 else output
            if entry[1] == 0 and isinstance(output, torch.Tensor):
                entry[0] = tuple(output.shape)
            entry[1] += 1

        return hook

    modules = [(name, module) for name, module in model.named_modules() if name]
    handles = [module.register_forward_hook(record(name)) for name, module in modules]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [LayerInfo(name, type(m).__name__, *seen.get(name, [None, 0])) for name, m in modules]


# --- what is read at the layer -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerTarget:
    """A scalar per sample read from the output of module ``layer``; subclasses say which scalar."""

    layer: str
    #: how to pick a tensor from a layer that returns a tuple/dict (as ``output_selector`` does for models)
    output_selector: int | str | Callable[[Any], torch.Tensor] | None = field(default=None, kw_only=True)
    #: which call of the layer, when it runs several times in one forward pass (0-based); None: it must run once
    call: int | None = field(default=None, kw_only=True)
    #: the dimension holding the channels; None: 1 for outputs of 4 or more dimensions, the last one otherwise
    channel_dim: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InvalidInputError(f"layer must be a module name from model.named_modules(), got {self.layer!r}")
        if self.call is not None and not _is_int(self.call, minimum=0):
            raise InvalidInputError(f"call must be a call index >= 0 or None, got {self.call!r}")
        if self.channel_dim is not None and not _is_int(self.channel_dim, minimum=1):
            raise InvalidInputError(f"channel_dim must be a dimension >= 1 (0 is the batch), got {self.channel_dim!r}")

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        """One scalar per sample, shape ``(B,)``, from the layer's output ``(B, ...)``."""
        raise NotImplementedError

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        return self.score(activation)

    @property
    def label(self) -> str:
        """A short name for figures and results: ``layer:channel``, ``layer[index]``..."""
        return f"{type(self).__name__.lower()} at {self.layer}"

    def _channels_last(self, activation: torch.Tensor) -> torch.Tensor:
        """The activation with its channels moved last: ``(B, *positions, C)``."""
        if activation.dim() < 2:
            raise InvalidInputError(
                f"layer {self.layer!r} outputs shape {tuple(activation.shape)}: a channel needs (batch, ...) outputs"
            )
        dim = self.channel_dim if self.channel_dim is not None else (1 if activation.dim() >= 4 else -1)
        if dim >= activation.dim():
            raise InvalidInputError(
                f"channel_dim={dim} is out of range for layer {self.layer!r}'s output {tuple(activation.shape)}"
            )
        return activation.movedim(dim, -1)

    def _at(self, per_position: torch.Tensor, position: Index | None) -> torch.Tensor:
        """``(B, *positions)`` -> ``(B,)``: the mean over positions, or the value at ``position``."""
        if position is None:
            return per_position.reshape(per_position.shape[0], -1).mean(1)
        return per_position[(slice(None), *_checked_index(position, per_position.shape[1:], "position", self.layer))]


@dataclass(frozen=True)
class Neuron(LayerTarget):
    """Channel ``channel`` of layer ``layer``'s output, averaged over its other positions (or at ``position``),
    or the single unit ``index`` of each sample's output.

    >>> Neuron("blocks.3", channel=17)                  # a conv channel, mean over space
    >>> Neuron("blocks.3", channel=17, position=(4, 5)) # one unit of it
    >>> Neuron("encoder.layer.3", index=(0, 42))        # token 0, hidden dimension 42
    """

    channel: int | None = None
    position: Index | None = None
    index: Index | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.channel is None) == (self.index is None):
            raise InvalidInputError("a Neuron takes channel= (with an optional position=) or index=, not both/neither")
        if self.channel is not None and not _is_int(self.channel, minimum=0):
            raise InvalidInputError(f"channel must be an integer >= 0, got {self.channel!r}")
        if self.index is not None and self.position is not None:
            raise InvalidInputError("index= names a whole unit already; position= goes with channel=")
        object.__setattr__(self, "position", _as_index(self.position, "position"))
        object.__setattr__(self, "index", _as_index(self.index, "index"))

    @property
    def label(self) -> str:
        if self.index is not None:
            return f"{self.layer}{list(self.index)}"
        return f"{self.layer}:{self.channel}" + ("" if self.position is None else f" at {self.position}")

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            index = _checked_index(self.index, activation.shape[1:], "index", self.layer)
            return activation[(slice(None), *index)]
        channels = self._channels_last(activation)
        n = channels.shape[-1]
        if self.channel >= n:
            raise InvalidInputError(
                f"channel {self.channel} is out of range: layer {self.layer!r} has {n} channels (0..{n - 1}) in its "
                f"output of shape {tuple(activation.shape)}"
            )
        return self._at(channels[..., self.channel], self.position)


@dataclass(frozen=True, eq=False)
class Direction(LayerTarget):
    """The projection of layer ``layer``'s output on ``vector`` in its channel space (a concept vector, a probe's
    weight row, an SAE decoder row), averaged over positions or at ``position``."""

    vector: torch.Tensor | None = None
    position: Index | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        v = self.vector
        if not isinstance(v, torch.Tensor) or v.dim() != 1 or not v.is_floating_point():
            got = f"a tensor of shape {tuple(v.shape)} ({v.dtype})" if isinstance(v, torch.Tensor) else repr(v)
            raise InvalidInputError(f"a Direction's vector must be a 1-D float tensor over the channels, got {got}")
        if not bool(torch.isfinite(v).all()):
            raise InvalidInputError("a Direction's vector holds NaN or Inf")
        object.__setattr__(self, "position", _as_index(self.position, "position"))

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        channels = self._channels_last(activation)
        v = self.vector
        if channels.shape[-1] != v.shape[0]:
            raise InvalidInputError(
                f"the vector has {v.shape[0]} entries but layer {self.layer!r} has {channels.shape[-1]} channels "
                f"(output {tuple(activation.shape)}): give one entry per channel"
            )
        return self._at(channels @ v.to(channels.device, channels.dtype), self.position)


@dataclass(frozen=True, eq=False)
class Feature(LayerTarget):
    """Latent ``index`` of ``encode(activation)``: a sparse autoencoder's encoder (``sae.encode``), a linear probe.

    An integer ``index`` picks the latent from the last dimension and averages it over any other positions (an SAE
    over tokens); a tuple indexes each sample's latents exactly.
    """

    encode: Callable[[torch.Tensor], torch.Tensor] | None = None
    index: int | Index | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.encode):
            raise InvalidInputError(f"encode must be a callable activation -> latents, got {self.encode!r}")
        if _is_int(self.index, minimum=0):
            return
        object.__setattr__(self, "index", _as_index(self.index, "index"))
        if self.index is None:
            raise InvalidInputError("a Feature needs index=, the latent to explain")

    @property
    def label(self) -> str:
        return f"latent {self.index} at {self.layer}"

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        latents = self.encode(activation)
        b = activation.shape[0]
        if not isinstance(latents, torch.Tensor) or latents.dim() < 2 or latents.shape[0] != b:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InvalidInputError(f"encode must return latents (batch={b}, ..., K) as a tensor, got {got}")
        if isinstance(self.index, tuple):
            return latents[(slice(None), *_checked_index(self.index, latents.shape[1:], "index", self.layer))]
        k = latents.shape[-1]
        if self.index >= k:
            raise InvalidInputError(f"the encoder has {k} latents (0..{k - 1}); index {self.index} is out of range")
        return self._at(latents[..., self.index], None)


# --- reading the layer ---------------------------------------------------------------------------------------
class _Stop(BaseException):
    """Raised by the hook once the layer is read, caught by :class:`LayerCut`: a BaseException, so a model's own
    ``except Exception`` cannot swallow it."""


#: layers a full forward pass of a model has shown to run exactly once: layer -> the models it was checked in
_CALLED_ONCE: weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet[nn.Module]] = weakref.WeakKeyDictionary()


class _Reader:
    """The forward hook: counts the layer's calls in this thread and keeps the output of the chosen one."""

    def __init__(self, target: LayerTarget, stop: bool) -> None:
        self.target, self.stop = target, stop
        self.calls, self.output = 0, None
        self.thread = threading.get_ident()

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() != self.thread:  # another thread's pass through the same module
            return
        wanted = self.target.call or 0
        if self.calls == wanted:
            self.output = output
        self.calls += 1
        if self.stop and self.calls > wanted:
            raise _Stop


class LayerCut(nn.Module):
    """``model`` cut at ``target.layer``: ``forward(x, *args)`` returns the layer's output (the tensor selected
    from it), computed by the model's own forward pass up to there. The hook lives only during the call."""

    def __init__(self, model: nn.Module, target: LayerTarget) -> None:
        super().__init__()
        self.inner = model
        self.target = target
        self.layer = resolve_layer(model, target.layer)
        self.training = model.training  # report the model's mode; its modules keep their own

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        module = self.inner.get_submodule(self.layer)
        checked = self.inner in _CALLED_ONCE.get(module, ())
        reader = _Reader(self.target, stop=self.target.call is not None or checked)
        handle = module.register_forward_hook(reader)
        try:
            with contextlib.suppress(_Stop):
                self.inner(x, *args)
        finally:
            handle.remove()
        self._check_calls(reader, module)
        return select_layer_output(reader.output, self.target.output_selector, self.layer)

    def _check_calls(self, reader: _Reader, module: nn.Module) -> None:
        call = self.target.call
        if reader.calls == 0:
            raise InvalidInputError(
                f"layer {self.layer!r} is never called in the model's forward pass: pick a layer the pass reaches"
            )
        if call is None and reader.calls > 1:
            raise InvalidInputError(
                f"layer {self.layer!r} is called {reader.calls} times in one forward pass: say which call to read "
                f"with call=0..{reader.calls - 1}"
            )
        if call is not None and reader.output is None:
            raise InvalidInputError(
                f"layer {self.layer!r} is called {reader.calls} times in one forward pass; call={call} is out of range"
            )
        if call is None and not reader.stop:
            _CALLED_ONCE.setdefault(module, weakref.WeakSet()).add(self.inner)


def select_layer_output(output: Any, selector: Any, layer: str) -> torch.Tensor:
    """The tensor to read from a layer's output: ``selector`` picks from a tuple or dict, as for models."""
    if callable(selector):
        output = selector(output)
    elif selector is not None:
        try:
            output = output[selector]
        except (KeyError, IndexError, TypeError) as e:
            raise InvalidInputError(f"output_selector {selector!r} does not fit layer {layer!r}: {e}") from None
    elif isinstance(output, (tuple, list)) and len(output) == 1:
        output = output[0]  # Hugging Face layers return (hidden_states,)
    if not isinstance(output, torch.Tensor):
        raise InvalidInputError(
            f"layer {layer!r} outputs a {type(output).__name__}, not a tensor: pick one with output_selector= (an "
            "index, a key or a callable), as for models"
        )
    return output


class LayerTap:
    """Layer attributions (Captum's ``LayerGradient`` convention): while entered, a forward hook keeps the output
    of layer ``layer``; :meth:`pullback` is the pullback of a score with respect to it. The hook is removed on
    leaving, also by an exception."""

    def __init__(self, model: nn.Module, layer: str, output_selector: Any = None) -> None:
        self.model, self.layer, self.selector = model, resolve_layer(model, layer), output_selector
        self._reader = _Reader(Neuron(layer, index=(0,)), stop=False)

    def __enter__(self) -> LayerTap:
        self._handle = self.model.get_submodule(self.layer).register_forward_hook(self._reader)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()

    def pullback(self, score: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        calls = self._reader.calls
        if calls != 1:
            raise InvalidInputError(
                f"layer {self.layer!r} is called {calls} times in the forward pass; layer attributions need a layer "
                "called exactly once"
            )
        activation = select_layer_output(self._reader.output, self.selector, self.layer)
        if not activation.requires_grad:
            raise InvalidInputError(f"layer {self.layer!r}'s output does not depend on the inputs through autograd")
        (g,) = torch.autograd.grad(score, activation, retain_graph=retain_graph)
        return g


def layer_output(model: nn.Module, layer: str, *inputs: Any, **target_options: Any) -> torch.Tensor:
    """Layer ``layer``'s output on ``inputs``, without gradients, read as layer targets read it (same names, same
    refusals; ``call=``, ``output_selector=`` and ``channel_dim=`` as for targets)."""
    reader = Neuron(layer, index=(0,), **target_options)
    with torch.no_grad():
        return LayerCut(model, reader)(*inputs)


def target_value(model: nn.Module, target: LayerTarget, *inputs: Any) -> torch.Tensor:
    """The target's value per sample, ``(B,)``, without gradients (what an ascent raises)."""
    with torch.no_grad():
        return target.score(LayerCut(model, target)(*inputs))


# --- checks --------------------------------------------------------------------------------------------------
def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= minimum


def _as_index(value: Any, name: str) -> Index | None:
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value or not all(_is_int(v, minimum=0) for v in value):
        raise InvalidInputError(f"{name} must be a tuple of integers >= 0, got {value!r}")
    return tuple(int(v) for v in value)


def _checked_index(index: Index, shape: torch.Size, name: str, layer: str) -> Index:
    dims = tuple(shape)
    if len(index) != len(dims) or any(i >= d for i, d in zip(index, dims)):
        raise InvalidInputError(
            f"{name} {index} does not fit layer {layer!r}: each sample's values there have shape {dims}, so give "
            f"{len(dims)} indices, each below its size"
        )
    return index
