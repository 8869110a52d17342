"""Every benchmark script runs as docs/benchmarks.md shows its smoke run, and writes the table it prints.

The --quick runs are tiny (a few steps, tiny or few models) and write into a temp dir, never into docs/results.
"""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (command exactly as docs/benchmarks.md shows it, header cells every written table must have)
QUICK_RUNS = [
    ("python benchmarks/accuracy.py --quick",
     ["method", "sparsity (ERK)", "test acc % (mean ± std)", "fc1 / fc2 / logits sparsity"]),
    ("python benchmarks/step_overhead.py --quick", ["model", "configuration", "median ms"]),
    ("python benchmarks/modelgarden_xla.py --quick", ["configuration", "median ms/step", "speed-up vs XLA off"]),
    ("python benchmarks/profile_update.py --quick", ["implementation", "op type", "total ms"]),
    ("python benchmarks/profile_step.py --quick", ["configuration", "op type", "ms per step"]),
    ("python benchmarks/block_inference.py --quick",
     ["network", "variant", "MNIST test acc %", "1 thread, builtin (speedup vs dense)", "weights as stored"]),
]


def test_docs_show_the_quick_commands():
  with open(os.path.join(REPO, "docs", "benchmarks.md"), encoding="utf-8") as f:
    doc = f.read()
  for command, _ in QUICK_RUNS:
    assert command in doc


@pytest.mark.parametrize("command, header", QUICK_RUNS, ids=[c.split("/")[1].split(".")[0] for c, _ in QUICK_RUNS])
def test_quick_run_writes_its_table(command, header, tmp_path):
  env = dict(os.environ, TMPDIR=str(tmp_path))  # --quick writes under the temp dir
  argv = command.split()
  argv[0] = sys.executable
  result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  written = re.findall(r"^wrote (.+)$", result.stdout, flags=re.M)
  assert written, result.stdout[-3000:]
  for path in written:
    assert os.path.realpath(path).startswith(os.path.realpath(str(tmp_path))), path
    with open(path, encoding="utf-8") as f:
      table = f.read()
    assert f"Command: `{command}`" in table
    assert "Machine: " in table
    assert table in result.stdout  # the table printed is the table written
  with open(written[0], encoding="utf-8") as f:
    first = f.read()
  rows = [line for line in first.splitlines() if line.startswith("| ")]
  for cell in header:
    assert cell in rows[0]
  body = rows[1:]  # the |---| separator does not start with "| "
  assert body, first
  # Timing and accuracy cells are real numbers, not placeholders.
  assert all(re.search(r"\d+\.\d+", line) for line in body), first
  assert "FAILED" not in result.stdout
