"""Image, video and audio tokens as LLaMA-Factory 0.9.5's `mm_plugin` counts them, from the model folder's
processor config (`preprocessor_config.json`, `video_preprocessor_config.json`, `processor_config.json`) and the
media files themselves (image sizes with Pillow, video streams with PyAV; both imported only when a row has one).

`MediaCounter.expand` rewrites a sample's messages the way the plugin's `process_messages` does (each `<image>`
becomes the plugin's tokens) and returns the tokens `process_token_ids` puts before the prompt. Exact for the
`qwen2_vl` (images, videos), `qwen3_vl` (images), `llava` and `paligemma` plugins; media of other plugins are
counted as their placeholder text and marked approximate. LLaMA-Factory's refusals (a template with an image
plugin and no processor in the model folder, images for a text-only template, placeholders that do not match
the media) are `LfTunerError`s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lf_tuner.chat import MediaPlugin, Message
from lf_tuner.data import Sample
from lf_tuner.errors import LfTunerError
from lf_tuner.lengths.counters import read_json_object

Config = dict[str, Any]  # a processor's settings, as its JSON file or its attributes give them
IMAGE, VIDEO, AUDIO = "<image>", "<video>", "<audio>"  # LLaMA-Factory's default placeholders
EXACT = {"qwen2_vl": ("image", "video"), "qwen3_vl": ("image",), "llava": ("image",), "paligemma": ("image",)}


@dataclass(frozen=True)
class MediaArgs:
    """LLaMA-Factory's `ProcessorArguments` that change token counts (its defaults)."""

    image_max_pixels: int = 768 * 768
    image_min_pixels: int = 32 * 32
    video_max_pixels: int = 256 * 256
    video_min_pixels: int = 16 * 16
    video_fps: float = 2.0
    video_maxlen: int = 128

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> MediaArgs:
        defaults = cls()
        values: dict[str, Any] = {}
        for name in (
            "image_max_pixels",
            "image_min_pixels",
            "video_max_pixels",
            "video_min_pixels",
            "video_maxlen",
        ):
            values[name] = int(cfg.get(name, getattr(defaults, name)))
        values["video_fps"] = float(cfg.get("video_fps", defaults.video_fps))
        return cls(**values)


@dataclass
class ProcessorInfo:
    """What the model folder's processor says: its image/video processor settings and processor attributes.

    Read from the transformers processor when LLaMA-Factory's loader can build one, else from the JSON files.
    """

    image: Config = field(default_factory=dict)
    video: Config = field(default_factory=dict)
    processor: Config = field(default_factory=dict)
    has_image: bool = False
    has_video: bool = False
    has_audio: bool = False

    @classmethod
    def load(cls, model_dir: Path | None) -> ProcessorInfo | None:
        """The folder's processor, or None where LLaMA-Factory's `load_tokenizer` would find none."""
        if model_dir is None or not model_dir.is_dir():
            return None
        try:
            import transformers  # noqa: F401
        except ImportError:
            return cls._from_json(model_dir)
        return cls._from_transformers(model_dir)

    @classmethod
    def _from_json(cls, model_dir: Path) -> ProcessorInfo | None:
        image = read_json_object(model_dir / "preprocessor_config.json", "processor")
        video = read_json_object(model_dir / "video_preprocessor_config.json", "processor") or image
        processor = read_json_object(model_dir / "processor_config.json", "processor")
        if not image and not processor:
            return None
        audio = "feature_extractor_type" in image
        return cls(image, video, processor, bool(image) and not audio, bool(video) and not audio, audio)

    @classmethod
    def _from_transformers(cls, model_dir: Path) -> ProcessorInfo | None:
        from transformers import AutoProcessor
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        # transformers' notes on `use_fast` are about LLaMA-Factory's call, not the user's: kept out of the output
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        try:
            try:
                proc = AutoProcessor.from_pretrained(str(model_dir), use_fast=True)  # type: ignore[no-untyped-call]
            except ValueError:
                proc = AutoProcessor.from_pretrained(str(model_dir), use_fast=False)  # type: ignore[no-untyped-call]
        except Exception:  # LLaMA-Factory logs "Failed to load processor" and goes on without one
            return None
        finally:
            hf_logging.set_verbosity(verbosity)
        if "Processor" not in type(proc).__name__:
            return None
        image = getattr(proc, "image_processor", None)
        video = getattr(proc, "video_processor", None) or image
        audio = getattr(proc, "feature_extractor", None) or getattr(proc, "audio_processor", None)
        attrs = (
            "image_seq_length",
            "patch_size",
            "num_additional_image_tokens",
            "vision_feature_select_strategy",
        )
        return cls(
            _attrs(image),
            _attrs(video),
            {k: getattr(proc, k) for k in attrs if hasattr(proc, k)},
            image is not None,
            video is not None,
            audio is not None,
        )


_KEYS = ("merge_size", "patch_size", "temporal_patch_size", "size", "min_pixels", "max_pixels", "crop_size",
         "do_center_crop", "do_resize")  # fmt: skip


def _attrs(obj: Any) -> Config:
    if obj is None:
        return {}
    out = {}
    for key in _KEYS:
        value = getattr(obj, key, None)
        if value is not None:
            out[key] = _size_dict(value) if key in ("size", "crop_size") else value
    return out


def _size_dict(value: Any) -> Any:
    """A transformers `SizeDict` (or dict) as a plain dict of its set fields."""
    if isinstance(value, dict):
        return value
    names = ("height", "width", "shortest_edge", "longest_edge")
    return {k: getattr(value, k) for k in names if getattr(value, k, None) is not None} or value


class MediaCounter:
    """Expands a sample's media placeholders as the template's plugin does (see the module docstring)."""

    def __init__(self, plugin: MediaPlugin, model_dir: Path | None, args: MediaArgs | None = None) -> None:
        self.plugin = plugin
        self.args = args or MediaArgs()
        self.processor: ProcessorInfo | None = None
        self._sizes: dict[str, tuple[int, int]] = {}
        if plugin.is_base:
            return
        self.processor = ProcessorInfo.load(model_dir)
        where = (
            f"the model folder {model_dir}" if model_dir else "no model folder (pass --model or --tokenizer)"
        )
        p = self.processor
        missing = (
            "Processor" if p is None and plugin.image_token is not None
            else "Image processor" if plugin.image_token is not None and p is not None and not p.has_image
            else "Video processor" if plugin.video_token is not None and p is not None and not p.has_video
            else "Audio feature extractor" if plugin.audio_token is not None and p is not None and not p.has_audio
            else None
        )  # fmt: skip
        if missing:
            raise LfTunerError(
                f"template: the `{plugin.name}` plugin needs the model's processor, and {where} has none "
                f"(LLaMA-Factory: {missing} was not found, please check and update your model file); use the "
                "model folder with its preprocessor_config.json, or a text-only template"
            )

    def approximate_reason(self, sample: Sample) -> str | None:
        """Why this sample's media tokens are not exact, or None."""
        exact = EXACT.get(self.plugin.name, ())
        for kind, items in (("image", sample.images), ("video", sample.videos), ("audio", sample.audios)):
            if items and kind not in exact:
                return f"{kind} tokens of the `{self.plugin.name}` plugin are not reproduced (placeholders counted)"
        return None

    def expand(self, sample: Sample, messages: list[Message]) -> tuple[list[Message], int]:
        """`process_messages` and `process_token_ids`: the messages with media tokens, and the tokens put before
        the prompt (paligemma)."""
        images, videos, audios = sample.images or [], sample.videos or [], sample.audios or []
        plugin = self.plugin
        for kind, items, token in (("image", images, plugin.image_token), ("video", videos, plugin.video_token),
                                   ("audio", audios, plugin.audio_token)):  # fmt: skip
            if items and token is None:
                raise LfTunerError(
                    f"this template does not take {kind} input (LLaMA-Factory: This model does not support "
                    f"{kind} input); use the model's multimodal template"
                )
        if plugin.is_base or not (images or videos or audios):
            return messages, 0
        _check_placeholders(messages, images, videos, audios)
        if self.approximate_reason(sample) is not None:
            return messages, 0
        if plugin.name in ("qwen2_vl", "qwen3_vl"):
            return self._qwen(messages, images, videos), 0
        if plugin.name == "llava":
            return self._llava(messages, images), 0
        # paligemma: placeholders removed, image_seq_length tokens per image before the prompt
        n = int(self._processor_attr("image_seq_length")) if plugin.expand_mm_tokens else 0
        return [Message(m.role, m.content.replace(IMAGE, "")) for m in messages], n * len(images)

    # ---------------------------------------------------------------- plugins

    def _qwen(self, messages: list[Message], images: list[Any], videos: list[Any]) -> list[Message]:
        p, plugin = self.processor, self.plugin
        assert p is not None
        bos, eos = plugin.extra.get("vision_bos_token", ""), plugin.extra.get("vision_eos_token", "")
        image_token, video_token = str(plugin.image_token), str(plugin.video_token)
        image_merge = int(p.image.get("merge_size", 2)) ** 2
        image_lens = [self._qwen_image(img) // image_merge for img in images]
        video_merge = int(p.video.get("merge_size") or p.image.get("merge_size") or 2) ** 2
        video_lens = [self._qwen_video(v) // video_merge for v in videos]
        out = []
        for m in messages:
            content = m.content
            while IMAGE in content:
                n = image_lens.pop(0) if plugin.expand_mm_tokens else 1
                content = content.replace(IMAGE, f"{bos}{image_token * n}{eos}", 1)
            while VIDEO in content:
                n = video_lens.pop(0) if plugin.expand_mm_tokens else 1
                content = content.replace(VIDEO, f"{bos}{video_token * n}{eos}", 1)
            out.append(Message(m.role, content))
        return out

    def _qwen_image(self, image: Any) -> int:
        """Patches of one image: LLaMA-Factory's resize, then the image processor's `smart_resize`."""
        w, h = self._image_size(image)
        w, h = _qwen_regularize(w, h, self.args.image_max_pixels, self.args.image_min_pixels)
        return self._qwen_grid(self.processor.image if self.processor else {}, h, w, 1)

    def _qwen_grid(self, cfg: Config, h: int, w: int, frames: int) -> int:
        patch, merge = int(cfg.get("patch_size", 14)), int(cfg.get("merge_size", 2))
        temporal = int(cfg.get("temporal_patch_size", 2))
        min_pixels, max_pixels = _pixel_limits(cfg)
        rh, rw = smart_resize(h, w, patch * merge, min_pixels, max_pixels)
        return math.ceil(frames / temporal) * (rh // patch) * (rw // patch)

    def _qwen_video(self, video: Any) -> int:
        p = self.processor
        assert p is not None
        if isinstance(video, list):  # frames already sampled: every frame regularized as a video frame
            frames = len(video) + len(video) % 2
            w, h = self._image_size(video[0])
            w, h = _qwen_regularize(w, h, self.args.video_max_pixels, self.args.video_min_pixels)
            return self._qwen_grid(p.video, h, w, frames)
        meta = _video_stream(video, self.args.video_fps, self.args.video_maxlen)
        frames = meta[2] + meta[2] % 2
        w, h = _qwen_regularize(meta[0], meta[1], self.args.video_max_pixels, self.args.video_min_pixels)
        return self._qwen_grid(p.video, h, w, frames)

    def _llava(self, messages: list[Message], images: list[Any]) -> list[Message]:
        p = self.processor
        assert p is not None
        n = 1
        if self.plugin.expand_mm_tokens:
            crop = p.image.get("crop_size")
            if not p.image.get("do_center_crop", True) or not isinstance(crop, dict):
                raise LfTunerError(
                    "processor: llava image sizes are counted for center-cropped images (crop_size); this "
                    "processor resizes without cropping"
                )
            patch = int(self._processor_attr("patch_size"))
            n = (int(crop["height"]) // patch) * (int(crop["width"]) // patch)
            n += int(p.processor.get("num_additional_image_tokens", 0))
            if p.processor.get("vision_feature_select_strategy", "default") == "default":
                n -= 1
        token = str(self.plugin.image_token)
        return [Message(m.role, m.content.replace(IMAGE, token * n)) for m in messages]

    def _processor_attr(self, name: str) -> Any:
        p = self.processor
        value = p.processor.get(name) if p is not None else None
        if value is None:
            raise LfTunerError(f"processor: the model's processor has no `{name}` (processor_config.json)")
        return value

    def _image_size(self, image: Any) -> tuple[int, int]:
        """(width, height) from the file's header (Pillow reads no pixels for this)."""
        key = image if isinstance(image, str) else None
        if key is not None and key in self._sizes:
            return self._sizes[key]
        try:
            from PIL import Image
        except ImportError:
            raise LfTunerError("images: counting image tokens needs Pillow; pip install pillow") from None
        try:
            if isinstance(image, dict):
                import io

                source: Any = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
            elif isinstance(image, bytes):
                import io

                source = io.BytesIO(image)
            else:
                source = image
            with Image.open(source) as img:
                size = (int(img.width), int(img.height))
        except (OSError, KeyError, TypeError) as exc:
            raise LfTunerError(f"images: cannot read {str(image)[:200]}: {exc}") from None
        if key is not None:
            self._sizes[key] = size
        return size


def _check_placeholders(
    messages: list[Message], images: list[Any], videos: list[Any], audios: list[Any]
) -> None:
    """`_validate_messages`: as many placeholders as media."""
    for placeholder, items in ((IMAGE, images), (VIDEO, videos), (AUDIO, audios)):
        n = sum(m.content.count(placeholder) for m in messages)
        if n != len(items):
            raise LfTunerError(
                f"{len(items)} {placeholder[1:-1]}s but {n} {placeholder} placeholders in the messages "
                f"(LLaMA-Factory: The number of {placeholder[1:-1]}s does not match the number of {placeholder} "
                "tokens); fix the row"
            )


def _pixel_limits(cfg: Config) -> tuple[int, int]:
    size = cfg.get("size") if isinstance(cfg.get("size"), dict) else {}
    assert isinstance(size, dict)
    lo = cfg.get("min_pixels") or size.get("shortest_edge") or 56 * 56
    hi = cfg.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280
    return int(lo), int(hi)


def _qwen_regularize(w: int, h: int, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    """LLaMA-Factory's `_preprocess_image` (Qwen2VLPlugin): the size it resizes an image (or frame) to."""
    if w * h > max_pixels:
        factor = math.sqrt(max_pixels / (w * h))
        w, h = int(w * factor), int(h * factor)
    if w * h < min_pixels:
        factor = math.sqrt(min_pixels / (w * h))
        w, h = int(w * factor), int(h * factor)
    if min(w, h) < 28:
        w, h = max(w, 28), max(h, 28)
    if w / h > 200:
        w, h = h * 180, h
    if h / w > 200:
        w, h = w, w * 180
    return w, h


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' Qwen2-VL `smart_resize`: sides rounded to `factor`, pixels within [min, max]."""
    if max(height, width) / min(height, width) > 200:
        raise LfTunerError(f"images: aspect ratio {max(height, width) / min(height, width):.0f} is over 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _video_stream(video: Any, fps: float, maxlen: int) -> tuple[int, int, int]:
    """(width, height, sampled frames) of a video file's stream, as `_get_qwen_video_stream_metadata` reads it."""
    try:
        import av
    except ImportError:
        raise LfTunerError("videos: counting video tokens needs PyAV; pip install av") from None
    try:
        container = av.open(video, "r")
    except Exception as exc:
        raise LfTunerError(f"videos: cannot open {str(video)[:200]}: {exc}") from None
    try:
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None or stream.duration is None or stream.average_rate is None:
            raise LfTunerError(f"videos: {video}: no video stream with a duration and frame rate")
        total = stream.frames
        if total == 0:
            frames = maxlen
        else:
            sample = max(1, math.floor(float(stream.duration * stream.time_base) * fps))
            frames = min(total, maxlen, sample)
        return int(stream.width), int(stream.height), int(frames)
    finally:
        container.close()
