"""lf-tuner: measure before you launch a LLaMA-Factory fine-tune."""

__version__ = "0.1.0"
