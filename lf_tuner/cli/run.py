"""`lf-tuner run`: preflight, launch `llamafactory-cli train` on the chosen GPUs, watch it, record it."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import click

from lf_tuner import launch, runs
from lf_tuner.cli._common import load_yaml_mapping
from lf_tuner.errors import LfTunerError

RENDER_OPTIONS = ("preset", "model", "dataset", "dataset_dir", "template", "method", "output_dir", "cutoff")
INSTALL_HINT = (
    "install it with `pip install 'lf-tuner[train]'` (llamafactory==0.9.5) or pass --llamafactory-cli PATH"
)


def load_config(config: Path | None, render: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The training config: a YAML file with overrides on top, or one rendered from the render options."""
    given = [name for name, value in render.items() if value is not None]
    if config is not None:
        if given:
            raise click.UsageError(
                f"give CONFIG or render options, not both (got --{given[0].replace('_', '-')})"
            )
        from lf_tuner.config.overrides import apply_overrides

        return apply_overrides(load_yaml_mapping(config), overrides)
    if not render["model"] or not render["dataset"] or not render["output_dir"]:
        raise click.UsageError("give CONFIG.yaml, or --model, --dataset and --output-dir to render one")
    from lf_tuner.render import render_train_config

    return dict(
        render_train_config(**render, overrides=overrides, data_size=None, gpu_memory_gib=None).config
    )


def choose_gpus(cfg: dict[str, Any], gpus: str | None, cpu: bool) -> list[Any]:
    """The selected GpuInfo list; [] for a CPU run. Marks CPU runs in the config (use_cpu, no bf16)."""
    if cpu or gpus == "cpu":
        cfg["use_cpu"] = True
        for key in ("bf16", "fp16", "pure_bf16"):
            if cfg.get(key):
                cfg[key] = False
                click.echo(f"note: {key}: true -> false (CPU run)", err=True)
    if cfg.get("use_cpu"):
        if gpus not in (None, "cpu"):
            raise click.BadParameter(
                "the config sets use_cpu: true; drop --gpus or pass --set use_cpu=false", param_hint="--gpus"
            )
        return []
    from lf_tuner.gpus import detect_gpus

    return detect_gpus(gpus)


def check_fit(cfg: dict[str, Any], gpus: list[Any], *, fit: bool, force: bool) -> dict[str, Any] | None:
    """Estimate the per-GPU peak; stop (or apply --fit's change) when it exceeds the free memory of a GPU."""
    from lf_tuner.memory import GIB, estimate, fit_changes, setup_from_config

    try:
        est = estimate(setup_from_config(cfg, gpus=max(1, len(gpus))))
    except LfTunerError as exc:
        click.echo(f"warning: no memory estimate ({exc.message})", err=True)
        return None
    if not gpus:
        return est.as_dict()
    from lf_tuner.cli._fit import report_fit

    targets = [
        {"name": f"GPU {g.index} ({g.name}, {g.free_bytes / GIB:.1f} GiB free)", "budget_bytes": g.free_bytes}
        for g in gpus
    ]
    report = report_fit(est, targets, fit_changes)
    if report["fits"]:
        return est.as_dict()
    click.echo(f"estimated peak {est.total_gib:.2f} GiB per GPU", err=True)
    for line in report["lines"]:
        click.echo(line, err=True)
    if fit and report["changes"]:
        change = report["changes"][0]
        cfg.update(change["overrides"])
        click.echo(f"--fit: applied `{change['change']}`", err=True)
        return check_fit(cfg, gpus, fit=False, force=force)
    if force:
        click.echo("--force: running anyway", err=True)
        return est.as_dict()
    raise LfTunerError(
        "estimate: the run does not fit the free GPU memory; rerun with --fit to apply the first "
        "change above, or --force to run anyway"
    )


def prepare_output_dir(
    cfg: dict[str, Any], config: Path | None, *, resume: bool, overwrite: bool, rank: int
) -> Path:
    """Refuse a non-empty output_dir unless --resume or --overwrite; set overwrite_output_dir to match."""
    if not cfg.get("output_dir"):
        raise LfTunerError("output_dir: missing; set it in the config or pass --set output_dir=DIR")
    out = Path(str(cfg["output_dir"])).expanduser()
    ignore = [config] if config is not None else []
    state = launch.output_dir_state(out, ignore=ignore) if rank == 0 else "empty"
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


def staged_path(out: Path, rank: int, torchrun: bool) -> tuple[Path, Path]:
    """(the config kept in output_dir, the path the child is given). torchrun splits paths on spaces."""
    kept = out / (runs.CONFIG_NAME if rank == 0 else f"lf-tuner-config.node{rank}.yaml")
    if torchrun and any(c.isspace() for c in str(kept.absolute())):
        return kept, Path(tempfile.mkdtemp(prefix="lf-tuner-")) / "config.yaml"
    return kept, kept


def find_cli(path: str | None, needed: bool) -> str:
    if path:
        if not Path(path).is_file():
            raise LfTunerError(f"llamafactory-cli: {path} does not exist; {INSTALL_HINT}")
        return path
    found = shutil.which("llamafactory-cli")
    if found is None and needed:
        raise LfTunerError(f"llamafactory-cli: not found on PATH; {INSTALL_HINT}")
    return found or "llamafactory-cli"


class ProgressView:
    """Step of total, loss, learning rate, ETA and tokens/s from trainer_log.jsonl: a bar on a terminal, lines otherwise."""

    def __init__(self) -> None:
        self.stream = sys.stderr
        self.bar: Any = None
        self.task: Any = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
                transient=False,
            )

    def __enter__(self) -> ProgressView:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("train", total=None, info="loading")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, entry: dict[str, Any]) -> None:
        info = describe_entry(entry)
        if self.bar is not None:
            self.bar.update(
                self.task, completed=entry.get("current_steps", 0), total=entry.get("total_steps"), info=info
            )
        else:
            click.echo(
                f"step {entry.get('current_steps', '?')}/{entry.get('total_steps', '?')}  {info}", err=True
            )


def describe_entry(entry: dict[str, Any]) -> str:
    parts = []
    for key, label, fmt in (
        ("loss", "loss", "{:.4f}"),
        ("eval_loss", "eval_loss", "{:.4f}"),
        ("lr", "lr", "{:.2e}"),
    ):
        if isinstance(entry.get(key), int | float):
            parts.append(f"{label} {fmt.format(entry[key])}")
    if entry.get("remaining_time"):
        parts.append(f"eta {entry['remaining_time']}")
    if isinstance(entry.get("throughput"), int | float):
        parts.append(f"{entry['throughput']:.0f} tok/s")
    return "  ".join(parts)


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
@click.option("--gpus", help="all, a count (2), positions (0,2) among visible GPUs, or cpu.")
@click.option("--cpu", is_flag=True, help="Train on the CPU: sets use_cpu and hides every GPU.")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--master-addr", help="Address of node rank 0 (several nodes).")
@click.option("--master-port", type=click.IntRange(1, 65535), help="Port on node rank 0 (default 29500).")
@click.option("--ray", "ray_workers", type=click.IntRange(min=1), metavar="WORKERS", help="Run through Ray.")
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
@click.option("--yes", "-y", is_flag=True, help="Do not ask before risky starts.")
@click.option("--verbose", "-v", is_flag=True, help="Show the child's output, not only the progress.")
def command(config: Path | None, overrides: tuple[str, ...], **o: Any) -> None:
    """Check a LLaMA-Factory training run, start it on the chosen GPUs, watch it and record it.

    \b
      lf-tuner run train.yaml                       # preflight, then train on the visible GPUs
      lf-tuner run train.yaml --gpus 0,2 --dry-run  # show GPUs, estimate, argv and env; start nothing
      lf-tuner run train.yaml --cpu                 # CPU run (tiny models, tests)
    """
    if o["resume"] and o["overwrite"]:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if o["cpu"] and o["gpus"] not in (None, "cpu"):
        raise click.UsageError("--cpu and --gpus exclude each other")
    rank = o["node_rank"]
    if rank >= o["nnodes"]:
        raise click.BadParameter(f"must be below --nnodes ({o['nnodes']})", param_hint="--node-rank")
    planning = o["dry_run"] or o["slurm_script"] is not None
    cli = find_cli(o["cli_path"], needed=not planning)
    cfg = load_config(config, {k: o[k] for k in RENDER_OPTIONS}, list(overrides))
    gpus = choose_gpus(cfg, o["gpus"], o["cpu"])
    cpu = bool(cfg.get("use_cpu"))
    if not cpu and not gpus and not planning:
        raise LfTunerError(
            "gpus: no GPU found (NVML sees none; check `nvidia-smi` and CUDA_VISIBLE_DEVICES); "
            "train on the CPU with --cpu, or look at the plan with --dry-run"
        )
    out = prepare_output_dir(cfg, config, resume=o["resume"], overwrite=o["overwrite"], rank=rank)
    problems = [str(p) for p in _validate(cfg)] + launch.local_problems(cfg)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise LfTunerError(f"config has {len(problems)} {noun}:\n" + "\n".join(dict.fromkeys(problems)))
    estimate = check_fit(cfg, gpus, fit=o["fit"], force=o["force"])
    ids = [g.index for g in gpus] or _explicit_ids(o["gpus"]) if not cpu else []
    deepspeed = bool(cfg.get("deepspeed"))
    torchrun = launch.uses_torchrun(
        num_gpus=len(ids or []), deepspeed=deepspeed, nnodes=o["nnodes"], ray=o["ray_workers"] is not None
    )
    kept, staged = staged_path(out, rank, torchrun)
    if o["slurm_script"] is not None:
        return _write_slurm(o, cfg, kept, gpus)
    cmd = launch.build_command(
        str(staged),
        cli=cli,
        gpus=ids or None,
        cpu=cpu,
        deepspeed=deepspeed,
        nnodes=o["nnodes"],
        node_rank=rank,
        master_addr=o["master_addr"],
        master_port=o["master_port"],
        ray_workers=o["ray_workers"],
    )
    plan = {
        "config_path": str(kept),
        "argv": cmd.argv,
        "env": cmd.env,
        "gpus": [_gpu(g) for g in gpus],
        "estimate": estimate,
        "output_dir": str(out),
    }
    if o["dry_run"]:
        return _show_plan(plan, o["as_json"], staged)
    _write_yaml(kept, cfg)
    if staged != kept:
        shutil.copyfile(kept, staged)
    _run(cfg, cmd, plan, out, kept, staged, gpus, o)


def _validate(cfg: dict[str, Any]) -> list[Any]:
    from lf_tuner.config.validate import check_config

    return check_config(cfg, use_llamafactory=False)


def _explicit_ids(gpus: str | None) -> list[int]:
    """Without NVML (planning on a login node), `--gpus 0,2` still names the GPUs to use."""
    if gpus and "," in gpus and all(p.strip().isdigit() for p in gpus.split(",")):
        return [int(p) for p in gpus.split(",")]
    return []


def _gpu(g: Any) -> dict[str, Any]:
    return {
        "index": g.index,
        "name": g.name,
        "total_gib": round(g.total_bytes / 2**30, 2),
        "free_gib": round(g.free_bytes / 2**30, 2),
    }


def _write_yaml(path: Path, cfg: dict[str, Any]) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _show_plan(plan: dict[str, Any], as_json: bool, staged: Path) -> None:
    if as_json:
        click.echo(json.dumps(plan, indent=2))
        return
    gpus = (
        ", ".join(f"{g['index']} {g['name']} ({g['free_gib']:.1f} GiB free)" for g in plan["gpus"])
        or "none (CPU)"
    )
    est = plan["estimate"]
    click.echo(f"gpus:     {gpus}")
    click.echo(f"estimate: {est['total_gib']:.2f} GiB per GPU" if est else "estimate: unavailable")
    click.echo(
        f"config:   {plan['config_path']}"
        + (f" (staged as {staged})" if str(staged) != plan["config_path"] else "")
    )
    click.echo("env:      " + (" ".join(f"{k}={v}" for k, v in plan["env"].items()) or "(unchanged)"))
    click.echo("argv:     " + " ".join(plan["argv"]))


def _write_slurm(o: dict[str, Any], cfg: dict[str, Any], kept: Path, gpus: list[Any]) -> None:
    from lf_tuner.slurm import render_slurm_script

    path: Path = o["slurm_script"]
    if path.exists() and not o["force"]:
        raise LfTunerError(f"slurm_script: {path} exists; pass --force to replace it")
    per_node = int(o["gpus"]) if o["gpus"] and o["gpus"].isdigit() else max(1, len(gpus))
    script = render_slurm_script(
        str(kept.absolute()),
        nnodes=o["nnodes"],
        gpus_per_node=per_node,
        master_port=o["master_port"] or launch.DEFAULT_MASTER_PORT,
    )
    _write_yaml(kept, cfg)
    path.write_text(script, encoding="utf-8")
    click.echo(f"wrote {path} and {kept}; submit it with `sbatch {path}`", err=True)


def _run(
    cfg: dict[str, Any],
    cmd: launch.Command,
    plan: dict[str, Any],
    out: Path,
    kept: Path,
    staged: Path,
    gpus: list[Any],
    o: dict[str, Any],
) -> None:
    rank = o["node_rank"]
    record_path = out / (runs.RECORD_NAME if rank == 0 else f"lf-tuner-run.node{rank}.json")
    log_path = out / launch.LOG_NAME
    if o["overwrite"]:
        record_path.unlink(missing_ok=True)
    started = runs.now_iso()
    click.echo(f"lf-tuner: {' '.join(f'{k}={v}' for k, v in cmd.env.items())} {' '.join(cmd.argv)}", err=True)
    click.echo(f"lf-tuner: output in {log_path}", err=True)

    def write_config(new_cfg: dict[str, Any]) -> None:
        _write_yaml(kept, new_cfg)
        if staged != kept:
            shutil.copyfile(kept, staged)

    def on_retry(n: int, description: str) -> None:
        click.echo(f"out of memory; retry {n}: {description}", err=True)

    with ProgressView() as view:
        attempts, changes = launch.run_with_retries(
            cfg,
            cmd,
            write_config=write_config,
            output_dir=out,
            log_path=log_path,
            retry_oom=o["retry_oom"],
            stop_on_nan=o["stop_on_nan"],
            on_progress=view.update,
            on_retry=on_retry,
            echo=sys.stderr if o["verbose"] else None,
        )
    last = attempts[-1]
    metrics = runs.collect_metrics(out, last.result.trainer_log, on_gpu=bool(gpus))
    reason = _reason(last)
    record = runs.RunRecord(
        status=cast(runs.Status, last.status),
        exit_code=last.exit_code,
        reason=reason,
        config_hash=runs.config_hash(last.cfg),
        config_path=str(kept.absolute()),
        output_dir=str(out.absolute()),
        model=str(cfg.get("model_name_or_path")),
        argv=cmd.argv,
        env=cmd.env,
        gpus=[runs.GpuRecord(**_gpu(g)) for g in gpus],
        nnodes=o["nnodes"],
        node_rank=rank,
        estimated_peak_gib=(plan["estimate"] or {}).get("total_gib"),
        runtime_s=round(sum(a.result.runtime_s for a in attempts), 2),
        started_at=started,
        ended_at=runs.now_iso(),
        retries=[runs.Retry(attempt=i + 2, description=d, overrides=ov) for i, (d, ov) in enumerate(changes)],
        log_path=str(log_path.absolute()),
        **metrics,
    )
    runs.write_record(record, record_path)
    runs.add_to_index(record, record_path.absolute())
    if o["as_json"]:
        click.echo(json.dumps(record.model_dump(mode="json"), indent=2))
    if last.status == "completed":
        loss = f", final loss {record.final_train_loss:.4f}" if record.final_train_loss is not None else ""
        click.echo(f"completed in {record.runtime_s:.1f} s{loss}; record: {record_path}", err=True)
        return
    if last.status == "failed":
        for line in last.result.tail[-15:]:
            click.echo(f"  | {line}", err=True)
    click.echo(f"Error: {last.status}: {reason}; log: {log_path}; record: {record_path}", err=True)
    sys.exit(last.exit_code or 1)


def _reason(last: launch.Attempt) -> str | None:
    result = last.result
    if last.status == "interrupted":
        return f"stopped by signal {result.interrupted_by}"
    if last.status == "diverged":
        return f"{result.diverged}; lower learning_rate or check the data"
    if last.status == "oom":
        return "out of GPU memory; try --retry-oom 2, --fit, or a smaller cutoff_len / batch"
    if last.status == "failed":
        return f"llamafactory-cli exited with {last.exit_code}"
    return None
