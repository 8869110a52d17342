"""Every command and Python block of README.md's usage sections, run exactly as written (in a scratch directory).

Sections covered: "Two commands" (the chain after the venv/pip part, which `.ci/run` itself performs), "The Python
API", "Model Garden" and "Export and accounting". A README edit that adds a command to these sections without a
way to run it here fails `test_every_readme_command_is_covered`. "Keras 3" has its own test, one run per backend.
"""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("## Two commands", "## The Python API", "## Model Garden", "## Starting from a pretrained model",
            "## Export and accounting")
INSTALL = "python3.11 -m venv .venv && . .venv/bin/activate && pip install -e . && "
TESTS = "pip install -e '.[test]' && python -m pytest -q -n 2 tests"  # what CI runs: this very suite


def _sections():
  text = open(os.path.join(REPO, "README.md")).read()
  parts = re.split(r"^(?=## )", text, flags=re.M)
  return {part.splitlines()[0]: part for part in parts if part.startswith(SECTIONS)}


def _blocks(language):
  blocks = []
  for title in SECTIONS:
    section = next(text for heading, text in _sections().items() if heading.startswith(title))
    blocks += re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.M | re.S)
  return blocks


def readme_commands():
  commands = []
  for block in _blocks("bash"):
    for line in block.replace("\\\n", " ").splitlines():
      line = re.sub(r"\s+#.*$", "", line).strip()
      if line:
        commands.append(line)
  return commands


def _run(command, cwd, timeout=900):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A scratch directory with the repository's official_configs/, where the Two-commands run has been made."""
  path = tmp_path_factory.mktemp("readme")
  os.symlink(os.path.join(REPO, "official_configs"), path / "official_configs")
  first = readme_commands()[0]
  assert first.startswith(INSTALL), first
  result = _run(first[len(INSTALL):], path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Sparse training summary" in result.stdout
  assert os.listdir(path / "model_dir/mnist_rigl/plots")
  return path


def test_every_readme_command_is_covered(workdir):
  commands = readme_commands()
  assert commands[1] == TESTS
  covered = {commands[0], TESTS} | set(EXPECTED)
  assert [c for c in commands if c not in covered] == []


# command -> (exit code, text its stdout or stderr must contain)
EXPECTED = {
    "tfm train --experiment=resnet_rigl --config_file=official_configs/resnet50_rigl_erk_s90_1x.yaml "
    "--model_dir=model_dir/rn50_rigl_erk90 --params_override=task.train_data.input_path=/data/imagenet/train*,"
    "task.validation_data.input_path=/data/imagenet/valid*": (2, "matches no file"),  # no ImageNet here
    "tfm experiments": (0, "resnet_rigl"),
    "tfm train --help": (0, "task.sparsity"),
    "tfm train --experiment=mnist_rigl --model_dir=model_dir/mnist_set --params_override=task.sparsity.method=set,"
    "task.sparsity.sparsity=0.95,trainer.train_steps=200": (0, "Sparse training summary: set"),
    "tfm export --experiment=mnist_rigl --model_dir=model_dir/mnist_rigl --export_dir=export/mnist":
        (0, "input inputs uint8 [-1, -1, -1, 1] (uint8 images of any size, resized to 28×28 and scaled by pixel / 255"),
    "tfm tflite --saved_model=export/mnist --output=mnist_sparse.tflite --sparse": (0, "default tf.lite.Interpreter"),
    "tfm tflite --saved_model=export/mnist --output=mnist_int8.tflite --int8": (0, "default tf.lite.Interpreter"),
    "tfm report --experiment=mnist_rigl --model_dir=model_dir/mnist_rigl": (0, "conv/dense kernels left dense"),
    "tfm train --experiment=mnist_rigl --model_dir=model_dir/mnist_dense --params_override=task.sparsity.method=dense,"
    "trainer.train_steps=300": (0, "Sparse training summary: dense"),
    "tfm train --experiment=mnist_rigl --model_dir=model_dir/mnist_from_dense --params_override="
    "task.init_checkpoint=model_dir/mnist_dense,task.sparsity.initial_mask=magnitude,trainer.train_steps=300":
        (0, "init checkpoint model_dir/mnist_dense/ckpt-300: loaded 6 variables; first masks: magnitude."),
    "tfm train --experiment=mnist_rigl --model_dir=model_dir/mnist_block --params_override="
    "task.sparsity.block_shape=[4,1],trainer.train_steps=200": (0, "Sparse training summary: rigl"),
    "tfm export --experiment=mnist_rigl --model_dir=model_dir/mnist_block --export_dir=export/mnist_block":
        (0, "serving_default"),
    "tfm tflite --saved_model=export/mnist_block --output=mnist_block.tflite --sparse":
        (0, "runs sparse: FULLY_CONNECTED hidden_1, hidden_2"),
}


def test_readme_commands_run_as_written(workdir):
  for command in readme_commands()[2:]:  # in README order: export before tflite
    code, text = EXPECTED[command]
    result = _run(command, workdir)
    assert result.returncode == code, (command, result.stderr[-3000:])
    assert text in result.stdout + result.stderr, (command, result.stdout[-2000:], result.stderr[-2000:])
    if code == 2:
      assert len(result.stderr.strip().splitlines()) == 1 and not (workdir / "model_dir/rn50_rigl_erk90").exists()


def test_readme_python_blocks_run_as_written(workdir):
  blocks = _blocks("python")
  assert len(blocks) == 3
  for block in blocks:  # the API snippet, the pretrained one, then load-and-predict on export/mnist from above
    if not (workdir / "export/mnist").exists():
      assert _run("tfm export --experiment=mnist_rigl --model_dir=model_dir/mnist_rigl --export_dir=export/mnist",
                  workdir).returncode == 0
    result = subprocess.run([sys.executable, "-c", block], cwd=workdir, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.getsize(workdir / "model.tflite") > 0
  digits = [int(d) for d in re.findall(r"\d", result.stdout.strip().splitlines()[-1])]
  from tfmot_rigl.data import mnist
  assert digits == list(mnist.load_bundled_mnist()["test_labels"][:5])  # the trained model reads them right


def _keras3_section():
  """The Python block and the bash commands of README.md's "Keras 3" section."""
  text = open(os.path.join(REPO, "README.md")).read()
  section = next(part for part in re.split(r"^(?=## )", text, flags=re.M) if part.startswith("## Keras 3\n"))
  blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
  commands = [line for block in re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)
              for line in block.splitlines() if line.strip()]
  assert len(blocks) == 1
  return blocks[0], commands


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_readme_keras3_block_runs_as_written(backend, tmp_path):
  if backend == "jax" and importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed (a test extra)")
  block, commands = _keras3_section()
  env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = [line for line in result.stdout.splitlines() if line.startswith("{")]
  sparsities = eval(printed[-1])  # the printed {layer: fraction of zeros}
  assert set(sparsities) == {"dense", "dense_1"} and 0.85 < max(sparsities.values()) < 0.95  # ERK: logits dense
  assert (tmp_path / "sparse.keras").stat().st_size > 0 and (tmp_path / "sparse_saved_model").is_dir()
  if backend == "tensorflow":  # the TFLite command is for the TF backend's SavedModel
    assert commands == ["tfm tflite --saved_model=sparse_saved_model --output=sparse.tflite --sparse"]
    result = _run(commands[0], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(sparse)" in result.stdout and "default tf.lite.Interpreter" in result.stdout, result.stdout[-2000:]
