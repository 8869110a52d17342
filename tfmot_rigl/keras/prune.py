"""`prune_sparse`: the one-call API, in the style of `tfmot.sparsity.keras.prune_low_magnitude`."""
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl import algorithms
from tfmot_rigl.core import distributions
from tfmot_rigl.keras.schedule import SparseSchedule
from tfmot_rigl.keras.wrapper import SparseWrapper


@keras.utils.register_keras_serializable(package="tfmot_rigl")
class SparsifiableDepthwiseConv2D(keras.layers.DepthwiseConv2D, prunable_layer.PrunableLayer):
  """DepthwiseConv2D whose depthwise kernel can be sparsified (TFMOT's registry keeps depthwise kernels dense)."""

  def get_prunable_weights(self):
    return [self.depthwise_kernel]


def sparse_wrappers(model):
  """Every TFMOT pruning wrapper in `model` (ours and TFMOT's own), nested models included, in model order."""
  return pruning_wrapper.collect_prunable_layers(model)


def _prunable_weights(layer, sparsify_depthwise):
  """The weights of `layer` that sparse training would mask (empty if none)."""
  if isinstance(layer, keras.layers.DepthwiseConv2D) and not isinstance(layer, keras.layers.SeparableConv2D):
    return [layer.depthwise_kernel] if sparsify_depthwise else []
  if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
    return list(layer.get_prunable_weights())
  if prune_registry.PruneRegistry.supports(layer):
    return [getattr(layer, name) for name in prune_registry.PruneRegistry._weight_names(layer)]
  return []


def _leaf_layers(model):
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _leaf_layers(layer)
    else:
      yield layer


def _weight_key(layer, weights, weight):
  """Distribution key of one prunable weight: the layer name, or "layer/weight" for layers with several."""
  if len(weights) == 1:
    return layer.name
  return f"{layer.name}/{weight.name.split(':')[0].removeprefix(layer.name + '/')}"


def _sparsifiable_weights(model, exclude, sparsify_depthwise):
  """[(key, layer name, kernel shape)] of every weight `prune_sparse` would sparsify, in model order."""
  if not model.built:
    raise ValueError(f"Model {model.name!r} is not built; build it (give its input shape) before sparsifying it.")
  found = []
  names = [layer.name for layer in _leaf_layers(model)]
  unknown = sorted(set(exclude) - set(names))
  if unknown:
    raise ValueError(f"exclude names unknown layer(s) {unknown}; layer names of the model are {names}.")
  for layer in _leaf_layers(model):
    if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
      raise ValueError(f"Layer {layer.name!r} is already wrapped for pruning; pass the original (unwrapped) model.")
    weights = _prunable_weights(layer, sparsify_depthwise)
    if layer.name not in exclude:
      keys = [_weight_key(layer, weights, w) for w in weights]
      if len(set(keys)) < len(keys):  # sublayers built without their own name scope: number the weights instead
        keys = [f"{layer.name}/{index}" for index in range(len(weights))]
      found += [(key, layer.name, tuple(w.shape)) for key, w in zip(keys, weights)]
  if not found:
    raise ValueError(f"Model {model.name!r} has no sparsifiable layer (Dense, ConvND, SeparableConv, a PrunableLayer, "
                     "or DepthwiseConv2D with sparsify_depthwise=True).")
  keys = [key for key, _, _ in found]
  duplicated = sorted({key for key in keys if keys.count(key) > 1})
  if duplicated:
    raise ValueError(f"Several sparsifiable weights share the name(s) {duplicated}; give the layers unique names.")
  return found


def sparsifiable_shapes(model, exclude: Sequence[str] = (), sparsify_depthwise: bool = False) -> dict:
  """Ordered {name: kernel shape} of the weights `prune_sparse` would sparsify (names as in `model_sparsities`)."""
  return {key: shape for key, _, shape in _sparsifiable_weights(model, exclude, sparsify_depthwise)}


def model_sparsities(model, sparsity: float, distribution: str = "erk", erk_power_scale: float = 1.0,
                     custom_sparsities: Optional[Mapping[str, float]] = None, exclude: Sequence[str] = (),
                     first_layer_dense: Optional[bool] = None, sparsify_depthwise: bool = False) -> dict:
  """{name: sparsity} that `prune_sparse` would give `model`, without changing it.

  Names are layer names; a layer with several prunable weights (e.g. a residual block) has one entry per weight,
  "layer/weight". `custom_sparsities` may name either; a layer name covers all of that layer's weights.
  """
  found = _sparsifiable_weights(model, exclude, sparsify_depthwise)
  custom = {}
  for name, value in dict(custom_sparsities or {}).items():
    keys = [key for key, layer_name, _ in found if name in (key, layer_name)]
    custom.update({key: value for key in keys} if keys else {name: value})  # unknown names: the error below
  return distributions.layer_sparsities(
      {key: shape for key, _, shape in found}, sparsity, distribution, erk_power_scale=erk_power_scale,
      custom_sparsities=custom, first_layer_dense=first_layer_dense)


def prune_sparse(model, algorithm=None, sparsity: float = 0.9, distribution: str = "erk",
                 erk_power_scale: float = 1.0, custom_sparsities: Optional[Mapping[str, float]] = None,
                 exclude: Sequence[str] = (), first_layer_dense: Optional[bool] = None,
                 sparsify_depthwise: bool = False, seed: int = 0, total_steps: Optional[int] = None):
  """Returns a clone of `model` set up for sparse training with `algorithm`.

  Each sparsifiable layer with non-zero sparsity is wrapped: in `SparseWrapper` (a TFMOT `PruneLowMagnitude`) for the
  sparse-from-scratch methods, in TFMOT's own wrapper and PolynomialDecay schedule for `Magnitude`. Layers keep their
  weights (shared with `model`, as TFMOT's `prune_low_magnitude` does). Train with an optimizer passed through
  `wrap_optimizer(optimizer, model)`.

  Args:
    model: a built Sequential or functional tf_keras model (nested models are handled).
    algorithm: a `SparseAlgorithm` (RigL(), SET(), Static(), SNFS(), SNIP(), Magnitude(), Dense()) or a method name.
    sparsity: global fraction of zeros over the sparsified layers, in [0, 1).
    distribution: "uniform", "er" or "erk".
    erk_power_scale: softens ERK when < 1.
    custom_sparsities: {layer name: sparsity} overriding the distribution (0 keeps a layer dense).
    exclude: layer names never sparsified.
    first_layer_dense: keep the first sparsifiable layer dense (default: True for uniform, False for er/erk).
    sparsify_depthwise: also sparsify DepthwiseConv2D kernels (kept dense by default, as in the reference).
    seed: seeds initial masks and every random draw of the updates (stateless, so replicas agree).
    total_steps: training steps, needed when begin_step/end_step are fractions (end_step defaults to 0.75).
  """
  if algorithm is None:
    algorithm = algorithms.RigL()
  elif isinstance(algorithm, str):
    algorithm = algorithms.make_algorithm(algorithm)
  elif not isinstance(algorithm, algorithms.SparseAlgorithm):
    raise ValueError(f"algorithm={algorithm!r} is not a sparse training algorithm; pass e.g. tfmot_rigl.RigL() or a "
                     f"method name ({', '.join(algorithms.algorithm_names())}).")
  if not isinstance(model, keras.Model) or not (isinstance(model, keras.Sequential) or model._is_graph_network):
    raise ValueError(f"prune_sparse needs a tf_keras Sequential or functional model, got {type(model).__name__}; "
                     "subclassed models are not supported by TFMOT's wrappers.")
  sparsities = model_sparsities(model, sparsity, distribution, erk_power_scale, custom_sparsities, exclude,
                                first_layer_dense, sparsify_depthwise)
  per_layer = {}  # layer name -> [(sparsity, size)] of its prunable weights, in order
  for key, layer_name, shape in _sparsifiable_weights(model, exclude, sparsify_depthwise):
    per_layer.setdefault(layer_name, []).append((sparsities[key], float(np.prod(shape))))
  if not algorithm.uses_masks and algorithm.name == "dense":
    return model
  begin, end = algorithm.window(total_steps) if algorithm.dynamic or algorithm.name == "magnitude" else (0, 0)
  layer_index = {name: i for i, name in enumerate(per_layer)}
  replaced = []  # (original layer, replacement) whose weights must be copied once the clone is built

  def wrap(layer):
    if isinstance(layer, keras.Model):
      return keras.models.clone_model(layer, input_tensors=None, clone_function=wrap)
    weight_sparsities = [s for s, _ in per_layer.get(layer.name, [])]
    if not any(weight_sparsities):
      return layer
    # The schedule carries the layer's parameter-weighted sparsity (what TFMOT's summaries report for it).
    layer_sparsity = float(sum(s * n for s, n in per_layer[layer.name]) / sum(n for _, n in per_layer[layer.name]))
    if algorithm.name == "magnitude":
      return pruning_wrapper.PruneLowMagnitude(layer, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(
          initial_sparsity=0.0, final_sparsity=layer_sparsity, begin_step=begin, end_step=end,
          power=algorithm.power, frequency=algorithm.update_frequency))
    if type(layer) is keras.layers.DepthwiseConv2D:
      original, layer = layer, SparsifiableDepthwiseConv2D.from_config(layer.get_config())
      replaced.append((original, layer))
    schedule = SparseSchedule(layer_sparsity, begin_step=begin, end_step=end,
                              update_frequency=algorithm.update_frequency,
                              drop_fraction=algorithm.drop_fraction,
                              drop_fraction_anneal=algorithm.drop_fraction_anneal)
    return SparseWrapper(layer, schedule, algorithm=algorithm, seed=seed, layer_index=layer_index[layer.name],
                         weight_sparsities=weight_sparsities if len(weight_sparsities) > 1 else None)

  sparse_model = keras.models.clone_model(model, input_tensors=None, clone_function=wrap)
  for original, replacement in replaced:
    replacement.set_weights(original.get_weights())
  for wrapper in sparse_wrappers(sparse_model):
    for weight, mask, _ in wrapper.pruning_vars:
      weight.assign(weight * tf.cast(mask, weight.dtype))
    # TFMOT's wrapper counts steps from -1 and asserts >= 1 after its first increment; start it where its
    # UpdatePruningStep callback would (the optimizer's step), so neither fit nor custom loops need that callback.
    wrapper.pruning_step.assign(0)
  return sparse_model


def strip_sparse(model):
  """A plain model with the final sparse weights: masks applied, then TFMOT's `strip_pruning`."""
  for wrapper in sparse_wrappers(model):
    for weight, mask, _ in wrapper.pruning_vars:
      weight.assign(weight * tf.cast(mask, weight.dtype))
  return tfmot.sparsity.keras.strip_pruning(model)


def sparse_scope():
  """Custom-object scope for loading models saved with sparse wrappers (like `tfmot.sparsity.keras.prune_scope`)."""
  return keras.utils.custom_object_scope({"SparseWrapper": SparseWrapper, "SparseSchedule": SparseSchedule,
                                          "PruneLowMagnitude": pruning_wrapper.PruneLowMagnitude,
                                          "SparsifiableDepthwiseConv2D": SparsifiableDepthwiseConv2D})
