"""Reading CT volumes (NIfTI, NRRD, DICOM series) and writing results atomically.

Readers validate what a user can get wrong (missing or truncated files, 2D images, empty or non-finite
volumes) and raise :class:`~SpineSegLib.errors.InputError` with a message that says what is wrong.
Writers never leave half-written files: they write to a temporary name and rename.
"""

from __future__ import annotations

import contextlib
import gzip
import io as _io
import json
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import InputError
from .volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")


# --- reading --------------------------------------------------------------------------------------------------
def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI file, an NRRD file or a folder holding one DICOM series, as float32 in (i, j, k)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        volume = _read_dicom_series(path)
    elif path.name.lower().endswith(NIFTI_SUFFIXES):
        volume = _read_nifti(path)
    elif path.name.lower().endswith(NRRD_SUFFIXES):
        volume = _read_nrrd(path)
    else:
        raise InputError(
            f"unsupported input {path.name!r}: give a NIfTI (.nii, .nii.gz) or NRRD (.nrrd) file, "
            "or a folder with one DICOM series"
        )
    return _validated(volume, path)


def _read_nifti(path: Path) -> Volume:
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises many kinds for truncated/corrupt files
        raise InputError(f"cannot read {path.name}: the file is corrupt or truncated ({error})") from error
    return Volume(_squeeze_to_3d(data, path), image.affine)


def _read_nrrd(path: Path) -> Volume:
    import nrrd

    try:
        data, header = nrrd.read(str(path))
    except Exception as error:
        raise InputError(f"cannot read {path.name}: the file is corrupt or truncated ({error})") from error
    data = _squeeze_to_3d(np.asarray(data, dtype=np.float32), path)
    directions = np.asarray(header.get("space directions", np.eye(3)), dtype=np.float64)
    directions = directions[[not np.any(np.isnan(row)) for row in np.atleast_2d(directions)]]
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    space = str(header.get("space", "left-posterior-superior")).lower()
    affine = np.eye(4)
    affine[:3, :3] = directions.T  # columns are the i, j, k axes
    affine[:3, 3] = origin
    if space in ("left-posterior-superior", "lps"):
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    elif space not in ("right-anterior-superior", "ras"):
        raise InputError(f"{path.name}: unsupported NRRD space {space!r} (expected LPS or RAS)")
    return Volume(data, affine)


def _read_dicom_series(folder: Path) -> Volume:
    import pydicom

    slices = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(file), stop_before_pixels=False)
        except Exception:
            continue  # not DICOM: other files may sit beside the series
        if "PixelData" in ds and "ImagePositionPatient" in ds:
            slices.append(ds)
    if not slices:
        raise InputError(f"no DICOM images found in folder {folder}")
    series = {s.SeriesInstanceUID for s in slices if "SeriesInstanceUID" in s}
    if len(series) > 1:
        raise InputError(f"folder {folder} holds {len(series)} DICOM series; give a folder with one series")
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(np.dot(normal, np.asarray(s.ImagePositionPatient, dtype=np.float64))))
    try:
        stack = np.stack(
            [s.pixel_array.astype(np.float32) * float(getattr(s, "RescaleSlope", 1.0))
             + float(getattr(s, "RescaleIntercept", 0.0)) for s in slices]
        )  # (slice, row, column)
    except Exception as error:
        raise InputError(f"cannot decode the DICOM series in {folder}: {error}") from error
    row_spacing, col_spacing = (float(v) for v in slices[0].PixelSpacing)
    first = np.asarray(slices[0].ImagePositionPatient, dtype=np.float64)
    if len(slices) > 1:
        last = np.asarray(slices[-1].ImagePositionPatient, dtype=np.float64)
        slice_step = (last - first) / (len(slices) - 1)
    else:
        slice_step = normal * float(getattr(slices[0], "SliceThickness", 1.0))
    lps = np.eye(4)
    lps[:3, 0] = row * col_spacing  # i runs along a row (columns index)
    lps[:3, 1] = col * row_spacing  # j runs down the rows
    lps[:3, 2] = slice_step
    lps[:3, 3] = first
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return Volume(np.ascontiguousarray(stack.transpose(2, 1, 0)), affine)


def _squeeze_to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path.name} is a {data.ndim}D image of shape {data.shape}; SpineSeg needs a 3D CT volume")
    return data


MIN_SLICES = 8


def _validated(volume: Volume, path: Path) -> Volume:
    data = volume.array
    if min(data.shape) < MIN_SLICES:
        raise InputError(
            f"{path.name} has shape {data.shape}: a 3D CT needs at least {MIN_SLICES} voxels along each axis "
            "(is this a 2D image or a single slice?)"
        )
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(f"{path.name} contains {bad} NaN or infinite voxels; a CT holds finite Hounsfield units")
    if not np.all(np.isfinite(volume.affine)) or abs(np.linalg.det(volume.affine[:3, :3])) < 1e-9:
        raise InputError(f"{path.name} has an invalid geometry (degenerate or non-finite voxel-to-world matrix)")
    low, high = float(data.min()), float(data.max())
    if high - low < 1e-6:
        raise InputError(f"{path.name} is empty: every voxel has the value {low:g}")
    check_ct_intensities(data, path.name)
    return volume


def check_ct_intensities(data: np.ndarray, name: str) -> None:
    """Refuse images whose intensities cannot be CT Hounsfield units (e.g. MR, or a normalised 0-1 image)."""
    p1, p99 = np.percentile(data[:: max(1, data.shape[0] // 64)], [1, 99])
    if p99 - p1 < 200 or p1 > 200 or p99 < -500 or p1 < -3100:
        raise InputError(
            f"{name} does not look like a CT in Hounsfield units (1st-99th percentile {p1:.4g} to {p99:.4g}; "
            "CT spans about -1000 (air) to over +300 (bone)). SpineSeg works on CT only."
        )


# --- writing --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_output_dir(final_dir: str | Path):
    """Yield a temporary folder beside ``final_dir``; rename it to ``final_dir`` only if the block succeeds.

    An existing ``final_dir`` is replaced only at the end, so a failed or cancelled run leaves it untouched and
    leaves no partial folder behind.
    """
    final_dir = Path(final_dir).absolute()
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.partial-", dir=final_dir.parent))
    try:
        yield temporary
        _publishable(temporary)
        if final_dir.exists():
            backup = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
            final_dir.rename(backup)
            temporary.rename(final_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            temporary.rename(final_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(folder: Path) -> None:
    """Give a temporary folder and its files the permissions a normal mkdir/open would have."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for child in folder.rglob("*"):
        child.chmod((0o777 if child.is_dir() else 0o666) & ~mask)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_json(path: str | Path, document) -> None:
    atomic_write_bytes(path, (json.dumps(document, indent=2, default=_json_default) + "\n").encode())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def nifti_bytes(volume: Volume, dtype) -> bytes:
    """Gzipped NIfTI-1 bytes; deterministic (gzip time stamp fixed) so the same data gives the same file."""
    image = nib.Nifti1Image(np.asarray(volume.array, dtype=dtype), volume.affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    raw = image.to_bytes()
    buffer = _io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6) as f:
        f.write(raw)
    return buffer.getvalue()


def write_nifti(volume: Volume, path: str | Path, dtype=np.float32) -> None:
    """Write a volume as NIfTI (gzipped if the name ends in .gz), atomically and deterministically."""
    path = Path(path)
    if path.name.endswith(".gz"):
        atomic_write_bytes(path, nifti_bytes(volume, dtype))
    else:
        image = nib.Nifti1Image(np.asarray(volume.array, dtype=dtype), volume.affine)
        atomic_write_bytes(path, image.to_bytes())
