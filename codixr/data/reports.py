"""Radiology report text: section extraction, cleaning, and fitting impressions to the 77-token limit.

Reports are split into sections at headers written in capitals and followed by a colon
("IMPRESSION:", "FINDINGS:", ...), in the style of the MIMIC-CXR reports. The paper uses only the
IMPRESSION section, because it is short and the text encoder takes at most 77 tokens; impressions
that are still longer are cut at the last sentence boundary that fits (see
:func:`truncate_to_token_limit`).
"""

from __future__ import annotations

import difflib
import re
import statistics
from typing import Any, Iterable, Sequence

from codixr.errors import InputError, ReportTooLongError

TOKEN_LIMIT = 77  # the text encoder's context length (CLIP-style, special tokens included)
PLACEHOLDER = "___"  # de-identification placeholder used for MIMIC "___" and IU "XXXX"

# Header (lower case, spaces collapsed) -> canonical section name. Headers not listed keep their own
# name (they still end the previous section). Misspellings of the canonical names are matched fuzzily.
SECTION_ALIASES: dict[str, str] = {
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings / impression": "impression",
    "impression and recommendations": "impression",
    "findings": "findings",
    "finding": "findings",
    "comparison": "comparison",
    "comparisons": "comparison",
    "indication": "indication",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "clinical indication": "indication",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "examination": "examination",
    "exam": "examination",
    "technique": "technique",
    "notification": "notification",
    "recommendation": "recommendations",
    "recommendations": "recommendations",
    "wet read": "wet read",
    "addendum": "addendum",
}
_FUZZY_TARGETS = ("impression", "findings", "indication", "comparison", "technique", "examination", "history")

_HEADER = re.compile(r"([A-Za-z][A-Za-z()/&,' -]*[A-Za-z)])[ \t]*:")
_ENUMERATOR = re.compile(r"\(?\d{1,2}[.)]?")
_ABBREVIATIONS = frozenset({"dr", "drs", "mr", "mrs", "ms", "vs", "approx", "e.g", "i.e", "fig"})


def normalize_section_name(header: str) -> str:
    """Canonical name of a report section header ("IMPRESSIONS" -> "impression", "IMPRESSON" -> "impression")."""
    key = " ".join(header.lower().split())
    if key in SECTION_ALIASES:
        return SECTION_ALIASES[key]
    close = difflib.get_close_matches(key, _FUZZY_TARGETS, n=1, cutoff=0.85)
    return close[0] if close else key


def split_sections(report_text: str) -> list[tuple[str, str]]:
    """Split a report into ``(section name, raw body)`` pairs, in order; text before the first header is
    named "preamble". A header is a run of capitals followed by a colon at the start of a line
    ("IMPRESSION:"), a known section name in any case at the start of a line ("Impression:"), or a known
    name in capitals after a full stop ("... normal. IMPRESSION: ...")."""
    text = report_text.replace("\r\n", "\n").replace("\r", "\n")
    known = set(SECTION_ALIASES.values())
    headers: list[tuple[int, int, str]] = []
    for match in _HEADER.finditer(text):
        before = text[: match.start()]
        name = normalize_section_name(match.group(1))
        capitals = match.group(1).isupper()
        at_line_start = not before[before.rfind("\n") + 1 :].strip()
        after_sentence = before.rstrip().endswith(".") and capitals
        if (at_line_start and (capitals or name in known)) or (after_sentence and name in known):
            headers.append((match.start(), match.end(), name))
    sections = [("preamble", text[: headers[0][0]] if headers else text)]
    for i, (_, end, name) in enumerate(headers):
        stop = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        sections.append((name, text[end:stop]))
    return sections


def clean_report_text(text: str | None, placeholder: str | None = PLACEHOLDER) -> str:
    """Normalise report text: one space between words, de-identification placeholders (MIMIC ``___``,
    IU ``XXXX``) replaced by ``placeholder`` (``None`` keeps them as they are), no space before
    punctuation, repeated full stops collapsed, no leading/trailing blanks or underscores."""
    if not text:
        return ""
    if placeholder is not None:
        text = re.sub(r"_{2,}", placeholder, text)
        text = re.sub(r"\bX{4,}\b", placeholder, text)
    text = " ".join(text.split())
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    text = re.sub(r"\.(?:\s*\.)+", ".", text)
    return text.strip(" \t\n:;,-").strip()


def extract_section(report_text: str | None, name: str, placeholder: str | None = PLACEHOLDER) -> str | None:
    """The cleaned text of the last non-empty section called ``name`` (canonical name), or ``None``."""
    if not report_text:
        return None
    wanted = normalize_section_name(name)
    bodies = [clean_report_text(body, placeholder) for sec, body in split_sections(report_text) if sec == wanted]
    bodies = [b for b in bodies if b and b.strip(PLACEHOLDER + " .")]
    return bodies[-1] if bodies else None


def extract_impression(report_text: str | None, placeholder: str | None = PLACEHOLDER) -> str | None:
    """The report's IMPRESSION section (also "IMPRESSIONS", "CONCLUSION", "FINDINGS AND IMPRESSION" and
    misspellings), cleaned; ``None`` when the report has no impression. Findings are never substituted."""
    return extract_section(report_text, "impression", placeholder)


def extract_findings(report_text: str | None, placeholder: str | None = PLACEHOLDER) -> str | None:
    """The report's FINDINGS section, cleaned, or ``None``."""
    return extract_section(report_text, "findings", placeholder)


def sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence of ``text`` (the last one is ``len(text.rstrip())``).

    A sentence ends at ``.``, ``!`` or ``?`` followed by white space, except after list enumerators at
    the start of a sentence ("1. No effusion.") and after common abbreviations ("Dr.", "vs.").
    """
    ends: list[int] = []
    start = 0
    for match in re.finditer(r"[.!?]+(?=\s)", text):
        word = text[: match.start()].split()[-1:] or [""]
        token = word[0].lower()
        first_word = not text[start : match.start()].strip() or text[start : match.start()].split() == word
        if (first_word and _ENUMERATOR.fullmatch(token)) or token.rstrip(".") in _ABBREVIATIONS:
            continue
        ends.append(match.end())
        start = match.end()
    final = len(text.rstrip())
    if not ends or ends[-1] < final:
        ends.append(final)
    return ends


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see :func:`sentence_ends`), stripped."""
    out, start = [], 0
    for end in sentence_ends(text):
        if text[start:end].strip():
            out.append(text[start:end].strip())
        start = end
    return out


def count_tokens(text: str, tokenizer: Any) -> int:
    """Tokens ``tokenizer`` makes of ``text``, special tokens included (any Hugging Face tokenizer)."""
    return len(tokenizer(text, verbose=False)["input_ids"])


def truncate_to_token_limit(
    text: str, tokenizer: Any, max_tokens: int = TOKEN_LIMIT, strict: bool = False
) -> tuple[str, bool]:
    """Fit ``text`` into ``max_tokens`` tokens (special tokens included); returns ``(text, was_truncated)``.

    Cuts after the last whole sentence that fits; when even the first sentence is too long, cuts after
    the last whole word that fits. ``strict=True`` raises ReportTooLongError instead of cutting.
    """
    if count_tokens("", tokenizer) > max_tokens:
        raise InputError(f"max_tokens={max_tokens} leaves no room: the tokenizer's special tokens alone exceed it.")
    text = text.strip()
    n = count_tokens(text, tokenizer)
    if n <= max_tokens:
        return text, False
    if strict:
        raise ReportTooLongError(
            f"The report has {n} tokens; the text encoder takes at most {max_tokens}. Shorten it to the "
            "impression, or allow truncation at a sentence boundary."
        )
    kept = ""
    for end in sentence_ends(text)[:-1]:
        candidate = text[:end].strip()
        if count_tokens(candidate, tokenizer) > max_tokens:
            break
        kept = candidate
    if kept:
        return kept, True
    word_ends = [m.end() for m in re.finditer(r"\S+", text)]
    lo, hi = 0, len(word_ends)  # the largest k whose first k words fit: invariant fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_tokens(text[: word_ends[mid - 1]], tokenizer) <= max_tokens:
            lo = mid
        else:
            hi = mid
    return (text[: word_ends[lo - 1]] if lo else ""), True


def token_lengths(texts: Sequence[str], tokenizer: Any, batch_size: int = 1024) -> list[int]:
    """Token counts (special tokens included) of each text, tokenized in batches."""
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        out.extend(len(ids) for ids in tokenizer(list(texts[i : i + batch_size]), verbose=False)["input_ids"])
    return out


def token_length_report(texts: Iterable[str | None], tokenizer: Any, limit: int = TOKEN_LIMIT) -> dict[str, Any]:
    """How many non-empty texts fit in ``limit`` tokens and how many exceed it (and would be truncated
    at a sentence boundary), with the length distribution."""
    texts = [t for t in texts if t]
    lengths = token_lengths(texts, tokenizer)
    over = sum(1 for n in lengths if n > limit)
    return {
        "texts": len(lengths),
        "limit": limit,
        "over_limit": over,
        "within_limit": len(lengths) - over,
        "max_tokens": max(lengths, default=0),
        "median_tokens": statistics.median(lengths) if lengths else 0,
        "p95_tokens": sorted(lengths)[int(0.95 * (len(lengths) - 1))] if lengths else 0,
    }
