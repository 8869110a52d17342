"""Loading a saved Keras 3 sparse model so that `fit` continues sparse training where it stopped."""
import keras

from tfmot_rigl.keras3.optimizer import wrap_optimizer
from tfmot_rigl.keras3.prune import install_fit_hook, sparse_wrappers
from tfmot_rigl.keras3.wrapper import SparseWrapper


def load_model(path, custom_objects=None, compile=True, **kwargs):  # noqa: A002 (Keras' own argument name)
  """`keras.saving.load_model` for models saved with sparse layers (`.keras`), with the optimizer re-wrapped.

  Masks, algorithm state and the resolved update window are layer weights and config; the step is the optimizer's
  `iterations`. The loaded optimizer is a plain `SGD`/`Adam`/...: it is wrapped again, so training continues sparse.
  """
  objects = {"SparseWrapper": SparseWrapper, **dict(custom_objects or {})}
  model = keras.saving.load_model(path, custom_objects=objects, compile=compile, **kwargs)
  if sparse_wrappers(model):
    install_fit_hook(model)
    if compile and getattr(model, "optimizer", None) is not None:
      wrap_optimizer(model.optimizer, model)
  return model
