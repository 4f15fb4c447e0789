"""The text VAE's training corpus: impressions plus contiguous sentence spans of the same training reports."""

from __future__ import annotations

from types import SimpleNamespace

from codixr.models.tokenizer import train_report_tokenizer
from training.stage2_text import report_spans, vae_corpus

FINDINGS = "The heart is normal in size. The lungs are clear. No pleural effusion. No pneumothorax."
IMPRESSION = "1. No acute disease. 2. Stable granuloma."


def _tokenizer():
    return train_report_tokenizer([FINDINGS, IMPRESSION] * 4, vocab_size=200, min_frequency=1)


def test_spans_are_contiguous_sentence_runs_each_once():
    spans = report_spans([FINDINGS, FINDINGS], _tokenizer(), max_length=64, max_sentences=2)
    assert spans == ["The heart is normal in size.", "The heart is normal in size. The lungs are clear.",
                     "The lungs are clear.", "The lungs are clear. No pleural effusion.", "No pleural effusion.",
                     "No pleural effusion. No pneumothorax.", "No pneumothorax."]
    # list enumerators do not end a sentence
    assert "1. No acute disease." in report_spans([IMPRESSION], _tokenizer(), 64, 1)


def test_spans_longer_than_the_token_limit_are_left_out():
    tok = _tokenizer()
    limit = len(tok("The heart is normal in size.")["input_ids"])
    spans = report_spans([FINDINGS], tok, max_length=limit, max_sentences=3)
    assert "The heart is normal in size." in spans
    assert all(len(tok(s)["input_ids"]) <= limit for s in spans)
    assert "The heart is normal in size. The lungs are clear." not in spans


def test_corpus_weights_impressions_to_their_share():
    studies = [SimpleNamespace(impression=IMPRESSION, findings_text=FINDINGS),
               SimpleNamespace(impression="No acute cardiopulmonary abnormality.", findings_text=None)]
    plain, n = vae_corpus(studies, _tokenizer(), 64, None)
    assert plain == [IMPRESSION, "No acute cardiopulmonary abnormality."] and n == 0
    texts, n = vae_corpus(studies, _tokenizer(), 64, {"max_sentences": 3, "impression_share": 0.5})
    impressions = len(texts) - n
    assert n > 0 and impressions % 2 == 0
    assert abs(impressions / len(texts) - 0.5) < 0.25
    assert set(texts[impressions:]).isdisjoint({"The heart is normal in size. The lungs are clear. No pleural "
                                                "effusion. No pneumothorax."})  # 4 sentences > max_sentences
