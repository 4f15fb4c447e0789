"""What the Generate and Review tabs do, without any UI: check a request, run the model, read the findings.

    request = GenerationRequest(frontal="f.dcm", impression="Small effusion.", outputs=("lateral",))
    result = generate(service, request, workdir=store.new_dir("generate"))

Invalid requests raise typed ``InputError``s (and unreadable files ``XRayReadError``s) whose messages the UI
shows as they are. An output that is also an input is used as the input and not generated (the result's notes
say so); only a request with nothing left to generate is refused.

Requests go through the model service's batcher: requests with the same :class:`BatchKey` that arrive together
run as one batched pipeline call (one seed per study, so each study gets the noise it would get alone), then
each request's findings and downloads are made and its result goes out (:func:`run_group`).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

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
        return tuple(m for m, v in zip(Modality, (self.frontal, self.lateral, (self.impression or "").strip())) if v)

    def resolved(self) -> tuple["GenerationRequest", str | None]:
        """A copy without the outputs that are also inputs, and a note naming them (None when there were none).

        Raises ``OverlappingModalitiesError`` when every ticked output is an input (nothing left to generate).
        """
        outputs = Modality.parse_many(list(self.outputs or ()))
        dropped = [m.value for m in outputs if m in self.given]
        if not dropped:
            return self, None
        kept = tuple(m.value for m in outputs if m not in self.given)
        names = " and ".join(dropped)
        if not kept:
            raise OverlappingModalitiesError(
                f"Nothing to generate: the {names} {'is an input' if len(dropped) == 1 else 'are inputs'}, and "
                "an input cannot also be generated. Tick an output that is not an input, or remove the input.")
        return dataclasses.replace(self, outputs=kept), (
            f"The {names} {'is an input' if len(dropped) == 1 else 'are inputs'}, so "
            f"{'it was' if len(dropped) == 1 else 'they were'} used as given and not generated.")

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
    request: GenerationRequest | None = None  # as run: outputs that were inputs dropped, checked, seed drawn
    batch_size: int = 1  # how many requests went through the model together with this one


@dataclass(frozen=True)
class BatchKey:
    """What requests must share to go through the pipeline in one call."""

    given: tuple[str, ...]  # input kinds, "labels" included
    outputs: tuple[str, ...]
    steps: int
    guidance: float
    sampler: str

    @classmethod
    def of(cls, request: GenerationRequest) -> "BatchKey":
        given = tuple(m.value for m in request.given) + (("labels",) if request.labels else ())
        return cls(given, tuple(request.outputs), request.steps, request.guidance, request.sampler)


@dataclass
class GenerationJob:
    """One checked request with its read uploads, waiting for (or in) a batch."""

    request: GenerationRequest
    views: dict[str, ViewInput]
    workdir: Path
    model_name: str
    report_warnings: list[str]  # from reading this request's impression (e.g. cut at the token limit)
    started: float


def generate(service, request: GenerationRequest, *, workdir: Path, progress: ProgressCallback | None = None,
             session: str | None = None) -> GenerationResult:
    """Run one generation: read the uploads, call the model (batched with other requests), read the findings of
    every item, write downloads. ``session`` identifies the user for the per-session cap of the queue."""
    started = time.perf_counter()
    # 1. Check the request, then the uploads (before loading anything heavy)
    request, overlap_note = request.resolved()
    request = request.checked()
    if request.seed is None:  # a batch needs one seed per study: draw it, and show it, so the result can be redone
        request = dataclasses.replace(request, seed=secrets.randbelow(2**32))
    views = {slot: read_view(path, slot) for slot, path in (("frontal", request.frontal), ("lateral", request.lateral))
             if path}
    pipe = service.pipeline()
    report_warnings: list[str] = []
    if request.impression:  # refuse (or cut) this request's impression now, so that it cannot fail a batch
        pipe.tokenize([request.impression], request.long_impression, report_warnings)

    # 2.-5. In a batch: generate, findings, keypatch overlays, downloads
    job = GenerationJob(request, views, workdir, service.model_name, report_warnings, started)
    result = service.run_batched(BatchKey.of(request), job, session=session, progress=progress)
    if overlap_note:
        result.notes.insert(0, overlap_note)
    return result


def run_group(pipe, key: BatchKey, jobs: list[GenerationJob],
              progress: ProgressCallback | None = None) -> Iterator[GenerationResult | Exception]:
    """Generate the outputs of every job in one pipeline call, then yield each job's result (findings, overlays,
    downloads) as soon as it is made, or its exception.

    Should the batched call fail, each job is run alone, so that a request can only fail on its own account.
    """
    if not jobs:
        return
    # 2. Generate: one call for the whole batch
    model_started = time.perf_counter()
    try:
        out = pipe(frontal=_column(jobs, "frontal"), lateral=_column(jobs, "lateral"),
                   report=[j.request.impression for j in jobs] if jobs[0].request.impression else None,
                   labels=[list(j.request.labels) for j in jobs] if jobs[0].request.labels else None,
                   outputs=key.outputs, num_inference_steps=key.steps,
                   # the slider steers the images; the report keeps the scale validated for the package's G_R
                   guidance_scale={"frontal": key.guidance, "lateral": key.guidance},
                   seed=[j.request.seed for j in jobs], scheduler=key.sampler,
                   on_long_report="truncate", callback=progress)
    except Exception as exc:
        if len(jobs) == 1:
            yield exc
            return
        logger.warning("a batch of %d requests failed (%s); running them one by one", len(jobs), type(exc).__name__)
        for job in jobs:
            yield from run_group(pipe, key, [job], progress)
        return
    model_seconds = time.perf_counter() - model_started
    # the impressions' own warnings were found per job; any other warning concerns the whole call
    report_warnings = {w for job in jobs for w in job.report_warnings}
    shared = [w for w in out.warnings if w not in report_warnings]
    for i, job in enumerate(jobs):
        try:
            yield _finish(pipe, job, out, i, shared, model_seconds, len(jobs))
        except Exception as exc:
            yield exc


def _column(jobs: list[GenerationJob], view: str) -> list | None:
    return [job.views[view].xray for job in jobs] if view in jobs[0].views else None


def _finish(pipe, job: GenerationJob, out, i: int, shared_warnings: list[str], model_seconds: float,
            batch_size: int) -> GenerationResult:
    """Findings, keypatch overlays and downloads of the ``i``-th study of a batched pipeline output."""
    request, views, started = job.request, job.views, time.perf_counter()
    timings = {"read+wait": started - job.started - model_seconds, "model": model_seconds}
    warnings = [w for v in views.values() for w in v.warnings] + job.report_warnings + shared_warnings
    notes = [n for v in views.values() for n in v.notes]
    if len(request.outputs) > 1 and not out.joint:
        warnings.append("This model package has no joint-generation parts (stage 3): the outputs were generated one by "
                     "one and may not be consistent with each other.")
    images = {m: getattr(out, m)[i] for m in ("frontal", "lateral") if getattr(out, m) is not None}

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
    report = out.report[i] if out.report is not None else None
    if request.impression:
        items.append(report_findings("Report (given)", request.impression))
    if report is not None:
        items.append(report_findings("Report (generated)", report))
    notes += unavailable_notes(items)
    timings["findings"] = time.perf_counter() - started

    # 4. Keypatch overlays
    keypatches = [(name, keypatch_view(pipe, image, report=report or request.impression))
                  for name, image in shown.items()]
    timings["keypatches"] = time.perf_counter() - started - timings["findings"]

    # 5. Downloads
    description = conditioning_summary([m.value for m in request.given], request.labels, request.settings)
    findings = {"generated": list(request.outputs), "settings": request.settings,
                "items": [item.to_dict() for item in items]}
    downloads = write_downloads(job.workdir, images=images, report=report, findings=findings,
                                description=description, model=job.model_name)
    timings["downloads"] = time.perf_counter() - started - timings["findings"] - timings["keypatches"]
    seconds = time.perf_counter() - job.started
    logger.info("generated %s from %s in %.2f s, batch of %d (%s)", "+".join(request.outputs),
                "+".join(m.value for m in request.given) or "labels", seconds, batch_size,
                ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return GenerationResult(images, report, views, items, keypatches, warnings, notes, downloads, seconds, request,
                            batch_size)


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
           progress: ProgressCallback | None = None, session: str | None = None) -> ReviewResult:
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
    generation = generate(service, request, workdir=workdir, progress=progress, session=session)
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
