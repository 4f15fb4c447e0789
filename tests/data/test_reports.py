"""Report text: section extraction, cleaning, sentence splitting and the 77-token fit."""

from __future__ import annotations

import pytest

from codixr.data.reports import (
    clean_report_text,
    extract_findings,
    extract_impression,
    split_sentences,
    token_length_report,
    truncate_to_token_limit,
)
from codixr.errors import InputError, ReportTooLongError
from tests.data.fixtures import REPORT_INLINE, REPORT_KEPT, REPORT_NO_IMPRESSION


def test_impression_of_a_mimic_style_report():
    assert extract_impression(REPORT_KEPT) == "No acute cardiopulmonary process."
    assert extract_findings(REPORT_KEPT) == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Heart size is normal."
    )


def test_inline_header_after_a_sentence_and_placeholders():
    assert extract_impression(REPORT_INLINE) == "Moderate cardiomegaly with mild pulmonary edema, as seen on ___."
    assert extract_findings(REPORT_INLINE) == "Moderate cardiomegaly."


def test_no_impression_gives_none_and_findings_are_not_substituted():
    assert extract_impression(REPORT_NO_IMPRESSION) is None
    assert extract_findings(REPORT_NO_IMPRESSION) == "Lungs are clear. No effusion."
    assert extract_impression("") is None and extract_impression(None) is None
    assert extract_impression("IMPRESSION:\n ___ \n") is None  # only a de-identification gap


@pytest.mark.parametrize("header", ["IMPRESSIONS", "CONCLUSION", "IMPRESSON", "FINDINGS AND IMPRESSION", "Impression"])
def test_impression_header_variants(header):
    report = f"EXAMINATION: Chest.\n{header}: Small left effusion.\nRECOMMENDATION(S): Follow-up."
    assert extract_impression(report) == "Small left effusion."


def test_unknown_lower_case_labels_are_not_headers():
    report = "IMPRESSION: Small left effusion.\nNote: discussed with the team.\nNOTIFICATION: paged."
    assert extract_impression(report) == "Small left effusion. Note: discussed with the team."


def test_last_impression_wins_and_mid_sentence_capitals_do_not_split():
    report = (
        "IMPRESSION: Preliminary read.\nADDENDUM: none\n"
        "IMPRESSION: Compared to the prior study (PA AND LAT): stable small effusion.\n"
    )
    assert extract_impression(report) == "Compared to the prior study (PA AND LAT): stable small effusion."


def test_clean_report_text():
    assert clean_report_text("  Normal chest x-XXXX .\n\n No  ____ acute process. . ") == "Normal chest x-___. No ___ acute process."
    assert clean_report_text("Normal chest x-XXXX.", placeholder=None) == "Normal chest x-XXXX."
    assert clean_report_text(None) == ""


def test_sentences_keep_list_numbers_and_abbreviations():
    text = "1. No effusion. 2. Stable cardiomegaly vs. prior, see Dr. Smith. 3. No pneumothorax"
    assert split_sentences(text) == ["1. No effusion.", "2. Stable cardiomegaly vs. prior, see Dr. Smith.", "3. No pneumothorax"]


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


def test_truncation_cuts_at_the_last_sentence_that_fits(wordpiece_tokenizer):
    sentences = ["No acute cardiopulmonary process.", "Heart size is normal.", "Lungs are clear.", "Small left pleural effusion."]
    text = " ".join(sentences)
    limit = n_tokens(wordpiece_tokenizer, " ".join(sentences[:2])) + 1  # two sentences fit, three do not
    assert n_tokens(wordpiece_tokenizer, " ".join(sentences[:3])) > limit
    out, cut = truncate_to_token_limit(text, wordpiece_tokenizer, max_tokens=limit)
    assert cut and out == " ".join(sentences[:2])
    assert truncate_to_token_limit(text, wordpiece_tokenizer, max_tokens=500) == (text, False)


def test_truncation_falls_back_to_a_word_boundary(wordpiece_tokenizer):
    text = "There is no focal consolidation pleural effusion or pneumothorax and the heart size is normal."
    limit = 8
    out, cut = truncate_to_token_limit(text, wordpiece_tokenizer, max_tokens=limit)
    words = text.split()
    k = len(out.split())
    assert cut and 0 < k < len(words) and out == " ".join(words[:k])
    assert n_tokens(wordpiece_tokenizer, out) <= limit < n_tokens(wordpiece_tokenizer, " ".join(words[: k + 1]))


def test_truncation_refusals(wordpiece_tokenizer):
    with pytest.raises(ReportTooLongError, match="at most 5"):
        truncate_to_token_limit("Heart size is normal. Lungs are clear.", wordpiece_tokenizer, max_tokens=5, strict=True)
    with pytest.raises(InputError):
        truncate_to_token_limit("Lungs are clear.", wordpiece_tokenizer, max_tokens=1)  # [CLS] [SEP] alone are 2


def test_token_length_report(wordpiece_tokenizer):
    texts = ["Lungs are clear.", "Heart size is normal. " * 10, None, ""]
    report = token_length_report(texts, wordpiece_tokenizer, limit=20)
    lengths = [n_tokens(wordpiece_tokenizer, t) for t in texts[:2]]
    assert report["texts"] == 2 and report["max_tokens"] == max(lengths)
    assert (report["over_limit"], report["within_limit"]) == (1, 1)
