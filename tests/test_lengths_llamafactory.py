"""lf-tuner's lengths against LLaMA-Factory's own preprocessing, sample by sample (runs where llamafactory is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import requires_llamafactory
from tests.lf_data import (
    build_bpe_tokenizer,
    build_sentencepiece_tokenizer,
    isolate_llamafactory,
    run_llamafactory,
    write_dataset_dir,
    write_stage_dir,
)

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
    from lf_tuner.lengths import LengthCounter, load_hf_tokenizer

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
    from lf_tuner.chat._generate import snapshot, tool_formats, tool_prompts
    from lf_tuner.chat._registry import TEMPLATES, TOOL_FORMATS, TOOL_PROMPTS

    again = "regenerate with: python -m lf_tuner.chat._generate && ruff format lf_tuner/chat"
    assert snapshot() == TEMPLATES, again
    assert tool_prompts() == TOOL_PROMPTS, again
    assert tool_formats() == TOOL_FORMATS, again


# ---------------------------------------------------------------- tool formats, text for text


def _tool_cases() -> tuple[list[str], list[str]]:

    from tests.lf_data import openai_tool_rows, tool_rows

    rows = tool_rows(40, seed=11)
    tools = [r["tools"] for r in rows] + [r["tools"] for r in openai_tool_rows(10)]
    calls = [m["value"] for r in rows for m in r["conversations"] if m["from"] == "function_call"]
    calls += [
        '<think>\nplan\n</think>\n\n{"name": "f", "arguments": {"q": "v", "n": [1, 2, {"k": null}], "b": true}}',
        'before <tool_call>{"name": "f", "arguments": {"q": 2}}</tool_call> after',
        '[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": "y"}}]',
    ]
    return tools, calls


def test_every_tool_format_matches_llamafactory() -> None:
    """Each of LLaMA-Factory's tool formats: the tool prompt and the function-call text, as its formatters."""
    from llamafactory.data.formatter import FunctionFormatter, ToolFormatter
    from llamafactory.data.tool_utils import TOOLS

    from lf_tuner.chat import ToolError, function_text, tool_format_names, tool_text

    assert tool_format_names() == sorted(TOOLS)
    tools, calls = _tool_cases()
    words = (("<think>\n", "\n</think>\n\n"), ("<tool_call>", "</tool_call>"))
    checked = 0
    for fmt in TOOLS:
        for t in tools:
            expected: str | None = ToolFormatter(tool_format=fmt).apply(content=t)[0]
            assert tool_text(fmt, t) == expected, (fmt, t)
            checked += 1
        for c in calls:
            formatter = FunctionFormatter(slots=["{{content}}"], tool_format=fmt)
            try:
                expected = formatter.apply(content=c, thought_words=words[0], tool_call_words=words[1])[0]
            except Exception:  # LLaMA-Factory refuses it (e.g. glm4 and parallel calls): so must lf-tuner
                expected = None
            if expected is None:
                with pytest.raises(ToolError):
                    function_text(fmt, c, *words)
            else:
                assert function_text(fmt, c, *words) == expected, (fmt, c)
            checked += 1
    assert checked > 500


@pytest.fixture(scope="module")
def stage_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lf-stages")
    return build_bpe_tokenizer(root / "tok"), write_stage_dir(root / "data", n=24)


def _ours(tok: Path, data: Path, names: list[str], template: str, stage: str = "sft", **kw: Any) -> Any:
    from lf_tuner.chat import get_template
    from lf_tuner.data import resolve_datasets
    from lf_tuner.lengths import LengthCounter, load_hf_tokenizer

    counter = LengthCounter(get_template(template), load_hf_tokenizer(tok, **kw), stage=stage)
    return counter.measure(resolve_datasets(names, data, stage=stage))


# every tool format; openai rows (arguments as JSON strings) only where LLaMA-Factory's formatter takes them,
# parallel calls not for glm4 (LLaMA-Factory refuses them: see the next test)
OPENAI = ["tools", "tools_openai"]
TOOL_TEMPLATES = {"qwen": OPENAI, "qwen3": OPENAI, "llama3": OPENAI, "mistral": OPENAI, "default": OPENAI,
                  "phi4_mini": OPENAI, "minimax1": OPENAI, "bailing_v2": OPENAI, "glm4": ["tools_single"],
                  "minimax2": ["tools"], "seed_oss": ["tools"], "lfm2": ["tools"], "glm4_moe": ["tools"]}  # fmt: skip


@pytest.mark.parametrize("template", sorted(TOOL_TEMPLATES))
def test_tool_call_lengths_equal_llamafactory(
    template: str, stage_setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok, data = stage_setup
    names = TOOL_TEMPLATES[template]
    isolate_llamafactory(tmp_path, monkeypatch)
    lf = run_llamafactory(tok, data, names, template, tmp_path)
    m = _ours(tok, data, names, template)
    assert m.approximate_rows == 0
    assert list(m.total) == [len(ids) for ids in lf["input_ids"]]
    assert m.count == 24 * len(names)


def test_tool_call_refusals_match_llamafactory(
    stage_setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """glm4 takes no parallel calls: LLaMA-Factory stops on the row, lf-tuner names it."""
    from lf_tuner.errors import LfTunerError

    tok, data = stage_setup
    isolate_llamafactory(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="GLM-4 does not support parallel functions"):
        run_llamafactory(tok, data, ["tools"], "glm4", tmp_path)
    with pytest.raises(LfTunerError, match=r"tools.json\[\d+\]: .*GLM-4 does not support parallel functions"):
        _ours(tok, data, ["tools"], "glm4")


@pytest.mark.parametrize("template", ["qwen", "qwen3", "llama3", "mistral", "glm4_moe"])
def test_pairwise_lengths_equal_llamafactory(
    template: str, stage_setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok, data = stage_setup
    isolate_llamafactory(tmp_path, monkeypatch)
    lf = run_llamafactory(tok, data, ["dpo", "dpo_alpaca"], template, tmp_path, stage="dpo")
    m = _ours(tok, data, ["dpo", "dpo_alpaca"], template, stage="dpo")
    chosen, rejected = [len(x) for x in lf["chosen_input_ids"]], [len(x) for x in lf["rejected_input_ids"]]
    assert (list(m.chosen), list(m.rejected)) == (chosen, rejected)
    assert list(m.total) == [max(c, r) for c, r in zip(chosen, rejected, strict=True)]
    assert m.count == 48 and chosen != rejected


@pytest.mark.parametrize("template", ["qwen", "qwen3", "llama3"])
def test_kto_lengths_equal_llamafactory(
    template: str, stage_setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok, data = stage_setup
    isolate_llamafactory(tmp_path, monkeypatch)
    lf = run_llamafactory(tok, data, ["kto"], template, tmp_path, stage="kto")
    m = _ours(tok, data, ["kto"], template, stage="kto")
    assert list(m.total) == [len(x) for x in lf["input_ids"]] and m.count == 24


@pytest.mark.parametrize("template", ["qwen", "llama3", "default"])
def test_pretraining_lengths_and_blocks_equal_llamafactory(
    template: str, stage_setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without packing: every text's length; with packing (pt's default): the number of blocks."""
    from lf_tuner.lengths import pack

    tok, data = stage_setup
    isolate_llamafactory(tmp_path, monkeypatch)
    m = _ours(tok, data, ["wiki", "c4"], template, stage="pt")
    lf = run_llamafactory(tok, data, ["wiki", "c4"], template, tmp_path, stage="pt", packing=False)
    assert list(m.total) == [len(x) for x in lf["input_ids"]] and m.count > 48  # wiki.txt: one sample a line
    for cutoff, extra in ((64, {}), (50, {"preprocessing_batch_size": 7}), (32, {"packing": True})):
        (tmp_path / "cache").mkdir(exist_ok=True)
        packed = run_llamafactory(tok, data, ["wiki", "c4"], template, tmp_path, stage="pt", cutoff_len=cutoff,
                                  **extra)  # fmt: skip
        block = cutoff - 1 if extra.get("packing") else cutoff
        blocks = pack(m.packed, block, batch_size=int(extra.get("preprocessing_batch_size", 1000))).blocks
        assert blocks == len(packed) > 0, (cutoff, extra)


# ---------------------------------------------------------------- a SentencePiece tokenizer in the old layout


@pytest.fixture(scope="module")
def sentencepiece_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lf-sp")
    return build_sentencepiece_tokenizer(root / "sp"), write_dataset_dir(root / "data", n=24)


@pytest.mark.parametrize("template", ["mistral", "qwen", "qwen3", "llama2", "default"])
def test_old_sentencepiece_layout_equals_llamafactory(
    template: str, sentencepiece_setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers 5 rebuilds a Llama-2 tokenizer.json (prepend normalizer) when LLaMA-Factory loads it: lf-tuner
    counts with what it builds, and without transformers rebuilds it the same way, marked approximate."""
    tok, data = sentencepiece_setup
    isolate_llamafactory(tmp_path, monkeypatch)
    lf = run_llamafactory(tok, data, DATASETS, template, tmp_path)
    expected = [len(ids) for ids in lf["input_ids"]]
    loaded = _ours(tok, data, DATASETS, template)
    assert list(loaded.total) == expected and len(expected) == 24 * len(DATASETS)
    rebuilt = _ours(tok, data, DATASETS, template, use_transformers=False)
    assert list(rebuilt.total) == expected
    from lf_tuner.lengths import load_hf_tokenizer

    assert load_hf_tokenizer(tok, use_transformers=False).approximate
    assert not load_hf_tokenizer(tok).approximate


# ---------------------------------------------------------------- multimodal rows (a tiny processor config)


@pytest.fixture(autouse=True)
def _restore_qwen_vl_defaults() -> Any:
    """transformers 5.6's Qwen2-VL image/video processors write `min_pixels`/`max_pixels` into their class-level
    default `size` dict when a config passes them: put the defaults back for the tests that come later."""
    import copy

    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    classes = (Qwen2VLImageProcessor, Qwen2VLVideoProcessor, Qwen3VLVideoProcessor)
    saved = [copy.deepcopy(cls.size) for cls in classes]
    yield
    for cls, size in zip(classes, saved, strict=True):
        cls.size = size


@pytest.fixture(scope="module")
def media_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.lf_data import build_qwen2_vl_model, write_media_dir

    root = tmp_path_factory.mktemp("lf-media")
    return build_qwen2_vl_model(root / "model"), write_media_dir(root / "data")


@pytest.mark.parametrize("names", [["images", "videos"], ["frames"]])  # LLaMA-Factory cannot merge these
@pytest.mark.parametrize(
    "extra", [{}, {"image_max_pixels": 128 * 128, "video_fps": 4.0, "video_max_pixels": 4096}]
)
def test_media_lengths_equal_llamafactory(
    names: list[str],
    extra: dict[str, Any],
    media_setup: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Qwen2-VL image and video tokens from the processor config, the image sizes and the video stream."""
    from lf_tuner.data import resolve_datasets
    from lf_tuner.lengths import config_counter, config_template, load_hf_tokenizer

    model, data = media_setup
    isolate_llamafactory(tmp_path, monkeypatch)
    lf = run_llamafactory(model, data, names, "qwen2_vl", tmp_path, **extra)
    cfg = {"template": "qwen2_vl", **extra}
    counter = config_counter(cfg, config_template(cfg), load_hf_tokenizer(model), model, "sft")
    m = counter.measure(resolve_datasets(names, data))
    assert m.approximate_rows == 0
    assert list(m.total) == [len(x) for x in lf["input_ids"]]
    assert max(m.total) - min(m.total) > 40  # media tokens counted, not placeholders


def test_media_refusals_match_llamafactory(
    stage_setup: tuple[Path, Path],
    media_setup: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An image template with no processor in the model folder, and images for a text-only template."""
    from lf_tuner.data import resolve_datasets
    from lf_tuner.errors import LfTunerError
    from lf_tuner.lengths import config_counter, config_template, load_hf_tokenizer

    tok, text_data = stage_setup
    model, data = media_setup
    isolate_llamafactory(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="Processor was not found"):
        run_llamafactory(tok, text_data, ["kto"], "qwen2_vl", tmp_path, stage="kto")
    cfg = {"template": "qwen2_vl"}
    with pytest.raises(
        LfTunerError, match=r"the `qwen2_vl` plugin needs the model's processor.*Processor was not"
    ):
        config_counter(cfg, config_template(cfg), load_hf_tokenizer(tok), tok, "kto")
    with pytest.raises(ValueError, match="This model does not support image input"):
        run_llamafactory(model, data, ["images"], "qwen", tmp_path)
    cfg = {"template": "qwen"}
    counter = config_counter(cfg, config_template(cfg), load_hf_tokenizer(model), model, "sft")
    with pytest.raises(LfTunerError, match=r"images.json\[1\]: this template does not take image input"):
        counter.measure(resolve_datasets(["images"], data))


@pytest.mark.parametrize("template", ["llava", "paligemma"])
def test_fixed_image_tokens_equal_llamafactory(
    template: str, media_setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llava: (crop / patch)^2 tokens a image in place of `<image>`; paligemma: image_seq_length before the prompt."""
    from lf_tuner.data import resolve_datasets
    from lf_tuner.lengths import config_counter, config_template, load_hf_tokenizer
    from tests.lf_data import build_image_model

    _, data = media_setup
    model = build_image_model(tmp_path / template, template)
    isolate_llamafactory(tmp_path, monkeypatch)
    lf = run_llamafactory(model, data, ["images"], template, tmp_path)
    cfg = {"template": template}
    counter = config_counter(cfg, config_template(cfg), load_hf_tokenizer(model), model, "sft")
    m = counter.measure(resolve_datasets(["images"], data))
    assert m.approximate_rows == 0
    assert list(m.total) == [len(x) for x in lf["input_ids"]]


def test_qwen3_vl_image_tokens_equal_llamafactory(
    media_setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lf_tuner.data import resolve_datasets
    from lf_tuner.lengths import config_counter, config_template, load_hf_tokenizer
    from tests.lf_data import build_qwen2_vl_model

    _, data = media_setup
    model = build_qwen2_vl_model(tmp_path / "qwen3-vl", qwen3=True)
    isolate_llamafactory(tmp_path, monkeypatch)
    lf = run_llamafactory(model, data, ["images"], "qwen3_vl", tmp_path)
    cfg = {"template": "qwen3_vl"}
    counter = config_counter(cfg, config_template(cfg), load_hf_tokenizer(model), model, "sft")
    m = counter.measure(resolve_datasets(["images"], data))
    assert m.approximate_rows == 0
    assert list(m.total) == [len(x) for x in lf["input_ids"]]
