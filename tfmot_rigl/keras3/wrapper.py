"""`SparseWrapper` for Keras 3: one prunable layer, its masks and the algorithm's per-layer state.

As in the tf_keras layer (tfmot_rigl.keras.wrapper), the forward pass computes with the kernel as it is: the wrapped
optimizer keeps inactive weights exactly zero, so the gradient the optimizer sees is the dense one RigL scores, and
nothing in the forward pass reads the masks. That matters on JAX, where `fit` threads variables through a pure train
step: masks and state change only in the optimizer step (see tfmot_rigl.keras3.optimizer).

Masks start from the algorithm's `initial_mask` in tfmot_rigl.algorithms, evaluated once at build time by the
TensorFlow core, so a Keras 3 model starts from exactly the masks the tf_keras API gives the same layer and seed.
"""
import weakref

import keras
import numpy as np

from tfmot_rigl import algorithms
from tfmot_rigl.core import blocks
from tfmot_rigl.keras3 import mask_ops

_DENSE_LIKE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
               keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def prunable_weights(layer, sparsify_depthwise=False):
  """The weights of a built `layer` that sparse training masks (empty if none)."""
  if hasattr(layer, "get_prunable_weights"):
    return list(layer.get_prunable_weights())
  if isinstance(layer, _SEPARABLE):
    return [layer.pointwise_kernel]
  if isinstance(layer, _DEPTHWISE):
    return [layer.kernel] if sparsify_depthwise else []
  if isinstance(layer, _DENSE_LIKE):
    return [layer.kernel]
  return []


def _initial_mask(algorithm, shape, sparsity, seed, layer_index, index):
  """The tf_keras path's initial mask (same core function, same seed), as a NumPy array."""
  if algorithm.name == "magnitude":
    return np.ones(shape, np.float32)  # gradual pruning starts dense
  from tfmot_rigl.core import masks as core_masks  # TensorFlow, eagerly, once per layer (outside any jit)
  return np.asarray(algorithm.initial_mask(tuple(shape), sparsity,
                                           core_masks.stateless_seed(seed + algorithm.seed_offset, layer_index,
                                                                     index, -1)), np.float32)


@keras.saving.register_keras_serializable(package="tfmot_rigl")
class SparseWrapper(keras.layers.Wrapper):
  """Wraps one layer for sparse training (Keras 3).

  Args:
    layer: Dense, ConvND(Transpose), SeparableConv (its pointwise kernel), DepthwiseConv (sparsify_depthwise) or any
      layer with a `get_prunable_weights()` method.
    weight_sparsities: target sparsity of each prunable weight.
    algorithm: a `SparseAlgorithm` or its serialised dict.
    seed, layer_index: with the step they seed every random draw of this layer.
    begin_step, end_step: the resolved update window (None until fit or `total_steps` resolves fractions).
  """

  def __init__(self, layer, weight_sparsities=(0.0,), algorithm=None, seed=0, layer_index=0, begin_step=None,
               end_step=None, sparsify_depthwise=False, **kwargs):
    super().__init__(layer, **kwargs)
    self.weight_sparsities = [float(s) for s in weight_sparsities]
    self.algorithm = algorithms.deserialize(algorithm) if algorithm is not None else algorithms.RigL()
    self.seed = int(seed)
    self.layer_index = int(layer_index)
    self.begin_step = None if begin_step is None else int(begin_step)
    self.end_step = None if end_step is None else int(end_step)
    self.sparsify_depthwise = bool(sparsify_depthwise)
    object.__setattr__(self, "_optimizer_ref", None)

  # --- set-up -------------------------------------------------------------------------------------------------------
  def build(self, input_shape=None):
    if not self.layer.built:
      self.layer.build(input_shape)
    kernels = prunable_weights(self.layer, self.sparsify_depthwise)
    if len(kernels) != len(self.weight_sparsities):
      raise ValueError(f"Layer {self.layer.name!r} has {len(kernels)} prunable weights but "
                       f"{len(self.weight_sparsities)} weight_sparsities; give one per prunable weight.")
    masks, states, initial = [], [], []
    for index, kernel in enumerate(kernels):
      shape = tuple(kernel.shape)
      if self.algorithm.in_blocks(shape):
        blocks.grid_shape(shape, self.algorithm.block_shape, name=self.layer.name)
      if self.algorithm.needs_initial_weight:  # grow_init=initial_dist draws from the weights before masking
        initial_weight = self.add_weight(name=f"initial_kernel_{index}", shape=shape, initializer="zeros",
                                         trainable=False, dtype=kernel.dtype)
        initial_weight.assign(kernel)
        initial.append(initial_weight)
      mask = self.add_weight(name=f"mask_{index}", shape=shape, initializer="ones", trainable=False,
                             dtype="float32")
      start = _initial_mask(self.algorithm, shape, self.weight_sparsities[index], self.seed, self.layer_index, index)
      mask.assign(start)
      kernel.assign(keras.ops.convert_to_tensor(kernel) * keras.ops.cast(start, kernel.dtype))
      masks.append(mask)
      states.append({name: self.add_weight(name=f"{name}_{index}", shape=shape, initializer="zeros",
                                           trainable=False, dtype=kernel.dtype)
                     for name in self.algorithm.state_names()})
    # Plain attributes (not tracked again: the variables are this layer's already).
    object.__setattr__(self, "kernels", kernels)
    object.__setattr__(self, "masks", masks)
    object.__setattr__(self, "state", states)
    object.__setattr__(self, "initial_weights", initial)
    self.built = True

  def sparse_variables(self):
    """Masks and per-layer algorithm state: what the optimizer step changes besides the kernels and slots."""
    return list(self.masks) + [v for state in self.state for v in state.values()]

  def attach_optimizer(self, optimizer):
    object.__setattr__(self, "_optimizer_ref", weakref.ref(optimizer))

  def optimizer(self):
    """The wrapped optimizer driving this layer, or None."""
    return self._optimizer_ref() if self._optimizer_ref is not None else None

  def sync_from_optimizer(self):
    """On JAX the optimizer holds the live masks and state while training (tfmot_rigl.keras3.optimizer): copies
    them into this layer's weights, which saving, strip and summaries read. A no-op on other backends."""
    optimizer = self.optimizer()
    shadows = getattr(optimizer, "_sparse_shadows", None) or {}
    for variable in self.sparse_variables():
      shadow = shadows.get(id(variable))
      if shadow is not None and shadow.value is not None:
        variable.assign(np.array(keras.ops.convert_to_numpy(shadow.value)))  # a copy: JAX donates each buffer once

  def save_own_variables(self, store):
    self.sync_from_optimizer()
    super().save_own_variables(store)

  def window(self):
    """(begin, end) as steps; a clear error while fractions of training are unresolved."""
    if self.begin_step is None or self.end_step is None:
      raise ValueError(
          f"Layer {self.layer.name!r}: the update window is a fraction of training (end_step=0.75 by default) and "
          "the number of training steps is unknown; pass total_steps= to prune_sparse for a custom training loop "
          "(model.fit resolves it when it starts).")
    return self.begin_step, self.end_step

  def seed_at(self, step, index):
    return mask_ops.seed_pair(mask_ops.static_base(self.seed + self.algorithm.seed_offset, self.layer_index, index),
                              step)

  # --- forward ------------------------------------------------------------------------------------------------------
  def call(self, inputs, training=None, **kwargs):
    if training is True and (self._optimizer_ref is None or self._optimizer_ref() is None):
      raise ValueError(
          f"Layer {self.layer.name!r} is being trained, but no optimizer drives its sparse training: pass the "
          "optimizer through tfmot_rigl.keras3.wrap_optimizer(optimizer, model) before compiling or training (a model "
          "loaded with keras.saving.load_model: load it with tfmot_rigl.keras3.load_model, which does that).")
    if getattr(self.layer, "_call_has_training_arg", False):
      kwargs["training"] = training
    return self.layer(inputs, **kwargs)

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update(weight_sparsities=self.weight_sparsities, algorithm=algorithms.serialize(self.algorithm),
                  seed=self.seed, layer_index=self.layer_index, begin_step=self.begin_step, end_step=self.end_step,
                  sparsify_depthwise=self.sparsify_depthwise)
    return config
