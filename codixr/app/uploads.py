"""Uploaded X-rays: one view per box, or a whole study (several DICOMs or a .zip) sorted by ViewPosition.

Everything is read through :func:`codixr.io.read_xray` (the paper's preprocessing, typed errors). Nothing read
here is logged; messages name the user's own files back to them only, never a DICOM tag value other than the
view. Messages are Markdown in which every file name is a code span made by ``markdown_code`` (a name can hold
backticks, HTML or Markdown); the app shows them in toasts through ``html_text``.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from codixr.app.escaping import markdown_code, markdown_text
from codixr.errors import InputError
from codixr.io import XRay, XRayReadError, read_xray, write_png

logger = logging.getLogger(__name__)

#: Side of the preprocessed image shown and used (the paper's 256 x 256).
DISPLAY_SIZE = 256
IMAGE_VIEWS = ("frontal", "lateral")
MAX_ZIP_MEMBERS = 500
MAX_MEMBER_BYTES = 200 * 1024**2
MAX_ZIP_TOTAL_BYTES = 1024**3


class StudyUploadError(InputError):
    """A study upload holds nothing CoDiXR can use (empty, damaged archive, no readable X-ray)."""


@dataclass(frozen=True)
class ViewInput:
    """An X-ray uploaded into the frontal or lateral box, preprocessed, with what the checks found."""

    xray: XRay
    slot: str
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def read_view(source: str | os.PathLike | bytes, slot: str) -> ViewInput:
    """Read the file put in the ``slot`` ("frontal"/"lateral") box and check that its view fits.

    Raises the reader's ``XRayReadError`` (wrong type, CT/MR, corrupt, too large, empty) unchanged.
    """
    if slot not in IMAGE_VIEWS:
        raise InputError(f"An uploaded X-ray goes in the frontal or lateral box, not {slot!r}.")
    xray = read_xray(source, size=DISPLAY_SIZE)  # view: the file's own (DICOM ViewPosition), else "unknown"
    return ViewInput(xray, slot, *view_checks(xray, slot))


def view_checks(xray: XRay, slot: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(warnings, notes) about the view of an X-ray put in the ``slot`` box."""
    other = "lateral" if slot == "frontal" else "frontal"
    if xray.view == other:
        return (f"The file in the {slot} box is a **{other}** view by its DICOM ViewPosition. Move it to the {other} "
                f"box, or upload the {slot} view here; as it stands the model reads it as the {slot} view.",), ()
    if xray.modality in ("PNG", "JPEG"):
        return (), (f"{xray.modality} files carry no view information: this image is taken as the {slot} view "
                    "because it is in that box.",)
    if xray.view == "unknown":
        return (), (f"This DICOM does not state a view CoDiXR recognises (ViewPosition): it is taken as the {slot} "
                    "view because it is in that box.",)
    return (), ()


def describe_view(view: ViewInput) -> str:
    """A short Markdown line for the preview: what was read and the view checks."""
    kind = "DICOM radiograph" if view.xray.modality not in ("PNG", "JPEG") else f"{view.xray.modality} image"
    line = f"**{view.slot.capitalize()}:** {kind}, preprocessed as in the paper ({DISPLAY_SIZE}×{DISPLAY_SIZE})."
    if view.xray.view == view.slot:
        line += f" Its ViewPosition confirms a {view.slot} view."
    return "\n\n".join([line, *(f"**Warning:** {w}" for w in view.warnings), *(f"Note: {n}" for n in view.notes)])


# --------------------------------------------------------------------------------------------- whole studies
@dataclass
class StudyFile:
    """One file of an uploaded study: its display name, and the X-ray read from it or why it could not be."""

    name: str
    xray: XRay | None = None
    problem: str | None = None


@dataclass
class Study:
    """An uploaded study with views assigned from ViewPosition (a view is None when missing or ambiguous)."""

    files: list[StudyFile]
    frontal: StudyFile | None = None
    lateral: StudyFile | None = None
    warnings: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        readable = sum(f.xray is not None for f in self.files)
        head = f"**Study:** {len(self.files)} file(s), {readable} readable X-ray(s)."
        lines = [f"- **{v.capitalize()}:** {markdown_code(getattr(self, v).name)} (ViewPosition: {v})"
                 for v in IMAGE_VIEWS if getattr(self, v) is not None]
        return "\n".join([head, *lines, *(f"- **{w}**" for w in self.warnings), *(f"- {m}" for m in self.messages)])


def read_study(paths: Sequence[str | os.PathLike]) -> Study:
    """Read several DICOM/PNG/JPEG files and/or .zip archives and assign frontal and lateral from ViewPosition.

    A view is assigned only when exactly one readable file states it; when none does, or several do, the
    study says so in ``warnings`` and leaves that view empty for the user to choose. ``messages`` says which
    files were not used and why.
    Raises ``StudyUploadError`` when nothing was uploaded or nothing readable was found.
    """
    if not paths:
        raise StudyUploadError("No files were uploaded. Drop the study's DICOM files (or one .zip of them) here.")
    files = [_read_member(name, data) for name, data in _members(paths)]
    if not files:
        raise StudyUploadError("The upload holds no files (an empty .zip?). Upload the study's DICOM files.")
    study = Study(files=files)
    for f in files:
        if f.problem:
            study.messages.append(f"{markdown_code(f.name)} was not used: {markdown_text(f.problem)}")
    if not any(f.xray is not None for f in files):
        raise StudyUploadError("None of the uploaded files is a readable chest X-ray:\n"
                               + "\n".join(f"- {markdown_code(f.name)}: {f.problem}" for f in files))
    for view in IMAGE_VIEWS:
        found = [f for f in files if f.xray is not None and f.xray.view == view]
        if len(found) == 1:
            setattr(study, view, found[0])
        elif not found:
            study.warnings.append(f"No file states a {view} view (DICOM ViewPosition), so none was assigned: "
                                  f"upload the {view} view in its box on the Generate tab if the study has one.")
        else:
            names = ", ".join(markdown_code(f.name) for f in found)
            study.warnings.append(f"The {view} view is ambiguous: {len(found)} files state it ({names}). None was "
                                  f"assigned: upload the one you mean in the {view} box on the Generate tab.")
    for f in files:
        if f.xray is not None and f.xray.view == "unknown":
            kind = "has no view information" if f.xray.modality in ("PNG", "JPEG") else \
                "does not state a view CoDiXR recognises (ViewPosition)"
            study.messages.append(f"{markdown_code(f.name)} {kind}, so it was not assigned: put it in the frontal or "
                                  "lateral box on the Generate tab yourself.")
    return study


def write_view_png(xray: XRay, folder: Path, view: str) -> Path:
    """The preprocessed image as a 16-bit PNG: what a study hands to the other tabs (no DICOM tags travel on)."""
    return write_png(xray.image, folder / f"study-{view}.png", bits=16)


def _read_member(name: str, data: bytes) -> StudyFile:
    try:
        return StudyFile(name, xray=read_xray(data, size=DISPLAY_SIZE))
    except XRayReadError as exc:
        return StudyFile(name, problem=str(exc))


def _members(paths: Iterable[str | os.PathLike]) -> Iterable[tuple[str, bytes]]:
    """(display name, bytes) of every uploaded file, archives unpacked in memory (never by their own paths)."""
    for path in paths:
        path = Path(path)
        data = path.read_bytes()
        if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):  # a .zip (also an empty one)
            yield from _zip_members(data)
        else:
            yield path.name, data


def _zip_members(data: bytes) -> Iterable[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise StudyUploadError("The .zip file is damaged or incomplete and cannot be opened. Zip the study "
                               "again, or upload the DICOM files themselves.") from None
    infos = [i for i in archive.infolist() if not i.is_dir() and _wanted(i.filename)]
    if len(infos) > MAX_ZIP_MEMBERS:
        raise StudyUploadError(f"The .zip holds {len(infos)} files; a chest X-ray study has a few. Upload only the "
                               f"study's images (at most {MAX_ZIP_MEMBERS} files).")
    if sum(i.file_size for i in infos) > MAX_ZIP_TOTAL_BYTES:
        raise StudyUploadError("The .zip unpacks to more than 1 GB, far more than one chest X-ray study. Upload only "
                               "the study's frontal and lateral images.")
    unpacked = 0
    for info in infos:
        name = PurePosixPath(info.filename).name
        if info.file_size > MAX_MEMBER_BYTES:
            raise StudyUploadError(f"{markdown_code(name)} in the .zip is larger than {MAX_MEMBER_BYTES // 1024**2} "
                                   "MB; export the radiograph at a lower resolution.")
        try:
            with archive.open(info) as member:
                content = member.read(MAX_MEMBER_BYTES + 1)
        except RuntimeError:  # encrypted member
            raise StudyUploadError("The .zip is password-protected. Upload an unencrypted .zip or the DICOM "
                                   "files themselves.") from None
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
            raise StudyUploadError("The .zip file is damaged (a file inside cannot be unpacked). Zip the study "
                                   "again, or upload the DICOM files themselves.") from None
        if len(content) > MAX_MEMBER_BYTES:
            raise StudyUploadError(f"{markdown_code(name)} in the .zip unpacks to more than "
                                   f"{MAX_MEMBER_BYTES // 1024**2} MB.")
        unpacked += len(content)
        if unpacked > MAX_ZIP_TOTAL_BYTES:  # the sizes a damaged or crafted archive declares may be false
            raise StudyUploadError("The .zip unpacks to more than 1 GB, far more than one chest X-ray study.")
        yield name, content


def _wanted(filename: str) -> bool:
    """Skip archive clutter: macOS resource forks, hidden files and the DICOMDIR index."""
    parts = PurePosixPath(filename).parts
    return not (parts and (parts[0] == "__MACOSX" or parts[-1].startswith(".") or parts[-1].upper() == "DICOMDIR"))
