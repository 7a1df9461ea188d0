"""A tiny fitted run, and a real uvicorn server on loopback around it (in a thread)."""

import shutil
import socket
import threading
import time

import pytest
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.synthetic import make_synthetic


@pytest.fixture(scope="package")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "cat"
    make_synthetic(root, n_train=10, n_test_good=3, n_test_defect=3, size=64)
    return root


@pytest.fixture(scope="package")
def images(data, tmp_path_factory):
    """The test images in one folder, with unique names (class_file.png)."""
    folder = tmp_path_factory.mktemp("imgs")
    for f in sorted(data.glob("test/*/*.png")):
        (folder / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="package")
def fitted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "padim"
    res = CliRunner().invoke(app, ["fit", "--method", "padim", "--data", str(data), "--out", str(out),
                                   "-o", "image_size=64"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def run(fitted, tmp_path):
    """A private copy: tests recalibrate it."""
    copy = tmp_path / "run"
    shutil.copytree(fitted, copy)
    return copy


@pytest.fixture(scope="package")
def slow_jpeg() -> bytes:
    """A progressive 6000x6000 JPEG at the scan cap: seconds of CPU to decode, under every other cap."""
    import io

    from PIL import Image

    from latentad.serve.formats import MAX_JPEG_SCANS

    buf = io.BytesIO()
    Image.new("L", (6000, 6000), 128).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:last] + data[last:-2] * (MAX_JPEG_SCANS - data.count(b"\xff\xda") + 1) + b"\xff\xd9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server_factory(run):
    """Start `create_app(model or run, token="s3cret", **options)` under uvicorn on 127.0.0.1, configured as
    `latentad serve` configures it: returns (base URL, app, port); every server started is stopped
    after the test."""
    import uvicorn

    from latentad.serve.app import create_app
    from latentad.serve.limits import server_config

    started = []

    def start(model=None, **options):
        api = create_app(model or run, token="s3cret", **options)
        port = free_port()
        srv = uvicorn.Server(server_config(api, "127.0.0.1", port))  # the limits `latentad serve` runs with
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        started.append((srv, thread, api))
        for _ in range(200):
            if srv.started:
                break
            time.sleep(0.05)
        assert srv.started, "uvicorn did not start"
        return f"http://127.0.0.1:{port}", api, port

    yield start
    for srv, thread, api in started:
        srv.should_exit = True
        thread.join(timeout=10)
        api.state.service.close()


@pytest.fixture
def server(server_factory):
    """(base URL, app) of `create_app(run, token="s3cret")` served by uvicorn on 127.0.0.1."""
    base, api, _ = server_factory(max_upload_mb=2)
    return base, api
