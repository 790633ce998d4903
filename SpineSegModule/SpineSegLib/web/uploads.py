"""Files a browser uploads: written safely into a session folder and read as a CT volume.

Accepted: one NIfTI (.nii, .nii.gz) or NRRD (.nrrd, or .nhdr with its data file) file, a .zip holding a DICOM
series (or one NIfTI/NRRD file), or the files of one DICOM series. Anything else raises
:class:`~SpineSegLib.errors.InputError` with a message for the page.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

from ..errors import InputError
from ..io import NIFTI_SUFFIXES, NRRD_SUFFIXES, read_volume
from ..volume import Volume

MAX_UNZIPPED_BYTES = 4 * 1024**3
IMAGE_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES


def safe_name(name: str) -> str:
    """A file name without folders or odd characters (uploads never choose where they are written)."""
    base = Path(str(name).replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return cleaned[:120]


def write_uploads(files: list[dict], folder: str | Path) -> list[Path]:
    """Write trame client files (dicts with ``name`` and ``content``) into a fresh ``folder``."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = []
    for file in files:
        content = file.get("content")
        if isinstance(content, list):
            content = b"".join(content)
        if not isinstance(content, (bytes, bytearray)):
            raise InputError(f"the upload of {file.get('name')!r} arrived without content")
        path = folder / safe_name(file.get("name", "upload"))
        stem, n = path, 1
        while path.exists():
            n += 1
            path = stem.with_name(f"{n}_{stem.name}")
        path.write_bytes(bytes(content))
        written.append(path)
    if not written:
        raise InputError("no file was uploaded")
    return written


def _unzip(archive: Path, target: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
                raise InputError(f"{archive.name} unpacks to more than {MAX_UNZIPPED_BYTES // 1024**3} GB")
            target.mkdir(parents=True, exist_ok=True)
            for member in members:
                parts = Path(member.filename.replace("\\", "/")).parts
                if member.filename.startswith(("/", "\\")) or ".." in parts:
                    raise InputError(f"{archive.name}: unsafe path {member.filename!r} in the archive")
                destination = target.joinpath(*[safe_name(p) for p in parts])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile as error:
        raise InputError(f"{archive.name} is not a valid zip archive ({error})") from error
    return target


def read_uploaded_volume(paths: list[Path]) -> tuple[Volume, str]:
    """The CT volume in the uploaded files and a name for it."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        folder = _unzip(paths[0], paths[0].with_name(paths[0].stem + "_unzipped"))
        images = [p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
        name = _stem(paths[0])
        if len(images) == 1:
            return read_volume(images[0]), name
        return read_volume(folder), name
    images = [p for p in paths if p.name.lower().endswith(IMAGE_SUFFIXES)]
    if len(images) == 1 and (len(paths) == 1 or images[0].name.lower().endswith(".nhdr")):
        return read_volume(images[0]), _stem(images[0])
    if len(paths) == 1:
        return read_volume(paths[0]), _stem(paths[0])  # read_volume says why the file is not usable
    if images:
        raise InputError("upload one image at a time (found " + ", ".join(p.name for p in images) + ")")
    return read_volume(paths[0].parent), "DICOM series"  # several files: the slices of one DICOM series


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "CT"
    return path.stem or "CT"
