"""`SparseWrapper`: TFMOT's `PruneLowMagnitude` wrapper, holding masks that only the sparse-training update changes.

Being a subclass keeps `strip_pruning`, `PruningSummaries`, `collect_prunable_layers` and `PrunableLayer` support
working unchanged. What differs from TFMOT's wrapper:
  * masks start from the algorithm's initial mask (random at the layer's sparsity, or dense for SNIP), not all ones;
  * the forward pass neither counts steps nor asserts that TFMOT's UpdatePruningStep callback ran: the step is the
    optimizer's, kept in `pruning_step` by the wrapped optimizer, so custom loops need no callback;
  * the forward pass does not re-assign W ⊙ M to the kernel each step (TFMOT's `weight_mask_op`, a `merge_call` that
    an XLA-compiled step cannot make, and a float32 multiply that breaks mixed precision): inactive weights are kept
    exactly zero by the wrapped optimizer instead, so the layer computes with W = W ⊙ M as it is;
  * per-layer algorithm state (e.g. SNFS's gradient EMA) lives here, so checkpoints and SavedModels carry it.
"""
import inspect

import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl import algorithms
from tfmot_rigl.core import blocks
from tfmot_rigl.core import masks as mask_math
from tfmot_rigl.keras import attach
from tfmot_rigl.keras import initial_masks
from tfmot_rigl.keras.log import logger
from tfmot_rigl.keras.schedule import SparseSchedule


class SparseWrapper(pruning_wrapper.PruneLowMagnitude):
  """Wraps one layer for sparse training.

  Args:
    layer: the layer (Dense, ConvND, SeparableConv, a `PrunableLayer`, …).
    pruning_schedule: the layer's `SparseSchedule`.
    algorithm: a `SparseAlgorithm` (or its serialised dict).
    seed: the run's seed; together with `layer_index` and the step it seeds every random draw of this layer.
    layer_index: position of this layer among the sparsified layers.
    weight_sparsities: one sparsity per prunable weight, for layers with several (e.g. a residual block made
      prunable as a whole); by default every weight has the schedule's sparsity.
    initial_weight_sparsities: the same at the start of gradual pruning (the schedule's `initial_sparsity`).
    initial_mask: where the first masks come from: random | magnitude | checkpoint (see `initial_masks`).
  """

  def __init__(self, layer, pruning_schedule: SparseSchedule, algorithm=None, seed: int = 0, layer_index: int = 0,
               weight_sparsities=None, initial_weight_sparsities=None, initial_mask: str = "random", **kwargs):
    # Compute in the wrapped layer's dtype policy (mixed_float16/bfloat16 included): the wrapper's __call__ is what
    # casts inputs and reads AutoCastVariables in the compute dtype, since it calls the layer's `call` directly.
    kwargs.setdefault("dtype", layer.dtype_policy)
    super().__init__(layer, pruning_schedule=pruning_schedule, **kwargs)
    self.weight_sparsities = [float(s) for s in weight_sparsities] if weight_sparsities is not None else None
    self.initial_weight_sparsities = ([float(s) for s in initial_weight_sparsities]
                                      if initial_weight_sparsities is not None else None)
    self.algorithm = algorithms.deserialize(algorithm) if algorithm is not None else algorithms.RigL()
    self.seed = int(seed)
    self.layer_index = int(layer_index)
    self.initial_mask = initial_masks.check_initial_mask(initial_mask, self.algorithm)
    self.state = []  # per prunable weight: {state name: variable}
    self.initial_weights = []

  def attach_optimizer(self, optimizer):
    """Called by `wrap_optimizer`: this layer's masks are now updated by `optimizer`."""
    attach.attach(self, optimizer)

  def layer_seed(self, step, purpose: int = 0):
    """int32 [2] stateless seed for (run seed + offset, this layer, purpose, step)."""
    return mask_math.stateless_seed(self.seed + self.algorithm.seed_offset, self.layer_index, purpose, step)

  def sparsity_of(self, index: int) -> float:
    """Target sparsity of the index-th prunable weight."""
    return self.weight_sparsities[index] if self.weight_sparsities else self.pruning_schedule.sparsity

  @property
  def gradual(self) -> bool:
    return self.pruning_schedule.initial_sparsity is not None

  def initial_sparsity_of(self, index: int) -> float:
    """Sparsity of the index-th prunable weight at the start of training (its target unless gradual)."""
    if not self.gradual:
      return self.sparsity_of(index)
    if self.initial_weight_sparsities:
      return self.initial_weight_sparsities[index]
    return self.pruning_schedule.initial_sparsity

  def active_count_at(self, step, index: int):
    """Gradual pruning: int32 tensor of the active units of the index-th weight after an update at `step`; else None."""
    if not self.gradual:
      return None
    units = self.algorithm.mask_units(self.pruning_vars[index][0].shape)
    return self.pruning_schedule.active_count_at(step, units, self.initial_sparsity_of(index), self.sparsity_of(index))

  def build(self, input_shape):
    super().build(input_shape)
    if self.weight_sparsities and len(self.weight_sparsities) != len(self.pruning_vars):
      raise ValueError(f"Layer {self.layer.name!r} has {len(self.pruning_vars)} prunable weights but "
                       f"{len(self.weight_sparsities)} weight_sparsities; give one per prunable weight.")
    for index, (weight, mask, _) in enumerate(self.pruning_vars):
      # Under mixed precision the kernel is an AutoCastVariable, read as float16/bfloat16 inside this (autocast) scope:
      # masking and copying it through that read would round the float32 weights, so use the variable it wraps.
      weight = getattr(weight, "_variable", weight)
      dtype = weight.dtype
      if self.algorithm.needs_initial_weight:
        # grow_init=initial_dist draws new weights from the layer's values at initialisation (before masking).
        initial_weight = self.add_weight(f"initial_kernel_{index}", shape=weight.shape, initializer="zeros",
                                         dtype=dtype, trainable=False, experimental_autocast=False)
        initial_weight.assign(weight)
        self.initial_weights.append(initial_weight)
      initial = tf.cast(initial_masks.first_mask(self, index, weight), mask.dtype)
      mask.assign(initial)
      weight.assign(weight * tf.cast(initial, weight.dtype))
      self.state.append({
          name: self.add_weight(f"{name}_{index}", shape=weight.shape, initializer="zeros", dtype=dtype,
                                trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                                experimental_autocast=False)  # optimizer-side float32 state, never cast
          for name in self.algorithm.state_names()})
    # Mask updates skipped because this layer's gradient or weights were not finite (NaN/Inf) at an update step.
    self.skipped_updates = self.add_weight("skipped_updates", shape=(), initializer="zeros", dtype=tf.int64,
                                           trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def call(self, inputs, training=None, **kwargs):
    # The kernel already is W ⊙ M (see the module docstring); TFMOT's step counting, magnitude re-thresholding and
    # per-step mask re-assignment are left out on purpose.
    if "training" in inspect.getfullargspec(self.layer.call).args:
      outputs = self.layer.call(inputs, training=training, **kwargs)
    else:
      outputs = self.layer.call(inputs, **kwargs)
    attach.check_driven(self, training)  # after the call: a recording tape has seen the kernel read by then
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update(algorithm=algorithms.serialize(self.algorithm), seed=self.seed, layer_index=self.layer_index,
                  weight_sparsities=self.weight_sparsities, initial_mask=self.initial_mask)
    if self.initial_weight_sparsities is not None:
      config["initial_weight_sparsities"] = self.initial_weight_sparsities
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    schedule_config = config.pop("pruning_schedule")
    config["pruning_schedule"] = SparseSchedule.from_config(schedule_config["config"])
    config["layer"] = keras.layers.deserialize(config.pop("layer"))
    return cls(**config)


def note_kernels_not_tiled(wrappers, algorithm) -> None:
  """One line naming the kernels that blocks do not tile: they are masked per element (core/blocks.py)."""
  untiled = [f"{wrapper.layer.name} {tuple(int(d) for d in weight.shape[-2:])}"
             for wrapper in wrappers if isinstance(wrapper, SparseWrapper)
             for weight, _, _ in wrapper.pruning_vars
             if blocks.applies(weight.shape, algorithm.block_shape) and not algorithm.in_blocks(weight.shape)]
  if untiled:
    logger.info("block_shape=%s does not tile the [in, out] kernel of %s: masked per element (unstructured) "
                "instead; a block_shape dividing both dims keeps a layer in blocks.", list(algorithm.block_shape),
                ", ".join(untiled))



keras.utils.get_custom_objects()[SparseWrapper.__name__] = SparseWrapper
