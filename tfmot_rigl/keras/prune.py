"""`prune_sparse`: the one-call API, in the style of `tfmot.sparsity.keras.prune_low_magnitude`.

Like TFMOT's function it takes a Sequential or functional model (returning a clone) or a single layer (returning it
wrapped, to build into a model); it also takes subclassed models, whose prunable layers it wraps in place.
"""
import zlib
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
from tfmot_rigl.keras import attach
from tfmot_rigl.keras import gradual as gradual_start
from tfmot_rigl.keras import initial_masks
from tfmot_rigl.keras import subclassed
from tfmot_rigl.keras import training_steps
from tfmot_rigl.keras.log import logger
from tfmot_rigl.keras.schedule import MagnitudeSchedule
from tfmot_rigl.keras.schedule import SparseSchedule
from tfmot_rigl.keras.wrapper import SparseWrapper
from tfmot_rigl.keras.wrapper import note_kernels_not_tiled


@keras.utils.register_keras_serializable(package="tfmot_rigl")
class SparsifiableDepthwiseConv2D(keras.layers.DepthwiseConv2D, prunable_layer.PrunableLayer):
  """DepthwiseConv2D whose depthwise kernel can be sparsified (TFMOT's registry keeps depthwise kernels dense)."""

  def get_prunable_weights(self):
    return [self.depthwise_kernel]


def sparse_wrappers(model):
  """Every TFMOT pruning wrapper in `model` (ours and TFMOT's own), nested models and layers included, in order."""
  if not _is_graph_model(model):
    return [layer for layer in _leaf_layers(model) if isinstance(layer, pruning_wrapper.PruneLowMagnitude)]
  return training_steps.pruning_wrapper_layers(model)


def _is_graph_model(model) -> bool:
  return isinstance(model, keras.Sequential) or bool(getattr(model, "_is_graph_network", False))


def check_tf_keras(obj, what="prune_sparse") -> None:
  """One clear line for objects that are not tf_keras models or layers (Keras 3 ones in particular)."""
  if isinstance(obj, keras.layers.Layer):
    return
  module = type(obj).__module__ or ""
  if module.split(".")[0] == "keras":
    raise ValueError(
        f"{what} got a Keras 3 {type(obj).__name__} ({module}); this API (TFMOT's) works with Keras 2 (tf_keras). "
        f"For Keras 3 models use the Keras 3 API: `from tfmot_rigl import keras3` and keras3.{what}(...); or build "
        "the model with `import tf_keras as keras` (import tfmot_rigl before tensorflow so that tf.keras is tf_keras).")
  raise ValueError(f"{what} needs a tf_keras model or layer, got {type(obj).__name__}.")


def _prunable_weights(layer, sparsify_depthwise):
  """The weights of `layer` that sparse training would mask (empty if none)."""
  if isinstance(layer, keras.layers.DepthwiseConv2D) and not isinstance(layer, keras.layers.SeparableConv2D):
    return [layer.depthwise_kernel] if sparsify_depthwise else []
  if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
    return list(layer.get_prunable_weights())
  registry = prune_registry.PruneRegistry
  if registry.supports(layer) and (registry._is_rnn_layer(layer) or registry._is_mha_layer(layer)):
    # RNNs (LSTM, GRU, …: their cells' kernels) and attention: the weights TFMOT's own make_prunable gives them.
    return list(registry.make_prunable(layer).get_prunable_weights())
  if registry.supports(layer):
    return [getattr(layer, name) for name in registry._weight_names(layer)]
  return []


def _leaf_layers(model):
  if not _is_graph_model(model):
    yield from subclassed.leaf_layers(model, is_leaf=lambda layer: isinstance(
        layer, pruning_wrapper.PruneLowMagnitude) or bool(_prunable_weights(layer, True)))
    return
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


def _kernel_layers(model):
  """Leaf layers holding a kernel (what a reader counts as a conv/dense layer)."""
  return [layer for layer in _leaf_layers(model)
          if any(hasattr(layer, name) for name in ("kernel", "depthwise_kernel", "pointwise_kernel"))
          or _prunable_weights(layer, True)]


def dense_layers_and_why(model, sparsities, exclude=(), sparsify_depthwise=False) -> dict:
  """{layer name: reason} for every kernel-bearing layer of `model` that `prune_sparse` leaves dense."""
  reasons = {}
  wrapped = {key.split("/")[0] for key, value in sparsities.items() if value > 0}
  for layer in _kernel_layers(model):
    if layer.name in wrapped:
      continue
    if layer.name in exclude:
      reasons[layer.name] = "excluded"
    elif isinstance(layer, keras.layers.DepthwiseConv2D) and not sparsify_depthwise and not isinstance(
        layer, keras.layers.SeparableConv2D):
      reasons[layer.name] = "depthwise (sparsify_depthwise=False)"
    elif not _prunable_weights(layer, sparsify_depthwise):
      reasons[layer.name] = f"{type(layer).__name__} is not prunable (no TFMOT PrunableLayer)"
    else:
      reasons[layer.name] = "at sparsity 0 from the distribution (small or first layer) or custom_sparsities"
  return reasons


def dense_summary_line(reasons: dict, total: int) -> str:
  """One line: how many kernel-bearing layers stay dense, grouped by reason, with a few names each."""
  by_reason = {}
  for name, reason in reasons.items():
    by_reason.setdefault(reason, []).append(name)
  parts = []
  for reason, names in by_reason.items():
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    parts.append(f"{len(names)} {reason} [{shown}]")
  return f"{len(reasons)} of {total} conv/dense layers left dense: " + "; ".join(parts) + "."


def _layer_seed_index(layer) -> int:
  # A layer wrapped on its own has no position among a model's layers; its name keeps its random draws distinct.
  return zlib.crc32(layer.name.encode()) % (1 << 16)


def _make_wrapper(layer, algorithm, layer_sparsity, begin, end, seed, layer_index, weight_sparsities=None,
                  gradual=None, initial_mask="random"):
  """The pruning wrapper of one layer: TFMOT's own for Magnitude, ours for the sparse-from-scratch methods.

  `gradual`: (layer's initial sparsity, prune_end, initial weight sparsities or None) for gradual pruning. A
  fractional step (a `PendingStep`) stays in the schedule until fit resolves it (training_steps.before_fit)."""
  initial_sparsity, prune_end, initial_weight_sparsities = gradual or (None, 0, None)
  if algorithm.name == "magnitude":
    # From initial_sparsity (0: dense) to the target; from a magnitude or checkpoint mask the schedule holds the target.
    schedule = MagnitudeSchedule(
        initial_sparsity=min(algorithm.initial_sparsity or 0.0, layer_sparsity) if initial_mask == "random"
        else layer_sparsity, final_sparsity=layer_sparsity, begin_step=begin, end_step=end, power=algorithm.power,
        frequency=algorithm.update_frequency)
    # TFMOT's block pruning takes 2-D kernels only: Dense layers get the blocks, others stay unstructured.
    block_size = algorithm.block_shape if isinstance(layer, keras.layers.Dense) else (1, 1)
    wrapper = pruning_wrapper.PruneLowMagnitude(layer, pruning_schedule=schedule, block_size=block_size,
                                                block_pooling_type="AVG")
    initial_masks.mark(wrapper, initial_mask)
    attach.guard_magnitude_wrapper(wrapper)
    return wrapper
  schedule = SparseSchedule(layer_sparsity, begin_step=begin, end_step=end, update_frequency=algorithm.update_frequency,
                            drop_fraction=algorithm.drop_fraction, drop_fraction_anneal=algorithm.drop_fraction_anneal,
                            initial_sparsity=initial_sparsity, prune_end=prune_end)
  return SparseWrapper(layer, schedule, algorithm=algorithm, seed=seed, layer_index=layer_index,
                       weight_sparsities=weight_sparsities, initial_weight_sparsities=initial_weight_sparsities,
                       initial_mask=initial_mask)


def _start(wrappers):
  initial_masks.reset_masks(wrappers)  # masks from the weights the layers hold (magnitude), weights masked
  for wrapper in wrappers:
    if isinstance(wrapper, SparseWrapper):  # TFMOT's own (Magnitude) keeps -1 until something drives it (attach.py)
      wrapper.pruning_step.assign(0)


def prune_sparse(to_prune, algorithm=None, sparsity: float = 0.9, distribution: str = "erk",
                 erk_power_scale: float = 1.0, custom_sparsities: Optional[Mapping[str, float]] = None,
                 exclude: Sequence[str] = (), first_layer_dense: Optional[bool] = None,
                 sparsify_depthwise: bool = False, seed: int = 0, total_steps: Optional[int] = None,
                 initial_mask: str = "random"):
  """`model` (or one layer) set up for sparse training with `algorithm`, as TFMOT's `prune_low_magnitude` does.

  Each sparsifiable layer with non-zero sparsity is wrapped: in `SparseWrapper` (a TFMOT `PruneLowMagnitude`) for the
  sparse-from-scratch methods, in TFMOT's own wrapper and PolynomialDecay schedule for `Magnitude`. Layers keep their
  weights (shared with `model`, as TFMOT's `prune_low_magnitude` does). Train with an optimizer passed through
  `wrap_optimizer(optimizer, model)`. One summary line (logger "tfmot_rigl") names the conv/dense layers left dense
  and why.

  Args:
    to_prune: a built tf_keras model — Sequential or functional (a clone is returned; nested models are handled) or
      subclassed (the layers it holds as attributes, nested ones too, are wrapped in place and the model returned)
      — or one layer, returned wrapped at `sparsity` (to build into a model, like `prune_low_magnitude(layer)`).
    algorithm: a `SparseAlgorithm` (RigL(), SET(), Static(), SNFS(), SNIP(), Magnitude(), Dense()) or a method name.
    sparsity: global fraction of zeros over the sparsified layers, in [0, 1).
    distribution: "uniform", "er" or "erk".
    erk_power_scale: softens ERK when < 1.
    custom_sparsities: {layer name: sparsity} overriding the distribution (0 keeps a layer dense).
    exclude: layer names never sparsified.
    first_layer_dense: keep the first sparsifiable layer dense (default: True for uniform, False for er/erk).
    sparsify_depthwise: also sparsify DepthwiseConv2D kernels (kept dense by default, as in the reference).
    seed: seeds initial masks and every random draw of the updates (stateless, so replicas agree).
    total_steps: training steps that fractional begin_step/end_step (end_step defaults to 0.75) refer to. Not
      needed with `model.fit`, which resolves them from epochs × steps per epoch when it starts; custom training
      loops pass it.
    initial_mask: "random" (the paper's start), "magnitude" (each layer keeps its largest |W|, for pretrained weights,
      which are kept) or "checkpoint" (masks of `tfmot_rigl.load_pretrained`); see keras/initial_masks.py.
  """
  check_tf_keras(to_prune)
  algorithm = algorithms.as_algorithm(algorithm)
  initial_masks.check_initial_mask(initial_mask, algorithm)
  if not isinstance(to_prune, keras.Model):
    return _prune_layer(to_prune, algorithm, sparsity, sparsify_depthwise, seed, total_steps, initial_mask)
  model = to_prune
  sparsities = model_sparsities(model, sparsity, distribution, erk_power_scale, custom_sparsities, exclude,
                                first_layer_dense, sparsify_depthwise)
  initial = gradual_start.initial_sparsities(algorithm, sparsity, lambda start: model_sparsities(
      model, start, distribution, erk_power_scale, custom_sparsities, exclude, first_layer_dense, sparsify_depthwise))
  left_dense = dense_layers_and_why(model, sparsities, exclude, sparsify_depthwise)
  if left_dense and algorithm.name != "dense":
    logger.info("%s", dense_summary_line(left_dense, len(_kernel_layers(model))))
  per_layer = {}  # layer name -> [(sparsity, size)] of its prunable weights, in order
  for key, layer_name, shape in _sparsifiable_weights(model, exclude, sparsify_depthwise):
    per_layer.setdefault(layer_name, []).append((sparsities[key], float(np.prod(shape)), initial.get(key)))
  if not algorithm.uses_masks and algorithm.name == "dense":
    # Marked, so wrap_optimizer passes the optimizer through: code written once for every method runs on dense.
    object.__setattr__(model, "_tfmot_rigl_dense", True)
    return model
  begin, end = (training_steps.window_or_pending(algorithm, total_steps)
                if algorithm.dynamic or algorithm.name == "magnitude" else (0, 0))
  prune_end = training_steps.prune_end_or_pending(algorithm, total_steps) if algorithm.gradual else 0
  layer_index = {name: i for i, name in enumerate(per_layer)}
  replaced = []  # (original layer, replacement) whose weights must be copied once the clone is built

  def wrap(layer):
    if isinstance(layer, keras.Model) and _is_graph_model(layer):
      return keras.models.clone_model(layer, input_tensors=None, clone_function=wrap)
    weight_sparsities = [s for s, _, _ in per_layer.get(layer.name, [])]
    if not any(weight_sparsities):
      return layer
    # The schedule carries the layer's parameter-weighted sparsity (what TFMOT's summaries report for it).
    layer_sparsity = float(sum(s * n for s, n, _ in per_layer[layer.name]) / sum(n for _, n, _ in per_layer[layer.name]))
    gradual = gradual_start.layer_start(algorithm, per_layer[layer.name], prune_end)
    if algorithm.name != "magnitude" and type(layer) is keras.layers.DepthwiseConv2D:
      original, layer = layer, SparsifiableDepthwiseConv2D.from_config(layer.get_config())
      replaced.append((original, layer))
    return _make_wrapper(layer, algorithm, layer_sparsity, begin, end, seed, layer_index[layer.name],
                         weight_sparsities if len(weight_sparsities) > 1 else None, gradual, initial_mask)

  if _is_graph_model(model):
    sparse_model = keras.models.clone_model(model, input_tensors=None, clone_function=wrap)
    for original, replacement in replaced:
      replacement.set_weights(original.get_weights())
  else:
    sparse_model = _wrap_in_place(model, wrap, replaced)
  _start(sparse_wrappers(sparse_model))
  note_kernels_not_tiled(sparse_wrappers(sparse_model), algorithm)
  if total_steps and (algorithm.dynamic or algorithm.name == "magnitude"):
    training_steps.check_update_count(algorithm, begin, end, total_steps)
  training_steps.resolve_in_fit(sparse_model)
  return sparse_model


def _wrap_in_place(model, wrap, replaced):
  """Wraps the prunable layers a subclassed `model` holds (see tfmot_rigl.keras.subclassed); returns `model`."""
  replacements = {}
  for layer in _leaf_layers(model):
    wrapper = wrap(layer)
    if wrapper is not layer:
      replacements[id(layer)] = wrapper
  subclassed.replace_layers(model, replacements)
  for wrapper in replacements.values():
    if not wrapper.built:  # the wrapped layer is built already, so the shape is not used
      wrapper.build(None)
  for original, replacement in replaced:
    replacement.build(original.input_spec.shape if original.input_spec else None)
    replacement.set_weights(original.get_weights())
  return model


def _can_sparsify(layer, sparsify_depthwise) -> bool:
  if layer.built:
    return bool(_prunable_weights(layer, sparsify_depthwise))
  if isinstance(layer, keras.layers.DepthwiseConv2D) and not isinstance(layer, keras.layers.SeparableConv2D):
    return sparsify_depthwise
  if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
    return True
  return prune_registry.PruneRegistry.supports(layer) and bool(prune_registry.PruneRegistry._weight_names(layer))


def _prune_layer(layer, algorithm, sparsity, sparsify_depthwise, seed, total_steps, initial_mask="random"):
  """One layer wrapped at `sparsity`, like `prune_low_magnitude(layer)`; the model built from it trains as usual."""
  if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
    raise ValueError(f"Layer {layer.name!r} is already wrapped for pruning; pass the original layer.")
  if algorithm.name == "dense" or not sparsity:
    return layer
  if not _can_sparsify(layer, sparsify_depthwise):
    raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) has no sparsifiable weight; sparsify Dense, "
                     "ConvND, SeparableConv, a PrunableLayer, or DepthwiseConv2D with sparsify_depthwise=True.")
  if type(layer) is keras.layers.DepthwiseConv2D:
    if layer.built:
      raise ValueError(f"Layer {layer.name!r}: wrap a DepthwiseConv2D before it is built.")
    layer = SparsifiableDepthwiseConv2D.from_config(layer.get_config())
  begin, end = (training_steps.window_or_pending(algorithm, total_steps)
                if algorithm.dynamic or algorithm.name == "magnitude" else (0, 0))
  distributions.check_sparsity(sparsity)
  gradual_start.initial_sparsities(algorithm, sparsity, None)  # checks initial_sparsity <= sparsity
  gradual = (gradual_start.layer_start(algorithm, [(sparsity, 1.0, algorithm.initial_sparsity)],
                                       training_steps.prune_end_or_pending(algorithm, total_steps))
             if algorithm.gradual else None)
  wrapper = _make_wrapper(layer, algorithm, float(sparsity), begin, end, seed, _layer_seed_index(layer),
                          gradual=gradual, initial_mask=initial_mask)
  if layer.built:
    wrapper.build(None)
    _start([wrapper])
    note_kernels_not_tiled([wrapper], algorithm)
  return wrapper


def strip_sparse(model):
  """A plain model with the final sparse weights: masks applied, then TFMOT's `strip_pruning`.

  Subclassed models are stripped in place (their wrappers replaced by the wrapped layers) and returned.
  """
  check_tf_keras(model, "strip_sparse")
  wrappers = sparse_wrappers(model) if isinstance(model, keras.Model) else (
      [model] if isinstance(model, pruning_wrapper.PruneLowMagnitude) else [])
  for wrapper in wrappers:
    for weight, mask, _ in wrapper.pruning_vars:
      weight.assign(weight * tf.cast(mask, weight.dtype))
  if not isinstance(model, keras.Model):
    return model.layer if isinstance(model, pruning_wrapper.PruneLowMagnitude) else model
  if not _is_graph_model(model):
    subclassed.replace_layers(model, {id(wrapper): wrapper.layer for wrapper in wrappers})
    return model
  return tfmot.sparsity.keras.strip_pruning(model)


def sparse_scope():
  """Custom-object scope for loading models saved with sparse wrappers (like `tfmot.sparsity.keras.prune_scope`)."""
  return keras.utils.custom_object_scope({"SparseWrapper": SparseWrapper, "SparseSchedule": SparseSchedule,
                                          "MagnitudeSchedule": MagnitudeSchedule,
                                          "PruneLowMagnitude": pruning_wrapper.PruneLowMagnitude,
                                          "SparsifiableDepthwiseConv2D": SparsifiableDepthwiseConv2D})
