"""Regenerate lf_tuner/models/registry.json from the installed LLaMA-Factory (extras/constants.py).

Usage: python scripts/gen_model_registry.py   (needs the training stack: pip install 'lf-tuner[train]')
tests/test_models_registry.py fails when the checked-in registry drifts from the installed llamafactory.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lf_tuner.models._generate import TARGET, main  # noqa: E402

if __name__ == "__main__":
    main()
    print(f"wrote {TARGET}")
