"""Fractional update windows (end_step=0.75, the default) resolved when training says how many steps it runs.

`prune_sparse(model)` without `total_steps` cannot turn "75% of training" into a step. Keras `fit` knows the number
(epochs × steps per epoch) once it starts, so the sparse model resolves its windows then: its `make_train_function`,
which `fit` calls after setting up its callbacks and before tracing the first step, reads the step count `fit`
gave its `History` callback. A custom training loop does not say how many steps it runs; there the first traced
step meets a `PendingStep` and fails with one line saying to pass `total_steps`.
"""
from typing import Optional

import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl.keras.log import logger


class PendingStep:
  """A begin/end step given as a fraction of training, before the number of training steps is known.

  Any use as a number (comparison, arithmetic, conversion to a tensor) raises a ValueError that says what to do.
  """

  def __init__(self, fraction: float, what: str, algorithm=None):
    self.fraction = float(fraction)
    self.what = what
    self.algorithm = algorithm  # whose window this is (for the messages once resolved)

  def error(self):
    return ValueError(
        f"{self.what}={self.fraction} is a fraction of training, and this training loop does not say how many steps "
        "it runs: pass total_steps=<number of training steps> to tfmot_rigl.prune_sparse (model.fit finds it by "
        "itself), or give begin_step/end_step as step numbers.")

  def _fail(self, *args, **kwargs):
    raise self.error()

  __int__ = __index__ = __float__ = __bool__ = _fail
  __lt__ = __le__ = __gt__ = __ge__ = _fail
  __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fail
  __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __neg__ = _fail

  def __repr__(self):
    return f"PendingStep({self.what}={self.fraction})"


def _pending_to_tensor(value, dtype=None, name=None, as_ref=False):
  del dtype, name, as_ref
  raise value.error()


tf.register_tensor_conversion_function(PendingStep, _pending_to_tensor)


def window_or_pending(algorithm, total_steps: Optional[int]):
  """(begin, end) of `algorithm`'s update window: steps, or `PendingStep`s for fractions when total_steps is None."""
  if total_steps:
    return algorithm.window(total_steps)
  pending = {}
  for what in ("begin_step", "end_step"):
    value = getattr(algorithm, what)
    if isinstance(value, float) and not (value > 1.0 and value.is_integer()):
      pending[what] = PendingStep(value, what, algorithm)
  if not pending:
    return algorithm.window(None)
  # Validate everything but the fractions now (a fraction of 1000 steps stands in for them).
  algorithm.window(1000)
  begin = pending.get("begin_step", algorithm.begin_step)
  end = pending.get("end_step", algorithm.end_step)
  return begin, end


def prune_end_or_pending(algorithm, total_steps: Optional[int]):
  """Gradual pruning's prune_end as a step, or a `PendingStep` for a fraction when total_steps is None."""
  value = algorithm.prune_end
  if total_steps:
    return algorithm.prune_window(total_steps)[1]
  if isinstance(value, float) and not (value > 1.0 and value.is_integer()):
    algorithm.prune_window(1000)  # validates everything but the fraction
    return PendingStep(value, "prune_end", algorithm)
  window = window_or_pending(algorithm, None)
  if any(isinstance(step, PendingStep) for step in window):
    return int(value)  # checked against the window once fit resolves it
  return algorithm.prune_window(None, window)[1]


_WINDOW_FIELDS = ("begin_step", "end_step", "prune_end")


def _schedules(model):
  for wrapper in pruning_wrapper_layers(model):
    yield wrapper.pruning_schedule


def pruning_wrapper_layers(model):
  """Every TFMOT pruning wrapper (ours included) in `model`, however deeply nested, in model order."""
  return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
          if isinstance(layer, pruning_wrapper.PruneLowMagnitude)]


def has_pending_window(model) -> bool:
  return any(isinstance(getattr(schedule, what, None), PendingStep)
             for schedule in _schedules(model) for what in _WINDOW_FIELDS)


def resolve_windows(model, total_steps: int) -> None:
  """Turns every pending fractional begin/end step of `model`'s schedules into a step of a `total_steps` run."""
  for schedule in _schedules(model):
    for what in _WINDOW_FIELDS:
      value = getattr(schedule, what, None)
      if isinstance(value, PendingStep):
        setattr(schedule, what, int(round(value.fraction * total_steps)))


def update_steps(begin: int, end: int, update_frequency: int, total_steps: int):
  """The steps of a `total_steps` run at which masks change: multiples of ΔT in [begin, end]."""
  last = min(end, total_steps - 1)
  first = -(-begin // update_frequency) * update_frequency
  return list(range(first, last + 1, update_frequency))


def check_update_count(algorithm, begin: int, end: int, total_steps: int) -> None:
  """Logs one warning line when a dynamic method would update its masks at most once in this run."""
  if not algorithm.dynamic:
    return
  steps = update_steps(begin, end, algorithm.update_frequency, total_steps)
  if len(steps) <= 1:
    when = f"only at step {steps[0]}" if steps else "never"
    logger.warning(
        "%s updates masks every %d steps between steps %d and %d; this %d-step run updates them %s. For a short "
        "run pass a smaller update_frequency (e.g. %s(update_frequency=%d)).", type(algorithm).__name__,
        algorithm.update_frequency, begin, end, total_steps, when, type(algorithm).__name__,
        max(1, total_steps // 10))


def _steps_of_fit(model) -> Optional[int]:
  params = getattr(getattr(model, "history", None), "params", None) or {}
  if params.get("steps") and params.get("epochs"):
    return int(params["steps"]) * int(params["epochs"])
  return None


def _pending_algorithm(model):
  for schedule in _schedules(model):
    for what in _WINDOW_FIELDS:
      value = getattr(schedule, what, None)
      if isinstance(value, PendingStep):
        return value.algorithm
  return None


def resolve_in_fit(model) -> None:
  """Makes `model.fit` resolve the pending windows of `model` from its epochs × steps per epoch before tracing."""
  if getattr(model, "_tfmot_rigl_resolves_in_fit", False) or not has_pending_window(model):
    return
  make_train_function = model.make_train_function

  def resolving_make_train_function(*args, **kwargs):
    algorithm = _pending_algorithm(model)
    if algorithm is not None:
      total_steps = _steps_of_fit(model)
      if total_steps is None:
        raise ValueError(
            "The sparse model's update window is a fraction of training, and fit does not know how many steps it "
            "runs (a dataset of unknown length): pass steps_per_epoch to fit, or total_steps to "
            "tfmot_rigl.prune_sparse.")
      resolve_windows(model, total_steps)
      begin, end = algorithm.window(total_steps)
      logger.info("%s: update window begin_step=%r, end_step=%r is steps %d to %d of this %d-step fit.",
                  type(algorithm).__name__, algorithm.begin_step, algorithm.end_step, begin, end, total_steps)
      check_update_count(algorithm, begin, end, total_steps)
    return make_train_function(*args, **kwargs)

  # Instance attributes (no layer or variable, so Keras does not track them) shadow the class's method.
  object.__setattr__(model, "make_train_function", resolving_make_train_function)
  object.__setattr__(model, "_tfmot_rigl_resolves_in_fit", True)
