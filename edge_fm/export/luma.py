"""The luma arithmetic of the RGB forms: integer weights split into R, G, B integers that sum to them exactly."""

from __future__ import annotations

import numpy as np

from edge_fm.errors import EdgeFMError

# ITU-R BT.601 luma: what "greyscale" means to most image libraries (PIL's convert("L"), OpenCV).
GREY_WEIGHTS = (0.299, 0.587, 0.114)
CHANNELS = len(GREY_WEIGHTS)
INT8_WEIGHT_LIMIT = 127  # int8 kernels are symmetric: -128 is never used


def split_by_luma(integers: np.ndarray, limit: int = INT8_WEIGHT_LIMIT) -> tuple[np.ndarray, int]:
    """Splits integer weights into R, G, B integers that sum to them exactly.

    Each share is the weight times its BT.601 luma weight, rounded by largest remainder: the three
    floors, plus one for the largest fractions until the sum is exact, so every share is within one
    step of its ideal. A share that would pass ``limit`` is held at it and the excess moves to the
    other channels, in luma proportion.

    Args:
        integers: Integer weights of any shape.
        limit: Largest magnitude a share may take.

    Returns:
        ``(shares, clipped)``: int32 shares with a new last axis of 3 (R, G, B), and how many
        weights needed the limit.

    Raises:
        EdgeFMError: A weight too large to split within the limit (over three times it).
    """
    total = np.asarray(integers, dtype=np.int64).reshape(-1)
    if np.any(np.abs(total) > CHANNELS * limit):
        raise EdgeFMError(
            f"a weight of {int(np.abs(total).max())} cannot be split into three int8 weights "
            f"(at most {CHANNELS * limit}); this model's first layer cannot take the RGB fold."
        )
    shares = _largest_remainder(total, np.array(GREY_WEIGHTS))
    over = np.any(np.abs(shares) > limit, axis=1)
    for row in np.flatnonzero(over):
        shares[row] = _split_within(int(total[row]), limit)
    return shares.reshape(*np.shape(integers), CHANNELS).astype(np.int32), int(over.sum())


def _largest_remainder(total: np.ndarray, weights: np.ndarray) -> np.ndarray:
    ideal = total[:, None] * weights[None, :] / weights.sum()
    shares = np.floor(ideal).astype(np.int64)
    missing = total - shares.sum(axis=1)
    # Rank channels by fraction, largest first; ties go to the larger luma weight (green, red, blue).
    order = np.lexsort((np.broadcast_to(-weights, ideal.shape), -(ideal - shares)), axis=1)
    rank = np.argsort(order, axis=1)
    return shares + (rank < missing[:, None])


def _split_within(total: int, limit: int) -> np.ndarray:
    """Largest-remainder split of one weight with every share held within ``limit``."""
    shares = np.zeros(CHANNELS, dtype=np.int64)
    free = np.ones(CHANNELS, dtype=bool)
    remaining = total
    while True:
        weights = np.where(free, GREY_WEIGHTS, 0.0)
        trial = shares + _largest_remainder(np.array([remaining]), weights)[0]
        too_big = free & (np.abs(trial) > limit)
        if not too_big.any():
            return trial
        shares[too_big] = np.sign(total) * limit
        free &= ~too_big
        remaining = total - int(shares.sum())
