"""Presets + Jinja templates -> `llamafactory-cli train` YAML, DeepSpeed JSON and dataset_info entries.

Order of precedence: preset values, then the command's options (--model, --dataset, ...), then
`key=value` overrides, then `--cutoff auto`. The result is checked against the shipped schema
before it is returned; `lf_tuner.config.validate.check_config` adds LLaMA-Factory's own parser.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import yaml

from lf_tuner.config.choices import DEEPSPEED_CHOICES, METHODS
from lf_tuner.config.files import TrainConfig, parse_mapping
from lf_tuner.config.overrides import apply_overrides
from lf_tuner.config.presets import (
    ByData,
    ByGpu,
    ByMethod,
    Preset,
    data_class,
    gpu_class,
    load_preset,
)
from lf_tuner.config.schema import load_schema
from lf_tuner.config.validate import check_config, check_files, validate_config
from lf_tuner.data import read_dataset_info
from lf_tuner.errors import LfTunerError, ProblemsError
from lf_tuner.memory import RENDERABLE, DeepSpeed, parse_kind
from lf_tuner.models import ModelArch, resolve_model
from lf_tuner.resources import shipped

DEFAULT_PRESET = "default"


@dataclass(frozen=True)
class DatasetInfoUpdate:
    """A dataset_info.json entry to add for a bare data file."""

    path: Path
    name: str
    entry: dict[str, Any]


@dataclass
class Rendered:
    config: TrainConfig
    yaml: str
    notes: list[str]
    preset: str = DEFAULT_PRESET
    arch: ModelArch | None = None
    dataset_info: DatasetInfoUpdate | None = None
    why: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- Jinja


def _format_float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if value.is_integer() and abs(value) < 1e16:
        return f"{value:.1f}"
    if abs(value) < 1e-3 or abs(value) >= 1e16:
        mantissa, exp = f"{value:.15e}".split("e")
        mantissa = mantissa.rstrip("0")
        mantissa += "0" if mantissa.endswith(".") else ""
        text = f"{mantissa}e{int(exp):+d}"
        if float(text) == value:
            return text
    return repr(value)


def yaml_scalar(value: Any) -> str:
    """A YAML value on one line (floats as LLaMA-Factory's examples write them: 1.0e-4)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return dumped.strip().removesuffix("\n...").removesuffix("...").strip()


def _env() -> jinja2.Environment:
    root = shipped("templates")

    def load(name: str) -> str | None:
        path = root
        for part in name.split("/"):
            path = path.joinpath(part)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["y"] = yaml_scalar
    return env


def render_template(name: str, context: Mapping[str, object], env: jinja2.Environment | None = None) -> str:
    """Render one template; every missing variable is reported at once."""
    env = env or _env()
    assert env.loader is not None
    source = env.loader.get_source(env, name)[0]
    needed = jinja2.meta.find_undeclared_variables(env.parse(source))
    missing = sorted(needed - set(context))
    if missing:
        raise LfTunerError(
            f"template {name}: missing variable(s) {', '.join(missing)}; pass them all to render_template"
        )
    try:
        return env.get_template(name).render(**context)
    except jinja2.UndefinedError as exc:  # an attribute of a given variable is missing
        raise LfTunerError(f"template {name}: {exc}; pass it in the context") from exc


def _renderable(kind: str) -> DeepSpeed:
    if parse_kind(kind) not in RENDERABLE:
        raise LfTunerError(f"deepspeed: `{kind}` is not one of {', '.join(DEEPSPEED_CHOICES)}")
    return DeepSpeed.from_kind(kind)


def render_deepspeed(kind: str) -> str:
    """DeepSpeed JSON for z2, z2_offload, z3 or z3_offload, either spelling (LLaMA-Factory's examples/deepspeed
    files; `memory.DeepSpeed.from_json` of it equals `DeepSpeed.from_kind(kind)`)."""
    ds = _renderable(kind)
    return render_template("deepspeed/ds_config.json.j2", {"stage": ds.stage, "offload": ds.offload})


def deepspeed_filename(kind: str) -> str:
    """ds_z3_offload_config.json for z3_offload or z3-offload."""
    return _renderable(kind).filename


# --------------------------------------------------------------------------- YAML output

_SECTIONS = ("model", "method", "dataset", "output", "train", "eval", "generation", "other")
_SECTION_OF = {
    "model_name_or_path": "model",
    "adapter_name_or_path": "model",
    "trust_remote_code": "model",
    "flash_attn": "model",
    "enable_liger_kernel": "model",
    "stage": "method",
    "do_train": "method",
    "finetuning_type": "method",
    "deepspeed": "method",
    "template": "dataset",
    "output_dir": "output",
    "logging_steps": "output",
    "save_steps": "output",
    "save_strategy": "output",
    "save_total_limit": "output",
    "plot_loss": "output",
    "overwrite_output_dir": "output",
    "save_only_model": "output",
    "report_to": "output",
    "logging_nan_inf_filter": "output",
    "resume_from_checkpoint": "output",
}
_GROUP_SECTION = {
    "ModelArguments": "model",
    "DataArguments": "dataset",
    "FinetuningArguments": "method",
    "TrainingArguments": "train",
    "GeneratingArguments": "generation",
}


def _section(key: str) -> str:
    if key in _SECTION_OF:
        return _SECTION_OF[key]
    if key.startswith(("eval_", "per_device_eval", "val_size", "do_eval", "do_predict")) or key in (
        "load_best_model_at_end",
        "metric_for_best_model",
        "early_stopping_steps",
        "predict_with_generate",
    ):
        return "eval"
    if key.startswith(("lora_", "freeze_", "quantization_", "double_quantization")):
        return "method"
    schema = load_schema()
    return _GROUP_SECTION.get(schema[key].group, "other") if key in schema else "other"


def dump_yaml(
    cfg: Mapping[str, object], notes: Mapping[str, str] | None = None, header: str | None = None
) -> str:
    """The config as YAML: `### section` headers in LLaMA-Factory's example order, one key a line,
    the reason for a value as a trailing comment."""
    notes = notes or {}
    by_section: dict[str, list[str]] = {s: [] for s in _SECTIONS}
    for key in cfg:
        by_section[_section(key)].append(key)
    lines: list[str] = []
    if header:
        lines.extend(f"# {line}".rstrip() for line in header.splitlines())
    for section in _SECTIONS:
        keys = by_section[section]
        if not keys:
            continue
        if lines:
            lines.append("")
        lines.append(f"### {section}")
        for key in keys:
            line = f"{key}: {yaml_scalar(cfg[key])}"
            if key in notes:
                line += f"  # {notes[key]}"
            lines.append(line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- models and data


def _model_name(spec: str, arch: ModelArch | None) -> str:
    """What goes into model_name_or_path: paths and Hub ids as given, catalog names as Hub ids."""
    if "/" in spec or Path(spec).expanduser().exists() or arch is None or not arch.hf_id:
        return spec
    org, hub_name = arch.hf_id.split("/", 1)
    if spec.lower() == hub_name.lower():
        return arch.hf_id
    return f"{org}/{spec}"


def infer_template(arch: ModelArch) -> str | None:
    """The LLaMA-Factory template of the model's family (catalog, or inferred from a local config.json)."""
    return arch.template if arch.template != "default" else None


def _resolve(spec: str) -> ModelArch | None:
    try:
        return resolve_model(spec)
    except LfTunerError:
        if "/" in spec and not Path(spec).expanduser().exists():
            return None  # a Hub id the catalog does not know: fine when --template is given
        raise


_DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt")


def _is_data_file(dataset: str) -> bool:
    return dataset.endswith(_DATA_SUFFIXES) and "," not in dataset


def _first_row(path: Path) -> dict[str, Any] | None:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            first = next((line for line in text.splitlines() if line.strip()), "")
            row = json.loads(first) if first else None
        else:
            data = json.loads(text)
            row = data[0] if isinstance(data, list) and data else None
    except ValueError as exc:
        raise LfTunerError(
            f"dataset: {path} is not valid JSON ({exc}); fix the file or pass a registered name"
        ) from exc
    return row if isinstance(row, dict) else None


def count_rows(path: Path) -> int | None:
    """Samples in a JSON list or JSONL file; None for other formats."""
    try:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                return sum(1 for line in fh if line.strip())
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return len(data) if isinstance(data, list) else None
    except (OSError, ValueError):
        return None
    return None


def dataset_info_entry(path: Path, dataset_dir: Path) -> tuple[str, dict[str, Any]]:
    """(name, entry) for a bare data file, rendered from templates/dataset_info_entry.json.j2."""
    if not path.is_file():
        raise LfTunerError(
            f"dataset: {path} does not exist; pass a data file or a name from dataset_info.json"
        )
    row = _first_row(path) if path.suffix in (".json", ".jsonl") else None
    formatting, column = "alpaca", "conversations"
    if row is not None and isinstance(row.get("messages"), list):
        formatting, column = "openai", "messages"
    elif row is not None and isinstance(row.get("conversations"), list):
        formatting = "sharegpt"
    try:
        file_name = str(path.resolve().relative_to(dataset_dir.resolve()))
    except ValueError:
        file_name = str(path.resolve())
    text = render_template(
        "dataset_info_entry.json.j2",
        {"file_name": file_name, "formatting": formatting, "messages_column": column},
    )
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    entry: dict[str, Any] = json.loads(text)
    return name, entry


def _existing_info(info_path: Path) -> dict[str, Any]:
    if not info_path.is_file():
        return {}
    try:
        return read_dataset_info(info_path.parent)
    except LfTunerError as exc:
        raise LfTunerError(f"dataset_info: {exc.message}; fix it first") from None


def _entry_for(info: Mapping[str, object], data_dir: Path, file: Path) -> str | None:
    """The name of an entry in `info` that already reads `file`, or None."""
    target = file.resolve()
    for name, entry in info.items():
        file_name = entry.get("file_name") if isinstance(entry, dict) else None
        if isinstance(file_name, str) and (data_dir / file_name).resolve() == target:
            return str(name)
    return None


def register_data_file(file: Path, data_dir: Path) -> tuple[str, DatasetInfoUpdate | None]:
    """(the dataset name to train on, the entry to add to dataset_info.json or None).

    An entry that already reads the file is used as it is (its columns, tags and name are the user's); a
    different entry under the name the file would get is kept, and rendering stops with the way out.
    """
    info_path = data_dir / "dataset_info.json"
    existing = _existing_info(info_path)
    registered = _entry_for(existing, data_dir, file)
    if registered is not None:
        return registered, None
    name, entry = dataset_info_entry(file, data_dir)
    if name in existing:
        raise LfTunerError(
            f"dataset: {info_path} already has a `{name}` entry for another file; lf-tuner will not change "
            f"it: register {file.name} there under another name and pass --dataset NAME, or rename the file"
        )
    return name, DatasetInfoUpdate(info_path, name, entry)


def merge_dataset_info(update: DatasetInfoUpdate) -> str | None:
    """The dataset_info.json text with the entry added, or None when it is there as is.

    Existing entries are never replaced: a different entry under the same name (written since rendering)
    stops here.
    """
    existing = _existing_info(update.path)
    current = existing.get(update.name)
    if current == update.entry:
        return None
    if current is not None:
        raise LfTunerError(
            f"dataset: {update.path} already has a different `{update.name}` entry; lf-tuner will not "
            "change it: pass --dataset with that name, or rename the data file"
        )
    merged = {**existing, update.name: update.entry}
    return json.dumps(merged, indent=2, ensure_ascii=False) + "\n"


def _registered_count(name: str, dataset_dir: str) -> int | None:
    try:
        info = read_dataset_info(dataset_dir)
    except LfTunerError:
        return None
    entry = info.get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
        return None
    return count_rows(Path(dataset_dir) / entry["file_name"])


# --------------------------------------------------------------------------- lookups


@dataclass
class _Choices:
    """What a preset's by-method, by-GPU and by-data values are picked by, and why each value was chosen."""

    method: str
    gpu_gib: float | None
    samples: int | None
    why: dict[str, str]

    def pick(self, key: str, value: Any) -> Any:
        if isinstance(value, ByMethod):
            used = "lora" if self.method == "qlora" and value.qlora is None else self.method
            qlora = " (QLoRA uses the LoRA rate)" if used != self.method else ""
            self.why.setdefault(key, f"the preset's {used} value{qlora}")
            return value.pick(self.method)
        if isinstance(value, ByGpu):
            if self.gpu_gib is None:
                self.why[key] = "medium GPU class assumed (no GPU found); pass --gpu-memory GIB"
                return value.medium
            cls = gpu_class(self.gpu_gib)
            self.why[key] = f"{cls} GPU class ({self.gpu_gib:g} GiB)"
            return getattr(value, cls)
        if isinstance(value, ByData):
            if self.samples is None:
                self.why[key] = "medium data class assumed (dataset not counted); pass --data-size N"
                return value.medium
            cls = data_class(self.samples)
            self.why[key] = f"{cls} data class ({self.samples} samples)"
            return getattr(value, cls)
        return value


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class RenderRequest:
    """What to render: a preset, the command's options (None: the preset's value) and `key=value` overrides.

    `cutoff` is a number or `auto` (measure the dataset); `data_size` and `gpu_memory_gib` pick the preset's
    values by data and GPU class (counted and detected when absent).
    """

    preset: str | None = None
    model: str | None = None
    dataset: str | None = None
    dataset_dir: str | None = None
    template: str | None = None
    method: str | None = None
    output_dir: str | None = None
    cutoff: int | Literal["auto"] | None = None
    overrides: tuple[str, ...] = ()
    data_size: int | None = None
    gpu_memory_gib: float | None = None


@dataclass(frozen=True)
class _Model:
    spec: str  # as the user or the preset gave it
    name: str  # what goes into model_name_or_path
    arch: ModelArch | None


@dataclass(frozen=True)
class _Data:
    name: str
    dataset_dir: str
    samples: int | None
    update: DatasetInfoUpdate | None


def _choose_model(request: RenderRequest, preset_name: str, spec: Preset) -> _Model:
    model_spec = request.model or spec.model
    if not model_spec:
        raise LfTunerError(
            f"model_name_or_path: preset `{preset_name}` names no model; pass --model NAME "
            "(a name from `lf-tuner models`, a Hub id or a local model directory)"
        )
    arch = _resolve(model_spec)
    return _Model(model_spec, _model_name(model_spec, arch), arch)


def _choose_template(request: RenderRequest, spec: Preset, model: _Model, why: dict[str, str]) -> str:
    chosen = request.template or (spec.template if not request.model else None)
    if chosen is not None:
        return chosen
    inferred = infer_template(model.arch) if model.arch is not None else None
    if inferred is None:
        raise LfTunerError(
            f"template: cannot tell the chat template of `{model.spec}`; pass --template NAME "
            "(LLaMA-Factory's template name, e.g. qwen, llama3, mistral)"
        )
    family = model.arch.model_type if model.arch is not None else ""
    why["template"] = f"LLaMA-Factory's template for the {family} family"
    return inferred


def _choose_data(request: RenderRequest, preset_name: str, spec: Preset, why: dict[str, str]) -> _Data:
    dataset = request.dataset or spec.dataset
    if not dataset:
        raise LfTunerError(
            f"dataset: preset `{preset_name}` names no dataset; pass --dataset NAME "
            "(registered in dataset_info.json) or --dataset FILE (a .json/.jsonl data file)"
        )
    samples = request.data_size
    if not _is_data_file(dataset):
        data_dir = request.dataset_dir or spec.dataset_dir
        if samples is None and isinstance(spec.num_train_epochs, ByData):
            samples = _registered_count(dataset, data_dir)
        return _Data(dataset, data_dir, samples, None)
    file = Path(dataset).expanduser()
    data_dir = request.dataset_dir or str(file.parent)
    if not file.is_file():
        raise LfTunerError(
            f"dataset: {file} does not exist; pass a data file or a name from dataset_info.json"
        )
    name, update = register_data_file(file, Path(data_dir))
    info_path = Path(data_dir) / "dataset_info.json"
    why["dataset"] = (
        f"{file} registered as `{name}` in {info_path}" if update else f"`{name}` in {info_path} reads {file}"
    )
    return _Data(name, data_dir, samples if samples is not None else count_rows(file), update)


@dataclass(frozen=True)
class _Evaluation:
    """The held-out split and early stopping, as train.yaml.j2 writes them."""

    val_size: float
    evaluate: bool
    per_device_eval_batch_size: int
    early_stopping: bool
    metric: str
    patience: int


def _evaluation(spec: Preset, batch: int, epochs: float, why: dict[str, str]) -> _Evaluation | None:
    if spec.evaluation is None:
        return None
    ev = spec.evaluation
    patience = max(2, int(epochs) // 2)
    if ev.evaluate and ev.early_stopping:
        why["early_stopping_steps"] = f"max(2, epochs // 2) = {patience} evaluations without improvement"
    return _Evaluation(
        val_size=ev.val_size,
        evaluate=ev.evaluate,
        per_device_eval_batch_size=ev.per_device_eval_batch_size or batch,
        early_stopping=ev.early_stopping,
        metric=ev.metric,
        patience=patience,
    )


def render_train_config(
    request: RenderRequest, *, detect_gpu_gib: Callable[[], float | None] | None = None
) -> Rendered:
    """The training config for a preset and the command's options, checked against the schema.

    `detect_gpu_gib` gives the GPU size when the preset picks by GPU class and `request.gpu_memory_gib` is
    not given (render cannot import train/, so the caller passes its GPU detection). Nothing is written.
    """
    preset_name, spec = load_preset(request.preset or DEFAULT_PRESET)
    method = request.method or spec.method
    if method not in METHODS:
        raise LfTunerError(f"method: `{method}` is not one of {', '.join(METHODS)}")
    why: dict[str, str] = dict(spec.why)
    model = _choose_model(request, preset_name, spec)
    template = _choose_template(request, spec, model, why)
    data = _choose_data(request, preset_name, spec, why)

    gpu_gib = request.gpu_memory_gib
    if gpu_gib is None and isinstance(spec.per_device_train_batch_size, ByGpu) and detect_gpu_gib:
        gpu_gib = detect_gpu_gib()
    choices = _Choices(method, gpu_gib, data.samples, why)
    learning_rate = choices.pick("learning_rate", spec.learning_rate)
    batch = choices.pick("per_device_train_batch_size", spec.per_device_train_batch_size)
    epochs = float(choices.pick("num_train_epochs", spec.num_train_epochs))
    if spec.target_batch_size is not None:
        accumulation = max(1, spec.target_batch_size // batch)
        why.setdefault(
            "gradient_accumulation_steps",
            f"{batch} x {accumulation} reaches the target batch {spec.target_batch_size}",
        )
    else:
        accumulation = spec.gradient_accumulation_steps or 1

    output_dir = request.output_dir or f"saves/{Path(model.name).name}/{method}/{preset_name}"
    if not request.output_dir:
        why.setdefault("output_dir", "saves/<model>/<method>/<preset>; set it with --output-dir")
    cutoff_len = spec.cutoff_len
    if isinstance(request.cutoff, int):
        cutoff_len = request.cutoff
        why["cutoff_len"] = "from --cutoff"
    context: dict[str, object] = {
        **spec.model_dump(include=_PRESET_KEYS),
        "model_name_or_path": model.name,
        "trust_remote_code": False,
        "method": method,
        "lora": spec.lora,
        "freeze": spec.freeze,
        "dataset": data.name,
        "dataset_dir": data.dataset_dir,
        "template": template,
        "cutoff_len": cutoff_len,
        "output_dir": output_dir,
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": accumulation,
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "evaluation": _evaluation(spec, batch, epochs, why),
        "extra": dict(spec.extra),
    }
    cfg = parse_mapping(render_template("train.yaml.j2", context), "templates/train.yaml.j2")
    if method == "qlora":
        why.setdefault("quantization_bit", "QLoRA: 4-bit bitsandbytes base weights")
    cfg = apply_overrides(cfg, list(request.overrides))
    for item in request.overrides:
        key = item.lstrip("~").split("=", 1)[0].strip()
        why[key] = "removed by override" if item.strip().startswith("~") else "set by override"
    why = {k: v for k, v in why.items() if k in cfg}

    if request.cutoff == "auto":
        cfg, why["cutoff_len"] = _auto_cutoff(cfg, data.update)

    problems = validate_config(cfg, arch=model.arch)
    if problems:
        raise ProblemsError(problems, "rendered config")
    return _finish(cfg, why, preset_name, method, model.arch, data.update)


# preset values that go into the template as they are
_PRESET_KEYS = {
    "stage",
    "flash_attn",
    "quantization_bit",
    "max_samples",
    "preprocessing_num_workers",
    "logging_steps",
    "save_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "bf16",
}


def _auto_cutoff(cfg: TrainConfig, pending: DatasetInfoUpdate | None) -> tuple[TrainConfig, str]:
    """cfg with the measured cutoff_len; a bare data file not yet registered is measured through a
    scratch dataset_info.json (nothing of the user's is written here)."""
    import tempfile

    from lf_tuner.lengths import measure_config_cutoff

    if pending is None:
        value = measure_config_cutoff(cfg, percentile=95, multiple=128)
    else:
        entry = dict(pending.entry)
        entry["file_name"] = str((pending.path.parent / str(entry["file_name"])).resolve())
        with tempfile.TemporaryDirectory(prefix="lf-tuner-cutoff-") as tmp:
            (Path(tmp) / "dataset_info.json").write_text(json.dumps({pending.name: entry}), encoding="utf-8")
            value = measure_config_cutoff({**cfg, "dataset_dir": tmp}, percentile=95, multiple=128)
    return {
        **cfg,
        "cutoff_len": int(value),
    }, "95th percentile of the dataset's token lengths, rounded up to 128"


def _finish(
    cfg: TrainConfig,
    why: dict[str, str],
    preset_name: str,
    method: str,
    arch: ModelArch | None,
    info_update: DatasetInfoUpdate | None,
) -> Rendered:
    header = f"lf-tuner render --preset {preset_name} --method {method}\ncheck: lf-tuner validate FILE; train: llamafactory-cli train FILE"
    notes = [f"{k}: {yaml_scalar(cfg[k])} ({v})" for k, v in why.items()]
    return Rendered(
        config=cfg,
        yaml=dump_yaml(cfg, why, header),
        notes=notes,
        preset=preset_name,
        arch=arch,
        dataset_info=info_update,
        why=why,
    )


def deepspeed_kind(value: object) -> str | None:
    """The kind (z3-offload) when a `deepspeed` value names one render writes (z3_offload, ds_z3_config.json...)."""
    kind = parse_kind(str(value)) if value else None
    return kind if kind in RENDERABLE else None


def with_changes(rendered: Rendered, changes: Mapping[str, object], why: Mapping[str, str]) -> Rendered:
    """The rendered config with more keys set (None removes a key), re-checked and re-dumped."""
    cfg = dict(rendered.config)
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    merged_why = {
        **{k: v for k, v in rendered.why.items() if k in cfg},
        **{k: v for k, v in why.items() if k in cfg},
    }
    kind = deepspeed_kind(cfg.get("deepspeed", ""))
    ds = json.loads(render_deepspeed(kind)) if kind else None
    problems = validate_config(cfg, deepspeed=ds)
    if problems:
        raise ProblemsError(problems, "rendered config")
    method = "qlora" if cfg.get("quantization_bit") else str(cfg.get("finetuning_type", "lora"))
    return _finish(cfg, merged_why, rendered.preset, method, rendered.arch, rendered.dataset_info)


# --------------------------------------------------------------------------- writing

Say = Callable[[str], None]


def check_outputs(paths: list[Path], force: bool) -> None:
    """Before any work: each named output's folder exists, and the output does not unless `force`."""
    for path in paths:
        if not path.parent.is_dir():
            raise LfTunerError(f"{path.parent} is not a directory; create it first (mkdir -p {path.parent})")
        if path.exists() and not force:
            raise LfTunerError(f"{path} exists; pass --force to overwrite it or choose another file")


def with_deepspeed(rendered: Rendered, kind: str, folder: Path) -> tuple[Rendered, Path]:
    """The config pointing at the DeepSpeed JSON of `kind` in `folder` (`write_rendered` writes it there)."""
    path = (folder / deepspeed_filename(kind)).resolve()
    return with_changes(rendered, {"deepspeed": str(path)}, {"deepspeed": f"ZeRO {kind}"}), path


def check_rendered(rendered: Rendered, ds_kind: str | None, *, use_llamafactory: bool | None) -> list[str]:
    """Every problem stops the render (ProblemsError); what the config points at that is not there yet comes
    back as warnings (data can be registered after rendering)."""
    ds = json.loads(render_deepspeed(ds_kind)) if ds_kind is not None else None
    problems = check_config(
        rendered.config, use_llamafactory=use_llamafactory, deepspeed=ds, arch=rendered.arch
    )
    if problems:
        raise ProblemsError(problems, "rendered config")
    if rendered.dataset_info is not None:
        return []
    return [str(problem) for problem in check_files(rendered.config)]


def unwritten(rendered: Rendered, ds_kind: str | None, ds_path: Path | None) -> list[str]:
    """What `-o FILE` would also write, for a config that goes to stdout (where nothing else is written)."""
    notes = []
    update = rendered.dataset_info
    if update is not None and merge_dataset_info(update) is not None:
        entry = json.dumps(update.entry, ensure_ascii=False)
        notes.append(
            f"`{update.name}` is not in {update.path} yet; render with -o FILE to add it, "
            f'or add it yourself: "{update.name}": {entry}'
        )
    if ds_kind is not None and ds_path is not None and not ds_path.is_file():
        notes.append(f"{ds_path} ({ds_kind}); render with -o FILE to write it beside the config")
    return notes


def write_rendered(
    rendered: Rendered, output: Path, ds_kind: str | None, ds_path: Path | None, *, say: Say
) -> None:
    """Write the config to `output` and what it needs beside it; everything is checked before anything is
    written, and nothing but `output` (with --force) is ever replaced."""
    update = rendered.dataset_info
    info_text = merge_dataset_info(update) if update is not None else None
    if info_text is not None and update is not None and not update.path.parent.is_dir():
        raise LfTunerError(
            f"dataset: {update.path.parent} is not a directory; create it first or pass another --dataset-dir"
        )
    ds_text = render_deepspeed(ds_kind) if ds_kind is not None else None
    if ds_text is not None and ds_path is not None and ds_path.exists():
        if ds_path.read_text(encoding="utf-8") != ds_text:
            raise LfTunerError(
                f"{ds_path} exists with other content; lf-tuner will not replace it: move it away, "
                "or render with -o into another folder"
            )
        ds_text = None  # already there as is
    if ds_text is not None and ds_path is not None:
        ds_path.write_text(ds_text, encoding="utf-8")
        say(f"wrote {ds_path}")
    if info_text is not None and update is not None:
        update.path.write_text(info_text, encoding="utf-8")
        say(f"registered `{update.name}` in {update.path}")
    output.write_text(rendered.yaml, encoding="utf-8")
    say(f"wrote {output}")


# --------------------------------------------------------------------------- --fit


def fit_config(rendered: Rendered, *, gpu_bytes: int, gpus: int) -> tuple[Rendered, list[str]]:
    """Choose micro-batch/accumulation, Liger, QLoRA or ZeRO so the estimate fits; report what was chosen."""
    from lf_tuner.config.fit import check_fit
    from lf_tuner.memory import Budget

    gib = gpu_bytes / 2**30
    result = check_fit(rendered.config, [Budget("GPU", gpu_bytes)], gpus=gpus, arch=rendered.arch)
    peak = result.estimate.total_gib
    if result.fits:
        return rendered, [f"fits as is: estimated peak {peak:.1f} GiB of {gib:.1f} GiB per GPU"]
    change = result.change
    if change is None:
        raise LfTunerError(
            f"fit: nothing fits {gib:.1f} GiB per GPU (estimated peak {peak:.1f} GiB); "
            "use more GPUs (--gpus), a smaller model or a shorter --cutoff"
        )
    why = {key: f"--fit: {change.description}" for key in change.overrides}
    fitted = with_changes(rendered, dict(change.overrides), why)
    return fitted, [
        f"estimated peak {peak:.1f} GiB does not fit {gib:.1f} GiB per GPU",
        f"chose: {change.description} (estimated peak {change.total_gib:.1f} GiB)",
    ]
