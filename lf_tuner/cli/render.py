"""`lf-tuner render`: a checked llamafactory-cli train YAML from a preset, options and overrides."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lf_tuner.config.presets import METHODS
from lf_tuner.config.render import (
    DEEPSPEED_CHOICES,
    Rendered,
    deepspeed_filename,
    deepspeed_kind,
    fit_config,
    merge_dataset_info,
    render_deepspeed,
    render_train_config,
    with_changes,
)
from lf_tuner.config.validate import check_config
from lf_tuner.errors import LfTunerError, ProblemsError
from lf_tuner.train.gpus import smallest_gpu_gib


def _cutoff(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter(f"`{value}` is not a positive whole number or `auto`", param_hint="--cutoff")


def _refuse_existing(paths: list[Path], force: bool) -> None:
    for path in paths:
        if path.exists() and not force:
            raise LfTunerError(f"{path} exists; pass --force to overwrite it or choose another file")


def _gpus(gpu_memory: float | None, gpus: int | None) -> tuple[int, int]:
    """(bytes per GPU, GPU count) from the flags or the detected GPUs."""
    from lf_tuner.train.gpus import detect_gpus

    found = detect_gpus()
    if gpu_memory is None and not found:
        raise click.BadParameter("no GPU found; pass --gpu-memory GIB (per GPU)", param_hint="--fit")
    per_gpu = int(gpu_memory * 2**30) if gpu_memory is not None else min(g.total_bytes for g in found)
    return per_gpu, gpus or max(1, len(found))


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
@click.option("--force", is_flag=True, help="Overwrite existing files.")
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

    \b
      lf-tuner render --preset security -o security.yaml
      lf-tuner render --preset chatbot --model Qwen2.5-7B-Instruct --dataset chat.json learning_rate=1e-5
    """
    if slurm is not None and output is None:
        raise click.BadParameter("--slurm needs -o FILE (the script runs that config)", param_hint="--slurm")
    _refuse_existing([p for p in (output, slurm) if p is not None], force)
    rendered = render_train_config(
        preset=preset,
        model=model,
        dataset=dataset,
        dataset_dir=dataset_dir,
        template=template,
        method=method,
        output_dir=output_dir,
        cutoff=_cutoff(cutoff),
        overrides=list(overrides),
        data_size=data_size,
        gpu_memory_gib=gpu_memory,
        detect_gpu_gib=smallest_gpu_gib,
        explain=explain,
    )
    messages: list[str] = []
    if fit:
        per_gpu, count = _gpus(gpu_memory, gpus)
        rendered, messages = fit_config(rendered, gpu_bytes=per_gpu, gpus=count)
    ds_kind = deepspeed or deepspeed_kind(rendered.config.get("deepspeed", ""))
    ds_path: Path | None = None
    if ds_kind is not None:
        ds_path = ((output.parent if output else Path.cwd()) / deepspeed_filename(ds_kind)).resolve()
        rendered = with_changes(rendered, {"deepspeed": str(ds_path)}, {"deepspeed": f"ZeRO {ds_kind}"})
    _check(rendered, ds_kind, schema_only)
    _write(rendered, output, ds_kind, ds_path, force)
    for line in messages:
        click.echo(f"fit: {line}", err=True)
    if explain:
        for note in rendered.notes:
            click.echo(f"why: {note}", err=True)
    if slurm is not None and output is not None:
        from lf_tuner.train.slurm import render_slurm_script

        script = render_slurm_script(str(output.resolve()), nnodes=nnodes, gpus_per_node=gpus or 1)
        slurm.write_text(script, encoding="utf-8")
        click.echo(f"wrote {slurm}", err=True)


def _check(rendered: Rendered, ds_kind: str | None, schema_only: bool) -> None:
    ds = json.loads(render_deepspeed(ds_kind)) if ds_kind is not None else None
    problems = check_config(rendered.config, use_llamafactory=False if schema_only else None, deepspeed=ds)
    if problems:
        raise ProblemsError(problems, "rendered config")


def _write(
    rendered: Rendered, output: Path | None, ds_kind: str | None, ds_path: Path | None, force: bool
) -> None:
    info_text = merge_dataset_info(rendered.dataset_info, force=force) if rendered.dataset_info else None
    if ds_kind is not None and ds_path is not None:
        text = render_deepspeed(ds_kind)
        if ds_path.exists() and ds_path.read_text(encoding="utf-8") != text and not force:
            raise LfTunerError(f"{ds_path} exists with other content; pass --force to overwrite it")
        ds_path.write_text(text, encoding="utf-8")
    if info_text is not None and rendered.dataset_info is not None:
        rendered.dataset_info.path.parent.mkdir(parents=True, exist_ok=True)
        rendered.dataset_info.path.write_text(info_text, encoding="utf-8")
        click.echo(f"registered `{rendered.dataset_info.name}` in {rendered.dataset_info.path}", err=True)
    if output is None:
        click.echo(rendered.yaml, nl=False)
    else:
        output.write_text(rendered.yaml, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
