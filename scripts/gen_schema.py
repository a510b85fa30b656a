"""Regenerate lf_tuner/config/llamafactory_schema.json from the installed llamafactory.

/tmp/heavyvenv/bin/python scripts/gen_schema.py          # rewrite the shipped file
/tmp/heavyvenv/bin/python scripts/gen_schema.py --check  # exit 1 when it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from lf_tuner.config.schema import SCHEMA_RESOURCE, build_schema, schema_json

TARGET = Path(__file__).resolve().parent.parent / "lf_tuner" / "config" / SCHEMA_RESOURCE


def main(argv: list[str]) -> int:
    text = schema_json(build_schema())
    if "--check" in argv:
        if not TARGET.is_file() or TARGET.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{TARGET} is stale; run: python scripts/gen_schema.py\n")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    sys.stderr.write(f"wrote {TARGET}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
