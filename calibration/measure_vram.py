"""Ground-truth VRAM measurement for LLaMA-Factory SFT runs (how vram_h100.jsonl was made).

Builds random-init models from real architecture configs, a synthetic long dataset, then runs
LLaMA-Factory's own `run_exp` for a few steps per configuration in a fresh process and records
peak memory (torch allocated / reserved, and NVML process usage which includes the CUDA context).

Usage on a CUDA machine with llamafactory 0.9.5 installed:
  python3 measure_vram.py prepare WORKDIR MODEL...
  python3 measure_vram.py one WORKDIR JSON_CASE          (runs one case in this process)
  python3 measure_vram.py grid WORKDIR CASES.jsonl OUT.jsonl [DEADLINE_S]  (one subprocess per case)
  python3 measure_vram.py env                            (versions and GPU, as JSON)

Copied from shared/calibration/measure_vram.py (same method); changes in this copy: the qwen2.5-3b
and qwen3-4b architectures, `head_dim` passed through to the config, a `env` command, the resolved
attention implementation / gradient checkpointing / parameter counts recorded per case, the stderr
tail kept for failed cases, and the CUDA calls in the step probe skipped when no GPU is present
(so the pipeline can be smoke-tested on CPU with the "tiny" model and bf16 off).
Round 2: the mistral-7b-v0.3, gemma-2-2b and phi-3.5-mini architectures (and tiny CPU stand-ins), per-arch
overrides of the common config defaults, LLaMA-Factory's attention/kernel log lines kept per case
(`log_notes`), and LFM_DELETE_MODELS / LFM_KEEP_MODELS to delete a model from the work dir after its last case.
"""
import json
import os
import subprocess
import sys
import threading
import time

ARCHS = {
    # Facts from the public config.json files of these checkpoints.
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-3b": dict(model_type="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                       num_attention_heads=16, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "qwen2.5-14b": dict(model_type="qwen2", hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True),
    "qwen3-4b": dict(model_type="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                     tie_word_embeddings=True),
    "llama3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    # Round 2. Keys besides the shapes override the common defaults in `prepare` (max_position_embeddings,
    # rms_norm_eps, rope_theta); other config keys keep transformers' defaults, which for Gemma2Config are the
    # gemma-2-2b values (query_pre_attn_scalar 256, sliding_window 4096, attn/final logit softcapping 50/30,
    # gelu_pytorch_tanh). Phi-3.5's longrope scaling is not set (it does not change memory).
    "mistral-7b-v0.3": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, vocab_size=32768,
                            tie_word_embeddings=False, rms_norm_eps=1e-5, sliding_window=None),
    "gemma-2-2b": dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000,
                       tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=10000.0),
    "phi-3.5-mini": dict(model_type="phi3", hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, tie_word_embeddings=False,
                         max_position_embeddings=131072, original_max_position_embeddings=4096, rms_norm_eps=1e-5,
                         rope_theta=10000.0, sliding_window=262144),
    # Round 4: two architectures the earlier rounds left out, a 262k vocabulary with 4 heads / 1 KV head of
    # head_dim 256 and a 5:1 sliding/global layer pattern (Gemma 3 1B, text only), and Llama 3.2 1B (tied
    # embeddings, 128k vocabulary). Its llama3 rope scaling is not set (it does not change memory).
    "gemma-3-1b": dict(model_type="gemma3_text", hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
                       tie_word_embeddings=True, sliding_window=512, query_pre_attn_scalar=256),
    "llama3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                        rms_norm_eps=1e-5, rope_theta=500000.0),
    # CPU smoke-test stand-ins for the round-2 model types (not measured).
    "tiny-mistral": dict(model_type="mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=False),
    "tiny-gemma2": dict(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=4096,
                        tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=10000.0),
    "tiny-phi3": dict(model_type="phi3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, vocab_size=4096, tie_word_embeddings=False),
}


def prepare(workdir, models):
    import torch
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    os.makedirs(workdir, exist_ok=True)
    # A word-level tokenizer: one token per whitespace-separated word, so lengths are exact.
    words = [f"w{i}" for i in range(2000)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(tmodels.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>"])
    # Dataset: long samples so every sequence is truncated to exactly cutoff_len.
    import random
    rnd = random.Random(0)
    data_dir = os.path.join(workdir, "data")
    os.makedirs(data_dir, exist_ok=True)
    if not os.path.exists(os.path.join(data_dir, "dataset_info.json")):  # written last; safe to share
        rows = []
        for _ in range(256):
            rows.append({"instruction": " ".join(rnd.choice(words) for _ in range(9000)), "input": "",
                         "output": " ".join(rnd.choice(words) for _ in range(9000))})
        with open(os.path.join(data_dir, "long.json"), "w") as f:
            json.dump(rows, f)
        with open(os.path.join(data_dir, "dataset_info.json"), "w") as f:
            json.dump({"long": {"file_name": "long.json"}}, f)

    for name in models:
        arch = dict(ARCHS[name])
        mdir = os.path.join(workdir, "models", name)
        if os.path.exists(os.path.join(mdir, "ready")):
            continue
        model_type = arch.pop("model_type")
        kw = dict(max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0)
        kw.update(arch)
        cfg = AutoConfig.for_model(model_type, **kw, torch_dtype="bfloat16", bos_token_id=0, eos_token_id=2,
                                   pad_token_id=0)
        t0 = time.time()
        with torch.device(os.environ.get("LFM_DEVICE", "cuda")):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        model.save_pretrained(mdir, safe_serialization=True)
        fast.save_pretrained(mdir)
        n = sum(p.numel() for p in model.parameters())
        open(os.path.join(mdir, "ready"), "w").close()  # grid (LFM_WAIT_MODELS=1) waits for this
        del model
        torch.cuda.empty_cache()
        print(json.dumps({"prepared": name, "params": n, "seconds": round(time.time() - t0, 1)}), flush=True)


class _NvmlPeak:
    def __init__(self):
        self.peak = 0
        self._stop = False
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            self.nvml = None

    def _run(self):
        pid = os.getpid()
        while not self._stop:
            try:
                for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                    if p.pid == pid and p.usedGpuMemory:
                        self.peak = max(self.peak, p.usedGpuMemory)
                used = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used
                self.device_peak = max(getattr(self, "device_peak", 0), used)
            except Exception:
                pass
            time.sleep(0.02)

    def start(self):
        if self.nvml:
            threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self):
        self._stop = True


def one(workdir, case):
    import torch
    from transformers import TrainerCallback

    nv = _NvmlPeak().start()
    step_times = []
    mem_by_step = []

    cuda = torch.cuda.is_available()
    info = {}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            try:
                cfg = model.config
                info["attn_implementation"] = getattr(cfg, "_attn_implementation", None)
                info["gradient_checkpointing"] = bool(getattr(model, "is_gradient_checkpointing", False))
                info["params_total"] = sum(p.numel() for p in model.parameters())
                info["params_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
                dts = {}
                for p in model.parameters():
                    k = str(p.dtype).replace("torch.", "") + ("_trainable" if p.requires_grad else "")
                    dts[k] = dts.get(k, 0) + p.numel()
                info["param_dtypes"] = dts
                info["resolved_optim"] = str(args.optim)  # not "optim": that is a case key
            except Exception as e:  # informational only
                info["probe_error"] = repr(e)
            if cuda:
                info["allocated_at_train_begin"] = torch.cuda.memory_allocated()

        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t = time.time()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            step_times.append(time.time() - self.t)
            if cuda:
                mem_by_step.append((torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()))

    args = {
        "stage": "sft", "do_train": True, "finetuning_type": "lora", "lora_target": "all",
        "template": "qwen", "dataset_dir": os.path.join(workdir, "data"), "dataset": "long",
        "max_samples": 64, "overwrite_cache": True, "preprocessing_num_workers": 8,
        "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "learning_rate": 1e-4,
        "max_steps": 4, "lr_scheduler_type": "cosine", "bf16": True, "logging_steps": 1,
        "save_strategy": "no", "report_to": "none", "overwrite_output_dir": True,
        "output_dir": os.path.join(workdir, "out", case["id"]), "disable_tqdm": True,
    }
    model = case.pop("model")
    args["model_name_or_path"] = os.path.join(workdir, "models", model)
    case_id = case.pop("id")
    args.update(case)
    from llamafactory.train.tuner import run_exp
    t0 = time.time()
    err = None
    try:
        run_exp(args, callbacks=[Probe()])
    except Exception as e:  # OOM or config error: record, don't crash the grid
        import traceback
        traceback.print_exc()
        err = f"{type(e).__name__}: {str(e)[:300]}"
    nv.stop()
    res = {"id": case_id, "model": model, **case, "ok": err is None, "error": err,
           "max_allocated": torch.cuda.max_memory_allocated() if cuda else 0,
           "max_reserved": torch.cuda.max_memory_reserved() if cuda else 0,
           "nvml_process_peak": nv.peak, "nvml_device_peak": getattr(nv, "device_peak", 0),
           "mem_by_step": mem_by_step, "step_times": [round(s, 4) for s in step_times],
           "wall": round(time.time() - t0, 1), **info}
    print("RESULT " + json.dumps(res), flush=True)


def grid(workdir, cases_path, out_path, deadline_s):
    t_end = time.time() + float(deadline_s)
    with open(cases_path) as f:
        cases = [json.loads(l) for l in f if l.strip()]
    done = set()
    if os.path.exists(out_path):
        with open(out_path) as f:
            done = {json.loads(l)["id"] for l in f if l.strip()}
    for case in cases:
        if case["id"] in done:
            continue
        ready = os.path.join(workdir, "models", case["model"], "ready")
        while os.environ.get("LFM_WAIT_MODELS") and not os.path.exists(ready) and time.time() < t_end - 30:
            time.sleep(2)  # a concurrent `prepare` is still writing this model
        left = t_end - time.time()
        if left < 30:
            print(json.dumps({"skipped": case["id"], "reason": "deadline"}), flush=True)
            continue
        try:
            p = subprocess.run([sys.executable, __file__, "one", workdir, json.dumps(case)], capture_output=True,
                               text=True, timeout=min(left, 300))
            lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
            if lines:
                res = json.loads(lines[-1][7:])
                if not res.get("ok"):
                    res["tail"] = p.stderr[-4000:]
                # LLaMA-Factory's log lines about attention / kernels, e.g. its Gemma 2 attention switch
                notes = [l.strip()[-300:] for l in (p.stdout + p.stderr).splitlines()
                         if " >> " in l and any(w in l.lower() for w in ("attention", "attn", "eager", "liger",
                                                                          "paged", "optim"))]
                res["log_notes"] = list(dict.fromkeys(notes))[:20]
            else:
                res = {"id": case["id"], "ok": False, "error": "no result", "rc": p.returncode,
                       "tail": (p.stdout + p.stderr)[-4000:]}
        except subprocess.TimeoutExpired as e:
            err_tail = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            res = {"id": case["id"], "ok": False, "error": "timeout", "tail": err_tail[-4000:]}
        import shutil
        shutil.rmtree(os.path.join(workdir, "out", case["id"]), ignore_errors=True)
        # LFM_DELETE_MODELS=1: free the tmpfs once no later case needs a model (LFM_KEEP_MODELS: comma list kept)
        keep = set(filter(None, os.environ.get("LFM_KEEP_MODELS", "").split(",")))
        later = {c["model"] for c in cases[cases.index(case) + 1:]}
        if os.environ.get("LFM_DELETE_MODELS") and case["model"] not in later | keep:
            shutil.rmtree(os.path.join(workdir, "models", case["model"]), ignore_errors=True)
        with open(out_path, "a") as f:
            f.write(json.dumps(res) + "\n")
        print(json.dumps({k: res.get(k) for k in ("id", "ok", "max_allocated", "max_reserved", "nvml_process_peak",
                                                     "error")}), flush=True)


def env():
    import importlib.metadata as md
    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "tokenizers", "llamafactory",
                 "liger-kernel", "bitsandbytes", "triton", "flash-attn", "nvidia-ml-py"):
        try:
            out[name] = md.version(name)
        except Exception:
            out[name] = None
    try:
        import torch
        out["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
            out["gpu_total_memory"] = torch.cuda.get_device_properties(0).total_memory
        import pynvml
        pynvml.nvmlInit()
        out["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception as e:
        out["env_error"] = repr(e)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "prepare":
        prepare(sys.argv[2], sys.argv[3:])
    elif cmd == "one":
        one(sys.argv[2], json.loads(sys.argv[3]))
    elif cmd == "env":
        env()
    elif cmd == "grid":
        grid(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else 540)
