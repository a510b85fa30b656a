"""Architecture facts of known checkpoints, copied from each checkpoint's public config.json.

`published_params` is the parameter count the checkpoint publishes (its safetensors metadata, or
the model card where that is all there is); a test checks that the count computed from the
facts matches it within 0.5%.
"""

from __future__ import annotations

from dataclasses import replace

from lf_tuner.models.arch import ModelArch

# SigLIP-so400m vision tower of Gemma 3 (4B and larger), frozen by LLaMA-Factory's default
# `freeze_vision_tower: true`; the projector adds 1152 * hidden + 1152.
_SIGLIP = 416_866_032


def _qwen25(name: str, h: int, f: int, layers: int, heads: int, kv: int, vocab: int, tied: bool,
            published: int, aliases: tuple[str, ...] = (), max_pos: int = 32768) -> ModelArch:
    return ModelArch(name=name, model_type="qwen2", hidden_size=h, intermediate_size=f, num_layers=layers,
                     num_heads=heads, num_kv_heads=kv, vocab_size=vocab, tie_embeddings=tied,
                     max_positions=max_pos, qkv_bias=True, template="qwen", hf_id=f"Qwen/{name}",
                     published_params=published, aliases=aliases)


def _qwen3(name: str, h: int, f: int, layers: int, heads: int, kv: int, tied: bool, published: int,
           **moe: int) -> ModelArch:
    return ModelArch(name=name, model_type="qwen3_moe" if moe else "qwen3", hidden_size=h, intermediate_size=f,
                     num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=128, vocab_size=151936,
                     tie_embeddings=tied, max_positions=40960, qk_norm=True, template="qwen3",
                     hf_id=f"Qwen/{name}", published_params=published,
                     aliases=(f"{name}-Base",), **moe)  # type: ignore[arg-type]


def _llama(name: str, hf_id: str, h: int, f: int, layers: int, heads: int, kv: int, vocab: int, tied: bool,
           max_pos: int, template: str, published: int, aliases: tuple[str, ...] = (),
           model_type: str = "llama", head_dim: int = 0) -> ModelArch:
    return ModelArch(name=name, model_type=model_type, hidden_size=h, intermediate_size=f, num_layers=layers,
                     num_heads=heads, num_kv_heads=kv, head_dim=head_dim, vocab_size=vocab, tie_embeddings=tied,
                     max_positions=max_pos, template=template, hf_id=hf_id, published_params=published,
                     aliases=aliases)


def _gemma(name: str, hf_id: str, model_type: str, h: int, f: int, layers: int, heads: int, kv: int, hd: int,
           vocab: int, max_pos: int, template: str, published: int, vision: int = 0) -> ModelArch:
    return ModelArch(name=name, model_type=model_type, hidden_size=h, intermediate_size=f, num_layers=layers,
                     num_heads=heads, num_kv_heads=kv, head_dim=hd, vocab_size=vocab, tie_embeddings=True,
                     max_positions=max_pos, norms_per_layer=4, qk_norm=model_type.startswith("gemma3"),
                     extra_frozen_params=(vision + 1152 * h + 1152) if vision else 0, template=template,
                     hf_id=hf_id, published_params=published, aliases=(f"{name}-it", f"{name}-pt"))


_Q25_05 = _qwen25("Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 151936, True, 494_032_768,
                  ("Qwen2.5-Coder-0.5B",))
_Q25_15 = _qwen25("Qwen2.5-1.5B", 1536, 8960, 28, 12, 2, 151936, True, 1_543_714_304,
                  ("Qwen2.5-Coder-1.5B",))
_Q25_3 = _qwen25("Qwen2.5-3B", 2048, 11008, 36, 16, 2, 151936, True, 3_085_938_688, ("Qwen2.5-Coder-3B",))
_Q25_7 = _qwen25("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, False, 7_615_616_512, ("Qwen2.5-Coder-7B",))
_Q25_14 = _qwen25("Qwen2.5-14B", 5120, 13824, 48, 40, 8, 152064, False, 14_770_033_664, ("Qwen2.5-Coder-14B",))
_Q25_32 = _qwen25("Qwen2.5-32B", 5120, 27648, 64, 40, 8, 152064, False, 32_763_876_352, ("Qwen2.5-Coder-32B",))
_Q25_72 = _qwen25("Qwen2.5-72B", 8192, 29568, 80, 64, 8, 152064, False, 72_706_203_648)

CATALOG: tuple[ModelArch, ...] = (
    _Q25_05, _Q25_15, _Q25_3, _Q25_7, _Q25_14, _Q25_32, _Q25_72,
    replace(_Q25_15, name="Qwen2.5-Math-1.5B", hf_id="Qwen/Qwen2.5-Math-1.5B", max_positions=4096, aliases=()),
    replace(_Q25_7, name="Qwen2.5-Math-7B", hf_id="Qwen/Qwen2.5-Math-7B", max_positions=4096, aliases=()),
    replace(_Q25_72, name="Qwen2.5-Math-72B", hf_id="Qwen/Qwen2.5-Math-72B", max_positions=4096, aliases=()),
    _qwen3("Qwen3-0.6B", 1024, 3072, 28, 16, 8, True, 596_049_920),
    _qwen3("Qwen3-1.7B", 2048, 6144, 28, 16, 8, True, 1_720_574_976),
    _qwen3("Qwen3-4B", 2560, 9728, 36, 32, 8, True, 4_022_468_096),
    _qwen3("Qwen3-8B", 4096, 12288, 36, 32, 8, False, 8_190_735_360),
    _qwen3("Qwen3-14B", 5120, 17408, 40, 40, 8, False, 14_768_307_200),
    _qwen3("Qwen3-32B", 5120, 25600, 64, 64, 8, False, 32_762_123_264),
    _qwen3("Qwen3-30B-A3B", 2048, 6144, 48, 32, 4, False, 30_532_122_624,
           num_experts=128, experts_per_token=8, moe_intermediate_size=768),
    _llama("Llama-3.1-8B", "meta-llama/Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256, False, 131072, "llama3",
           8_030_261_248, ("Meta-Llama-3.1-8B",)),
    _llama("Llama-3.1-70B", "meta-llama/Llama-3.1-70B", 8192, 28672, 80, 64, 8, 128256, False, 131072, "llama3",
           70_553_706_496, ("Meta-Llama-3.1-70B",)),
    _llama("Llama-3.3-70B", "meta-llama/Llama-3.3-70B-Instruct", 8192, 28672, 80, 64, 8, 128256, False, 131072,
           "llama3", 70_553_706_496),
    _llama("Llama-3.2-1B", "meta-llama/Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, True, 131072, "llama3",
           1_235_814_400, head_dim=64),
    _llama("Llama-3.2-3B", "meta-llama/Llama-3.2-3B", 3072, 8192, 28, 24, 8, 128256, True, 131072, "llama3",
           3_212_749_824),
    _llama("Mistral-7B-v0.3", "mistralai/Mistral-7B-v0.3", 4096, 14336, 32, 32, 8, 32768, False, 32768, "mistral",
           7_248_023_552, ("Mistral-7B-Instruct-v0.3",), model_type="mistral"),
    _llama("Mistral-Nemo-12B", "mistralai/Mistral-Nemo-Base-2407", 5120, 14336, 40, 32, 8, 131072, False,
           1024000, "mistral", 12_247_782_400,
           ("Mistral-Nemo-Base-2407", "Mistral-Nemo-Instruct-2407", "Mistral-Nemo"), model_type="mistral",
           head_dim=128),
    ModelArch(name="Mixtral-8x7B", model_type="mixtral", hidden_size=4096, intermediate_size=14336, num_layers=32,
              num_heads=32, num_kv_heads=8, vocab_size=32000, tie_embeddings=False, max_positions=32768,
              num_experts=8, experts_per_token=2, moe_intermediate_size=14336, template="mistral",
              hf_id="mistralai/Mixtral-8x7B-v0.1", published_params=46_702_792_704,
              aliases=("Mixtral-8x7B-v0.1", "Mixtral-8x7B-Instruct-v0.1")),
    _gemma("gemma-2-2b", "google/gemma-2-2b", "gemma2", 2304, 9216, 26, 8, 4, 256, 256000, 8192, "gemma",
           2_614_341_888),
    _gemma("gemma-2-9b", "google/gemma-2-9b", "gemma2", 3584, 14336, 42, 16, 8, 256, 256000, 8192, "gemma",
           9_241_705_984),
    _gemma("gemma-2-27b", "google/gemma-2-27b", "gemma2", 4608, 36864, 46, 32, 16, 128, 256000, 8192, "gemma",
           27_227_128_320),
    _gemma("gemma-3-1b", "google/gemma-3-1b-pt", "gemma3_text", 1152, 6912, 26, 4, 1, 256, 262144, 32768, "gemma3",
           999_885_952),
    _gemma("gemma-3-4b", "google/gemma-3-4b-pt", "gemma3", 2560, 10240, 34, 8, 4, 256, 262208, 131072, "gemma3",
           4_300_079_472, vision=_SIGLIP),
    _gemma("gemma-3-12b", "google/gemma-3-12b-pt", "gemma3", 3840, 15360, 48, 16, 8, 256, 262208, 131072,
           "gemma3", 12_187_325_040, vision=_SIGLIP),
    _gemma("gemma-3-27b", "google/gemma-3-27b-pt", "gemma3", 5376, 21504, 62, 32, 16, 128, 262208, 131072,
           "gemma3", 27_432_406_640, vision=_SIGLIP),
    ModelArch(name="Phi-3.5-mini", model_type="phi3", hidden_size=3072, intermediate_size=8192, num_layers=32,
              num_heads=32, num_kv_heads=32, vocab_size=32064, tie_embeddings=False, max_positions=131072,
              fused_qkv=True, fused_gate_up=True, template="phi", hf_id="microsoft/Phi-3.5-mini-instruct",
              published_params=3_821_079_552, aliases=("Phi-3.5-mini-instruct",)),
    ModelArch(name="Phi-4", model_type="phi3", hidden_size=5120, intermediate_size=17920, num_layers=40,
              num_heads=40, num_kv_heads=10, vocab_size=100352, tie_embeddings=False, max_positions=16384,
              fused_qkv=True, fused_gate_up=True, template="phi4", hf_id="microsoft/phi-4",
              published_params=14_659_507_200),
    ModelArch(name="GLM-4-9B", model_type="glm", hidden_size=4096, intermediate_size=13696, num_layers=40,
              num_heads=32, num_kv_heads=2, head_dim=128, vocab_size=151552, tie_embeddings=False,
              max_positions=131072, qkv_bias=True, fused_gate_up=True, template="glm4",
              hf_id="THUDM/glm-4-9b-chat-hf", published_params=9_399_951_360,
              aliases=("glm-4-9b-chat", "glm-4-9b-chat-hf", "glm-4-9b-hf")),
    _llama("Yi-1.5-6B", "01-ai/Yi-1.5-6B", 4096, 11008, 32, 32, 4, 64000, False, 4096, "yi", 6_061_035_520),
    _llama("Yi-1.5-9B", "01-ai/Yi-1.5-9B", 4096, 11008, 48, 32, 4, 64000, False, 4096, "yi", 8_829_407_232),
    _llama("Yi-1.5-34B", "01-ai/Yi-1.5-34B", 7168, 20480, 60, 56, 8, 64000, False, 4096, "yi", 34_388_917_248),
    replace(_Q25_15, name="DeepSeek-R1-Distill-Qwen-1.5B", hf_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
            tie_embeddings=False, max_positions=131072, template="deepseekr1", published_params=1_777_088_000,
            aliases=()),
    replace(_Q25_7, name="DeepSeek-R1-Distill-Qwen-7B", hf_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            max_positions=131072, template="deepseekr1", published_params=7_615_616_512, aliases=()),
    replace(_Q25_14, name="DeepSeek-R1-Distill-Qwen-14B", hf_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
            max_positions=131072, template="deepseekr1", published_params=14_770_033_664, aliases=()),
    replace(_Q25_32, name="DeepSeek-R1-Distill-Qwen-32B", hf_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
            max_positions=131072, template="deepseekr1", published_params=32_763_876_352, aliases=()),
)
