"""What the Generate and Review tabs do, without any UI: check a request, run the model, read the findings.

    request = GenerationRequest(frontal="f.dcm", impression="Small effusion.", outputs=("lateral",))
    result = generate(service, request, workdir=store.new_dir("generate"))

Invalid requests raise typed ``InputError``s (and unreadable files ``XRayReadError``s) whose messages the UI
shows as they are.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from codixr.errors import EmptyInputError, InputError, OverlappingModalitiesError, ReportTooLongError
from codixr.modality import Modality, parse_labels

from codixr.app.downloads import conditioning_summary, write_downloads
from codixr.app.findings import (
    ItemFindings,
    KeypatchView,
    agreement_table,
    image_findings,
    keypatch_view,
    report_findings,
    unavailable_notes,
)
from codixr.app.uploads import ViewInput, read_view

logger = logging.getLogger(__name__)

SAMPLERS = ("dpm++", "ddim", "ddpm")
LONG_IMPRESSION = ("truncate", "error")
MAX_STEPS = 200
MAX_GUIDANCE = 20.0
MAX_IMPRESSION_CHARS = 5000
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class GenerationRequest:
    """One request from the Generate tab (image inputs are paths of uploaded files)."""

    frontal: str | None = None
    lateral: str | None = None
    impression: str | None = None
    labels: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    steps: int = 20
    guidance: float = 2.0
    seed: int | None = 0
    sampler: str = "dpm++"
    long_impression: str = "truncate"

    @property
    def given(self) -> tuple[Modality, ...]:
        return tuple(m for m, v in zip(Modality, (self.frontal, self.lateral, self.impression)) if v)

    def checked(self) -> "GenerationRequest":
        """A normalised copy; raises an ``InputError`` naming what to change when the request is not valid."""
        impression = (self.impression or "").strip() or None
        if impression and len(impression) > MAX_IMPRESSION_CHARS:
            raise ReportTooLongError(
                f"The impression is {len(impression):,} characters long; paste only the impression section (at most "
                f"{MAX_IMPRESSION_CHARS:,} characters, and the model reads its first 77 tokens).")
        labels = parse_labels(list(self.labels or ()))
        outputs = tuple(m.value for m in Modality.parse_many(list(self.outputs or ())))
        request = GenerationRequest(self.frontal or None, self.lateral or None, impression, labels, outputs,
                                    self.steps, self.guidance, self.seed, self.sampler, self.long_impression)
        if not request.given and not labels:
            raise EmptyInputError("Nothing to generate from: upload a frontal or lateral X-ray, type an impression, "
                                  "or tick at least one diagnosis label.")
        if not outputs:
            raise InputError("Tick at least one output to generate (frontal, lateral or report).")
        overlap = [m for m in outputs if Modality(m) in request.given]
        if overlap:
            raise OverlappingModalitiesError(
                f"The {' and '.join(overlap)} is given as an input, so it cannot also be generated: untick it as an "
                "output or remove the input.")
        steps = _whole(self.steps, 1, MAX_STEPS, "Steps")
        seed = None if self.seed is None else _whole(self.seed, 0, 2**32 - 1, "The seed")
        if isinstance(self.guidance, bool) or not isinstance(self.guidance, (int, float)) \
                or not 1.0 <= self.guidance <= MAX_GUIDANCE:
            raise InputError(f"Guidance must be between 1 (no guidance) and {MAX_GUIDANCE:g}, not {self.guidance!r}.")
        if self.sampler not in SAMPLERS:
            raise InputError(f"Unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}.")
        if self.long_impression not in LONG_IMPRESSION:
            raise InputError(f"A long impression is either cut ('truncate') or refused ('error'), "
                             f"not {self.long_impression!r}.")
        return GenerationRequest(request.frontal, request.lateral, impression, labels, outputs, steps,
                                 float(self.guidance), seed, self.sampler, self.long_impression)

    @property
    def settings(self) -> dict:
        return {"steps": self.steps, "guidance": self.guidance, "seed": self.seed, "sampler": self.sampler}


def _whole(value, low: int, high: int, what: str) -> int:
    """``value`` as an int in [low, high] (a float such as 20.0 from a number box is fine)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() \
            or not low <= value <= high:
        raise InputError(f"{what} must be a whole number from {low} to {high}, not {value!r}.")
    return int(value)


@dataclass
class GenerationResult:
    """Everything the Generate tab shows: outputs, findings of every item, overlays, notes and downloads."""

    images: dict[str, Image.Image]
    report: str | None
    views: dict[str, ViewInput]
    items: list[ItemFindings]
    keypatches: list[tuple[str, KeypatchView]]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    downloads: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def generate(service, request: GenerationRequest, *, workdir: Path,
             progress: ProgressCallback | None = None) -> GenerationResult:
    """Run one generation: read the uploads, call the model, read the findings of every item, write downloads."""
    started = time.perf_counter()
    # 1. Check the request, then the uploads (before loading anything heavy)
    request = request.checked()
    views = {slot: read_view(path, slot) for slot, path in (("frontal", request.frontal), ("lateral", request.lateral))
             if path}
    pipe = service.pipeline()
    timings = {"read": time.perf_counter() - started}

    # 2. Generate
    out = pipe(frontal=views["frontal"].xray if "frontal" in views else None,
               lateral=views["lateral"].xray if "lateral" in views else None,
               report=request.impression, labels=list(request.labels) or None, outputs=request.outputs,
               num_inference_steps=request.steps, guidance_scale=request.guidance, seed=request.seed,
               scheduler=request.sampler, on_long_report=request.long_impression, callback=progress)
    warnings = [w for v in views.values() for w in v.warnings] + list(out.warnings)
    notes = [n for v in views.values() for n in v.notes]
    if len(request.outputs) > 1 and not out.joint:
        warnings.append("This model package has no joint-generation parts (stage 3): the outputs were generated one by "
                     "one and may not be consistent with each other.")
    images = {m: getattr(out, m) for m in ("frontal", "lateral") if getattr(out, m) is not None}
    timings["model"] = time.perf_counter() - started - sum(timings.values())

    # 3. Findings of every item, given or generated
    items: list[ItemFindings] = []
    shown: dict[str, np.ndarray | Image.Image] = {}
    for view in ("frontal", "lateral"):
        if view in views:
            shown[f"{view.capitalize()} (given)"] = views[view].xray.image
        elif view in images:
            shown[f"{view.capitalize()} (generated)"] = images[view]
        else:
            continue
        name = next(reversed(shown))
        items.append(image_findings(name, view, shown[name], pipe))
    report = out.report
    if request.impression:
        items.append(report_findings("Report (given)", request.impression))
    if report is not None:
        items.append(report_findings("Report (generated)", report))
    notes += unavailable_notes(items)
    timings["findings"] = time.perf_counter() - started - sum(timings.values())

    # 4. Keypatch overlays
    keypatches = [(name, keypatch_view(pipe, image, report=report or request.impression))
                  for name, image in shown.items()]
    timings["keypatches"] = time.perf_counter() - started - sum(timings.values())

    # 5. Downloads
    description = conditioning_summary([m.value for m in request.given], request.labels, request.settings)
    findings = {"generated": list(request.outputs), "settings": request.settings,
                "items": [item.to_dict() for item in items]}
    downloads = write_downloads(workdir, images=images, report=report, findings=findings, description=description,
                                model=service.model_name)
    seconds = time.perf_counter() - started
    timings["downloads"] = seconds - sum(timings.values())
    logger.info("generated %s from %s in %.2f s (%s)", "+".join(request.outputs),
                "+".join(m.value for m in request.given) or "labels", seconds,
                ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return GenerationResult(images, report, views, items, keypatches, warnings, notes, downloads, seconds)


# --------------------------------------------------------------------------------------------- review
@dataclass
class ReviewResult:
    """A real study part next to the synthetic one generated from the rest of the study."""

    hold_out: str
    real_image: np.ndarray | None
    synthetic_image: Image.Image | None
    real_report: str | None
    synthetic_report: str | None
    real: ItemFindings
    synthetic: ItemFindings
    table: tuple[list[str], list[list[str]]]
    summary: str
    generation: GenerationResult


def review(service, *, frontal: str | None, lateral: str | None, impression: str | None, hold_out: str,
           workdir: Path, steps: int = 20, guidance: float = 2.0, seed: int | None = 0, sampler: str = "dpm++",
           progress: ProgressCallback | None = None) -> ReviewResult:
    """Hold out one part of a real study, generate it from the rest, and compare real with synthetic."""
    held = Modality.parse(hold_out)
    real_parts = {Modality.FRONTAL: frontal, Modality.LATERAL: lateral, Modality.REPORT: (impression or "").strip()}
    if not real_parts[held]:
        raise InputError(f"To review the {held.value}, upload the real {held.value} too: it is what the synthetic one "
                         "is compared with.")
    rest = {m: v for m, v in real_parts.items() if m is not held and v}
    if not rest:
        raise EmptyInputError(f"Give at least one other part of the study (besides the {held.value}) to generate the "
                              f"{held.value} from.")
    request = GenerationRequest(frontal=rest.get(Modality.FRONTAL), lateral=rest.get(Modality.LATERAL),
                                impression=rest.get(Modality.REPORT), outputs=(held.value,), steps=steps,
                                guidance=guidance, seed=seed, sampler=sampler)
    generation = generate(service, request, workdir=workdir, progress=progress)
    name = held.value.capitalize()
    generated = next(item for item in generation.items if item.name == f"{name} (generated)")
    synthetic = dataclasses.replace(generated, name=f"{name} (synthetic)")
    if held is Modality.REPORT:
        real = report_findings(f"{name} (real)", real_parts[held])
        real_image = synthetic_image = None
    else:
        real_image = read_view(real_parts[held], held.value).xray.image
        synthetic_image = generation.images[held.value]
        real = image_findings(f"{name} (real)", held.value, real_image, service.pipeline())
    headers, rows, summary = agreement_table(real, synthetic)
    return ReviewResult(held.value, real_image, synthetic_image,
                        real_parts[held] if held is Modality.REPORT else None, generation.report,
                        real, synthetic, (headers, rows), summary, generation)
