"""Names vulture reports as unused that are used where it cannot see (scripts/test.sh runs `vulture`).

Each group says why. A name that is really dead does not belong here: delete the code instead.
"""

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# click registers commands through decorators
_.ls_cmd
_.show_cmd
_.cp_cmd

# PEP 562: Python calls a module's __getattr__ (lf_tuner.config's lazy exports)
_.__getattr__

# signal handlers take (signum, frame)
_.frame

# pydantic: fields are read through model_validate/model_dump, validators are called by pydantic
_.model_config
_.full
_.small
_.large
_.alpha
_.dropout
_.trainable_modules
_.lr_scheduler_type
_.weight_decay
_.max_grad_norm
_.bf16
_.preprocessing_num_workers
_.logging_steps
_._known_keys
_._choice
_._one_accumulation
_.max_steps
_.free_gib
_.schema_version
_.measured_source
_.mean_train_loss
_.total_steps
_.retries
_._pruner_name  # sweep spec: `pruner: median` read as `{type: median}`

# LLaMA-Factory's DatasetAttr fields, set by DatasetAttr.join from dataset_info.json (setattr)
_.num_samples
_.images
_.videos
_.audios
_.rejected

# data: catalog facts, and API that tests use (a run record's reader, MoE active parameters)
_.published_params
_.active_params
_.read_record

# library attributes set for their side effect (sqlite3, tokenizers)
_.row_factory
_.pre_tokenizer
_.post_processor

# scripts/trace_loss_bytes.py sets attributes LLaMA-Factory's objects read (get_train_args sets compute_dtype;
# HF's training loop sets current_gradient_accumulation_steps before training_step reads it)
_.compute_dtype
_.current_gradient_accumulation_steps

# lf_tuner.lengths: CutoffReport fields reach the --json object through dataclasses.asdict; `pad_token` is set on
# the transformers tokenizer as LLaMA-Factory's fix_special_tokens sets it
_.recommended_cutoff
_.capped_at_max_positions
_.truncated_share
_.skipped_reasons
_.pad_token
