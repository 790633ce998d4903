"""The web session's parts without a browser: uploads (zipped DICOM, unsafe archives, bad files), the model list,
and the download files made from a corrected result."""

import io
import json
import zipfile

import numpy as np
import pytest

pytestmark = pytest.mark.slicer


def write_dicom_series(folder, array, spacing=(0.8, 0.7, 2.5)):
    """A CT series (int16, axial, identity orientation) with ``array`` indexed (column, row, slice)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    for k in range(array.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (between rows: along j), column spacing (along i)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing[2]]
        ds.SliceThickness = spacing[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(array[:, :, k].T.astype("<i2")).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)


def ct_like(shape=(24, 20, 12), seed=0):
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    array[..., :] = np.sort(array, axis=0)  # some structure, still CT-like intensities
    return array


# --- uploads -------------------------------------------------------------------------------------------------------
def test_a_zipped_dicom_series_is_read_with_its_geometry(tmp_path):
    from SpineSegLib.web.uploads import read_uploaded_volume, write_uploads

    array = ct_like()
    write_dicom_series(tmp_path / "series", array)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((tmp_path / "series").iterdir()):
            archive.write(path, f"patient/series/{path.name}")
        archive.writestr("patient/README.txt", "not DICOM")
    paths = write_uploads([{"name": "../../study.zip", "content": buffer.getvalue()}], tmp_path / "upload")
    assert [p.name for p in paths] == ["study.zip"] and paths[0].parent == tmp_path / "upload"
    volume, name = read_uploaded_volume(paths)
    assert name == "study"
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))
    np.testing.assert_allclose(volume.affine, np.diag([-0.8, -0.7, 2.5, 1.0]), atol=1e-6)


def test_uploads_that_are_not_a_ct_are_refused_with_a_message(tmp_path):
    from SpineSegLib.errors import InputError
    from SpineSegLib.web.uploads import read_uploaded_volume, write_uploads

    def upload(name, content):
        return read_uploaded_volume(write_uploads([{"name": name, "content": content}], tmp_path / "u"))

    with pytest.raises(InputError, match="unsupported input"):
        upload("notes.txt", b"hello")
    with pytest.raises(InputError, match="not a valid zip"):
        upload("series.zip", b"PK\x03\x04 broken")
    unsafe = io.BytesIO()
    with zipfile.ZipFile(unsafe, "w") as archive:
        archive.writestr("../evil.dcm", b"x")
    with pytest.raises(InputError, match="unsafe path"):
        upload("evil.zip", unsafe.getvalue())
    assert not (tmp_path / "evil.dcm").exists()
    with pytest.raises(InputError, match="no file"):
        write_uploads([], tmp_path / "empty")


# --- models --------------------------------------------------------------------------------------------------------
def test_models_are_found_and_resolved(tmp_path):
    from SpineSegLib.errors import CheckpointError
    from SpineSegLib.web.models import find_models, resolve

    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "model_card.json").write_text(json.dumps({"name": "first"}))
    (tmp_path / "not-a-model").mkdir()
    entries = [e for e in find_models(tmp_path) if e.key != "bundled"]
    assert [(e.key, e.title) for e in entries] == [("m1", "first (m1)")]
    assert resolve(entries, "m1").path == tmp_path / "m1"
    assert resolve(entries, "").key == "m1"
    with pytest.raises(CheckpointError, match="unknown model"):
        resolve(entries, "m2")
    with pytest.raises(CheckpointError, match="no model"):
        resolve([], None)


# --- downloads -----------------------------------------------------------------------------------------------------
def test_downloads_reflect_the_corrected_result(slicer_context, tmp_path):
    import nibabel as nib
    import nrrd

    from SpineSegLib import scene
    from SpineSegLib.corrections import Corrections
    from SpineSegLib.labels import load_label_table
    from SpineSegLib.results import SegmentationResult, vertebra_summary
    from SpineSegLib.volume import Volume
    from SpineSegLib.web import downloads

    table = load_label_table()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.zeros((20, 20, 30), np.uint8)
    for n, name in enumerate(["L1", "L2", "L3"]):
        labels[5:15, 5:15, 22 - 8 * n:28 - 8 * n] = table.by_name(name).value
    ct = Volume(np.where(labels > 0, 500, -1000).astype(np.int16), affine)
    heat = np.zeros(labels.shape, np.float32)
    heat[10, 10, 10] = 0.9
    node = scene.volume_to_node(slicer_context.scene, ct, "CT")
    lesion = {"id": 1, "class": "lytic", "score": 0.9, "center_ras": [20.0, 20.0, 20.0], "size_mm": 8.0}
    result = SegmentationResult(Volume(labels, affine), Volume(heat, affine), [lesion],
                                vertebra_summary(Volume(labels, affine), [lesion]), {"model": {"name": "m"}})
    nodes = scene.add_result_to_scene(slicer_context.scene, result, node, show_3d=False)
    corrections = Corrections.from_result(nodes)
    corrections.renumber("L1", "T12")

    for kind, (name, _mime) in downloads.KINDS.items():
        (tmp_path / name).write_bytes(downloads.make(kind, corrections, nodes.heatmap, nodes.table, ["renumber"]))
    _data, header = nrrd.read(str(tmp_path / "vertebrae.seg.nrrd"))
    names = sorted(v for k, v in header.items() if k.startswith("Segment") and k.endswith("_Name"))
    assert names == ["L1", "L2", "T12"]
    values = set(np.unique(np.asarray(nib.load(str(tmp_path / "vertebrae.nii.gz")).dataobj)).tolist())
    assert values == {0} | {table.by_name(n).value for n in ("T12", "L1", "L2")}
    assert float(np.asarray(nib.load(str(tmp_path / "lesion_heatmap.nii.gz")).dataobj).max()) == pytest.approx(0.9)
    lesions = json.loads((tmp_path / "lesions.json").read_text())["lesions"]
    assert lesions[0]["vertebra"] == "L2"  # the lesion sat in L3, which is now L2
    report = json.loads((tmp_path / "report.json").read_text())
    assert [v["name"] for v in report["vertebrae"]] == ["T12", "L1", "L2"]
    assert report["model"]["name"] == "m" and report["corrections"] == ["renumber"]
    from SpineSegLib.errors import InputError

    with pytest.raises(InputError, match="segment a CT first"):
        downloads.make("seg", None)
