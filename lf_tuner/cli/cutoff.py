"""`lf-tuner cutoff`: choose cutoff_len from the data, counted as LLaMA-Factory counts it."""

from __future__ import annotations

import json
from pathlib import Path

import click


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
@click.option("--stage", type=click.Choice(["pt", "sft", "rm", "dpo", "kto"]),
              help="Training stage: which processor's lengths [the config's, else sft].")  # fmt: skip
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
            fmt: str | None, template: str | None, stage: str | None, tokenizer: Path | None, tiktoken_spec: str | None,
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
    from lf_tuner.config import load_mapping
    from lf_tuner.memory import lora_vram_gib

    if list_templates:
        click.echo("\n".join(template_names()))
        return
    if (drop_longer_than is None) != (output is None):
        raise click.UsageError("--drop-longer-than and --output go together")
    if tokenizer and tiktoken_spec:
        raise click.UsageError("pass --tokenizer or --tiktoken, not both")
    if sum(x is not None for x in (data, dataset, config_path)) != 1 and not (config_path and dataset):
        raise click.UsageError("pass a data file, --dataset NAME --dataset-dir DIR, or --config train.yaml")
    cfg = load_mapping(config_path) if config_path else {}
    model = model or cfg.get("model_name_or_path")
    if data is not None and not data.exists():
        raise click.BadParameter(f"{data} does not exist", param_hint="DATA")
    stage = lengths.config_stage(cfg, stage)
    attrs = lengths.resolve_data(data, dataset, dataset_dir, cfg, fmt, stage)
    tpl = lengths.config_template(
        {**cfg, **({"template": template} if template else {})}, lengths.model_template(model)
    )
    counter = lengths.token_counter(tokenizer, tiktoken_spec, model,
                                    trust_remote_code=bool(cfg.get("trust_remote_code", False)))  # fmt: skip
    if counter is None:
        raise click.UsageError(
            "pass --tokenizer DIR (the model's own) or --tiktoken o200k_base (approximate)"
        )
    measurer = lengths.config_counter(cfg, tpl, counter, lengths.model_folder(tokenizer, model), stage)
    m = measurer.measure(
        attrs, max_samples=max_samples or cfg.get("max_samples"), strict=strict, keep_rows=output is not None
    )
    rec = lengths.recommend(list(m.total), percentile_=percentile, multiple=multiple,
                            max_positions=lengths.model_max_positions(model))  # fmt: skip
    vram = lora_vram_gib(model, cfg, rec.cutoff)
    report = lengths.build_report(m, rec, template=tpl.name, counter=counter, cfg=cfg, vram_gib=vram)
    if plot:
        lengths.plot(m.total, rec, str(plot))
    if output and drop_longer_than:
        if len(attrs) != 1:
            raise click.UsageError("--output filters one dataset at a time; pass a single --dataset")
        report.dropped, report.written = lengths.drop_longer(attrs[0], m, drop_longer_than, output, force)
        click.echo(
            f"wrote {report.written} rows to {output} (dropped {report.dropped} samples over "
            f"{drop_longer_than} tokens)",
            err=True,
        )
    click.echo(
        json.dumps(report.to_dict(), indent=2)
        if as_json
        else "\n".join(lengths.human_lines(m, rec, report, attrs))
    )
    for location, reason in m.skipped_examples:
        click.echo(f"warning: skipped {location}: {reason}", err=True)
