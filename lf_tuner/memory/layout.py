"""How a run spreads over GPUs: DeepSpeed ZeRO (LLaMA-Factory's `deepspeed:` key) and FSDP (an accelerate config).

One type per layout, read from what users write: a ZeRO kind in either spelling (`z2-offload` as `estimate` takes it,
`z2_offload` as `render` takes it), the name of a config LLaMA-Factory ships (`ds_z3_offload_config.json`), or the
DeepSpeed JSON itself; and the YAML that `accelerate launch --config_file` reads. Everything here is pure except
`load_deepspeed`, which reads the JSON file a config names (the caller passes the directory paths are relative to).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lf_tuner.errors import LfTunerError

# The ZeRO kinds `estimate` models, in the spelling `estimate --deepspeed` shows.
DEEPSPEED_KINDS = ("z0", "z2", "z2-offload", "z3", "z3-offload")
# What a user may type anywhere (estimate, render, run --set deepspeed=...): both spellings.
DEEPSPEED_CHOICES = (*DEEPSPEED_KINDS, "z2_offload", "z3_offload")
# The kinds `render --deepspeed` writes as JSON, equal to LLaMA-Factory 0.9.5's examples/deepspeed/*.json.
RENDERABLE = ("z2", "z2-offload", "z3", "z3-offload")

FSDP_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2")


def _number(value: Any, key: str) -> float | None:
    """A DeepSpeed size: a number, or "auto" (None: transformers fills it from the model)."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise LfTunerError(f'deepspeed: `{key}` must be a number or "auto", got {value!r}')
    try:
        return float(value)
    except ValueError:
        raise LfTunerError(f'deepspeed: `{key}` must be a number or "auto", got {value!r}') from None


def _offloaded(section: Any) -> bool:
    return isinstance(section, Mapping) and str(section.get("device", "none")).lower() not in ("none", "")


@dataclass(frozen=True)
class DeepSpeed:
    """A DeepSpeed ZeRO config, reduced to what decides GPU memory.

    Sizes are element counts as DeepSpeed takes them; None means "auto", which transformers' DeepSpeed integration
    fills from the model (transformers/integrations/deepspeed.py, `HfTrainerDeepSpeedConfig.trainer_config_finalize`:
    reduce_bucket_size = hidden^2). The defaults are DeepSpeed's own
    (deepspeed/runtime/zero/config.py) and equal LLaMA-Factory's example files.
    """

    stage: int
    offload_optimizer: bool = False
    offload_param: bool = False
    reduce_bucket_size: float | None = 5e8
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    max_live_parameters: float = 1e9

    @property
    def offload(self) -> bool:
        return self.offload_optimizer or self.offload_param

    @property
    def kind(self) -> str:
        """z0, z2, z2-offload, z3 or z3-offload (the spelling `estimate` prints)."""
        return f"z{self.stage}" + ("-offload" if self.offload else "")

    @property
    def filename(self) -> str:
        """The name LLaMA-Factory gives this kind's JSON: ds_z3_offload_config.json."""
        return f"ds_z{self.stage}" + ("_offload" if self.offload else "") + "_config.json"

    @classmethod
    def from_kind(cls, name: str) -> DeepSpeed:
        """`z2`, `z2-offload`, `z2_offload`, or a shipped file name (`ds_z2_offload_config.json`), with the values of
        LLaMA-Factory 0.9.5's examples/deepspeed files."""
        kind = parse_kind(name)
        if kind is None:
            raise LfTunerError(
                f"deepspeed: `{name}` is not a ZeRO kind; use one of {', '.join(DEEPSPEED_CHOICES)}, "
                "or the path of a DeepSpeed JSON config"
            )
        stage, offload = int(kind[1]), kind.endswith("offload")
        if stage == 3:  # examples/deepspeed/ds_z3[_offload]_config.json
            return cls(3, offload, offload, reduce_bucket_size=None)
        return cls(
            stage, offload_optimizer=offload
        )  # ds_z0/z2[_offload]_config.json: 5e8 buckets, no overlap

    @classmethod
    def from_json(cls, config: Any) -> DeepSpeed:
        """A DeepSpeed JSON config (already parsed): its `zero_optimization` section."""
        if not isinstance(config, Mapping):
            raise LfTunerError("deepspeed: the DeepSpeed config must be a JSON object")
        zero = config.get("zero_optimization") or {}
        if not isinstance(zero, Mapping):
            raise LfTunerError("deepspeed: `zero_optimization` must be an object")
        stage = zero.get("stage", 0)
        if stage not in (0, 1, 2, 3):
            raise LfTunerError(f"deepspeed: `zero_optimization.stage` must be 0, 1, 2 or 3, got {stage!r}")
        offload_param = _offloaded(zero.get("offload_param")) and stage == 3
        # DeepSpeed's defaults (runtime/zero/config.py): overlap_comm is on by default only for stage 3.
        return cls(
            stage=int(stage),
            offload_optimizer=_offloaded(zero.get("offload_optimizer")) and stage >= 1,
            offload_param=offload_param,
            reduce_bucket_size=_number(zero.get("reduce_bucket_size", 5e8), "reduce_bucket_size"),
            overlap_comm=bool(zero.get("overlap_comm", stage == 3)),
            contiguous_gradients=bool(zero.get("contiguous_gradients", True)),
            max_live_parameters=_number(
                zero.get("stage3_max_live_parameters", 1e9), "stage3_max_live_parameters"
            )
            or 1e9,
        )


def parse_kind(name: str) -> str | None:
    """The canonical kind (`z3-offload`) for either spelling or a shipped file name; None when it is neither."""
    text = Path(str(name)).name.lower().strip()
    if text.startswith("ds_") and text.endswith("_config.json"):
        text = text[3 : -len("_config.json")]
    text = text.replace("_", "-")
    return text if text in DEEPSPEED_KINDS else None


def load_deepspeed(value: Any, base_dir: Path | None = None) -> DeepSpeed | None:
    """The `deepspeed:` value of a LLaMA-Factory config: None, a mapping, a JSON file (read here, relative to
    `base_dir` or the working directory, as LLaMA-Factory resolves it), or a kind / shipped name when no such file
    exists."""
    if value in (None, "", False):
        return None
    if isinstance(value, DeepSpeed):
        return value
    if isinstance(value, Mapping):
        return DeepSpeed.from_json(value)
    if not isinstance(value, str):
        raise LfTunerError(
            "deepspeed: expected the path of a DeepSpeed JSON config, a ZeRO kind, or a mapping"
        )
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LfTunerError(f"deepspeed: cannot read {value} as JSON ({exc})") from None
        return DeepSpeed.from_json(raw)
    if parse_kind(value) is None:
        raise LfTunerError(
            f"deepspeed: {value} does not exist; pass the path of a DeepSpeed JSON config "
            "(`lf-tuner render --deepspeed z3` writes one) or a kind (z2, z3-offload, ...)"
        )
    return DeepSpeed.from_kind(value)


@dataclass(frozen=True)
class Fsdp:
    """FSDP as `accelerate launch --config_file` sets it up (accelerate/utils/dataclasses.py,
    FullyShardedDataParallelPlugin.__post_init__, lines 1774-1820 in accelerate 1.11).

    `strategy` is FSDP1's sharding strategy; FSDP2 has only `reshard_after_forward`, true behaving as FULL_SHARD
    (parameters freed after each layer's forward) and false as SHARD_GRAD_OP.
    """

    version: int = 1
    strategy: str = "FULL_SHARD"
    offload_params: bool = False
    processes: int = 1  # num_processes: GPUs in all nodes
    machines: int = 1  # num_machines

    @property
    def shards_params(self) -> bool:
        return self.strategy != "NO_SHARD"

    @property
    def reshards_after_forward(self) -> bool:
        return self.strategy in ("FULL_SHARD", "HYBRID_SHARD")

    @property
    def hybrid(self) -> bool:
        return self.strategy.startswith("HYBRID")

    @property
    def name(self) -> str:
        label = f"FSDP{'2' if self.version == 2 else ''} {self.strategy.lower().replace('_', '-')}"
        return label + (" + CPU offload" if self.offload_params else "")


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _strategy(fsdp: Mapping[str, Any], version: int) -> str:
    reshard = fsdp.get("fsdp_reshard_after_forward")
    if version == 2:
        return "FULL_SHARD" if reshard is None or _flag(reshard) else "SHARD_GRAD_OP"
    raw = fsdp.get("fsdp_sharding_strategy", reshard if isinstance(reshard, str | int) else "FULL_SHARD")
    text = str(raw).strip().upper()
    if text.isdigit() and 1 <= int(text) <= len(FSDP_STRATEGIES):  # accelerate also takes 1..5
        return FSDP_STRATEGIES[int(text) - 1]
    if text not in FSDP_STRATEGIES:
        raise LfTunerError(
            f"accelerate config: fsdp_sharding_strategy `{raw}` is not one of {', '.join(FSDP_STRATEGIES)}"
        )
    return text


def fsdp_from_accelerate(config: Mapping[str, Any]) -> Fsdp | None:
    """The FSDP layout of an accelerate config (examples/accelerate/fsdp*_config.yaml); None for plain data
    parallelism (MULTI_GPU, NO). DeepSpeed through accelerate is refused: LLaMA-Factory sets it with `deepspeed:`."""
    kind = str(config.get("distributed_type", "NO")).upper()
    processes = int(config.get("num_processes", 1) or 1)
    machines = int(config.get("num_machines", 1) or 1)
    if processes < 1 or machines < 1:
        raise LfTunerError("accelerate config: num_processes and num_machines must be at least 1")
    if kind == "DEEPSPEED":
        raise LfTunerError(
            "accelerate config: distributed_type DEEPSPEED is set in the training config with LLaMA-Factory; "
            "put `deepspeed: ds_z3_config.json` there instead"
        )
    if kind != "FSDP":
        return None
    fsdp = config.get("fsdp_config") or {}
    if not isinstance(fsdp, Mapping):
        raise LfTunerError("accelerate config: fsdp_config must be a mapping")
    version = int(fsdp.get("fsdp_version", 1) or 1)
    if version not in (1, 2):
        raise LfTunerError(f"accelerate config: fsdp_version must be 1 or 2, got {version}")
    return Fsdp(
        version=version,
        strategy=_strategy(fsdp, version),
        offload_params=_flag(fsdp.get("fsdp_offload_params", False)),
        processes=processes,
        machines=machines,
    )


def fsdp_from_training_args(fsdp: Any, fsdp_config: Any = None) -> Fsdp | None:
    """FSDP set in the training config itself (HF TrainingArguments `fsdp: [full_shard, auto_wrap]` and
    `fsdp_config: {version: 2}`, transformers/trainer_utils.py FSDPOption, training_args.py:2809), as
    LLaMA-Factory's examples/extras/fp8/llama3_fp8_fsdp_sft.yaml does."""
    if fsdp in (None, "", False, []):
        return None
    options = fsdp.split() if isinstance(fsdp, str) else [str(o) for o in fsdp]
    options = [o.strip().lower() for o in options]
    strategy = next((o.upper() for o in options if o.upper() in FSDP_STRATEGIES), "FULL_SHARD")
    version = int((fsdp_config or {}).get("version", 1) or 1) if isinstance(fsdp_config, Mapping) else 1
    return Fsdp(version=version, strategy=strategy, offload_params="offload" in options)
