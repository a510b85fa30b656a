"""Which device sets a sweep's trials run on: `cpu`, or groups of GPUs chosen as `lf-tuner run --gpus` chooses them."""

from __future__ import annotations

from lf_tuner.errors import BadValue


def gpu_slots(gpus: str | None, per_trial: int) -> list[str]:
    """The device sets trials run on: `cpu`, or consecutive groups of per_trial GPU indices."""
    if gpus is not None and gpus.strip().lower() == "cpu":
        return ["cpu"]
    from lf_tuner.train import detect_gpus, named_gpus

    ids = [str(g.index) for g in detect_gpus(gpus)]
    if not ids:
        if gpus is None:
            return ["cpu"]
        # no NVML here (e.g. a login node): the GPUs the value names, as `lf-tuner run --gpus` reads it
        ids = [str(i) for i in named_gpus(gpus)]
        if not ids:
            raise BadValue(f"no GPU is visible to select `{gpus}` from; use `--gpus cpu`", param="--gpus")
    if len(ids) < per_trial:
        raise BadValue(
            f"gpus_per_trial is {per_trial} but only {len(ids)} GPU(s) are selected ({','.join(ids)}); "
            "select more with --gpus or lower gpus_per_trial",
            param="--gpus",
        )
    return [",".join(ids[i : i + per_trial]) for i in range(0, len(ids) - per_trial + 1, per_trial)]
