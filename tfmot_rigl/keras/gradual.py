"""Gradual pruning (core/gradual.py) in Keras: each layer's starting sparsity for `prune_sparse`, and the plan the
accounting sums training FLOPs from."""
from typing import Callable, Mapping, Optional, Sequence, Tuple

from tfmot_rigl.core import training_flops
from tfmot_rigl.keras import training_steps
from tfmot_rigl.keras.wrapper import SparseWrapper


def initial_sparsities(algorithm, sparsity: float, distribute: Optional[Callable[[float], dict]]) -> dict:
  """{name: sparsity} of the distribution at `algorithm.initial_sparsity` (empty when not gradual or no model).

  `distribute(s)` is the model's distribution at global sparsity s, with the same knobs as the target's.
  """
  if not algorithm.gradual:
    return {}
  if algorithm.initial_sparsity > sparsity:
    raise ValueError(f"initial_sparsity={algorithm.initial_sparsity} is above sparsity={sparsity}: gradual pruning "
                     "starts denser than the target; choose initial_sparsity <= sparsity (e.g. 0.5).")
  return distribute(algorithm.initial_sparsity) if distribute is not None else {}


def layer_start(algorithm, weights: Sequence[Tuple[float, float, Optional[float]]], prune_end):
  """(layer's initial sparsity, prune_end, per-weight initial sparsities or None) for `_make_wrapper`, or None.

  `weights`: (final sparsity, size, initial sparsity) of each prunable weight of the layer; the layer's initial
  sparsity is their size-weighted mean, as its target is.
  """
  if not algorithm.gradual:
    return None
  size = sum(n for _, n, _ in weights)
  starts = [s0 for _, _, s0 in weights]
  return float(sum(s0 * n for _, n, s0 in weights) / size), prune_end, starts if len(starts) > 1 else None


def _step(value, steps: Optional[int]) -> int:
  if isinstance(value, training_steps.PendingStep):
    if not steps:
      raise value.error()
    return int(round(value.fraction * steps))
  return int(value)


def plan(model, ops_by_name: Mapping[str, Sequence[int]], steps: Optional[int] = None):
  """The `GradualPlan` of `model` (its gradual wrappers' kernels and schedule), or None without gradual pruning.

  `ops_by_name` maps layer (and "layer/weight") names to the indices of their accounting ops, the last one holding
  the sparsifiable kernel; `steps` resolves windows still given as fractions of training.
  """
  kernels, schedule = [], None
  for wrapper in training_steps.pruning_wrapper_layers(model):
    if not isinstance(wrapper, SparseWrapper) or not wrapper.gradual:
      continue
    schedule = wrapper.pruning_schedule
    several = len(wrapper.pruning_vars) > 1
    for index, (weight, _, _) in enumerate(wrapper.pruning_vars):
      name = wrapper.layer.name
      if several:
        path = weight.name.split(":")[0]
        name = f"{name}/{path.removeprefix(name + '/')}"
      units = wrapper.algorithm.mask_units(weight.shape)
      kernels.append(training_flops.GradualKernel(
          ops_by_name[name][-1], units, int(weight.shape.num_elements()) // units,
          wrapper.initial_sparsity_of(index), wrapper.sparsity_of(index)))
  if schedule is None:
    return None
  return training_flops.GradualPlan(tuple(kernels), _step(schedule.begin_step, steps), _step(schedule.prune_end, steps),
                                    _step(schedule.end_step, steps), schedule.update_frequency)
