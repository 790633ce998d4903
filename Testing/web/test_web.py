"""SpineSeg in the browser (Debian chromium driven by Playwright): load a phantom, segment, see the coloured
vertebrae, renumber, paint and undo, save the case; the real model path with Cancel; bad input on the page while
the server goes on serving."""

import io
import json
import struct
import time
import zlib

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slicer, pytest.mark.slow]

PHANTOM_NAMES = ["L2", "L3", "L4", "L5", "sacrum"]
VIEWS_LEFT = 470  # the panel and the tool bar are left of this (pixels)


# --- helpers -------------------------------------------------------------------------------------------------------
def vertebra_names(page) -> list[str]:
    return [t.strip() for t in page.locator("#ss-vertebrae .ss-vertebra-name").all_inner_texts()]


def wait_names(page, names, timeout=60_000) -> None:
    page.wait_for_function(
        "names => Array.from(document.querySelectorAll('#ss-vertebrae .ss-vertebra-name'))"
        ".map(e => e.textContent.trim()).join(',') === names", arg=",".join(names), timeout=timeout)


def volumes(page) -> dict[str, str]:
    rows = page.locator("#ss-vertebrae tr.ss-vertebra")
    return {rows.nth(i).locator(".ss-vertebra-name").inner_text().strip():
            rows.nth(i).locator(".ss-vertebra-volume").inner_text().strip() for i in range(rows.count())}


def wait_volumes(page, expected: dict, equal=True, timeout=30_000) -> dict:
    deadline = time.monotonic() + timeout / 1000
    while time.monotonic() < deadline:
        now = volumes(page)
        if (now == expected) == equal:
            return now
        page.wait_for_timeout(200)
    raise AssertionError(f"vertebra volumes {'never became' if equal else 'never changed from'} {expected}: {now}")


def choose(page, select_id: str, option: str) -> None:
    """Pick an option of a Vuetify select."""
    page.locator(".v-select", has=page.locator(f"#{select_id}")).locator(".v-field").click()
    page.get_by_role("option", name=option, exact=True).click()


def coloured_pixels(png: bytes, colours, tolerance=45.0) -> dict:
    """Pixels of the views (right of the panel) within ``tolerance`` of each colour."""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)[:, VIEWS_LEFT:]
    return {name: int((np.linalg.norm(image - np.asarray(rgb, np.float32), axis=-1) < tolerance).sum())
            for name, rgb in colours.items()}


def views_settled(page, pause_ms=1500) -> None:
    """Give the remote views time to render and stream (no UI state tells when a frame has arrived)."""
    page.wait_for_timeout(pause_ms)


def health(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "health", timeout=10) as response:
        return json.loads(response.read())


def generate_phantom(page) -> None:
    page.click("#ss-phantom")
    page.wait_for_selector("#ss-volume")
    page.wait_for_selector("#ss-segment:not([disabled])")


def nifti_2d(path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((64, 64, 1), 100, np.int16), np.eye(4)), str(path))


# --- the main flow -------------------------------------------------------------------------------------------------
def test_segment_renumber_paint_undo_and_save(page, web_server, web_dirs):
    from SpineSegLib.labels import load_label_table

    table = load_label_table()
    colours = {name: table.by_name(name).color for name in PHANTOM_NAMES}
    generate_phantom(page)
    views_settled(page)
    before = coloured_pixels(page.screenshot(), colours)

    page.click("#ss-segment")
    page.wait_for_selector("#ss-vertebrae")
    wait_names(page, PHANTOM_NAMES)
    summary = "Segmented 5 vertebrae (L2-sacrum) and 2 lesions"
    page.wait_for_function(f"() => document.querySelector('#ss-message').innerText.includes('{summary}')")
    assert page.locator("#ss-lesions .ss-lesion").count() == 2
    views_settled(page, 2500)
    shot = page.screenshot()
    (web_dirs["root"] / "segmented.png").write_bytes(shot)
    after = coloured_pixels(shot, colours)
    shown = [name for name in PHANTOM_NAMES if after[name] > 150 and after[name] > 5 * before[name] + 50]
    assert len(shown) >= 3, f"vertebra colours in the views: before {before}, after {after}"

    # renumber from L3: it is truly L2, so every vertebra moves up by one
    page.locator("#ss-vertebrae tr.ss-vertebra", has_text="L3").click()
    page.wait_for_function("() => document.querySelector('#ss-selected').textContent.includes('Selected: L3')")
    choose(page, "ss-true-name", "L2")
    page.click("#ss-renumber")
    wait_names(page, ["L1", "L2", "L3", "L4", "sacrum"])
    # The message is its own state update: wait for it rather than reading it once.
    page.wait_for_function("() => document.querySelector('#ss-message').innerText.includes('L3->L2')")
    views_settled(page)
    (web_dirs["root"] / "renumbered.png").write_bytes(page.screenshot())

    # lesions: click to jump, add one at the slice crossing, change its class, delete it
    page.locator("#ss-lesions .ss-lesion").first.click()
    page.wait_for_function("() => !document.querySelector('#ss-selected').textContent.includes('not set')")
    page.click("#ss-add-lesion")
    page.wait_for_function("() => document.querySelectorAll('#ss-lesions .ss-lesion').length === 3")
    added = page.locator("#ss-lesions .ss-lesion").nth(2)
    assert "fracture" in added.inner_text()
    added.locator(".v-select .v-field").click()
    page.get_by_role("option", name="sclerotic", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('#ss-lesions .ss-lesion-text')[2]"
                           ".textContent.includes('sclerotic')")
    added.locator(".ss-lesion-delete").click()
    page.wait_for_function("() => document.querySelectorAll('#ss-lesions .ss-lesion').length === 2")

    # paint a stroke in the axial view with the segment editor, then undo it
    page.locator("#ss-vertebrae tr.ss-vertebra", has_text="L3").click()
    page.wait_for_function("() => document.querySelector('#ss-selected').textContent.includes('Selected: L3')")
    unpainted = volumes(page)
    page.click("#ss-tool-editor")
    page.locator("#ss-editor button:has(i.mdi-brush)").first.click()
    axial = _axial_view_box(page)
    x, y = axial["x"] + axial["width"] * 0.35, axial["y"] + axial["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 16):
        page.mouse.move(x + step * axial["width"] * 0.02, y + step * 2)
        page.wait_for_timeout(30)
    page.mouse.up()
    painted = wait_volumes(page, unpainted, equal=False)
    assert painted != unpainted
    views_settled(page)
    (web_dirs["root"] / "painted.png").write_bytes(page.screenshot())
    page.click("#ss-tool-panel")
    page.wait_for_selector("#ss-undo:not([disabled])")
    page.click("#ss-undo")
    wait_volumes(page, unpainted, equal=True)
    wait_names(page, ["L1", "L2", "L3", "L4", "sacrum"])

    # save the corrected case into a dataset folder on the server
    page.fill("#ss-dataset", "browser")
    page.fill("#ss-case-id", "web_case")
    page.click("#ss-save")
    page.wait_for_selector("#ss-saved")
    dataset = web_dirs["datasets"] / "browser"
    for sub, suffix in (("images", ".nii.gz"), ("labels", ".nii.gz"), ("lesions", ".json")):
        assert (dataset / sub / f"web_case{suffix}").is_file()
    from spineseg_train.dataset import load_dataset

    (case,) = load_dataset(dataset)
    assert case.case_id == "web_case" and case.meta["source"] == "corrected"
    present = {table.by_value(v).name for v in np.unique(case.labels.array) if v}
    assert present == {"L1", "L2", "L3", "L4", "sacrum"}
    assert len(case.lesions) == 2

    # saving the same case id again is refused on the page; nothing is overwritten
    page.fill("#ss-case-id", "web_case")
    page.click("#ss-save")
    page.wait_for_selector("#ss-error")
    assert "already exists" in page.inner_text("#ss-error")

    # a download: the lesions as JSON
    with page.expect_download() as download:
        page.click("#ss-download-lesions")
    lesions = json.loads(download.value.path().read_text())["lesions"]
    assert len(lesions) == 2 and all(les["vertebra"] in ("L1", "L2", "L3", "L4") for les in lesions)


def _axial_view_box(page) -> dict:
    """The bottom-right view of the quad layout is the axial one."""
    boxes = [img.bounding_box() for img in page.locator("img.image-display-area").all()]
    return max(boxes, key=lambda b: (b["x"] + b["y"]))


# --- the real network, and Cancel ----------------------------------------------------------------------------------
def test_real_model_runs_and_can_be_cancelled(page):
    generate_phantom(page)
    choose(page, "ss-model", "tiny random (tiny)")
    page.click("#ss-segment")
    page.wait_for_selector("#ss-cancel")
    page.click("#ss-cancel")
    page.wait_for_function("() => (document.querySelector('#ss-message') || {}).textContent?.includes('cancelled')")
    assert page.locator("#ss-vertebrae").count() == 0
    assert page.is_enabled("#ss-segment")

    page.click("#ss-segment")  # again, to the end: a random network still gives a result the page shows
    page.wait_for_selector("#ss-progress")
    page.wait_for_function("() => (document.querySelector('#ss-message') || {}).textContent?.includes('Segmented')",
                           timeout=120_000)
    assert "100%" in page.inner_text("#ss-stage")


# --- bad input -----------------------------------------------------------------------------------------------------
def test_bad_input_is_reported_and_the_server_keeps_serving(page, web_server, tmp_path, browser_context):
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image")
    page.set_input_files("#ss-upload", str(text))
    page.wait_for_selector("#ss-error")
    assert "unsupported input" in page.inner_text("#ss-error")

    flat = tmp_path / "slice.nii.gz"
    nifti_2d(flat)
    page.set_input_files("#ss-upload", str(flat))
    page.wait_for_function("() => (document.querySelector('#ss-error') || {}).textContent?.includes('2D')")

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b" + b"\x00" * 50)
    page.set_input_files("#ss-upload", str(broken))
    page.wait_for_function("() => (document.querySelector('#ss-error') || {}).textContent?.includes('corrupt')")

    generate_phantom(page)  # the same session goes on working
    assert page.locator("#ss-error").count() == 0
    assert health(web_server)["status"] == "ok"
    second = browser_context.new_page()  # and another session starts
    try:
        second.goto(web_server)
        second.wait_for_selector("#ss-phantom")
        assert "/s/" in second.url and second.url != page.url
    finally:
        second.close()


def test_png_helper_counts_colours():
    """The pixel-colour check itself: a red square is found, nothing else is."""
    rgb = np.zeros((20, VIEWS_LEFT + 20, 3), np.uint8)
    rgb[5:15, VIEWS_LEFT + 5:VIEWS_LEFT + 15] = (200, 30, 30)
    counts = coloured_pixels(_png(rgb), {"red": (200, 30, 30), "green": (30, 200, 30)})
    assert counts == {"red": 100, "green": 0}


def _png(rgb: np.ndarray) -> bytes:
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# --- spineseg demo -------------------------------------------------------------------------------------------------
def test_demo_opens_with_a_phantom_loaded(browser_context, web_dirs, server_control):
    start_server, stop_server = server_control
    server, url = start_server(web_dirs, "demo", "demo.log")
    tab = browser_context.new_page()
    try:
        tab.goto(url)
        tab.wait_for_selector("#ss-volume", timeout=90_000)  # loaded without a click
        assert "phantom_lumbar_3" in tab.inner_text("#ss-volume")
        assert tab.is_enabled("#ss-segment")
    finally:
        tab.close()
        stop_server(server)
