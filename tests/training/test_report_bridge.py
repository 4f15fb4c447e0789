"""G_R's image->impression bridge: which real impressions may stand for a real image, by labels alone."""

from __future__ import annotations

import numpy as np
import torch

from codixr.modality import CONDITION_LABELS, PATHOLOGIES
from training.conditions import ReportConditionSampler, impression_matches


def _labels(**values):
    out = {name: None for name in CONDITION_LABELS}
    out.update({k.replace("_", " "): v for k, v in values.items()})
    return out


RSNA_POSITIVE = _labels(Lung_Opacity=1.0, Pneumonia=1.0)
RSNA_NEGATIVE = _labels(Lung_Opacity=0.0, Pneumonia=0.0)
NORMAL = _labels(**{"No Finding": 1.0, **{p.replace(" ", "_"): 0.0 for p in PATHOLOGIES}})


def test_image_with_findings_takes_impressions_asserting_only_those():
    assert impression_matches(RSNA_POSITIVE, frozenset({"Pneumonia"}), False)
    assert impression_matches(RSNA_POSITIVE, frozenset({"Lung Opacity", "Pneumonia"}), False)
    assert not impression_matches(RSNA_POSITIVE, frozenset({"Pneumonia", "Cardiomegaly"}), False)
    assert not impression_matches(RSNA_POSITIVE, frozenset(), True)  # a normal impression for an opacity image


def test_normal_image_takes_normal_impressions_only():
    assert impression_matches(NORMAL, frozenset(), True)
    assert not impression_matches(NORMAL, frozenset(), False)
    assert not impression_matches(NORMAL, frozenset({"Atelectasis"}), False)


def test_negative_for_opacity_excludes_the_whole_opacity_family():
    assert not impression_matches(RSNA_NEGATIVE, frozenset({"Consolidation"}), False)
    assert not impression_matches(RSNA_NEGATIVE, frozenset({"Lung Opacity"}), False)
    assert impression_matches(RSNA_NEGATIVE, frozenset({"Cardiomegaly"}), False)  # not known to be absent
    assert impression_matches(RSNA_NEGATIVE, frozenset(), True)


class _LabelEncoder:
    def encode_labels(self, multi_hot):
        class Out:
            pooled = torch.nn.functional.normalize(multi_hot + 1e-3, dim=-1)
        return Out()


def test_sampler_draws_each_kind_with_matching_pairs():
    text = torch.randn(3, 11)
    labels = [frozenset({"Pneumonia"}), frozenset(), frozenset({"Cardiomegaly"})]
    normal = np.array([False, True, False])
    images = torch.randn(2, 11)
    matches = [np.array([0]), np.array([1])]  # image 0 -> impression 0 only, image 1 -> impression 1 only
    sampler = ReportConditionSampler(text, labels, normal, images, matches, _LabelEncoder(),
                                     {"text": 0.2, "labels": 0.3, "image": 0.5})
    rows, conds, kinds = sampler.draw(400, torch.Generator().manual_seed(0))
    assert conds.shape == (400, 11) and set(kinds) == {"text", "labels", "image"}
    for row, cond, kind in zip(rows.tolist(), conds, kinds):
        if kind == "text":
            assert torch.equal(cond, text[row])
        elif kind == "image":
            j = 0 if torch.equal(cond, images[0]) else 1
            assert torch.equal(cond, images[j]) and row in matches[j].tolist()
        else:  # the label condition names a finding the impression has (No Finding for the normal one)
            hot = cond > 0.1
            named = {CONDITION_LABELS[i] for i in np.flatnonzero(hot.numpy())}
            assert named == ({"No Finding"} if row == 1 else set(labels[row]))
    assert abs(kinds.count("image") / 400 - 0.5) < 0.1


def test_sampler_asks_for_rare_labels_as_often_as_common_ones_and_balances_images():
    text = torch.randn(41, 11)
    labels = [frozenset({"Pneumonia"})] * 38 + [frozenset({"Pneumothorax"})] * 2 + [frozenset()]
    normal = np.array([False] * 40 + [True])
    images = torch.randn(10, 11)
    matches = [np.array([0])] + [np.array([40])] * 9  # one image with a finding, nine without
    groups = np.array([1] + [0] * 9)
    sampler = ReportConditionSampler(text, labels, normal, images, matches, _LabelEncoder(),
                                     {"labels": 0.5, "image": 0.5}, image_groups=groups)
    rows, conds, kinds = sampler.draw(1200, torch.Generator().manual_seed(1))
    rows = rows.numpy()
    label_rows = rows[[k == "labels" for k in kinds]]
    share = {name: np.mean([labels[r] == frozenset({name}) for r in label_rows]) for name in ("Pneumonia", "Pneumothorax")}
    assert abs(share["Pneumothorax"] - 1 / 3) < 0.06 and abs(share["Pneumonia"] - 1 / 3) < 0.06  # 3 labels named
    image_rows = rows[[k == "image" for k in kinds]]
    assert abs(np.mean(image_rows == 0) - 0.5) < 0.06  # the one image with a finding: half the image draws


def test_group_weights_set_each_groups_share_of_the_image_draws():
    text = torch.randn(41, 11)
    labels = [frozenset({"Pneumonia"})] * 40 + [frozenset()]
    normal = np.array([False] * 40 + [True])
    images = torch.randn(10, 11)
    matches = [np.array([0])] + [np.array([40])] * 9  # one image with a finding, nine without
    groups = np.array([1] + [0] * 9)
    sampler = ReportConditionSampler(text, labels, normal, images, matches, _LabelEncoder(), {"image": 1.0},
                                     image_groups=groups, group_weights={1: 0.25, 0: 0.75})
    rows, _, _ = sampler.draw(2000, torch.Generator().manual_seed(2))
    assert abs(np.mean(rows.numpy() == 0) - 0.25) < 0.04  # a quarter of the draws go to the image with a finding
