"""Who drives a sparse layer's training: the check every training call of a wrapper makes (issue 18).

Only an optimizer passed through `wrap_optimizer` keeps inactive weights at zero and updates the masks; TFMOT's
magnitude pruning also needs its step advanced (by that optimizer or TFMOT's UpdatePruningStep callback). A layer
that is being trained without one would silently lose the sparsity invariant, so the first traced training call
(`training=True`, or any call under a GradientTape that records the layer's weights) checks, in Python, once:
  * inside Keras `fit` (a `train_step` of the model holding the layer), the compiled optimizer is wrapped then and
    there, so TFMOT's stock `keras.models.load_model` + `fit` continues sparse training (one line says so);
  * anywhere else (a custom loop) training stops with one ValueError line naming the missing call.
SavedModel tracing (saving=True) and SNIP's scoring pass are not training and are let through.
"""
import contextlib
import sys
import threading
import weakref

import tensorflow as tf
import tf_keras as keras
from tensorflow.python.eager import record
from tf_keras.src.engine import base_layer_utils
from tf_keras.src.saving.legacy.saved_model import utils as saved_model_utils

from tfmot_rigl.keras import training_steps
from tfmot_rigl.keras.log import logger

_scoring = threading.local()


@contextlib.contextmanager
def scoring():
  """Gradients of the weights that are not training (SNIP's scores): the drive check lets them through."""
  previous = getattr(_scoring, "active", False)
  _scoring.active = True
  try:
    yield
  finally:
    _scoring.active = previous


def attach(wrapper, optimizer) -> None:
  """Records that `optimizer` (wrapped) drives `wrapper`; a weak reference, so the layer does not track it."""
  object.__setattr__(wrapper, "_tfmot_rigl_optimizer", weakref.ref(optimizer))


def _driver(wrapper):
  ref = getattr(wrapper, "_tfmot_rigl_optimizer", None)
  return ref() if ref is not None else None


def _saving() -> bool:
  return bool(base_layer_utils.call_context().saving) or saved_model_utils.in_tf_saved_model_scope()


def _is_training(wrapper, training) -> bool:
  """training=True, or training not given under a GradientTape recording this layer's weights (read by then).

  An explicit training=False is inference (e.g. gradients with respect to the inputs) and is let through.
  """
  if training is True:
    return True
  if training is not None or getattr(_scoring, "active", False) or not record.could_possibly_record():
    return False
  weights = [getattr(w, "handle", None) for w, _, _ in getattr(wrapper, "pruning_vars", [])]
  return record.should_record_backprop([h for h in weights if h is not None])


def _model_in_fit(wrapper):
  """The Keras model whose `train_step` (as `fit` runs it) is calling `wrapper`, or None (a custom loop).

  Keras layers know no parent, so the caller's frames are read (once, when the step is traced).
  """
  frame = sys._getframe(2)  # pylint: disable=protected-access
  while frame is not None:
    owner = frame.f_locals.get("self")
    if (isinstance(owner, keras.Model) and frame.f_code.co_name.endswith("train_step")
        and any(layer is wrapper for layer in training_steps.pruning_wrapper_layers(owner))):
      return owner
    frame = frame.f_back
  return None


def _missing_call_error(wrapper, training) -> ValueError:
  how = ("is being trained" if training is True else
         "is called under a GradientTape that records its weights (pass training=False if these gradients do not "
         "train it)")
  method = type(getattr(wrapper, "algorithm", None)).__name__ if hasattr(wrapper, "algorithm") else "Magnitude"
  pending = [value for value in (wrapper.pruning_schedule.begin_step, wrapper.pruning_schedule.end_step)
             if isinstance(value, training_steps.PendingStep)]
  also = (f"; its update window is also a fraction of training ({pending[-1].what}={pending[-1].fraction}): pass "
          "total_steps=<number of training steps> to tfmot_rigl.prune_sparse or tfmot_rigl.load_model" if pending
          else "")
  return ValueError(
      f"Layer {wrapper.layer.name!r} ({method}) {how}, but no optimizer drives its sparse training: pass the "
      "optimizer through tfmot_rigl.wrap_optimizer(optimizer, model) before the first step (tfmot_rigl.load_model "
      f"does it for a loaded model's compiled optimizer){also}. Without it masks never change and inactive weights "
      "would be trained back to non-zero.")


def _is_driven(wrapper) -> bool:
  if _driver(wrapper) is not None:
    return True
  if getattr(wrapper, "algorithm", None) is None:  # TFMOT's wrapper: its UpdatePruningStep callback also drives it
    with tf.init_scope():
      return int(wrapper.pruning_step.numpy()) >= 0
  return False


def _has_pending_window(wrapper) -> bool:
  schedule = wrapper.pruning_schedule
  return any(isinstance(getattr(schedule, what, None), training_steps.PendingStep)
             for what in ("begin_step", "end_step"))


@tf.autograph.experimental.do_not_convert
def check_driven(wrapper, training) -> None:
  """Raises (or, inside `fit`, wraps the compiled optimizer) when `wrapper` trains with no sparse optimizer.

  Inside `fit` it also resolves a still-pending window (a model loaded by TFMOT's loader has no resolving hook).
  """
  if _saving() or not _is_training(wrapper, training):
    return
  driven = _is_driven(wrapper)
  if driven and not _has_pending_window(wrapper):
    return
  model = _model_in_fit(wrapper)
  if model is None:
    if not driven:
      raise _missing_call_error(wrapper, training)
    return  # a custom loop with a pending window: its first step says to pass total_steps
  if not driven:
    optimizer = getattr(model, "optimizer", None)
    if not isinstance(optimizer, (keras.optimizers.Optimizer, keras.optimizers.legacy.Optimizer)):
      raise _missing_call_error(wrapper, training)
    logger.info("fit: the compiled %s now drives sparse training of model %r (wrapped by tfmot_rigl.wrap_optimizer, "
                "as tfmot_rigl.load_model would have).", type(optimizer).__name__, model.name)
    from tfmot_rigl.keras import optimizer as optimizer_lib  # pylint: disable=import-outside-toplevel  (imports us)
    with tf.init_scope():
      optimizer_lib.wrap_optimizer(optimizer, model)
  with tf.init_scope():
    training_steps.before_fit(model)


@tf.autograph.experimental.do_not_convert
def check_schedule_driven(schedule) -> None:
  """Called by a magnitude schedule as TFMOT's wrapper asks it (training only): the check of its wrapper."""
  frame = sys._getframe(1)  # pylint: disable=protected-access
  while frame is not None:
    owner = frame.f_locals.get("self")
    if getattr(owner, "pruning_schedule", None) is schedule and hasattr(owner, "pruning_vars"):
      check_driven(owner, True)
      return
    frame = frame.f_back


def guard_magnitude_wrapper(wrapper) -> None:
  """Gives one of TFMOT's own wrappers (Magnitude) the same check, without changing its class."""
  call = wrapper.call

  def checked_call(inputs, training=None, **kwargs):
    if training is True:  # before TFMOT's call, which updates the mask (and resolves nothing) when training
      check_driven(wrapper, training)
    outputs = call(inputs, training=training, **kwargs)
    check_driven(wrapper, training)  # a tape sees the kernel read only after the call
    return outputs

  object.__setattr__(wrapper, "call", checked_call)
