"""Re-estimate BatchNorm running statistics a saved classifier lost, then validate it again and rewrite its card.

    python -m training.recalibrate_classifier --classifier assets/classifier [--data ../shared/data]

Why: the first shipped classifier was stored in float16, and the running variance of its first BatchNorm
(``features.norm0``, ~1e5 for inputs in [-1024, 1024]) overflowed to inf in 58 of 64 channels, so every image
read alike. (``XRVClassifier.save_pretrained`` now keeps such tensors in float32.) This script:

1. loads the folder and finds BatchNorm layers whose running mean/variance is not finite;
2. recomputes those channels' statistics from the classifier's own training split (same records, same
   patient-disjoint split as ``training.train_classifier``), in evaluation mode, layer by layer;
3. runs the validation of ``training.train_classifier`` again (AUROC per label and source, thresholds on the
   validation split) and saves the folder with the new numbers in ``config.json`` and the card, noting the repair.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from codixr.findings.classifier import XRVClassifier, xrv_scale
from training.train_classifier import (
    TARGETS, decode_images, load_records, model_card, patient_split, validation_metrics,
)

logger = logging.getLogger("training.recalibrate_classifier")


@torch.no_grad()
def recompute_nonfinite_batchnorm(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> list[str]:
    """Replace non-finite running stats of each BatchNorm by the per-channel mean/variance of its input over
    `images` (uint8, N x S x S), with every earlier layer already repaired. Returns the repaired layer names."""
    model.eval()
    repaired = []
    for name, bn in model.named_modules():
        if not isinstance(bn, torch.nn.BatchNorm2d):
            continue
        bad = ~(torch.isfinite(bn.running_var) & torch.isfinite(bn.running_mean))
        if not bad.any():
            continue
        inputs = []
        handle = bn.register_forward_hook(lambda module, args, out: inputs.append(args[0].double()))
        total = torch.zeros(bn.num_features, dtype=torch.float64)
        square = torch.zeros_like(total)
        count = 0
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.asarray(images[i:i + batch])).float()[:, None]
            inputs.clear()
            model.features2(xrv_scale(x / 255))
            a = inputs[0]
            total += a.sum(dim=(0, 2, 3))
            square += (a * a).sum(dim=(0, 2, 3))
            count += a.shape[0] * a.shape[2] * a.shape[3]
        handle.remove()
        mean = total / count
        var = (square / count - mean * mean) * count / (count - 1)
        bn.running_mean[bad] = mean[bad].float()
        bn.running_var[bad] = var[bad].float()
        logger.info("%s: %d of %d channels re-estimated from %d images (kept channels: stored var %s, "
                    "recomputed %s)", name, int(bad.sum()), bn.num_features, len(images),
                    np.round(bn.running_var[~bad][:3].tolist(), 1), np.round(var[~bad][:3].tolist(), 1))
        repaired.append(name)
    return repaired


@torch.no_grad()
def probabilities(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.asarray(images[i:i + batch])).float()[:, None]
        out.append(torch.sigmoid(model.classifier(model.features2(xrv_scale(x / 255)))).numpy())
    return np.concatenate(out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", type=Path, default=Path("assets/classifier"))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1. The saved classifier and its training settings
    clf = XRVClassifier.from_pretrained(args.classifier)
    card = dict(clf.card)
    train = card["training"]
    records = load_records(args.data)
    train_idx, val_idx = patient_split(records, train["val_fraction"], train["seed"])
    size = train["image_size"]

    # 2. Re-estimate what was lost from the training split
    repaired = recompute_nonfinite_batchnorm(clf.model, decode_images([records[i] for i in train_idx], size))
    if not repaired:
        logger.info("every BatchNorm statistic is finite; nothing to repair")
        return card

    # 3. Validate again, as training.train_classifier does, and save with the new numbers
    val_images = decode_images([records[i] for i in val_idx], size)
    labels = np.array([records[i].labels for i in val_idx], dtype=np.float32)
    metrics = validation_metrics(probabilities(clf.model, val_images), labels, [records[i].source for i in val_idx],
                                 train["threshold_method"], 5)
    clf.model.targets = [t if metrics[t]["assessed"] else "" for t in TARGETS]
    clf.model.pathologies = clf.model.targets
    clf.model.op_threshs = torch.tensor([metrics[t]["threshold"] if metrics[t]["assessed"] else float("nan")
                                         for t in TARGETS])
    aurocs = [m["auroc"] for m in metrics.values() if m["assessed"]]
    card.update(validation=metrics, assessed=[m["name"] for m in metrics.values() if m["assessed"]],
                mean_val_auroc=float(np.mean(aurocs)) if aurocs else None,
                repair=(f"BatchNorm running statistics of {', '.join(repaired)} were lost to float16 overflow in "
                        "the first saved file and were re-estimated from the training split with "
                        "`python -m training.recalibrate_classifier`; the validation numbers are re-measured."))
    card["not_assessed"] = [p for p in card.get("not_assessed", []) if p not in card["assessed"]]
    for key in ("_class_name", "architecture", "densenet", "targets", "op_threshs", "image_size", "input_convention",
                "weights_dtype"):
        card.pop(key, None)
    saved = XRVClassifier(clf.model, card["source"], size)
    saved.save_pretrained(args.classifier, **card)
    text = model_card(card) + f"\n\n## Repair\n\n{card['repair']}\n"
    (args.classifier / "README.md").write_text(text)
    for m in metrics.values():
        logger.info("%-26s AUROC %s", m["name"], "n/a" if m["auroc"] is None else f"{m['auroc']:.3f}")
    return card


if __name__ == "__main__":
    main()
