"""Every ```python block of README.md runs as written.

The blocks run in document order in one fresh Python subprocess, in one shared namespace as in a notebook,
so a later block may use what an earlier one defined. They run in a scratch folder laid out like a clone
after the quick start: `configs/` and `weights/` link to the repository's, and `data/shapes` holds the
quick start's shapes set (same writer, seed and file names, fewer images: 20 per split, so e.g.
data/shapes/test/star/test_00009.png exists) — written there, not into the checkout, which a fresh clone
lacks. Anything else a block needs it must make itself. A block containing the comment `# skip-test` is not
run (for lines that need what a test machine lacks, e.g. a GPU or a large data set). A failure names the
block's first line in README.md and the error.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SKIP_MARK = "# skip-test"

RUNNER = r"""
import json, sys, traceback
blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
results = []
for block in blocks:
    try:
        exec(compile(block["code"], f"README.md:{block['line']}", "exec"), namespace)
        results.append({"line": block["line"], "ok": True})
    except BaseException:
        results.append({"line": block["line"], "ok": False, "error": traceback.format_exc(limit=3)})
print("RESULTS " + json.dumps(results))
"""


def python_blocks(text: str) -> list[dict]:
    """The ```python blocks of a Markdown text: their code and the README line of their first code line."""
    blocks = []
    for match in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S):
        line = text.count("\n", 0, match.start()) + 2
        blocks.append({"line": line, "code": match.group(1), "skip": SKIP_MARK in match.group(1)})
    return blocks


def test_python_blocks_are_found_and_skip_marks_honoured():
    text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\n# skip-test\ny = 2\n```\n"
    blocks = python_blocks(text)
    assert [(b["line"], b["code"], b["skip"]) for b in blocks] == [(3, "x = 1\n", False),
                                                                  (10, "# skip-test\ny = 2\n", True)]


def test_every_readme_python_block_runs(tmp_path):
    blocks = [b for b in python_blocks(README.read_text()) if not b["skip"]]
    if not blocks:
        pytest.skip("README.md has no ```python block to run")
    from visionzoo.datasets.write_shapes import main as write_shapes

    for name in ("configs", "weights"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    assert write_shapes([str(tmp_path / "data" / "shapes"), "--train", "20", "--val", "20", "--test", "20",
                         "--no-progress"]) == 0
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, f"the runner died (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    failed = [r for r in json.loads(lines[-1][len("RESULTS "):]) if not r["ok"]]
    assert not failed, "README blocks that fail:\n" + "\n".join(
        f"--- block at README.md line {r['line']}:\n{r['error']}" for r in failed)
