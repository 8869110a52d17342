"""Sparsity summaries for Keras 3 `fit`: per-layer sparsity into the logs and, optionally, TensorBoard."""
import keras
import numpy as np

from tfmot_rigl.keras3.prune import layer_masks


def sparsities(model) -> dict:
  """{layer name: fraction of zeros in its mask} of every sparse layer."""
  return {name: float(1.0 - np.mean(mask)) for name, mask in layer_masks(model).items()}


class SparsitySummaries(keras.callbacks.Callback):
  """Adds `sparsity/<layer>` and `sparsity/global` to each epoch's logs; writes them under `log_dir` if given.

  The Keras 3 counterpart of TFMOT's `PruningSummaries` (TensorBoard scalars, written with tf.summary, which every
  install of this package has).
  """

  def __init__(self, log_dir=None):
    super().__init__()
    self.log_dir = log_dir
    self._writer = None

  def on_epoch_end(self, epoch, logs=None):
    masks = layer_masks(self.model)
    values = {f"sparsity/{name}": float(1.0 - np.mean(mask)) for name, mask in masks.items()}
    total = sum(mask.size for mask in masks.values())
    values["sparsity/global"] = float(sum(mask.size - mask.sum() for mask in masks.values()) / max(total, 1))
    if logs is not None:
      logs.update(values)
    if self.log_dir:
      import tensorflow as tf  # the summary writer only; the model may run on any backend
      if self._writer is None:
        self._writer = tf.summary.create_file_writer(self.log_dir)
      step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) if self.model.optimizer else epoch
      with self._writer.as_default():
        for name, value in values.items():
          tf.summary.scalar(name, value, step=step)
      self._writer.flush()
