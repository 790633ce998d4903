"""Bad input: a clear, specific message, a non-zero exit, no output folder, and the input untouched."""

import hashlib

import nibabel as nib
import numpy as np
import pytest

from SpineSegLib.cli import main


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine), str(path))
    return path


def _ct_like(shape=(32, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000.0, dtype=np.float32)
    array[6:26, 6:26, :] = rng.normal(40, 20, (20, 20, shape[2]))
    array[12:20, 12:20, :] = 700.0
    return array


def _two_d(tmp_path):
    return _nifti(tmp_path / "slice.nii.gz", _ct_like((64, 64, 1))[:, :, 0])


def _empty(tmp_path):
    return _nifti(tmp_path / "empty.nii.gz", np.zeros((32, 32, 32), dtype=np.int16))


def _nan(tmp_path):
    array = _ct_like()
    array[3, 4, 5] = np.nan
    array[6, 7, 8] = np.inf
    return _nifti(tmp_path / "nan.nii.gz", array)


def _mr_like(tmp_path):
    return _nifti(tmp_path / "mr.nii.gz", np.random.default_rng(0).random((32, 32, 32)).astype(np.float32))


def _missing(tmp_path):
    return tmp_path / "does-not-exist.nii.gz"


def _truncated(tmp_path):
    path = _nifti(tmp_path / "ct.nii.gz", _ct_like())
    path.write_bytes(path.read_bytes()[:300])
    return path


def _no_dicom(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    return folder


def _wrong_format(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


CASES = {
    "2D image": (_two_d, "needs a 3D CT"),
    "empty volume": (_empty, "is empty"),
    "NaN and Inf voxels": (_nan, "2 NaN or infinite voxels"),
    "MR-like intensities": (_mr_like, "does not look like a CT"),
    "missing file": (_missing, "input not found"),
    "truncated file": (_truncated, "corrupt or truncated"),
    "folder without DICOM": (_no_dicom, "no DICOM images found"),
    "unsupported format": (_wrong_format, "unsupported input"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_a_clear_error_and_leaves_nothing(case, tmp_path, capsys):
    make, message = CASES[case]
    source = make(tmp_path)
    before = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None
    out = tmp_path / "results"
    code = main(["segment", str(source), "-o", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results")]
    if before:
        assert hashlib.sha256(source.read_bytes()).hexdigest() == before


def test_json_progress_reports_the_error_as_json(tmp_path, capsys):
    import json

    code = main(["segment", str(_empty(tmp_path)), "-o", str(tmp_path / "out"), "--json-progress"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 2
    assert lines[-1]["event"] == "error" and "is empty" in lines[-1]["message"]


def test_output_inside_the_input_folder_is_refused(tmp_path, capsys):
    folder = _no_dicom(tmp_path)
    assert main(["segment", str(folder), "-o", str(folder / "out")]) != 0
    assert "must not be the input or inside it" in capsys.readouterr().err
