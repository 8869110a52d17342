"""`wrap_optimizer`: the one integration point that sees the gradients.

TFMOT's wrapper updates masks inside the forward pass, where no gradient exists. RigL needs the dense gradient of the
current batch, so — as the reference code and jaxpruner's `wrap_optimizer` do — the mask update lives in the
optimizer: after the normal update, at update steps, each layer drops and grows connections. The same
`apply_gradients` serves `model.fit`, custom `tf.function` loops and the Model Garden train step.

Per step, inside `apply_gradients`:
  1. gradients are all-reduced across replicas (once, here), so scores and masks agree on every replica;
  2. the inner optimizer applies the gradients with inactive entries set to zero, so inactive weights and their
     slots stay exactly zero (the forward pass needs no W ⊙ M re-assignment, and compiles with XLA);
  3. per-step algorithm state (SNFS's gradient EMA) is updated from the dense gradients;
  4. at an update step the masks change, new connections get `grow_init` values and reset optimizer slots, and
     dropped connections are zeroed with their slots and moving averages. Shapes stay static, so the step compiles
     with XLA.
A layer whose gradient or weights are not finite (NaN/Inf) keeps its mask and state for that step: the update is
skipped and counted in the wrapper's `skipped_updates`; under a `LossScaleOptimizer`, a step whose weight update the
loss scaling skipped also skips every mask update.
"""
import weakref

import tensorflow as tf
from tf_keras.src.optimizers import utils as optimizer_utils
import tf_keras as keras

from tfmot_rigl import algorithms
from tfmot_rigl.keras import attach
from tfmot_rigl.keras import slots as slot_lookup
from tfmot_rigl.keras import training_steps
from tfmot_rigl.keras.prune import sparse_wrappers
from tfmot_rigl.keras.wrapper import SparseWrapper


class _SparseTrainingOptimizer:
  """Mixin placed in front of the user's optimizer class by `wrap_optimizer`."""

  _sparse_targets = None  # a _Targets; a plain holder so the optimizer's checkpoint does not track the layers

  def _sparse_wrappers(self):
    # A method, not a property: Keras' `.keras` saver walks every attribute of the optimizer and would store the
    # wrappers (with their variables) under the optimizer, where loading cannot find them.
    return self._sparse_targets.wrappers if self._sparse_targets else ()

  def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
    grads_and_vars = [(g, v) for g, v in grads_and_vars]
    aggregate = not skip_gradients_aggregation and kwargs.pop("experimental_aggregate_gradients", True)
    if aggregate and tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False:
      grads_and_vars = optimizer_utils.all_reduce_sum_gradients(grads_and_vars)
    step = tf.identity(self.iterations)
    ours = [w for w in self._sparse_wrappers() if isinstance(w, SparseWrapper)]
    masks = {id(weight): mask for w in ours for weight, mask, _ in w.pruning_vars}
    dense_grads = {id(v): tf.convert_to_tensor(g) for g, v in grads_and_vars if id(v) in masks and g is not None}
    def masked_gradients():
      # g with inactive entries zeroed (a NaN gradient must not reach an inactive weight), read from the masks as
      # they are at this point of the program.
      return [(_masked_gradient(g, masks[id(v)]) if id(v) in dense_grads else g, v) for g, v in grads_and_vars]

    # The inner optimizer sees the masked gradients: inactive weights and their slots stay exactly zero. Whether a
    # loss scale optimizer applies the step is decided on them too (a NaN at an inactive entry is harmless).
    masked = masked_gradients()
    step_finite = _loss_scale_step_is_finite(self, masked)
    if any(w.algorithm.name == "snip" for w in ours):
      # SNIP scores |g ⊙ w| with the weights *before* this first step, so its one shot runs ahead of the update,
      # and the gradients are masked again with the masks it chose.
      _in_cross_replica(self._per_layer_update, step, dense_grads, step_finite, _snip_update_fn)
      masked = masked_gradients()
    result = _apply_inner(self, masked, name, kwargs)
    # Program order (automatic control dependencies) puts the mask update after the inner update.
    _in_cross_replica(self._per_layer_update, step, dense_grads, step_finite, _drop_and_grow_update_fn)
    return result

  def _per_layer_update(self, strategy, step, dense_grads, step_finite, make_update_fn):
    """Runs in cross-replica context; `strategy.extended.update` runs each layer's update on every device."""
    for wrapper in self._sparse_wrappers():
      if isinstance(wrapper, SparseWrapper):
        for index, (weight, mask, _) in enumerate(wrapper.pruning_vars):
          if id(weight) in dense_grads:
            strategy.extended.update(weight, make_update_fn(self, wrapper, index, mask),
                                     args=(dense_grads[id(weight)], step, step_finite))
      if make_update_fn is _drop_and_grow_update_fn:
        # The step count after this step; for TFMOT's own wrapper (magnitude pruning) this is exactly where its
        # UpdatePruningStep callback would put it before the next batch.
        strategy.extended.update(wrapper.pruning_step, lambda var, s: var.assign(tf.cast(s, tf.int64) + 1),
                                 args=(step,))


class _Targets:
  def __init__(self, wrappers, model):
    self.wrappers = tuple(wrappers)
    self.model = weakref.ref(model)


def _masked_gradient(grad, mask):
  # multiply_no_nan: 0 wherever the mask is 0, even where the gradient is NaN/Inf — one op, like M ⊙ g.
  if grad.dtype in (tf.float32, tf.float64, tf.float16):
    return tf.math.multiply_no_nan(grad, tf.cast(mask, grad.dtype))
  return tf.where(tf.cast(mask, tf.bool), grad, tf.zeros_like(grad))  # e.g. bfloat16, which MulNoNan lacks on CPU


def _apply_inner(optimizer, grads_and_vars, name, kwargs):
  """The user's optimizer's own update, told not to aggregate again (the gradients are all-reduced already)."""
  if hasattr(optimizer, "update_average") and hasattr(optimizer, "_optimizer"):
    # Model Garden's ExponentialMovingAverage: its apply_gradients would let the optimizer it wraps all-reduce again.
    result = optimizer._optimizer.apply_gradients(grads_and_vars, name, experimental_aggregate_gradients=False)
    _in_cross_replica(lambda strategy: optimizer.update_average(strategy))
    return result
  parent = super(_SparseTrainingOptimizer, optimizer)
  if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
    return parent.apply_gradients(grads_and_vars, name=name, experimental_aggregate_gradients=False, **kwargs)
  return parent.apply_gradients(grads_and_vars, name=name, skip_gradients_aggregation=True, **kwargs)


def _all_finite(tensor):
  return tf.reduce_all(tf.math.is_finite(tensor))


def _loss_scale_step_is_finite(optimizer, grads_and_vars):
  """Under a LossScaleOptimizer: whether it applies this step (all gradients finite, as it decides); else True."""
  if getattr(optimizer, "inner_optimizer", None) is None:
    return tf.constant(True)
  grads = [g for g, _ in grads_and_vars if g is not None]
  return tf.reduce_all([_all_finite(tf.convert_to_tensor(g)) for g in grads]) if grads else tf.constant(True)


def _in_cross_replica(fn, *args):
  """Calls fn(strategy, *args) the way tf_keras optimizers apply their updates.

  From replica context that is a `merge_call` (MirroredStrategy), or a direct call where the strategy supports
  updates without one (as TPUStrategy does, and MirroredStrategy on GPUs inside XLA); `strategy.extended.update`
  then runs fn's per-variable updates.
  """
  if tf.distribute.in_cross_replica_context():
    return fn(tf.distribute.get_strategy(), *args)
  return tf.__internal__.distribute.interim.maybe_merge_call(fn, tf.distribute.get_strategy(), *args)


def _layer_view(wrapper, index, weight, mask, grad, step, state):
  return algorithms.LayerUpdate(
      weight=tf.identity(weight), mask=tf.cast(mask, weight.dtype), grad=grad, state=state,
      seed=wrapper.layer_seed(step, index),
      initial_weight=wrapper.initial_weights[index] if wrapper.initial_weights else None,
      step=tf.cast(step, tf.int64), active_count=wrapper.active_count_at(step, index))


def _snip_update_fn(optimizer, wrapper, index, mask):
  """SNIP's one shot at step 0, on this (the first) batch: keep the top (1 − s_l)·N_l connections by |g ⊙ w|."""
  del optimizer  # before the first step there is no optimizer state to reset
  sparsity = wrapper.sparsity_of(index)

  def update(weight, grad, step, step_finite):
    def one_shot():
      layer = _layer_view(wrapper, index, weight, mask, grad, step, {})
      new_mask = wrapper.algorithm.keep_largest(wrapper.algorithm.scores(layer.weight, grad), sparsity, layer.seed)
      mask.assign(tf.cast(new_mask, mask.dtype))
      weight.assign(weight * tf.cast(new_mask, weight.dtype))
      return tf.constant(True)

    # Only while the mask is still dense: masks set beforehand by apply_snip (or restored) are left alone. A first
    # batch with non-finite gradients is not scored; the next finite one is (the mask is still dense then).
    still_dense = tf.equal(tf.reduce_sum(tf.cast(mask, tf.int64)), weight.shape.num_elements())
    finite = tf.logical_and(step_finite, tf.logical_and(_all_finite(grad), _all_finite(weight)))
    return tf.cond(tf.logical_and(still_dense, finite), one_shot, lambda: tf.constant(False))

  return update


def _drop_and_grow_update_fn(optimizer, wrapper, index, mask):
  """The per-device update of one kernel: algorithm state every step; drop/grow at update steps."""
  algorithm = wrapper.algorithm
  schedule = wrapper.pruning_schedule
  state = wrapper.state[index]
  kernel = wrapper.pruning_vars[index][0]
  slots = slot_lookup.slot_kinds(optimizer, kernel) if algorithm.dynamic else []
  averages = slot_lookup.moving_averages(optimizer, kernel) if algorithm.dynamic else []

  def update(weight, grad, step, step_finite):
    if state:
      # A non-finite gradient would poison the EMA for good: skip it (checked every step only for such state).
      finite_grad = tf.logical_and(step_finite, _all_finite(grad))
      old_state = {name: var.read_value() for name, var in state.items()}
      new_state = algorithm.update_state(old_state, grad)
      for name, var in state.items():
        var.assign(tf.where(finite_grad, new_state[name], old_state[name]))
    else:
      new_state = {}

    def drop_and_grow():
      layer = _layer_view(wrapper, index, weight, mask, grad, step, new_state)
      new_mask, new_connections = algorithm.update_mask(layer, schedule.drop_fraction_at(step))
      new_mask = tf.cast(new_mask, weight.dtype)
      new_weight = tf.where(new_connections, algorithm.grow_values(layer), weight * new_mask)
      weight.assign(new_weight)
      for kind, slot in slots:
        learning_rate = (slot_lookup.current_learning_rate(optimizer, slot.dtype)
                         if kind != "other" and getattr(algorithm, "initial_acc_scale", 0) else None)
        slot.assign(tf.where(new_connections, algorithm.new_slot_values(layer, slot, kind, learning_rate),
                             slot * new_mask))
      for average in averages:  # moving averages used for evaluation follow the weights
        average.assign(tf.where(new_connections, tf.cast(new_weight, average.dtype), average * new_mask))
      mask.assign(tf.cast(new_mask, mask.dtype))
      return tf.constant(True)

    def skip():
      wrapper.skipped_updates.assign_add(1)
      return tf.constant(False)

    def checked_update():
      # Checked at update steps only: between updates the finiteness of this layer decides nothing.
      finite = tf.logical_and(step_finite, tf.logical_and(_all_finite(grad), _all_finite(weight)))
      return tf.cond(finite, drop_and_grow, skip)

    if not algorithm.dynamic:
      return tf.constant(False)
    return tf.cond(schedule.is_update_step(step), checked_update, lambda: tf.constant(False))

  return update


# Optimizers whose update is not a step along the (masked) gradient: Ftrl assigns each weight from its accumulators
# (a zeroed accumulator gives 0/0), Adafactor keeps factored slots that cannot be reset per connection.
_WEIGHT_SETTING = {"Ftrl": "assigns each weight from its own accumulators instead of stepping it along the gradient",
                   "Adafactor": "keeps factored (row/column) slots that cannot be reset for single connections"}


def _refuse_weight_setting_optimizers(optimizer):
  for link in slot_lookup.optimizer_chain(optimizer):
    for cls in type(link).__mro__:
      if cls.__name__ in _WEIGHT_SETTING and cls.__module__.startswith("tf_keras."):
        raise ValueError(
            f"wrap_optimizer cannot drive sparse training with {cls.__name__}: it {_WEIGHT_SETTING[cls.__name__]}, "
            "so inactive weights would not stay exactly zero; use another tf_keras optimizer (SGD, Adam, AdamW, "
            "RMSprop, Adagrad, Adadelta, Adamax, Nadam, Lion, or their legacy versions).")


def wrap_optimizer(optimizer, model):
  """Makes `optimizer` drive sparse training of `model` (a model returned by `prune_sparse`).

  The optimizer object is kept (hyperparameters, iterations, slots) and its class becomes a subclass of its own
  class that runs the mask updates in `apply_gradients`; it is still an instance of e.g. `SGD`, and serialises as it.
  Returns the same optimizer, for chaining into `model.compile(optimizer=...)`. One optimizer drives one model:
  wrapping it again for another model is an error (make a new optimizer for that model).
  """
  slot_lookup.check_supported(optimizer)
  wrappers = sparse_wrappers(model)
  if not wrappers and getattr(model, "_tfmot_rigl_dense", False):
    return optimizer  # prune_sparse(model, "dense") returned it as is: there is nothing to drive
  if not wrappers:
    raise ValueError(f"Model {model.name!r} has no sparse layers; call tfmot_rigl.prune_sparse(model, ...) first and "
                     "wrap the optimizer with the model it returns.")
  _refuse_weight_setting_optimizers(optimizer)
  previous = getattr(optimizer, "_sparse_targets", None)
  if previous is not None and {id(w) for w in previous.wrappers} != {id(w) for w in wrappers}:
    other = previous.model()
    raise ValueError(f"This optimizer already drives sparse training of model "
                     f"{other.name if other is not None else '(deleted)'!r}; one optimizer cannot update the masks "
                     f"of two models: create a new optimizer for model {model.name!r} and wrap that one.")
  cls = type(optimizer)
  if not issubclass(cls, _SparseTrainingOptimizer):
    sparse_cls = type(cls.__name__, (_SparseTrainingOptimizer, cls), {"__module__": cls.__module__,
                                                                         "__qualname__": cls.__qualname__})
    optimizer.__class__ = sparse_cls
  optimizer._sparse_targets = _Targets(wrappers, model)
  training_steps.resolve_in_fit(model)  # fractional windows of layers wrapped one by one: fit resolves them too
  with tf.init_scope():  # also when the first step of fit wraps it (tfmot_rigl.keras.attach)
    step = max(int(wrapper.pruning_step.numpy()) for wrapper in wrappers)
    if int(optimizer.iterations.numpy()) == 0 and step > 0:
      # A new optimizer (or one a SavedModel gave back without its state) for a model that has trained: the masks'
      # schedule continues at the model's step, as a restored optimizer would (its slots start from zero).
      optimizer.iterations.assign(step)
    for wrapper in wrappers:
      wrapper.pruning_step.assign(tf.cast(optimizer.iterations, tf.int64))
      attach.attach(wrapper, optimizer)
  return optimizer
