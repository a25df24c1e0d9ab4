"""Every kind of image file becomes the right RGB input, and every bad one a clear ImageError."""
import io

import numpy as np
import pytest
from PIL import Image

from lrp_widgets.engine.images import display_image, open_image, preprocess
from lrp_widgets.errors import ImageError

from .conftest import CASTLE


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(mode="RGB", size=(64, 48)):
    values = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3).astype(np.uint8)
    return Image.fromarray(values, "RGB").convert(mode)


def test_jpeg_from_path_and_bytes_agree():
    assert np.array_equal(np.asarray(open_image(CASTLE)), np.asarray(open_image(CASTLE.read_bytes())))


def test_cmyk_jpeg_converts_to_rgb():
    rgb = Image.new("RGB", (32, 32), (200, 40, 10))
    image = open_image(encode(rgb.convert("CMYK"), "JPEG", quality=100))
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - [200, 40, 10]).max() <= 3


def test_16_bit_png_is_scaled_not_clipped():
    values = np.full((8, 8), 40000, dtype=np.uint16)
    image = open_image(encode(Image.fromarray(values), "PNG"))
    assert image.mode == "RGB" and np.asarray(image)[0, 0].tolist() == [156, 156, 156]  # 40000/257


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_go_on_white(mode):
    image = Image.new(mode, (4, 4), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))
    assert np.asarray(open_image(encode(image, "PNG"))).min() == 255


def test_palette_image_with_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    rgb = np.asarray(open_image(encode(image, "PNG", transparency=0)))
    assert rgb[0, 0].tolist() == [0, 255, 0] and rgb[1, 1].tolist() == [255, 255, 255]


def test_grayscale_becomes_three_equal_channels():
    rgb = np.asarray(open_image(encode(gradient("L"), "PNG")))
    assert rgb.shape == (48, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()


def test_one_pixel_image_is_upscaled():
    assert preprocess(open_image(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"))).shape == (3, 224, 224)


def test_extreme_aspect_ratio_is_cropped_to_the_centre_cheaply():
    image = open_image(encode(gradient("RGB", (4000, 3)), "PNG"))
    assert preprocess(image).shape == (3, 224, 224) and display_image(image).shape == (224, 224, 3)


def test_aspect_crop_does_not_change_ordinary_images():
    from lrp_widgets.engine.images import TRANSFORMS

    image = open_image(CASTLE)
    assert (preprocess(image) == TRANSFORMS(image)).all()


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(open_image(data))[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"this is text, not a JPEG", "not an image"),
    (CASTLE.read_bytes()[:5000], "not an image we can read .truncated after 5000 bytes."),
])
def test_bad_bytes(data, message):
    with pytest.raises(ImageError, match=message):
        open_image(data)


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too many pixels"):
        open_image(encode(Image.new("RGB", (40, 40)), "PNG"))


def test_size_limit(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(encode(gradient(), "PNG"))
    with pytest.raises(ImageError, match="over the 100 bytes limit"):
        open_image(path, max_bytes=100)
    with pytest.raises(ImageError, match="does not exist"):
        open_image(tmp_path / "missing.jpg")
