"""Hostile and unlucky input: bounded cost, one clear line, and the demo keeps working.

Images too large to decode cheaply, forged requests to the demo, a demo exposed to the network,
data files in the wrong places, odd SSH targets and malformed files edge-fm reads back: each case
goes through the command line (Typer's runner, or the real process where it serves) or the page.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import free_port
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from edge_fm.cli import main
from edge_fm.errors import EdgeFMError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = "edge-cnn-tiny"  # a real int8 bundle of models/, small enough to load fast
CLI = "import sys; from edge_fm.cli import main; sys.exit(main(sys.argv[1:]))"
runner = CliRunner()


def run_cli(*argv, env: dict | None = None) -> tuple[int, str]:
    """Runs ``edge-fm ARGV``; returns the exit code and everything printed.

    ``edge-fm serve`` replaces its process with the server once its checks pass: here that
    would be the test run itself, so reaching that point fails the test instead.
    """

    def no_exec(*args, **kwargs):
        raise AssertionError("edge-fm serve passed its checks and would have started serving")

    with runner.isolation(env=env) as (out, err, *_), pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "execv", no_exec)
        patch.setattr(os, "execve", no_exec)
        code = main([str(arg) for arg in argv])
        printed = out.getvalue().decode() + err.getvalue().decode()
    return code, printed


def assert_one_line_error(code: int, output: str, expected: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code != 0, output
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert expected in lines[0], output


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "models"
    shutil.copytree(REPO / "models" / SHIPPED, folder / SHIPPED)
    return folder / SHIPPED


# ---------------------------------------------------------------- images of hostile shapes


def _peak_extra_mb(code: str, *args: str) -> tuple[float, str]:
    """Runs ``code`` in a fresh Python after importing edge-fm; returns its peak RSS growth (MB) and output."""
    # VmHWM, reset first: ru_maxrss would carry this (large) process's peak over into the child.
    probe = (
        "import sys\nfrom pathlib import Path\nfrom edge_fm.data.images import image_to_input\n"
        "import numpy, PIL.Image, PIL.PngImagePlugin, PIL.JpegImagePlugin\nstatus = Path('/proc/self/status')\n"
        "def kb(field):\n"
        "    return int(next(l for l in status.read_text().splitlines() if l.startswith(field)).split()[1])\n"
        "Path('/proc/self/clear_refs').write_text('5')\nbefore = kb('VmRSS')\n"
        + code
        + "\nprint('peak', (kb('VmHWM') - before) / 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    *lines, last = done.stdout.strip().splitlines()
    return float(last.split()[1]), "\n".join(lines)


DECODE = (
    "try:\n    pixels, inverted = image_to_input(sys.argv[1]); print('ok', inverted, int(pixels.mean()))\n"
    "except Exception as exc:\n    print(type(exc).__name__, exc)"
)


@pytest.fixture(scope="module")
def hostile_images(tmp_path_factory) -> dict[str, Path]:
    """The worst shapes for a decoder, each well under the demo's 4 MB upload limit."""
    folder = tmp_path_factory.mktemp("images")
    thin = folder / "thin.png"
    Image.new("L", (89_000_000, 1), 0).save(thin)
    wide = folder / "wide.png"
    Image.new("L", (40_000, 2_000), 255).save(wide)
    square = folder / "square.png"
    image = Image.new("RGBA", (9_400, 9_400), (255, 255, 255, 0))
    ImageDraw.Draw(image).ellipse((2_000, 2_000, 7_000, 7_000), fill=(20, 20, 20, 255))
    image.save(square)
    del image
    photo = folder / "photo.jpg"
    image = Image.new("L", (9_400, 9_400), 235)
    ImageDraw.Draw(image).ellipse((2_000, 2_000, 7_000, 7_000), fill=20)
    image.convert("RGB").save(photo, quality=90)
    del image
    return {"thin": thin, "wide": wide, "square": square, "photo": photo}


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="reads peak memory from Linux /proc"
)


@needs_proc
@pytest.mark.parametrize(
    "shape, expected",
    [
        (
            "thin",
            "thin.png is 89000000x1 pixels, its longer side more than 10 times its shorter; crop it around what "
            "it shows",
        ),
        ("wide", "wide.png is 40000x2000 pixels, its longer side more than 10 times its shorter"),
        (
            "square",
            "square.png is 9400x9400 pixels (RGBA), more than the 12 megapixels edge-fm decodes of such an image; "
            "downscale it first",
        ),
    ],
)
def test_predict_refuses_hostile_shapes_in_one_line_before_decoding(hostile_images, bundle, shape, expected):
    # Before: a 7 PiB allocation error for the thin one, seconds and gigabytes for the others.
    started = time.perf_counter()
    code, output = run_cli("predict", bundle, hostile_images[shape])
    assert_one_line_error(code, output, expected)
    assert time.perf_counter() - started < 5, "judged from the header, without decoding"
    peak, printed = _peak_extra_mb(DECODE, str(hostile_images[shape]))
    assert printed.startswith("EdgeFMError") and peak < 20, (peak, printed)


HEADER = (
    "from edge_fm.data.images import read_header\n"
    "try:\n    print('ok', read_header(sys.argv[1]))\n"
    "except Exception as exc:\n    print(type(exc).__name__, exc)"
)


@needs_proc
def test_a_folders_header_scan_refuses_a_large_png_without_decoding_it(hostile_images):
    # Before: Pillow's getexif() decoded a PNG without an eXIf chunk, 350 MB for this 363 KB file, per
    # header-reading thread of a --data folder scan.
    peak, printed = _peak_extra_mb(HEADER, str(hostile_images["square"]))
    assert printed.startswith("EdgeFMError") and "9400x9400 pixels (RGBA)" in printed and peak < 20, (
        peak,
        printed,
    )


def test_explain_reads_images_through_the_same_bounded_reader(hostile_images, bundle, tmp_path):
    code, output = run_cli("explain", bundle, hostile_images["thin"], "--out", tmp_path / "explained")
    assert_one_line_error(
        code, output, "thin.png is 89000000x1 pixels, its longer side more than 10 times its shorter"
    )
    assert not (tmp_path / "explained").exists()


@needs_proc
def test_a_huge_jpeg_is_decoded_reduced_in_bounded_memory(hostile_images, bundle):
    peak, printed = _peak_extra_mb(DECODE, str(hostile_images["photo"]))
    assert printed.split()[:2] == ["ok", "True"], printed  # a dark disc on a light page: inverted
    assert peak < 100, f"{peak:.0f} MB for a 9400x9400 JPEG"
    code, output = run_cli("predict", bundle, hostile_images["photo"])
    assert code == 0 and "(light background, inverted)" in output, output


def test_large_images_are_reduced_close_to_the_full_size_conversion(tmp_path):
    # The reference: the whole image converted to grey, padded to a square and resized in one go.
    rng = np.random.default_rng(0)
    grey = np.kron(
        rng.integers(0, 256, (30, 40), dtype=np.uint8), np.ones((80, 80), dtype=np.uint8)
    )  # 2400x3200
    rgba = np.dstack([grey] * 3 + [np.where(grey > 60, 255, 0).astype(np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "large.png")
    composite = Image.alpha_composite(
        Image.new("RGBA", (3200, 2400), (255,) * 4), Image.fromarray(rgba)
    ).convert("L")
    square = Image.new("L", (3200, 3200), 0)
    square.paste(Image.fromarray(255 - np.asarray(composite)), (0, 400))
    expected = np.asarray(square.resize((28, 28), Image.Resampling.LANCZOS), dtype=int)
    from edge_fm.data.images import image_to_input

    pixels, inverted = image_to_input(tmp_path / "large.png")
    assert inverted
    difference = np.abs(pixels.astype(int) - expected)
    assert difference.mean() < 1 and difference.max() <= 8, (difference.mean(), difference.max())


def test_exif_orientation_is_applied(tmp_path):
    from edge_fm.data.images import image_to_input

    upright = np.zeros((60, 40), dtype=np.uint8)
    upright[:20] = 255  # light at the top
    image = Image.fromarray(np.rot90(upright, 1))  # stored lying on its side
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    pixels, _ = image_to_input(tmp_path / "phone.jpg")
    assert pixels[:8].mean() > 150 and pixels[20:].mean() < 30


# ---------------------------------------------------------------- the demo, served


def _serve(bundle: Path, *options: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """``edge-fm serve`` in its own process (as a user starts it); returns it and its URL once it answers."""
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    server = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", str(bundle), "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.perf_counter() + 90
    while time.perf_counter() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url
        except urllib.error.HTTPError:
            return server, url  # it answers (401 when it wants a key)
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"the server stopped: {server.stdout.read()}")
            time.sleep(0.1)
    server.kill()
    pytest.fail(f"the server did not answer within 90 s: {server.communicate()[0]}")


def _stop(server: subprocess.Popen) -> str:
    server.terminate()
    try:
        return server.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        server.kill()
        return server.communicate()[0]


def _get(url: str, password: str | None = None, body: bytes | None = None) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"} if body else {}
    )
    if password is not None:
        request.add_header(
            "Authorization", "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()
        )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _callback(url: str, inputs: list, changed: str, password: str | None = None) -> tuple[int, dict, bytes]:
    """Calls the demo's callback whose first input is ``changed`` as the page would, with any values."""
    _, _, raw = _get(url + "_dash-dependencies", password)
    spec = next(
        c
        for c in json.loads(raw)
        if f"{c['inputs'][0]['id']}.{c['inputs'][0]['property']}" == changed
        and not c.get("clientside_function")
    )
    outputs = [
        dict(zip(("id", "property"), part.rsplit(".", 1))) for part in spec["output"].strip(".").split("...")
    ]
    payload = {
        "output": spec["output"],
        "outputs": outputs if len(outputs) > 1 else outputs[0],
        "inputs": inputs,
        "changedPropIds": [changed],
        "state": [],
    }
    return _get(url + "_dash-update-component", password, json.dumps(payload).encode())


def _upload(name: str, data: bytes) -> list:
    contents = "data:image/png;base64," + base64.b64encode(data).decode()
    return [{"id": "pending", "property": "data", "value": {"contents": contents, "filename": name}}, []]


def test_demo_serves_through_waitress_with_security_headers(bundle):
    server, url = _serve(bundle)
    try:
        status, headers, page = _get(url)
    finally:
        log = _stop(server)
    assert status == 200 and b"edge-fm demo" in page
    assert headers.get("Server") == "edge-fm", headers  # waitress, not Werkzeug's development server
    policy = headers.get("Content-Security-Policy", "")
    assert (
        "default-src 'self'" in policy
        and "frame-ancestors 'none'" in policy
        and "'unsafe-eval'" not in policy
    )
    assert headers.get("X-Content-Type-Options") == "nosniff" and headers.get("X-Frame-Options") == "DENY"
    assert headers.get("Referrer-Policy") == "no-referrer"
    assert "Traceback" not in log, log
    assert "XNNPACK" not in log, log  # LiteRT's start-up line, once per process that loads a model, is hidden


@pytest.mark.parametrize("how", ["option", "environment"])
def test_demo_requires_its_key_when_given_one(bundle, how):
    key = "correct horse battery staple"
    options, env = (("--key", key), None) if how == "option" else ((), {"EDGE_FM_SERVE_KEY": key})
    server, url = _serve(bundle, *options, env=env)
    try:
        if (
            how == "option"
        ):  # the key is not left on the server's command line, where other users could read it
            assert key not in Path(f"/proc/{server.pid}/cmdline").read_text()
        without, headers, _ = _get(url)
        wrong, _, _ = _get(url, "guess")
        right, _, page = _get(url, key)
        status, _, _ = _get(url + "_dash-update-component", body=b'{"output": "answer.children"}')
        answered, _, answer = _callback(
            url,
            [
                {"id": "image", "property": "data", "value": None},
                {"id": "model", "property": "value", "value": SHIPPED},
            ],
            "image.data",
            key,
        )
    finally:
        log = _stop(server)
    assert without == 401 and "Basic" in headers.get("WWW-Authenticate", ""), headers
    assert wrong == 401 and status == 401
    assert right == 200 and b"edge-fm demo" in page
    assert answered == 200 and b"the image sent was not one the page made" in answer
    assert "Traceback" not in log, log


def test_serve_on_a_busy_port_is_one_line(bundle):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = run_cli("serve", bundle, "--port", port)
    assert_one_line_error(
        code,
        output,
        f"cannot serve on 127.0.0.1:{port}: the port is in use by another program; choose another --port.",
    )
    assert "http://" not in output


def test_forged_requests_get_a_message_not_a_traceback(bundle):
    server, url = _serve(bundle)
    try:
        forged_image = _callback(
            url,
            [
                {"id": "image", "property": "data", "value": {"pixels": "AAAA", "source": "x"}},
                {"id": "model", "property": "value", "value": ["not", "a", "name"]},
            ],
            "image.data",
        )
        forged_upload = _callback(
            url, [{"id": "pending", "property": "data", "value": {"contents": 42}}, []], "pending.data"
        )
        garbage = _get(url + "_dash-update-component", body=b'{"output": 1}')
        works = _callback(
            url,
            [
                {"id": "image", "property": "data", "value": None},
                {"id": "model", "property": "value", "value": SHIPPED},
            ],
            "image.data",
        )
        fine = _callback(url, _upload("shoe.png", _png(np.full((56, 56), 200, np.uint8))), "pending.data")
    finally:
        log = _stop(server)
    assert forged_image[0] == 200 and b"the image sent was not one the page made" in forged_image[2], (
        forged_image
    )
    assert forged_upload[0] == 200 and b"the upload was garbled" in forged_upload[2], forged_upload
    assert garbage[0] == 400 and b"could not understand" in garbage[2], garbage
    assert works[0] == 200 and b"the image sent was not one the page made" in works[2]
    assert fine[0] == 200 and b"upload shoe.png" in fine[2], fine
    assert "Traceback" not in log, log
    assert [line for line in log.splitlines() if "refused" in line or "rror" in line] == [
        line for line in log.splitlines() if "refused POST /_dash-update-component: KeyError" in line
    ], log


def _png(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _server_memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@pytest.mark.slow
@needs_proc
def test_hostile_uploads_at_once_cost_the_demo_little_memory_and_time(bundle, hostile_images):
    server, url = _serve(bundle)
    try:
        for _ in range(2):  # warm up: the first requests load the callbacks' code
            _callback(url, _upload("small.png", _png(np.full((56, 56), 200, np.uint8))), "pending.data")
        _, before = _server_memory_mb(server.pid)
        answers: dict[str, tuple] = {}
        uploads = {
            f"{shape}-{i}": hostile_images[shape]
            for shape in ("thin", "wide", "square", "photo")
            for i in range(2)
        }

        def send(name: str, path: Path) -> None:
            answers[name] = _callback(url, _upload(path.name, path.read_bytes()), "pending.data")

        started = time.perf_counter()
        threads = [threading.Thread(target=send, args=item) for item in uploads.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        _, after = _server_memory_mb(server.pid)
    finally:
        log = _stop(server)
    assert all(status == 200 for status, _, _ in answers.values()), answers
    for name, (_, _, body) in answers.items():
        expected = b"upload photo.jpg" if name.startswith("photo") else b"pixels"
        assert expected in body, (name, body[:300])
    assert after - before < 150, (
        f"the server's peak memory grew {after - before:.0f} MB for 8 hostile uploads at once"
    )
    assert seconds < 30, f"8 hostile uploads at once took {seconds:.1f} s"
    assert "Traceback" not in log, log


# ---------------------------------------------------------------- the demo's page


@pytest.mark.slow
def test_page_says_why_an_upload_over_the_request_limit_is_refused_and_keeps_working(bundle, tmp_path):
    from browser import chromium_page

    # Over three times the limit: the server refuses the request itself (HTTP 413), so only the page can say why.
    huge = tmp_path / "huge.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)).save(huge)
    assert huge.stat().st_size > 3 * 100_000 + 1_000_000
    server, url = _serve(bundle, "--max-upload-mb", "0.1")
    try:
        with chromium_page() as page:
            page.goto(url)
            page.wait_for_function(
                "() => (document.querySelector('#answer') || {textContent: ''}).textContent.length > 0",
                timeout=30_000,
            )
            page.locator("#upload input[type=file]").set_input_files(str(huge))
            try:
                page.wait_for_function(
                    "() => (document.querySelector('#message') || {textContent: ''})"
                    ".textContent.includes('huge.png is')",
                    timeout=30_000,
                )
            except Exception:
                pytest.fail(f"no message on the page; it says {page.locator('#message').inner_text()!r}")
            message = page.locator("#message").inner_text()
            page.locator("button[title='Trouser']").click()
            page.wait_for_function(
                "() => (document.querySelector('#answer') || {textContent: ''}).textContent.startsWith('Trouser')",
                timeout=30_000,
            )
            assert page.locator("#message").inner_text() == ""
    finally:
        log = _stop(server)
    assert message.startswith("huge.png is ") and "MB; the demo takes images up to 0.1 MB" in message, message
    assert "Traceback" not in log, log


@pytest.mark.slow
def test_page_works_behind_its_key_under_its_content_security_policy(bundle):
    from browser import chromium_page

    key = "page key"
    server, url = _serve(bundle, "--key", key)
    violations = []
    try:
        with chromium_page() as page:
            page.on(
                "console",
                lambda message: (
                    violations.append(message.text) if "Content Security Policy" in message.text else None
                ),
            )
            page.context.set_extra_http_headers(
                {"Authorization": "Basic " + base64.b64encode(f"me:{key}".encode()).decode()}
            )
            page.goto(url)
            page.wait_for_function(
                "() => (document.querySelector('#answer') || {textContent: ''}).textContent.length > 0",
                timeout=30_000,
            )
            page.locator("button[title='Sandal']").click()
            page.wait_for_function(
                "() => (document.querySelector('#answer') || {textContent: ''}).textContent.startsWith('Sandal')",
                timeout=30_000,
            )
            page.wait_for_selector("#chart .barlayer .point", state="attached", timeout=30_000)
    finally:
        log = _stop(server)
    assert not violations, violations  # every script and style the page needs is allowed, nothing more
    assert "Traceback" not in log, log


# ---------------------------------------------------------------- SSH targets


@pytest.mark.parametrize(
    "target, part",
    [
        ("ssh://-oProxyCommand=touch%20PWNED@example.com", "user"),
        ("ssh://-oProxyCommand=touch PWNED@example.com", "user"),
        ("ssh://pi@-oProxyCommand=touch", "host"),
    ],
)
def test_ssh_targets_that_would_be_options_are_refused(bundle, tmp_path, monkeypatch, target, part):
    monkeypatch.chdir(tmp_path)
    code, output = run_cli("bench", bundle, "--sample", "--target", target)
    assert_one_line_error(code, output, f"the {part} '-o")
    assert "start with '-'" in output
    assert not list(tmp_path.iterdir())  # no command ran


def test_the_ssh_destination_comes_after_the_end_of_options():
    from edge_fm.bench.targets import SshTarget, parse_target

    command = parse_target(
        "ssh://pi@raspberrypi.local:2222", ssh_options=("UserKnownHostsFile=/k",)
    ).ssh_command("true")
    assert command[-3:] == ["--", "pi@raspberrypi.local", "true"], command
    with pytest.raises(EdgeFMError, match="the host '-p' is not a host name"):
        SshTarget(host="-p")


# ---------------------------------------------------------------- data in the wrong places


def _data_folder(tmp_path: Path, data_dir: Path, layout: dict[str, str]) -> Path:
    """A data folder whose four standard names point at ``layout[name]`` of the real dataset."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name, source in layout.items():
        (folder / name).symlink_to(data_dir / source)
    return folder


TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


@pytest.mark.parametrize(
    "layout, expected",
    [
        (
            {
                TRAIN_IMAGES: TEST_IMAGES,
                TRAIN_LABELS: TEST_LABELS,
                TEST_IMAGES: TRAIN_IMAGES,
                TEST_LABELS: TRAIN_LABELS,
            },
            "the test files hold 60,000 images and the training files 10,000, the sizes of Fashion-MNIST's "
            "training and test splits: the train and test files are swapped",
        ),
        (
            {
                TRAIN_IMAGES: TRAIN_IMAGES,
                TRAIN_LABELS: TRAIN_LABELS,
                TEST_IMAGES: TRAIN_IMAGES,
                TEST_LABELS: TRAIN_LABELS,
            },
            "the test split is the training split (60,000 of its 60,000 images are training images)",
        ),
    ],
    ids=["swapped", "identical"],
)
def test_bench_refuses_a_test_split_that_is_the_training_split(bundle, data_dir, tmp_path, layout, expected):
    # Before: "the Fashion-MNIST test split" at 94.97% and exit 0.
    folder = _data_folder(tmp_path, data_dir, layout)
    code, output = run_cli(
        "bench", bundle, "--data-dir", folder, "--runs", "1", "--min-seconds", "0", "--threads", "1"
    )
    assert_one_line_error(code, output, expected)
    assert "run `edge-fm data fetch` into an empty folder" in output


def test_a_test_split_overlapping_the_training_split_is_refused(tmp_path):
    from edge_fm.data import datasets as data

    train, train_labels = data.load_split("train", data.SAMPLE_DIR)
    test, test_labels = data.load_split("test", data.SAMPLE_DIR)
    test = test.copy()
    test[::10] = train[: len(test[::10])]  # a tenth of the test images are training images
    folder = tmp_path / "overlapping"
    for (image_name, label_name), (images, labels) in zip(
        data.FILES.values(), ((train, train_labels), (test, test_labels))
    ):
        data.write_idx(folder / image_name, images.reshape(-1, 28, 28))
        data.write_idx(folder / label_name, labels)
    code, output = run_cli("data", "info", "--data-dir", folder)
    assert_one_line_error(
        code,
        output,
        "the test split overlaps the training split (100 of its 1,000 images are training images)",
    )
    assert data.load_split("test", data.SAMPLE_DIR)[0].shape == (1000, 28, 28, 1)  # the sample itself is fine


def test_a_full_size_split_with_unbalanced_classes_is_refused(data_dir, tmp_path):
    from edge_fm.data import datasets as data

    folder = tmp_path / "relabelled"
    folder.mkdir()
    for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES):
        (folder / name).symlink_to(data_dir / name)
    labels = data.read_idx(data_dir / TEST_LABELS).copy()
    labels[labels == 9] = 0  # no ankle boots left
    data.write_idx(folder / TEST_LABELS, labels)
    with pytest.raises(
        EdgeFMError,
        match="the test split's classes hold 0 to 2,000 images, where Fashion-MNIST's hold 1,000 each",
    ):
        data.load_split("test", folder)
    assert len(data.load_split("test", data_dir)[1]) == 10_000  # the real dataset passes


# ---------------------------------------------------------------- files read back


def _bundle_with(tmp_path: Path, bundle: Path, name: str, edit) -> Path:
    """A copy of ``bundle`` under ``tmp_path/name`` whose files ``edit(folder)`` then changes."""
    copy = tmp_path / name
    shutil.copytree(bundle, copy)
    edit(copy)
    return copy


def _model_json(text_of):
    def edit(folder: Path) -> None:
        description = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(text_of(description))

    return edit


BAD_MODEL_JSON = {
    "huge-integer": (
        _model_json(lambda d: json.dumps(d)[:-1] + ', "seed": ' + "9" * 5000 + "}"),
        "model.json holds an integer of 5,000 digits (at most 40 are read)",
    ),
    "deep": (
        _model_json(lambda d: "[" * 100_000 + "]" * 100_000),
        "model.json is nested too deeply to read (at most 64 levels)",
    ),
    "list": (
        _model_json(lambda d: "[1, 2, 3]"),
        "model.json: the file holds a list of 3, not an object of named fields",
    ),
    "number-label": (
        _model_json(lambda d: json.dumps({**d, "labels": [7] + d["labels"][1:]})),
        "model.json: field 'labels' item 0 should be a string, not the number 7",
    ),
    "two-line-label": (
        _model_json(lambda d: json.dumps({**d, "labels": ["Shirt\nrm -rf /"] + d["labels"][1:]})),
        "model.json: field 'labels' item 0 ('Shirt\\nrm -rf /') is not a label: labels are one-line strings",
    ),
    "shape-as-text": (
        _model_json(lambda d: json.dumps({**d, "input": {**d["input"], "shape": "28x28"}})),
        "model.json: field 'input.shape' should be a list, not the string '28x28'",
    ),
    "not-json": (_model_json(lambda d: "{'labels': "), "model.json is not valid JSON"),
}


@pytest.mark.parametrize("case", BAD_MODEL_JSON)
@pytest.mark.parametrize("command", ["predict", "serve", "report", "export-mobile"])
def test_a_bad_model_json_is_one_line_naming_the_file_and_field(bundle, tmp_path, monkeypatch, case, command):
    edit, expected = BAD_MODEL_JSON[case]
    broken = _bundle_with(tmp_path, bundle, "broken", edit)
    image = tmp_path / "shirt.png"
    Image.new("L", (56, 56), 200).save(image)
    monkeypatch.chdir(tmp_path)
    argv = {
        "predict": ["predict", broken, image],
        "serve": ["serve", broken, "--port", free_port()],
        "report": ["report", broken, "--sample", "--out", tmp_path / "report.html"],
        "export-mobile": ["export", broken, "--for", "mobile"],
    }[command]
    code, output = run_cli(*argv)
    assert_one_line_error(code, output, expected)
    assert str(broken / "model.json") in output


def test_non_string_labels_are_never_printed_as_classes(bundle, tmp_path):
    broken = _bundle_with(tmp_path, bundle, "broken", BAD_MODEL_JSON["number-label"][0])
    from edge_fm.show.predict import load_artifact

    with pytest.raises(EdgeFMError, match="field 'labels' item 0 should be a string"):
        load_artifact(broken)


def _card_front(front: str):
    def edit(folder: Path) -> None:
        body = (folder / "MODEL_CARD.md").read_text().split("---", 2)[2]
        (folder / "MODEL_CARD.md").write_text(f"---\n{front}---{body}")

    return edit


def _measurement(change):
    def edit(folder: Path) -> None:
        record = json.loads((folder / "measurement.json").read_text())
        record["results"] = change(record["results"])
        (folder / "measurement.json").write_text(json.dumps(record))

    return edit


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda figures: {**figures, "accuracy": "high"},
            "measurement.json: field 'results.accuracy' should be a number, not the string 'high'",
        ),
        (
            lambda figures: {**figures, "latency": {"p50_ms": [7]}},
            "measurement.json: field 'results.latency.p50_ms' should be a number, not a list of 1",
        ),
        (lambda figures: [7], "measurement.json: field 'results' should be an object, not a list of 1"),
    ],
    ids=["accuracy-not-a-number", "p50-not-a-number", "a-list"],
)
@pytest.mark.parametrize("command", ["serve", "report"])
def test_a_bad_measurement_record_is_one_line(bundle, tmp_path, change, expected, command):
    folder = tmp_path / "models"
    folder.mkdir()
    _bundle_with(folder, bundle, "measured", _measurement(change))
    argv = (
        ["serve", folder, "--port", free_port()]
        if command == "serve"
        else ["report", folder, "--sample", "--out", tmp_path / "report.html"]
    )
    code, output = run_cli(*argv)
    assert_one_line_error(code, output, expected)
    assert str(folder / "measured" / "measurement.json") in output


def test_a_cards_front_matter_is_never_read_for_figures(bundle, tmp_path):
    # The figures come from measurement.json: a card with broken front matter is only text to show.
    folder = tmp_path / "models"
    folder.mkdir()
    _bundle_with(folder, bundle, "carded", _card_front("license: [mit\n"))
    code, output = run_cli("report", folder, "--sample", "--out", tmp_path / "report.html")
    assert code == 0 and "error" not in output, output
    with pytest.raises(AssertionError, match="would have started serving"):
        run_cli("serve", folder, "--port", free_port())


def test_a_bench_result_with_wrong_field_types_is_one_line(bundle, tmp_path):
    result = {
        "target": "local",
        "environment": {},
        "test_set": {},
        "rows": [{"artifact": SHIPPED, "model": SHIPPED, "status": "ok", "accuracy": "93%"}],
    }
    (tmp_path / "bench.json").write_text(json.dumps(result))
    code, output = run_cli("serve", bundle.parent, "--bench", tmp_path / "bench.json", "--port", free_port())
    assert_one_line_error(
        code, output, "bench.json: field 'rows[0].accuracy' should be a number, not the string '93%'"
    )


def test_an_oversized_json_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from edge_fm import records
    from edge_fm.io import read_json

    monkeypatch.setattr(records, "MAX_BYTES", 1000)
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {}, "padding": "x" * 2000}))
    with pytest.raises(EdgeFMError, match=r"manifest.json is 0 MB, more than the 0 MB edge-fm reads back"):
        read_json(tmp_path / "manifest.json")


# ---------------------------------------------------------------- messages


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory) -> dict[str, Path]:
    """Bare .tflite files of other datasets' shapes: 32x32 colour input, and 5 classes."""
    from edge_fm.compat import keras
    from edge_fm.export.exporter import convert
    from edge_fm.export.formats import get_format

    folder = tmp_path_factory.mktemp("odd")
    models = {}
    for name, shape, classes in (("colour32", (32, 32, 3), 10), ("five-classes", (28, 28, 1), 5)):
        inputs = keras.Input(shape)
        model = keras.Model(
            inputs, keras.layers.Dense(classes, activation="softmax")(keras.layers.Flatten()(inputs))
        )
        models[name] = folder / f"{name}.tflite"
        models[name].write_bytes(convert(model, get_format("fp32"), "float32"))
    return models


def test_bench_names_each_failed_artifact_on_a_line_of_its_own(odd_models, bundle):
    code, output = run_cli(
        "bench",
        odd_models["colour32"],
        odd_models["five-classes"],
        bundle / "model.tflite",
        "--sample",
        "--runs",
        "5",
        "--min-seconds",
        "0",
        "--threads",
        "1",
        "--min-accuracy",
        "0.5",
    )
    assert code == 1, output
    lines = output.splitlines()
    assert (
        f"error: colour32 ({odd_models['colour32']}): the model expects 32x32 colour (3 channels) input and the test "
        "images are 28x28 grey." in lines
    ), output
    assert (
        f"error: five-classes ({odd_models['five-classes']}): the model outputs 5 classes and the test set has 10."
        in lines
    ), output
    assert (
        "reshape" not in output and "out of bounds" not in output and "below --min-accuracy" not in output
    ), output
    table = [line for line in lines if line.startswith("│")]
    assert len(table) == 3, output  # one line per artifact: no reason wrapped inside a cell
    assert "the 1 artifact(s) measured reach 50.00%" in output


def test_predict_on_a_bare_tflite_names_no_missing_model_json(odd_models, tmp_path):
    image = tmp_path / "shirt.png"
    Image.new("L", (56, 56), 200).save(image)
    code, output = run_cli("predict", odd_models["five-classes"], image)
    assert_one_line_error(
        code,
        output,
        f"{odd_models['five-classes']} outputs 5 classes, and with no model.json beside "
        "it the labels are Fashion-MNIST's 10",
    )
    assert "model.json lists" not in output


@pytest.mark.slow
def test_optimize_prints_its_error_alone(tmp_path):
    # In a fresh process: TensorFlow's start-up lines go to the process's stderr, past any capture.
    done = subprocess.run(
        [sys.executable, "-c", CLI, "optimize", "no-such-run", "--prune", "0.5"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 1
    assert done.stdout.strip() == ""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no-such-run does not exist"), done.stderr


def test_bench_reports_a_bundle_whose_model_json_is_corrupt(bundle, tmp_path):
    # Before: the runner's RecursionError as the row's error (a list gave an AttributeError).
    edit, expected = BAD_MODEL_JSON["deep"]
    broken = _bundle_with(tmp_path, bundle, "broken", edit)
    code, output = run_cli(
        "bench", broken / "model.tflite", "--sample", "--runs", "3", "--min-seconds", "0", "--threads", "1"
    )
    assert code == 1 and "Traceback" not in output and "RecursionError" not in output, output
    # Alone, the broken bundle is the one line (it names no dataset to measure on).
    assert f"error: {broken / 'model.json'}" in output and expected in output, output


@pytest.mark.parametrize(
    "payload, shown",
    [(b"[1, 2]", "?"), (b'{"format": {"x": 1}}', "?"), (b'{"format": "[red]x[/red]"}', "[red]x[/red]")],
)
def test_bench_of_a_bare_file_with_a_bad_embedded_description_measures_it(bundle, tmp_path, payload, shown):
    # Before: an AttributeError (a list), a rich rendering error (a dict as format), markup read as markup.
    from edge_fm.export import tflite_file

    model = tflite_file.read((bundle / "model.tflite").read_bytes())
    tflite_file.set_metadata(model, tflite_file.METADATA_DESCRIPTION, payload)
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(tflite_file.serialize(model))
    code, output = run_cli("bench", bare, "--sample", "--runs", "3", "--min-seconds", "0", "--threads", "1")
    assert code == 0 and "Traceback" not in output, output
    row = next(line for line in output.splitlines() if line.startswith("│ bare"))
    assert row.split("│")[2].strip() == shown, (
        row
    )  # an untrusted description names no format; text stays text


# ---------------------------------------------------------------- labels that do not match the model


@pytest.fixture
def mlp_copy(tmp_path) -> Path:
    """A copy of the shipped mlp bundle (10 classes) whose labels.txt the tests rewrite."""
    import shutil

    copy = tmp_path / "mlp"
    copy.mkdir()
    for name in ("model.tflite", "labels.txt", "model.json", "manifest.json"):
        shutil.copy(REPO / "models" / "mlp" / name, copy / name)
    return copy


@pytest.mark.parametrize("form", ["mcu", "mobile"])
@pytest.mark.parametrize(
    "labels, expected",
    [
        ("Shirt\nShoe\nBag\n", "names 3 classes but the model outputs 10"),
        ("", "names 0 classes but the model outputs 10"),
        ("".join(f"class {i}\n" for i in range(100_000)), "names 100,000 classes but the model outputs 10"),
    ],
    ids=["three", "empty", "a-hundred-thousand"],
)
def test_a_form_refuses_labels_that_do_not_match_the_model(mlp_copy, tmp_path, form, labels, expected):
    (mlp_copy / "labels.txt").write_text(labels)
    out = tmp_path / f"{form}-form"
    code, output = run_cli("export", mlp_copy, "--for", form, "--out", out, "--parity-images", 20)
    assert_one_line_error(code, output, expected)
    assert not out.exists()


def test_a_form_refuses_a_labels_file_that_is_not_text(mlp_copy, tmp_path):
    (mlp_copy / "labels.txt").write_bytes(b"\xff\xfe\x00garbage\n" * 10)
    code, output = run_cli("export", mlp_copy, "--for", "mcu", "--out", tmp_path / "x", "--parity-images", 20)
    assert_one_line_error(code, output, "is not UTF-8 text")


def test_what_a_killed_ship_leaves_is_not_listed_as_a_model(tmp_path):
    """A ship killed between its renames leaves .tmp-NAME or .old-NAME: no reader lists them."""
    import shutil

    from edge_fm.bench.measurements import bundles_in
    from edge_fm.shipping.catalog import read_provenances

    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "mlp", models / "mlp")
    shutil.copytree(REPO / "models" / "mlp", models / ".old-mlp")
    shutil.copytree(REPO / "models" / "edge-cnn-tiny", models / ".tmp-edge-cnn-tiny")
    assert [p.name for p in bundles_in(models)] == ["mlp"]
    assert list(read_provenances(models)) == ["mlp"]
    code, output = run_cli(
        "bench", models, "--sample", "--runs", 5, "--min-seconds", 0.01, "--max-seconds", 1
    )
    assert code == 0, output
    assert "edge-cnn-tiny" not in output and "old-mlp" not in output
