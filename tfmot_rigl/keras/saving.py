"""`load_model`: `keras.models.load_model` for sparse models, with sparse training ready to continue.

`model.save` works in every tf_keras format (`.keras`, `.h5`, SavedModel directory) and `keras.models.load_model`
loads the wrappers, masks and schedules with no scope (or inside TFMOT's `prune_scope()`). What a plain load cannot
restore is the link between the optimizer and the masks: the compiled optimizer comes back as a plain `SGD`/`Adam`.
This function loads and passes the compiled optimizer through `wrap_optimizer` again, so `fit` continues sparse
training where it stopped; after a plain `keras.models.load_model`, call `tfmot_rigl.wrap_optimizer(model.optimizer,
model)` yourself.
"""
import tf_keras as keras

from tfmot_rigl.keras import optimizer as optimizer_lib
from tfmot_rigl.keras import prune
from tfmot_rigl.keras import training_steps


def load_model(filepath, custom_objects=None, compile=True, **kwargs):  # pylint: disable=redefined-builtin
  """Loads a model saved by `model.save` (any format); a compiled sparse model gets its optimizer re-wrapped."""
  with prune.sparse_scope():
    model = keras.models.load_model(filepath, custom_objects=custom_objects, compile=compile, **kwargs)
  wrappers = prune.sparse_wrappers(model)
  if compile and getattr(model, "optimizer", None) is not None and wrappers:
    step = max(int(wrapper.pruning_step.numpy()) for wrapper in wrappers)
    if int(model.optimizer.iterations.numpy()) == 0 and step > 0:
      # A SavedModel directory does not give tf_keras the optimizer's state back; the wrappers kept the step, so the
      # update schedule continues where it stopped (the optimizer's slots start again from zero).
      model.optimizer.iterations.assign(step)
    optimizer_lib.wrap_optimizer(model.optimizer, model)
  training_steps.resolve_in_fit(model)
  return model
