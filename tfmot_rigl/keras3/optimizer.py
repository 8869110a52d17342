"""`wrap_optimizer` for Keras 3: the mask update hooked into `optimizer.apply`, on every backend.

`apply` is what `fit` calls on the TensorFlow backend, what `stateless_apply` (the JAX backend's `fit`, and JAX
custom loops) runs inside a stateless scope, and what `apply_gradients` calls in custom TF loops. Per step:
  1. gradients of sparse kernels are masked (inactive entries exactly zero, NaN/Inf there included), and the user's
     optimizer applies them, so inactive weights and their slots stay zero;
  2. per-step algorithm state (SNFS's gradient EMA) follows the dense gradients;
  3. at update steps (a `keras.ops.cond`, so the jitted step keeps static shapes and pays for the selection only
     then) masks drop and grow, new connections get `grow_init` values and their slots are reset.
SNIP's one shot runs before step 1 on the first batch; magnitude pruning prunes at its schedule's steps.

On JAX, a pure train step returns only trainable and optimizer variables from the optimizer: so the masks and
per-layer state join the optimizer's `variables` (they stay layer weights too, saved with the model; the optimizer's
own saved state excludes them, so a plain `keras.saving.load_model` reads it).
"""
import weakref

import keras
import numpy as np
from keras import ops

from tfmot_rigl.keras3 import mask_ops
from tfmot_rigl.keras3 import scores
from tfmot_rigl.keras3.prune import check_backend, install_fit_hook, sparse_wrappers


def _all_finite(x):
  return ops.all(ops.isfinite(x))


class _SparseTrainingOptimizer:
  """Mixin placed in front of the user's optimizer class by `wrap_optimizer`."""

  _sparse_targets = None

  def _sparse_wrappers(self):
    return self._sparse_targets.wrappers if self._sparse_targets else ()

  @property
  def variables(self):
    # On JAX, the pure train step threads only trainable and optimizer variables through the optimizer: the masks
    # and per-layer state travel as optimizer variables there (copies; see `live`), on other backends they are used
    # in place.
    return super().variables + list(self._sparse_shadows.values())

  _sparse_shadows = {}

  def live(self, variable):
    """The variable the step reads and writes for a layer's mask/state: its optimizer-side copy on JAX."""
    return self._sparse_shadows.get(id(variable), variable)

  def _own_variables(self):
    return super().variables

  def save_own_variables(self, store):
    for i, variable in enumerate(self._own_variables()):
      store[str(i)] = variable.numpy()

  def load_own_variables(self, store):
    own = self._own_variables()
    if len(store.keys()) != len(own):
      raise ValueError(f"Optimizer {self.name!r} has {len(own)} variables, the saved one {len(store.keys())}.")
    for i, variable in enumerate(own):
      variable.assign(store[str(i)])

  def apply(self, grads, trainable_variables=None):
    variables = list(self._trainable_variables if trainable_variables is None else trainable_variables)
    grads = list(grads)
    step = ops.cast(self.iterations, "int32")  # read now: a TF variable handle would be read after the increment
    targets = {id(kernel): (wrapper, index) for wrapper in self._sparse_wrappers()
               for index, kernel in enumerate(wrapper.kernels)}
    dense = [(i, grads[i], targets[id(v)]) for i, v in enumerate(variables)
             if grads[i] is not None and id(v) in targets]
    for _, grad, (wrapper, index) in dense:
      if wrapper.algorithm.name == "snip":
        _snip_one_shot(self, wrapper, index, grad, step)
    for i, grad, (wrapper, index) in dense:
      mask = self.live(wrapper.masks[index])
      grads[i] = ops.where(ops.cast(mask, "bool"), grad, ops.zeros_like(grad))
    result = super().apply(grads, trainable_variables)
    for _, grad, (wrapper, index) in dense:
      _layer_update(self, wrapper, index, grad, step)
    return result

  def _slots_of(self, kernel):
    """Optimizer variables made from `kernel` (momentum, Adam's m and v, EMA): named after its path."""
    prefix = kernel.path.replace("/", "_") + "_"
    return [v for v in self._own_variables()
            if v.name.startswith(prefix) and tuple(v.shape) == tuple(kernel.shape)]


def _snip_one_shot(optimizer, wrapper, index, grad, step):
  """At the first finite batch, while the mask is still dense: keep the top (1 − s)·N by |g ⊙ w|."""
  kernel, mask = wrapper.kernels[index], optimizer.live(wrapper.masks[index])
  weight, current = ops.convert_to_tensor(kernel), ops.convert_to_tensor(mask)
  still_dense = ops.equal(ops.sum(ops.cast(current > 0.5, "int32")), int(np.prod(current.shape)))
  run = ops.logical_and(still_dense, ops.logical_and(_all_finite(grad), _all_finite(weight)))

  def one_shot():
    new_mask = scores.snip_mask(wrapper.algorithm, weight, grad, wrapper.weight_sparsities[index],
                                wrapper.seed_at(step, index))
    return weight * ops.cast(new_mask, weight.dtype), ops.cast(new_mask, current.dtype)

  new_weight, new_mask = ops.cond(run, one_shot, lambda: (weight, current))
  kernel.assign(new_weight)
  mask.assign(new_mask)


def _layer_update(optimizer, wrapper, index, grad, step):
  """Algorithm state every step; the mask update at update steps (magnitude: at its pruning steps)."""
  algorithm = wrapper.algorithm
  kernel, mask = wrapper.kernels[index], optimizer.live(wrapper.masks[index])
  state = {name: optimizer.live(var) for name, var in wrapper.state[index].items()}
  new_state = {}
  if state:
    old = {name: ops.convert_to_tensor(var) for name, var in state.items()}
    new_state = algorithm.update_state(old, grad)
    finite = _all_finite(grad)  # a NaN would poison the EMA for good
    for name, var in state.items():
      var.assign(ops.where(finite, new_state[name], old[name]))
  if not (algorithm.dynamic or algorithm.name == "magnitude"):
    return
  begin, end = wrapper.window()
  slots = optimizer._slots_of(kernel)
  weight, current = ops.convert_to_tensor(kernel), ops.convert_to_tensor(mask)
  slot_values = tuple(ops.convert_to_tensor(s) for s in slots)
  seed = wrapper.seed_at(step, index)

  if algorithm.name == "magnitude":
    when = ops.logical_and(ops.logical_and(step >= begin, step <= end),
                           ops.equal(ops.mod(ops.cast(step, "int32") - begin, algorithm.update_frequency), 0))

    def update():
      target = scores.magnitude_sparsity(step, wrapper.weight_sparsities[index], begin, end, algorithm.power)
      new_mask = ops.cast(scores.magnitude_mask(algorithm, weight, current, target, seed), weight.dtype)
      return (weight * new_mask, ops.cast(new_mask, current.dtype)) + tuple(
          s * ops.cast(new_mask, s.dtype) for s in slot_values)
  else:
    when = mask_ops.is_update_step(step, begin, end, algorithm.update_frequency)

    def update():
      fraction = mask_ops.drop_fraction_at(step, algorithm.drop_fraction, algorithm.drop_fraction_anneal, begin, end)
      new_mask, new_connections = scores.update_mask(algorithm, weight, current, grad, new_state, seed, fraction)
      new_mask = ops.cast(new_mask, weight.dtype)
      initial = (ops.convert_to_tensor(optimizer.live(wrapper.initial_weights[index]))
                 if wrapper.initial_weights else None)
      new_weight = ops.where(new_connections, scores.grow_values(algorithm, weight, current, grad, seed, initial),
                             weight * new_mask)
      new_slots = tuple(ops.where(new_connections, scores.new_slot_values(algorithm, grad, s),
                                  s * ops.cast(new_mask, s.dtype)) for s in slot_values)
      return (new_weight, ops.cast(new_mask, current.dtype)) + new_slots

  # Checked at update steps only: a layer whose gradient or weights are not finite keeps its mask that step.
  run = ops.logical_and(when, ops.logical_and(_all_finite(grad), _all_finite(weight)))
  out = ops.cond(run, update, lambda: (weight, current) + slot_values)
  kernel.assign(out[0])
  mask.assign(out[1])
  for slot, value in zip(slots, out[2:]):
    slot.assign(value)


class _Targets:
  def __init__(self, wrappers, model):
    self.wrappers = tuple(wrappers)
    self.model = weakref.ref(model)


def wrap_optimizer(optimizer, model):
  """Makes a Keras 3 `optimizer` drive sparse training of `model` (from `tfmot_rigl.keras3.prune_sparse`).

  The optimizer object is kept (hyperparameters, iterations, slots); its class becomes a subclass of its own class
  whose `apply` runs the mask updates, so it is still e.g. a `keras.optimizers.SGD` and serialises as one. Returns
  the same optimizer, for `model.compile(optimizer=...)`.
  """
  check_backend()
  if not isinstance(optimizer, keras.optimizers.Optimizer):
    raise ValueError(f"wrap_optimizer needs a Keras 3 optimizer (keras.optimizers.*), got {type(optimizer).__name__}; "
                     "for tf_keras optimizers use tfmot_rigl.wrap_optimizer.")
  wrappers = sparse_wrappers(model)
  if not wrappers and getattr(model, "_tfmot_rigl_dense", False):
    return optimizer
  if not wrappers:
    raise ValueError(f"Model {model.name!r} has no sparse layers; call tfmot_rigl.keras3.prune_sparse(model, ...) "
                     "first and wrap the optimizer with the model it returns.")
  previous = optimizer._sparse_targets if isinstance(optimizer, _SparseTrainingOptimizer) else None
  if previous is not None and {id(w) for w in previous.wrappers} != {id(w) for w in wrappers}:
    raise ValueError("This optimizer already drives sparse training of another model; one optimizer cannot update "
                     f"the masks of two models: create a new optimizer for model {model.name!r}.")
  cls = type(optimizer)
  if not issubclass(cls, _SparseTrainingOptimizer):
    optimizer.__class__ = type(cls.__name__, (_SparseTrainingOptimizer, cls),
                               {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
  object.__setattr__(optimizer, "_sparse_targets", _Targets(wrappers, model))
  shadows = {}
  if keras.backend.backend() == "jax":
    for wrapper in wrappers:
      for variable in wrapper.sparse_variables() + list(wrapper.initial_weights):
        shadows[id(variable)] = keras.Variable(np.array(ops.convert_to_numpy(variable)), trainable=False,
                                               name=variable.name + "_live")
  object.__setattr__(optimizer, "_sparse_shadows", shadows)
  for wrapper in wrappers:
    wrapper.attach_optimizer(optimizer)
  install_fit_hook(model)
  if getattr(model, "train_function", None) is not None:
    model.train_function = None  # a step traced before wrapping would not update masks
  return optimizer

