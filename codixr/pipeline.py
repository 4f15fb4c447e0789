"""``CoDiXRPipeline``: any non-empty subset of {frontal, lateral, report} in, any other subset out.

Inputs are encoded by the prompt encoders P into one shared space and composed (Sec. III.A, as in
CoDi: a weighted combination of the aligned embeddings). Each requested output is denoised by its
own LDM G_F, G_L or G_R (Sec. III.B); when several outputs are asked for they are denoised in
lock-step and each flow attends, through its QKV layers, to the environment-encoder projections
V(z_t) of the other flows (Sec. III.C), which keeps jointly generated outputs consistent.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from codixr.errors import (
    EmptyInputError,
    InputError,
    ModelPackageError,
    OverlappingModalitiesError,
    ReportTooLongError,
)
from codixr.modality import CONDITION_LABELS, Modality, parse_labels
from codixr.models.conditioning import ConditionAdapter, Conditioning, condition_flow
from codixr.models.text_vae import decode_reports

# The component classes a model package names in model_index.json; diffusers only loads from modules
# that are already imported.
from codixr.models import environment as _environment  # noqa: F401
from codixr.models import prompt_encoder as _prompt_encoder  # noqa: F401
from codixr.models import text_unet as _text_unet  # noqa: F401
from codixr.models import text_vae as _text_vae  # noqa: F401

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "assets" / "codixr-default"


def resolve_model_path(model: str | os.PathLike | None = None) -> str:
    """The model package a command means: `model` when given, else ``$CODIXR_MODEL``, else the bundled default."""
    return str(model or os.environ.get("CODIXR_MODEL") or DEFAULT_MODEL_PATH)
SCHEDULERS = ("dpm++", "ddim", "ddpm")
_SEED_OFFSETS = {Modality.FRONTAL: 0, Modality.LATERAL: 1, Modality.REPORT: 2}


def package_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a model package folder: every JSON file (index, component configs, tokenizer) and every
    safetensors weight file, by relative path and content. Identifies the exact model behind a result."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def flow_seed(seed: int, modality: Modality) -> int:
    """The noise seed of one output flow: distinct per (seed, modality), so that consecutive user seeds never
    share noise between flows (seed 1's frontal is not seed 0's lateral)."""
    return int(np.random.SeedSequence([seed, _SEED_OFFSETS[modality]]).generate_state(1)[0])


_FLOW_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_FLOW_POOLS_LOCK = threading.Lock()


def run_flows(tasks: Sequence[Callable[[], Any]], workers: int | None = None) -> list[Any]:
    """Run independent flow computations (one flow's UNet step, one output's decode) side by side; results in order.

    The flows of one request are separate networks on small tensors: split over the intra-op threads, each of
    their thousands of kernels ends in a wait for every thread, which costs little on an idle machine but
    several times the work when another process holds one of the cores. With ``workers`` > 1 (default: torch's
    intra-op thread count, at most one per task) the tasks run on that many threads instead, each with an equal
    share of the intra-op threads (at least one), and wait for each other once per call. With 1, or a single
    task, they run here, in order. Each task computes exactly what it computes alone: the outputs are those of
    the sequential run, up to the float rounding of kernels run on fewer threads.
    """
    threads = torch.get_num_threads()
    workers = min(len(tasks), threads if workers is None else workers)
    if workers < 2:
        return [task() for task in tasks]
    share = max(threads // workers, 1)
    grad = torch.is_grad_enabled()  # grad mode is per thread: the workers follow the caller's
    resized = []

    def run(task: Callable[[], Any]) -> Any:
        if torch.get_num_threads() != share:
            torch.set_num_threads(share)
            resized.append(True)
        with torch.set_grad_enabled(grad):
            return task()

    key = (os.getpid(), workers)  # a forked child inherits the pool object but not its threads
    with _FLOW_POOLS_LOCK:
        pool = _FLOW_POOLS.get(key)
        if pool is None:
            pool = _FLOW_POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="codixr-flow")
    futures = [pool.submit(run, task) for task in tasks]
    wait(futures)
    if resized:  # torch.set_num_threads also sets the count that threads started later begin with: restore it
        torch.set_num_threads(threads)
    return [f.result() for f in futures]


def denoise_latents(
    flows: dict[Any, torch.nn.Module],
    latents: dict[Any, torch.Tensor],
    conditions: "dict[Any, Conditioning] | torch.Tensor",
    schedulers: dict[Any, SchedulerMixin],
    guidance_scale: "float | dict[Any, float]" = 1.0,
    generators: dict[Any, torch.Generator | None] | None = None,
    environments: dict[Any, torch.nn.Module] | None = None,
    callback: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> dict[Any, torch.Tensor]:
    """The reverse diffusion of one or several flows in lock-step (schedulers already ``set_timesteps``).

    ``conditions`` holds each flow's ``Conditioning`` (``codixr.models.conditioning.condition_flow``) or one
    cross-attention context for all, with the unconditional half first for every flow whose guidance scale is
    above 1 (classifier-free guidance). ``guidance_scale`` is one scale or one per flow. With ``environments``
    (one environment encoder V per flow), every flow's QKV layers attend at each step to the V(z_t) tokens of
    the other flows, computed from the latents before that step (Sec. III.C). Within a step the flows depend
    only on those tokens, so they run side by side (``run_flows``; ``workers=1``: one after the other).
    Returns the final latents per flow.
    """
    names = list(flows)
    if not isinstance(conditions, dict):
        conditions = {m: Conditioning(conditions) for m in names}
    scales = guidance_scale if isinstance(guidance_scale, dict) else {m: guidance_scale for m in names}
    timesteps = schedulers[names[0]].timesteps
    generators = generators or {}
    latents = dict(latents)
    joint = bool(environments) and len(names) > 1

    def environment_tokens(m, latent: torch.Tensor, t) -> torch.Tensor:
        return environments[m](schedulers[m].scale_model_input(latent, t))[0]

    def step(m, i: int, t, environment: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One flow's denoising step; returns its next latent and, when joint, its V tokens for the next step."""
        do_cfg = scales[m] > 1.0
        model_input = schedulers[m].scale_model_input(latents[m], t)
        model_input = torch.cat([model_input] * 2) if do_cfg else model_input
        kwargs = None
        if environment:
            others = torch.cat([environment[o] for o in names if o != m], dim=1)
            kwargs = {"environment": torch.cat([others] * 2) if do_cfg else others}
        eps = flows[m](model_input, t, cross_attention_kwargs=kwargs, **conditions[m].kwargs()).sample
        if do_cfg:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + scales[m] * (eps_cond - eps_uncond)
        latent = schedulers[m].step(eps, t, latents[m], generator=generators.get(m)).prev_sample
        following = environment_tokens(m, latent, timesteps[i + 1]) if joint and i + 1 < len(timesteps) else None
        return latent, following

    environment = {}
    if joint:
        first = run_flows([lambda m=m: environment_tokens(m, latents[m], timesteps[0]) for m in names], workers)
        environment = dict(zip(names, first))
    for i, t in enumerate(timesteps):
        results = run_flows([lambda m=m, env=environment: step(m, i, t, env) for m in names], workers)
        environment = {}
        for m, (latent, following) in zip(names, results):
            latents[m] = latent
            if following is not None:
                environment[m] = following
        if callback is not None:
            callback(i + 1, len(timesteps))
    return latents


@dataclass
class CoDiXRPipelineOutput(BaseOutput):
    """What a ``CoDiXRPipeline`` call returns.

    ``frontal``/``lateral`` are grayscale PIL images (a list for batched calls), ``report`` the
    generated impression(s); each is None when not asked for. ``warnings`` lists what the
    pipeline changed about the request (e.g. a truncated impression), for the user to see.
    """

    frontal: Any = None
    lateral: Any = None
    report: Any = None
    outputs: tuple = ()
    joint: bool = False
    warnings: list = field(default_factory=list)


class CoDiXRPipeline(DiffusionPipeline):
    r"""Any-to-any generation of frontal and lateral chest X-rays and report impressions (CoDi-XR).

    Components (names follow the paper):
        prompt_encoder: P_X and P_R (and the label encoder) into the shared space.
        tokenizer: the report WordPiece tokenizer shared by P_R and the text VAE.
        vae: AutoKL of the X-ray LDMs (one instance serves both views).
        unet_frontal, unet_lateral: the denoising UNets of G_F and G_L.
        text_vae: the Optimus text VAE of G_R.  text_unet: its FCResBlock UNet.
        scheduler: the training noise schedule (DDPM); sampling converts it (DPM-Solver++, DDIM, DDPM).
        environment_{frontal,lateral,report}: environment encoders V (stage 3; optional).
        cross_attention_{frontal,lateral,report}: the QKV layers of each flow (stage 3; optional).
        condition_{frontal,lateral,report}: each flow's ``ConditionAdapter`` (condition tokens, time-embedding
            input, learned null condition, validated guidance scale; optional: without one a flow reads the
            condition as a single token with a zero null, as the first bundled model did).

    ``flow_workers``: how many threads run the flows of one request side by side (``run_flows``); None (the
    default) uses torch's intra-op thread count, 1 runs them one after the other.
    """

    flow_workers: int | None = None

    _optional_components = [
        "environment_frontal", "environment_lateral", "environment_report",
        "cross_attention_frontal", "cross_attention_lateral", "cross_attention_report",
        "condition_frontal", "condition_lateral", "condition_report",
    ]

    def __init__(self, prompt_encoder, tokenizer, vae, unet_frontal, unet_lateral, text_vae, text_unet, scheduler,
                 environment_frontal=None, environment_lateral=None, environment_report=None,
                 cross_attention_frontal=None, cross_attention_lateral=None, cross_attention_report=None,
                 condition_frontal=None, condition_lateral=None, condition_report=None):
        super().__init__()
        self.register_modules(
            prompt_encoder=prompt_encoder, tokenizer=tokenizer, vae=vae, unet_frontal=unet_frontal,
            unet_lateral=unet_lateral, text_vae=text_vae, text_unet=text_unet, scheduler=scheduler,
            environment_frontal=environment_frontal, environment_lateral=environment_lateral,
            environment_report=environment_report, cross_attention_frontal=cross_attention_frontal,
            cross_attention_lateral=cross_attention_lateral, cross_attention_report=cross_attention_report,
            condition_frontal=condition_frontal, condition_lateral=condition_lateral,
            condition_report=condition_report,
        )
        self.attach_cross_modal_attention()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs) -> "CoDiXRPipeline":
        """Load a model package: a local folder, or a Hugging Face Hub id (through huggingface_hub).

        With no argument, loads ``$CODIXR_MODEL`` or the bundled default package
        (``assets/codixr-default``). A local folder never touches the network; a hub id with
        ``HF_HUB_OFFLINE=1`` must already be in the local cache.
        """
        path = resolve_model_path(pretrained_model_name_or_path)
        if "torch_dtype" not in kwargs:
            kwargs.setdefault("dtype", torch.float32)
        # Copy weights into torch-allocated memory rather than memory-mapping the files: CPU kernels may
        # round differently on differently aligned buffers, and seeds must give bit-identical results.
        kwargs.setdefault("disable_mmap", True)
        local = Path(path).expanduser()
        if local.exists():
            if not (local / "model_index.json").is_file():
                raise ModelPackageError(
                    f"{local} is not a CoDiXR model package (no model_index.json). Point to the folder written by "
                    "`python -m training.build_package`, or leave the path empty for the bundled default model."
                )
            return super().from_pretrained(str(local), **kwargs)
        if str(path).startswith((".", "/", "~")) or str(path).count("/") != 1:
            raise ModelPackageError(
                f"Model package {path} was not found. Give a folder that contains model_index.json, or a Hugging "
                "Face Hub id such as 'org/codixr-small'."
            )
        try:
            return super().from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as err:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
            hint = (" HF_HUB_OFFLINE is set and the package is not in the local Hugging Face cache: download it "
                    "once on a connected machine or copy the folder here.") if offline else ""
            raise ModelPackageError(f"Could not load model package {path!r}: {err}.{hint}") from err

    # ------------------------------------------------------------------ helpers: properties
    @property
    def image_size(self) -> int:
        return self.unet_frontal.config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def has_joint_generation(self) -> bool:
        """True when the stage-3 parts (V and QKV for every flow) are present."""
        return all(getattr(self, f"{kind}_{m.value}", None) is not None
                   for kind in ("environment", "cross_attention") for m in Modality)

    def flow(self, modality: Modality) -> torch.nn.Module:
        """The denoising network of a modality's LDM (G_F, G_L or G_R)."""
        return {Modality.FRONTAL: self.unet_frontal, Modality.LATERAL: self.unet_lateral,
                Modality.REPORT: self.text_unet}[modality]

    def condition_adapter(self, modality: Modality) -> ConditionAdapter | None:
        """A flow's ``ConditionAdapter``, or None for a flow that reads the condition as one token."""
        return getattr(self, f"condition_{modality.value}", None)

    def default_guidance_scale(self, modality: Modality) -> float:
        """The guidance scale a flow uses when the caller gives none: its adapter's validated scale, else 2."""
        adapter = self.condition_adapter(modality)
        return float(adapter.config.guidance_scale) if adapter is not None else 2.0

    def attach_cross_modal_attention(self) -> None:
        """Install each flow's QKV layers on its UNet (no-op for flows without stage-3 parts)."""
        for m in Modality:
            qkv = getattr(self, f"cross_attention_{m.value}", None)
            if qkv is not None:
                qkv.attach(self.flow(m))

    # ------------------------------------------------------------------ helpers: inputs
    def _image_tensor(self, image) -> torch.Tensor:
        """One input image (path, bytes, XRay, PIL, ndarray in [0,1]) -> (1, S, S) float tensor in [0,1]."""
        from codixr.io import XRay, read_xray

        size = self.image_size
        if isinstance(image, (str, os.PathLike, bytes)):
            array = read_xray(image, size=size).image
        elif isinstance(image, XRay):
            array = image.image
        elif isinstance(image, PIL.Image.Image):
            mode = image.mode
            array = np.asarray(image.convert("L") if mode not in ("L", "I;16", "I", "F") else image)
            array = array.astype(np.float32) / (65535.0 if mode in ("I;16", "I") else 255.0 if mode == "L" else 1.0)
        elif isinstance(image, (np.ndarray, torch.Tensor)):
            array = np.asarray(image, dtype=np.float32)
            if array.ndim == 3:
                array = array.squeeze(0) if array.shape[0] == 1 else array.mean(axis=-1)
        else:
            raise InputError(f"Cannot use {type(image).__name__} as an X-ray: give a file path, bytes, a PIL image or "
                             "a 2-D array with values in [0, 1].")
        if array.ndim != 2:
            raise InputError(f"An X-ray must be a 2-D grayscale image; got an array of shape {array.shape}.")
        if array.min() < -1e-3 or array.max() > 1 + 1e-3:
            raise InputError("Image arrays must hold values in [0, 1] (use codixr.io.read_xray for raw files).")
        tensor = torch.from_numpy(np.clip(array, 0, 1))
        h, w = tensor.shape
        if h != w:  # zero-pad to a centred square, as the paper's preprocessing does
            side = max(h, w)
            top, left = (side - h) // 2, (side - w) // 2
            tensor = F.pad(tensor, (left, side - w - left, top, side - h - top))
        if tensor.shape[-1] != size:
            tensor = F.interpolate(tensor[None, None], size=(size, size), mode="bilinear", antialias=True,
                                   align_corners=False)[0, 0]
        return tensor[None]

    def tokenize(self, reports: Sequence[str], on_long_report: str = "truncate",
                 warnings: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Tokenise impressions for P_R (at most 77 tokens, [CLS] ... [SEP]).

        Longer impressions are cut at the last sentence boundary that fits, with a warning
        (``on_long_report="truncate"``, the default), or refused (``"error"``).
        """
        from codixr.data.reports import truncate_to_token_limit

        limit = self.prompt_encoder.max_text_tokens
        texts = []
        for text in reports:
            if not isinstance(text, str) or not text.strip():
                raise InputError("A report impression must be non-empty text.")
            cut, truncated = truncate_to_token_limit(text, self.tokenizer, max_tokens=limit)
            if truncated:
                if on_long_report == "error":
                    raise ReportTooLongError(
                        f"The impression is longer than the {limit}-token limit of the report encoder. Shorten it to "
                        "its key sentences (the impression, not the findings section).")
                msg = (f"The impression exceeded the {limit}-token limit and was cut after its last complete "
                       f"sentence that fits ({len(cut.split())} of {len(text.split())} words kept).")
                logger.warning(msg)
                if warnings is not None:
                    warnings.append(msg)
            texts.append(cut)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def labels_to_multi_hot(self, labels: Sequence[Sequence[str]]) -> torch.Tensor:
        """Per-study label lists -> (B, len(CONDITION_LABELS)) multi-hot."""
        out = torch.zeros(len(labels), len(CONDITION_LABELS))
        for i, names in enumerate(labels):
            for name in parse_labels(names):
                out[i, CONDITION_LABELS.index(name)] = 1.0
        return out.to(self.device)

    # ------------------------------------------------------------------ encoders (public, used by findings/metrics)
    @torch.no_grad()
    def encode_images(self, images: Sequence) -> torch.Tensor:
        """P_X pooled embeddings (B, d) of X-rays (either view)."""
        batch = torch.stack([self._image_tensor(im) for im in images]).to(self.device, self.prompt_encoder.dtype)
        return self.prompt_encoder.encode_image(batch).pooled

    @torch.no_grad()
    def encode_reports(self, reports: Sequence[str]) -> torch.Tensor:
        """P_R pooled embeddings (B, d) of impressions (truncated at the token limit)."""
        return self.prompt_encoder.encode_text(**self.tokenize(reports)).pooled

    @torch.no_grad()
    def encode_labels(self, labels: Sequence[Sequence[str]]) -> torch.Tensor:
        """Label-encoder embeddings (B, d) of diagnosis label sets."""
        return self.prompt_encoder.encode_labels(self.labels_to_multi_hot(labels)).pooled

    # ------------------------------------------------------------------ schedulers
    def make_scheduler(self, scheduler: str | SchedulerMixin = "dpm++") -> SchedulerMixin:
        """A sampling scheduler built from the training schedule: "dpm++" (DPM-Solver++ 2M), "ddim" or "ddpm"."""
        if isinstance(scheduler, SchedulerMixin):
            return copy.deepcopy(scheduler)
        # Every field of the training schedule is passed on explicitly (diffusers would otherwise swap in the
        # new class's defaults for fields that were defaults when the schedule was made, but not after loading).
        config = {k: v for k, v in self.scheduler.config.items() if k != "_use_default_values"}
        if scheduler == "dpm++":
            return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
        if scheduler == "ddim":
            return DDIMScheduler.from_config(config)
        if scheduler == "ddpm":
            return DDPMScheduler.from_config(config)
        raise InputError(f"Unknown sampler {scheduler!r}: choose one of {', '.join(SCHEDULERS)}.")

    # ------------------------------------------------------------------ the call
    @staticmethod
    def _as_batch(value, name: str) -> tuple[list | None, bool]:
        if value is None:
            return None, False
        if isinstance(value, (list, tuple)) and not (name == "labels" and value and isinstance(value[0], str)):
            return list(value), True
        return [value], False

    @torch.no_grad()
    def __call__(
        self,
        frontal=None,
        lateral=None,
        report: str | Sequence[str] | None = None,
        labels: Sequence[str] | Sequence[Sequence[str]] | str | None = None,
        outputs: Sequence[Modality | str] | Modality | str = (Modality.REPORT,),
        num_inference_steps: int = 20,
        guidance_scale: float | dict[Modality | str, float] | None = None,
        seed: int | Sequence[int] | None = 0,
        scheduler: str | SchedulerMixin = "dpm++",
        condition_weights: dict[Modality | str, float] | None = None,
        joint: bool | None = None,
        on_long_report: str = "truncate",
        callback: Callable[[int, int], None] | None = None,
    ) -> CoDiXRPipelineOutput:
        r"""Generate the requested outputs from the given inputs.

        Args:
            frontal, lateral: an X-ray (path, bytes, ``XRay``, PIL image or [0,1] array) or a list of them (batch).
            report: an impression or a list of impressions.
            labels: diagnosis labels from ``CONDITION_LABELS`` (a list, or a list of lists for a batch).
            outputs: any non-empty subset of modalities that are not inputs.
            num_inference_steps: sampler steps.
            guidance_scale: classifier-free guidance weight (1 disables guidance): one for every output, one per
                output ({"report": 4.0}), or None for each flow's validated default (``default_guidance_scale``).
            seed: bit-identical results for the same seed on the same machine (None: random). A list gives one
                seed per study of a batch, so that each study's noise is the same as when it is generated alone.
            scheduler: "dpm++", "ddim", "ddpm" or a diffusers scheduler instance.
            condition_weights: weights of each input in the composed condition (default: equal).
            joint: force joint (True) or independent (False) generation of several outputs;
                default joint when the stage-3 parts are present.
            on_long_report: "truncate" (at a sentence boundary, with a warning) or "error".
            callback: called as ``callback(step, total_steps)`` after every denoising step.
        """
        # 1. Check inputs
        inputs = {Modality.FRONTAL: frontal, Modality.LATERAL: lateral, Modality.REPORT: report}
        batches = {m: self._as_batch(v, m.value) for m, v in inputs.items()}
        label_batch, _ = self._as_batch(labels, "labels")
        given = [m for m, (v, _) in batches.items() if v is not None]
        if not given and not label_batch:
            raise EmptyInputError("Nothing to condition on: give a frontal view, a lateral view, an impression, or "
                                  "diagnosis labels.")
        wanted = Modality.parse_many(outputs)
        if not wanted:
            raise InputError("Ask for at least one output: frontal, lateral or report.")
        overlap = [m.value for m in wanted if m in given]
        if overlap:
            raise OverlappingModalitiesError(
                f"{', '.join(overlap)} is given as an input and asked for as an output; untick it as an output "
                "(or remove the input).")
        sizes = {len(v) for v, _ in batches.values() if v is not None} | ({len(label_batch)} if label_batch else set())
        if len(sizes) > 1:
            raise InputError(f"Batched inputs must have the same length; got lengths {sorted(sizes)}.")
        batch_size = sizes.pop()
        if label_batch is not None and len(label_batch) != batch_size:
            label_batch = label_batch * batch_size
        is_batched = any(b for _, b in batches.values()) or (labels is not None and self._as_batch(labels, "labels")[1])
        joint = self.has_joint_generation if joint is None else joint
        if joint and len(wanted) > 1 and not self.has_joint_generation:
            raise InputError("This model package has no cross-modal alignment parts (stage 3), so it cannot generate "
                             "several outputs jointly; pass joint=False to generate them independently.")
        joint = joint and len(wanted) > 1
        warnings: list[str] = []

        # 2. Encode prompts into the shared space and compose them
        embeddings: dict[str, torch.Tensor] = {}
        for m in given:
            if m is Modality.REPORT:
                embeddings[m.value] = self.prompt_encoder.encode_text(
                    **self.tokenize(batches[m][0], on_long_report, warnings)).pooled
            else:
                embeddings[m.value] = self.encode_images(batches[m][0])
        if label_batch:
            embeddings["labels"] = self.encode_labels(label_batch)
        weights = {str(Modality.parse(k).value if k != "labels" else k): float(v)
                   for k, v in (condition_weights or {}).items()}
        total = sum(weights.get(k, 1.0) for k in embeddings)
        cond = sum(weights.get(k, 1.0) * e for k, e in embeddings.items()) / total
        cond = F.normalize(cond, dim=-1)  # (B, d)
        if isinstance(guidance_scale, dict):  # per output; the others keep their validated default
            given = {Modality.parse(k): float(v) for k, v in guidance_scale.items()}
            scales = {m: given.get(m, self.default_guidance_scale(m)) for m in wanted}
        else:
            scales = {m: self.default_guidance_scale(m) if guidance_scale is None else float(guidance_scale)
                      for m in wanted}
        conditions = {m: condition_flow(self.condition_adapter(m), cond, guidance=scales[m] > 1.0) for m in wanted}

        # 3. Prepare timesteps (one scheduler per flow; they step in lock-step)
        schedulers = {}
        for m in wanted:
            schedulers[m] = self.make_scheduler(scheduler)
            schedulers[m].set_timesteps(num_inference_steps, device=self.device)

        # 4. Prepare latents
        if isinstance(seed, (list, tuple)) and len(seed) != batch_size:
            raise InputError(f"Give one seed per study: {len(seed)} seeds for a batch of {batch_size}.")

        def generator(m: Modality):
            if seed is None:
                return None
            if isinstance(seed, (list, tuple)):  # diffusers draws row i of the noise from generator i
                return [torch.Generator("cpu").manual_seed(flow_seed(int(s), m)) for s in seed]
            return torch.Generator("cpu").manual_seed(flow_seed(seed, m))

        generators = {m: generator(m) for m in wanted}
        latents = {}
        for m in wanted:
            if m is Modality.REPORT:
                shape = (batch_size, self.text_unet.config.latent_dim)
            else:
                cfg = self.flow(m).config
                shape = (batch_size, cfg.in_channels, cfg.sample_size, cfg.sample_size)
            latents[m] = randn_tensor(shape, generator=generators[m], device=self.device, dtype=cond.dtype)
            latents[m] = latents[m] * schedulers[m].init_noise_sigma

        # 5. Denoising loop (joint flows attend to each other's V(z_t) through their QKV layers)
        environments = {m: getattr(self, f"environment_{m.value}") for m in wanted} if joint else None
        with self.progress_bar(total=num_inference_steps) as progress:
            def on_step(i: int, n: int) -> None:
                progress.update()
                if callback is not None:
                    callback(i, n)

            latents = denoise_latents({m: self.flow(m) for m in wanted}, latents, conditions, schedulers,
                                      scales, generators, environments, on_step, workers=self.flow_workers)

        # 6. Decode (each output on its own, side by side)
        def decode(m: Modality) -> list:
            if m is Modality.REPORT:
                return decode_reports(self.text_vae, self.tokenizer, latents[m])
            return self.decode_image_latents(latents[m])

        decoded = run_flows([lambda m=m: decode(m) for m in wanted], self.flow_workers)
        result: dict[str, Any] = {m.value: out if is_batched else out[0] for m, out in zip(wanted, decoded)}
        return CoDiXRPipelineOutput(**result, outputs=tuple(m.value for m in wanted), joint=joint, warnings=warnings)

    @torch.no_grad()
    def decode_image_latents(self, latents: torch.Tensor) -> list[PIL.Image.Image]:
        """VAE-decode X-ray latents to 8-bit grayscale PIL images."""
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        arrays = ((decoded[:, 0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        return [PIL.Image.fromarray(a, mode="L") for a in arrays]
