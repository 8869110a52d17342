"""Fractional update windows (end_step=0.75, the default) resolved when training says how many steps it runs.

`prune_sparse(model)` without `total_steps` cannot turn "75% of training" into a step. Keras `fit` knows the number
(epochs × steps per epoch) once it starts, so the sparse model resolves its windows then: its `make_train_function`,
which `fit` calls after setting up its callbacks and before tracing the first step, reads the step count `fit`
gave its `History` callback (`before_fit`). A custom training loop does not say how many steps it runs; there the
first traced step meets a `PendingStep` and fails with one line saying to pass `total_steps`.

`before_fit` also says when a fit starts after the update window has closed (masks would stay as they are), and
`rebase_windows` re-resolves fractional windows for the training still to come (`tfmot_rigl.load_model(...,
total_steps=)`).
"""
from typing import Optional

import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl.keras.log import logger


class PendingStep:
  """A begin/end step given as a fraction of training, before the number of training steps is known.

  Any use as a number (comparison, arithmetic, conversion to a tensor) raises a ValueError that says what to do.
  """

  def __init__(self, fraction: float, what: str):
    self.fraction = float(fraction)
    self.what = what
    self.fix = None  # what to do, in the words of the layer that built the model (e.g. Model Garden's config)

  def error(self):
    if self.fix:
      return ValueError(f"{self.what}={self.fraction} is a fraction of training, and {self.fix}")
    return ValueError(
        f"{self.what}={self.fraction} is a fraction of training, and this training loop does not say how many steps "
        "it runs: pass total_steps=<number of training steps> to tfmot_rigl.prune_sparse (or to "
        "tfmot_rigl.load_model for a loaded model; model.fit finds it by itself), or give begin_step/end_step as "
        "step numbers.")

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


def is_fraction(value) -> bool:
  """A float begin/end step means a fraction of training (as in core.schedule.resolve_step)."""
  return isinstance(value, float) and not (value > 1.0 and value.is_integer())


def window_or_pending(algorithm, total_steps: Optional[int]):
  """(begin, end) of `algorithm`'s update window: steps, or `PendingStep`s for fractions when total_steps is None."""
  if total_steps:
    return algorithm.window(total_steps)
  pending = {}
  for what in ("begin_step", "end_step"):
    value = getattr(algorithm, what)
    if is_fraction(value):
      pending[what] = PendingStep(value, what)
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
    return PendingStep(value, "prune_end")
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


def explain_pending(model, fix: str) -> None:
  """Makes a custom loop's error about `model`'s pending window say `fix` (for APIs above prune_sparse)."""
  for schedule in _schedules(model):
    for what in _WINDOW_FIELDS:
      value = getattr(schedule, what, None)
      if isinstance(value, PendingStep):
        value.fix = fix


def has_pending_window(model) -> bool:
  return any(isinstance(getattr(schedule, what, None), PendingStep)
             for schedule in _schedules(model) for what in _WINDOW_FIELDS)


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


def current_step(model) -> int:
  """The training step the next step of `model` runs: its optimizer's, else the wrappers' (eager; 0 if unknown)."""
  optimizer = getattr(model, "optimizer", None)
  with tf.init_scope():
    if optimizer is not None and hasattr(optimizer, "iterations"):
      return int(optimizer.iterations.numpy())
    return max([int(w.pruning_step.numpy()) for w in pruning_wrapper_layers(model)] + [0])


def _method_name(wrapper) -> str:
  algorithm = getattr(wrapper, "algorithm", None)
  return type(algorithm).__name__ if algorithm is not None else "Magnitude"


def _dynamic(wrapper) -> bool:
  return bool(getattr(getattr(wrapper, "algorithm", None), "dynamic", False))


def resolve_windows(model, total_steps: int, start: int = 0, rebase: bool = False) -> list:
  """Turns the fractional windows of `model` into steps of a `total_steps` run starting at step `start`.

  Only pending windows, unless `rebase`: then every window given as fractions is resolved again (load_model's
  total_steps). Returns [(wrapper, begin, end)] of the windows it set.
  """
  changed = []
  for wrapper in pruning_wrapper_layers(model):
    schedule = wrapper.pruning_schedule
    fractions = dict(getattr(schedule, "window_fractions", {}))
    for what in _WINDOW_FIELDS:
      value = getattr(schedule, what, None)
      if isinstance(value, PendingStep):
        fractions[what] = value.fraction
    if not rebase:
      fractions = {what: f for what, f in fractions.items() if isinstance(getattr(schedule, what), PendingStep)}
    if not fractions:
      continue
    for what, fraction in fractions.items():
      setattr(schedule, what, start + int(round(fraction * total_steps)))
    changed.append((wrapper, schedule.begin_step, schedule.end_step))
  return changed


def _log_windows(changed, total_steps: int, start: int, what: str) -> None:
  seen = set()
  for wrapper, begin, end in changed:
    name = _method_name(wrapper)
    if (name, begin, end) in seen:
      continue
    seen.add((name, begin, end))
    fractions = getattr(wrapper.pruning_schedule, "window_fractions", {})
    spec = ", ".join(f"{k}={fractions.get(k, v)!r}" for k, v in (("begin_step", begin), ("end_step", end)))
    since = f" from step {start}" if start else ""
    logger.info("%s: update window %s is steps %d to %d of this %d-step %s%s.", name, spec, begin, end, total_steps,
                what, since)
    algorithm = getattr(wrapper, "algorithm", None)
    if algorithm is not None:
      check_update_count(algorithm, begin, end, start + total_steps)


def before_fit(model) -> None:
  """What `fit` does before tracing its first step: resolve pending windows, and say if the window has closed."""
  start = current_step(model)
  if has_pending_window(model):
    total_steps = _steps_of_fit(model)
    if total_steps is None:
      raise ValueError(
          "The sparse model's update window is a fraction of training, and fit does not know how many steps it "
          "runs (a dataset of unknown length): pass steps_per_epoch to fit, or total_steps to "
          "tfmot_rigl.prune_sparse.")
    _log_windows(resolve_windows(model, total_steps, start), total_steps, start, "fit")
  closed = {}
  for wrapper in pruning_wrapper_layers(model):
    end = wrapper.pruning_schedule.end_step
    if _dynamic(wrapper) and isinstance(end, int) and start > end:
      closed.setdefault((_method_name(wrapper), wrapper.pruning_schedule.begin_step, end), wrapper.name)
  for (name, begin, end), layer in closed.items():
    logger.warning(
        "%s: this fit starts at step %d, after the mask update window (steps %d to %d) closed, so masks stay as "
        "they are (layer %r and others with this window). To update them in this training, load the model with "
        "tfmot_rigl.load_model(path, total_steps=<steps still to train>), which re-resolves a fractional window "
        "from step %d, or prune with a begin_step/end_step (or total_steps) that covers every fit.", name, start,
        begin, end, layer, start)


def rebase_windows(model, total_steps: int) -> None:
  """Re-resolves every fractional window of `model` over the `total_steps` steps from its current step on."""
  if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
    raise ValueError(f"total_steps={total_steps!r} must be a positive number of training steps.")
  start = current_step(model)
  changed = resolve_windows(model, total_steps, start, rebase=True)
  if not changed:
    logger.info("total_steps=%d: no update window of this model is a fraction of training; windows unchanged.",
                total_steps)
  _log_windows(changed, total_steps, start, "training")


def resolve_in_fit(model) -> None:
  """Makes `model.fit` run `before_fit` (pending windows resolved from its epochs × steps per epoch) before tracing."""
  if getattr(model, "_tfmot_rigl_resolves_in_fit", False):
    return
  make_train_function = model.make_train_function

  def resolving_make_train_function(*args, **kwargs):
    before_fit(model)
    return make_train_function(*args, **kwargs)

  # Instance attributes (no layer or variable, so Keras does not track them) shadow the class's method.
  object.__setattr__(model, "make_train_function", resolving_make_train_function)
  object.__setattr__(model, "_tfmot_rigl_resolves_in_fit", True)
