"""The Gradio interface: tabs, components and the handlers that connect them to :mod:`codixr.app`.

API endpoints (for ``gradio_client``): ``generate``, ``review``, ``study``, ``preview``, ``reader_start``,
``reader_answer``, ``reader_summary``, ``reader_export``. Errors reach the user as their typed messages
(``gr.Error``), never as tracebacks; unexpected failures are logged by type and code location only.
"""

from __future__ import annotations

import functools
import logging
import traceback
from typing import Any, Callable

import gradio as gr
import numpy as np
from PIL import Image

from codixr.errors import CoDiXRError, OverlappingModalitiesError
from codixr.io import XRayReadError
from codixr.modality import CONDITION_LABELS, Modality

from codixr.app.config import AppConfig
from codixr.app.escaping import html_text, markdown_code, markdown_text
from codixr.app.examples import load_examples
from codixr.app.findings import (
    comparison_chart_image,
    findings_chart_image,
    findings_table,
    report_highlights,
)
from codixr.app.generation import (
    LONG_IMPRESSION,
    MAX_GUIDANCE,
    MAX_IMPRESSION_CHARS,
    MAX_STEPS,
    SAMPLERS,
    GenerationRequest,
    GenerationResult,
    generate,
    review,
)
from codixr.app.reader_study import ReaderStudyError, ReaderStudyStore, check_operator, start_session
from codixr.app.runtime import ModelService, SelfTest, TempStore
from codixr.app.uploads import describe_view, discard_uploads, read_study, read_view, write_view_png

logger = logging.getLogger(__name__)

FILE_TYPES = [".dcm", ".dicom", ".png", ".jpg", ".jpeg"]
STUDY_FILE_TYPES = [*FILE_TYPES, ".zip"]
OUTPUTS = [m.value for m in Modality]
MODEL_CONCURRENCY_ID = "codixr-model"
INTRO = ("# CoDiXR Studio\nAny-to-any chest X-ray generation: give a **frontal** view, a **lateral** view and/or a "
         "report **impression**, and generate the parts you do not have. Every generated image and report is "
         "**synthetic**, for research and teaching; it is not a diagnosis.")
CSS = "#codixr-status {font-size: 0.9em} .codixr-note {font-size: 0.9em}"


def guarded(action: str) -> Callable:
    """Turn CoDiXR's typed errors into a ``gr.Error`` with their message; log anything else by type only."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except (CoDiXRError, XRayReadError) as exc:
                raise gr.Error(html_text(exc), title=f"{action} failed", print_exception=False) from None
            except Exception as exc:  # the message could quote an upload's path or content: log the type only
                logger.error("%s failed with %s at:\n%s", action, type(exc).__name__,
                             "".join(traceback.format_tb(exc.__traceback__)))
                raise gr.Error(f"{action} failed because of an internal error ({type(exc).__name__}). The app is "
                               "still running: check the inputs and try again.", title=f"{action} failed",
                               print_exception=False) from None
            finally:  # no upload outlives its request, not even one the request refused before reading it
                discard_uploads([*args, *kwargs.values()])

        return wrapper

    return decorate


def warn(message: str, **kwargs) -> None:
    """``gr.Warning`` with ``message`` shown as text: gradio renders a toast's message as HTML."""
    gr.Warning(html_text(message.replace("**", "")), **kwargs)


def theme() -> gr.themes.Base:
    """The default look with the system's own fonts (the stock theme would fetch web fonts)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])


def _pil(image: np.ndarray | Image.Image | None) -> Image.Image | None:
    if image is None or isinstance(image, Image.Image):
        return image
    return Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L")


def allowed_outputs(frontal: Any, lateral: Any, impression: str | None, chosen: list[str] | None) -> dict:
    """Untick the outputs that are given as inputs and say so; the choices stay all three.

    The choices never change: a click sent before this update reaches the browser still carries a valid value,
    and the generate handler uses such outputs as inputs (with a note) instead of failing.
    """
    given = [m for m, value in zip(OUTPUTS, (frontal, lateral, (impression or "").strip())) if value]
    info = f"{' and '.join(given).capitalize()} {'is' if len(given) == 1 else 'are'} given, so not generated." \
        if given else "Any of the three, as long as it is not an input."
    return gr.update(value=[m for m in (chosen or []) if m not in given], info=info)


def status_markdown(result: GenerationResult, request: GenerationRequest) -> str:
    """What happened, in a few lines: outputs and time, then warnings, then notes."""
    given = " + ".join(m.value for m in request.given) or "labels"
    if request.labels:
        given += f" (labels: {', '.join(request.labels)})"
    lines = [f"Generated **{' + '.join(request.outputs)}** from {given} in {result.seconds:.1f} s "
             f"({request.sampler}, {request.steps} steps, guidance {request.guidance:g}, seed {request.seed})."]
    lines += [f"**Warning:** {w}" for w in result.warnings] + [f"Note: {n}" for n in result.notes]
    return "\n\n".join(lines)


def build_app(config: AppConfig, service: ModelService, temp: TempStore, status: SelfTest | None = None) -> gr.Blocks:
    """The whole app as a ``gr.Blocks`` (not launched). ``status`` is the start-up self-test, shown on top."""
    store = ReaderStudyStore(config.reader_db_path)

    # ----------------------------------------------------------------------------------------- handlers
    def preview(path: str | None, slot: str):
        """Preprocessed preview of one upload and its view checks (never raises: the message is shown instead)."""
        if not path:
            return None, ""
        try:
            view = read_view(path, slot)
        except (CoDiXRError, XRayReadError) as exc:
            warn(str(exc), title=f"{slot.capitalize()} X-ray not usable")
            return None, f"**{slot.capitalize()} not usable:** {markdown_text(exc)}"
        for warning in view.warnings:
            warn(warning, title="View check")
        return _pil(view.xray.image), describe_view(view)

    @guarded("Generation")
    def on_generate(frontal, lateral, impression, labels, outputs, steps, guidance, seed, sampler, long_impression,
                    http: gr.Request = None, progress=gr.Progress()):
        asked = GenerationRequest(frontal, lateral, impression, tuple(labels or ()), tuple(outputs or ()), steps,
                                  guidance, seed, sampler, long_impression)
        try:
            asked.resolved()
        except OverlappingModalitiesError as exc:  # every output ticked is an input: say so, change no output
            warn(str(exc), title="Nothing to generate")  # the message names modalities only, nothing typed
            return (*[gr.skip()] * 3, f"**Nothing generated.** {exc}", *[gr.skip()] * 7)
        progress(0.0, desc="Reading inputs")
        result = generate(service, asked, workdir=temp.new_dir("generate"),
                          progress=lambda step, total: progress((step, total), desc="Denoising", unit="steps"),
                          session=getattr(http, "session_hash", None))
        request = result.request
        progress(1.0, desc="Findings")
        for warning in result.warnings:
            warn(warning)
        headers, rows = findings_table(result.items)
        charts = [(chart, item.name) for item in result.items if (chart := findings_chart_image(item)) is not None]
        overlays = [(kp.overlay, f"{name}: " + ", ".join(f"{w} ({s:.2f})" for w, s in kp.keywords[:5]))
                    for name, kp in result.keypatches if kp.overlay is not None]
        notes = [kp.note for _, kp in result.keypatches if kp.note]
        report = result.report or request.impression
        keypatch_spans = next((list(kp.highlights) for _, kp in result.keypatches if kp.highlights), None)
        return (result.images.get("frontal"), result.images.get("lateral"), result.report or "",
                status_markdown(result, request), {"headers": headers, "data": rows}, charts, overlays,
                "\n\n".join(dict.fromkeys(notes)), report_highlights(report) if report else None,
                gr.update(value=keypatch_spans, visible=bool(keypatch_spans)), [str(p) for p in result.downloads])

    @guarded("Study upload")
    def on_study(files):
        paths = [f if isinstance(f, str) else getattr(f, "name", f) for f in (files or [])]
        study = read_study(paths)
        for warning in study.warnings:
            warn(warning, title="Study views")
        folder = temp.new_dir("study")
        pngs = {v: str(write_view_png(getattr(study, v).xray, folder, v)) for v in ("frontal", "lateral")
                if getattr(study, v) is not None}
        images = [_pil(getattr(study, v).xray.image) if getattr(study, v) else None for v in ("frontal", "lateral")]
        return images[0], images[1], study.markdown(), pngs

    def send_study(pngs: dict | None, tab: str):
        pngs = pngs or {}
        if not pngs:
            warn("Upload a study first: no frontal or lateral view has been assigned yet.")
        return pngs.get("frontal"), pngs.get("lateral"), gr.Tabs(selected=tab)

    @guarded("Review")
    def on_review(frontal, lateral, impression, hold_out, steps, seed, http: gr.Request = None,
                  progress=gr.Progress()):
        result = review(service, frontal=frontal, lateral=lateral, impression=impression, hold_out=hold_out,
                        steps=steps, seed=seed, workdir=temp.new_dir("review"),
                        progress=lambda step, total: progress((step, total), desc="Denoising", unit="steps"),
                        session=getattr(http, "session_hash", None))
        for warning in result.generation.warnings:
            warn(warning)
        headers, rows = result.table
        status = "\n\n".join([f"Held out the **{result.hold_out}** and generated it from the rest of the study. "
                              + result.summary, *(f"**Warning:** {w}" for w in result.generation.warnings),
                              *(f"Note: {n}" for n in result.generation.notes)])
        return (_pil(result.real_image), result.synthetic_image, result.real_report or "",
                result.synthetic_report or "", status, comparison_chart_image(result.real, result.synthetic),
                {"headers": headers, "data": rows}, [str(p) for p in result.generation.downloads])

    @guarded("Reader study")
    def on_reader_start(progress=gr.Progress()):
        session = start_session(config.reader_real_dir, service.pipeline(), n_images=config.reader_images,
                                model=service.model_name, steps=config.reader_steps,
                                progress=lambda i, n: progress((i, n), desc="Preparing synthetic images"))
        session.folder = temp.new_dir("reader")
        return session, *_reader_view(session)

    @guarded("Reader study")
    def on_reader_answer(session, realism, guess, reader_code):
        if session is None:
            raise ReaderStudyError("Start a reading session first.")
        session.answer(store, realism, guess, reader_code if config.reader_codes else None)
        return session, *_reader_view(session)

    def _reader_view(session):
        shown = session.present()  # both classes: same pixels pipeline, PNG settings, fresh random file name
        if shown is None:
            return None, f"Session finished: {len(session.items)} images read. Thank you.", None
        skipped = f" ({session.skipped} unreadable file(s) in the folder were skipped)" if session.skipped else ""
        return str(shown), f"Image **{session.position + 1} of {len(session.items)}**{skipped}", None

    @guarded("Reader study summary")
    def on_reader_summary(operator_secret):
        check_operator(operator_secret, config.operator_secret)
        summary = store.summary()
        return (f"{summary.markdown()}\n\nAnswers are stored in {markdown_code(config.reader_db_path)}.",
                summary.rows())

    @guarded("Reader study export")
    def on_reader_export(operator_secret):
        check_operator(operator_secret, config.operator_secret)
        return str(store.export_csv(temp.new_dir("reader-export") / "reader-study.csv"))

    # ----------------------------------------------------------------------------------------- layout
    with gr.Blocks(title="CoDiXR Studio", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(status.markdown() if status else "", elem_id="codixr-status")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=5):
                        with gr.Row():
                            frontal = gr.File(label="Frontal X-ray (DICOM, PNG, JPEG)", file_types=FILE_TYPES,
                                              type="filepath", elem_id="frontal-file", height=120)
                            lateral = gr.File(label="Lateral X-ray (DICOM, PNG, JPEG)", file_types=FILE_TYPES,
                                              type="filepath", elem_id="lateral-file", height=120)
                        with gr.Row():
                            with gr.Column():
                                frontal_preview = gr.Image(label="Frontal, preprocessed", interactive=False,
                                                           format="png", height=220, elem_id="frontal-preview")
                                frontal_check = gr.Markdown(elem_classes="codixr-note")
                            with gr.Column():
                                lateral_preview = gr.Image(label="Lateral, preprocessed", interactive=False,
                                                           format="png", height=220, elem_id="lateral-preview")
                                lateral_check = gr.Markdown(elem_classes="codixr-note")
                        impression = gr.Textbox(label="Impression", lines=3, max_length=MAX_IMPRESSION_CHARS,
                                                placeholder="e.g. Small left pleural effusion. No pneumothorax.",
                                                elem_id="impression")
                        labels = gr.CheckboxGroup(list(CONDITION_LABELS), label="Diagnosis labels (optional condition)")
                        outputs = gr.CheckboxGroup(OUTPUTS, value=list(OUTPUTS), label="Generate",
                                                   info="Any of the three, as long as it is not an input.",
                                                   elem_id="outputs")
                        with gr.Accordion("Advanced", open=False):
                            steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="Denoising steps")
                            guidance = gr.Slider(1.0, MAX_GUIDANCE, value=2.0, step=0.5, label="Guidance scale (images)",
                                                 info="The report uses the scale validated for the model")
                            seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                            sampler = gr.Radio(list(SAMPLERS), value="dpm++", label="Sampler")
                            long_impression = gr.Radio(list(LONG_IMPRESSION), value="truncate",
                                                       label="Impression over the 77-token limit",
                                                       info="truncate: cut at the last sentence that fits (with a "
                                                            "warning); error: refuse it")
                        run = gr.Button("Generate", variant="primary", elem_id="generate-button")
                    with gr.Column(scale=6):
                        gen_status = gr.Markdown(elem_id="generate-status")
                        with gr.Row():
                            out_frontal = gr.Image(label="Generated frontal", interactive=False, format="png",
                                                   height=256, elem_id="out-frontal")
                            out_lateral = gr.Image(label="Generated lateral", interactive=False, format="png",
                                                   height=256, elem_id="out-lateral")
                        out_report = gr.Textbox(label="Generated impression", interactive=False, lines=2,
                                                elem_id="out-report")
                        table = gr.Dataframe(label="Findings of every item (given and generated)",
                                             interactive=False, wrap=True, elem_id="findings-table")
                        charts = gr.Gallery(label="Findings charts", columns=1, height=520, object_fit="contain",
                                            format="png")
                        with gr.Accordion("Keypatch overlays and highlighted findings", open=True):
                            keypatch_note = gr.Markdown(elem_classes="codixr-note")
                            overlays = gr.Gallery(label="Keypatch overlays", columns=2, height=320,
                                                  object_fit="contain", format="png")
                            highlights = gr.HighlightedText(label="Findings in the impression (rule-based labeler)",
                                                            combine_adjacent=False)
                            keypatch_words = gr.HighlightedText(label="Keypatch keywords in the impression",
                                                                visible=False)
                        downloads = gr.File(label="Downloads: PNG, DICOM (synthetic), report, findings JSON",
                                            file_count="multiple", interactive=False, elem_id="downloads")
                gen_inputs = [frontal, lateral, impression, labels, outputs, steps, guidance, seed, sampler,
                              long_impression]
                gen_outputs = [out_frontal, out_lateral, out_report, gen_status, table, charts, overlays,
                               keypatch_note, highlights, keypatch_words, downloads]
                examples = load_examples(config.examples_dir)
                if examples:
                    gr.Examples(examples, gen_inputs, gen_outputs, fn=on_generate, run_on_click=True,
                                cache_examples=False, label="Examples (made by the bundled model; no patient data)")

            with gr.Tab("Study upload", id="study"):
                gr.Markdown("Drop a whole study: several DICOM files, or one .zip of them. Views are assigned from "
                            "each file's DICOM ViewPosition; nothing else from the files is shown or kept.")
                study_files = gr.File(label="Study files (DICOM or .zip)", file_count="multiple",
                                      file_types=STUDY_FILE_TYPES, type="filepath", elem_id="study-files")
                study_message = gr.Markdown()
                with gr.Row():
                    study_frontal = gr.Image(label="Frontal (by ViewPosition)", interactive=False, format="png",
                                             height=256)
                    study_lateral = gr.Image(label="Lateral (by ViewPosition)", interactive=False, format="png",
                                             height=256)
                study_pngs = gr.State({})
                with gr.Row():
                    to_generate = gr.Button("Use in Generate")
                    to_review = gr.Button("Use in Real vs synthetic review")

            with gr.Tab("Real vs synthetic review", id="review"):
                gr.Markdown("Upload a full **real** study, hold out one part, and the app generates it from the rest: "
                            "real and synthetic are shown side by side with both findings, and a table of where "
                            "they agree and differ.")
                with gr.Row():
                    rv_frontal = gr.File(label="Real frontal", file_types=FILE_TYPES, type="filepath", height=120,
                                         elem_id="review-frontal")
                    rv_lateral = gr.File(label="Real lateral", file_types=FILE_TYPES, type="filepath", height=120,
                                         elem_id="review-lateral")
                rv_impression = gr.Textbox(label="Real impression", lines=3, max_length=MAX_IMPRESSION_CHARS)
                with gr.Row():
                    rv_hold = gr.Radio(OUTPUTS, value="lateral", label="Hold out and generate")
                    rv_steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="Denoising steps")
                    rv_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                rv_run = gr.Button("Generate the held-out part and compare", variant="primary")
                rv_status = gr.Markdown()
                with gr.Row():
                    rv_real_image = gr.Image(label="Real", interactive=False, format="png", height=256)
                    rv_synth_image = gr.Image(label="Synthetic", interactive=False, format="png", height=256)
                with gr.Row():
                    rv_real_text = gr.Textbox(label="Real impression", interactive=False)
                    rv_synth_text = gr.Textbox(label="Synthetic impression", interactive=False)
                rv_chart = gr.Image(label="Findings: real and synthetic", interactive=False, format="png")
                rv_table = gr.Dataframe(label="Where real and synthetic agree", interactive=False, wrap=True)
                rv_downloads = gr.File(label="Downloads", file_count="multiple", interactive=False)

            with gr.Tab("Reader study", id="reader"):
                with gr.Tab("Read"):
                    where = "set by the operator" if config.reader_real_dir else \
                        "**not set**: start the app with --reader-real-dir FOLDER (or CODIXR_READER_REAL_DIR)"
                    gr.Markdown(f"A blinded reading: real and synthetic chest X-rays one at a time in random order. "
                                f"Rate how realistic each looks and guess whether it is real. Real images: {where}. "
                                "Nothing about you is stored" + (" beyond the reader code you type" if
                                                                  config.reader_codes else "") + ".")
                    reader_code = gr.Textbox(label="Reader code (pseudonymous, e.g. R1)", visible=config.reader_codes)
                    reader_start = gr.Button("Start a reading session", variant="primary")
                    reader_state = gr.State(None)
                    reader_position = gr.Markdown()
                    reader_image = gr.Image(label="Image", interactive=False, format="png", height=512,
                                            show_label=False, buttons=[])
                    realism = gr.Slider(1, 10, value=5, step=1,
                                        label="Realism: 1 = clearly artificial, 10 = indistinguishable from real")
                    guess = gr.Radio(["real", "synthetic"], label="Real or synthetic?")
                    reader_submit = gr.Button("Submit and next")
                with gr.Tab("Summary"):
                    gr.Markdown("For the study's operator: the summary and the export (which say which images were "
                                "real) need the operator secret set at launch." if config.operator_secret else
                                "The summary and the export are **turned off**: the operator turns them on by "
                                "starting the app with --operator-secret SECRET (or CODIXR_OPERATOR_SECRET).")
                    operator_secret = gr.Textbox(label="Operator secret", type="password", max_lines=1,
                                                 interactive=bool(config.operator_secret))
                    summary_refresh = gr.Button("Refresh summary")
                    summary_text = gr.Markdown()
                    summary_table = gr.Dataframe(headers=["Class", "Answers", "Guessed right", "Mean realism",
                                                          "SD realism"], interactive=False)
                    export = gr.Button("Export answers as CSV")
                    export_file = gr.File(label="CSV", interactive=False)

        # ------------------------------------------------------------------------------------- events
        for box, slot, image, check in ((frontal, "frontal", frontal_preview, frontal_check),
                                        (lateral, "lateral", lateral_preview, lateral_check)):
            box.change(functools.partial(preview, slot=slot), box, [image, check], api_name=f"preview_{slot}",
                       api_visibility="undocumented", concurrency_limit=4).then(
                allowed_outputs, [frontal, lateral, impression, outputs], outputs, queue=False, show_progress="hidden",
                api_visibility="private")
        impression.change(allowed_outputs, [frontal, lateral, impression, outputs], outputs, queue=False,
                          show_progress="hidden", api_visibility="private")
        # generate and review wait in the model service's batching queue (which bounds them), not in gradio's
        run.click(on_generate, gen_inputs, gen_outputs, api_name="generate", concurrency_limit=None)
        study_files.change(on_study, study_files, [study_frontal, study_lateral, study_message, study_pngs],
                           api_name="study", concurrency_limit=2)
        to_generate.click(functools.partial(send_study, tab="generate"), study_pngs, [frontal, lateral, tabs],
                          api_visibility="private")
        to_review.click(functools.partial(send_study, tab="review"), study_pngs, [rv_frontal, rv_lateral, tabs],
                        api_visibility="private")
        for box in (rv_frontal, rv_lateral):  # no preview here: read the upload (keep its image) and delete it now
            box.change(lambda path: discard_uploads([path]), box, None, concurrency_limit=4, show_progress="hidden",
                       api_visibility="private")
        rv_run.click(on_review, [rv_frontal, rv_lateral, rv_impression, rv_hold, rv_steps, rv_seed],
                     [rv_real_image, rv_synth_image, rv_real_text, rv_synth_text, rv_status, rv_chart, rv_table,
                      rv_downloads], api_name="review", concurrency_limit=None)
        reader_start.click(on_reader_start, None, [reader_state, reader_image, reader_position, guess],
                           api_name="reader_start", concurrency_id=MODEL_CONCURRENCY_ID,
                           concurrency_limit=config.concurrency)
        reader_submit.click(on_reader_answer, [reader_state, realism, guess, reader_code],
                            [reader_state, reader_image, reader_position, guess], api_name="reader_answer")
        summary_refresh.click(on_reader_summary, operator_secret, [summary_text, summary_table],
                              api_name="reader_summary")
        export.click(on_reader_export, operator_secret, export_file, api_name="reader_export")
    return demo
