"""How the device runner measures: the options of ``edge-fm bench`` and the benchmark's calls."""

from __future__ import annotations

import dataclasses
from typing import Any

from edge_fm import runner
from edge_fm.errors import EdgeFMError

# Warm-up and timing each stop after --max-seconds; at most this, both fit in the runner's 900-second
# timeout of one measurement with room for the accuracy pass.
MAX_SECONDS = 300.0


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """How the runner measures (the defaults are the runner's own, ``runner.DEFAULTS``).

    Attributes:
        threads: Interpreter thread counts; one row per artifact and count.
        runs: Minimum number of timed batch-1 runs.
        min_seconds: Minimum timed duration; timing goes on until both minima are reached.
        max_seconds: Timing stops after this long whatever the count.
        warmup: Untimed runs after the first inference.
        batch_size: Batch of the accuracy pass.
        artifact_timeout: Seconds before one measurement is abandoned (an error row).
        accuracy_threads: Threads of the accuracy pass (0: every core).
    """

    threads: tuple[int, ...] = tuple(runner.parse_threads(runner.DEFAULTS.threads))
    runs: int = runner.DEFAULTS.runs
    min_seconds: float = runner.DEFAULTS.min_seconds
    max_seconds: float = runner.DEFAULTS.max_seconds
    warmup: int = runner.DEFAULTS.warmup
    batch_size: int = runner.DEFAULTS.batch_size
    artifact_timeout: float = runner.DEFAULTS.artifact_timeout
    accuracy_threads: int = runner.DEFAULTS.accuracy_threads

    def __post_init__(self):
        if not self.threads or min(self.threads) < 1:
            raise EdgeFMError(
                f"--threads {','.join(map(str, self.threads))}: give positive thread counts, e.g. 1,4."
            )
        limits = (
            ("--runs", self.runs, 1),
            ("--warmup", self.warmup, 0),
            ("--min-seconds", self.min_seconds, 0),
            ("batch size", self.batch_size, 1),
        )
        for option, value, low in limits:
            if not value >= low:  # NaN is at least nothing
                raise EdgeFMError(f"{option} {value}: must be at least {low}.")
        if not 0 < self.max_seconds <= MAX_SECONDS:  # NaN and infinity fail here too
            raise EdgeFMError(
                f"--max-seconds {self.max_seconds}: give seconds more than 0 and at most {MAX_SECONDS:.0f} (warm-up "
                "and timing each stop after that long)."
            )

    def runner_args(self) -> list[str]:
        return [
            "--threads",
            ",".join(map(str, self.threads)),
            "--runs",
            str(self.runs),
            "--min-seconds",
            str(self.min_seconds),
            "--max-seconds",
            str(self.max_seconds),
            "--warmup",
            str(self.warmup),
            "--batch-size",
            str(self.batch_size),
            "--artifact-timeout",
            str(self.artifact_timeout),
            "--accuracy-threads",
            str(self.accuracy_threads),
        ]

    def as_runner_options(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "min_seconds": self.min_seconds,
            "max_seconds": self.max_seconds,
            "warmup": self.warmup,
            "batch_size": self.batch_size,
            "artifact_timeout": self.artifact_timeout,
            "accuracy_threads": self.accuracy_threads,
        }

    def worst_case_seconds(self, artifacts: int) -> float:
        """An upper bound for a whole runner invocation, used as the SSH run timeout."""
        return 60.0 + artifacts * len(self.threads) * (2 * self.max_seconds + 120.0)  # warm-up and timing


def parse_threads(text: str) -> tuple[int, ...]:
    """``"1,4"`` -> ``(1, 4)``.

    Raises:
        EdgeFMError: Not a comma-separated list of positive integers.
    """
    try:
        return tuple(runner.parse_threads(text))
    except runner.RunnerError as exc:
        raise EdgeFMError(str(exc)) from None
