"""The bad-input battery: every command given what a careful new user might get wrong.

One table of cases (command line, files laid out before, expected exit code, the one `Error:` line expected);
each case runs in a fresh project through CliRunner and must end with that code and that line, no traceback,
every file that was there before unchanged and nothing new written (except where the case allows it).
`scripts/bad_inputs.py` runs the same table and prints the counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lf_tuner.cli import cli
from tests.tiny import write_tiny_project

STUB = Path(__file__).parent / "stubs" / "llamafactory_cli_stub.py"
GIB = 2**30

Setup = Callable[[Path, pytest.MonkeyPatch], None]


@dataclass(frozen=True)
class Case:
    """One bad input: `argv` run in a fresh project holding `files` (relative path -> text; `{root}` is the
    project), expected to exit with `code` and print one `Error:` line matching `message` (a regex).

    `creates` lists path prefixes a case may write (a run that succeeds writes its output_dir); `env` is set
    for the case (`{root}` expanded); `setup` changes the world further (GPUs NVML would see)."""

    id: str
    argv: tuple[str, ...]
    code: int
    message: str
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    setup: Setup | None = None
    creates: tuple[str, ...] = ()
    unprivileged: bool = False  # a permission case: root may write anywhere, so it is skipped as root


@dataclass
class Verdict:
    """What one case did."""

    exit_code: int
    stdout: str
    stderr: str
    traceback: str | None  # the exception that escaped, or the traceback printed
    changed: list[str]  # files that were there before and are now different or gone
    created: list[str]  # files or folders written that the case does not allow

    def problems(self, case: Case) -> list[str]:
        """Everything wrong with the way `case` was handled; [] when it was handled well."""
        found: list[str] = []
        if self.traceback:
            found.append(f"traceback: {self.traceback}")
        if self.exit_code != case.code:
            accepted = " (silently accepted)" if self.exit_code == 0 else ""
            found.append(f"exit code {self.exit_code}, expected {case.code}{accepted}")
        errors = [line for line in self.stderr.splitlines() if line.startswith("Error:")]
        if case.code != 0 and len(errors) != 1:
            found.append(f"{len(errors)} `Error:` lines, expected 1")
        if not re.search(case.message, self.stderr, re.MULTILINE):
            found.append(f"stderr does not match {case.message!r}")
        if self.changed:
            found.append(f"user files changed: {', '.join(self.changed)}")
        if self.created:
            found.append(f"files written: {', '.join(self.created)}")
        return found


# ------------------------------------------------------------------------------------------------ project

TRAIN_EXTRA = {
    "max_steps": 2,
    "logging_steps": 1,
    "learning_rate": 1.0e-4,
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
}
SPEC = {
    "base": "train.yaml",
    "method": "grid",
    "metric": {"name": "train_loss", "goal": "minimize"},
    "budget": {"max_steps": 2},
    "parameters": {"learning_rate": {"values": [1.0e-4]}},
}


def build_project(root: Path) -> None:
    """A tiny model (config.json and tokenizer), a registered dataset, a CPU training config (train.yaml), a sweep
    spec (spec.yaml) and the stand-in llamafactory-cli in bin/."""
    cfg = {**write_tiny_project(root, tokenizer=True), **TRAIN_EXTRA}
    (root / "train.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    (root / "bin").mkdir()
    exe = root / "bin" / "llamafactory-cli"
    exe.write_text(f"#!{sys.executable}\n" + STUB.read_text())
    exe.chmod(0o755)


def train(root_relative: bool = False, **changes: object) -> str:
    """train.yaml with `changes` (None removes a key), as text with `{root}` for the project."""
    cfg: dict[str, object] = {
        "model_name_or_path": "{root}/model",
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "dataset": "tiny",
        "dataset_dir": "{root}/data",
        "template": "qwen",
        "cutoff_len": 64,
        "output_dir": "{root}/out",
        "per_device_train_batch_size": 4,
        **TRAIN_EXTRA,
    }
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return yaml.safe_dump(cfg, sort_keys=False)


def spec(**changes: object) -> str:
    data = {**SPEC, **changes}
    return yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False)


def fake_gpus(count: int) -> Setup:
    """NVML sees `count` 24 GiB GPUs."""

    def setup(root: Path, mp: pytest.MonkeyPatch) -> None:
        import lf_tuner.train.gpus as gpus

        found = [gpus.GpuInfo(i, "NVIDIA RTX 4090", 24 * GIB, 23 * GIB, f"GPU-{i}") for i in range(count)]
        mp.setattr(gpus, "_nvml_gpus", lambda: found)

    return setup


def read_only(folder: str) -> Setup:
    """`folder` (made if missing) becomes read-only."""

    def setup(root: Path, mp: pytest.MonkeyPatch) -> None:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder).chmod(0o555)

    return setup


def no_gpus(root: Path, mp: pytest.MonkeyPatch) -> None:
    import lf_tuner.train.gpus as gpus

    mp.setattr(gpus, "_nvml_gpus", lambda: [])


BAD_YAML = "model_name_or_path: [unclosed\nstage: sft\n"
LIST_YAML = "- model_name_or_path\n- stage\n"
NOT_SQLITE = "this is not an SQLite database\n"
HAND_WRITTEN_INFO = json.dumps(
    {
        "tiny": {
            "file_name": "tiny.json",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "sys"},
        }
    },
    indent=2,
)


CASES: list[Case] = [
    # ---------------------------------------------------------------------------------------------- estimate
    Case("estimate-nothing", ("estimate",), 2, r"pass --model NAME\|DIR or --config train.yaml"),
    Case("estimate-unknown-model", ("estimate", "--model", "NoSuchModel-7B"), 1, r"NoSuchModel-7B"),
    Case("estimate-config-missing", ("estimate", "--config", "nope.yaml"), 1, r"nope.yaml does not exist"),
    Case("estimate-config-folder", ("estimate", "--config", "data"), 1, r"data"),
    Case("estimate-config-bad-yaml", ("estimate", "--config", "bad.yaml"), 1, r"not valid YAML \(line 2",
         files={"bad.yaml": BAD_YAML}),
    Case("estimate-config-list", ("estimate", "--config", "list.yaml"), 1, r"expected a mapping",
         files={"list.yaml": LIST_YAML}),
    Case("estimate-config-unknown-key", ("estimate", "--config", "t.yaml"), 1, r"learning_rat.*`learning_rate`",
         files={"t.yaml": train(learning_rat=1e-4)}),
    Case("estimate-cutoff-zero", ("estimate", "--model", "Qwen2.5-0.5B", "--cutoff", "0"), 2, r"must be positive"),
    Case("estimate-cutoff-text", ("estimate", "--model", "Qwen2.5-0.5B", "--cutoff", "long"), 2,
         r"'long' is not a valid integer"),
    Case("estimate-gpu-memory-negative", ("estimate", "--model", "Qwen2.5-0.5B", "--gpu-memory", "-4"), 2,
         r"must be positive"),
    Case("estimate-quantization-bit-3", ("estimate", "--model", "Qwen2.5-0.5B", "--quantization-bit", "3"), 2,
         r"'3' is not one of '4', '8'"),
    Case("estimate-check-does-not-fit",
         ("estimate", "--model", "Qwen2.5-0.5B", "--cutoff", "1024", "--gpu-memory", "4", "--check"), 3,
         r"does not fit 4 GiB GPU: short by"),
    Case("estimate-check-without-gpu", ("estimate", "--model", "Qwen2.5-0.5B", "--check"), 2,
         r"--check needs a GPU to check against", setup=no_gpus),
    Case("estimate-max-cutoff-nothing-fits",
         ("estimate", "--model", "Qwen2.5-7B", "--method", "full", "--max-cutoff", "--gpu-memory", "8"), 3,
         r"no cutoff_len fits 8 GiB GPU: even cutoff_len 128 needs"),
    Case("estimate-model-folder-without-config", ("estimate", "--model", "data"), 1, r"data"),
    Case("estimate-model-config-garbage", ("estimate", "--model", "m2"), 1, r"config.json",
         files={"m2/config.json": "{not json"}),
    # ------------------------------------------------------------------------------------------------ models
    Case("models-unknown-option", ("models", "--bogus"), 2, r"No such option '--bogus'"),
    Case("models-extra-argument", ("models", "Qwen", "Llama"), 2, r"Got unexpected extra argument"),
    Case("models-no-match", ("models", "no-such-model"), 2, r"no model matches `no-such-model`"),
    # ------------------------------------------------------------------------------------------------ cutoff
    Case("cutoff-nothing", ("cutoff",), 2, r"pass a data file, --dataset NAME"),
    Case("cutoff-data-missing", ("cutoff", "nope.json", "--tokenizer", "model"), 2, r"nope.json does not exist"),
    Case("cutoff-no-tokenizer", ("cutoff", "data/tiny.json", "--template", "qwen"), 2, r"pass --tokenizer DIR"),
    Case("cutoff-tokenizer-missing", ("cutoff", "data/tiny.json", "--tokenizer", "nowhere", "--template", "qwen"),
         1, r"nowhere"),
    Case("cutoff-unknown-template", ("cutoff", "data/tiny.json", "--tokenizer", "model", "--template", "qwenn"),
         1, r"qwenn.*`qwen`"),
    Case("cutoff-bad-json", ("cutoff", "bad.json", "--tokenizer", "model", "--template", "qwen"), 1,
         r"bad.json:1:\d+: invalid JSON", files={"bad.json": '[{"instruction": "a"'}),
    Case("cutoff-unknown-dataset",
         ("cutoff", "--dataset", "tiyn", "--dataset-dir", "data", "--tokenizer", "model", "--template", "qwen"),
         1, r"tiyn.*`tiny`"),
    Case("cutoff-dataset-dir-missing",
         ("cutoff", "--dataset", "tiny", "--dataset-dir", "nowhere", "--tokenizer", "model", "--template", "qwen"),
         1, r"nowhere"),
    Case("cutoff-output-exists",
         ("cutoff", "data/tiny.json", "--tokenizer", "model", "--template", "qwen", "--drop-longer-than", "5",
          "--output", "keep.json"), 1, r"keep.json exists; pass --force", files={"keep.json": "[]"}),
    Case("cutoff-output-into-a-new-folder",
         ("cutoff", "data/tiny.json", "--tokenizer", "model", "--template", "qwen", "--drop-longer-than", "5",
          "--output", "nodir/short.json"), 0, r"^wrote 0 rows to nodir/short.json \(dropped 16 samples over 5",
         creates=("nodir/",)),
    Case("cutoff-drop-without-output",
         ("cutoff", "data/tiny.json", "--tokenizer", "model", "--template", "qwen", "--drop-longer-than", "5"), 2,
         r"--drop-longer-than and --output go together"),
    Case("cutoff-percentile-zero",
         ("cutoff", "data/tiny.json", "--tokenizer", "model", "--template", "qwen", "--percentile", "0"), 2,
         r"--percentile"),
    Case("cutoff-plot-into-missing-folder",
         ("cutoff", "data/tiny.json", "--tokenizer", "model", "--template", "qwen", "--plot", "nodir/p.png"), 1,
         r"nodir"),
    Case("cutoff-config-missing", ("cutoff", "--config", "nope.yaml"), 2, r"nope.yaml' does not exist"),
    # ------------------------------------------------------------------------------------------------ render
    Case("render-unknown-preset", ("render", "--preset", "nosuch"), 1, r"nosuch"),
    Case("render-model-missing",
         ("render", "--model", "./nowhere", "--dataset", "tiny", "--dataset-dir", "data", "--gpu-memory", "24",
          "--data-size", "16", "--cutoff", "64"), 1, r"nowhere"),
    Case("render-output-exists",
         ("render", "--model", "model", "--dataset", "tiny", "--dataset-dir", "data", "--template", "qwen",
          "--gpu-memory", "24", "--data-size", "16", "--cutoff", "64", "-o", "train.yaml"), 1,
         r"train.yaml exists; pass --force"),
    Case("render-method-unknown", ("render", "--method", "qlorra"), 2, r"'qlorra' is not one of"),
    Case("render-override-without-value",
         ("render", "--model", "model", "--dataset", "tiny", "--dataset-dir", "data", "--template", "qwen",
          "--gpu-memory", "24", "--data-size", "16", "--cutoff", "64", "learning_rate"), 2,
         r"`learning_rate` is not `key=value`"),
    Case("render-cutoff-text", ("render", "--cutoff", "long"), 2, r"`long` is not a positive whole number"),
    Case("render-output-into-missing-folder",
         ("render", "--model", "model", "--dataset", "tiny", "--dataset-dir", "data", "--template", "qwen",
          "--gpu-memory", "24", "--data-size", "16", "--cutoff", "64", "--schema-only", "-o", "nodir/t.yaml"), 1,
         r"nodir"),
    Case("render-unknown-template",
         ("render", "--model", "model", "--dataset", "tiny", "--dataset-dir", "data", "--template", "qwenn",
          "--gpu-memory", "24", "--data-size", "16", "--cutoff", "64", "--schema-only"), 1, r"qwenn.*`qwen`"),
    Case("render-to-stdout-writes-nothing",
         ("render", "--model", "model", "--dataset", "data/extra.json", "--template", "qwen", "--gpu-memory", "24",
          "--data-size", "16", "--cutoff", "64", "--schema-only", "--output-dir", "out"), 0, r"",
         files={"data/extra.json": '[{"instruction": "a", "input": "", "output": "b"}]'}),
    Case("render-force-keeps-a-hand-written-entry",
         ("render", "--model", "model", "--dataset", "data/tiny.json", "--template", "qwen", "--gpu-memory", "24",
          "--data-size", "16", "--cutoff", "64", "--schema-only", "--output-dir", "out", "-o", "new.yaml",
          "--force"), 0, r"", files={"data/dataset_info.json": HAND_WRITTEN_INFO}, creates=("new.yaml",)),
    # ---------------------------------------------------------------------------------------------- validate
    Case("validate-missing", ("validate", "nope.yaml"), 1, r"nope.yaml does not exist"),
    Case("validate-folder", ("validate", "data"), 1, r"data"),
    Case("validate-bad-yaml", ("validate", "bad.yaml"), 1, r"not valid YAML", files={"bad.yaml": BAD_YAML}),
    Case("validate-list", ("validate", "list.yaml"), 1, r"expected a mapping", files={"list.yaml": LIST_YAML}),
    Case("validate-empty", ("validate", "empty.yaml"), 1, r"expected a mapping", files={"empty.yaml": ""}),
    Case("validate-not-utf8", ("validate", "latin1.yaml"), 1, r"latin1.yaml: cannot read it",
         files={"latin1.yaml": "template: caf\udce9\n"}),
    Case("validate-unknown-key", ("validate", "t.yaml", "--schema-only"), 1,
         r"config has 1 problem|t.yaml has 1 problem", files={"t.yaml": train(learning_rat=1e-4)}),
    Case("validate-wrong-type", ("validate", "t.yaml", "--schema-only"), 1, r"has 1 problem",
         files={"t.yaml": train(learning_rate="high")}),
    Case("validate-unknown-template", ("validate", "t.yaml", "--schema-only"), 1, r"has 1 problem",
         files={"t.yaml": train(template="qwenn")}),
    Case("validate-quantization-bit-3", ("validate", "t.yaml", "--schema-only"), 1, r"has 1 problem",
         files={"t.yaml": train(quantization_bit=3)}),
    Case("validate-duplicate-key", ("validate", "t.yaml", "--schema-only"), 1, r"has 1 problem",
         files={"t.yaml": train() + "learning_rate: 2.0e-4\n"}),
    Case("validate-dataset-not-registered", ("validate", "t.yaml", "--schema-only"), 1, r"has 1 problem",
         files={"t.yaml": train(dataset="nosuch")}),
    Case("validate-lora-target-unknown", ("validate", "t.yaml", "--schema-only"), 1, r"has 1 problem",
         files={"t.yaml": train(lora_target="foo_proj")}),
    # ----------------------------------------------------------------------------------------------- presets
    Case("presets-show-unknown", ("presets", "show", "nosuch"), 1, r"nosuch"),
    Case("presets-cp-unknown", ("presets", "cp", "nosuch", "x.yaml"), 1, r"nosuch"),
    Case("presets-cp-exists", ("presets", "cp", "default", "train.yaml"), 1, r"train.yaml exists; pass --force"),
    Case("presets-cp-into-missing-folder", ("presets", "cp", "default", "nodir/x.yaml"), 1,
         r"nodir is not a directory"),
    Case("presets-unknown-subcommand", ("presets", "list"), 2, r"No such command 'list'"),
    Case("presets-show-without-name", ("presets", "show"), 2, r"Missing argument 'NAME'"),
    # --------------------------------------------------------------------------------------------------- run
    Case("run-nothing", ("run",), 2, r"give CONFIG.yaml, or --model, --dataset and --output-dir"),
    Case("run-config-missing", ("run", "nope.yaml"), 1, r"nope.yaml does not exist"),
    Case("run-config-bad-yaml", ("run", "bad.yaml"), 1, r"not valid YAML", files={"bad.yaml": BAD_YAML}),
    Case("run-gpus-text", ("run", "train.yaml", "--set", "use_cpu=false", "--gpus", "abc"), 2,
         r"`abc` is not a GPU selection"),
    Case("run-gpus-twice", ("run", "train.yaml", "--set", "use_cpu=false", "--gpus", "0,0"), 2,
         r"lists GPU 0 twice"),
    Case("run-gpus-negative", ("run", "train.yaml", "--set", "use_cpu=false", "--gpus", "-1"), 2,
         r"`-1` is not a GPU selection"),
    Case("run-gpus-empty", ("run", "train.yaml", "--set", "use_cpu=false", "--gpus", ""), 2, r"empty; use all"),
    Case("run-gpu-not-there", ("run", "train.yaml", "--set", "use_cpu=false", "--gpus", "3,", "--dry-run"), 2,
         r"GPU 3 is not visible \(2 visible", setup=fake_gpus(2)),
    Case("run-gpu-count-too-high", ("run", "train.yaml", "--set", "use_cpu=false", "--gpus", "4", "--dry-run"), 2,
         r"asked for 4 GPUs, 2 visible", setup=fake_gpus(2)),
    Case("run-cpu-and-gpus", ("run", "train.yaml", "--cpu", "--gpus", "0"), 2, r"--cpu and --gpus exclude"),
    Case("run-output-dir-is-a-file", ("run", "t.yaml"), 1, r"output_dir: .*afile is a file, not a folder",
         files={"t.yaml": train(output_dir="afile"), "afile": "keep me\n"}),
    Case("run-output-dir-under-a-file", ("run", "t.yaml"), 1, r"afile is a file, so .*cannot be a folder",
         files={"t.yaml": train(output_dir="afile/run"), "afile": "keep me\n"}),
    Case("run-output-dir-not-empty", ("run", "train.yaml"), 1, r"is not empty; pass --resume",
         files={"out/adapter_model.safetensors": "weights"}),
    Case("run-resume-without-checkpoint", ("run", "train.yaml", "--resume"), 1, r"no checkpoint-\* to resume",
         files={"out/adapter_model.safetensors": "weights"}),
    Case("run-resume-and-overwrite", ("run", "train.yaml", "--resume", "--overwrite"), 2, r"exclude each other"),
    Case("run-cli-missing", ("run", "train.yaml", "--llamafactory-cli", "/nonexistent/llamafactory-cli"), 1,
         r"/nonexistent/llamafactory-cli does not exist"),
    Case("run-node-rank-too-high", ("run", "train.yaml", "--node-rank", "2"), 2, r"must be below --nnodes"),
    Case("run-model-only", ("run", "--model", "model"), 2, r"--model, --dataset and --output-dir"),
    Case("run-unknown-key", ("run", "train.yaml", "--set", "learning_rat=1e-4"), 1, r"learning_rat"),
    Case("run-override-without-value", ("run", "train.yaml", "--set", "learning_rate"), 2,
         r"`learning_rate` is not `key=value`"),
    Case("run-dataset-not-registered", ("run", "train.yaml", "--set", "dataset=tiyn"), 1, r"did you mean `tiny`"),
    Case("run-slurm-script-exists", ("run", "train.yaml", "--slurm-script", "job.sh"), 1,
         r"job.sh exists; pass --force", files={"job.sh": "#!/bin/sh\n"}),
    Case("run-slurm-script-into-missing-folder", ("run", "train.yaml", "--slurm-script", "nodir/job.sh"), 1,
         r"nodir is not a folder"),
    Case("run-retry-oom-negative", ("run", "train.yaml", "--retry-oom", "-1"), 2, r"--retry-oom"),
    Case("run-master-port-zero", ("run", "train.yaml", "--master-port", "0"), 2, r"--master-port"),
    Case("run-nodes-without-master", ("run", "train.yaml", "--nnodes", "2", "--dry-run"), 1,
         r"several nodes need --master-addr"),
    Case("run-unknown-template", ("run", "train.yaml", "--set", "template=qwenn", "--dry-run"), 1, r"qwenn"),
    Case("run-home-is-a-file", ("run", "train.yaml"), 0,
         r"^warning: the run is not in `lf-tuner runs`: runs index: .*homefile is a file, not a folder",
         files={"homefile": "x\n"}, env={"LF_TUNER_HOME": "{root}/homefile"}, creates=("out/",)),
    Case("run-home-index-corrupt", ("run", "train.yaml"), 0,
         r"^warning: the run is not in `lf-tuner runs`: runs index: .*runs.sqlite is not a usable runs index",
         files={"home/runs.sqlite": NOT_SQLITE}, env={"LF_TUNER_HOME": "{root}/home"}, creates=("out/",)),
    Case("run-home-read-only", ("run", "train.yaml"), 0,
         r"^warning: the run is not in `lf-tuner runs`: runs index: cannot write .*locked/runs.sqlite",
         env={"LF_TUNER_HOME": "{root}/locked"}, setup=read_only("locked"), creates=("out/",), unprivileged=True),
    Case("run-output-dir-read-only", ("run", "t.yaml"), 1, r"locked is not writable \(permission denied\)",
         files={"t.yaml": train(output_dir="locked/run")}, setup=read_only("locked"), unprivileged=True),
    # -------------------------------------------------------------------------------------------------- runs
    Case("runs-index-corrupt", ("runs",), 1, r"runs.sqlite is not a usable runs index .*move it aside",
         files={"home/runs.sqlite": NOT_SQLITE}, env={"LF_TUNER_HOME": "{root}/home"}),
    Case("runs-index-is-a-folder", ("runs",), 1, r"runs.sqlite is a folder, not the index file",
         files={"home/runs.sqlite/x": ""}, env={"LF_TUNER_HOME": "{root}/home"}),
    Case("runs-home-is-a-file", ("runs",), 1, r"homefile is a file, not a folder; point LF_TUNER_HOME",
         files={"homefile": "x\n"}, env={"LF_TUNER_HOME": "{root}/homefile"}),
    Case("runs-index-foreign", ("runs", "--json"), 1, r"has a `runs` table without",
         env={"LF_TUNER_HOME": "{root}/home"},
         setup=lambda root, mp: __import__("sqlite3").connect(root / "home" / "runs.sqlite").executescript(
             "CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO runs (name) VALUES ('x');"
         ).connection.close()),
    Case("runs-limit-zero", ("runs", "--limit", "0"), 2, r"--limit"),
    Case("runs-status-unknown", ("runs", "--status", "done"), 2, r"'done' is not one of"),
    # ------------------------------------------------------------------------------------------------ doctor
    Case("doctor-unknown-option", ("doctor", "--bogus"), 2, r"No such option '--bogus'"),
    Case("doctor-extra-argument", ("doctor", "gpus"), 2, r"Got unexpected extra argument"),
    # ------------------------------------------------------------------------------------------------- sweep
    Case("sweep-spec-missing", ("sweep", "nope.yaml"), 1, r"nope.yaml"),
    Case("sweep-spec-bad-yaml", ("sweep", "bad.yaml"), 1, r"bad.yaml", files={"bad.yaml": BAD_YAML}),
    Case("sweep-spec-unknown-key", ("sweep", "s.yaml", "--dry-run"), 1, r"metrik.*`metric`",
         files={"s.yaml": spec(metric=None, metrik={"name": "eval_loss"})}),
    Case("sweep-gpus-text", ("sweep", "spec.yaml", "--gpus", "abc"), 2, r"`abc` is not a GPU selection"),
    Case("sweep-gpus-twice", ("sweep", "spec.yaml", "--gpus", "0,0"), 2, r"lists GPU 0 twice"),
    Case("sweep-dir-is-a-file", ("sweep", "spec.yaml", "--dir", "afile"), 2, r"afile", files={"afile": "x\n"}),
    Case("sweep-dir-under-a-file", ("sweep", "spec.yaml", "--dir", "afile/s"), 1, r"afile",
         files={"afile": "x\n"}),
    Case("sweep-base-missing", ("sweep", "s.yaml", "--dir", "s"), 1, r"nope.yaml",
         files={"s.yaml": spec(base="nope.yaml")}),
    Case("sweep-parameter-unknown", ("sweep", "s.yaml", "--dir", "s"), 1, r"learning_rat",
         files={"s.yaml": spec(parameters={"learning_rat": {"values": [1.0e-4]}})}),
    Case("sweep-parameter-wrong-type", ("sweep", "s.yaml", "--dir", "s"), 1, r"learning_rate",
         files={"s.yaml": spec(parameters={"learning_rate": {"values": ["high"]}})}),
    Case("sweep-journal-garbage", ("sweep", "spec.yaml", "--dir", "s"), 1, r"optuna.journal",
         files={"s/optuna.journal": "garbage that is not a journal\n"}),
    Case("sweep-foreign-trials", ("sweep", "spec.yaml", "--dir", "s"), 1, r"trial-000",
         files={"s/trial-000/output/adapter_model.safetensors": "older weights"}),
    # ------------------------------------------------------------------------------------------------ report
    Case("report-missing", ("report", "nowhere"), 1, r"nowhere: no optuna.journal here"),
    Case("report-a-file", ("report", "afile"), 2, r"afile", files={"afile": "x\n"}),
    Case("report-no-journal", ("report", "data"), 1, r"no optuna.journal here; start the sweep"),
    Case("report-format-unknown", ("report", "data", "--format", "html"), 2, r"'html' is not one of"),
    Case("report-journal-garbage", ("report", "s"), 1, r"optuna.journal",
         files={"s/optuna.journal": "garbage that is not a journal\n"}),
]  # fmt: skip


# ------------------------------------------------------------------------------------------------ running


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root: relative path -> content hash ('dir' for folders)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            found[rel + "/"] = "dir"
        else:
            try:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                found[rel] = "unreadable"
    return found


def _write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.replace("{root}", str(root)).encode("utf-8", errors="surrogateescape"))


def run_case(case: Case, root: Path, mp: pytest.MonkeyPatch) -> Verdict:
    """Lay out the project in `root` (empty), run `case` there, and say what it did."""
    root.mkdir(parents=True, exist_ok=True)
    build_project(root)
    _write_files(root, case.files)
    mp.chdir(root)
    mp.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    mp.setenv("LF_STUB_CALLS", str(root / "stub-calls.jsonl"))
    mp.setenv("LF_TUNER_HOME", str(root / "home"))
    mp.delenv("LF_STUB_MODE", raising=False)
    mp.setenv("COLUMNS", "100")
    for key, value in case.env.items():
        mp.setenv(key, value.replace("{root}", str(root)))
    if case.setup is not None:
        (root / "home").mkdir(exist_ok=True)
        case.setup(root, mp)
    before = snapshot(root)
    result = CliRunner().invoke(cli, list(case.argv), catch_exceptions=True)
    after = snapshot(root)
    traceback = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        traceback = f"{type(result.exception).__name__}: {result.exception}"
    elif "Traceback (most recent call last)" in result.output:
        traceback = "printed"
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    allowed = (*case.creates, "home/", "stub-calls.jsonl") if case.code == 0 else case.creates
    created = [p for p in after if p not in before and not p.startswith(allowed)]
    return Verdict(result.exit_code, result.stdout, result.stderr, traceback, changed, created)


def _writes_into_read_only_folders() -> bool:
    """Whether this process ignores folder permissions (root with CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        locked = Path(tmp) / "locked"
        locked.mkdir(mode=0o555)
        try:
            (locked / "probe").write_text("")
        except OSError:
            return False
        finally:
            locked.chmod(0o755)
        return True


AS_ROOT = _writes_into_read_only_folders()


def _param(case: Case) -> object:
    marks = []
    if case.unprivileged:
        marks.append(pytest.mark.skipif(AS_ROOT, reason="root writes into read-only folders"))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = run_case(case, tmp_path / "project", monkeypatch)
    problems = verdict.problems(case)
    assert problems == [], f"{case.argv}:\n  " + "\n  ".join(problems) + f"\nstderr:\n{verdict.stderr}"


def test_the_battery_covers_every_command() -> None:
    from lf_tuner.cli import COMMANDS

    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.argv[0] for c in CASES if c.argv} == set(COMMANDS)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (OSError(28, "No space left on device", "out/lf-tuner.log"),
         "Error: out/lf-tuner.log: No space left on device; the disk is full; free some space and run it again"),
        (PermissionError(13, "Permission denied", "/srv/runs"),
         "Error: /srv/runs: Permission denied; check its permissions, or choose a path you can write"),
        (IsADirectoryError(21, "Is a directory", "data"), "Error: data: Is a directory; it is a folder; give a file path"),
        (OSError(5, "Input/output error"), "Error: Input/output error; check the path and try again"),
    ],
)  # fmt: skip
def test_a_file_system_error_is_one_line_naming_the_path(error: OSError, line: str) -> None:
    """The last resort in cli: an OSError no check foresaw still reaches the user as one line, exit 1."""
    import click

    from lf_tuner.cli import _map_errors

    @click.command()
    def failing() -> None:
        raise error

    result = CliRunner().invoke(_map_errors(failing), [])
    assert (result.exit_code, result.stderr) == (1, line + "\n")
