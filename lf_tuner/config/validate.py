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
from pathlib import Path
from typing import Any

from lf_tuner.config.schema import FieldSpec, Schema, load_schema
from lf_tuner.errors import LfTunerError, Problem, did_you_mean

# --------------------------------------------------------------------------- types and choices


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


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


def _ranges(cfg: dict[str, Any]) -> list[Problem]:
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
    quant = cfg.get("quantization_bit")
    if isinstance(quant, int) and not isinstance(quant, bool) and quant not in (2, 3, 4, 5, 6, 8):
        out.append(Problem("quantization_bit", f"{quant} bits is not supported; use 4 or 8"))
    return out


# --------------------------------------------------------------------------- cross-field rules


def _deepspeed_stage(
    cfg: dict[str, Any], base_dir: Path | None, ds_config: dict[str, Any] | None
) -> int | None:
    ds = ds_config if ds_config is not None else cfg.get("deepspeed")
    if isinstance(ds, dict):
        raw: Any = ds
    elif isinstance(ds, str):
        path = Path(ds)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    else:
        return None
    zero = raw.get("zero_optimization") if isinstance(raw, dict) else None
    stage = zero.get("stage") if isinstance(zero, dict) else None
    return stage if isinstance(stage, int) else None


def _cross_rules(
    cfg: dict[str, Any], base_dir: Path | None, ds_config: dict[str, Any] | None
) -> list[Problem]:
    """The checks LLaMA-Factory 0.9.5 (and HF TrainingArguments) make before training starts."""
    out: list[Problem] = []
    get = cfg.get
    stage = get("stage", "sft")
    ftype = get("finetuning_type", "lora")
    do_train = bool(get("do_train", False))
    zero3 = _deepspeed_stage(cfg, base_dir, ds_config) == 3

    if not get("model_name_or_path"):
        out.append(Problem("model_name_or_path", "missing; set it to a Hub id or a local model directory"))
    if do_train and not get("dataset"):
        out.append(Problem("dataset", "missing; training needs a dataset name from dataset_info.json"))
    if not get("output_dir"):
        out.append(
            Problem("output_dir", "missing; set a fresh directory, e.g. saves/<model>/<method>/<name>")
        )
    if get("bf16") and get("fp16"):
        out.append(Problem("fp16", "`bf16` and `fp16` are both true; keep one (bf16 on Ampere or newer)"))
    if stage != "sft":
        for key in ("predict_with_generate", "neat_packing", "train_on_prompt", "mask_history"):
            if get(key):
                out.append(Problem(key, f"only valid with `stage: sft` (this config has stage {stage})"))
    if stage == "sft" and get("do_predict") and not get("predict_with_generate"):
        out.append(Problem("do_predict", "needs `predict_with_generate: true` to save predictions"))
    if stage in ("rm", "ppo") and get("load_best_model_at_end"):
        out.append(Problem("load_best_model_at_end", f"not supported by stage {stage}; remove it"))
    if stage == "ppo" and not do_train:
        out.append(Problem("do_train", "PPO does not support evaluation only; set `do_train: true`"))
    wants_eval = get("do_eval") or get("do_predict") or get("predict_with_generate")
    val_size = get("val_size", 0.0)
    val_size = val_size if isinstance(val_size, int | float) else 0.0
    if wants_eval and get("eval_dataset") is None and val_size < 1e-6:
        out.append(
            Problem(
                "val_size",
                "evaluation is on but there is no eval data; set `val_size: 0.1` or `eval_dataset`",
            )
        )
    if val_size > 1e-6 and get("eval_dataset") is not None:
        out.append(Problem("val_size", "cannot be set together with `eval_dataset`; keep one"))
    if val_size > 1e-6 and get("dataset") is None:
        out.append(Problem("val_size", "needs a `dataset` to split"))
    if get("eval_strategy", "no") != "no" and get("eval_dataset") is None and val_size < 1e-6:
        out.append(
            Problem(
                "eval_strategy",
                "evaluation is on but there is no eval data; set `val_size` or `eval_dataset`",
            )
        )
    if get("quantization_bit") is not None and ftype not in ("lora", "oft"):
        out.append(
            Problem(
                "quantization_bit",
                f"quantization needs `finetuning_type: lora` (it is {ftype}); use --method qlora",
            )
        )
    if get("adapter_name_or_path") and ftype not in ("lora", "oft"):
        out.append(Problem("adapter_name_or_path", "adapters are only valid for the LoRA method"))
    if do_train and get("quantization_device_map") == "auto":
        out.append(Problem("quantization_device_map", "`auto` cannot be used in training; remove it"))
    if get("streaming") and get("max_steps", -1) in (-1, None):
        out.append(Problem("max_steps", "streaming needs `max_steps`"))
    if get("streaming") and get("max_samples") is not None:
        out.append(Problem("max_samples", "incompatible with `streaming`"))
    if get("mask_history") and get("train_on_prompt"):
        out.append(Problem("mask_history", "incompatible with `train_on_prompt`; keep one"))
    for key in ("use_dora", "use_rslora", "pissa_init", "loraplus_lr_ratio"):
        if get(key) and ftype != "lora":
            out.append(Problem(key, f"only valid for LoRA training (finetuning_type is {ftype})"))
    optims = [k for k in ("use_galore", "use_apollo", "use_badam") if get(k)]
    if len(optims) > 1:
        out.append(Problem(optims[1], f"cannot be used together with `{optims[0]}`"))
    if optims and ftype == "lora":
        out.append(Problem(optims[0], "cannot be used with LoRA; use `finetuning_type: full`"))
    if get("deepspeed") and (get("use_galore") or get("use_apollo")):
        out.append(Problem("deepspeed", "GaLore and APOLLO are incompatible with DeepSpeed"))
    if get("fp8") and get("quantization_bit") is not None:
        out.append(Problem("fp8", "FP8 training is not compatible with quantization; disable one"))
    if get("infer_backend", "huggingface") != "huggingface":
        out.append(Problem("infer_backend", "vLLM/SGLang backends are for inference only; remove it"))
    if zero3:
        for key, what in (
            ("predict_with_generate", "`predict_with_generate`"),
            ("pure_bf16", "`pure_bf16`"),
            ("use_unsloth", "Unsloth"),
            ("use_kt", "KTransformers"),
            ("pissa_init", "PiSSA initialisation"),
        ):
            if get(key):
                out.append(Problem(key, f"{what} is incompatible with DeepSpeed ZeRO-3"))
    if get("predict_with_generate") and get("compute_accuracy"):
        out.append(Problem("compute_accuracy", "cannot be used together with `predict_with_generate`"))
    out.extend(_best_model_rules(cfg))
    return out


def _best_model_rules(cfg: dict[str, Any]) -> list[Problem]:
    """HF TrainingArguments checks for load_best_model_at_end and the early-stopping callback."""
    out: list[Problem] = []
    get = cfg.get
    eval_strategy = get("eval_strategy", "no")
    save_strategy = get("save_strategy", "steps")
    if get("load_best_model_at_end"):
        if eval_strategy != save_strategy:
            out.append(
                Problem(
                    "load_best_model_at_end",
                    f"needs the same eval and save strategy (eval_strategy {eval_strategy}, save_strategy {save_strategy})",
                )
            )
        elif eval_strategy == "steps":
            save_steps, eval_steps = get("save_steps", 500), get("eval_steps") or get("logging_steps", 500)
            if isinstance(save_steps, int) and isinstance(eval_steps, int) and save_steps % eval_steps:
                out.append(
                    Problem("save_steps", f"{save_steps} must be a multiple of eval_steps {eval_steps}")
                )
    if get("early_stopping_steps") is not None and not get("load_best_model_at_end"):
        out.append(
            Problem(
                "early_stopping_steps", "needs `load_best_model_at_end: true` and `metric_for_best_model`"
            )
        )
    return out


def validate_config(
    cfg: dict[str, Any],
    *,
    base_dir: Path | None = None,
    schema: Schema | None = None,
    deepspeed: dict[str, Any] | None = None,
) -> list[Problem]:
    """Every problem the shipped schema can see: unknown keys, types, choices, cross-field rules.

    `deepspeed`: the DeepSpeed JSON that the config's `deepspeed` path will hold (when it is not
    written yet); otherwise a `deepspeed` path is read relative to `base_dir`.
    """
    schema = schema or load_schema()
    problems: list[Problem] = []
    if not isinstance(cfg, dict):
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
    problems.extend(_cross_rules(cfg, base_dir, deepspeed))
    if deepspeed is not None:
        problems.extend(validate_deepspeed_dict(deepspeed))
    elif isinstance(cfg.get("deepspeed"), str):
        problems.extend(validate_deepspeed_file(cfg["deepspeed"], base_dir))
    return _dedupe(problems)


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


def _checked_copy(cfg: dict[str, Any], scratch: Path) -> dict[str, Any]:
    copy = dict(cfg)
    copy.pop("deepspeed", None)
    copy["use_cpu"] = True  # judge it as on the GPU machine: bf16 is refused on a CPU otherwise
    copy["output_dir"] = str(scratch)  # existing checkpoints would trigger auto-resume or refusal
    copy.pop("overwrite_output_dir", None)
    copy.pop("resume_from_checkpoint", None)
    return copy


_UNUSED = re.compile(r"Some (?:keys|specified arguments) are not used by the HfArgumentParser: \[(.*)\]")
_BACKTICK = re.compile(r"`([a-z_0-9]+)`")


def _to_problems(message: str, cfg: dict[str, Any]) -> list[Problem]:
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


def validate_many_with_llamafactory(cfgs: list[dict[str, Any]], timeout: float = 300) -> list[list[Problem]]:
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


def validate_with_llamafactory(cfg: dict[str, Any]) -> list[Problem]:
    """LLaMA-Factory's own verdict on one config."""
    return validate_many_with_llamafactory([cfg])[0]


def check_config(
    cfg: dict[str, Any],
    *,
    use_llamafactory: bool | None = None,
    base_dir: Path | None = None,
    deepspeed: dict[str, Any] | None = None,
) -> list[Problem]:
    """The schema check, then (when llamafactory is importable, or when asked) the real parser.

    The parser runs only on a config the schema accepts: it stops at its first error, the schema
    check reports them all.
    """
    problems = validate_config(cfg, base_dir=base_dir, deepspeed=deepspeed)
    if use_llamafactory is None:
        use_llamafactory = llamafactory_available()
    if use_llamafactory and not problems:
        problems = validate_with_llamafactory(cfg)
    return problems
