"""What every export form takes (:data:`edge_fm.export.forms.FORMS`): one typed object each form's export reads.

Example:
    >>> options = FormOptions(out="edge-cnn-tiny-mobile", parity_images=500)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from edge_fm.errors import EdgeFMError

REPRESENTATIVE_SIZE = 500  # calibration images of an integer export, drawn from the training images


@dataclasses.dataclass(frozen=True)
class FormOptions:
    """The options of a form's export; a form reads those it needs (its docstring says which)."""

    format_name: str | None = None  # for a run: int8 or qat-int8 (default by the run); for a bundle: none
    out: Path | str | None = None  # the bundle folder (default: a new runs_dir/<name>-<form>-N)
    runs_dir: Path | str = "runs"  # where new bundles (and a run's int8 export) are created
    data_dir: Path | str | None = None  # where the full dataset is
    representative_size: int = REPRESENTATIVE_SIZE  # calibration images of a run's int8 export
    parity_images: int | None = 1000  # images each check runs on (None: the whole split)
    progress: Callable[[str], None] | None = None  # called with a line at each step
    c_array_mode: str = "source"  # mcu: the model's C array in the form, or a script writing it at build time
    accelerator_config: str | None = None  # ethos-u: the configuration Vela compiles for (ethos-u55-128...)
    data: str | Path | None = None  # own data of a run or bundle: where it is, when not where it says

    def __post_init__(self) -> None:
        for option, value in (
            ("--parity-images", self.parity_images),
            ("--calibration", self.representative_size),
        ):
            if value is not None and value < 1:
                raise EdgeFMError(f"{option} {value}: give at least 1.")

    def say(self, line: str) -> None:
        """Reports one step to ``progress``, when there is one."""
        if self.progress is not None:
            self.progress(line)
