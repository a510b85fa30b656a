"""`lf-tuner cutoff`: choose cutoff_len from the data, counted as LLaMA-Factory counts it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lf_tuner.errors import LfTunerError


@click.command("cutoff")
@click.argument("data", required=False, type=click.Path(dir_okay=True, path_type=Path))
@click.option("--dataset", help="Dataset name(s) from dataset_info.json, comma-separated.")
@click.option("--dataset-dir", type=click.Path(path_type=Path), help="Folder with dataset_info.json [data].")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="LLaMA-Factory train YAML: dataset, dataset_dir, template, model, cutoff_len.")  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["alpaca", "sharegpt", "openai"]), help="Data format [detected]."
)
@click.option("--template", help="LLaMA-Factory template name (qwen3, llama3, mistral, ...).")
@click.option(
    "--tokenizer", type=click.Path(path_type=Path), help="Model or tokenizer directory [the model's]."
)
@click.option(
    "--tiktoken", "tiktoken_spec", help="o200k_base, cl100k_base or a .tiktoken file (approximate)."
)
@click.option(
    "--model", help="Model name or directory: max positions, VRAM at the cutoff, default tokenizer."
)
@click.option("--percentile", type=click.FloatRange(0, 100, min_open=True), default=95.0, show_default=True)
@click.option("--multiple", type=click.IntRange(min=1), default=128, show_default=True, help="Round up to.")
@click.option("--max-samples", type=click.IntRange(min=1), help="Read only the first N rows of each dataset.")
@click.option("--strict", is_flag=True, help="Fail on the first invalid row instead of skipping it.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write distribution + CDF PNG.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option(
    "--drop-longer-than", type=click.IntRange(min=1), help="With --output: drop samples over N tokens."
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Filtered copy of the dataset."
)
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--list-templates", is_flag=True, help="List LLaMA-Factory template names and exit.")
def command(data: Path | None, dataset: str | None, dataset_dir: Path | None, config_path: Path | None,
            fmt: str | None, template: str | None, tokenizer: Path | None, tiktoken_spec: str | None,
            model: str | None, percentile: float, multiple: int, max_samples: int | None, strict: bool,
            plot: Path | None, as_json: bool, drop_longer_than: int | None, output: Path | None, force: bool,
            list_templates: bool) -> None:  # fmt: skip
    """Measure token lengths of a dataset with the chat template and recommend cutoff_len.

    \b
    lf-tuner cutoff data.json --tokenizer ./Qwen3-8B --template qwen3
    lf-tuner cutoff --dataset mydata --dataset-dir data --model ./Qwen3-8B --template qwen3
    lf-tuner cutoff --config train.yaml --json
    lf-tuner cutoff data.jsonl --tiktoken o200k_base --template qwen3 --drop-longer-than 4096 --output short.jsonl
    """
    from lf_tuner import lengths
    from lf_tuner.chat import template_names

    if list_templates:
        click.echo("\n".join(template_names()))
        return
    if (drop_longer_than is None) != (output is None):
        raise click.UsageError("--drop-longer-than and --output go together")
    if tokenizer and tiktoken_spec:
        raise click.UsageError("pass --tokenizer or --tiktoken, not both")
    if sum(x is not None for x in (data, dataset, config_path)) != 1 and not (config_path and dataset):
        raise click.UsageError("pass a data file, --dataset NAME --dataset-dir DIR, or --config train.yaml")
    cfg = _read_config(config_path) if config_path else {}
    model = model or cfg.get("model_name_or_path")
    attrs = _datasets(data, dataset, dataset_dir, cfg, fmt)
    tpl = lengths.config_template(
        {**cfg, **({"template": template} if template else {})}, _model_template(model)
    )
    counter = _tokenizer(tokenizer, tiktoken_spec, model)
    m = lengths.LengthCounter(tpl, counter).measure(
        attrs, max_samples=max_samples or cfg.get("max_samples"), strict=strict, keep_rows=output is not None
    )
    rec = lengths.recommend(list(m.total), percentile_=percentile, multiple=multiple,
                            max_positions=lengths.model_max_positions(model))  # fmt: skip
    result = lengths.report(m, rec)
    result.update(template=tpl.name, tokenizer=counter.label, approximate=counter.approximate)
    if cfg.get("cutoff_len"):
        result["config_cutoff_len"] = int(cfg["cutoff_len"])
        result["config_truncated"] = sum(1 for t in m.total if t > int(cfg["cutoff_len"]))
    vram = _vram(model, cfg, rec.cutoff)
    if vram is not None:
        result["lora_vram_gib"] = round(vram, 2)
    if plot:
        lengths.plot(m, rec, str(plot))
    if output and drop_longer_than:
        result["dropped"], result["written"] = _drop(attrs, m, drop_longer_than, output, force)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_human(m, rec, result, attrs)
    for location, reason in m.skipped_examples:
        click.echo(f"warning: skipped {location}: {reason}", err=True)


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LfTunerError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise LfTunerError(f"{path}: must be a mapping of LLaMA-Factory keys")
    return cfg


def _datasets(data: Path | None, dataset: str | None, dataset_dir: Path | None, cfg: dict[str, Any],
              fmt: str | None) -> list[Any]:  # fmt: skip
    from lf_tuner.datasets import attr_for_file, resolve_datasets
    from lf_tuner.lengths import config_datasets

    if data is not None:
        if not data.exists():
            raise click.BadParameter(f"{data} does not exist", param_hint="DATA")
        return [attr_for_file(data, fmt)]  # type: ignore[arg-type]
    names, cfg_dir = config_datasets({**cfg, **({"dataset": dataset} if dataset else {})})
    attrs = resolve_datasets(names, dataset_dir or Path(cfg_dir))
    if fmt:
        for attr in attrs:
            attr.formatting = fmt  # type: ignore[assignment]
    return attrs


def _model_template(model: str | None) -> str | None:
    if not model:
        return None
    try:
        from lf_tuner.models import resolve_model

        return resolve_model(str(model)).template
    except Exception:  # an unknown model just has no default template
        return None


def _tokenizer(tokenizer: Path | None, tiktoken_spec: str | None, model: str | None) -> Any:
    from lf_tuner.tokenize import load_hf_tokenizer, load_tiktoken

    if tiktoken_spec:
        return load_tiktoken(tiktoken_spec)
    if tokenizer is None and model and Path(str(model)).is_dir():
        tokenizer = Path(str(model))
    if tokenizer is None:
        raise click.UsageError(
            "pass --tokenizer DIR (the model's own) or --tiktoken o200k_base (approximate)"
        )
    return load_hf_tokenizer(tokenizer)


def _vram(model: str | None, cfg: dict[str, Any], cutoff: int) -> float | None:
    """LoRA VRAM at the cutoff from lf_tuner.memory, or None when it or the model is unavailable."""
    if not model:
        return None
    try:
        from lf_tuner.memory import estimate, setup_from_config
    except ImportError:
        return None
    run = {"finetuning_type": "lora", "per_device_train_batch_size": 1, "bf16": True, **cfg}
    run.update(model_name_or_path=str(model), cutoff_len=cutoff)
    try:
        return float(estimate(setup_from_config(run)).total_gib)
    except LfTunerError:
        return None


def _drop(attrs: list[Any], m: Any, limit: int, output: Path, force: bool) -> tuple[int, int]:
    from lf_tuner.datasets import write_filtered

    if len(attrs) != 1:
        raise click.UsageError("--output filters one dataset at a time; pass a single --dataset")
    rows = m.row_lengths[attrs[0].name]
    dropped = sum(1 for n in rows if n > limit)
    written = write_filtered(attrs[0], [n <= limit for n in rows], output, force=force)
    return dropped, written


def _print_human(m: Any, rec: Any, result: dict[str, Any], attrs: list[Any]) -> None:
    from lf_tuner.lengths import histogram, stats_table

    for attr in attrs:
        click.echo(f"dataset   {attr.describe()}")
    approx = "  (APPROXIMATE: not the model's tokenizer)" if result["approximate"] else ""
    click.echo(f"template  {result['template']}   tokenizer {result['tokenizer']}{approx}")
    click.echo(f"rows      {m.rows} read, {m.count} samples, {result['skipped']} skipped")
    click.echo("")
    click.echo("\n".join(stats_table(m)))
    click.echo("")
    click.echo("\n".join(histogram(m.total, mark=rec.cutoff)))
    click.echo("")
    cap = f", capped at max positions {rec.capped_at}" if rec.capped_at else ""
    click.echo(f"recommended cutoff_len: {rec.cutoff}  (P{rec.percentile:g} = {rec.percentile_length}, "
               f"rounded up to a multiple of {rec.multiple}{cap})")  # fmt: skip
    click.echo(f"  truncates {rec.truncated} of {m.count} samples ({rec.truncated / m.count:.2%}), "
               f"{rec.truncated_token_share:.2%} of all tokens")  # fmt: skip
    if "config_cutoff_len" in result:
        click.echo(
            f"  config cutoff_len {result['config_cutoff_len']} truncates {result['config_truncated']} samples"
        )
    if "lora_vram_gib" in result:
        click.echo(f"  LoRA VRAM at cutoff_len {rec.cutoff}, batch 1: {result['lora_vram_gib']:.2f} GiB")
    if m.approximate_rows:
        click.echo(
            f"  {m.approximate_rows} samples use tools/function calls: tool prompts counted as raw JSON"
        )
    if "dropped" in result:
        click.echo(f"dropped {result['dropped']} samples; wrote {result['written']} rows")
