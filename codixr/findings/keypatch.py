"""Keypatches and keywords: where the model looks, in AdaMatch's terms (Chen et al., Sec. 3.1-3.2).

    from codixr.findings import keypatches
    result = keypatches(pipe, image)                    # keywords of the textual codebook per adaptive patch
    result = keypatches(pipe, image, report="...")      # each clinical word of the report -> its best patch
    result.overlay       # PIL RGB image of the size given, boxes + shift arrows + legend (AdaMatch Fig. 8)
    result.keywords      # [(keyword, score), ...] best first
    result.boxes         # [{"box", "centre", "keyword", "score", ...}, ...] in pixels of the image given
    result.highlights    # [(text span, keyword or None), ...] covering the whole report (gr.HighlightedText)

**Patches.** With an AdaPatch head on P_X (``pipe.prompt_encoder.adapatch``), the patches are the adaptive
patches (Eq. 1-4). Without one, the fixed ViT patch tokens stand in (grid boxes, no shift), and
``result.method`` says so.

**Scores.** Cosine similarities in the shared space, as in AdaMatch's keyword extraction: a keyword of
several word pieces scores a patch by the mean similarity of its word pieces to that patch. For an image
alone the vocabulary is the textual codebook (:mod:`codixr.findings.codebook`): each patch gets its top
keywords (``patch_keywords``, the paper's top kappa_1), keywords are ranked by their best patch, and the
``top_k`` patches with the highest best-keyword score are the boxes. For an image with a report the
vocabulary is the report's clinically meaningful words -- phrases that match a codebook entry (longest
first), else any content word that is not a stop word -- encoded in context by P_R; each is matched to its
best patch, and the ``top_k`` best-scoring words are boxed and highlighted in their box's colour.

Scores of a randomly initialised or briefly trained model are not meaningful; the overlay shows what this
model matches, not a validated localisation.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from codixr.errors import InputError
from codixr.findings.codebook import Codebook, as_codebook, cue_category, phrase_spans
from codixr.findings.overlay import as_rgb, draw_keypatches, keyword_colors
from codixr.models.adapatch import content_word_mask, encode_adaptive_patches, special_token_ids

logger = logging.getLogger(__name__)

ADAPTIVE_METHOD = "adaptive patches"
FIXED_METHOD = "fixed patches (no AdaPatch head in this model)"


@dataclass
class KeypatchResult:
    """Keypatches of one image (and report).

    Attributes:
        overlay: RGB image of the size given: keypatch boxes, shift arrows from the fixed patches, legend.
        keywords: (keyword, score) best first: codebook keywords (image) or the report's words (image + report).
        boxes: one dict per drawn patch: ``box`` (x0, y0, x1, y1) and ``centre`` (x, y) of the fixed patch in
            pixels of the image given, ``patch`` (index in the ViT's row-major grid), ``keyword``, ``score``,
            ``category`` (codebook group or None) and ``color``.
        highlights: for a report, (span, keyword or None) pieces that join back into the report text; else None.
        patch_keywords: per patch (row-major), its top (keyword, score) pairs.
        method: ``"adaptive patches"`` or ``"fixed patches (no AdaPatch head in this model)"``.
        colors: keyword -> colour of its boxes and highlights (``color_map`` of ``gr.HighlightedText``).
        warnings: what was changed about the request (e.g. a report cut at the token limit).
    """

    overlay: PIL.Image.Image
    keywords: list[tuple[str, float]]
    boxes: list[dict[str, Any]]
    highlights: list[tuple[str, str | None]] | None
    patch_keywords: list[list[tuple[str, float]]]
    method: str
    colors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Patches:
    """Patch embeddings of one image and their geometry, in fractions of the model's square input."""

    embeddings: torch.Tensor  # (N, d)
    boxes: torch.Tensor  # (N, 4) x0, y0, x1, y1
    centres: torch.Tensor  # (N, 2) fixed patch centres
    method: str


@dataclass
class _Unit:
    """A clinically meaningful piece of a report: characters [start, end), its label and codebook group."""

    start: int
    end: int
    label: str
    category: str | None


# ---------------------------------------------------------------------------------- inputs
def _read_image(image: Any) -> tuple[Any, PIL.Image.Image]:
    """(what the pipeline encodes, the RGB picture to draw on, of the size given)."""
    if isinstance(image, (str, os.PathLike, bytes)):
        from codixr.io import read_xray

        image = read_xray(image, size=None).image  # the file, preprocessed, at its own resolution
    from codixr.io import XRay

    if isinstance(image, XRay):
        image = image.image
    if isinstance(image, (np.ndarray, torch.Tensor)):
        array = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
        if array.ndim == 3:
            array = array.squeeze(0) if array.shape[0] == 1 else array.mean(axis=-1)
        image = array
    if not isinstance(image, (PIL.Image.Image, np.ndarray)):
        raise InputError(f"Cannot use {type(image).__name__} as an X-ray: give a file path, bytes, a PIL image or "
                         "a 2-D array with values in [0, 1].")
    return image, as_rgb(image)


def image_patches(pipe, image: Any) -> Patches:
    """Patch embeddings of one image: adaptive patches when P_X has an AdaPatch head, else the fixed ViT patches."""
    pe = pipe.prompt_encoder
    x = pipe._image_tensor(image)[None].to(pipe.device, pe.dtype)
    if getattr(pe, "adapatch", None) is not None:
        out = encode_adaptive_patches(pe, x)
        return Patches(out.embeddings[0], out.boxes[0], out.centres[0], ADAPTIVE_METHOD)
    tokens = pe.encode_image(x).tokens[0]
    g = math.isqrt(tokens.shape[0])
    if g * g != tokens.shape[0]:
        raise InputError(f"P_X returned {tokens.shape[0]} patch tokens, not a square grid.")
    cells = torch.arange(g, dtype=torch.float32, device=tokens.device)
    cy, cx = torch.meshgrid(cells, cells, indexing="ij")
    x0, y0 = cx.flatten() / g, cy.flatten() / g
    boxes = torch.stack([x0, y0, x0 + 1 / g, y0 + 1 / g], -1)
    return Patches(tokens, boxes, (boxes[:, :2] + boxes[:, 2:]) / 2, FIXED_METHOD)


def _to_pixels(fractions: torch.Tensor, width: int, height: int) -> np.ndarray:
    """Fractions of the model's centred, zero-padded square -> pixels of the image given (clamped inside it)."""
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    xy = fractions.detach().cpu().double().numpy().reshape(-1, 2) * side - (left, top)
    xy = np.clip(xy, 0, (width, height))
    return xy.reshape(fractions.shape)


# ---------------------------------------------------------------------------------- vocabularies
def _similarity(patches: torch.Tensor, words: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(N, d) patches x (T, d) word pieces, (U, T) 0/1 membership -> (U, N) mean cosine over each unit's pieces."""
    sim = F.normalize(words, dim=-1) @ F.normalize(patches, dim=-1).t()  # (T, N)
    groups = groups.to(sim.dtype)
    return (groups @ sim) / groups.sum(-1, keepdim=True).clamp(min=1)


def _codebook_scores(pipe, patches: torch.Tensor, codebook: Codebook) -> torch.Tensor:
    """(M, N): each codebook keyword against each patch (mean over the keyword's word pieces)."""
    pe = pipe.prompt_encoder
    tokens = pipe.tokenize(codebook.texts)
    words = pe.encode_text(**tokens).tokens  # (M, T, d)
    mask = content_word_mask(tokens["input_ids"], tokens["attention_mask"], special_token_ids(pe))
    d = words.shape[-1]
    flat = words.reshape(-1, d)
    groups = torch.block_diag(*[row[None] for row in mask.to(words.dtype)])  # (M, M*T)
    return _similarity(patches, flat, groups)


def report_units(text: str, codebook: Codebook | None = None) -> list[_Unit]:
    """The clinically meaningful pieces of a report, in order: codebook phrases (longest match first, up to
    three words, plural-insensitive), else single content words (not stop words)."""
    units = []
    for phrase in phrase_spans(text):
        i = 0
        while i < len(phrase):
            for n in range(min(3, len(phrase) - i), 0, -1):
                entry = codebook.lookup(" ".join(w for w, _, _ in phrase[i:i + n])) if codebook else None
                if entry is not None or n == 1:
                    break
            start, end = phrase[i][1], phrase[i + n - 1][2]
            if entry is not None:
                units.append(_Unit(start, end, entry.text, entry.category))
            else:
                word = phrase[i][0]
                units.append(_Unit(start, end, word, cue_category(word)))
            i += n
    return units


def _report_scores(pipe, patches: torch.Tensor, text: str, units: list[_Unit]) -> tuple[torch.Tensor, list[_Unit]]:
    """(U, N) similarities of the report's units (encoded in context by P_R) to the patches."""
    pe = pipe.prompt_encoder
    enc = pipe.tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=pe.max_text_tokens,
                         return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    input_ids, attention_mask = enc["input_ids"].to(pipe.device), enc["attention_mask"].to(pipe.device)
    words = pe.encode_text(input_ids, attention_mask).tokens[0]
    usable = content_word_mask(input_ids, attention_mask, special_token_ids(pe))[0].tolist()
    rows, kept = [], []
    for unit in units:
        row = [bool(ok) and s < unit.end and e > unit.start and e > s for (s, e), ok in zip(offsets, usable)]
        if any(row):
            rows.append(row)
            kept.append(unit)
    if not kept:
        return torch.zeros(0, patches.shape[0], device=patches.device), []
    groups = torch.tensor(rows, device=words.device)
    return _similarity(patches, words, groups), kept


def _highlights(text: str, units: list[_Unit], shown: set[str], shift: int = 0) -> list[tuple[str, str | None]]:
    """(span, label or None) pieces joining back into ``text``; units' offsets are in ``text[shift:]``."""
    pieces, pos = [], 0
    for unit in units:
        if unit.label not in shown:
            continue
        start, end = unit.start + shift, unit.end + shift
        if start > pos:
            pieces.append((text[pos:start], None))
        pieces.append((text[start:end], unit.label))
        pos = end
    if pos < len(text):
        pieces.append((text[pos:], None))
    return pieces


def _rank(values: torch.Tensor, k: int | None) -> list[int]:
    """Indices of the k largest values, best first, ties by index (stable, so results are reproducible)."""
    order = torch.sort(values.detach().cpu(), descending=True, stable=True).indices.tolist()
    return order if k is None else order[:k]


# ---------------------------------------------------------------------------------- entry point
@torch.no_grad()
def keypatches(pipe, image: Any, report: str | None = None, top_k: int | None = 5,
               codebook: Codebook | str | os.PathLike | Sequence[str] | None = None,
               per_patch: int = 3, patches_per_word: int = 1) -> KeypatchResult:
    """Keywords per patch and the top keypatches of an X-ray, or each clinical word of its report with its patch.

    Args:
        pipe: a ``CoDiXRPipeline`` (its prompt encoder and tokenizer are used).
        image: the X-ray: file path or bytes (read with ``codixr.io.read_xray`` at its own resolution), XRay,
            PIL image, or a 2-D array in [0, 1]. Boxes and the overlay are in its pixels.
        report: an impression to match word by word; None matches the textual codebook instead.
        top_k: keypatches drawn (image) / report words boxed and highlighted (report); None for all.
        codebook: a Codebook, its JSON path, a list of keywords, or None for the bundled ``assets/codebook.json``
            (needed for an image alone; with a report it only groups words into codebook phrases when found).
        per_patch: keywords listed per patch in ``patch_keywords``.
        patches_per_word: best patches boxed per report word.

    Raises:
        InputError for an unreadable image or an empty report; ``CodebookError`` when an image comes alone and
        the codebook file is missing.
    """
    # 1. Check inputs
    if top_k is not None and top_k < 1:
        raise InputError("top_k must be a positive number of keypatches (or None for all).")
    if report is not None and (not isinstance(report, str) or not report.strip()):
        raise InputError("The report must be non-empty text (or None to match the textual codebook).")
    model_input, picture = _read_image(image)
    width, height = picture.size
    warnings: list[str] = []

    # 2. Patches: adaptive (AdaPatch head) or the fixed ViT grid
    patches = image_patches(pipe, model_input)

    # 3. Vocabulary and similarities (U, N): codebook keywords, or the report's meaningful words
    units: list[_Unit] = []
    if report is None:
        book = as_codebook(codebook)
        labels = book.texts
        categories = [e.category for e in book]
        scores = _codebook_scores(pipe, patches.embeddings, book)
    else:
        from codixr.data.reports import truncate_to_token_limit

        limit = pipe.prompt_encoder.max_text_tokens
        text, truncated = truncate_to_token_limit(report, pipe.tokenizer, max_tokens=limit)
        if truncated:
            warnings.append(f"The report exceeded the {limit}-token limit of the report encoder; only its first "
                            "sentences were matched.")
            logger.warning(warnings[-1])
        try:
            book = as_codebook(codebook)
        except OSError as err:  # without a codebook, every content word stands alone
            logger.info("no codebook for grouping report words: %s", err)
            book = None
        scores, units = _report_scores(pipe, patches.embeddings, text, report_units(text, book))
        labels, categories = [u.label for u in units], [u.category for u in units]
        if not units:
            warnings.append("The report has no clinical words to match (only stop words or punctuation).")

    # 4. Rank: per patch its keywords; per keyword its best patch
    patch_keywords = [[(labels[m], float(scores[m, n])) for m in _rank(scores[:, n], per_patch)]
                      for n in range(patches.embeddings.shape[0])]
    best_per_label: dict[str, int] = {}  # label -> row of its best occurrence
    if scores.shape[0]:
        label_scores = scores.amax(1)
        for m in _rank(label_scores, None):
            best_per_label.setdefault(labels[m], m)
        keywords = [(label, float(label_scores[m])) for label, m in best_per_label.items()]
    else:
        keywords = []
    if report is None:
        chosen = [(n, int(scores[:, n].argmax())) for n in _rank(scores.amax(0), top_k)]
        keywords = keywords[:top_k]
    else:  # every word is ranked in `keywords`; the top_k best are boxed and highlighted
        shown = list(best_per_label.values())[:top_k]
        chosen = [(n, m) for m in shown for n in _rank(scores[m], patches_per_word)]

    # 5. Boxes in pixels of the image given, overlay and highlights
    colors = keyword_colors([labels[m] for _, m in chosen])
    box_px = _to_pixels(patches.boxes, width, height)
    centre_px = _to_pixels(patches.centres, width, height)
    boxes = [dict(box=tuple(round(float(v), 2) for v in box_px[n]),
                  centre=tuple(round(float(v), 2) for v in centre_px[n]),
                  patch=n, keyword=labels[m], score=float(scores[m, n]), category=categories[m],
                  color=colors[labels[m]]) for n, m in chosen]
    overlay = draw_keypatches(picture, boxes, colors, title=patches.method)
    highlights = None
    if report is not None:  # unit offsets index the stripped (and possibly cut) text
        highlights = _highlights(report, units, set(colors), shift=len(report) - len(report.lstrip()))
    return KeypatchResult(overlay=overlay, keywords=keywords, boxes=boxes, highlights=highlights,
                          patch_keywords=patch_keywords, method=patches.method, colors=colors, warnings=warnings)
