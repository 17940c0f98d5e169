"""The Ray a sweep starts on this machine: its own temporary folder, its processes stopped on an
interrupt, and what a killed sweep left (processes and folder) cleared before the sweep goes on.

Ray started in-process keeps its sockets, logs and run records in a temporary folder, and
starts helper processes (the GCS, the raylet, the dashboard and runtime-env agents, workers). A
sweep killed with SIGKILL cannot stop them: the agents outlive it and the folder stays. So each
sweep gives Ray a folder of its own, named from the sweep's folder, and every process that holds
a file in it (or names it on its command line) is that sweep's Ray: a resumed or finished sweep
stops those, and only those, and removes the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

#: Beginning of the name of a sweep's Ray folder under the system's temporary folder. Ray's Unix
#: sockets live in it and their paths must stay under 108 bytes, so it cannot sit inside the sweep
#: folder (which may be anywhere, at any depth).
RAY_TEMP_PREFIX = "edge-fm-ray-"


def ray_temp_dir(sweep_dir: Path) -> Path:
    """The temporary folder of the Ray a sweep starts here, the same for every run of that sweep."""
    digest = hashlib.sha256(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"{RAY_TEMP_PREFIX}{digest}"


def ray_processes(temp_dir: Path) -> list[int]:
    """Processes of this user that hold a file in ``temp_dir`` or name it on their command line.

    Ray's workers rename themselves (``ray::IDLE``), so their command line does not tell; their
    open log files do. Linux only (``/proc``); elsewhere nothing is found.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    marker = str(temp_dir)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            if marker.encode() in (entry / "cmdline").read_bytes() or _holds_file_in(entry, marker):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return sorted(found)


def _holds_file_in(entry: Path, marker: str) -> bool:
    for fd in (entry / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target == marker or target.startswith(marker + os.sep):
            return True
    return False


def clean_ray_leftovers(temp_dir: Path, grace: float = 5.0) -> int:
    """Stops the processes of the Ray that used ``temp_dir`` and removes the folder.

    SIGTERM first; what still runs after ``grace`` seconds (Ray's agents ignore SIGTERM once
    their raylet is gone) gets SIGKILL. Returns how many processes were stopped.
    """
    pids = ray_processes(temp_dir)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has stopped: only its parent can reap it
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGTERM (and SIGINT) raise KeyboardInterrupt in the sweep, so its clean-up runs.

    By default Python dies on SIGTERM without running ``finally`` blocks, which would leave Ray
    running; Ray Tune's own SIGINT handler would wait for its trials to checkpoint.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if tune_handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler
