"""Batched, seeded, resumable generation of the samples a setting is evaluated on.

Samples live in ``OUT/samples/<setting>/``: one PNG per generated view (``0003_frontal.png``) and a
``manifest.json`` holding the generation configuration, the generated reports and, per sample, the
item it was generated from, its seed and its batch. Items are generated in fixed batches
``[0, B), [B, 2B), ...`` (B = ``--batch-size``); item ``i`` draws its noise from seed ``seed + i`` whatever
the batch size (the pipeline takes one seed per study). A rerun skips every batch already in the manifest and regenerates a batch whole when
any of its samples is missing, so an interrupted run finishes with exactly the samples of an
uninterrupted one (for the same model, data, ``--n``, ``--batch-size``, ``--seed``, ``--steps``,
guidance and scheduler). A manifest written with another configuration is discarded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from codixr.evaluate.data import EvalItem
from codixr.evaluate.settings import Setting
from codixr.modality import Modality

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GenerationConfig:
    """Everything a generated sample depends on besides its item and index."""

    model: str  # fingerprint of the model package
    steps: int
    guidance_scale: float
    seed: int
    scheduler: str
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Sample:
    """One generated sample: the item it came from, its seed and batch, its image files and report."""

    index: int
    key: str
    seed: int
    batch: tuple[int, int]
    files: dict[str, str]  # view value -> file name in the setting folder
    report: str | None = None
    joint: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["batch"] = list(self.batch)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sample":
        return cls(index=int(d["index"]), key=str(d["key"]), seed=int(d["seed"]), batch=tuple(d["batch"]),
                   files=dict(d.get("files", {})), report=d.get("report"), joint=bool(d.get("joint", False)))


def batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The fixed batches [start, stop) covering items 0..n-1."""
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


class SampleStore:
    """The samples of one setting on disk: ``folder/manifest.json`` plus the PNGs it names."""

    def __init__(self, folder: str | os.PathLike, setting: Setting, config: GenerationConfig):
        self.folder = Path(folder)
        self.setting = setting
        self.config = config
        self.samples: dict[int, Sample] = self._load()

    def _load(self) -> dict[int, Sample]:
        path = self.folder / MANIFEST
        if not path.is_file():
            return {}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if manifest.get("setting") != self.setting.name or manifest.get("config") != self.config.to_dict():
                logger.warning("%s: the cached samples were made with another model or configuration; generating "
                               "them again.", self.setting.name)
                return {}
            samples = {int(k): Sample.from_dict(v) for k, v in manifest.get("samples", {}).items()}
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("%s: unreadable sample manifest %s (%s); generating the samples again.",
                           self.setting.name, path, exc)
            return {}
        return {i: s for i, s in samples.items() if all((self.folder / f).is_file() for f in s.files.values())}

    def save(self) -> None:
        """Write the manifest atomically (a killed run never leaves half a manifest)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {"setting": self.setting.name, "config": self.config.to_dict(),
                    "samples": {str(i): s.to_dict() for i, s in sorted(self.samples.items())}}
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.folder / MANIFEST)

    def done(self, items: list[EvalItem], batch: tuple[int, int]) -> bool:
        """True when every sample of ``batch`` exists for the same items and batch layout."""
        return all(i in self.samples and self.samples[i].key == items[i].key and self.samples[i].batch == batch
                   for i in range(*batch))

    def image(self, index: int, view: Modality) -> np.ndarray:
        """A generated view as a float32 (H, W) array in [0, 1]."""
        with PIL.Image.open(self.folder / self.samples[index].files[view.value]) as img:
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def fit_texts(pipe, texts: list[str]) -> tuple[list[str], int]:
    """Texts cut to the report encoder's token limit at a sentence boundary, as the pipeline would cut them
    (done here once, so that the pipeline does not warn for every long text), and how many were cut."""
    from codixr.data.reports import truncate_to_token_limit

    out, cut = [], 0
    for text in texts:
        fitted, truncated = truncate_to_token_limit(text, pipe.tokenizer, max_tokens=pipe.prompt_encoder.max_text_tokens)
        out.append(fitted)
        cut += truncated
    return out, cut


def pipeline_inputs(pipe, setting: Setting, items: list[EvalItem]) -> tuple[dict[str, Any], int]:
    """The keyword arguments of a batched pipeline call for ``items`` under ``setting``, and how many texts were cut."""
    kwargs: dict[str, Any] = {}
    cut = 0
    for m in setting.inputs:
        if m is Modality.REPORT:
            kwargs[m.value], cut = fit_texts(pipe, [it.text for it in items])
        else:
            kwargs[m.value] = [it.image(m) for it in items]
    if setting.labels:
        kwargs["labels"] = [it.positive_labels for it in items]
    return kwargs, cut


def generate(pipe, setting: Setting, items: list[EvalItem], store: SampleStore, progress: bool = True) -> list[Sample]:
    """Generate (or reuse from ``store``) one sample per item; returns them in item order."""
    config = store.config
    layout = batches(len(items), config.batch_size)
    todo = [b for b in layout if not store.done(items, b)]
    n_done = len(items) - sum(stop - start for start, stop in todo)
    logger.info("%s: %d of %d samples cached, %d to generate", setting.name, n_done, len(items), len(items) - n_done)
    joint = len(setting.outputs) > 1 and pipe.has_joint_generation
    if len(setting.outputs) > 1 and not joint:
        logger.warning("%s: this model package has no cross-modal alignment parts; the outputs are generated "
                       "independently, not jointly.", setting.name)
    n_cut = 0
    with tqdm(total=len(items), initial=n_done, desc=setting.name, unit="sample", disable=not progress) as bar:
        for start, stop in todo:
            chunk = items[start:stop]
            inputs, cut = pipeline_inputs(pipe, setting, chunk)
            n_cut += cut
            result = pipe(**inputs, outputs=setting.outputs,
                          num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
                          seed=[config.seed + i for i in range(start, stop)], scheduler=config.scheduler, joint=joint)
            store.folder.mkdir(parents=True, exist_ok=True)
            for j, item in enumerate(chunk):
                index = start + j
                files = {}
                for view in setting.image_outputs:
                    name = f"{index:04d}_{view.value}.png"
                    getattr(result, view.value)[j].save(store.folder / name)
                    files[view.value] = name
                report = result.report[j] if setting.makes_report else None
                store.samples[index] = Sample(index, item.key, config.seed + index, (start, stop), files, report, joint)
            store.save()
            bar.update(stop - start)
    if n_cut:
        logger.info("%s: %d given texts were cut to the report encoder's token limit at a sentence boundary.",
                    setting.name, n_cut)
    return [store.samples[i] for i in range(len(items))]
