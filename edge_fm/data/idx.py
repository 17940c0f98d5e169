"""Fashion-MNIST's release as files (names, sizes, class names, published checksums) and the IDX
format they are stored in, read and written with their headers checked against their bodies."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from edge_fm.errors import EdgeFMError
from edge_fm.io import atomic_path

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28, 1)

# split -> (images file, labels file), the standard names of the original release.
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}  # images per split of the original release
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# Published SHA-256 of the original .gz files (the dataset's own README).
PUBLISHED_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
# IDX type codes (the format's spec) -> numpy dtypes, big-endian as stored.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_GZIP_RATIO = 1100  # above zlib's largest compression ratio (about 1032:1)
_GZIP_MAGIC = b"\x1f\x8b"


# ---------------------------------------------------------------- IDX reading and writing


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file, gzip-compressed or raw, and validates its header against its body.

    The body is read only when the file can hold what the header declares, so a small file whose
    header claims gigabytes (or a gzip bomb) is refused before any memory is taken.

    Args:
        path: The file.

    Returns:
        The array, in native byte order.

    Raises:
        EdgeFMError: The file is missing, truncated, not IDX, or its body does not match its header.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeFMError(f"{path}: no such file.")
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    try:
        with (gzip.open if compressed else open)(path, "rb") as stream:
            return _read_stream(stream, path, path.stat().st_size, compressed)
    except (EOFError, OSError, zlib.error) as exc:
        raise EdgeFMError(
            f"{path}: corrupt or truncated gzip data ({exc}); delete it and run `edge-fm data fetch`."
        ) from None


def _read_stream(stream, path: Path, file_bytes: int, compressed: bool) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise EdgeFMError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'}).")
    ndim = magic[3]
    dims = stream.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise EdgeFMError(f"{path}: truncated IDX header.")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow on absurd headers
    # zlib's best ratio is about 1032:1, so a compressed file holds at most that much.
    most = file_bytes * MAX_GZIP_RATIO if compressed else file_bytes - 4 - 4 * ndim
    if expected > most:
        raise EdgeFMError(
            f"{path}: IDX body truncated: header says shape {shape} ({expected} bytes), more than a "
            f"{file_bytes}-byte file can hold; delete it and run `edge-fm data fetch`."
        )
    body = stream.read(expected)
    if len(body) != expected or stream.read(1):
        what = "truncated" if len(body) < expected else "has trailing bytes"
        held = f"{len(body)}" if len(body) < expected else "more"
        raise EdgeFMError(
            f"{path}: IDX body {what}: header says shape {shape} ({expected} bytes), file holds {held}."
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``, atomically.

    Args:
        path: Destination.
        array: Array of a dtype the IDX format knows (uint8, int8, int16, int32, float32, float64).
    """
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    if array.dtype not in codes:
        raise EdgeFMError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(map(str, codes))}.")
    big_endian = array.astype(array.dtype.newbyteorder(">"), copy=False)
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + big_endian.tobytes()
    if str(path).endswith(".gz"):
        # mtime=0 keeps the bytes, and so the checksum, reproducible.
        data = gzip.compress(data, mtime=0)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)
