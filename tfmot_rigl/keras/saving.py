"""`load_model`: `keras.models.load_model` for sparse models, with sparse training ready to continue.

`model.save` works in every tf_keras format (`.keras`, `.h5`, SavedModel directory) at any time, before the first
fit too (a fractional window is saved as its fraction), and `keras.models.load_model` loads the wrappers, masks and
schedules with no scope (or inside TFMOT's `prune_scope()`). A plain load cannot restore the link between the
optimizer and the masks (the compiled optimizer comes back as a plain `SGD`/`Adam`): `fit` re-links it at its first
step (tfmot_rigl.keras.attach), a custom loop needs `wrap_optimizer`. This function does it at load time, and can
re-resolve fractional update windows over the training still to come (`total_steps`).
"""
import os

import tf_keras as keras

from tfmot_rigl.keras import optimizer as optimizer_lib
from tfmot_rigl.keras import prune
from tfmot_rigl.keras import training_steps


def _check_not_a_model_garden_dir(filepath) -> None:
  """A `tfm train` model_dir (checkpoints + params.yaml) is not a saved Keras model: say what loads it."""
  path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
  if not path or not os.path.isdir(path) or os.path.exists(os.path.join(path, "saved_model.pb")):
    return
  if os.path.exists(os.path.join(path, "params.yaml")) or os.path.exists(os.path.join(path, "checkpoint")):
    raise ValueError(
        f"{path} is a training model_dir (tf.train checkpoints and params.yaml, as `tfm train` writes), not a saved "
        "Keras model: continue it with `tfm train --model_dir=...`, export it with `tfm export --model_dir=... "
        "--export_dir=DIR` and load DIR with tf.saved_model.load, or restore its checkpoint into the model the "
        "experiment builds (tf.train.Checkpoint(model=...).restore(tf.train.latest_checkpoint(model_dir))).")


def load_model(filepath, custom_objects=None, compile=True, total_steps=None, **kwargs):  # pylint: disable=redefined-builtin
  """Loads a model saved by `model.save` (any format); a compiled sparse model gets its optimizer re-wrapped.

  Args:
    filepath, custom_objects, compile, **kwargs: as for `keras.models.load_model`.
    total_steps: the number of training steps still to come; update windows given as fractions of training
      (end_step=0.75, the default) are resolved again over them, from the model's current step. Without it a window
      resolved by an earlier fit stays as it was (and a fit after it says that it has closed).
  """
  _check_not_a_model_garden_dir(filepath)
  with prune.sparse_scope():
    model = keras.models.load_model(filepath, custom_objects=custom_objects, compile=compile, **kwargs)
  wrappers = prune.sparse_wrappers(model)
  if compile and getattr(model, "optimizer", None) is not None and wrappers:
    optimizer_lib.wrap_optimizer(model.optimizer, model)
  if total_steps is not None and wrappers:
    training_steps.rebase_windows(model, total_steps)
  training_steps.resolve_in_fit(model)
  return model
