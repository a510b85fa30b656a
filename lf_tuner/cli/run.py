"""`lf-tuner run`: preflight, launch `llamafactory-cli train` on the chosen GPUs, watch it, record it."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lf_tuner.config import load_mapping

if TYPE_CHECKING:
    from lf_tuner.memory import Fsdp
    from lf_tuner.train import Plan

RENDER_OPTIONS = ("preset", "model", "dataset", "dataset_dir", "template", "method", "output_dir", "cutoff")
LAUNCH_OPTIONS = ("nnodes", "node_rank", "master_addr", "master_port", "ray_workers", "accelerate_config")


def _say(message: str) -> None:
    """A line for people on stderr; a terminal closed under a running run (SIGHUP) must not stop its record."""
    with contextlib.suppress(OSError):
        click.echo(message, err=True)


@click.command("run")
@click.argument("config", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--preset", help="Render from this preset instead of CONFIG.")
@click.option("--model", help="Model directory or catalog name (render options).")
@click.option("--dataset", help="Dataset name(s) in dataset_info.json (render options).")
@click.option("--dataset-dir", help="Directory holding dataset_info.json (render options).")
@click.option("--template", help="LLaMA-Factory chat template (render options).")
@click.option("--method", help="Fine-tuning method: lora, qlora, freeze or full (render options).")
@click.option("--output-dir", help="Where the run writes its results (render options).")
@click.option("--cutoff", type=click.IntRange(min=1), help="cutoff_len (render options).")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (~key removes)."
)
@click.option("--gpus", help="all, a count (2), positions among visible GPUs (0 or 1, or 0,2), or cpu.")
@click.option("--cpu", is_flag=True, help="Train on the CPU: sets use_cpu and hides every GPU.")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--master-addr", help="Address of node rank 0 (several nodes).")
@click.option("--master-port", type=click.IntRange(1, 65535), help="Port on node rank 0 (default 29500).")
@click.option("--ray", "ray_workers", type=click.IntRange(min=1), metavar="WORKERS", help="Run through Ray.")
@click.option(
    "--accelerate-config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Launch with `accelerate launch --config_file FILE` (FSDP, as in LLaMA-Factory's examples/accelerate/).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Plan (--dry-run) or run record as JSON on stdout.")
@click.option("--fit", is_flag=True, help="If it does not fit, apply the best change and run.")
@click.option(
    "--force", is_flag=True, help="Run even if the estimate does not fit; replace --slurm-script FILE."
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in output_dir.")
@click.option("--overwrite", is_flag=True, help="Start over in a non-empty output_dir.")
@click.option("--retry-oom", type=click.IntRange(min=0), default=0, show_default=True, metavar="N")
@click.option("--stop-on-nan/--no-stop-on-nan", default=True, show_default=True)
@click.option("--llamafactory-cli", "cli_path", metavar="PATH", help="The llamafactory-cli to start.")
@click.option(
    "--slurm-script",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a SLURM script; run nothing.",
)
@click.option("--yes", "-y", is_flag=True, hidden=True, help="Deprecated: does nothing (run never asks).")
@click.option("--verbose", "-v", is_flag=True, help="Show the child's output, not only the progress.")
def command(config: Path | None, overrides: tuple[str, ...], **o: Any) -> None:
    """Check a LLaMA-Factory training run, start it on the chosen GPUs, watch it and record it.

    \b
      lf-tuner run train.yaml                       # preflight, then train on the visible GPUs
      lf-tuner run train.yaml --gpus 0,2 --dry-run  # show GPUs, estimate, argv and env; start nothing
      lf-tuner run train.yaml --cpu                 # CPU run (tiny models, tests)
    """
    from lf_tuner.train import config_path, preflight

    if o["yes"]:
        _say("warning: --yes is deprecated and does nothing (run never asks); drop it")
    if o["resume"] and o["overwrite"]:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if o["cpu"] and o["gpus"] is not None and o["gpus"].strip().lower() != "cpu":
        raise click.UsageError("--cpu and --gpus exclude each other")
    rank = o["node_rank"]
    if rank >= o["nnodes"]:
        raise click.BadParameter(f"must be below --nnodes ({o['nnodes']})", param_hint="--node-rank")
    if o["accelerate_config"] is not None and o["slurm_script"] is not None:
        raise click.UsageError(
            "--slurm-script starts llamafactory-cli under torchrun; drop --accelerate-config"
        )
    planning = o["dry_run"] or o["slurm_script"] is not None
    cli = preflight.find_cli(o["cli_path"], needed=not planning)
    render = {k: o[k] for k in RENDER_OPTIONS}
    if problem := preflight.source_problem(config is not None, render):
        raise click.UsageError(problem)
    base = load_mapping(config) if config is not None else None
    cfg = preflight.load_config(base, render, list(overrides))
    gpus, notes = preflight.choose_gpus(cfg, o["gpus"], cpu=o["cpu"], planning=planning)
    for note in notes:
        _say(note)
    preflight.check_config(cfg)  # every problem at once, before the output directory is looked at
    out = preflight.prepare_output_dir(cfg, config, resume=o["resume"], overwrite=o["overwrite"], rank=rank)
    fsdp = _fsdp(o["accelerate_config"])
    estimate = preflight.check_fit(cfg, gpus, fit=o["fit"], force=o["force"], say=_say, fsdp=fsdp)
    if o["slurm_script"] is not None:
        kept = config_path(out, rank)
        preflight.write_slurm(
            o["slurm_script"],
            cfg,
            kept,
            select=o["gpus"],
            gpus=gpus,
            force=o["force"],
            nnodes=o["nnodes"],
            master_port=o["master_port"],
        )
        _say(f"wrote {o['slurm_script']} and {kept}; submit it with `sbatch {o['slurm_script']}`")
        return
    launch_options = {k: o[k] for k in LAUNCH_OPTIONS}
    plan = preflight.make_plan(cfg, out, gpus, estimate, cli=cli, select=o["gpus"], **launch_options)
    if o["dry_run"]:
        click.echo(json.dumps(plan.as_dict(), indent=2) if o["as_json"] else "\n".join(plan.describe()))
        return
    plan.write_config(cfg)
    _run(plan, o)


def _fsdp(path: Path | None) -> Fsdp | None:
    """The FSDP layout of an accelerate config, for the estimate."""
    from lf_tuner.memory import fsdp_from_accelerate

    if path is None:
        return None
    return fsdp_from_accelerate(load_mapping(path))


def _run(plan: Plan, o: dict[str, Any]) -> None:
    """Start the child (with OOM retries) showing its progress, record the run, and exit as it ended."""
    from lf_tuner.cli.progress import ProgressView
    from lf_tuner.train import run_plan

    cmd = plan.command
    _say(f"lf-tuner: {' '.join(f'{k}={v}' for k, v in cmd.env.items())} {' '.join(cmd.argv)}")
    _say(f"lf-tuner: output in {plan.log_path}")
    with ProgressView(sys.stderr) as view:
        done = run_plan(
            plan,
            retry_oom=o["retry_oom"],
            stop_on_nan=o["stop_on_nan"],
            overwrite=o["overwrite"],
            on_progress=view.update,
            on_retry=lambda n, change: _say(f"out of memory; retry {n}: {change}"),
            echo=sys.stderr if o["verbose"] else None,
        )
    record, last, where = done.record, done.last, f"log: {plan.log_path}; record: {plan.record_path}"
    if o["as_json"]:
        click.echo(json.dumps(record.model_dump(mode="json"), indent=2))
    if done.index_problem:
        _say(f"warning: the run is not in `lf-tuner runs`: {done.index_problem}")
    if last.status == "completed":
        loss = f", final loss {record.final_train_loss:.4f}" if record.final_train_loss is not None else ""
        _say(f"completed in {record.runtime_s:.1f} s{loss}; record: {plan.record_path}")
        return
    if last.status == "failed":
        for line in last.result.tail[-15:]:
            _say(f"  | {line}")
    _say(f"Error: {last.status}: {record.reason}; {where}")
    sys.exit(last.exit_code or 1)
