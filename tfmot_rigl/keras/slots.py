"""Finding the optimizer slots (momentum, Adam m/v, RMSprop accumulators, …) that belong to one model variable.

Both kinds of tf_keras optimizer occur in practice (Model Garden builds either): the "new" optimizers keep each slot
kind in a list indexed by `_index_dict[_var_key(var)]`; legacy `OptimizerV2` ones answer `get_slot(var, name)`.
Optimizers that wrap another (LossScaleOptimizer, Model Garden's ExponentialMovingAverage) keep the slots in the inner
one. Moving averages of the weights (tf_keras `use_ema`, Model Garden's EMA) are found separately: they are swapped in
for evaluation, so they must follow the weights, not be reset like slots.
"""
import tf_keras as keras
import tensorflow as tf

# Lists on new-style optimizers that hold one entry per model variable but are not slots to reset.
_NOT_SLOTS = ("_variables", "_model_variables_moving_average")


def check_supported(optimizer):
  """Raises ValueError unless the optimizer is a tf_keras optimizer whose slots we can look up."""
  if isinstance(optimizer, (keras.optimizers.Optimizer, keras.optimizers.legacy.Optimizer)):
    return
  raise ValueError(f"Cannot reset the slots of optimizer {type(optimizer).__module__}.{type(optimizer).__name__}: "
                   "sparse training needs a tf_keras optimizer (e.g. tf_keras.optimizers.SGD or Adam; TFMOT "
                   "supports Keras 2 only).")


def slot_variables(optimizer, variable):
  """The optimizer's slot variables for `variable`, each of the variable's shape. Call after the optimizer is built."""
  return [slot for _, slot in slot_kinds(optimizer, variable)]


def slot_kinds(optimizer, variable):
  """[(kind, slot variable)] of `variable`: what each slot holds, for `SparseAlgorithm.new_slot_values`.

  Kinds: "velocity" (SGD momentum: m ← μm − lr·g, added to the weight), "momentum_step" (RMSprop momentum:
  mom ← μ·mom + lr·g/√ms, subtracted), "first_moment" (Adam-family m, Lion's m: an average of g), "other".
  """
  optimizer = _innermost(optimizer)
  if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
    named = [(name, optimizer.get_slot(variable, name)) for name in optimizer.get_slot_names()]
  else:
    index = optimizer._index_dict[optimizer._var_key(variable)]
    count = len(optimizer._index_dict)
    named = [(attr, value[index]) for attr, value in vars(optimizer).items()
             if attr not in _NOT_SLOTS and isinstance(value, list) and len(value) == count
             and value and all(isinstance(v, tf.Variable) for v in value)]
  slots = [slot for _, slot in named]
  for slot in slots:
    if slot.shape != variable.shape:
      raise ValueError(f"Cannot reset the slots of optimizer {type(optimizer).__name__}: slot {slot.name} has shape "
                       f"{slot.shape}, not that of {variable.name} {variable.shape} (factored optimizers such as "
                       "Adafactor are not supported); use SGD, Adam or RMSprop.")
  return [(_slot_kind(optimizer, name), slot) for name, slot in named]


_VELOCITY = ("momentum", "momentums")          # SGD: legacy slot name, new optimizer's list
_FIRST_MOMENTS = ("m", "_momentums", "_m", "momentums")  # Adam/Nadam/Adamax (legacy and new), Lion


def _slot_kind(optimizer, name: str) -> str:
  legacy, new = keras.optimizers.legacy, keras.optimizers
  if isinstance(optimizer, (legacy.SGD, new.SGD)):
    return "velocity" if name in _VELOCITY else "other"
  if isinstance(optimizer, (legacy.RMSprop, new.RMSprop)):
    return "momentum_step" if name in ("momentum", "_momentums") else "other"
  if isinstance(optimizer, (legacy.Adam, legacy.Nadam, legacy.Adamax, new.Adam, new.AdamW, new.Nadam, new.Adamax,
                            new.Lion)):
    return "first_moment" if name in _FIRST_MOMENTS else "other"
  return "other"


def current_learning_rate(optimizer, dtype=tf.float32):
  """The learning rate the optimizer holding the slots uses at this step (its schedule evaluated), as a tensor."""
  optimizer = _innermost(optimizer)
  if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
    return tf.cast(optimizer._decayed_lr(dtype), dtype)
  return tf.cast(optimizer.learning_rate, dtype)


def optimizer_chain(optimizer):
  """The optimizer and those it wraps, outermost first."""
  return list(_chain(optimizer))


def _chain(optimizer):
  """The optimizer and those it wraps, outermost first: LossScaleOptimizer (`inner_optimizer`), Model Garden's EMA."""
  while optimizer is not None:
    yield optimizer
    optimizer = getattr(optimizer, "inner_optimizer", None) or (
        optimizer._optimizer if _is_model_garden_ema(optimizer) else None)


def _innermost(optimizer):
  """The optimizer holding the slots: the last of the chain."""
  for optimizer in _chain(optimizer):
    pass
  return optimizer


def _is_model_garden_ema(optimizer):
  return hasattr(optimizer, "update_average") and hasattr(optimizer, "_average_weights") and hasattr(
      optimizer, "_optimizer")


def moving_averages(optimizer, variable):
  """Moving averages of `variable` kept by the optimizer (or an optimizer it wraps) for evaluation; often none."""
  found = []
  for optimizer in _chain(optimizer):
    if _is_model_garden_ema(optimizer) and optimizer._average_weights is not None:
      found += [average for average, weight in zip(optimizer._average_weights, optimizer._model_weights)
                if weight is variable]
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if isinstance(optimizer, keras.optimizers.Optimizer) and getattr(optimizer, "use_ema", False) and averages:
      found.append(averages[optimizer._index_dict[optimizer._var_key(variable)]])
  return found
