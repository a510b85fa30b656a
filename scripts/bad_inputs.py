"""The bad-input battery as figures: every case of tests/test_bad_inputs.py, then `lf-tuner run` under signals.

    python scripts/bad_inputs.py            # the counts, and each case handled badly
    python scripts/bad_inputs.py -v         # every case with its Error line
    python scripts/bad_inputs.py --no-signals
    python scripts/bad_inputs.py --real     # also the real llamafactory-cli on the CPU under each signal

Part 1 runs each case in a fresh project (as the tests do) and counts: inputs tried, tracebacks, inputs silently
accepted (exit 0 where an error was due), user files changed, other files written, and wrong exit codes or
messages.
Part 2 starts `lf-tuner run` (a real subprocess) on the stand-in llamafactory-cli, whose tree holds a grandchild
in its process group and one that called setsid and ignores SIGTERM/SIGINT/SIGHUP, sends TERM, INT, HUP and QUIT
once the tree is up, and counts the processes left and whether the run record was written as interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from tests.procs import signal_stub_run  # noqa: E402
from tests.test_bad_inputs import AS_ROOT, CASES, Case, Verdict, build_project, run_case  # noqa: E402


def classify(case: Case, verdict: Verdict) -> list[str]:
    """The kinds of harm a case shows (traceback, accepted, changed, written, wrong)."""
    kinds = []
    if verdict.traceback:
        kinds.append("traceback")
    if case.code != 0 and verdict.exit_code == 0:
        kinds.append("accepted")
    if verdict.changed:
        kinds.append("changed")
    if verdict.created:
        kinds.append("written")
    if verdict.problems(case) and not kinds:
        kinds.append("wrong")
    return kinds


def battery(verbose: bool) -> int:
    counts = {k: 0 for k in ("traceback", "accepted", "changed", "written", "wrong")}
    bad_cases: list[str] = []
    cases = [c for c in CASES if not (c.unprivileged and AS_ROOT)]
    with tempfile.TemporaryDirectory(prefix="lf-tuner-bad-") as tmp:
        for n, case in enumerate(cases):
            with pytest.MonkeyPatch.context() as mp:
                verdict = run_case(case, Path(tmp) / f"{n:03d}-{case.id}", mp)
            kinds = classify(case, verdict)
            for kind in kinds:
                counts[kind] += 1
            errors = [line for line in verdict.stderr.splitlines() if line.startswith(("Error:", "warning:"))]
            shown = errors[0] if errors else "(no Error line)"
            if kinds:
                bad_cases.append(f"  {case.id}: {'; '.join(verdict.problems(case))}")
            if verbose:
                print(f"{'ok ' if not kinds else 'BAD'} {verdict.exit_code:>3}  {case.id:<42} {shown[:140]}")
    skipped = len(CASES) - len(cases)
    print(f"\nbad inputs: {len(cases)} tried across {len({c.argv[0] for c in cases})} commands")
    if skipped:
        print(f"  ({skipped} permission cases skipped: running as root, which may write anywhere)")
    labels = {
        "traceback": "tracebacks",
        "accepted": "silently accepted",
        "changed": "user files changed",
        "written": "other files written",
        "wrong": "wrong exit code or line",
    }
    for kind, label in labels.items():
        print(f"  {label:<26}{counts[kind]:>6}")
    handled = len(cases) - len(bad_cases)
    print(f"  {'handled well':<26}{handled:>6}")
    if bad_cases:
        print("handled badly:")
        print("\n".join(bad_cases))
    return sum(counts.values())


def signals() -> int:
    """`lf-tuner run` under TERM, INT, HUP and QUIT: processes left, record written."""
    print("\nlf-tuner run under signals (tree: stand-in + grandchild in its group + one that called setsid)")
    print(f"  {'signal':<8}{'exit':>6}  {'record':<14}{'reason':<32}{'processes left':>15}")
    failures = 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        with tempfile.TemporaryDirectory(prefix="lf-tuner-sig-") as tmp:
            root = Path(tmp)
            build_project(root)
            env = {
                **os.environ,
                "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": str(ROOT),
                "LF_TUNER_HOME": str(root / "home"),
                "LF_STUB_CALLS": str(root / "calls.jsonl"),
            }
            run = signal_stub_run(root, env, sig)
            record = run.record
            status = record.get("status", "(none)")
            ok = (
                status == "interrupted"
                and not run.left
                and len(run.pids) == 3
                and run.returncode == 128 + sig
            )
            failures += not ok
            reason = str(record.get("reason", ""))
            print(f"  {sig.name:<8}{run.returncode:>6}  {status:<14}{reason:<32}{len(run.left):>15}")
    return failures


def real_signals() -> int:
    """The same with the real `llamafactory-cli train` (a tiny random Qwen2 on the CPU), signalled once it has
    logged its first step; the processes counted are lf-tuner's whole tree just before the signal."""
    import psutil
    import yaml
    from transformers.utils import logging as hf_logging

    from tests.tiny import build_tiny_model, write_alpaca

    hf_logging.disable_progress_bar()
    cli_dir = Path(sys.executable).parent
    print("\nlf-tuner run under signals, real llamafactory-cli train on the CPU (tiny random Qwen2)")
    print(f"  {'signal':<8}{'exit':>6}  {'record':<14}{'steps':>6}{'tree before':>13}{'processes left':>16}")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="lf-tuner-real-") as tmp:
        root = Path(tmp)
        build_tiny_model(root / "model")
        (root / "data").mkdir()
        write_alpaca(root / "data" / "tiny.json", 16)
        (root / "data" / "dataset_info.json").write_text(json.dumps({"tiny": {"file_name": "tiny.json"}}))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            out = root / f"out-{sig.name}"
            cfg = {
                "model_name_or_path": str(root / "model"), "stage": "sft", "do_train": True,
                "finetuning_type": "lora", "lora_target": "all", "dataset": "tiny", "dataset_dir": str(root / "data"),
                "template": "qwen", "cutoff_len": 64, "output_dir": str(out), "per_device_train_batch_size": 2,
                "max_steps": 100000, "logging_steps": 1, "save_steps": 100000, "learning_rate": 1.0e-4,
                "use_cpu": True, "bf16": False, "report_to": "none", "preprocessing_num_workers": 1,
                "dataloader_num_workers": 0,
            }  # fmt: skip
            config = root / f"{sig.name}.yaml"
            config.write_text(yaml.safe_dump(cfg))
            env = {
                **os.environ,
                "PATH": f"{cli_dir}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": str(ROOT),
                "LF_TUNER_HOME": str(root / "home"),
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "lf_tuner", "run", str(config)],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            log = out / "trainer_log.jsonl"
            while proc.poll() is None and not (log.exists() and log.read_text().strip()):
                time.sleep(0.2)
            tree = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
            proc.send_signal(sig)
            proc.wait(timeout=300)
            left = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            for p in left:
                p.kill()
            record_path = out / "lf-tuner-run.json"
            record = json.loads(record_path.read_text()) if record_path.exists() else {}
            status = record.get("status", "(none)")
            failures += not (status == "interrupted" and not left and tree)
            print(
                f"  {sig.name:<8}{proc.returncode:>6}  {status:<14}{record.get('steps')!s:>6}{len(tree):>13}"
                f"{len(left):>16}"
            )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    parser.add_argument("--no-signals", action="store_true", help="skip the signal runs")
    parser.add_argument(
        "--real", action="store_true", help="also signal real llamafactory-cli runs (needs llamafactory)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    bad = battery(args.verbose)
    if not args.no_signals:
        bad += signals()
        if args.real:
            bad += real_signals()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
