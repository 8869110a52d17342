"""The Keras 3 API (tfmot_rigl.keras3) on the TensorFlow and JAX backends, each in its own process.

The rest of the suite runs tf_keras, and Keras 3 picks its backend once, when `keras` is first imported: so the
cases (tests/keras3_cases.py) run in a pytest subprocess per backend, with KERAS_BACKEND set. The JAX run is skipped
where jax is not installed (it is a test extra: pip install -e '.[test]').
"""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

CASES = pathlib.Path(__file__).with_name("keras3_cases.py")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_keras3_api_on_backend(backend, tmp_path):
  if backend == "jax" and importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed (pip install -e '.[test]' installs it)")
  env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist",
       "-W", "ignore::DeprecationWarning", "--basetemp", str(tmp_path / "cases"), str(CASES)],
      env=env, capture_output=True, text=True, timeout=900, cwd=CASES.parent.parent)
  assert result.returncode == 0, f"Keras 3 cases failed on {backend}:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
  assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
