"""Figures for attributions: signed heat maps, input ⊙ attribution, overlays, counterfactuals, grids.

Pure functions over tensors that return a :class:`matplotlib.figure.Figure` built directly (never through
``pyplot``), so no global figure state leaks between calls, threads or web requests. Signed maps use a
symmetric diverging colormap (red = evidence for the class, blue = against) whose limit is a robust percentile
of |attribution|, so a few extreme pixels cannot wash the map out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.images import as_cpu_float, to_display

# matplotlib is imported where it draws, so importing this module stays cheap (calibration does, for save_figure)
if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_CMAP",
    "figure_to_array",
    "heatmap_rgb",
    "overlay_rgb",
    "plot_class_grid",
    "plot_counterfactual",
    "plot_counterfactual_grid",
    "plot_explanation",
    "plot_heatmap",
    "plot_input_times_attribution",
    "plot_method_grid",
    "plot_overlay",
    "probability_note",
    "reduce_channels",
    "robust_vmax",
    "save_figure",
]

DEFAULT_CMAP = "RdBu_r"
_PANEL_INCHES = 2.6
_DPI = 100
#: what a single map (or image, for the maps drawn from it) may be
_MAP_SHAPES = "(C, H, W), (1, C, H, W) or (H, W)"


# ---------------------------------------------------------------------------------------------- numeric helpers


def reduce_channels(attribution: torch.Tensor, how: str = "sum") -> torch.Tensor:
    """Collapse a ``(3, H, W)`` (or ``(1, 3, H, W)``) attribution to a signed ``(H, W)`` map on the CPU.

    ``how``: ``"sum"`` (default; the first-order contribution of a pixel), ``"mean"``, or ``"abs"`` (sum of
    absolute values, unsigned). A ``(H, W)`` input is returned as is.
    """
    a = as_cpu_float(attribution, "attribution", _MAP_SHAPES, (2, 3), squeeze_batch=True)
    if a.ndim == 2:
        return a
    if how == "sum":
        return a.sum(0)
    if how == "mean":
        return a.mean(0)
    if how == "abs":
        return a.abs().sum(0)
    raise InvalidInputError(f"how must be 'sum', 'mean' or 'abs', got {how!r}")


def robust_vmax(maps: torch.Tensor | Sequence[torch.Tensor], percentile: float = 99.5) -> float:
    """The ``percentile`` of |values| over one map or several (for a shared scale); never zero."""
    if not 0.0 < percentile <= 100.0:
        raise InvalidInputError(f"percentile must be in (0, 100], got {percentile}")
    tensors = [maps] if isinstance(maps, torch.Tensor) else list(maps)
    if not tensors:
        raise InvalidInputError("maps is empty; give at least one attribution map")
    values = torch.cat([t.detach().to("cpu", torch.float32).abs().flatten() for t in tensors])
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return 1.0
    vmax = float(torch.quantile(values[:16_000_000], percentile / 100.0))
    if vmax <= 0.0:
        vmax = float(values.max())
    return vmax if vmax > 0.0 else 1.0


def _signed_map(attribution: torch.Tensor, how: str) -> np.ndarray:
    return reduce_channels(attribution, how).numpy()


def heatmap_rgb(
    attribution: torch.Tensor,
    *,
    vmax: float | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
    how: str = "sum",
) -> np.ndarray:
    """Signed heat map as an ``H×W×3`` uint8 array (white = 0), e.g. for a web app."""
    signed = _signed_map(attribution, how)
    limit = robust_vmax(torch.from_numpy(signed), percentile) if vmax is None else float(vmax)
    if limit <= 0:
        raise InvalidInputError(f"vmax must be positive, got {vmax}")
    from matplotlib import colormaps

    normalised = np.clip(signed / limit, -1.0, 1.0) * 0.5 + 0.5
    rgba = colormaps[cmap](normalised)
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay_rgb(
    image: torch.Tensor,
    attribution: torch.Tensor,
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    vmax: float | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.8,
    how: str = "sum",
) -> np.ndarray:
    """The heat map laid over a dimmed greyscale copy of the image, as ``H×W×3`` uint8.

    Opacity grows with |attribution|, so weak evidence leaves the photo visible and strong evidence shows
    in colour.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha must be in [0, 1], got {alpha}")
    picture = to_display(image, domain)
    signed = _signed_map(attribution, how)
    if signed.shape != picture.shape[:2]:
        raise InvalidInputError(
            f"attribution is {signed.shape[0]}×{signed.shape[1]} but the image is "
            f"{picture.shape[0]}×{picture.shape[1]}; they must match"
        )
    from matplotlib import colormaps

    limit = robust_vmax(torch.from_numpy(signed), percentile) if vmax is None else float(vmax)
    grey = picture @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    base = np.repeat((0.35 + 0.5 * grey)[..., None], 3, axis=2)
    strength = np.clip(np.abs(signed) / limit, 0.0, 1.0)[..., None]
    colour = colormaps[cmap](np.clip(signed / limit, -1.0, 1.0) * 0.5 + 0.5)[..., :3]
    weight = alpha * np.sqrt(strength)
    blended = base * (1.0 - weight) + colour * weight
    return (np.clip(blended, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- figure helpers


def _figure(rows: int, cols: int, panel: float = _PANEL_INCHES, extra_width: float = 0.0) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cols * panel + extra_width, rows * panel + 0.35), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _bare(ax) -> None:  # matplotlib Axes
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _title(ax, text: str | None, size: float = 9.0) -> None:
    if text:
        ax.set_title(text, fontsize=size, pad=3)


def _show_signed(ax, signed: np.ndarray, vmax: float, cmap: str):
    return ax.imshow(signed, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")


def _colorbar(fig: Figure, axes, vmax: float, cmap: str, label: str = "attribution") -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(-vmax, vmax), cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, fraction=0.05, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _batch(tensors: torch.Tensor, name: str) -> torch.Tensor:
    batch = as_cpu_float(tensors, name, "(N, C, H, W) or (C, H, W)", (3, 4))
    return batch.unsqueeze(0) if batch.ndim == 3 else batch


def _joined(*parts: str | None) -> str | None:
    text = " · ".join(p for p in parts if p)
    return text or None


# ---------------------------------------------------------------------------------------------- single figures


def plot_heatmap(
    attribution: torch.Tensor,
    *,
    title: str | None = None,
    vmax: float | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
    how: str = "sum",
    colorbar: bool = True,
) -> Figure:
    """One signed heat map (channels summed) on a symmetric diverging scale, with an optional colour bar."""
    signed = _signed_map(attribution, how)
    limit = robust_vmax(torch.from_numpy(signed), percentile) if vmax is None else float(vmax)
    fig = _figure(1, 1, panel=3.6, extra_width=0.7 if colorbar else 0.0)
    ax = fig.add_subplot(1, 1, 1)
    _show_signed(ax, signed, limit, cmap)
    _bare(ax)
    _title(ax, title, 10)
    if colorbar:
        _colorbar(fig, ax, limit, cmap)
    return fig


def plot_input_times_attribution(
    image: torch.Tensor,
    attribution: torch.Tensor,
    *,
    title: str | None = None,
    vmax: float | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
    colorbar: bool = True,
) -> Figure:
    """Signed map of ``image ⊙ attribution`` summed over channels: each pixel's first-order contribution
    relative to a zero (mid-grey in [-1, 1]) baseline."""
    picture = as_cpu_float(image, "image", _MAP_SHAPES, (2, 3, 4))
    a = as_cpu_float(attribution, "attribution", _MAP_SHAPES, (2, 3, 4))
    if picture.shape[-3:] != a.shape[-3:]:
        raise InvalidInputError(
            f"image {tuple(image.shape)} and attribution {tuple(attribution.shape)} must have the same shape"
        )
    return plot_heatmap(
        picture * a,
        title=title,
        vmax=vmax,
        percentile=percentile,
        cmap=cmap,
        colorbar=colorbar,
    )


def plot_overlay(
    image: torch.Tensor,
    attribution: torch.Tensor,
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    title: str | None = None,
    vmax: float | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.8,
) -> Figure:
    """The signed heat map drawn over the image (see :func:`overlay_rgb`)."""
    rgb = overlay_rgb(image, attribution, domain, vmax=vmax, percentile=percentile, cmap=cmap, alpha=alpha)
    fig = _figure(1, 1, panel=3.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(rgb)
    _bare(ax)
    _title(ax, title, 10)
    return fig


def plot_explanation(
    image: torch.Tensor,
    attribution: torch.Tensor,
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    image_title: str | None = None,
    class_name: str | None = None,
    method: str | None = None,
    vmax: float | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
) -> Figure:
    """One row: the image, the signed heat map, input ⊙ attribution and the overlay, with a shared title."""
    signed = _signed_map(attribution, "sum")
    limit = robust_vmax(torch.from_numpy(signed), percentile) if vmax is None else float(vmax)
    picture = as_cpu_float(image, "image", _MAP_SHAPES, (2, 3, 4))
    product = reduce_channels(picture * as_cpu_float(attribution, "attribution", _MAP_SHAPES, (2, 3, 4))).numpy()
    product_limit = robust_vmax(torch.from_numpy(product), percentile)
    fig = _figure(1, 4, extra_width=0.6)
    panels = fig.subplots(1, 4)
    panels[0].imshow(to_display(image, domain))
    _title(panels[0], image_title or "input")
    _show_signed(panels[1], signed, limit, cmap)
    _title(panels[1], "attribution")
    _show_signed(panels[2], product, product_limit, cmap)
    _title(panels[2], "input ⊙ attribution")
    panels[3].imshow(overlay_rgb(image, attribution, domain, vmax=limit, cmap=cmap))
    _title(panels[3], "overlay")
    for ax in panels:
        _bare(ax)
    _colorbar(fig, panels[1:], 1.0, cmap, label="relative attribution")
    heading = _joined(class_name and f"class: {class_name}", method)
    if heading:
        fig.suptitle(heading, fontsize=11)
    return fig


def probability_note(before: float, after: float) -> str:
    """``"p 0.61 → 0.98"`` for an image that raised the target's probability; said plainly when it did not.

    An image that lowers the probability of the class it was pushed towards is no counterfactual for that class
    (its logit may still have risen, with others rising faster), so figures and messages must not present it as
    one.
    """
    text = f"p {before:.2f} → {after:.2f}"
    if after > before:
        return text
    return f"{text}: {'lowered' if after < before else 'not raised'}, not a counterfactual"


def plot_counterfactual(
    image: torch.Tensor,
    counterfactual: torch.Tensor,
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    title: str | None = None,
    class_name: str | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
) -> Figure:
    """Input, counterfactual (clipped to ``domain`` for display) and their signed difference."""
    picture = as_cpu_float(image, "image", _MAP_SHAPES, (2, 3, 4))
    changed = as_cpu_float(counterfactual, "counterfactual", _MAP_SHAPES, (2, 3, 4))
    if picture.shape[-3:] != changed.shape[-3:]:
        raise InvalidInputError(
            f"image {tuple(image.shape)} and counterfactual {tuple(counterfactual.shape)} must match"
        )
    difference = changed - picture
    signed = _signed_map(difference, "sum")
    limit = robust_vmax(torch.from_numpy(signed), percentile)
    fig = _figure(1, 3, extra_width=0.6)
    panels = fig.subplots(1, 3)
    panels[0].imshow(to_display(image, domain))
    _title(panels[0], "input")
    panels[1].imshow(to_display(counterfactual, domain))
    _title(panels[1], f"counterfactual → {class_name}" if class_name else "counterfactual")
    _show_signed(panels[2], signed, limit, cmap)
    _title(panels[2], "difference")
    for ax in panels:
        _bare(ax)
    _colorbar(fig, panels[2], limit, cmap, label="change")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------- grids


def plot_class_grid(
    images: torch.Tensor,
    attributions: torch.Tensor,
    class_names: Sequence[str] | Sequence[Sequence[str]],
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    image_titles: Sequence[str] | None = None,
    method: str | None = None,
    shared_scale: bool = False,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
) -> Figure:
    """The paper's image × target-class grid: one row per image, the image first, then one map per class.

    ``attributions`` is ``(N, T, C, H, W)``; ``class_names`` is one list of T names shared by all rows, or one
    list per row. ``shared_scale`` puts every map on one colour scale (with a colour bar) so magnitudes compare
    across classes; otherwise each map is scaled on its own.
    """
    batch = _batch(images, "images")
    if attributions.ndim == 4 and batch.shape[0] == 1:
        attributions = attributions.unsqueeze(0)
    if attributions.ndim != 5 or attributions.shape[0] != batch.shape[0]:
        raise InvalidInputError(
            f"attributions must have shape (N, T, C, H, W) with N = {batch.shape[0]} images, "
            f"got {tuple(attributions.shape)}"
        )
    n, t = attributions.shape[:2]
    names = _per_row_names(class_names, n, t)
    if image_titles is not None and len(image_titles) != n:
        raise InvalidInputError(f"image_titles has {len(image_titles)} entries for {n} images")
    maps = [[_signed_map(attributions[i, j], "sum") for j in range(t)] for i in range(n)]
    shared = robust_vmax([torch.from_numpy(m) for row in maps for m in row], percentile) if shared_scale else None
    fig = _figure(n, t + 1, extra_width=0.6 if shared_scale else 0.0)
    axes = np.atleast_2d(fig.subplots(n, t + 1, squeeze=False))
    for i in range(n):
        axes[i, 0].imshow(to_display(batch[i], domain))
        _title(axes[i, 0], image_titles[i] if image_titles else "input")
        for j in range(t):
            limit = shared if shared is not None else robust_vmax(torch.from_numpy(maps[i][j]), percentile)
            _show_signed(axes[i, j + 1], maps[i][j], limit, cmap)
            _title(axes[i, j + 1], names[i][j])
        for ax in axes[i]:
            _bare(ax)
    if shared is not None:
        _colorbar(fig, axes[:, 1:].ravel().tolist(), shared, cmap)
    if method:
        fig.suptitle(method, fontsize=11)
    return fig


def plot_counterfactual_grid(
    images: torch.Tensor,
    counterfactuals: torch.Tensor,
    class_names: Sequence[str] | Sequence[Sequence[str]],
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    image_titles: Sequence[str] | None = None,
    notes: Sequence[Sequence[str]] | None = None,
    differences: bool = True,
    method: str | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
) -> Figure:
    """The paper's image × target-class grid of counterfactuals: per image a row of counterfactual images (the
    input first), and with ``differences`` a second row with each signed change ``counterfactual − input``.

    ``counterfactuals`` is ``(N, T, C, H, W)``; ``class_names`` as in :func:`plot_class_grid`; ``notes`` is an
    optional N × T table of short texts shown under each class name (e.g. ``"p 0.19 → 0.98"``).
    """
    batch = _batch(images, "images")
    if counterfactuals.ndim == 4 and batch.shape[0] == 1:
        counterfactuals = counterfactuals.unsqueeze(0)
    if counterfactuals.ndim != 5 or counterfactuals.shape[0] != batch.shape[0]:
        raise InvalidInputError(
            f"counterfactuals must have shape (N, T, C, H, W) with N = {batch.shape[0]} images, "
            f"got {tuple(counterfactuals.shape)}"
        )
    if counterfactuals.shape[2:] != batch.shape[1:]:
        raise InvalidInputError(
            f"counterfactuals {tuple(counterfactuals.shape)} do not match images {tuple(batch.shape)}"
        )
    n, t = counterfactuals.shape[:2]
    names = _per_row_names(class_names, n, t)
    if image_titles is not None and len(image_titles) != n:
        raise InvalidInputError(f"image_titles has {len(image_titles)} entries for {n} images")
    if notes is not None and (len(notes) != n or any(len(row) != t for row in notes)):
        raise InvalidInputError(f"notes must be {n} rows of {t} texts")
    changed = counterfactuals.detach().to("cpu", torch.float32)
    rows = 2 if differences else 1
    fig = _figure(n * rows, t + 1)
    axes = fig.subplots(n * rows, t + 1, squeeze=False)
    for i in range(n):
        top = axes[i * rows]
        top[0].imshow(to_display(batch[i], domain))
        _title(top[0], image_titles[i] if image_titles else "input")
        for j in range(t):
            top[j + 1].imshow(to_display(changed[i, j], domain))
            _title(top[j + 1], "\n".join(filter(None, [f"→ {names[i][j]}", notes[i][j] if notes else None])))
        if differences:
            bottom = axes[i * rows + 1]
            maps = [_signed_map(changed[i, j] - batch[i], "sum") for j in range(t)]
            limit = robust_vmax([torch.from_numpy(m) for m in maps], percentile)
            bottom[0].axis("off")
            bottom[0].text(0.5, 0.5, "change\nred: brighter\nblue: darker", ha="center", va="center", fontsize=9)
            for j in range(t):
                _show_signed(bottom[j + 1], maps[j], limit, cmap)
        for ax in axes[i * rows : (i + 1) * rows].ravel():
            _bare(ax)
    if method:
        fig.suptitle(method, fontsize=11)
    return fig


def plot_method_grid(
    images: torch.Tensor,
    attributions: Mapping[str, torch.Tensor],
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    image_titles: Sequence[str] | None = None,
    class_name: str | None = None,
    percentile: float = 99.5,
    cmap: str = DEFAULT_CMAP,
) -> Figure:
    """Methods side by side: one row per image, the image first, then one column per method (each map on its
    own robust scale, since methods differ in units)."""
    batch = _batch(images, "images")
    if not attributions:
        raise InvalidInputError("attributions is empty; map method names to (N, C, H, W) tensors")
    n = batch.shape[0]
    columns = {name: _batch(a, f"attributions[{name!r}]") for name, a in attributions.items()}
    for name, a in columns.items():
        if a.shape[0] != n or a.shape[-2:] != batch.shape[-2:]:
            raise InvalidInputError(
                f"attributions[{name!r}] has shape {tuple(a.shape)}, expected ({n}, C, "
                f"{batch.shape[-2]}, {batch.shape[-1]})"
            )
    if image_titles is not None and len(image_titles) != n:
        raise InvalidInputError(f"image_titles has {len(image_titles)} entries for {n} images")
    fig = _figure(n, len(columns) + 1)
    axes = fig.subplots(n, len(columns) + 1, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_display(batch[i], domain))
        _title(axes[i, 0], image_titles[i] if image_titles else "input")
        for j, (name, a) in enumerate(columns.items(), start=1):
            signed = _signed_map(a[i], "sum")
            _show_signed(axes[i, j], signed, robust_vmax(torch.from_numpy(signed), percentile), cmap)
            _title(axes[i, j], name)
        for ax in axes[i]:
            _bare(ax)
    if class_name:
        fig.suptitle(f"class: {class_name}", fontsize=11)
    return fig


def _per_row_names(class_names: Sequence[str] | Sequence[Sequence[str]], rows: int, cols: int) -> list[list[str]]:
    if len(class_names) == cols and all(isinstance(c, str) for c in class_names):
        return [list(class_names) for _ in range(rows)]  # type: ignore[arg-type]
    if len(class_names) == rows and all(not isinstance(c, str) and len(c) == cols for c in class_names):
        return [list(c) for c in class_names]  # type: ignore[arg-type]
    raise InvalidInputError(f"class_names must be {cols} names (shared by all rows) or {rows} lists of {cols} names")


# ---------------------------------------------------------------------------------------------- output


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int | None = None) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, PNG by default) and return the path.

    The saved image is exactly ``figsize × dpi`` pixels (no tight bounding box), so sizes are predictable.
    """
    target = Path(path)
    if not target.suffix:
        target = target.with_suffix(".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=dpi or fig.dpi, facecolor="white")
    return target


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` to an ``H×W×3`` uint8 RGB array (for web apps and tests)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
