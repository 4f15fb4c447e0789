"""Uploaded X-rays: one view per box, or a whole study (several DICOMs or a .zip) sorted by ViewPosition.

Everything is read through :func:`codixr.io.read_xray` (the paper's preprocessing, typed errors). Nothing read
here is logged; messages name the user's own files back to them only, never a DICOM tag value other than the
view. Messages are Markdown in which every file name is a code span made by ``markdown_code`` (a name can hold
backticks, HTML or Markdown); the app shows them in toasts through ``html_text``.

What the app keeps of an upload: its de-identified 256-px image, in memory. A file a user uploaded to the
running app is read once and deleted within the request that reads it (:class:`KeptUploads`); a later request
naming the same upload (the Generate click after the preview) gets the kept image. Files that were not
uploaded (a library caller's own, the app's examples) are read and left alone.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np

from codixr.app.escaping import markdown_code, markdown_text
from codixr.errors import InputError
from codixr.io import XRay, XRayReadError, read_xray, write_png
from codixr.io.preprocess import resampled_shape

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

    A file uploaded to the running app is deleted as it is read; only its preprocessed image is kept.
    Raises the reader's ``XRayReadError`` (wrong type, colour, CT/MR, corrupt, too large, empty) unchanged.
    """
    if slot not in IMAGE_VIEWS:
        raise InputError(f"An uploaded X-ray goes in the frontal or lateral box, not {slot!r}.")
    if isinstance(source, (str, os.PathLike)) and is_upload(source):
        xray = KEPT_UPLOADS.take(source)
    else:
        xray = read_xray(source, size=DISPLAY_SIZE)  # view: the file's own (DICOM ViewPosition), else "unknown"
    return ViewInput(xray, slot, *view_checks(xray, slot))


def view_checks(xray: XRay, slot: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(warnings, notes) about the view of an X-ray put in the ``slot`` box, and whether it looks like one."""
    plausibility = tuple(chest_plausibility_warnings(xray))
    other = "lateral" if slot == "frontal" else "frontal"
    if xray.view == other:
        return (f"The file in the {slot} box is a **{other}** view by its DICOM ViewPosition. Move it to the {other} "
                f"box, or upload the {slot} view here; as it stands the model reads it as the {slot} view.",
                *plausibility), ()
    if xray.modality in ("PNG", "JPEG"):
        return plausibility, (f"{xray.modality} files carry no view information: this image is taken as the {slot} "
                              "view because it is in that box.",)
    if xray.view == "unknown":
        return plausibility, (f"This DICOM does not state a view CoDiXR recognises (ViewPosition): it is taken as the "
                              f"{slot} view because it is in that box.",)
    return plausibility, ()


# Plausibility of a grey image as a chest radiograph, from the preprocessed image. Thresholds set with margin
# against the 526 real radiographs of ../shared/data/covid-cxr (grey-level span p99 - p1 >= 0.23, pure white
# <= 23 % of the image, longest side <= 1.6 x the shortest): none of them is flagged.
_MIN_GREY_SPAN = 0.10  # p99 - p1 of the grey levels: below this the image is one flat tone
_MAX_WHITE_FRACTION = 0.40  # pixels above _WHITE: a scanned page, a document, a screenshot of text
_WHITE = 0.97
_MAX_ASPECT = 2.0  # longest side / shortest side; chest films are close to square


def chest_plausibility_warnings(xray: XRay) -> list[str]:
    """Warnings (at most one) when a grey image does not look like a chest radiograph: one flat tone, mostly
    white like a scanned page, or far from square. Only gross mismatches are caught: a grey photograph of
    something else can pass."""
    content = _content(xray)
    low, high = np.percentile(content, [1, 99])
    reasons = []
    if high - low < _MIN_GREY_SPAN:
        reasons.append("it is almost one flat grey level, with no anatomy in it")
    white = float(np.mean(content > _WHITE))
    if white > _MAX_WHITE_FRACTION:
        reasons.append(f"{white:.0%} of it is pure white, as on a scanned page, or a film mostly outside the "
                       "exposed field")
    rows, cols = xray.original_shape
    aspect = max(rows, cols) / max(1, min(rows, cols))
    if aspect > _MAX_ASPECT:
        reasons.append(f"it is {aspect:.1f} times as {'tall' if rows > cols else 'wide'} as it is "
                       f"{'wide' if rows > cols else 'tall'}, where a chest film is close to square")
    if not reasons:
        return []
    return ["This image does not look like a chest radiograph: " + "; ".join(reasons) + ". Check that it is the "
            "X-ray you meant to upload: the model reads any image as a chest X-ray, so what it makes from this one "
            "means nothing."]


def _content(xray: XRay) -> np.ndarray:
    """The part of the preprocessed square that is the source image (the zero padding left out)."""
    rows, cols = xray.original_shape
    if xray.source_spacing_mm:
        rows, cols = resampled_shape((rows, cols), xray.source_spacing_mm)
    side, n = max(rows, cols), xray.image.shape[0]
    height, width = max(1, round(n * rows / side)), max(1, round(n * cols / side))
    top, left = (n - height) // 2, (n - width) // 2
    inset = 2 if min(height, width) > 8 else 0  # the resize blends the edge rows with the padding
    return xray.image[top + inset: top + height - inset, left + inset: left + width - inset]


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
    files were not used and why. Files uploaded to the running app are deleted once read (or refused).
    Raises ``StudyUploadError`` when nothing was uploaded or nothing readable was found.
    """
    if not paths:
        raise StudyUploadError("No files were uploaded. Drop the study's DICOM files (or one .zip of them) here.")
    try:
        files = [_read_member(name, data) for name, data in _members(paths)]
    finally:  # a refused archive stops the reading: what was not read yet goes too
        for path in paths:
            delete_upload(path)
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
        delete_upload(path)
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


# --------------------------------------------------------------------------------------------- uploads at rest
class UploadGoneError(XRayReadError):
    """An upload a request names was deleted after an earlier request read it, and what was kept has expired."""


class KeptUploads:
    """The preprocessed image (or the reader's refusal) of every upload already read, by the upload's path.

    ``take(path)`` reads an upload that is still on disk, deletes it at once and keeps its de-identified
    ``DISPLAY_SIZE`` image (256 KB; no DICOM tag is kept but view, modality, spacing and bit depth); an upload
    already taken is answered from what was kept. At most ``max_items`` are kept, each for ``max_age_s``.
    Requests for the same upload wait for each other, so the file is read once.
    """

    def __init__(self, max_items: int = 128, max_age_s: float = 3600.0, stripes: int = 64) -> None:
        self.max_items, self.max_age_s = max_items, max_age_s
        self._kept: OrderedDict[str, tuple[float, XRay | XRayReadError]] = OrderedDict()
        self._kept_lock = threading.Lock()
        self._path_locks = [threading.Lock() for _ in range(stripes)]

    def take(self, path: str | os.PathLike) -> XRay:
        """The preprocessed upload at ``path``; raises the reader's ``XRayReadError`` (again, when it was kept)."""
        key = os.path.abspath(path)
        with self._path_locks[hash(key) % len(self._path_locks)]:
            if os.path.lexists(key):  # (re)uploaded: read it now, and delete it whatever the reading finds
                try:
                    data = Path(key).read_bytes()
                except OSError:
                    data = None
                finally:
                    _delete(key)
                try:
                    if data is None:
                        raise XRayReadError("The uploaded file could not be read on the server. Upload it again.")
                    kept: XRay | XRayReadError = read_xray(data, size=DISPLAY_SIZE)
                except XRayReadError as exc:
                    kept = exc
                del data
                self._put(key, kept)
            else:
                kept = self._get(key)
        if isinstance(kept, XRayReadError):
            raise type(kept)(str(kept))
        return kept

    def _put(self, key: str, value: XRay | XRayReadError) -> None:
        with self._kept_lock:
            self._kept[key] = (time.monotonic(), value)
            self._kept.move_to_end(key)
            self._expire()

    def _get(self, key: str) -> XRay | XRayReadError:
        with self._kept_lock:
            self._expire()
            if key not in self._kept:
                raise UploadGoneError(
                    "This upload was read and deleted by an earlier request, and the image kept from it has "
                    "expired. Upload the file again.")
            self._kept.move_to_end(key)
            return self._kept[key][1]

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.max_age_s
        while self._kept and (len(self._kept) > self.max_items or next(iter(self._kept.values()))[0] < cutoff):
            self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)


#: What the app process keeps of its uploads (see :class:`KeptUploads`).
KEPT_UPLOADS = KeptUploads()


def is_upload(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file a user uploaded to the running gradio app, as opposed to an example, an
    output or a library caller's file. Read from gradio's record of its upload route (``Blocks.upload_file_set``)
    in the context of the request being handled; outside a request, nothing is an upload."""
    from gradio.context import LocalContext

    uploaded = getattr(LocalContext.blocks.get(None), "upload_file_set", None)
    return bool(uploaded) and (str(path) in uploaded or os.path.abspath(path) in uploaded)


def delete_upload(path: str | os.PathLike) -> None:
    """Delete ``path`` if it is an upload (without reading it)."""
    if is_upload(path):
        _delete(os.path.abspath(path))


def discard_uploads(values: Iterable[Any]) -> None:
    """End of a request: every upload among ``values`` (paths, or lists of them) still on disk is read into
    :data:`KEPT_UPLOADS` and deleted, so that none outlives the request, even one it refused before reading."""
    for value in values:
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, (str, os.PathLike)) and is_upload(item) and os.path.lexists(item):
                try:
                    KEPT_UPLOADS.take(item)
                except XRayReadError:
                    pass  # kept as the refusal, which a later request that names it will show


def _delete(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:  # the path is the user's file name: log the error kind only
        logger.warning("an uploaded file could not be deleted (%s)", type(exc).__name__)
