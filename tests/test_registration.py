"""`import tfmot_rigl` stays light, and Model Garden finds the sparse experiments after it (issue 13)."""
import subprocess
import sys


def _run(code):
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def test_import_tfmot_rigl_does_not_import_tensorflow_or_model_garden():
  out = _run("import sys, time; t = time.time(); import tfmot_rigl; print(time.time() - t); "
             "print(sorted(m for m in ('tensorflow', 'official', 'tf_keras') if m in sys.modules))")
  seconds, loaded = out.split("\n")[:2]
  assert loaded == "[]"
  assert float(seconds) < 1.0


def test_model_garden_finds_experiments_after_import_tfmot_rigl():
  # Model Garden's own registry import first (its modules import exp_factory halfway through their imports).
  out = _run("import tfmot_rigl\n"
             "from official.vision import registry_imports\n"
             "from official.core import exp_factory\n"
             "print(exp_factory.get_exp_config('resnet_rigl').task.sparsity.method)\n"
             "print(exp_factory.get_exp_config('resnet_imagenet').task.model.backbone.type)\n")
  assert out.split() == ["rigl", "resnet"]


def test_importing_the_export_modules_after_tfmot_rigl_is_silent():
  # `tfmot_rigl.export.tflite` imports Model Garden's vision configs, which register their own experiments while
  # half imported: the plugin must not try to register (and fail, and warn) in the middle of that.
  result = subprocess.run([sys.executable, "-c",
                           "import tfmot_rigl\n"
                           "from tfmot_rigl.export import tflite\n"
                           "from official.core import exp_factory\n"
                           "print(exp_factory.get_exp_config('mnist_rigl').task.sparsity.method)\n"],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["rigl"]
  assert "tfmot_rigl:" not in result.stderr
