"""Test helper: an imported reference checkpoint's model as the tools load it, and its comparison with the reference.

The comparison every import test makes: the reference's logits of two images must differ clearly (live activations,
else no padding or activation difference could show), and Model Garden's logits of classes 1..1000 must be within
RELATIVE_TOLERANCE of the reference's (relative to its largest logit), top-1 agreeing. Its negative control: a model
built without `match_tf1_reference` fails that comparison by far.
"""
import argparse

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfmot_rigl.cli import export as export_cli
from tfmot_rigl.export import saved_model
from tfmot_rigl.modelgarden import checkpoint_import
from tfmot_rigl.modelgarden import tf1_reference

RELATIVE_TOLERANCE = 1e-4  # of the logits, relative to the largest reference logit
LIVE_SPREAD = 0.1  # two images' reference logits differ by at least this much of the largest logit


def images(seed: int, size: int, count: int = 2) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-2.0, 2.0, (count, size, size, 3)).astype(np.float32)


def relative_difference(logits: np.ndarray, expected: np.ndarray) -> float:
  """max |logits - expected| over max |expected|: the logits' error on the scale of the reference's logits."""
  return float(np.abs(logits - expected).max() / np.abs(expected).max())


def assert_live(expected: np.ndarray) -> None:
  """The reference logits of two different images differ clearly; dead activations would hide any difference."""
  spread = relative_difference(expected[0], expected[1])
  assert spread > LIVE_SPREAD, f'two images\' reference logits differ by only {spread:.2e} (relative): dead network'


def assert_computes_the_reference(logits: np.ndarray, expected: np.ndarray) -> None:
  """Model Garden's 1001-way logits against the reference's 1000: classes 1..1000 within RELATIVE_TOLERANCE, the
  background class 0 at BACKGROUND_BIAS, top-1 agreeing on every image."""
  assert_live(expected)
  assert (logits[:, 0] == checkpoint_import.BACKGROUND_BIAS).all()
  difference = relative_difference(logits[:, 1:], expected)
  assert difference <= RELATIVE_TOLERANCE, f'logits differ from the reference\'s by {difference:.2e} (relative)'
  assert (np.argmax(logits, axis=1) - 1 == np.argmax(expected, axis=1)).all()


def assert_fails_without_the_patch(logits: np.ndarray, expected: np.ndarray) -> None:
  """Negative control: logits of the model built without `match_tf1_reference` fail the comparison, clearly."""
  with pytest.raises(AssertionError):
    assert_computes_the_reference(logits, expected)
  assert relative_difference(logits[:, 1:], expected) > 100 * RELATIVE_TOLERANCE


def patch_as_the_task_does(model: keras.Model, experiment: str, model_dir: str) -> int:
  """`match_tf1_reference` on an imported model built without it, as the task applies it when params.yaml sets
  `task.model.match_tf1_reference` (as the import writes it): ReLU for ReLU6 in MobileNets. Returns the layers changed.

  One build serves the negative control and the comparison; the task's own path (params.yaml to the patch) is
  compared at the same bar by `test_tfm_export_ships_the_reference_function` and `tfm train --mode=eval`
  (tests/test_checkpoint_import_mobilenet.py).
  """
  params = imported_params(experiment, model_dir)
  assert params.task.model.match_tf1_reference
  return tf1_reference.match_tf1_reference(model, relu_activations=params.task.model.backbone.type == 'mobilenet')


def imported_params(experiment: str, model_dir: str, override: str = ''):
  """The config `tfm report` / `tfm export` read from an imported model_dir (its params.yaml)."""
  return export_cli.experiment_params(argparse.Namespace(
      experiment=experiment, config_file=[], params_override=override, tpu='', tf_data_service='',
      model_dir=model_dir))


def load_imported(experiment: str, model_dir: str, match_reference: bool = True):
  """The imported model as `tfm report` / `tfm export` load it: params.yaml's config, weights from ckpt-0.

  `match_reference=False` builds it without the reference-matching patch (the negative control).
  """
  params = imported_params(experiment, model_dir, '' if match_reference else 'task.model.match_tf1_reference=false')
  assert params.task.model.match_tf1_reference == match_reference
  model, _ = saved_model.load_trained_model(params, model_dir)
  return model


def error_line(capsys) -> str:
  """The one error line of a failed `tfm import-checkpoint` (stderr may also hold the model build's log lines)."""
  captured = capsys.readouterr()
  lines = [line for line in captured.err.splitlines() if line.startswith('tfm import-checkpoint: error:')]
  assert len(lines) == 1, captured.err
  assert 'Traceback' not in captured.err
  return lines[0]


def checkpoint_masks(checkpoint: str) -> dict:
  """{object-graph path: mask} of every pruning wrapper's mask in a checkpoint (ours and TFMOT's wrappers)."""
  reader = tf.train.load_checkpoint(checkpoint)
  paths = {name: name.split('/.ATTRIBUTES')[0] for name in reader.get_variable_to_shape_map()}
  return {path: reader.get_tensor(name) for name, path in paths.items()
          if path.endswith('/mask') or ('/pruning_vars/' in path and path.endswith('/1'))}
