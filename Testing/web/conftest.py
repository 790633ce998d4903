"""Fixtures for the browser tests: a ``spineseg web`` server in a subprocess (127.0.0.1, a free port), a test
models folder (``truth``: the phantom's truth through a stand-in segmenter; ``tiny``: a tiny random network run
by the real command line), and Debian's chromium driven by Playwright."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="needs slicer-core (pip install 'trame-slicer[standalone]')")
pytest.importorskip("trame_slicer", reason="needs trame-slicer")

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 60


def _tiny_checkpoint(path: Path, name: str) -> Path:
    import torch

    from SpineSegLib.checkpoint import save_checkpoint
    from SpineSegLib.labels import load_label_table
    from SpineSegLib.networks import build_network

    table = load_label_table()
    torch.manual_seed(0)
    args = {"channels": [4, 8, 16], "num_res_units": 0}
    network = build_network("unet3d", 1, table.num_classes, len(table.lesion_classes), **args)
    card = {"name": name, "architecture": {"id": "unet3d", "args": args},
            "preprocessing": {"intensity_window": [-1000, 1000],
                              "stages": {"coarse": {"spacing": [4, 4, 4], "patch_size": [32, 32, 32]},
                                         "fine": {"spacing": [2, 2, 2], "patch_size": [32, 32, 32]}}}}
    return save_checkpoint(network, card, path)


@pytest.fixture(scope="session")
def web_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    models = root / "models"
    _tiny_checkpoint(models / "tiny", "tiny random")
    _tiny_checkpoint(models / "truth", "phantom truth (test)")
    python = root / "fake-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_segmenter.py"}" "$@"\n')
    python.chmod(0o755)
    return {"root": root, "models": models, "datasets": root / "datasets", "python": python}


def start_server(web_dirs, command: str = "web", log_name: str = "server.log"):
    """``spineseg web`` (or ``demo``) on 127.0.0.1 and a free port: (process, base URL)."""
    log_path = web_dirs["root"] / log_name
    argv = [sys.executable, "-m", "SpineSegLib.cli", command, "--host", "127.0.0.1", "--port", "0",
            "--models", str(web_dirs["models"]), "--datasets", str(web_dirs["datasets"]),
            "--default-model", "truth", "--python", str(web_dirs["python"]), "--device", "cpu",
            "--session-timeout", "120"]
    env = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW="vtkEGLRenderWindow", PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True)
    deadline = time.monotonic() + SERVER_START_S
    url = None
    while time.monotonic() < deadline and url is None:
        line = server.stdout.readline().decode(errors="replace")
        if not line and server.poll() is not None:
            break
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        url = match.group(1) if match else None
    if url is None:
        server.kill()
        pytest.fail(f"spineseg {command} did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
    return server, url


def stop_server(server) -> None:
    server.terminate()  # the launcher stops its sessions on SIGTERM
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="session")
def server_control():
    """(start_server, stop_server), for tests that run a server of their own."""
    return start_server, stop_server


@pytest.fixture(scope="session")
def web_server(web_dirs):
    """``spineseg web`` on 127.0.0.1 and a free port; yields its base URL."""
    server, url = start_server(web_dirs)
    yield url
    stop_server(server)


@pytest.fixture
def slicer_context():
    """A fresh scene with the module logics attached (as in Testing/scene)."""
    from SpineSegLib import scene

    context = scene.create_scene()
    yield context
    scene.release_scene(context)


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    pytest.importorskip("playwright", reason="needs playwright (pip)")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):  # .ci/run installs chromium: a missing browser there is a failure, not a skip
            pytest.fail(f"Debian's chromium is missing at {CHROMIUM}")
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1400, "height": 900}, accept_downloads=True)
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context, web_server):
    """A new tab with a new SpineSeg session."""
    tab = browser_context.new_page()
    tab.set_default_timeout(60_000)
    tab.goto(web_server)
    tab.wait_for_selector("#ss-phantom")
    yield tab
    tab.close()

