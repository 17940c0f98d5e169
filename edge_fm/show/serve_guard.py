"""The demo's HTTP guard and upload decoding: what stands between a request and the models.

Security headers on every response, the access key on every request, one log line (never a
traceback) for a request the demo cannot understand, and the checked decoding of what a page sends
(an uploaded file, the image the page holds). :mod:`edge_fm.show.serve` builds the app on these.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.errors import EdgeFMError

# No content sniffing, no framing, no referrer, no shared browsing context.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# The page's own scripts (inline ones by hash) and styles; images are data: URLs; nothing may frame it.
_CSP = (
    "default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def guard(app, key: str | None) -> None:
    """Security headers on every response, the access key on every request, and one log line (not a
    traceback and an HTTP 500 page) for a request the demo cannot understand."""
    import flask
    from werkzeug.exceptions import HTTPException

    server = app.server
    policy: list[str] = []  # computed at the first response, once every inline script is known

    @server.before_request
    def require_key():
        if key is None:
            return None
        given = flask.request.authorization
        password = (given.password or "") if given is not None and given.type == "basic" else ""
        if hmac.compare_digest(password.encode(), key.encode()):
            return None
        return flask.Response(
            "This demo needs its access key: give it as the password (any user name).\n",
            401,
            {
                "WWW-Authenticate": 'Basic realm="edge-fm demo", charset="UTF-8"',
                "Content-Type": "text/plain; charset=utf-8",
            },
        )

    @server.after_request
    def add_headers(response):
        if not policy:
            policy.append(_CSP.format(hashes=" ".join(app.csp_hashes())))
        response.headers["Content-Security-Policy"] = policy[0]
        response.headers.update(SECURITY_HEADERS)
        return response

    @server.errorhandler(Exception)
    def refuse(exc):
        if isinstance(exc, HTTPException):
            return exc
        first = str(exc).splitlines()[0] if str(exc) else ""
        server.logger.warning(
            "refused %s %s: %s%s",
            flask.request.method,
            flask.request.path,
            type(exc).__name__,
            f": {first[:200]}" if first else "",
        )
        return flask.jsonify({"message": "the demo could not understand this request."}), 400


def decode_upload(
    contents: str, filename: str, max_bytes: int, policy=None, seen: str = "28x28"
) -> np.ndarray:
    """An uploaded file (a ``data:`` URL from the browser) -> uint8 pixels, as ``edge-fm predict`` sees it.

    ``(28, 28)`` for a Fashion-MNIST model; a model of its own data reads it by its ``policy``
    (:class:`edge_fm.show.predict.ImagePolicy`): ``(height, width)`` grey or ``(height, width, 3)``.

    Raises:
        EdgeFMError: Over the size limit, not an image, too large to decode, or a decompression
            bomb (one line for the page).
    """
    from edge_fm.show.predict import ImagePolicy

    name = Path(filename if isinstance(filename, str) and filename else "upload").name
    if not isinstance(contents, str):
        raise EdgeFMError(f"{name}: the upload was garbled; try again.")
    _, _, payload = contents.partition(",")
    if len(payload) * 3 // 4 > max_bytes:
        raise EdgeFMError(too_large_message(name, len(payload) * 3 // 4, max_bytes, seen))
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise EdgeFMError(f"{name}: the upload was garbled; try again.") from None
    # Decoded from memory: the user's file name never becomes a path on the server.
    pixels, _ = (policy or ImagePolicy()).read(data, name)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def too_large_message(name: str, size: int, max_bytes: int, seen: str = "28x28") -> str:
    """The one line for an upload over the limit (the page says the same before sending it)."""
    return (
        f"{name} is {size / 1e6:.1f} MB; the demo takes images up to {max_bytes / 1e6:.1f} MB "
        f"(the model sees {seen}): downscale it first."
    )


def stored_pixels(stored: Any, shape: tuple[int, ...] = (28, 28)) -> np.ndarray:
    """The uint8 image of ``shape`` the page holds, checked (a request may carry anything).

    Raises:
        EdgeFMError: Not an image the page stored.
    """
    try:
        pixels = np.frombuffer(base64.b64decode(stored["pixels"], validate=True), dtype=np.uint8)
    except (TypeError, KeyError, IndexError, ValueError, binascii.Error):
        pixels = None
    if pixels is None or pixels.size != int(np.prod(shape)) or not isinstance(stored.get("source"), str):
        raise EdgeFMError("the image sent was not one the page made; pick a test image or upload one again.")
    return pixels.reshape(shape)
