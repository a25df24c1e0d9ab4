"""Reading any image Pillow can read into RGB, and preprocessing it exactly as torchvision's weights do.

>>> from PIL import Image
>>> preprocess(Image.new("RGB", (320, 240))).shape
torch.Size([3, 224, 224])
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.models import VGG16_Weights
from torchvision.transforms._presets import ImageClassification

from ..errors import ImageError

#: Default limit on the size of an image file or upload.
MAX_BYTES = 20 * 1024 * 1024
#: Longer sides beyond this many times the shorter are cropped to the centre first: the centre crop
#: never sees them, and resizing them would cost gigabytes.
MAX_ASPECT = 4
TRANSFORMS = VGG16_Weights.IMAGENET1K_V1.transforms()
#: ImageNet normalisation of torchvision's weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def open_image(source: str | Path | bytes | Image.Image, max_bytes: int = MAX_BYTES, name: str = "") -> Image.Image:
    """An RGB image from a path, the bytes of a file, or a PIL image, whatever its mode.

    Transparent images are put on white; 16-bit and float images are scaled; animated images give
    their first frame. Errors name the file (``name`` for bytes, e.g. an upload's file name).
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), name or "the upload"
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"image file '{path}' does not exist")
        if path.stat().st_size > max_bytes:
            raise ImageError(f"{path.name} is {_mb(path.stat().st_size)}, over the {_mb(max_bytes)} limit")
        data, label = path.read_bytes(), path.name
    if not data:
        raise ImageError(f"{label} is empty")
    if len(data) > max_bytes:
        raise ImageError(f"{label} is {_mb(len(data))}, over the {_mb(max_bytes)} limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.seek(0)
                image.load()
                return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{label} has too many pixels to be an image to explain (over "
                         f"{Image.MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image we can read (not a known image format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = f"truncated after {len(data)} bytes" if "truncated" in str(error) else "damaged"
        raise ImageError(f"{label} is not an image we can read ({reason})") from None


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size} bytes"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def crop_aspect(image: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Crop the longer side to ``max_aspect`` × the shorter, around the centre."""
    width, height = image.size
    short = min(width, height)
    limit = int(short * max_aspect)
    if max(width, height) <= limit:
        return image
    left = (width - min(width, limit)) // 2
    top = (height - min(height, limit)) // 2
    return image.crop((left, top, left + min(width, limit), top + min(height, limit)))


def preprocess(image: Image.Image, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Resize 256, centre-crop 224, normalisation (default ImageNet's): the weights' own transforms."""
    if tuple(mean) == IMAGENET_MEAN and tuple(std) == IMAGENET_STD:
        return TRANSFORMS(crop_aspect(to_rgb(image)))
    return ImageClassification(crop_size=224, resize_size=256, mean=mean, std=std)(crop_aspect(to_rgb(image)))


def display_image(image: Image.Image) -> np.ndarray:
    """The 224×224 RGB crop the model sees, as uint8 (H, W, 3), for drawing heatmaps over."""
    from torchvision.transforms import functional

    cropped = functional.center_crop(functional.resize(crop_aspect(to_rgb(image)), 256), 224)
    return np.asarray(cropped, dtype=np.uint8)
