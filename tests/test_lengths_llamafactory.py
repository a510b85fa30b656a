"""lf-tuner's lengths against LLaMA-Factory's own preprocessing, sample by sample (runs where llamafactory is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import requires_llamafactory
from tests.lf_data import build_bpe_tokenizer, write_dataset_dir

pytestmark = [requires_llamafactory, pytest.mark.llamafactory]

DATASETS = ["alp", "alp_jsonl", "sg", "oa_sharegpt", "oa"]  # alpaca JSON/JSONL, sharegpt, openai tags, openai


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lf")
    return build_bpe_tokenizer(root / "tok"), write_dataset_dir(root / "data", n=24)


def _llamafactory(tok: Path, data: Path, template: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What scripts/stat_utils/length_cdf.py runs: the SFT dataset pipeline with no truncation."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp / "cache"))
    monkeypatch.setenv("DISABLE_VERSION_CHECK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.chdir(tmp)
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(
        dict(
            stage="sft",
            model_name_or_path=str(tok),
            dataset=",".join(DATASETS),
            dataset_dir=str(data),
            template=template,
            cutoff_len=1_000_000,
            output_dir=str(tmp / "out"),
            overwrite_cache=True,
            do_train=True,
            report_to="none",
        )  # fmt: skip
    )
    tokenizer_module = load_tokenizer(model_args)
    tpl = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(tpl, model_args, data_args, training_args, "sft", **tokenizer_module)
    return module["train_dataset"]


@pytest.mark.parametrize(
    "template", ["qwen", "qwen3", "llama3", "mistral", "chatml", "default", "gemma", "llama2"]
)
def test_lengths_equal_llamafactory(
    template: str, setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lf_tuner.chat import get_template
    from lf_tuner.data import resolve_datasets
    from lf_tuner.lengths.counters import load_hf_tokenizer
    from lf_tuner.lengths.measure import LengthCounter

    tok, data = setup
    lf = _llamafactory(tok, data, template, tmp_path, monkeypatch)
    lf_total = [len(ids) for ids in lf["input_ids"]]
    lf_response = [sum(1 for x in labels if x != -100) for labels in lf["labels"]]

    tpl = get_template(template)
    m = LengthCounter(tpl, load_hf_tokenizer(tok)).measure(resolve_datasets(DATASETS, data))
    assert len(lf_total) == m.count == 24 * len(DATASETS)
    assert list(m.total) == lf_total
    if not tpl.efficient_eos:  # labels are exactly the response tokens
        assert list(m.response) == lf_response
    assert max(lf_total) > min(lf_total)  # the data is not degenerate


def test_registry_matches_installed_llamafactory() -> None:
    from lf_tuner.chat._generate import snapshot
    from lf_tuner.chat._registry import TEMPLATES

    assert snapshot() == TEMPLATES, (
        "regenerate with: python -m lf_tuner.chat._generate && ruff format lf_tuner/chat"
    )
