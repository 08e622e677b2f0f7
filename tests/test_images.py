"""Image files to tensors: formats, colour modes, orientation, cropping, and every way a file can be bad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from semantic_pullbacks.errors import ImageLoadError, InvalidInputError, SemanticPullbacksError
from semantic_pullbacks.examples import example_path, get_example, list_examples
from semantic_pullbacks.images import image_to_tensor, load_image, load_images, to_display


def _gradient_rgb(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8), mode="RGB")


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "PNG"), (".jpg", "JPEG"), (".webp", "WEBP")])
def test_formats_load_to_the_requested_shape_and_domain(tmp_path, suffix, fmt):
    path = tmp_path / f"img{suffix}"
    _gradient_rgb(96, 64).save(path, format=fmt, quality=95)
    x = load_image(path, size=48)
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    unit = load_image(path, size=48, domain=(0, 1))
    torch.testing.assert_close(unit * 2 - 1, x, atol=1e-6, rtol=0)


def test_png_round_trip_is_exact(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", size=32, domain=(0, 1))
    torch.testing.assert_close(x, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    np.testing.assert_array_equal(to_display(x, (0, 1), dtype="uint8"), pixels)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.full((20, 30), 200, dtype=np.uint8), mode="L").save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png", size=16, domain=(0, 1))
    assert x.shape == (3, 16, 16)
    torch.testing.assert_close(x, torch.full_like(x, 200 / 255))


def test_sixteen_bit_greyscale_is_rescaled_not_clipped(tmp_path):
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "g16.png")
    x = load_image(tmp_path / "g16.png", size=8, domain=(0, 1))
    assert abs(float(x.mean()) - 0.5) < 0.01


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :5, 3] = 0  # left half fully transparent
    rgba[:, 5:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    x = load_image(tmp_path / "t.png", size=10, domain=(0, 1))
    torch.testing.assert_close(x[:, :, :5], torch.ones(3, 10, 5))  # white
    torch.testing.assert_close(x[:, :, 5:], torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 10, 5))


def test_exif_orientation_is_applied(tmp_path):
    # Stored landscape (40 wide, 20 high) with the top half dark; orientation 6 means "rotate 90° clockwise".
    pixels = np.full((20, 40, 3), 255, dtype=np.uint8)
    pixels[:10] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "o.jpg", exif=exif, quality=100)
    x = load_image(tmp_path / "o.jpg", size=20, domain=(0, 1))
    # After rotation the image is portrait with the dark half on the right; the centre crop keeps that.
    assert float(x[:, :, :8].mean()) > 0.9 and float(x[:, :, 12:].mean()) < 0.1


def test_resize_shorter_side_then_centre_crop():
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # white middle third
    x = image_to_tensor(image, size=50, domain=(0, 1), interpolation="nearest")
    assert x.shape == (3, 50, 50)
    assert float(x.min()) > 0.99  # only the white centre survives the crop
    portrait = image.transpose(Image.Transpose.ROTATE_90)
    y = image_to_tensor(portrait, size=50, domain=(0, 1), interpolation="nearest")
    assert float(y.min()) > 0.99
    # Control: squashed to a square first, the black thirds stay inside the crop.
    whole = image_to_tensor(image.resize((100, 100)), size=50, domain=(0, 1), interpolation="nearest")
    assert float(whole.min()) < 0.01


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="not found") as info:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(info.value)
    assert isinstance(info.value, SemanticPullbacksError)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path)


def test_non_image_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a JPEG")
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        load_image(tmp_path / "notes.jpg")


def test_truncated_file(tmp_path):
    _gradient_rgb(200, 200).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.png")


def test_too_many_pixels_is_refused_before_decoding(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="max_pixels"):
        load_image(tmp_path / "big.png", max_pixels=50_000)
    assert load_image(tmp_path / "big.png", max_pixels=60_000).shape == (3, 224, 224)


def test_load_images_batches_and_reports_the_bad_file(tmp_path):
    for name in ("a.png", "b.png"):
        _gradient_rgb(40, 30).save(tmp_path / name)
    batch = load_images([tmp_path / "a.png", tmp_path / "b.png"], size=24)
    assert batch.shape == (2, 3, 24, 24)
    with pytest.raises(ImageLoadError, match=r"missing\.png"):
        load_images([tmp_path / "a.png", tmp_path / "missing.png"])
    with pytest.raises(InvalidInputError):
        load_images([])


def test_to_display_shapes_and_clipping():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 5).expand(3, 1, 5)
    shown = to_display(x, (-1, 1))
    assert shown.shape == (1, 5, 3) and shown.dtype == np.float32
    np.testing.assert_allclose(shown[0, :, 0], [0.0, 0.0, 0.5, 1.0, 1.0])
    assert to_display(torch.zeros(1, 3, 4, 4), dtype="uint8").dtype == np.uint8
    assert to_display(torch.zeros(4, 4)).shape == (4, 4, 3)
    with pytest.raises(InvalidInputError):
        to_display(torch.zeros(2, 3, 4, 4))
    with pytest.raises(InvalidInputError):
        to_display(torch.zeros(3, 4, 4), domain=(1, 0))


def test_bundled_examples_exist_and_have_licences():
    examples = list_examples()
    assert {e.name for e in examples} >= {"chelsea", "coffee"}
    for example in examples:
        assert example.path.is_file()
        assert example.license
        with Image.open(example.path) as image:
            assert min(image.size) >= 224
    assert example_path("Chelsea.jpg") == get_example("chelsea").path
    licences = (examples[0].path.parent / "LICENSES.md").read_text()
    assert all(e.path.name in licences for e in examples)
    # the ImageNet label where one applies, else the model's top-1, is what evaluations explain
    by_name = {e.name: e for e in examples}
    assert by_name["clock"].label == 892 and by_name["clock"].target == 892 != by_name["clock"].expected_class
    assert by_name["raccoon"].label is None and by_name["raccoon"].target == by_name["raccoon"].expected_class
    with pytest.raises(InvalidInputError, match="chelsea"):
        example_path("unicorn")
