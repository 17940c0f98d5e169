"""Shared fixtures: the real dataset beside the repo, small slices of it, a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The full dataset lives beside the checkout (../shared); EDGE_FM_TEST_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("EDGE_FM_TEST_DATA", REPO.parent / "shared" / "data" / "fashion-mnist"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"the Fashion-MNIST IDX files are not in {SHARED_DATA}; set EDGE_FM_TEST_DATA to their folder")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _no_user_data_env(monkeypatch, tmp_path):
    # Tests must not read or fill the developer's own cache or data folder.
    monkeypatch.delenv("EDGE_FM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serves a temporary folder on 127.0.0.1; yields (folder, base_url)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
