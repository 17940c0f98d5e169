"""The web demo (`edge-fm serve`): LiteRT only, safe by default, right answers, tested in a real browser."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import chromium_page
from conftest import free_port
from PIL import Image

from edge_fm.data.datasets import CLASS_NAMES, load_split
from edge_fm.errors import EdgeFMError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("edge-cnn-tiny", "cnn-2conv")  # two real int8 bundles of models/, small enough to load fast
# The server refuses to load TensorFlow: importing it raises, so any path that reaches it fails the test.
GUARDED_SERVER = (
    "import sys; sys.modules['tensorflow'] = None; from edge_fm.show.serve import main; "
    "sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo") / "models"
    for name in SHIPPED:
        shutil.copytree(REPO / "models" / name, folder / name)
    return folder


def _start(folder: Path, *options: str) -> tuple[subprocess.Popen, str, float]:
    """Starts the guarded server; returns it, its URL and the seconds from process start to first page."""
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-c", GUARDED_SERVER, str(folder), "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = started + 60
    while time.perf_counter() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return server, url, time.perf_counter() - started
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"the server stopped: {server.stdout.read()}")
            time.sleep(0.05)
    server.kill()
    pytest.fail(f"the server did not answer within 60 s: {server.communicate()[0]}")


def _stop(server: subprocess.Popen) -> str:
    server.terminate()
    try:
        return server.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        server.kill()
        return server.communicate()[0]


def _litert_class(tflite: Path, pixels: np.ndarray) -> str:
    """The class a plain LiteRT interpreter gives, computed apart from edge-fm's runner."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    x = np.clip(np.round(pixels.reshape(1, 28, 28, 1) / scale + zero), -128, 127).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return CLASS_NAMES[int(interpreter.get_tensor(out["index"])[0].argmax())]


def test_server_loads_no_tensorflow(demo_models):
    code = (
        "import sys, edge_fm.show.serve as s; app = s.create_app(s.ServeConfig(sys.argv[1])); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(demo_models)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_server_binds_loopback_unless_told(demo_models):
    from edge_fm.show.serve import ServeConfig, is_loopback

    assert ServeConfig(demo_models).host == "127.0.0.1"
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    with pytest.raises(EdgeFMError, match="--expose"):
        ServeConfig(demo_models, host="0.0.0.0")
    assert ServeConfig(demo_models, host="0.0.0.0", expose=True).expose


def test_cli_refuses_a_public_host_in_one_line(demo_models):
    from typer.testing import CliRunner

    from edge_fm.cli import app

    result = CliRunner().invoke(app, ["serve", str(demo_models), "--host", "0.0.0.0"])
    assert result.exit_code == 1, result.output
    assert "--expose" in result.output and "Traceback" not in result.output


def test_concurrent_answers_are_each_images_own(demo_models, data_dir):
    from edge_fm.show.serve import load_models

    model = load_models(demo_models)[0]
    images, _ = load_split("test", data_dir)
    images = images[:32, :, :, 0]
    alone = [model.answer(image) for image in images]
    together = [None] * len(images)

    def work(index):
        for _ in range(3):
            together[index] = model.answer(images[index])
            model.occlusion(images[index], 0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for first, second in zip(alone, together):
        np.testing.assert_array_equal(first, second)


def test_upload_errors_are_one_line_messages():
    import base64

    from edge_fm.show.serve import decode_upload

    def upload(data: bytes) -> str:
        return "data:application/octet-stream;base64," + base64.b64encode(data).decode()

    with pytest.raises(EdgeFMError, match="notes.txt: not a readable image"):
        decode_upload(upload(b"just some text\n"), "notes.txt", 1_000_000)
    with pytest.raises(EdgeFMError, match=r"big.png is 2\.0 MB; the demo takes images up to 1\.0 MB"):
        decode_upload(upload(bytes(2_000_000)), "big.png", 1_000_000)


def _bomb(path: Path) -> Path:
    # More pixels than Pillow's decompression-bomb limit, in a few kilobytes of PNG.
    side = int((Image.MAX_IMAGE_PIXELS + 1) ** 0.5) + 1
    Image.new("1", (side, side)).save(path)
    return path


@pytest.mark.slow
def test_demo_in_chromium(demo_models, data_dir, tmp_path):
    images, labels = load_split("test", data_dir)
    shoe = tmp_path / "test-image.png"
    Image.fromarray(images[0, :, :, 0]).resize((112, 112), Image.Resampling.NEAREST).save(shoe)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image\n")
    oversized = tmp_path / "oversized.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(oversized)
    assert oversized.stat().st_size > 100_000
    bomb = _bomb(tmp_path / "bomb.png")

    server, url, start_seconds = _start(demo_models, "--max-upload-mb", "0.1")
    print(f"\nserver: first page {start_seconds:.2f} s after process start")
    try:
        with chromium_page() as page:
            page.goto(url)
            page.wait_for_selector("#answer:not(:empty)", timeout=30_000)
            upload = page.locator("#upload input[type=file]")

            sent = time.perf_counter()
            upload.set_input_files(str(shoe))
            page.wait_for_function(
                "() => (document.querySelector('#source') || {textContent: ''}).textContent.includes('test-image.png')",
                timeout=30_000,
            )
            page.wait_for_function(
                "() => { const a = document.querySelector('#answer'); return !!a && !a.textContent.includes('...'); }",
                timeout=30_000,
            )
            print(f"server: answer {time.perf_counter() - sent:.2f} s after the upload")

            from edge_fm.show.predict import image_to_input

            pixels, _ = image_to_input(shoe)
            chosen = page.locator("#model").inner_text().strip()
            expected = _litert_class(demo_models / chosen / "model.tflite", pixels)
            assert page.locator("#answer").inner_text().startswith(expected + " (")
            assert expected == CLASS_NAMES[labels[0]]  # the shipped model gets this test image right
            page.wait_for_selector(
                "#chart .barlayer .point", state="attached", timeout=30_000
            )  # drawn after the answer
            assert page.locator("#chart .barlayer .point").count() == 10
            rows = page.locator("#models-table tbody tr")
            assert rows.count() == len(SHIPPED)
            seen = page.locator("#seen").evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert seen == [224, 224]  # 28x28, enlarged 8 times
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

            for path, message in (
                (text_file, "notes.txt: not a readable image"),
                (oversized, "up to 0.1 MB"),
                (bomb, "decompression bombs"),
            ):
                upload.set_input_files(str(path))
                try:
                    page.wait_for_function(
                        "() => (document.querySelector('#message') || {textContent: ''})"
                        f".textContent.includes({message!r})",
                        timeout=30_000,
                    )
                except Exception:
                    pytest.fail(
                        f"{path.name}: expected {message!r}, the page says {page.locator('#message').inner_text()!r}"
                    )

            page.locator("button[title='Trouser']").click()
            page.wait_for_function(
                "() => (document.querySelector('#message') || {textContent: ''}).textContent === ''",
                timeout=30_000,
            )
            page.wait_for_function(
                "() => (document.querySelector('#answer') || {textContent: ''}).textContent.startsWith('Trouser')",
                timeout=30_000,
            )
    finally:
        log = _stop(server)
    assert "Traceback" not in log, log
