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

import io
import warnings
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

    if isinstance(source, (bytes, bytearray)):
        label = name or "image"
        if not source:
            raise EdgeFMError(f"{label}: the file is empty; pass a PNG or JPEG image.")
        opened = io.BytesIO(source)
    else:
        path = Path(source)
        label = name or str(path)
        _check_image_file(path, label)
        opened = path
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; both mean a bomb-sized image.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as image:
                image.seek(0)  # an animated GIF or PNG: its first frame
                _check_dimensions(image, label)
                _draft(image)
                _check_budget(image, label)
                orientation = image.getexif().get(_ORIENTATION, 1)
                reduced, border = _reduced_grey(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EdgeFMError(
            f"{label}: more than {Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's guard against decompression bombs; "
            "downscale it first (the model sees 28x28)."
        ) from None
    except EdgeFMError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for a bad file; all mean the same to a user
        raise EdgeFMError(
            f"{label}: not a readable image ({_decode_reason(exc)}); use a PNG or JPEG file."
        ) from None
    inverted = _median(border) > 127
    if inverted:
        np.subtract(255, reduced, out=reduced)
    grey = Image.fromarray(reduced)
    transposes = _transposes()
    if orientation in transposes:
        grey = grey.transpose(transposes[orientation])
    return _fit(grey), inverted


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
            f"{label} is {width}x{height} pixels, more than {MAX_ASPECT} times as long as it is wide; "
            "crop it around the garment (the model sees a 28x28 square)."
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
            f"edge-fm decodes of such an image; downscale it first (the model sees 28x28)."
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
