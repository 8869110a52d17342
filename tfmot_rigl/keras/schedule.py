"""`SparseSchedule` and `MagnitudeSchedule`: update windows as TFMOT `PruningSchedule`s, fractions of training kept.

TFMOT's wrapper asks its schedule every training step whether to re-threshold the mask by magnitude. `SparseSchedule`
always answers no: masks of dynamic sparse training change only through the gradient-aware update that the wrapped
optimizer runs (tfmot_rigl.keras.optimizer). It still carries the layer's target sparsity (for TFMOT's summaries and
for serialisation) and answers *when* and *how much* for that update. `MagnitudeSchedule` is TFMOT's own
PolynomialDecay, only able to hold a fractional window.

A window given as a fraction of training (end_step=0.75, the default) is a `PendingStep` until training says how
many steps it runs; both schedules save it as the fraction (so a model saves before its first fit) and remember the
fractions after resolution (`window_fractions`), so `tfmot_rigl.load_model(..., total_steps=)` can re-resolve them.
"""
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule

from tfmot_rigl.core import distributions
from tfmot_rigl.core import gradual
from tfmot_rigl.core import schedule as schedule_math
from tfmot_rigl.keras import attach
from tfmot_rigl.keras.training_steps import PendingStep
from tfmot_rigl.keras.training_steps import is_fraction


class _FractionalWindow:
  """Window steps (`_fields`) that are steps or `PendingStep`s, and the fractions they were given as."""

  _fields = ("begin_step", "end_step")

  def _set_window(self, window_fractions=None, **values):
    self.window_fractions = {what: float(value) for what, value in dict(window_fractions or {}).items()}
    for what, value in values.items():
      if isinstance(value, PendingStep) or is_fraction(value):
        value = value if isinstance(value, PendingStep) else PendingStep(value, what)
        self.window_fractions[what] = value.fraction
      else:
        value = int(value)
      setattr(self, what, value)

  def _window_config(self, fields=None) -> dict:
    """The window as JSON: steps as ints, pending steps as their fraction (a float)."""
    config = {what: (value.fraction if isinstance(value, PendingStep) else int(value))
              for what, value in ((what, getattr(self, what)) for what in fields or self._fields)}
    config["window_fractions"] = dict(self.window_fractions)
    return config

  def _steps_or_placeholders(self):
    """(begin, end) with 0 for a pending step, for the checks that compare them."""
    return tuple(0 if isinstance(v, PendingStep) else v for v in (self.begin_step, self.end_step))


class SparseSchedule(_FractionalWindow, pruning_schedule.PruningSchedule):
  """Target sparsity of one layer plus when its mask is updated and by how much.

  Args:
    sparsity: the layer's fraction of zeros, fixed for all of training.
    begin_step, end_step: the update window, inclusive, in training steps (or a `PendingStep` / float fraction).
    update_frequency: ΔT; updates happen at steps that are multiples of it.
    drop_fraction: α, fraction of active connections replaced at an update before annealing.
    drop_fraction_anneal: "constant", "cosine" or "exponential_k".
    window_fractions: {"begin_step"/"end_step"/"prune_end": fraction} of steps resolved from fractions of training.
    initial_sparsity: gradual pruning: the layer's sparsity at the start (None: `sparsity` throughout).
    prune_end: gradual pruning: the step from which the layer is at `sparsity` (core/gradual.py).
  """

  _gradual_fields = ("begin_step", "end_step", "prune_end")  # prune_end may be a fraction of training too

  def __init__(self, sparsity: float, begin_step=0, end_step=0, update_frequency: int = 100,
               drop_fraction: float = 0.3, drop_fraction_anneal: str = "cosine", initial_sparsity=None,
               prune_end=0, window_fractions=None):
    self.sparsity = distributions.check_sparsity(sparsity)
    self._set_window(window_fractions, begin_step=begin_step, end_step=end_step, prune_end=prune_end)
    begin, end = self._steps_or_placeholders()
    schedule_math.check_window(begin, end if not isinstance(self.end_step, PendingStep) else begin, update_frequency)
    schedule_math.check_anneal(drop_fraction_anneal)
    self.update_frequency = int(update_frequency)
    self.drop_fraction = float(drop_fraction)
    self.drop_fraction_anneal = drop_fraction_anneal
    self.initial_sparsity = gradual.check_initial_sparsity(initial_sparsity)

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
            "config": {"sparsity": self.sparsity, "update_frequency": self.update_frequency,
                       "drop_fraction": self.drop_fraction, "drop_fraction_anneal": self.drop_fraction_anneal,
                       **self._window_config(self._fields if self.initial_sparsity is None else self._gradual_fields),
                       **({"initial_sparsity": self.initial_sparsity} if self.initial_sparsity is not None else {})}}

  def __eq__(self, other):
    return type(self) is type(other) and self.get_config() == other.get_config()


class MagnitudeSchedule(_FractionalWindow, pruning_schedule.PolynomialDecay):
  """TFMOT's PolynomialDecay (unchanged arithmetic) whose begin/end may be fractions of training."""

  def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100,
               window_fractions=None):
    super().__init__(initial_sparsity, final_sparsity, begin_step=0, end_step=1, power=power, frequency=frequency)
    self._set_window(window_fractions, begin_step=begin_step, end_step=end_step)
    begin, end = self._steps_or_placeholders()
    if not isinstance(self.end_step, PendingStep):
      self._validate_step(begin, end, frequency, False)

  def __call__(self, step):
    # TFMOT's wrapper asks only when training: a model loaded by TFMOT's own loader gets the same check (and its
    # pending window resolved inside fit) as one from prune_sparse.
    attach.check_schedule_driven(self)
    return super().__call__(step)

  def get_config(self):
    config = super().get_config()
    config["config"].update(self._window_config())
    return config


# TFMOT deserialises schedules by class name; registering them lets models saved with them load without a scope.
keras.utils.get_custom_objects()[SparseSchedule.__name__] = SparseSchedule
keras.utils.get_custom_objects()[MagnitudeSchedule.__name__] = MagnitudeSchedule
