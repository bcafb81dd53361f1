"""kdseg/layout.py is the one place that spells the file and folder names of a sweep or run folder."""

from __future__ import annotations

import ast
from pathlib import Path

import kdseg
import kdseg.layout as layout

# names that are also ordinary words elsewhere (a W&B mode, a JSON key): not checked
COMMON_WORDS = {"run", "images", "tune"}


def test_folder_names_are_spelled_only_in_layout() -> None:
    names = {v: k for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    assert {"orphaned", "teachers", "teacher.json", "metrics.jsonl"} <= set(names)
    root = Path(kdseg.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == Path(layout.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names and node.value not in COMMON_WORDS:
                found.append(
                    f"{path.relative_to(root)}:{node.lineno}: {node.value!r} (kdseg.layout.{names[node.value]})"
                )
    assert not found, "\n".join(found)
