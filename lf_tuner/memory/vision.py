"""Vision-language models in the memory model: what trains, and the vision tower's activations.

LLaMA-Factory 0.9.5 (hparams/finetuning_args.py) freezes the vision tower and the multi-modal projector and trains
the language model by default (`freeze_vision_tower: true`, `freeze_multi_modal_projector: true`,
`freeze_language_model: false`). model/adapter.py and model/model_utils/visual.py decide what each method
trains from those flags:

- full: every parameter outside the frozen parts;
- freeze: the last `freeze_trainable_layers` decoder layers, plus the projector when it is not frozen;
- LoRA: adapters on the language model's linear layers and, when the tower is not frozen, on the tower's
  (the projector never gets adapters: find_all_linear_modules leaves it out).

Images and videos reach the vision tower as patches (model_args.py: image_max_pixels 768*768, video_max_pixels
256*256, video_maxlen 128 frames at video_fps 2). The estimate cannot see the data, so it assumes `images` images
and `videos` videos per sample at those limits (1 and 0 unless told), the largest inputs LLaMA-Factory lets through.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lf_tuner.models import ModelArch, VisionTower


@dataclass(frozen=True)
class VisionSetup:
    """LLaMA-Factory's multimodal arguments (0.9.5 defaults) and the media per sample the estimate assumes."""

    freeze_vision_tower: bool = True
    freeze_multi_modal_projector: bool = True
    freeze_language_model: bool = False
    images: int = 1
    videos: int = 0
    image_max_pixels: int = 768 * 768
    video_max_pixels: int = 256 * 256
    video_maxlen: int = 128


def vision_setup_from_config(cfg: Mapping[str, Any]) -> VisionSetup:
    """The multimodal keys of a LLaMA-Factory config (missing keys take LLaMA-Factory's defaults)."""
    base = VisionSetup()

    def flag(key: str) -> bool:
        return bool(cfg.get(key, getattr(base, key)))

    def number(key: str) -> int:
        value = cfg.get(key)
        return (
            int(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else getattr(base, key)
        )

    return VisionSetup(
        freeze_vision_tower=flag("freeze_vision_tower"),
        freeze_multi_modal_projector=flag("freeze_multi_modal_projector"),
        freeze_language_model=flag("freeze_language_model"),
        image_max_pixels=number("image_max_pixels"),
        video_max_pixels=number("video_max_pixels"),
        video_maxlen=number("video_maxlen"),
    )


def _patches(tower: VisionTower, pixels: int, frames: int = 1) -> int:
    """Vision-encoder patches of one image (or video) at most `pixels` per frame."""
    if tower.image_size and tower.tokens_per_image:  # fixed resolution (Gemma 3's SigLIP at 896 px)
        return frames * (tower.image_size // tower.patch_size) ** 2
    if (
        tower.image_size
    ):  # tiles of image_size px (InternVL, Llama 4), plus a thumbnail when there are several
        tiles = math.ceil(pixels / tower.image_size**2)
        tiles += 1 if tiles > 1 else 0
        return frames * tiles * (tower.image_size // tower.patch_size) ** 2
    # any resolution (Qwen-VL): LLaMA-Factory scales the image down to the pixel limit, then the processor rounds
    # each side to whole merge blocks (smart_resize); counted for a square image at the limit
    block = tower.patch_size * tower.merge_size
    side = max(1, round(math.sqrt(pixels) / block)) * tower.merge_size
    return math.ceil(frames / tower.temporal_patch_size) * side * side


def patches_per_sample(arch: ModelArch, vs: VisionSetup) -> int:
    if arch.vision is None:
        return 0
    tower = arch.vision
    return vs.images * _patches(tower, vs.image_max_pixels) + vs.videos * _patches(
        tower, vs.video_max_pixels, vs.video_maxlen
    )


def frozen_parts(arch: ModelArch, vs: VisionSetup) -> int:
    """Parameters LLaMA-Factory keeps frozen in full tuning: the tower, projector or language model as flagged."""
    frozen = 0
    if vs.freeze_vision_tower:
        frozen += arch.vision_params
    if vs.freeze_multi_modal_projector:
        frozen += arch.projector_params
    if vs.freeze_language_model:
        frozen += arch.language_params
    return frozen


def extra_trainable(arch: ModelArch, vs: VisionSetup, method: str) -> int:
    """Vision parameters trained in full beside the method's own (freeze tuning: an unfrozen projector)."""
    if method == "freeze" and not vs.freeze_multi_modal_projector:
        return arch.projector_params
    return 0


def vision_lora_params(arch: ModelArch, vs: VisionSetup, rank: int, targets: tuple[str, ...]) -> int:
    """LoRA adapters on the vision tower's linear layers: only when it is not frozen."""
    if arch.vision is None or vs.freeze_vision_tower:
        return 0
    return sum(
        rank * (lin.in_features + lin.out_features) * (lin.layers or 1)
        for lin in arch.vision.linears
        if "all" in targets or lin.name in targets
    )


def vision_activation_bytes(arch: ModelArch, vs: VisionSetup, samples: int, checkpointing: bool) -> float:
    """Bytes the vision tower holds at the loss, for `samples` samples of a micro-batch (bf16).

    A frozen tower keeps nothing for backward (no parameter needs a gradient and the pixels do not): its
    forward's working set, one block at a time (hidden state in and out, q/k/v, the attention output, the MLP's
    intermediate and activation: 12e + 4i bytes per patch), is counted as an upper bound, since it comes before
    the language model's peak. A trained tower keeps one hidden state per block under gradient checkpointing
    (2e per patch per block, as transformers checkpoints each vision block), else each block's inputs to
    every operation (about 16e + 4i per patch per block).
    """
    tower = arch.vision
    if tower is None:
        return 0.0
    patches = samples * patches_per_sample(arch, vs)
    e, i = tower.hidden_size, tower.intermediate_size
    working = 12.0 * e + 4.0 * i
    if vs.freeze_vision_tower:
        return patches * working
    if checkpointing:
        return patches * (2.0 * e * tower.depth + working)
    return patches * (16.0 * e + 4.0 * i) * tower.depth
