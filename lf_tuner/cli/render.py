"""`lf-tuner render`: a checked llamafactory-cli train YAML from a preset, options and overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from lf_tuner.config import DEEPSPEED_CHOICES, METHODS


def _say(message: str) -> None:
    click.echo(message, err=True)


def _cutoff(value: str | None) -> int | Literal["auto"] | None:
    if value is None:
        return None
    if value == "auto":
        return "auto"
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter(f"`{value}` is not a positive whole number or `auto`", param_hint="--cutoff")


@click.command("render")
@click.argument("overrides", nargs=-1)
@click.option("--preset", help="Preset name (`lf-tuner presets ls`) or preset file; default: `default`.")
@click.option("--model", help="Catalog name, Hub id or local model directory.")
@click.option("--dataset", help="Name in dataset_info.json, or a .json/.jsonl file (registered for you).")
@click.option("--dataset-dir", help="Directory holding dataset_info.json.")
@click.option("--template", help="LLaMA-Factory chat template; inferred from the model family when absent.")
@click.option("--method", type=click.Choice(METHODS), help="Fine-tuning method; default: the preset's.")
@click.option("--output-dir", help="Where LLaMA-Factory writes the run.")
@click.option("--cutoff", help="cutoff_len: a number, or `auto` to measure the dataset (95th percentile).")
@click.option(
    "--data-size",
    type=click.IntRange(min=1),
    help="Training samples (picks the epochs); counted when absent.",
)
@click.option(
    "--gpu-memory",
    type=click.FloatRange(min=1),
    help="GiB per GPU (picks the batch size); detected when absent.",
)
@click.option(
    "--gpus", type=click.IntRange(min=1), help="GPUs per node for --fit and --slurm; detected when absent."
)
@click.option(
    "--fit", is_flag=True, help="Change batch/accumulation, Liger, QLoRA or ZeRO until the estimate fits."
)
@click.option("--deepspeed", type=click.Choice(DEEPSPEED_CHOICES), help="Write a DeepSpeed JSON and use it.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout."
)
@click.option("--force", is_flag=True, help="Replace the -o and --slurm files if they exist (nothing else).")
@click.option("--explain", is_flag=True, help="Print each chosen value and why on stderr.")
@click.option("--schema-only", is_flag=True, help="Skip LLaMA-Factory's own parser in the check.")
@click.option(
    "--slurm", type=click.Path(dir_okay=False, path_type=Path), help="Also write a SLURM script (needs -o)."
)
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes for --slurm.")
def command(
    overrides: tuple[str, ...],
    preset: str | None,
    model: str | None,
    dataset: str | None,
    dataset_dir: str | None,
    template: str | None,
    method: str | None,
    output_dir: str | None,
    cutoff: str | None,
    data_size: int | None,
    gpu_memory: float | None,
    gpus: int | None,
    fit: bool,
    deepspeed: str | None,
    output: Path | None,
    force: bool,
    explain: bool,
    schema_only: bool,
    slurm: Path | None,
    nnodes: int,
) -> None:
    """Render a llamafactory-cli train YAML; `key=value` / `~key` overrides go after the options.

    To stdout, nothing else is written (what -o would also write is said on stderr). With -o FILE, a data file
    given to --dataset is registered in its folder's dataset_info.json (an existing entry is never changed)
    and --deepspeed writes its JSON beside FILE.

    \b
      lf-tuner render --preset security -o security.yaml
      lf-tuner render --preset chatbot --model Qwen2.5-7B-Instruct --dataset chat.json learning_rate=1e-5
    """
    from lf_tuner.config import (
        RenderRequest,
        check_outputs,
        check_rendered,
        deepspeed_kind,
        fit_config,
        render_train_config,
        unwritten,
        with_deepspeed,
        write_rendered,
    )
    from lf_tuner.train import fit_target, smallest_gpu_gib

    if slurm is not None and output is None:
        raise click.BadParameter("--slurm needs -o FILE (the script runs that config)", param_hint="--slurm")
    check_outputs([p for p in (output, slurm) if p is not None], force)
    request = RenderRequest(
        preset=preset,
        model=model,
        dataset=dataset,
        dataset_dir=dataset_dir,
        template=template,
        method=method,
        output_dir=output_dir,
        cutoff=_cutoff(cutoff),
        overrides=overrides,
        data_size=data_size,
        gpu_memory_gib=gpu_memory,
    )
    rendered = render_train_config(request, detect_gpu_gib=smallest_gpu_gib)
    messages: list[str] = []
    if fit:
        per_gpu, count = fit_target(gpu_memory, gpus)
        rendered, messages = fit_config(rendered, gpu_bytes=per_gpu, gpus=count)
    ds_kind = deepspeed or deepspeed_kind(rendered.config.get("deepspeed", ""))
    ds_path: Path | None = None
    if ds_kind is not None:
        rendered, ds_path = with_deepspeed(rendered, ds_kind, output.parent if output else Path.cwd())
    for problem in check_rendered(rendered, ds_kind, use_llamafactory=False if schema_only else None):
        _say(f"warning: {problem} (LLaMA-Factory will stop there)")
    if output is None:
        for note in unwritten(rendered, ds_kind, ds_path):
            _say(f"note: not written: {note}")
        click.echo(rendered.yaml, nl=False)
    else:
        write_rendered(rendered, output, ds_kind, ds_path, say=_say)
    for line in messages:
        _say(f"fit: {line}")
    if explain:
        for note in rendered.notes:
            _say(f"why: {note}")
    if slurm is not None and output is not None:
        from lf_tuner.train import render_slurm_script

        script = render_slurm_script(str(output.resolve()), nnodes=nnodes, gpus_per_node=gpus or 1)
        slurm.write_text(script, encoding="utf-8")
        _say(f"wrote {slurm}")
