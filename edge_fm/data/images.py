"""Reading users' image files into the model's 28x28 input, at a bounded cost in memory and time.

Every image edge-fm reads from a user (``predict``, ``explain``, the web demo) goes through
:func:`image_to_input`. An image is judged by its header before any pixel is decoded: more pixels
than Pillow's decompression-bomb limit, a side more than :data:`MAX_ASPECT` times the other, or
more decoded bytes than :data:`DECODE_BUDGET_BYTES` are refused in one line. A JPEG is decoded
at a reduced scale by libjpeg itself (``draft``); other formats are decoded once, then turned to
grey and box-reduced strip by strip, so no full-size grey copy, composite or square canvas is
ever made. Images whose longer side is under ``2 * WORK_SIDE`` pixels are not reduced at all and
give the same pixels as a plain full-size conversion.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_fm.errors import EdgeFMError

INPUT_SIDE = 28  # the model's input, in pixels per side
BORDER_FRACTION = 0.08  # share of each side read to decide what the background is
MAX_ASPECT = 10  # longer side / shorter side; beyond it the garment would span under 3 of the 28 rows
DECODE_BUDGET_BYTES = 48_000_000  # the decoded image held in memory at once, before it is reduced
WORK_SIDE = 1024  # images are box-reduced until their longer side is under twice this
_STRIP_PIXELS = 1 << 18  # pixels converted to grey at a time
_ORIENTATION = 0x0112  # the EXIF orientation tag
_ORIENTATION_SWAPS_SIDES = {5: True, 6: True, 7: True, 8: True}  # orientations that rotate by 90 degrees
RESIZE_POLICIES = ("pad", "stretch")  # keep the aspect ratio and pad with black, or stretch to the size
RESAMPLE = 2  # PIL.Image.Resampling.BILINEAR: antialiased when shrinking, the one filter of every resize


def image_to_input(source: Path | str | bytes, name: str | None = None) -> tuple[np.ndarray, bool]:
    """Turns an image (PNG, JPEG, ...; any size, colour or grey) into a 28x28 uint8 array.

    Fashion-MNIST shows a light object on a black background, centred and filling the frame, so:
    greyscale; invert when the border is light (a photo of an object on a light surface); pad to
    a square with black; resize to 28x28. Palette, 16-bit, float, CMYK and transparent images are
    converted first (16-bit scaled to 0-255, transparency over white); an animation gives its
    first frame; the EXIF orientation is applied.

    Args:
        source: An image file, or its bytes (an upload).
        name: How to name the image in messages (default: the path, or ``"image"`` for bytes).

    Returns:
        ``(pixels, inverted)``: ``(28, 28)`` uint8 values 0-255 and whether it was inverted.

    Raises:
        EdgeFMError: The file is missing, empty, a folder, not a readable image, or too large to
            decode at a bounded cost (decompression-bomb pixel count, aspect ratio, decoded size).

    Example:
        >>> pixels, inverted = image_to_input("shoe.jpg")  # doctest: +SKIP
    """
    from PIL import Image

    opened, label = _openable(source, name)
    with _bounded_open(opened, label) as image:
        _draft(image)
        _check_budget(image, label)
        orientation = image.getexif().get(_ORIENTATION, 1)
        reduced, border = _reduced_grey(image)
    inverted = _median(border) > 127
    if inverted:
        np.subtract(255, reduced, out=reduced)
    grey = Image.fromarray(reduced)
    transposes = _transposes()
    if orientation in transposes:
        grey = grey.transpose(transposes[orientation])
    return _fit(grey), inverted


def _openable(source: Path | str | bytes, name: str | None):
    """What PIL opens for an image file or its bytes, and how messages name it.

    Raises:
        EdgeFMError: Empty bytes, or a file that is missing, empty or a folder.
    """
    if isinstance(source, (bytes, bytearray)):
        label = name or "image"
        if not source:
            raise EdgeFMError(f"{label}: the file is empty; pass a PNG or JPEG image.")
        return io.BytesIO(source), label
    path = Path(source)
    label = name or str(path)
    _check_image_file(path, label)
    return path, label


@contextlib.contextmanager
def _bounded_open(opened, label: str) -> Iterator:
    """Opens an image, first frame, with its header checked; every decoder failure becomes one EdgeFMError."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; both mean a bomb-sized image.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as image:
                image.seek(0)  # an animated GIF or PNG: its first frame
                _check_dimensions(image, label)
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EdgeFMError(
            f"{label}: more than {Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's guard against decompression bombs; "
            "downscale it first."
        ) from None
    except EdgeFMError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for a bad file; all mean the same to a user
        raise EdgeFMError(
            f"{label}: not a readable image ({_decode_reason(exc)}); use a PNG or JPEG file."
        ) from None


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding a pixel.

    Attributes:
        width: Pixels per row.
        height: Rows.
        grey: True when the image holds one grey channel (a palette of greys counts as grey).
    """

    width: int
    height: int
    grey: bool


def read_header(path: Path | str) -> ImageHeader:
    """Reads an image file's size and whether it is grey, from its header only.

    Raises:
        EdgeFMError: The file is missing, empty, not an image, or refused by the size checks.
    """
    path = Path(path)
    _check_image_file(path, str(path))
    with _bounded_open(path, str(path)) as image:
        width, height = image.size
        _check_budget(image, str(path))  # before getexif(), which decodes a PNG without an eXIf chunk
        if _ORIENTATION_SWAPS_SIDES.get(image.getexif().get(_ORIENTATION, 1), False):
            width, height = height, width
        return ImageHeader(width, height, _is_grey(image))


def read_image(
    path: Path | str | bytes,
    size: tuple[int, int],
    channels: int = 1,
    resize: str = "pad",
    name: str | None = None,
) -> np.ndarray:
    """Decodes an image file, at a bounded cost, into a ``(height, width, channels)`` uint8 array.

    The same conversions as :func:`image_to_input` (16-bit scaled to 0-255, transparency over
    white, CMYK and palettes converted, first frame, EXIF orientation), but no inversion and
    colour kept when ``channels`` is 3: the pixels of a dataset's image, not a garment photo.

    Args:
        path: The image file, or its bytes (an upload).
        size: ``(height, width)`` of the result.
        channels: 1 (grey) or 3 (RGB).
        resize: ``"pad"`` keeps the aspect ratio and pads with black to ``size``; ``"stretch"``
            resizes to ``size`` whatever the aspect ratio.
        name: How to name the image in messages (default: the path, or ``"image"`` for bytes).

    Returns:
        uint8 pixels, shape ``(height, width, channels)``.

    Raises:
        EdgeFMError: The file is missing, empty, unreadable or refused by the size checks.
    """
    if resize not in RESIZE_POLICIES:
        raise EdgeFMError(f"unknown resize policy {resize!r}; use one of {', '.join(RESIZE_POLICIES)}.")
    if channels not in (1, 3):
        raise EdgeFMError(f"channels must be 1 or 3, not {channels}.")
    opened, label = _openable(path, name)
    with _bounded_open(opened, label) as image:
        if image.format == "JPEG":
            # libjpeg's reduced-scale decode; both sides stay at least the size asked for.
            image.draft(None, (size[1], size[0]))
        _check_budget(image, label)
        orientation = image.getexif().get(_ORIENTATION, 1)
        image.load()
        converted = _to_mode(image, channels)
    transposes = _transposes()
    if orientation in transposes:
        converted = converted.transpose(transposes[orientation])
    fitted = fit_image(converted, size, resize)
    pixels = np.asarray(fitted, dtype=np.uint8)
    return pixels.reshape(size[0], size[1], channels)


def fit_image(image, size: tuple[int, int], resize: str = "pad"):
    """Resizes a Pillow image to ``(height, width)`` under a resize policy (see :func:`read_image`)."""
    from PIL import Image

    height, width = size
    if image.size == (width, height):
        return image
    if resize == "stretch":
        return image.resize((width, height), RESAMPLE, reducing_gap=3.0)
    scale = min(width / image.width, height / image.height)
    inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new(image.mode, (width, height), 0)
    canvas.paste(
        image.resize(inner, RESAMPLE, reducing_gap=3.0), ((width - inner[0]) // 2, (height - inner[1]) // 2)
    )
    return canvas


def _is_grey(image) -> bool:
    if image.mode in ("1", "L", "LA", "La", "I", "F") or image.mode.startswith("I;16"):
        return True
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        triples = [palette[i : i + 3] for i in range(0, len(palette) - 2, 3)]
        return all(r == g == b for r, g, b in triples)
    return False


def _to_mode(image, channels: int):
    """The decoded image as 8-bit grey (``L``) or ``RGB``, whatever its mode."""
    from PIL import Image

    full_scale = _full_scale(image)
    if full_scale is not None:
        grey = Image.fromarray(_grey(image, full_scale))
        return grey if channels == 1 else grey.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("L" if channels == 1 else "RGB")


def _check_image_file(path: Path, label: str) -> None:
    if not path.exists():
        raise EdgeFMError(f"{label}: no such file.")
    if path.is_dir():
        raise EdgeFMError(f"{label} is a folder: pass image files (e.g. {label}/*.png).")
    if path.stat().st_size == 0:
        raise EdgeFMError(f"{label}: the file is empty; pass a PNG or JPEG image.")


def _check_dimensions(image, label: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise EdgeFMError(f"{label}: the image has no pixels.")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise EdgeFMError(
            f"{label} is {width}x{height} pixels, its longer side more than {MAX_ASPECT} times its shorter; "
            "crop it around what it shows (a model sees a small image of its data's shape)."
        )


def _draft(image) -> None:
    # libjpeg decodes at 1/2, 1/4 or 1/8 scale for almost nothing; draft keeps both sides at least
    # the size asked for, so an image under 2 * 2 * WORK_SIDE pixels per side decodes at full size.
    if image.format == "JPEG":
        width, height = image.size
        scale = min(1.0, 2 * WORK_SIDE / max(width, height))
        image.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))


def _bytes_per_pixel(mode: str) -> int:
    # Pillow keeps 1-byte modes in one byte, 16-bit in two and every other mode in four.
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _check_budget(image, label: str) -> None:
    width, height = image.size
    decoded = width * height * _bytes_per_pixel(image.mode)
    if decoded > DECODE_BUDGET_BYTES:
        most = DECODE_BUDGET_BYTES // _bytes_per_pixel(image.mode)
        raise EdgeFMError(
            f"{label} is {width}x{height} pixels ({image.mode}), more than the {most / 1e6:.0f} megapixels "
            "edge-fm decodes of such an image; downscale it first (a model sees a small image)."
        )


def _reduced_grey(image) -> tuple[np.ndarray, np.ndarray]:
    """The image's grey pixels box-reduced by an integer factor, and a histogram of its border at full size.

    Decodes once, then converts to grey and reduces a strip of rows at a time: the only full-size
    buffer is the decoded image itself.
    """
    from PIL import Image

    image.load()
    width, height = image.size
    factor = max(1, max(width, height) // WORK_SIDE)
    rows = max(factor, _STRIP_PIXELS // width // factor * factor)
    band_h, band_w = max(1, int(height * BORDER_FRACTION)), max(1, int(width * BORDER_FRACTION))
    full_scale = _full_scale(image)
    reduced, border = [], np.zeros(256, dtype=np.int64)
    for top in range(0, height, rows):
        strip = _grey(image.crop((0, top, width, min(height, top + rows))), full_scale)
        # The four bands as the whole image's would be (corners counted twice), as value counts.
        for band in (
            strip[: max(0, band_h - top)],
            strip[max(0, height - band_h - top) :],
            strip[:, :band_w],
            strip[:, -band_w:],
        ):
            border += np.bincount(band.ravel(), minlength=256)
        piece = Image.fromarray(strip)
        reduced.append(np.asarray(piece.reduce(factor) if factor > 1 else piece, dtype=np.uint8))
        del strip, piece
    return np.concatenate(reduced), border


def _median(counts: np.ndarray) -> float:
    """The median of values given as counts per value (``numpy.median`` of the values themselves)."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    lower = int(np.searchsorted(cumulative, (total - 1) // 2 + 1))
    upper = int(np.searchsorted(cumulative, total // 2 + 1))
    return (lower + upper) / 2


def _full_scale(image) -> float | None:
    """The value that maps to 255 for 16-bit, 32-bit and float images (None for 8-bit ones)."""
    # Converting to 8 bits with Pillow would clip, turning every mid-grey 16-bit pixel white.
    if image.mode == "F":
        return 1.0 if image.getextrema()[1] <= 1.0 else 255.0  # 0-1 floats, else 0-255
    if image.mode == "I":
        return (
            255.0 if image.getextrema()[1] <= 255 else 65535.0
        )  # 32-bit integers that may hold 8-bit values
    if image.mode.startswith("I;16"):
        return 65535.0  # 16-bit samples
    return None


def _grey(strip, full_scale: float | None) -> np.ndarray:
    """Greyscale uint8 pixels of a strip of rows, whatever the mode (every step is per pixel)."""
    from PIL import Image

    if full_scale is not None:
        values = np.asarray(strip).astype(np.float64)
        return np.clip(np.round(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    if strip.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        strip.mode == "P" and "transparency" in strip.info
    ):
        # Transparent areas become white, as a photo's background would be.
        strip = strip.convert("RGBA")
        strip = Image.alpha_composite(Image.new("RGBA", strip.size, (255, 255, 255, 255)), strip)
    return np.array(strip.convert("L"), dtype=np.uint8)


def _fit(grey) -> np.ndarray:
    """Pads a grey image to a square with black and resizes it to the model's input."""
    from PIL import Image

    width, height = grey.size
    side = max(width, height)
    square = Image.new("L", (side, side), 0)
    square.paste(grey, ((side - width) // 2, (side - height) // 2))
    return np.asarray(square.resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.LANCZOS), dtype=np.uint8)


def _decode_reason(exc: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow knows"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _transposes() -> dict:
    # ImageOps.exif_transpose's table, applied to the reduced grey image rather than the decoded one.
    from PIL import Image

    method = Image.Transpose
    return {
        2: method.FLIP_LEFT_RIGHT,
        3: method.ROTATE_180,
        4: method.FLIP_TOP_BOTTOM,
        5: method.TRANSPOSE,
        6: method.ROTATE_270,
        7: method.TRANSVERSE,
        8: method.ROTATE_90,
    }
