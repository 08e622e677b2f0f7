"""Reading photos into model-ready tensors and back into displayable arrays.

Explanations are only as trustworthy as the pixels fed in: every file goes through the same steps (EXIF
orientation, RGB with alpha composited on white, shorter side resized, centre crop, mapped into the model's
input domain), and anything unreadable fails loudly with :class:`ImageLoadError` naming file and reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semantic_pullbacks.errors import ImageLoadError, InvalidInputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Domain",
    "image_to_tensor",
    "load_image",
    "load_images",
    "to_display",
]

Domain = tuple[float, float]
DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image (width × height) decoded by default: guards against decompression bombs."""

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


def _check_domain(domain: Sequence[float]) -> Domain:
    if len(domain) != 2 or not float(domain[0]) < float(domain[1]):
        raise InvalidInputError(f"domain must be (lo, hi) with lo < hi, e.g. (-1.0, 1.0); got {domain!r}")
    return float(domain[0]), float(domain[1])


def _to_rgb(image):  # PIL.Image.Image -> PIL.Image.Image in mode RGB
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: PIL's convert("L") clips instead of rescaling, so scale by the type's range.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_to_tensor(
    image,
    size: int = 224,
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    resize: int | None = None,
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Turn a PIL image into a ``(3, size, size)`` float32 tensor in ``domain``.

    The shorter side is resized to ``resize`` (default ``size``, i.e. keep as much of the photo as
    possible; pass ``int(size / 0.875)`` for the classic ImageNet evaluation crop), then the centre
    ``size × size`` is cut out. Used by :func:`load_image` and by apps that already hold a decoded image.
    """
    from PIL import Image, ImageOps

    lo, hi = _check_domain(domain)
    if int(size) < 1:
        raise InvalidInputError(f"size must be a positive number of pixels, got {size}")
    resize = size if resize is None else int(resize)
    if resize < size:
        raise InvalidInputError(f"resize ({resize}) must be at least size ({size}) so the crop fits")
    if interpolation not in _INTERPOLATIONS:
        raise InvalidInputError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    if not isinstance(image, Image.Image):
        raise InvalidInputError(f"image must be a PIL.Image.Image, got {type(image).__name__}")

    image = _to_rgb(ImageOps.exif_transpose(image))
    width, height = image.size
    scale = resize / min(width, height)
    new_size = (max(resize, round(width * scale)), max(resize, round(height * scale)))
    if new_size != image.size:
        resample = getattr(Image.Resampling, interpolation.upper())
        image = image.resize(new_size, resample=resample)
    left = (new_size[0] - size) // 2
    top = (new_size[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    return pixels * (hi - lo) + lo


def _open_checked(path: str | os.PathLike[str], max_pixels: int | None):
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.exists():
        raise ImageLoadError(f"cannot load image {str(path)!r}: file not found")
    if not file.is_file():
        raise ImageLoadError(f"cannot load image {str(path)!r}: not a regular file")
    try:
        with warnings.catch_warnings():
            # We apply our own, configurable pixel limit below; PIL's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                image.close()
                raise ImageLoadError(
                    f"cannot load image {str(path)!r}: {width}×{height} = {width * height:,} pixels exceeds "
                    f"max_pixels={max_pixels:,}; downscale the file or pass a larger max_pixels"
                )
            image.load()
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            f"cannot load image {str(path)!r}: refused as a possible decompression bomb ({error})"
        ) from error
    except UnidentifiedImageError as error:
        raise ImageLoadError(
            f"cannot load image {str(path)!r}: not a recognised image format (JPEG, PNG, WebP, ...)"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        reason = f"file is corrupt or truncated ({error})"
        raise ImageLoadError(f"cannot load image {str(path)!r}: {reason}") from error
    return image


def load_image(
    path: str | os.PathLike[str],
    size: int = 224,
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    resize: int | None = None,
    interpolation: str = "bicubic",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Read an image file as a ``(3, size, size)`` float32 tensor in ``domain``.

    JPEG, PNG, WebP, GIF (first frame), BMP and TIFF are read; greyscale becomes RGB, transparency is
    composited on white and EXIF orientation is applied. Images larger than ``max_pixels`` are refused before
    decoding (``None`` disables the check). See :func:`image_to_tensor` for ``resize``.

    >>> x = load_image("cat.jpg")            # (3, 224, 224) in [-1, 1], the default model's domain
    """
    image = _open_checked(path, max_pixels)
    try:
        return image_to_tensor(image, size, domain, resize=resize, interpolation=interpolation)
    finally:
        image.close()


def load_images(
    paths: Sequence[str | os.PathLike[str]],
    size: int = 224,
    domain: Sequence[float] = (-1.0, 1.0),
    *,
    resize: int | None = None,
    interpolation: str = "bicubic",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Read several image files as one ``(N, 3, size, size)`` batch (same steps as :func:`load_image`)."""
    if isinstance(paths, (str, os.PathLike)):
        raise InvalidInputError("paths must be a sequence of paths; for a single file use load_image()")
    if len(paths) == 0:
        raise InvalidInputError("paths is empty; give at least one image file")
    return torch.stack(
        [load_image(p, size, domain, resize=resize, interpolation=interpolation, max_pixels=max_pixels) for p in paths]
    )


def as_cpu_float(
    value: Any, name: str, shapes: str, ndims: Collection[int], *, squeeze_batch: bool = False
) -> torch.Tensor:
    """``value`` detached, as float32 on the CPU, for drawing: refused unless a tensor of ``ndims`` dimensions.

    ``shapes`` names the accepted shapes in the error. With ``squeeze_batch``, a batch of one (one dimension more
    than the most accepted, of size 1) stands for its single item. Every image and map drawn goes through here, so
    each bad argument is refused with its own name instead of failing somewhere inside numpy or matplotlib.
    """
    if not isinstance(value, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    x = value.detach().to("cpu", torch.float32)
    if squeeze_batch and x.ndim == max(ndims) + 1 and x.shape[0] == 1:
        x = x[0]
    if x.ndim not in ndims:
        raise InvalidInputError(f"{name} must have shape {shapes}; got {tuple(value.shape)}")
    return x


_DISPLAY_SHAPES = "(3, H, W), (1, 3, H, W), (1, H, W) or (H, W)"


def to_display(tensor: torch.Tensor, domain: Sequence[float] = (-1.0, 1.0), *, dtype: str = "float") -> np.ndarray:
    """Map an image tensor in ``domain`` to an ``H×W×3`` array for display.

    Accepts ``(3, H, W)``, ``(1, 3, H, W)``, ``(1, H, W)`` or ``(H, W)``; values outside the domain (e.g. of a
    counterfactual after unclipped ascent) are clipped. ``dtype`` is ``"float"`` (float32 in [0, 1]) or
    ``"uint8"``.
    """
    lo, hi = _check_domain(domain)
    if dtype not in ("float", "uint8"):
        raise InvalidInputError(f"dtype must be 'float' or 'uint8', got {dtype!r}")
    x = as_cpu_float(tensor, "tensor", _DISPLAY_SHAPES, (2, 3), squeeze_batch=True)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.shape[0] not in (1, 3):
        raise InvalidInputError(f"tensor must have shape {_DISPLAY_SHAPES}; got {tuple(tensor.shape)}")
    x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0).expand(3, -1, -1)
    array = x.permute(1, 2, 0).contiguous().numpy()
    if dtype == "uint8":
        return (array * 255.0 + 0.5).astype(np.uint8)
    return array
