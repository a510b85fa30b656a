"""Preflight for `lf-tuner run`: everything decided before `llamafactory-cli train` starts.

Which llamafactory-cli, the training config (a file with overrides, or rendered), the GPUs, the memory check,
the output_dir policy, the config checks, and the plan shown by `--dry-run`. Nothing here prints: messages for
people go through a `say` callback or come back as data, and problems are raised as one-line errors.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.errors import BadValue, LfTunerError, ProblemsError
from lf_tuner.train import records
from lf_tuner.train.command import (
    DEFAULT_MASTER_PORT,
    Command,
    build_command,
    staged_path,
    uses_torchrun,
    write_config,
)
from lf_tuner.train.gpus import gpu_summary
from lf_tuner.train.watch import LOG_NAME

if TYPE_CHECKING:
    from lf_tuner.config import TrainConfig
    from lf_tuner.memory import Estimate, Fsdp
    from lf_tuner.train.gpus import GpuInfo

INSTALL_HINT = (
    "install it with `pip install 'lf-tuner[train]'` (llamafactory==0.9.5) or pass --llamafactory-cli PATH"
)
CPU_OFF_KEYS = ("bf16", "fp16", "pure_bf16")  # mixed precision a CPU run cannot use

Say = Callable[[str], None]


def find_cli(path: str | None, *, needed: bool) -> str:
    """The llamafactory-cli to start: `path` if given, else the one on PATH (a bare name when planning)."""
    if path:
        if not Path(path).is_file():
            raise LfTunerError(f"llamafactory-cli: {path} does not exist; {INSTALL_HINT}")
        return path
    found = shutil.which("llamafactory-cli")
    if found is None and needed:
        raise LfTunerError(f"llamafactory-cli: not found on PATH; {INSTALL_HINT}")
    return found or "llamafactory-cli"


def source_problem(config_given: bool, render: Mapping[str, Any]) -> str | None:
    """Why CONFIG and the render options (`--model` ... as option names with `_`) do not go together, or None."""
    given = [name for name, value in render.items() if value is not None]
    if config_given:
        if given:
            return f"give CONFIG or render options, not both (got --{given[0].replace('_', '-')})"
        return None
    if not render.get("model") or not render.get("dataset") or not render.get("output_dir"):
        return "give CONFIG.yaml, or --model, --dataset and --output-dir to render one"
    return None


def load_config(base: TrainConfig | None, render: Mapping[str, Any], overrides: list[str]) -> TrainConfig:
    """The training config: `base` (a loaded YAML file) with overrides on top, or one rendered from `render`."""
    if base is not None:
        from lf_tuner.config import apply_overrides

        return apply_overrides(base, overrides)
    from lf_tuner.config import RenderRequest, render_train_config
    from lf_tuner.train.gpus import smallest_gpu_gib

    request = RenderRequest(**render, overrides=tuple(overrides))
    rendered = render_train_config(request, detect_gpu_gib=smallest_gpu_gib)
    return dict(rendered.config)


def choose_gpus(
    cfg: TrainConfig, select: str | None, *, cpu: bool, planning: bool
) -> tuple[list[GpuInfo], list[str]]:
    """(the selected GPUs, notes for the user). A CPU run gets [] and is marked in `cfg` (use_cpu, no bf16).

    `select` is the `--gpus` value; like `gpus.select_gpus`, a bad one is a `BadValue` for `--gpus`.
    Without a GPU, only planning (`--dry-run`, `--slurm-script`) may go on.
    """
    notes: list[str] = []
    if select is not None and select.strip().lower() == "cpu":
        select = "cpu"
    if cpu or select == "cpu":
        cfg["use_cpu"] = True
        for key in CPU_OFF_KEYS:
            if cfg.get(key):
                cfg[key] = False
                notes.append(f"note: {key}: true -> false (CPU run)")
    if cfg.get("use_cpu"):
        if select not in (None, "cpu"):
            raise BadValue(
                "the config sets use_cpu: true; drop --gpus or pass --set use_cpu=false", param="--gpus"
            )
        return [], notes
    from lf_tuner.train.gpus import detect_gpus, named_gpus

    gpus = detect_gpus(select)
    if not gpus and not planning:
        raise LfTunerError(
            "gpus: no GPU found (NVML sees none; check `nvidia-smi` and CUDA_VISIBLE_DEVICES); "
            "train on the CPU with --cpu, or look at the plan with --dry-run"
        )
    if not gpus:
        named = ",".join(str(i) for i in named_gpus(select))
        notes.append(
            f"note: NVML sees no GPU here; planning for GPU {named} from --gpus {select}"
            if named
            else "note: NVML sees no GPU here; the plan leaves CUDA_VISIBLE_DEVICES as it is "
            "(name the GPUs with --gpus 0,1 to plan for them)"
        )
    return gpus, notes


def check_fit(
    cfg: TrainConfig,
    gpus: Sequence[GpuInfo],
    *,
    fit: bool,
    force: bool,
    say: Say,
    fsdp: Fsdp | None = None,
) -> Estimate | None:
    """The estimate (None when there is none). When it exceeds a GPU's free memory: apply the first
    change that fits (`fit`, to `cfg` in place), go on anyway (`force`), or raise. `fsdp`: the layout of an
    accelerate config the run is launched with."""
    from lf_tuner.config import check_fit as estimate_fit
    from lf_tuner.train.gpus import gpu_budgets

    try:
        result = estimate_fit(cfg, gpu_budgets(gpus), gpus=max(1, len(gpus)), fsdp=fsdp)
    except LfTunerError as exc:
        say(f"warning: no memory estimate ({exc.message})")
        return None
    est = result.estimate
    if result.report is None or result.fits:
        return est
    say(f"estimated peak {est.total_gib:.2f} GiB per GPU")
    for line in result.report.lines:
        say(line)
    if fit and (change := result.change) is not None:
        cfg.update(change.overrides)
        say(f"--fit: applied `{change.description}`")
        return check_fit(cfg, gpus, fit=False, force=force, say=say, fsdp=fsdp)
    if force:
        say("--force: running anyway")
        return est
    raise LfTunerError(
        "estimate: the run does not fit the free GPU memory; rerun with --fit to apply the first "
        "change above, or --force to run anyway"
    )


def prepare_output_dir(
    cfg: TrainConfig, config: Path | None, *, resume: bool, overwrite: bool, rank: int
) -> Path:
    """Refuse a non-empty output_dir unless `resume` or `overwrite`; set overwrite_output_dir to match.

    Only node rank 0 looks at the directory (other nodes may share it). `config`, the file the user passed,
    does not count as content. Also sets the logging keys lf-tuner's watch needs, unless the config sets them.
    """
    if not cfg.get("output_dir"):
        raise LfTunerError("output_dir: missing; set it in the config or pass --set output_dir=DIR")
    out = Path(str(cfg["output_dir"])).expanduser()
    if problem := folder_problem(out):
        raise LfTunerError(f"output_dir: {problem}; set another with --set output_dir=DIR")
    ignore = [config] if config is not None else []
    state = output_dir_state(out, ignore=ignore) if rank == 0 else "empty"
    if resume:
        if state != "checkpoint" and rank == 0:
            raise LfTunerError(f"output_dir: {out} has no checkpoint-* to resume from; drop --resume")
        cfg["overwrite_output_dir"] = False
    elif overwrite:
        cfg["overwrite_output_dir"] = True
    elif state != "empty":
        raise LfTunerError(
            f"output_dir: {out} is not empty; pass --resume to continue from its last checkpoint "
            "or --overwrite to start over"
        )
    else:
        cfg["overwrite_output_dir"] = True  # nothing there to lose; OOM retries start clean
    cfg.setdefault("include_num_input_tokens_seen", True)  # tokens/s in trainer_log.jsonl
    cfg.setdefault("logging_nan_inf_filter", False)  # a NaN loss must be visible to be caught
    return out


def check_config(cfg: TrainConfig) -> None:
    """Raise one error listing every schema problem and every missing file (model, data, DeepSpeed JSON)."""
    from lf_tuner.config import check_config as check_schema

    problems = [str(p) for p in check_schema(cfg, use_llamafactory=False)] + local_problems(cfg)
    if problems:
        raise ProblemsError(problems)


def gpu_ids(gpus: Sequence[GpuInfo], select: str | None, *, cpu: bool) -> list[int]:
    """The NVML indices to make visible. Without NVML (planning on a login node), `--gpus 0,2` still names GPUs
    0 and 2, `--gpus 0` GPU 0 and `--gpus 2` the first two (`gpus.named_gpus`)."""
    if cpu:
        return []
    if gpus:
        return [g.index for g in gpus]
    from lf_tuner.train.gpus import named_gpus

    return named_gpus(select)


@dataclass
class Plan:
    """What preflight decided: the config and where it goes, the command, the GPUs and the estimate."""

    cfg: TrainConfig
    command: Command
    config_path: Path  # kept in output_dir
    staged_path: Path  # the path the child is given (a copy elsewhere when torchrun would split config_path)
    output_dir: Path
    gpus: list[GpuInfo]
    estimate: Estimate | None
    nnodes: int = 1
    node_rank: int = 0

    @property
    def estimated_gib(self) -> float | None:
        """The estimated peak per GPU as the plan and the run record show it (GiB, 3 decimals)."""
        return None if self.estimate is None else round(self.estimate.total_gib, 3)

    @property
    def log_path(self) -> Path:
        """The child's output, beside the run's results."""
        return self.output_dir / LOG_NAME

    @property
    def record_path(self) -> Path:
        return records.record_path(self.output_dir, self.node_rank)

    def write_config(self, cfg: Mapping[str, Any]) -> None:
        """Write `cfg` where the plan keeps it, and where the child reads it."""
        write_config(cfg, self.config_path, self.staged_path)

    def as_dict(self) -> dict[str, Any]:
        """What `--dry-run --json` prints."""
        return {
            "config_path": str(self.config_path),
            "argv": self.command.argv,
            "env": self.command.env,
            "gpus": [gpu_summary(g) for g in self.gpus],
            "estimate": None if self.estimate is None else self.estimate.as_dict(),
            "output_dir": str(self.output_dir),
        }

    def describe(self) -> list[str]:
        """What `--dry-run` prints: GPUs, estimate, config, env and argv, one line each."""
        shown = [gpu_summary(g) for g in self.gpus]
        gpus = ", ".join(f"{g['index']} {g['name']} ({g['free_gib']:.1f} GiB free)" for g in shown)
        staged = f" (staged as {self.staged_path})" if self.staged_path != self.config_path else ""
        env = " ".join(f"{k}={v}" for k, v in self.command.env.items())
        est = "unavailable" if self.estimated_gib is None else f"{self.estimated_gib:.2f} GiB per GPU"
        return [
            f"gpus:     {gpus or 'none (CPU)'}",
            f"estimate: {est}",
            f"config:   {self.config_path}{staged}",
            f"env:      {env or '(unchanged)'}",
            "argv:     " + " ".join(self.command.argv),
        ]


def make_plan(
    cfg: TrainConfig,
    output_dir: Path,
    gpus: list[GpuInfo],
    estimate: Estimate | None,
    *,
    cli: str,
    select: str | None,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    ray_workers: int | None = None,
    accelerate_config: Path | None = None,
) -> Plan:
    """The command for this node, and where the config is kept and staged (no file is written yet)."""
    cpu = bool(cfg.get("use_cpu"))
    ids = gpu_ids(gpus, select, cpu=cpu)
    deepspeed = bool(cfg.get("deepspeed"))
    torchrun = uses_torchrun(
        num_gpus=len(ids),
        deepspeed=deepspeed,
        nnodes=nnodes,
        ray=ray_workers is not None,
        accelerate=accelerate_config is not None,
    )
    kept = records.config_path(output_dir, node_rank)
    staged = staged_path(kept, torchrun=torchrun)
    command = build_command(
        str(staged),
        cli=cli,
        gpus=ids or None,
        cpu=cpu,
        deepspeed=deepspeed,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        ray_workers=ray_workers,
        accelerate_config=str(accelerate_config.absolute()) if accelerate_config is not None else None,
    )
    return Plan(cfg, command, kept, staged, output_dir, gpus, estimate, nnodes, node_rank)


def write_slurm(
    path: Path,
    cfg: Mapping[str, Any],
    kept: Path,
    *,
    select: str | None,
    gpus: Sequence[GpuInfo],
    nnodes: int,
    master_port: int | None,
    force: bool,
) -> None:
    """Write a SLURM batch script that runs the config kept in output_dir on `nnodes` nodes, and that config.

    GPUs per node: as many as `--gpus` (`select`) names, else the GPUs found here (at least 1).
    """
    from lf_tuner.train.slurm import render_slurm_script

    if path.exists() and not force:
        raise LfTunerError(f"slurm_script: {path} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise LfTunerError(f"slurm_script: {path.parent} is not a folder; create it first or write elsewhere")
    from lf_tuner.train.gpus import named_gpus

    per_node = len(named_gpus(select)) or max(1, len(gpus))
    script = render_slurm_script(
        str(kept.absolute()),
        nnodes=nnodes,
        gpus_per_node=per_node,
        master_port=master_port or DEFAULT_MASTER_PORT,
    )
    write_config(cfg, kept)
    path.write_text(script, encoding="utf-8")


# --------------------------------------------------------------------------------------------- preflight


def local_problems(cfg: Mapping[str, Any], *, cwd: Path | None = None) -> list[str]:
    """`key: message` lines for what the config points at but is not there (model, datasets, DeepSpeed file).

    LLaMA-Factory resolves relative paths against the working directory, so these checks do too.
    """
    from lf_tuner.config import check_files

    base = cwd or Path.cwd()
    problems: list[str] = []
    model = cfg.get("model_name_or_path")
    if not model:
        problems.append("model_name_or_path: missing; set it to a model directory or a Hugging Face id")
    else:
        text = str(model)
        path = Path(text).expanduser()
        path = path if path.is_absolute() else base / path
        looks_local = text.startswith((".", "/", "~")) or text.count("/") != 1
        if looks_local and not path.exists():
            problems.append(
                f"model_name_or_path: {text} does not exist; point it at a model directory or a hub id"
            )
        elif path.is_dir() and not (path / "config.json").is_file():
            problems.append(
                f"model_name_or_path: {text} has no config.json; is it a Hugging Face model directory?"
            )
    if not cfg.get("dataset") and cfg.get("do_train", True):
        problems.append("dataset: missing; name the dataset(s) registered in dataset_info.json")
    problems.extend(str(p) for p in check_files(cfg, base_dir=base))
    deepspeed = cfg.get("deepspeed")
    if isinstance(deepspeed, str) and deepspeed:
        ds_path = Path(deepspeed).expanduser()
        ds_path = ds_path if ds_path.is_absolute() else base / ds_path
        if not ds_path.is_file():
            problems.append(
                f"deepspeed: {deepspeed} does not exist; `lf-tuner render` writes the DeepSpeed JSON"
            )
    if cfg.get("use_cpu") and (cfg.get("bf16") or cfg.get("fp16") or cfg.get("pure_bf16")):
        problems.append(
            "bf16: mixed precision needs a GPU; set bf16: false (and fp16: false) with use_cpu: true"
        )
    return problems


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be (or become) a folder lf-tuner writes into, or None: it is a file, a file stands
    where one of its parents should be, or the nearest existing folder is not writable."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        return f"{existing} is a file, so {path} cannot be a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (permission denied)"
    return None


OutputState = str  # "empty" | "checkpoint" | "nonempty"


def output_dir_state(output_dir: Path, *, ignore: Sequence[Path] = ()) -> OutputState:
    """'empty' (or missing), 'checkpoint' (holds checkpoint-*), or 'nonempty'."""
    if not output_dir.is_dir():
        return "empty"
    ignored = {p.resolve() for p in ignore}
    entries = [p for p in output_dir.iterdir() if p.resolve() not in ignored]
    if not entries:
        return "empty"
    if any(p.is_dir() and p.name.startswith("checkpoint-") for p in entries):
        return "checkpoint"
    return "nonempty"
