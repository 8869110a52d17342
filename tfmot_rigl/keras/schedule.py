"""`SparseSchedule`: the update window and drop-fraction anneal as a TFMOT `PruningSchedule`.

TFMOT's wrapper asks its schedule every training step whether to re-threshold the mask by magnitude. Ours always
answers no: masks of dynamic sparse training change only through the gradient-aware update that the wrapped
optimizer runs (tfmot_rigl.keras.optimizer). The schedule still carries the layer's target sparsity (for TFMOT's
summaries and for serialisation) and answers *when* and *how much* for that update.
"""
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule

from tfmot_rigl.core import distributions
from tfmot_rigl.core import gradual
from tfmot_rigl.core import schedule as schedule_math


class SparseSchedule(pruning_schedule.PruningSchedule):
  """Target sparsity of one layer plus when its mask is updated and by how much.

  Args:
    sparsity: the layer's fraction of zeros, fixed for all of training.
    begin_step, end_step: the update window, inclusive, in training steps.
    update_frequency: ΔT; updates happen at steps that are multiples of it.
    drop_fraction: α, fraction of active connections replaced at an update before annealing.
    drop_fraction_anneal: "constant", "cosine" or "exponential_k".
    initial_sparsity: gradual pruning: the layer's sparsity at the start (None: `sparsity` throughout).
    prune_end: gradual pruning: the step from which the layer is at `sparsity` (core/gradual.py).
  """

  def __init__(self, sparsity: float, begin_step: int = 0, end_step: int = 0, update_frequency: int = 100,
               drop_fraction: float = 0.3, drop_fraction_anneal: str = "cosine", initial_sparsity=None,
               prune_end: int = 0):
    self.sparsity = distributions.check_sparsity(sparsity)
    schedule_math.check_window(begin_step, end_step, update_frequency)
    schedule_math.check_anneal(drop_fraction_anneal)
    self.begin_step = int(begin_step)
    self.end_step = int(end_step)
    self.update_frequency = int(update_frequency)
    self.drop_fraction = float(drop_fraction)
    self.drop_fraction_anneal = drop_fraction_anneal
    self.initial_sparsity = gradual.check_initial_sparsity(initial_sparsity)
    self.prune_end = prune_end if not isinstance(prune_end, (int, float)) else int(prune_end)

  def active_count_at(self, step, units: int, initial: float, final: float):
    """int32 tensor: active units of a weight with `units` after an update at `step` (a table lookup, no host sync)."""
    counts = gradual.active_counts(units, initial, final, self.begin_step, self.prune_end, self.update_frequency)
    index = tf.minimum(tf.math.floordiv(tf.cast(step, tf.int64), self.update_frequency), len(counts) - 1)
    return tf.gather(tf.constant(counts, tf.int32), index)

  def __call__(self, step):
    # (False, s): TFMOT must never re-threshold these masks by magnitude on its own.
    return tf.constant(False), tf.constant(self.sparsity, tf.float32)

  def is_update_step(self, step):
    return schedule_math.is_update_step(step, self.begin_step, self.end_step, self.update_frequency)

  def drop_fraction_at(self, step):
    return schedule_math.drop_fraction_at(step, self.drop_fraction, self.drop_fraction_anneal, self.begin_step,
                                          self.end_step)

  def get_config(self):
    return {"class_name": type(self).__name__,
            "config": {"sparsity": self.sparsity, "begin_step": self.begin_step, "end_step": self.end_step,
                       "update_frequency": self.update_frequency, "drop_fraction": self.drop_fraction,
                       "drop_fraction_anneal": self.drop_fraction_anneal,
                       **({"initial_sparsity": self.initial_sparsity, "prune_end": self.prune_end}
                          if self.initial_sparsity is not None else {})}}

  def __eq__(self, other):
    return type(self) is type(other) and self.get_config() == other.get_config()


# TFMOT deserialises schedules by class name; registering it lets models saved with it load without a scope.
keras.utils.get_custom_objects()[SparseSchedule.__name__] = SparseSchedule
