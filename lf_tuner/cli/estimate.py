"""`lf-tuner estimate`: peak GPU memory of a LLaMA-Factory run before it starts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.table import Table

from lf_tuner.cli._common import console, show
from lf_tuner.errors import DoesNotFit, LfTunerError
from lf_tuner.memory import (
    ATTENTIONS,
    DEEPSPEED_CHOICES,
    GIB,
    METHODS,
    STAGES,
    Estimate,
    Fsdp,
    TrainSetup,
    estimate,
    fsdp_from_accelerate,
    model_notes,
    report_estimate,
    setup_from_config,
    unsupported,
)
from lf_tuner.models import resolve_config

if TYPE_CHECKING:
    from lf_tuner.config import TrainConfig

LABELS = {
    "weights": "base weights",
    "trainable_params": "trainable params",
    "gradients": "gradients",
    "optimizer_states": "optimizer states",
    "optimizer_step_temp": "optimizer step temporaries",
    "autocast_cache": "autocast weight copies",
    "activations": "activations",
    "logits_loss": "logits + loss",
    "eval_predictions": "gathered predictions",
    "deepspeed_buffers": "DeepSpeed buffers",
    "fsdp_buffers": "FSDP gathered units",
    "comm_buffers": "NCCL buffers",
    "allocator_overhead": "allocator overhead",
    "cuda_context": "CUDA context",
}
FLAG_KEYS = {
    "cutoff": "cutoff_len", "batch": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
    "rank": "lora_rank", "lora_target": "lora_target", "quantization_bit": "quantization_bit", "stage": "stage",
    "optim": "optim", "liger": "enable_liger_kernel", "pure_bf16": "pure_bf16", "packing": "packing",
    "deepspeed": "deepspeed",
}  # fmt: skip


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be positive, got {value}")
    return value


def gather_config(config: Path | None, model: str | None, flags: dict[str, Any]) -> TrainConfig:
    """The run to estimate as LLaMA-Factory keys: the config file (if any), then the flags on top."""
    cfg: TrainConfig = {}
    if config:
        from lf_tuner.config import load_mapping, validate_config  # YAML and the schema: only for a file

        cfg = load_mapping(config)
        if refusal := unsupported(cfg):
            raise LfTunerError(f"{config}: {refusal}")
        problems = [p for p in validate_config(cfg) if p.message.startswith("unknown LLaMA-Factory")]
        if problems:  # unknown keys fail the same way LLaMA-Factory would, before anything else
            raise LfTunerError(f"{config}: " + "; ".join(str(p) for p in problems))
    if model:
        cfg["model_name_or_path"] = model
    elif not cfg.get("model_name_or_path"):
        raise click.UsageError("pass --model NAME|DIR or --config train.yaml")
    for flag, key in FLAG_KEYS.items():
        if flags.get(flag) is not None:
            cfg[key] = flags[flag]
    if flags.get("no_gradient_checkpointing"):
        cfg["disable_gradient_checkpointing"] = True
    if flags.get("attention"):
        cfg["flash_attn"] = {"eager": "disabled"}.get(flags["attention"], flags["attention"])
    method = flags.get("method")
    if method:
        cfg["finetuning_type"] = "lora" if method == "qlora" else method
        if method == "qlora" and not cfg.get("quantization_bit"):
            cfg["quantization_bit"] = 4
    if not config and "per_device_train_batch_size" not in cfg:
        cfg["per_device_train_batch_size"] = 1
    return cfg


def gather_setup(config: Path | None, model: str | None, flags: dict[str, Any]) -> TrainSetup:
    """The run to estimate: the config, the flags and the accelerate config's layout."""
    cfg = gather_config(config, model, flags)
    fsdp: Fsdp | None = None
    gpus, nodes = flags.get("gpus"), flags.get("nodes") or 1
    if flags.get("accelerate_config"):
        from lf_tuner.config import load_mapping

        accelerate = load_mapping(flags["accelerate_config"])
        fsdp = fsdp_from_accelerate(accelerate)
        if gpus is None:
            gpus = int(accelerate.get("num_processes", 1) or 1)
            nodes = int(accelerate.get("num_machines", 1) or 1)
        if fsdp is not None:
            fsdp = replace(fsdp, processes=gpus, machines=nodes)
    setup = setup_from_config(cfg, resolve_config(cfg), gpus=gpus or 1, nodes=nodes, fsdp=fsdp)
    media = {k: flags[k] for k in ("images", "videos") if flags.get(k) is not None}
    return replace(setup, vision=replace(setup.vision, **media)) if media else setup


def title(est: Estimate) -> str:
    s = est.setup
    method = f"q{s.method}" if s.method == "oft" and s.quant_bits else s.method
    method = "qlora" if s.is_lora and s.quant_bits else method
    return (
        f"{s.arch.name} · {method}"
        + (f" · {s.stage}" if s.stage != "sft" else "")
        + f" · cutoff {s.cutoff_len} × batch {s.batch_size}"
        + (f" · {s.gpus} GPUs" if s.gpus > 1 else "")
        + (f" on {s.nodes} nodes" if s.nodes > 1 else "")
        + (f" · {s.layout}" if s.deepspeed or s.fsdp else "")
    )


def render_table(est: Estimate) -> Table:
    head = title(est)
    table = Table(title=head, box=box.SIMPLE_HEAD, title_justify="left", min_width=len(head))
    table.add_column("component")
    table.add_column("GiB", justify="right")
    for name, value in est.components.items():
        table.add_row(LABELS.get(name, name), f"{value / GIB:.2f}")
    table.add_section()
    if est.eval is None:
        table.add_row("peak per GPU", f"{est.total_gib:.2f}")
        return table
    if est.train is not None:
        table.add_row("training peak per GPU", f"{est.train_bytes / GIB:.2f}")
    else:
        table.add_row("training", "none (do_train is off)")
    table.add_row("evaluation peak per GPU", f"{est.eval.total_bytes / GIB:.2f}")
    return table


def eval_line(est: Estimate) -> str | None:
    """What the evaluation peak is made of, one line."""
    if est.eval is None or est.setup.eval is None:
        return None
    ev = est.setup.eval
    shown = ("logits_loss", "activations", "eval_predictions")
    parts = ", ".join(
        f"{LABELS[k]} {v / GIB:.2f} GiB" for k, v in est.eval.components.items() if k in shown and v
    )
    what = "generation" if ev.predict_with_generate and est.setup.stage == "sft" else "eval batch"
    return f"evaluation ({what} {ev.batch_size} × {est.setup.sequence_len} tokens): {parts}"


@click.command("estimate")
@click.option(
    "--model",
    "-m",
    help="Hub id (Qwen/Qwen3-4B), a name from `lf-tuner models`, a model directory or its config.json.",
)
@click.option("--config", "-c", type=click.Path(path_type=Path), help="A LLaMA-Factory training YAML.")
@click.option("--stage", type=click.Choice(STAGES), help="Training stage (default: the config's, or sft).")
@click.option("--method", type=click.Choice(METHODS), help="Fine-tuning method.")
@click.option("--cutoff", type=int, callback=_positive, help="cutoff_len (tokens per sample).")
@click.option("--batch", type=int, callback=_positive, help="per_device_train_batch_size.")
@click.option("--grad-accum", type=int, callback=_positive, help="gradient_accumulation_steps.")
@click.option("--rank", type=int, callback=_positive, help="lora_rank.")
@click.option("--lora-target", help="lora_target: all, or a comma list (q_proj,v_proj).")
@click.option("--quantization-bit", type=click.Choice(["4", "8"]), help="Load the base model in 4 or 8 bit.")
@click.option("--liger/--no-liger", default=None, help="enable_liger_kernel.")
@click.option("--no-gradient-checkpointing", is_flag=True, help="disable_gradient_checkpointing: true.")
@click.option("--attention", type=click.Choice(ATTENTIONS), help="Attention implementation (flash_attn).")
@click.option(
    "--deepspeed", type=click.Choice(DEEPSPEED_CHOICES), help="DeepSpeed ZeRO stage (and CPU offload)."
)
@click.option(
    "--accelerate-config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="An accelerate config (FSDP/FSDP2, as in LLaMA-Factory's examples/accelerate/).",
)
@click.option(
    "--gpus", type=int, callback=_positive, help="GPUs in all nodes (default: 1, or the accelerate config's)."
)
@click.option("--nodes", type=int, callback=_positive, help="Nodes the GPUs are spread over (default: 1).")
@click.option(
    "--pure-bf16", is_flag=True, default=None, help="pure_bf16: bf16 weights, gradients and states."
)
@click.option(
    "--optim", help="Optimizer (adamw_torch_fused, adamw_torch, adamw_8bit, paged_adamw_8bit, sgd, ...)."
)
@click.option("--packing", is_flag=True, default=None, help="Pack samples to exactly cutoff_len.")
@click.option("--gpu-memory", type=float, help="GiB per GPU to check against (default: the detected GPUs).")
@click.option(
    "--max-cutoff",
    "want_max_cutoff",
    is_flag=True,
    help="Print the largest cutoff_len (a multiple of 128) that fits.",
)
@click.option(
    "--check",
    is_flag=True,
    help=f"Exit with status {DoesNotFit.exit_code} when the run does not fit the GPUs it is checked against.",
)
@click.option("--images", type=click.IntRange(min=0), help="Images per sample (vision models; default 1).")
@click.option("--videos", type=click.IntRange(min=0), help="Videos per sample (vision models; default 0).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def command(
    config: Path | None,
    model: str | None,
    gpu_memory: float | None,
    want_max_cutoff: bool,
    check: bool,
    as_json: bool,
    **flags: Any,
) -> None:
    """Peak GPU memory of a run (training, and evaluation when it evaluates), whether it fits, what to change.

    It is checked against --gpu-memory, else the free memory of every detected GPU. Exit status 3: with
    --check, the run does not fit; with --max-cutoff, no cutoff_len fits.
    """
    if flags.get("quantization_bit"):
        flags["quantization_bit"] = int(flags["quantization_bit"])
    if gpu_memory is not None and gpu_memory <= 0:
        raise click.BadParameter(f"must be positive, got {gpu_memory}", param_hint="--gpu-memory")
    from lf_tuner.train import budgets

    setup = gather_setup(config, model, flags)
    est = estimate(setup)
    gpus = budgets(gpu_memory)
    if (want_max_cutoff or check) and not gpus:
        flag = "--max-cutoff" if want_max_cutoff else "--check"
        raise click.UsageError(f"{flag} needs a GPU to check against (none detected): pass --gpu-memory GIB")
    report = report_estimate(est, gpus, want_max_cutoff=want_max_cutoff)
    fit = report.fit
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for about in model_notes(setup):
            console(stderr=True).print(about, highlight=False)
        show(render_table(est))
        lines = [eval_line(est), *(fit.lines if fit else [])]
        if report.max_cutoff:
            lines.append(f"largest cutoff_len that fits: {report.max_cutoff}")
        for line in lines:
            if line:
                console().print(line)
        for note in setup.notes:
            console(stderr=True).print(f"note: {note}")
    if report.max_cutoff_problem:
        raise DoesNotFit(report.max_cutoff_problem)
    if check and fit is not None and not fit.fits:
        short = min(fit.gpus, key=lambda g: g.headroom_gib)
        raise DoesNotFit(
            f"does not fit {short.gpu}: short by {-short.headroom_gib:.2f} GiB; "
            "apply a change listed above, or check against other GPUs (--gpu-memory)"
        )
