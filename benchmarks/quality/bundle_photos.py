"""Rebuild the bundled example photos added for issue 14 from the PyPI wheels that ship them.

Sources (see src/semantic_pullbacks/data/examples/LICENSES.md for licences): scikit-image and scikit-learn as
installed (dev dependencies through Quantus), and the SciPy 1.9.3 wheel, the last series that ships
``scipy/misc/face.dat`` and ``ascent.dat`` (fetch it with ``pip download --no-deps scipy==1.9.3 ...`` and unzip
``scipy/misc`` into a folder). Each photo is cropped (box in source pixels), resized to 320×320 (Lanczos) and
saved as JPEG quality 90: 6-45 KB each.

    uv run python benchmarks/quality/bundle_photos.py --scipy-misc /tmp/wheels/sc/scipy/misc
"""

from __future__ import annotations

import argparse
import bz2
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[2] / "src" / "semantic_pullbacks" / "data" / "examples"
#: name -> (source, crop box (left, top, right, bottom) in source pixels)
PHOTOS = {
    "astronaut": ("skimage:astronaut", (0, 0, 512, 512)),
    "china": ("sklearn:china.jpg", (150, 30, 500, 380)),
    "clock": ("skimage:clock", (30, 0, 330, 300)),
    "raccoon": ("scipy:face.dat", (128, 0, 896, 768)),
    "flower": ("sklearn:flower.jpg", (106, 0, 533, 427)),
    "ascent": ("scipy:ascent.dat", (0, 0, 512, 512)),
}


def source(spec: str, scipy_misc: Path) -> np.ndarray:
    package, name = spec.split(":")
    if package == "skimage":
        import skimage.data

        return getattr(skimage.data, name)()
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    raw = (scipy_misc / name).read_bytes()
    if name == "face.dat":  # bz2-compressed raw 768 x 1024 RGB
        return np.frombuffer(bz2.decompress(raw), dtype=np.uint8).reshape(768, 1024, 3)
    return np.asarray(pickle.loads(raw)).astype(np.uint8)  # ascent.dat: a pickled 512 x 512 array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scipy-misc", type=Path, required=True, help="folder holding face.dat and ascent.dat")
    args = parser.parse_args()
    for name, (spec, box) in PHOTOS.items():
        image = Image.fromarray(source(spec, args.scipy_misc)).crop(box).resize((320, 320), Image.LANCZOS)
        image.save(OUT / f"{name}.jpg", quality=90, optimize=True)
        print(f"{name}: {spec} {box} -> {OUT / name}.jpg")


if __name__ == "__main__":
    main()
