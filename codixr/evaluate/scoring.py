"""The numbers of the evaluation report, one function per table.

Every entry of every table is either a result dict with ``"available": True`` and its ``n`` (and, for
FID, its backbone), or ``{"available": False, "reason": ...}`` saying why it cannot be computed.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from codixr.evaluate.data import EvalData, EvalItem, Selection
from codixr.evaluate.generation import Sample, SampleStore, fit_texts
from codixr.evaluate.settings import LETTERS, Setting
from codixr.metrics import (
    BackboneUnavailableError,
    MetricInputError,
    classification_metrics,
    extract_features,
    f1_metrics,
    fid_from_features,
    finding_agreement,
    label_reports,
    report_label_f1,
    retrieval_metrics,
    text_metrics,
)
from codixr.modality import CONDITION_LABELS, PATHOLOGIES, Modality

logger = logging.getLogger(__name__)

READER_THRESHOLD = 0.5  # classifier scores are calibrated so that 0.5 is the operating point; zero-shot: p >= 0.5
ENCODE_BATCH = 32
MAX_BASELINE_CORPUS = 20000  # training impressions searched by the nearest-neighbour baseline (first N, fixed order)

# --backbones name -> (codixr.metrics backbone name or None for P_X, title in the tables)
BACKBONES: dict[str, tuple[str | None, str]] = {
    "p_x": (None, "P_X (this model's image encoder)"),
    "inception": ("inception-v3", "Inception-v3 (ImageNet, torchvision)"),
    "xrv": ("xrv-densenet", "XRV-DenseNet-121 (densenet121-res224-all)"),
}
READERS: tuple[str, ...] = ("classifier", "zero-shot")
MODEL = "CoDiXR"
MOST_FREQUENT = "baseline: most frequent training impression"
NEAREST = "baseline: nearest training impression (shared space)"
NO_CASES = "n/a (no paired ground truth in this dataset): no case has every input of this setting"


def unavailable(reason: str) -> dict[str, Any]:
    """The entry of a number that cannot be computed, with the reason."""
    return {"available": False, "reason": reason}


@dataclass
class SettingRun:
    """A setting with its selected items and generated samples."""

    setting: Setting
    selection: Selection
    samples: list[Sample]
    store: SampleStore

    @property
    def items(self) -> list[EvalItem]:
        return self.selection.items

    @property
    def reports(self) -> list[str]:
        return [s.report or "" for s in self.samples]


def row_name(setting: Setting, view: Modality) -> str:
    """Table row of one generated view: the setting, plus the view when the setting makes several."""
    return setting.name if len(setting.image_outputs) == 1 else f"{setting.name} ({LETTERS[view]})"


# ---------------------------------------------------------------------------------------------- inputs


class ImageBank:
    """Real and generated X-rays as float32 (H, W) arrays in [0, 1] at the model's resolution, each read once."""

    def __init__(self, size: int):
        self.size = size
        self._real: dict[str, np.ndarray] = {}

    def real(self, path: str) -> np.ndarray:
        if path not in self._real:
            from codixr.io import read_xray

            self._real[path] = read_xray(path, size=self.size).image.astype(np.float32)
        return self._real[path]

    @staticmethod
    def generated(run: SettingRun, index: int, view: Modality) -> np.ndarray:
        return run.store.image(index, view)

    @staticmethod
    def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(arrays)[:, None]


def _encode(fn: Callable[[list], torch.Tensor], values: Sequence) -> torch.Tensor:
    return torch.cat([fn(list(values[i:i + ENCODE_BATCH])) for i in range(0, len(values), ENCODE_BATCH)])


def encode_images(pipe, images: Sequence) -> torch.Tensor:
    """P_X embeddings (N, d) of paths or arrays, in batches."""
    return _encode(pipe.encode_images, images)


def encode_texts(pipe, texts: Sequence[str]) -> torch.Tensor:
    """P_R embeddings (N, d) of texts, fitted to the token limit first."""
    return _encode(pipe.encode_reports, fit_texts(pipe, texts)[0])


# ---------------------------------------------------------------------------------------------- Table II


def build_backbones(names: Sequence[str], pipe, device: str | None = None) -> dict[str, Any]:
    """name -> FID feature backbone, or the reason (str) it is not available on this machine."""
    from codixr.metrics import CallableBackbone, load_backbone

    out: dict[str, Any] = {}
    for name in names:
        metric_name = BACKBONES[name][0]
        if metric_name is None:
            out[name] = CallableBackbone("p_x", lambda x: pipe.encode_images(list(x)))
            continue
        try:
            out[name] = load_backbone(metric_name, device=device)
        except BackboneUnavailableError as exc:
            logger.warning("FID backbone %s is not available: %s", name, exc)
            out[name] = f"not available (no local weights): {exc}"
    return out


def fid_table(runs: Sequence[SettingRun], references: dict[Modality, list[EvalItem]], backbones: dict[str, Any],
              bank: ImageBank) -> dict[str, dict[str, dict[str, Any]]]:
    """Table II: setting -> generated view -> backbone -> FID against the real images of that view."""
    real_features: dict[tuple[Modality, str], np.ndarray] = {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        for view in run.setting.image_outputs:
            real_items = references.get(view, [])
            fake = bank.stack([bank.generated(run, s.index, view) for s in run.samples]) if run.samples else None
            cell: dict[str, Any] = {}
            for name, backbone in backbones.items():
                if isinstance(backbone, str):
                    cell[name] = unavailable(backbone)
                    continue
                if len(real_items) < 2 or fake is None or len(fake) < 2:
                    cell[name] = unavailable(f"FID needs at least 2 real and 2 generated images; have {len(real_items)} "
                                             f"real {view.value} and {0 if fake is None else len(fake)} generated")
                    continue
                try:
                    if (view, name) not in real_features:
                        real = bank.stack([bank.real(it.image(view)) for it in real_items])
                        real_features[(view, name)] = extract_features(real, backbone)
                    result = fid_from_features(real_features[(view, name)], extract_features(fake, backbone), backbone.name)
                except MetricInputError as exc:
                    cell[name] = unavailable(str(exc))
                    continue
                cell[name] = {"available": True, "backbone": BACKBONES[name][1], "value": result.value,
                              "n_real": result.n_real, "n_generated": result.n_fake}
            out.setdefault(run.setting.name, {})[view.value] = cell
    return out


# ---------------------------------------------------------------------------------------------- readers


@dataclass
class Reader:
    """Something that reads the ten pathologies off an X-ray: the findings classifier or the zero-shot reading."""

    name: str
    source: str
    read: Callable[[np.ndarray], dict[str, float | None]] | None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.read is not None


def build_readers(names: Sequence[str], pipe, device: str | None = None) -> list[Reader]:
    """The readers asked for; an unavailable classifier becomes a Reader with the reason and no ``read``."""
    from codixr.findings import ClassifierUnavailable, load_classifier, zero_shot_findings
    from codixr.findings.result import ZERO_SHOT_SOURCE

    readers = []
    for name in names:
        if name == "classifier":
            try:
                clf = load_classifier("auto", device)
            except ClassifierUnavailable as exc:
                logger.warning("Findings classifier not available: %s", exc)
                readers.append(Reader(name, "findings classifier (XRV DenseNet)", None,
                                      f"not available (no local weights): {exc}"))
                continue
            readers.append(Reader(name, clf.source, lambda a, clf=clf: clf.predict(a).scores))
        else:
            readers.append(Reader(name, ZERO_SHOT_SOURCE, lambda a: zero_shot_findings(a, pipe).scores))
    return readers


class FindingsCache:
    """Reader scores (N, 10), NaN where a pathology is not assessed, for real and generated images; each image read once."""

    def __init__(self, bank: ImageBank):
        self.bank = bank
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def _scores(self, reader: Reader, key: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        if (reader.name, key) not in self._cache:
            scores = reader.read(load())
            self._cache[(reader.name, key)] = np.array([np.nan if scores.get(p) is None else scores[p]
                                                        for p in PATHOLOGIES], dtype=np.float64)
        return self._cache[(reader.name, key)]

    def real(self, reader: Reader, paths: Sequence[str]) -> np.ndarray:
        return np.stack([self._scores(reader, p, lambda p=p: self.bank.real(p)) for p in paths])

    def generated(self, reader: Reader, run: SettingRun, view: Modality) -> np.ndarray:
        return np.stack([self._scores(reader, f"{run.setting.slug}/{s.index}/{view.value}",
                                      lambda s=s: self.bank.generated(run, s.index, view)) for s in run.samples])


# ---------------------------------------------------------------------------------------------- Table III


def _classification(labels: Sequence[dict[str, float | None]], scores: np.ndarray) -> dict[str, Any]:
    """AUROC/F1 of reader scores against labels, only where ground truth exists and the reader assesses the class."""
    truth = np.array([[np.nan if lab.get(p) is None else float(lab[p]) for p in PATHOLOGIES] for lab in labels])
    truth[np.isnan(scores)] = np.nan  # classes the reader does not assess
    if not np.isin(truth, (0.0, 1.0)).any():
        return unavailable("no ground truth for any of the 10 pathologies on these images")
    # uncertain (-1) ground truth counts as none, as in the paper ("only when a ground truth was available")
    report = classification_metrics(truth, np.nan_to_num(scores, nan=0.0), thresholds=READER_THRESHOLD, uncertain="exclude")
    return {"available": True, "n": len(labels), **report.to_dict()}


def classification_table(runs: Sequence[SettingRun], references: dict[Modality, list[EvalItem]],
                         readers: Sequence[Reader], findings: FindingsCache) -> dict[str, Any]:
    """Table III: reader -> {"source", "rows": row -> AUROC/F1 per pathology + averages}, with "Real Data" rows."""
    out: dict[str, Any] = {}
    for reader in readers:
        if not reader.available:
            out[reader.name] = {"source": reader.source, **unavailable(reader.reason)}
            continue
        rows: dict[str, Any] = {}
        for view, items in references.items():
            rows[f"Real Data ({LETTERS[view]})"] = (
                _classification([it.labels for it in items], findings.real(reader, [it.image(view) for it in items]))
                if items else unavailable(f"no real {view.value} images in the evaluation split"))
        for run in runs:
            for view in run.setting.image_outputs:
                rows[row_name(run.setting, view)] = (
                    _classification([it.labels for it in run.items], findings.generated(reader, run, view))
                    if run.samples else unavailable(NO_CASES))
        out[reader.name] = {"source": reader.source, "available": True, "rows": rows}
    return out


# ---------------------------------------------------------------------------------------------- Tables IV and V


@dataclass
class TextBaselines:
    """Reports of the two text baselines for each report setting (same items as the model's reports)."""

    most_frequent: str
    nearest: dict[str, list[str]]
    corpus_size: int


def most_frequent_impression(corpus: Sequence[str]) -> str:
    """The most frequent training impression (whitespace-normalised; ties: the first seen)."""
    counts = collections.Counter(" ".join(t.split()) for t in corpus)
    return counts.most_common(1)[0][0]


def condition_embeddings(pipe, setting: Setting, items: Sequence[EvalItem]) -> torch.Tensor:
    """The composed condition of each item in the shared space, as the pipeline composes it (mean of the unit inputs)."""
    parts = []
    for m in setting.inputs:
        parts.append(encode_texts(pipe, [it.text for it in items]) if m is Modality.REPORT
                     else encode_images(pipe, [it.image(m) for it in items]))
    if setting.labels:
        parts.append(_encode(pipe.encode_labels, [it.positive_labels for it in items]))
    return F.normalize(sum(F.normalize(p.float(), dim=-1) for p in parts) / len(parts), dim=-1)


def text_baselines(runs: Sequence[SettingRun], data: EvalData, pipe) -> TextBaselines | None:
    """Most frequent and nearest-neighbour (condition vs P_R of training impressions) reports per report setting."""
    report_runs = [r for r in runs if r.setting.makes_report and r.items]
    corpus = list(dict.fromkeys(" ".join(t.split()) for t in data.train_impressions))[:MAX_BASELINE_CORPUS]
    if not report_runs or not corpus:
        return None
    corpus_emb = F.normalize(encode_texts(pipe, corpus).float(), dim=-1)
    nearest = {}
    for run in report_runs:
        best = (condition_embeddings(pipe, run.setting, run.items) @ corpus_emb.T).argmax(dim=1).tolist()
        nearest[run.setting.name] = [corpus[i] for i in best]
    return TextBaselines(most_frequent_impression(data.train_impressions), nearest, len(corpus))


def _generators(run: SettingRun, baselines: TextBaselines | None) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {MODEL: run.reports}
    out[MOST_FREQUENT] = [baselines.most_frequent] * len(run.items) if baselines else None
    out[NEAREST] = baselines.nearest.get(run.setting.name) if baselines else None
    return out


def bleu_table(runs: Sequence[SettingRun], baselines: TextBaselines | None, reference_name: str) -> dict[str, Any]:
    """Table IV: setting -> generator -> corpus BLEU-1..4 and ROUGE-L against the reference impressions."""
    out: dict[str, Any] = {}
    for run in (r for r in runs if r.setting.makes_report):
        keep = [i for i, it in enumerate(run.items) if it.impression]
        rows = {}
        for name, reports in _generators(run, baselines).items():
            if not run.items:
                rows[name] = unavailable(NO_CASES)
            elif not keep:
                rows[name] = unavailable("n/a (no paired ground truth in this dataset): these inputs have no reference impression")
            elif reports is None:
                rows[name] = unavailable("no training impressions for the baseline")
            else:
                scores = text_metrics([reports[i] for i in keep], [run.items[i].impression for i in keep])
                rows[name] = {"available": True, "n": len(keep), "reference": reference_name, **scores}
        out[run.setting.name] = rows
    return out


def _label_f1_vs_dataset(reports: Sequence[str], labels: Sequence[dict[str, float | None]]) -> dict[str, Any]:
    """F1 of the labels read from reports against dataset labels, per class only where the dataset states it.

    A finding the report does not mention (or calls uncertain) counts as negative; uncertain or missing
    dataset labels are no ground truth.
    """
    predicted = [{k: (1.0 if v == 1 else 0.0) for k, v in lab.items()} for lab in label_reports(reports)]
    report = f1_metrics(labels, predicted, labels=CONDITION_LABELS, uncertain="exclude", missing="exclude")
    return report.to_dict()


def report_label_table(runs: Sequence[SettingRun], baselines: TextBaselines | None) -> dict[str, Any]:
    """Table V: setting -> generator -> F1 of labeler labels per class (incl. No Finding) + micro/macro/weighted.

    Ground truth: the labels of the reference impression (the paper's convention) where one exists,
    else the dataset labels of the input (images), else n/a.
    """
    out: dict[str, Any] = {}
    for run in (r for r in runs if r.setting.makes_report):
        with_ref = [i for i, it in enumerate(run.items) if it.impression]
        with_labels = [i for i, it in enumerate(run.items) if it.has_labels]
        rows = {}
        for name, reports in _generators(run, baselines).items():
            if not run.items:
                rows[name] = unavailable(NO_CASES)
            elif reports is None:
                rows[name] = unavailable("no training impressions for the baseline")
            elif with_ref:
                report = report_label_f1([reports[i] for i in with_ref], [run.items[i].impression for i in with_ref])
                rows[name] = {"available": True, "n": len(with_ref),
                              "ground_truth": "labels of the reference impressions (rule-based labeler)", **report.to_dict()}
            elif with_labels:
                report = _label_f1_vs_dataset([reports[i] for i in with_labels], [run.items[i].labels for i in with_labels])
                rows[name] = {"available": True, "n": len(with_labels),
                              "ground_truth": "dataset labels of the inputs (per class only where stated)", **report}
            else:
                rows[name] = unavailable("n/a (no paired ground truth in this dataset): no reference impression and no labels")
        out[run.setting.name] = rows
    return out


# ---------------------------------------------------------------------------------------------- consistency


def _text_findings(reports: Sequence[str]) -> np.ndarray:
    """Labeler reading of texts as (N, 10) 1/0 (not mentioned or uncertain = 0)."""
    return np.array([[1.0 if lab.get(p) == 1 else 0.0 for p in PATHOLOGIES] for lab in label_reports(reports)])


def _binarize(scores: np.ndarray) -> np.ndarray:
    out = (scores >= READER_THRESHOLD).astype(np.float64)
    out[np.isnan(scores)] = np.nan
    return out


def consistency_table(runs: Sequence[SettingRun], readers: Sequence[Reader], findings: FindingsCache) -> dict[str, Any]:
    """Findings agreement between every two modalities of a setting of which at least one is generated.

    setting -> pair -> reader -> per-class agreement and Cohen's kappa (+ means). Image findings come
    from the reader (binarised at 0.5), report findings from the rule-based labeler.
    """
    out: dict[str, Any] = {}
    for run in runs:
        if not run.samples:
            continue
        present = [m for m in Modality if m in run.setting.inputs or m in run.setting.outputs]
        pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1:]
                 if a in run.setting.outputs or b in run.setting.outputs]
        rows: dict[str, Any] = {}
        for a, b in pairs:
            text_kind = run.items[0].text_kind if Modality.REPORT in run.setting.inputs else None
            names = [f"{LETTERS[m]} ({'generated' if m in run.setting.outputs else 'given'}"
                     + (f", {text_kind}" if m is Modality.REPORT and text_kind and text_kind != "impression" else "") + ")"
                     for m in (a, b)]
            cells: dict[str, Any] = {}
            for reader in readers:
                if not reader.available and (a.is_image or b.is_image):
                    cells[reader.name] = unavailable(reader.reason)
                    continue
                sides = []
                for m in (a, b):
                    if m is Modality.REPORT:
                        texts = run.reports if m in run.setting.outputs else [it.text for it in run.items]
                        sides.append(_text_findings(texts))
                    elif m in run.setting.outputs:
                        sides.append(_binarize(findings.generated(reader, run, m)))
                    else:
                        sides.append(_binarize(findings.real(reader, [it.image(m) for it in run.items])))
                report = finding_agreement(sides[0], sides[1], uncertain="negative", missing="exclude")
                agreement = report.to_dict()
                agreement["n_per_class"] = agreement.pop("n")
                cells[reader.name] = {"available": True, "n": len(run.items), "source": reader.source, **agreement}
            rows[" vs ".join(names)] = cells
        if rows:
            out[run.setting.name] = rows
    return out


# ---------------------------------------------------------------------------------------------- retrieval


def _retrieval(pipe, images: Sequence, texts: Sequence[str], what: str) -> dict[str, Any]:
    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    if len(keep) < 2:
        return unavailable(f"retrieval needs at least 2 {what} pairs with non-empty text; have {len(keep)}")
    image_emb = encode_images(pipe, [images[i] for i in keep])
    text_emb = encode_texts(pipe, [texts[i] for i in keep])
    result = retrieval_metrics(image_emb, text_emb)
    return {"available": True, "n": len(keep), "dropped_empty": len(texts) - len(keep),
            **{direction: r.to_dict() for direction, r in result.items()}}


def retrieval_table(runs: Sequence[SettingRun], data: EvalData, pipe, bank: ImageBank, n_pairs: int) -> dict[str, Any]:
    """Image-report retrieval R@1/5/10 in the shared space: real pairs, and generated outputs vs their conditions."""
    out: dict[str, Any] = {}
    pairs = [it for it in data.studies if it.frontal and it.text][:n_pairs]
    kinds = sorted({it.text_kind for it in pairs}) or ["text"]
    out[f"real F ↔ {' / '.join(kinds)}"] = (_retrieval(pipe, [it.frontal for it in pairs], [it.text for it in pairs], "real")
                                           if pairs else unavailable("n/a (no paired ground truth in this dataset): "
                                                                     "no image has a text"))
    for run in runs:
        if not run.samples:
            continue
        if run.setting.makes_report and run.setting.image_inputs:
            view = run.setting.image_inputs[0]
            out[f"{run.setting.name}: given {LETTERS[view]} ↔ generated T"] = _retrieval(
                pipe, [it.image(view) for it in run.items], run.reports, "generated")
        if run.setting.reads_report:
            for view in run.setting.image_outputs:
                out[f"{run.setting.name}: generated {LETTERS[view]} ↔ given T"] = _retrieval(
                    pipe, [bank.generated(run, s.index, view) for s in run.samples], [it.text for it in run.items],
                    "generated")
    return out
