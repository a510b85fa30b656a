"""Check a `llamafactory-cli train` config before anything loads.

Two layers: `validate_config` checks keys, types, choices and LLaMA-Factory's cross-field rules
against the shipped schema (fast, no llamafactory); `validate_with_llamafactory` asks
LLaMA-Factory's own `get_train_args` in a subprocess with no GPU visible, judging the config as
it will run on the GPU machine (`use_cpu: true` on the checked copy, `deepspeed` removed and its
JSON checked apart, a scratch `output_dir`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lf_tuner.config.files import TrainConfig
from lf_tuner.config.schema import FieldSpec, Schema, load_schema
from lf_tuner.errors import LfTunerError, Problem, did_you_mean
from lf_tuner.memory import DeepSpeed, load_deepspeed
from lf_tuner.models import ModelArch

# --------------------------------------------------------------------------- types and choices


# the schema's kind of a YAML value (bool before int: a bool is an int to isinstance)
_KINDS: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "bool"),
    (int, "int"),
    (float, "float"),
    (str, "str"),
    (dict, "dict"),
    (list, "list"),
)


def _kind_of(value: Any) -> str:
    return next((kind for cls, kind in _KINDS if isinstance(value, cls)), type(value).__name__)


def _type_ok(spec: FieldSpec, value: Any) -> bool:
    kind = _kind_of(value)
    if kind in spec.kinds:
        return True
    # an int where a float is expected is fine (`num_train_epochs: 3`); a list is fine where
    # LLaMA-Factory splits comma strings (it passes lists through)
    return (kind == "int" and "float" in spec.kinds) or (kind == "list" and spec.name in _SPLIT_KEYS)


_SPLIT_KEYS = frozenset(
    {
        "dataset",
        "eval_dataset",
        "lora_target",
        "additional_target",
        "adapter_name_or_path",
        "freeze_trainable_modules",
        "freeze_extra_modules",
        "interleave_probs",
    }
)


def _check_value(key: str, spec: FieldSpec, value: Any) -> Problem | None:
    if not _type_ok(spec, value):
        shown = json.dumps(value) if not isinstance(value, str) else f'"{value}"'
        return Problem(key, f"{shown} is a {_kind_of(value)}, expected {spec.describe_type()}")
    if spec.choices is not None and value is not None and value not in spec.choices:
        options = ", ".join(str(c) for c in spec.choices)
        hint = did_you_mean(str(value), [str(c) for c in spec.choices])
        return Problem(key, f"`{value}` is not allowed;{hint} use one of: {options}")
    if isinstance(value, float) and not math.isfinite(value):
        return Problem(key, f"{value} is not a finite number")
    return None


_POSITIVE = (
    "learning_rate",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "cutoff_len",
    "num_train_epochs",
    "lora_rank",
)
_UNIT_INTERVAL = ("lora_dropout", "warmup_ratio")


def _ranges(cfg: Mapping[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    for key in _POSITIVE:
        value = cfg.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            out.append(Problem(key, f"{value} must be greater than 0"))
    for key in _UNIT_INTERVAL:
        value = cfg.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and not 0 <= value < 1:
            out.append(Problem(key, f"{value} must be in [0, 1)"))
    val_size = cfg.get("val_size")
    if isinstance(val_size, float) and not 0 <= val_size < 1:
        out.append(
            Problem("val_size", f"{val_size} must be a fraction in [0, 1) or a whole number of samples")
        )
    return out


# --------------------------------------------------------------------------- cross-field rules


def _deepspeed_stage(
    cfg: Mapping[str, Any], base_dir: Path | None, ds_config: Mapping[str, Any] | None
) -> int | None:
    """The ZeRO stage the config runs with (memory.DeepSpeed, the one reader); None when there is none or it
    cannot be read (validate_deepspeed_file / validate_deepspeed_dict say why)."""
    try:
        ds = (
            DeepSpeed.from_json(ds_config)
            if ds_config is not None
            else load_deepspeed(cfg.get("deepspeed"), base_dir)
        )
    except LfTunerError:
        return None
    return None if ds is None else ds.stage


_UNSET: Any = object()  # "not given": resolve the model from the config


@dataclass(frozen=True)
class Context:
    """What a rule looks at: the config, its DeepSpeed ZeRO stage, and the model when it resolves."""

    cfg: Mapping[str, Any]
    zero_stage: int | None = None
    arch: ModelArch | None = None

    @classmethod
    def of(
        cls,
        cfg: Mapping[str, Any],
        *,
        base_dir: Path | None = None,
        deepspeed: Mapping[str, Any] | None = None,
        arch: ModelArch | None = _UNSET,
    ) -> Context:
        """The context `validate_config` gives the rules (see there for the arguments)."""
        zero_stage = _deepspeed_stage(cfg, base_dir, deepspeed)
        return cls(cfg, zero_stage, _model_of(cfg) if arch is _UNSET else arch)

    def get(self, key: str, default: Any = None) -> Any:
        return self.cfg.get(key, default)

    @property
    def stage(self) -> Any:
        return self.get("stage", "sft")

    @property
    def ftype(self) -> Any:
        return self.get("finetuning_type", "lora")

    @property
    def do_train(self) -> bool:
        return bool(self.get("do_train", False))

    @property
    def val_size(self) -> float:
        value = self.get("val_size", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def has_eval_data(self) -> bool:
        return self.get("eval_dataset") is not None or self.val_size >= 1e-6


Rule = Callable[[Context], list[Problem]]

# Each rule is one check LLaMA-Factory 0.9.5 (hparams/parser.py, model/, data/) or HF TrainingArguments
# makes before or while training starts; tests/test_validate.py has a row for each.


def required_keys(c: Context) -> list[Problem]:
    out = []
    if not c.get("model_name_or_path"):
        out.append(Problem("model_name_or_path", "missing; set it to a Hub id or a local model directory"))
    if c.do_train and not c.get("dataset"):
        out.append(Problem("dataset", "missing; training needs a dataset name from dataset_info.json"))
    if not c.get("output_dir"):
        out.append(
            Problem("output_dir", "missing; set a fresh directory, e.g. saves/<model>/<method>/<name>")
        )
    return out


def one_precision(c: Context) -> list[Problem]:
    if c.get("bf16") and c.get("fp16"):
        return [Problem("fp16", "`bf16` and `fp16` are both true; keep one (bf16 on Ampere or newer)")]
    return []


def sft_only_keys(c: Context) -> list[Problem]:
    if c.stage == "sft":
        return []
    return [
        Problem(key, f"only valid with `stage: sft` (this config has stage {c.stage})")
        for key in ("predict_with_generate", "neat_packing", "train_on_prompt", "mask_history")
        if c.get(key)
    ]


def predict_needs_generate(c: Context) -> list[Problem]:
    if c.stage == "sft" and c.get("do_predict") and not c.get("predict_with_generate"):
        return [Problem("do_predict", "needs `predict_with_generate: true` to save predictions")]
    return []


def stage_limits(c: Context) -> list[Problem]:
    out = []
    if c.stage in ("rm", "ppo") and c.get("load_best_model_at_end"):
        out.append(Problem("load_best_model_at_end", f"not supported by stage {c.stage}; remove it"))
    if c.stage == "ppo" and not c.do_train:
        out.append(Problem("do_train", "PPO does not support evaluation only; set `do_train: true`"))
    return out


def eval_data(c: Context) -> list[Problem]:
    out = []
    wants_eval = c.get("do_eval") or c.get("do_predict") or c.get("predict_with_generate")
    if wants_eval and not c.has_eval_data:
        out.append(
            Problem(
                "val_size",
                "evaluation is on but there is no eval data; set `val_size: 0.1` or `eval_dataset`",
            )
        )
    if c.val_size > 1e-6 and c.get("eval_dataset") is not None:
        out.append(Problem("val_size", "cannot be set together with `eval_dataset`; keep one"))
    if c.val_size > 1e-6 and c.get("dataset") is None:
        out.append(Problem("val_size", "needs a `dataset` to split"))
    if c.get("eval_strategy", "no") != "no" and not c.has_eval_data:
        out.append(
            Problem(
                "eval_strategy",
                "evaluation is on but there is no eval data; set `val_size` or `eval_dataset`",
            )
        )
    return out


def lora_only(c: Context) -> list[Problem]:
    out = []
    if c.get("quantization_bit") is not None and c.ftype not in ("lora", "oft"):
        out.append(
            Problem(
                "quantization_bit",
                f"quantization needs `finetuning_type: lora` (it is {c.ftype}); use --method qlora",
            )
        )
    if c.get("adapter_name_or_path") and c.ftype not in ("lora", "oft"):
        out.append(Problem("adapter_name_or_path", "adapters are only valid for the LoRA method"))
    for key in ("use_dora", "use_rslora", "pissa_init", "loraplus_lr_ratio"):
        if c.get(key) and c.ftype != "lora":
            out.append(Problem(key, f"only valid for LoRA training (finetuning_type is {c.ftype})"))
    return out


# quantization_method -> the quantization_bit values it accepts on the fly
# (LLaMA-Factory 0.9.5 model/model_utils/quantization.py configure_quantization)
QUANTIZATION_BITS: dict[str, tuple[int, ...]] = {"bnb": (4, 8), "hqq": (1, 2, 3, 4, 5, 6, 8), "eetq": (8,)}


def quantization(c: Context) -> list[Problem]:
    bits = c.get("quantization_bit")
    method = c.get("quantization_method", "bnb")
    if bits is None or isinstance(bits, bool) or not isinstance(bits, int) or not isinstance(method, str):
        return []
    allowed = QUANTIZATION_BITS.get(method)
    if allowed is None:
        return [
            Problem(
                "quantization_method",
                f"`{method}` does not quantize on the fly (it loads a model already quantized with it); "
                f"use {', '.join(QUANTIZATION_BITS)} with quantization_bit, or remove quantization_bit",
            )
        ]
    if bits not in allowed:
        values = " or ".join(str(b) for b in allowed)
        return [
            Problem(
                "quantization_bit", f"{bits} bits is not supported by {method} quantization; use {values}"
            )
        ]
    if c.zero_stage == 3 and method != "bnb":
        return [Problem("quantization_method", f"{method} is incompatible with DeepSpeed ZeRO-3; use bnb")]
    if c.zero_stage == 3 and bits != 4:
        return [Problem("quantization_bit", "with DeepSpeed ZeRO-3, bitsandbytes takes 4 bits only")]
    return []


def training_only_keys(c: Context) -> list[Problem]:
    out = []
    if c.do_train and c.get("quantization_device_map") == "auto":
        out.append(Problem("quantization_device_map", "`auto` cannot be used in training; remove it"))
    if c.get("infer_backend", "huggingface") != "huggingface":
        out.append(Problem("infer_backend", "vLLM/SGLang backends are for inference only; remove it"))
    return out


def streaming(c: Context) -> list[Problem]:
    out = []
    if c.get("streaming") and c.get("max_steps", -1) in (-1, None):
        out.append(Problem("max_steps", "streaming needs `max_steps`"))
    if c.get("streaming") and c.get("max_samples") is not None:
        out.append(Problem("max_samples", "incompatible with `streaming`"))
    return out


def exclusive_keys(c: Context) -> list[Problem]:
    out = []
    if c.get("mask_history") and c.get("train_on_prompt"):
        out.append(Problem("mask_history", "incompatible with `train_on_prompt`; keep one"))
    if c.get("fp8") and c.get("quantization_bit") is not None:
        out.append(Problem("fp8", "FP8 training is not compatible with quantization; disable one"))
    if c.get("predict_with_generate") and c.get("compute_accuracy"):
        out.append(Problem("compute_accuracy", "cannot be used together with `predict_with_generate`"))
    return out


def optimizers(c: Context) -> list[Problem]:
    out = []
    chosen = [k for k in ("use_galore", "use_apollo", "use_badam") if c.get(k)]
    if len(chosen) > 1:
        out.append(Problem(chosen[1], f"cannot be used together with `{chosen[0]}`"))
    if chosen and c.ftype == "lora":
        out.append(Problem(chosen[0], "cannot be used with LoRA; use `finetuning_type: full`"))
    if c.get("deepspeed") and (c.get("use_galore") or c.get("use_apollo")):
        out.append(Problem("deepspeed", "GaLore and APOLLO are incompatible with DeepSpeed"))
    return out


_ZERO3_INCOMPATIBLE = (
    ("predict_with_generate", "`predict_with_generate`"),
    ("pure_bf16", "`pure_bf16`"),
    ("use_unsloth", "Unsloth"),
    ("use_kt", "KTransformers"),
    ("pissa_init", "PiSSA initialisation"),
)


def zero3(c: Context) -> list[Problem]:
    if c.zero_stage != 3:
        return []
    return [
        Problem(key, f"{what} is incompatible with DeepSpeed ZeRO-3")
        for key, what in _ZERO3_INCOMPATIBLE
        if c.get(key)
    ]


def best_model(c: Context) -> list[Problem]:
    """HF TrainingArguments' checks for load_best_model_at_end."""
    if not c.get("load_best_model_at_end"):
        return []
    eval_strategy, save_strategy = c.get("eval_strategy", "no"), c.get("save_strategy", "steps")
    if eval_strategy != save_strategy:
        return [
            Problem(
                "load_best_model_at_end",
                f"needs the same eval and save strategy (eval_strategy {eval_strategy}, save_strategy {save_strategy})",
            )
        ]
    if eval_strategy == "steps":
        save_steps, eval_steps = c.get("save_steps", 500), c.get("eval_steps") or c.get("logging_steps", 500)
        if isinstance(save_steps, int) and isinstance(eval_steps, int) and save_steps % eval_steps:
            return [Problem("save_steps", f"{save_steps} must be a multiple of eval_steps {eval_steps}")]
    return []


def early_stopping(c: Context) -> list[Problem]:
    if c.get("early_stopping_steps") is not None and not c.get("load_best_model_at_end"):
        return [
            Problem(
                "early_stopping_steps", "needs `load_best_model_at_end: true` and `metric_for_best_model`"
            )
        ]
    return []


def template_known(c: Context) -> list[Problem]:
    """LLaMA-Factory looks the template up only when it loads the data (data/template.py)."""
    from lf_tuner.chat import template_names

    name = c.get("template")
    if not isinstance(name, str) or name in template_names():
        return []
    hint = did_you_mean(name, template_names()) or " `lf-tuner cutoff --list-templates` lists them"
    return [
        Problem(
            "template",
            f"`{name}` is not a LLaMA-Factory {load_schema().llamafactory_version} template;{hint}",
        )
    ]


# model types whose module names (ModelArch.linears) tests/test_validate.py checks against transformers;
# mixture-of-experts and multimodal models have other (or more) module names, and are not checked
LORA_NAMES_CHECKED = frozenset(
    {"llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text", "phi3", "glm"}
)


def lora_target_modules(c: Context) -> list[Problem]:
    """PEFT fails when a lora_target names no module of the model (checked when the model resolves)."""
    arch, target = c.arch, c.get("lora_target", "all")
    if c.ftype != "lora" or arch is None or arch.model_type not in LORA_NAMES_CHECKED or arch.is_moe:
        return []
    names = target if isinstance(target, list) else str(target).split(",")
    known = [lin.name for lin in arch.linears()] + ["lm_head", "embed_tokens"]
    out = []
    for name in (str(n).strip() for n in names):
        if name and name != "all" and name.rsplit(".", 1)[-1] not in known:
            modules = ", ".join(lin.name for lin in arch.linears())
            out.append(
                Problem(
                    "lora_target", f"`{name}` is not a module of {arch.name}; use `all` or some of: {modules}"
                )
            )
    return out


RULES: tuple[Rule, ...] = (
    required_keys,
    one_precision,
    sft_only_keys,
    predict_needs_generate,
    stage_limits,
    eval_data,
    lora_only,
    quantization,
    training_only_keys,
    streaming,
    exclusive_keys,
    optimizers,
    zero3,
    best_model,
    early_stopping,
    template_known,
    lora_target_modules,
)


def _model_of(cfg: Mapping[str, Any]) -> ModelArch | None:
    """The model's architecture when `model_name_or_path` resolves (catalog or local config.json), else None."""
    from lf_tuner.models import resolve_model

    model = cfg.get("model_name_or_path")
    if not isinstance(model, str) or not model:
        return None
    try:
        return resolve_model(model)
    except LfTunerError:
        return None


def validate_config(
    cfg: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    schema: Schema | None = None,
    deepspeed: Mapping[str, Any] | None = None,
    arch: ModelArch | None = _UNSET,
) -> list[Problem]:
    """Every problem the shipped schema and the rules can see: unknown keys, types, choices, ranges, and
    each rule in RULES. Nothing the config points at is opened but its DeepSpeed JSON (see `check_files`).

    `deepspeed`: the DeepSpeed JSON that the config's `deepspeed` path will hold (when it is not written yet);
    otherwise a `deepspeed` path is read relative to `base_dir`. `arch`: the model, when the caller has it
    (None: unknown); by default `model_name_or_path` is resolved (catalog or local config.json).
    """
    schema = schema or load_schema()
    problems: list[Problem] = []
    if not isinstance(cfg, Mapping):
        return [Problem("config", "expected a mapping of LLaMA-Factory keys to values")]
    for key, value in cfg.items():
        if not isinstance(key, str) or key not in schema:
            hint = did_you_mean(str(key), schema.keys()) or " see `llamafactory-cli train -h` for the keys"
            problems.append(
                Problem(str(key), f"unknown LLaMA-Factory {schema.llamafactory_version} key;{hint}")
            )
            continue
        problem = _check_value(key, schema[key], value)
        if problem is not None:
            problems.append(problem)
    problems.extend(_ranges(cfg))
    context = Context.of(cfg, base_dir=base_dir, deepspeed=deepspeed, arch=arch)
    for rule in RULES:
        problems.extend(rule(context))
    if deepspeed is not None:
        problems.extend(validate_deepspeed_dict(deepspeed))
    elif isinstance(cfg.get("deepspeed"), str):
        problems.extend(validate_deepspeed_file(cfg["deepspeed"], base_dir))
    return _dedupe(problems)


# --------------------------------------------------------------------------- what the config points at

_REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


def _dataset_names(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    for key in ("dataset", "eval_dataset"):
        value = cfg.get(key)
        items = value if isinstance(value, list) else str(value).split(",") if value else []
        names.extend((key, str(item).strip()) for item in items if str(item).strip())
    return names


def check_files(cfg: Mapping[str, Any], *, base_dir: Path | None = None) -> list[Problem]:
    """What LLaMA-Factory fails on when it loads the data (data/parser.py, data/loader.py): each dataset
    registered in `{dataset_dir}/dataset_info.json`, and each local data file there. `ONLINE` and `REMOTE:`
    dataset dirs and hub entries are not looked up. Relative paths are read from `base_dir` (default: the
    working directory), as LLaMA-Factory reads them from where it starts."""
    names = _dataset_names(cfg)
    dataset_dir = str(cfg.get("dataset_dir", "data"))
    if not names or dataset_dir == "ONLINE" or dataset_dir.startswith("REMOTE:"):
        return []
    directory = Path(dataset_dir).expanduser()
    directory = directory if directory.is_absolute() else (base_dir or Path.cwd()) / directory
    info_path = directory / "dataset_info.json"
    if not info_path.is_file():
        return [
            Problem(
                "dataset_dir",
                f"{info_path} does not exist; register your data there (see `lf-tuner render`)",
            )
        ]
    from lf_tuner.data import read_dataset_info  # data loads the chat templates: only when there is data

    try:
        info = read_dataset_info(directory)
    except LfTunerError as exc:
        return [Problem("dataset_dir", exc.message)]
    problems: list[Problem] = []
    for key, name in names:
        entry = info.get(name)
        if entry is None:
            hint = did_you_mean(name, info) or " add it there"
            problems.append(Problem(key, f"`{name}` is not in {info_path};{hint}"))
        elif not isinstance(entry, dict):
            problems.append(
                Problem(key, f"`{name}` in {info_path} must be a mapping with file_name or hf_hub_url")
            )
        elif not any(entry.get(k) for k in _REMOTE_KEYS):
            file_name = entry.get("file_name")
            if not file_name:
                problems.append(
                    Problem(key, f"`{name}` in {info_path} has no file_name; add the data file's path")
                )
            elif not (directory / str(file_name)).exists():
                problems.append(
                    Problem(key, f"`{name}` points at {directory / str(file_name)}, which does not exist")
                )
    return problems


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


# --------------------------------------------------------------------------- DeepSpeed JSON


def validate_deepspeed_file(path_text: str, base_dir: Path | None = None) -> list[Problem]:
    path = Path(path_text)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        return [
            Problem(
                "deepspeed", f"{path_text} does not exist; write one with `lf-tuner render --deepspeed z3`"
            )
        ]
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [Problem("deepspeed", f"{path_text} is not valid JSON ({exc})")]
    return validate_deepspeed_dict(raw)


def validate_deepspeed_dict(raw: Any) -> list[Problem]:
    if not isinstance(raw, dict):
        return [Problem("deepspeed", "the DeepSpeed config must be a JSON object")]
    out: list[Problem] = []
    zero = raw.get("zero_optimization")
    if not isinstance(zero, dict) or zero.get("stage") not in (0, 1, 2, 3):
        out.append(Problem("deepspeed", "`zero_optimization.stage` must be 0, 1, 2 or 3"))
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        if key in raw and raw[key] != "auto":
            out.append(Problem("deepspeed", f'`{key}` should be "auto" so the Trainer\'s values are used'))
    if isinstance(zero, dict):
        for part in ("offload_optimizer", "offload_param"):
            device = zero.get(part, {}).get("device") if isinstance(zero.get(part), dict) else None
            if device not in (None, "cpu", "nvme", "none"):
                out.append(
                    Problem("deepspeed", f"`zero_optimization.{part}.device` must be cpu, nvme or none")
                )
        if "offload_param" in zero and zero.get("stage") != 3:
            out.append(Problem("deepspeed", "`offload_param` needs ZeRO stage 3"))
    return out


# --------------------------------------------------------------------------- LLaMA-Factory's parser

_CHILD = r"""
import json, sys, tempfile, os
cfgs = json.load(open(sys.argv[1]))
out = []
from llamafactory.hparams import get_train_args
for cfg in cfgs:
    try:
        get_train_args(cfg)
        out.append(None)
    except BaseException as exc:  # noqa: BLE001 - report what LLaMA-Factory says, whatever it is
        out.append(f"{type(exc).__name__}: {exc}")
json.dump(out, open(sys.argv[2], "w"))
"""


def llamafactory_available() -> bool:
    return importlib.util.find_spec("llamafactory") is not None


def _checked_copy(cfg: Mapping[str, Any], scratch: Path) -> TrainConfig:
    copy = dict(cfg)
    copy.pop("deepspeed", None)
    copy["use_cpu"] = True  # judge it as on the GPU machine: bf16 is refused on a CPU otherwise
    copy["output_dir"] = str(scratch)  # existing checkpoints would trigger auto-resume or refusal
    copy.pop("overwrite_output_dir", None)
    copy.pop("resume_from_checkpoint", None)
    return copy


_UNUSED = re.compile(r"Some (?:keys|specified arguments) are not used by the HfArgumentParser: \[(.*)\]")
_BACKTICK = re.compile(r"`([a-z_0-9]+)`")


def _to_problems(message: str, cfg: Mapping[str, Any]) -> list[Problem]:
    text = message.split(": ", 1)[1] if ": " in message else message
    text = text.strip().splitlines()[0] if text.strip() else message
    unused = _UNUSED.search(message)
    if unused:
        keys = [k.strip().strip("'\"") for k in unused.group(1).split(",") if k.strip()]
        names = load_schema().keys()
        return [
            Problem(k, f"LLaMA-Factory does not know this key;{did_you_mean(k, names)}".rstrip(";"))
            for k in keys
        ]
    for key in _BACKTICK.findall(text):
        if key in cfg:
            return [Problem(key, f"LLaMA-Factory says: {text}")]
    return [Problem("llamafactory", text)]


def validate_many_with_llamafactory(
    cfgs: Sequence[Mapping[str, Any]], timeout: float = 300
) -> list[list[Problem]]:
    """Run LLaMA-Factory's `get_train_args` on each config in one subprocess (one import, ~5-10 s)."""
    if not llamafactory_available():
        raise LfTunerError(
            "llamafactory: not installed in this environment; install lf-tuner[train] or check with the schema only"
        )
    with tempfile.TemporaryDirectory(prefix="lf-tuner-validate-") as tmp:
        tmp_path = Path(tmp)
        copies = [_checked_copy(cfg, tmp_path / f"out{i}") for i, cfg in enumerate(cfgs)]
        src, dst = tmp_path / "configs.json", tmp_path / "result.json"
        src.write_text(json.dumps(copies), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
        env.update(CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(src), str(dst)],
                env=env,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LfTunerError(
                f"llamafactory: the parser check took over {timeout:.0f} s; check with --schema-only"
            ) from exc
        if proc.returncode != 0 or not dst.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise LfTunerError(
                f"llamafactory: the parser check could not run ({tail}); fix the install or use --schema-only"
            )
        results = json.loads(dst.read_text(encoding="utf-8"))
    return [[] if msg is None else _to_problems(msg, cfg) for msg, cfg in zip(results, cfgs, strict=True)]


_DIST_VARS = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "FORCE_TORCHRUN",
    "MASTER_ADDR",
    "MASTER_PORT",
    "ALLOW_EXTRA_ARGS",
)


def validate_with_llamafactory(cfg: Mapping[str, Any]) -> list[Problem]:
    """LLaMA-Factory's own verdict on one config."""
    return validate_many_with_llamafactory([cfg])[0]


def check_config(
    cfg: Mapping[str, Any],
    *,
    use_llamafactory: bool | None = None,
    base_dir: Path | None = None,
    deepspeed: Mapping[str, Any] | None = None,
    files: bool = False,
    arch: ModelArch | None = _UNSET,
) -> list[Problem]:
    """The schema and the rules (and, with `files`, what the config points at), then (when llamafactory is
    importable, or when asked) LLaMA-Factory's own parser.

    The parser runs only on a config the checks accept: it stops at its first error, the checks report
    them all.
    """
    problems = validate_config(cfg, base_dir=base_dir, deepspeed=deepspeed, arch=arch)
    if files:
        problems.extend(check_files(cfg, base_dir=base_dir))
    if use_llamafactory is None:
        use_llamafactory = llamafactory_available()
    if use_llamafactory and not problems:
        problems = validate_with_llamafactory(cfg)
    return problems
