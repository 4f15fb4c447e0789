"""The rule-based report labeler: mentions, negation with scope, uncertainty, No Finding, and Table V F1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from codixr.metrics import ReportLabeler, label_report, label_reports, report_label_f1
from codixr.metrics.errors import MetricInputError
from codixr.modality import CONDITION_LABELS, NO_FINDING


def stated(text: str) -> dict[str, int]:
    return {k: v for k, v in label_report(text).items() if v is not None}


@pytest.mark.parametrize(
    "text, expected",
    [
        # the cases named in the brief
        ("no pleural effusion", {"Pleural Effusion": 0, NO_FINDING: 1}),
        ("possible pneumonia", {"Pneumonia": -1}),
        ("cardiomegaly", {"Cardiomegaly": 1}),
        ("no pleural effusion or pneumothorax", {"Pleural Effusion": 0, "Pneumothorax": 0, NO_FINDING: 1}),
        ("no effusion. mild cardiomegaly.", {"Pleural Effusion": 0, "Cardiomegaly": 1}),
        ("no acute cardiopulmonary process", {NO_FINDING: 1}),
        # synonyms
        ("The heart is enlarged.", {"Cardiomegaly": 1}),
        ("The cardiac silhouette is mildly enlarged.", {"Cardiomegaly": 1}),
        ("Left basilar atelectatic change.", {"Atelectasis": 1}),
        ("Pulmonary vascular congestion.", {"Edema": 1}),
        ("Widened mediastinum.", {"Enlarged Cardiomediastinum": 1}),
        ("Right upper lobe nodule.", {"Lung Lesion": 1}),
        ("Patchy airspace disease at the right base.", {"Lung Opacity": 1}),
        ("Findings compatible with infection.", {"Pneumonia": 1}),
        # negation scope: lists, post-negation, organ normality
        ("No focal consolidation, pleural effusion, or pneumothorax.",
         {"Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, NO_FINDING: 1}),
        ("Pneumothorax is not seen.", {"Pneumothorax": 0, NO_FINDING: 1}),
        ("The effusion has resolved.", {"Pleural Effusion": 0, NO_FINDING: 1}),
        ("Heart size is normal.", {"Cardiomegaly": 0, NO_FINDING: 1}),
        ("The heart is not enlarged.", {"Cardiomegaly": 0, NO_FINDING: 1}),
        ("Normal cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": 0, NO_FINDING: 1}),
        # scope ends at "but"/"however" and at a new sentence
        ("No pneumothorax but there is a small effusion.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
        ("No pneumothorax; however, small left effusion.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
        ("There is no consolidation and the heart is mildly enlarged.", {"Consolidation": 0, "Cardiomegaly": 1}),
        # uncertainty
        ("Cannot exclude small left pleural effusion.", {"Pleural Effusion": -1}),
        ("Opacity may represent atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
        ("Atelectasis versus pneumonia.", {"Atelectasis": -1, "Pneumonia": -1}),
        ("Questionable small nodule.", {"Lung Lesion": -1}),
        ("Borderline cardiomegaly.", {"Cardiomegaly": -1}),
        ("No evidence of pneumonia, possible atelectasis.", {"Pneumonia": 0, "Atelectasis": -1}),
        ("No suspicious pulmonary nodules.", {"Lung Lesion": 0, NO_FINDING: 1}),
        # not negations / not our labels
        ("No change in small left pleural effusion.", {"Pleural Effusion": 1}),
        ("No pericardial effusion.", {}),
        ("Healed rib fracture. No acute cardiopulmonary disease.", {}),
    ],
)
def test_labels(text, expected):
    assert stated(text) == expected


def test_output_has_every_condition_label_in_order():
    result = label_report("Small right pneumothorax.")
    assert tuple(result) == CONDITION_LABELS
    assert result["Pneumothorax"] == 1 and result[NO_FINDING] is None


def test_mentions_explain_the_decision():
    mentions = ReportLabeler().mentions("No effusion. Possible pneumonia.")
    assert [(m.label, m.status, m.text) for m in mentions] == [
        ("Pleural Effusion", 0, "effusion"), ("Pneumonia", -1, "pneumonia")]


def test_positive_mention_wins_over_negative_and_uncertain():
    assert stated("Possible pneumonia. No pneumonia. Right lower lobe pneumonia.")["Pneumonia"] == 1
    assert stated("Possible pneumonia. No pneumonia.")["Pneumonia"] == -1


def test_label_reports_and_input_errors():
    assert label_reports(["cardiomegaly", "no effusion"])[1]["Pleural Effusion"] == 0
    with pytest.raises(MetricInputError, match="list of reports"):
        label_reports("cardiomegaly")
    with pytest.raises(MetricInputError, match="string"):
        label_report(None)  # type: ignore[arg-type]


def test_report_label_f1_matches_sklearn_on_labeler_output():
    reference = ["Cardiomegaly. Small left pleural effusion.", "No acute cardiopulmonary process.",
                 "Right lower lobe pneumonia.", "Possible pneumonia. No effusion."]
    generated = ["Cardiomegaly. No effusion.", "No acute cardiopulmonary process.",
                 "Right lower lobe pneumonia with small effusion.", "Pneumonia."]
    labels = ("Cardiomegaly", "Pleural Effusion", "Pneumonia", NO_FINDING)
    report = report_label_f1(generated, reference, labels=labels)
    # Labels read by hand (uncertain counts as negative):
    t = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]])
    p = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 0], [0, 0, 1, 0]])
    for j, label in enumerate(labels):
        assert report.f1[label] == pytest.approx(f1_score(t[:, j], p[:, j], zero_division=0.0)), label
    for avg in ("micro", "macro", "weighted"):
        assert report.f1[avg] == pytest.approx(f1_score(t, p, average=avg, zero_division=0.0)), avg
    lenient = report_label_f1(generated, reference, labels=labels, uncertain="positive")
    assert lenient.f1["Pneumonia"] == pytest.approx(1.0)  # reference 4 "possible pneumonia" now positive
    with pytest.raises(MetricInputError, match="generated reports"):
        report_label_f1(generated[:2], reference)
