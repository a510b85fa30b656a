"""`lf-tuner render`: a checked llamafactory-cli train YAML from a preset, options and overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click

from lf_tuner.config import (
    DEEPSPEED_CHOICES,
    METHODS,
    Rendered,
    RenderRequest,
    check_config,
    check_files,
    deepspeed_filename,
    deepspeed_kind,
    fit_config,
    merge_dataset_info,
    render_deepspeed,
    render_train_config,
    with_changes,
)
from lf_tuner.errors import LfTunerError, ProblemsError
from lf_tuner.train.gpus import smallest_gpu_gib


def _cutoff(value: str | None) -> int | Literal["auto"] | None:
    if value is None:
        return None
    if value == "auto":
        return "auto"
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter(f"`{value}` is not a positive whole number or `auto`", param_hint="--cutoff")


def _check_outputs(paths: list[Path], force: bool) -> None:
    """Before any work: each named output's folder exists, and the output does not unless --force."""
    for path in paths:
        if not path.parent.is_dir():
            raise LfTunerError(f"{path.parent} is not a directory; create it first (mkdir -p {path.parent})")
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
    if slurm is not None and output is None:
        raise click.BadParameter("--slurm needs -o FILE (the script runs that config)", param_hint="--slurm")
    _check_outputs([p for p in (output, slurm) if p is not None], force)
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
        per_gpu, count = _gpus(gpu_memory, gpus)
        rendered, messages = fit_config(rendered, gpu_bytes=per_gpu, gpus=count)
    ds_kind = deepspeed or deepspeed_kind(rendered.config.get("deepspeed", ""))
    ds_path: Path | None = None
    if ds_kind is not None:
        ds_path = ((output.parent if output else Path.cwd()) / deepspeed_filename(ds_kind)).resolve()
        rendered = with_changes(rendered, {"deepspeed": str(ds_path)}, {"deepspeed": f"ZeRO {ds_kind}"})
    _check(rendered, ds_kind, schema_only)
    if output is None:
        _to_stdout(rendered, ds_kind, ds_path)
    else:
        _write(rendered, output, ds_kind, ds_path)
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
    """Every problem stops the render; what the config points at that is not there yet is only a warning
    (data can be registered after rendering), said on stderr."""
    ds = json.loads(render_deepspeed(ds_kind)) if ds_kind is not None else None
    use_parser = False if schema_only else None
    problems = check_config(rendered.config, use_llamafactory=use_parser, deepspeed=ds, arch=rendered.arch)
    if problems:
        raise ProblemsError(problems, "rendered config")
    if rendered.dataset_info is None:
        for problem in check_files(rendered.config):
            click.echo(f"warning: {problem} (LLaMA-Factory will stop there)", err=True)


def _to_stdout(rendered: Rendered, ds_kind: str | None, ds_path: Path | None) -> None:
    """The config on stdout; what `-o FILE` would also write is only said, on stderr."""
    update = rendered.dataset_info
    if update is not None and merge_dataset_info(update) is not None:
        entry = json.dumps(update.entry, ensure_ascii=False)
        click.echo(
            f"note: not written: `{update.name}` is not in {update.path} yet; render with -o FILE to add it, "
            f'or add it yourself: "{update.name}": {entry}',
            err=True,
        )
    if ds_kind is not None and ds_path is not None and not ds_path.is_file():
        click.echo(
            f"note: not written: {ds_path} ({ds_kind}); render with -o FILE to write it beside the config",
            err=True,
        )
    click.echo(rendered.yaml, nl=False)


def _write(rendered: Rendered, output: Path, ds_kind: str | None, ds_path: Path | None) -> None:
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
        click.echo(f"wrote {ds_path}", err=True)
    if info_text is not None and update is not None:
        update.path.write_text(info_text, encoding="utf-8")
        click.echo(f"registered `{update.name}` in {update.path}", err=True)
    output.write_text(rendered.yaml, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)
