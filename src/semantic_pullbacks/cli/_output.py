"""Where results go: files written the moment they are ready, paths printed, progress on stderr.

A long run over many images can be interrupted or hit a bad file; everything finished by then must already
be on disk, complete (written under a temporary name, then renamed), and listed on stdout.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from ..errors import ImageLoadError, InvalidInputError
from ..visualize import save_figure
from ._images import ImageSource

__all__ = ["Output", "output_folder", "slug"]


def output_folder(folder: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create ``folder`` and prove it writable, before any work is done that could not be saved.

    A regular file in the way, a missing permission or a read-only file system is a typed error that names the
    option (exit code 2), not a traceback after the work is done.
    """
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{option} {str(folder)!r} is a file; give a folder to write the results into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise InvalidInputError(
            f"{option} {str(folder)!r}: cannot write there ({reason}); give a folder you can write to"
        ) from None
    return path


def slug(text: str) -> str:
    """A file-name-safe, lower-case form of a class or method name: ``"Egyptian cat"`` -> ``"egyptian-cat"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


class Output:
    """Writes figures and tensors into ``folder`` and reports on the console.

    Use as a context manager around the loop over images; :meth:`advance` moves the progress bar (shown on
    stderr for more than one image when stderr is a terminal).
    """

    def __init__(self, folder: str | os.PathLike[str], total: int, description: str) -> None:
        self.folder = output_folder(folder)
        self.written: list[Path] = []
        self.failures: list[tuple[ImageSource, str]] = []
        self._total = total
        self._description = description
        self._bar: Any = None

    def __enter__(self) -> Output:
        # disable=None: shown on a terminal only, so logs and captured output stay clean
        self._bar = tqdm(
            total=self._total, desc=self._description, unit="image", file=sys.stderr, disable=None
        ) if self._total > 1 else None  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def say(self, text: str) -> None:
        """Print a line to stdout without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def figure(self, fig: Figure, name: str) -> Path:
        """Save ``fig`` as ``name`` + ``.png`` and print its path."""
        return self._atomic(name + ".png", lambda tmp: save_figure(fig, tmp))

    def tensor(self, value: Any, name: str, fmt: str) -> Path:
        """Save a tensor as ``.npy`` (numpy) or ``.pt`` (torch) and print its path."""
        if fmt == "npy":
            array = value.detach().cpu().numpy()
            return self._atomic(name + ".npy", lambda tmp: _save_npy(tmp, array))
        return self._atomic(name + ".pt", lambda tmp: torch.save(value.detach().cpu().clone(), tmp))

    def file(self, filename: str, write: Callable[[Path], object]) -> Path:
        """Write ``filename`` with ``write(path)`` under a temporary name, rename it into place, print its path."""
        return self._atomic(filename, write)

    def _atomic(self, filename: str, write: Callable[[Path], object]) -> Path:
        final = self.folder / filename
        stem, suffix = os.path.splitext(filename)
        tmp = self.folder / f".{stem}.partial{suffix}"  # keeps the suffix: savefig picks the format from it
        try:
            write(tmp)
            os.replace(tmp, final)
        except OSError as e:  # the disk filled up, or the folder was removed or locked during the run
            raise InvalidInputError(
                f"cannot write {final} ({e.strerror or type(e).__name__}); the files listed above are complete"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
        self.written.append(final)
        self.say(f"  wrote {final}")
        return final

    def fail(self, source: ImageSource, message: str) -> None:
        """Record an image that could not be explained; the run goes on and :meth:`finish` reports it."""
        self.failures.append((source, message))
        self.say(f"  skipped {source.label}: {message}")
        self.advance()

    def finish(self) -> int:
        """Summarise, and raise if any image failed (exit code 2, finished files stay on disk)."""
        if self.failures:
            if len(self.failures) == 1:
                raise ImageLoadError(self.failures[0][1])
            listed = "; ".join(message for _, message in self.failures[:5])
            raise ImageLoadError(
                f"{len(self.failures)} images could not be read ({listed}); the other results are in {self.folder}"
            )
        return 0


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save on a path would append ".npy" to our temporary name
        np.save(handle, array)
