"""BLEU-1..4 against hand-computed n-gram counts and sacrebleu; ROUGE-L against hand-computed LCS."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from codixr.metrics import bleu_scores, rouge_l, rouge_l_pair, text_metrics
from codixr.metrics.errors import MetricInputError
from codixr.metrics.text import lcs_length


def test_bleu_single_sentence_by_hand():
    # hyp: the cat sat on the mat / ref: the cat is on the mat  (6 tokens each, brevity penalty 1)
    # clipped matches: 1-grams the x2, cat, on, mat = 5/6; 2-grams "the cat", "on the", "the mat" = 3/5;
    # 3-grams "on the mat" = 1/4; 4-grams 0/3.
    scores = bleu_scores(["the cat sat on the mat"], ["the cat is on the mat"])
    assert scores["BLEU-1"] == pytest.approx(5 / 6)
    assert scores["BLEU-2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert scores["BLEU-3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert scores["BLEU-4"] == 0.0  # no smoothing by default


def test_corpus_bleu_with_brevity_penalty_case_and_punctuation_by_hand():
    hyps = ["no acute cardiopulmonary process.", "Mild cardiomegaly."]
    refs = ["No acute cardiopulmonary abnormality.", "Mild cardiomegaly, no effusion."]
    # 13a tokens, lowercased: hyp 5 + 3 = 8, ref 5 + 6 = 11 -> BP = exp(1 - 11/8).
    # 1-grams: no acute cardiopulmonary . (4/5) + mild cardiomegaly . (3/3) = 7/8
    # 2-grams: "no acute" "acute cardiopulmonary" (2/4) + "mild cardiomegaly" (1/2) = 3/6
    # 3-grams: "no acute cardiopulmonary" (1/3) + 0/1 = 1/4;  4-grams: 0/2
    bp = math.exp(1 - 11 / 8)
    p = [7 / 8, 3 / 6, 1 / 4]
    scores = bleu_scores(hyps, refs)
    for n in (1, 2, 3):
        assert scores[f"BLEU-{n}"] == pytest.approx(bp * math.prod(p[:n]) ** (1 / n)), n
    assert scores["BLEU-4"] == 0.0


def test_bleu_n_is_cumulative_over_sacrebleu_bleu4_precisions():
    hyps = ["The heart is mildly enlarged. No pleural effusion.", "Lungs are clear without focal consolidation."]
    refs = ["The heart is enlarged. No pleural effusion or pneumothorax.", "The lungs are clear without consolidation."]
    reference = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a", lowercase=True, smooth_method="none")
    assert all(p > 0 for p in reference.precisions)
    ours = bleu_scores(hyps, refs)
    for n in range(1, 5):
        geo_mean = math.exp(sum(math.log(p / 100) for p in reference.precisions[:n]) / n)
        assert ours[f"BLEU-{n}"] == pytest.approx(reference.bp * geo_mean), n
    assert ours["BLEU-4"] == pytest.approx(reference.score / 100)


def test_bleu_smoothing_is_passed_to_sacrebleu():
    hyps, refs = ["the cat sat on the mat"], ["the cat is on the mat"]
    smoothed = bleu_scores(hyps, refs, smooth_method="exp")
    reference = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a", lowercase=True, smooth_method="exp")
    assert smoothed["BLEU-4"] == pytest.approx(reference.score / 100) and smoothed["BLEU-4"] > 0
    assert smoothed["BLEU-1"] == pytest.approx(5 / 6)  # nothing to smooth below the first zero precision


def test_bleu_with_several_references_per_hypothesis():
    single = bleu_scores(["the cat sat on the mat"], ["the cat is on the mat"])
    multi = bleu_scores(["the cat sat on the mat"], [["the cat is on the mat", "a cat sat on the mat"]])
    assert multi["BLEU-4"] > single["BLEU-4"]
    with pytest.raises(MetricInputError, match="same number"):
        bleu_scores(["a", "b"], [["a"], ["b", "c"]])


def test_bleu_input_errors():
    with pytest.raises(MetricInputError, match="one entry per report"):
        bleu_scores(["a"], ["a", "b"])
    with pytest.raises(MetricInputError, match="not a single string"):
        bleu_scores("a b", "a b")
    with pytest.raises(MetricInputError, match="smooth_method"):
        bleu_scores(["a"], ["a"], smooth_method="laplace")


def test_rouge_l_by_hand():
    assert lcs_length("a b c d e".split(), "b x d e".split()) == 3
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5 -> P = R = F = 5/6
    assert rouge_l_pair("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # "a b c d" vs "a c": LCS 2, P = 2/4, R = 2/2, F1 = 2PR / (P + R) = 2/3; punctuation is ignored.
    assert rouge_l_pair("a, b, c, d!", "a c") == pytest.approx(2 / 3)
    # beta weights recall: F = (1 + b^2) P R / (R + b^2 P) with b = 2 -> 5 * 0.5 / (1 + 2) = 5/6
    assert rouge_l_pair("a b c d", "a c", beta=2.0) == pytest.approx(5 / 6)
    assert rouge_l_pair("", "a c") == 0.0
    assert rouge_l(["a b c d", "x y"], ["a c", "x y"]) == pytest.approx((2 / 3 + 1) / 2)
    assert rouge_l(["a b c d"], [["z", "a c"]]) == pytest.approx(2 / 3)  # best reference counts


def test_text_metrics_bundle():
    scores = text_metrics(["no acute cardiopulmonary process"], ["no acute cardiopulmonary process"])
    assert scores == pytest.approx({"BLEU-1": 1.0, "BLEU-2": 1.0, "BLEU-3": 1.0, "BLEU-4": 1.0, "ROUGE-L": 1.0})
