"""Common microcontroller boards, and whether a model and its tensor arena fit their memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Board:
    """A common microcontroller board, by the memory a model competes for.

    Attributes:
        name: The board.
        chip: Its microcontroller.
        flash_bytes: Program flash.
        ram_bytes: On-chip RAM (SRAM).
    """

    name: str
    chip: str
    flash_bytes: int
    ram_bytes: int


KIB, MIB = 1024, 1024 * 1024
BOARDS: tuple[Board, ...] = (
    Board("Arduino Nano 33 BLE Sense", "nRF52840", 1 * MIB, 256 * KIB),
    Board("Raspberry Pi Pico", "RP2040", 2 * MIB, 264 * KIB),
    Board("STM32F746 Discovery", "STM32F746NG", 1 * MIB, 320 * KIB),
    Board("ESP32-S3 (8 MB flash)", "ESP32-S3", 8 * MIB, 512 * KIB),
)
FIT_NOTE = (
    "a fit check of the model's bytes against flash and the tensor arena against RAM only: the firmware "
    "(TFLM's runtime and kernels, the application, its stack and buffers) needs room too"
)


def fits_on(flash_bytes: int, arena_bytes: int, boards: Sequence[Board] = BOARDS) -> list[dict[str, Any]]:
    """Whether the model's bytes fit each board's flash and its arena the board's RAM.

    Returns:
        One dict per board: its memory, the shares the model and the arena take, and ``fits``.
    """
    return [
        {
            "board": board.name,
            "chip": board.chip,
            "flash_bytes": board.flash_bytes,
            "ram_bytes": board.ram_bytes,
            "model_share_of_flash": round(flash_bytes / board.flash_bytes, 4),
            "arena_share_of_ram": round(arena_bytes / board.ram_bytes, 4),
            "fits": flash_bytes <= board.flash_bytes and arena_bytes <= board.ram_bytes,
        }
        for board in boards
    ]


def fitting_boards(fits: Sequence[dict[str, Any]]) -> str:
    """The boards a :func:`fits_on` list says model and arena fit, comma-separated, for a sentence."""
    return ", ".join(fit["board"] for fit in fits if fit["fits"]) or "none of the boards checked"
