"""``edge-fm bench --target vela:CONFIG``: Arm Vela's Ethos-U estimate per artifact (see :mod:`edge_fm.export.vela`)."""

from __future__ import annotations

import dataclasses
import platform
import time
from pathlib import Path
from typing import Any

from edge_fm import runner
from edge_fm.errors import EdgeFMError
from edge_fm.export.vela import ESTIMATE_NOTE, estimate, get_config, vela_version


@dataclasses.dataclass
class VelaTarget:
    """``edge-fm bench --target vela:ethos-u55-128``: Vela's estimate per artifact, no accuracy.

    Attributes:
        config: The Ethos-U configuration.
    """

    config: str

    needs_test_set = False  # Vela estimates from the model alone

    def __post_init__(self):
        get_config(self.config)

    @property
    def name(self) -> str:
        return f"vela:{self.config}"

    def check(self) -> None:
        """Vela is installed (one clear error otherwise)."""
        vela_version()

    def run(self, artifacts: list[Path], test_set: Path | None = None, options=None) -> dict[str, Any]:
        """One estimate row per artifact; a float artifact or a Vela failure is that artifact's error row."""
        version = vela_version()
        rows = []
        for path in artifacts:
            row: dict[str, Any] = {
                "artifact": runner.artifact_name(str(path)),
                "path": str(path),
                **runner.sidecar_description(str(path)),
                **runner.file_sizes(str(path)),
                "target": self.name,
                "estimate": True,
                "interpreter": f"ethos-u-vela {version}",
            }
            started = time.perf_counter()
            try:
                report = estimate(path, self.config)
            except EdgeFMError as exc:
                rows.append({**row, "status": "error", "error": str(exc)})
                continue
            rows.append(
                {
                    **row,
                    **report.as_dict(),
                    "status": "ok",
                    "compile_seconds": round(time.perf_counter() - started, 2),
                }
            )
        environment = {
            "interpreter": "ethos-u-vela",
            "interpreter_version": version,
            "accelerator_config": self.config,
            "machine": platform.machine(),
            "python": platform.python_version(),
            "note": ESTIMATE_NOTE,
        }
        return {"rows": rows, "environment": environment}
