"""`prune_sparse` / `strip_sparse` for Keras 3 models: Sequential and functional (cloned), subclassed (in place).

The same arguments and the same per-layer sparsities as tfmot_rigl.keras.prune_sparse (one distribution code path,
tfmot_rigl.core.distributions); the window's fractions of training are resolved by `fit` or by `total_steps`.
"""
import logging
import zlib
from typing import Mapping, Optional, Sequence

import keras
import numpy as np

from tfmot_rigl import algorithms
from tfmot_rigl.core import distributions
from tfmot_rigl.keras3.wrapper import SparseWrapper, prunable_weights

logger = logging.getLogger("tfmot_rigl")


SUPPORTED_BACKENDS = ("tensorflow", "jax")


def check_backend():
  backend = keras.backend.backend()
  if backend not in SUPPORTED_BACKENDS:
    raise ValueError(f"tfmot_rigl.keras3 supports the TensorFlow and JAX backends; Keras runs on {backend!r} "
                     "(not yet supported): set KERAS_BACKEND=tensorflow or jax before importing keras.")


def check_keras3(obj, what="prune_sparse"):
  check_backend()
  if isinstance(obj, keras.layers.Layer):
    return
  module = type(obj).__module__ or ""
  if module.startswith("tf_keras"):
    raise ValueError(f"{what} got a tf_keras (Keras 2) {type(obj).__name__}; use tfmot_rigl.{what} for tf_keras "
                     "models, tfmot_rigl.keras3 for Keras 3 (`import keras`) ones.")
  raise ValueError(f"{what} needs a Keras 3 model or layer, got {type(obj).__name__}.")


def _is_graph_model(model) -> bool:
  return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional" or isinstance(
      model, keras.src.models.functional.Functional)


def _children(layer):
  """Direct sublayers a (subclassed) layer holds, in tracking order."""
  return list(getattr(layer, "_layers", []))


def leaf_layers(model):
  """Layers holding weights of their own, in model order; nested models and custom layers walked through."""
  seen = set()

  def walk(layer):
    for child in _children(layer):
      if id(child) in seen:
        continue
      seen.add(id(child))
      if isinstance(child, SparseWrapper) or prunable_weights(child, True) or not _children(child):
        yield child
      else:
        yield from walk(child)

  yield from walk(model)


def sparse_wrappers(model):
  """Every `SparseWrapper` in `model`, in order."""
  if isinstance(model, SparseWrapper):
    return [model]
  return [layer for layer in leaf_layers(model) if isinstance(layer, SparseWrapper)]


def _sparsifiable(model, exclude, sparsify_depthwise):
  if not model.built:
    raise ValueError(f"Model {model.name!r} is not built; build it (give its input shape) before sparsifying it.")
  layers = list(leaf_layers(model))
  names = [layer.name for layer in layers]
  unknown = sorted(set(exclude) - set(names))
  if unknown:
    raise ValueError(f"exclude names unknown layer(s) {unknown}; layer names of the model are {names}.")
  found = []
  for layer in layers:
    if isinstance(layer, SparseWrapper):
      raise ValueError(f"Layer {layer.name!r} is already wrapped; pass the original (unwrapped) model.")
    weights = prunable_weights(layer, sparsify_depthwise)
    if layer.name in exclude:
      continue
    keys = [layer.name] if len(weights) == 1 else [f"{layer.name}/{i}" for i in range(len(weights))]
    found += [(key, layer.name, tuple(int(d) for d in w.shape)) for key, w in zip(keys, weights)]
  if not found:
    raise ValueError(f"Model {model.name!r} has no sparsifiable layer (Dense, ConvND, SeparableConv, a layer with "
                     "get_prunable_weights(), or DepthwiseConv with sparsify_depthwise=True).")
  return found


def model_sparsities(model, sparsity: float, distribution: str = "erk", erk_power_scale: float = 1.0,
                     custom_sparsities: Optional[Mapping[str, float]] = None, exclude: Sequence[str] = (),
                     first_layer_dense: Optional[bool] = None, sparsify_depthwise: bool = False) -> dict:
  """{name: sparsity} that `prune_sparse` would give the Keras 3 `model` (the tf_keras API's distributions)."""
  found = _sparsifiable(model, exclude, sparsify_depthwise)
  custom = {}
  for name, value in dict(custom_sparsities or {}).items():
    keys = [key for key, layer_name, _ in found if name in (key, layer_name)]
    custom.update({key: value for key in keys} if keys else {name: value})
  return distributions.layer_sparsities({key: shape for key, _, shape in found}, sparsity, distribution,
                                        erk_power_scale=erk_power_scale, custom_sparsities=custom,
                                        first_layer_dense=first_layer_dense)


def _check_knobs(algorithm):
  """Knobs of the tf_keras path that the Keras 3 step does not implement yet: one line each, not a silent ignore."""
  if getattr(algorithm, "initial_sparsity", None) is not None:
    raise ValueError("initial_sparsity (gradual pruning to the target) is not supported by tfmot_rigl.keras3 yet; "
                     "leave it unset (masks at the target sparsity from the start) or use the tf_keras API.")
  if getattr(algorithm, "initial_acc_scale", 0.0):
    raise ValueError("RigL initial_acc_scale is not supported by tfmot_rigl.keras3 yet (new connections' optimizer "
                     "slots start at zero); leave it at 0 or use the tf_keras API.")


def _window(algorithm, total_steps):
  """(begin, end), or (None, None) while a fraction waits for fit to give the number of steps."""
  if not (algorithm.dynamic or algorithm.name == "magnitude"):
    return 0, 0
  if total_steps is None and any(isinstance(v, float) and not (v > 1 and v.is_integer())
                                 for v in (algorithm.begin_step, algorithm.end_step)):
    return None, None
  return algorithm.window(total_steps)


def resolve_window(model, total_steps):
  """Gives wrappers still waiting for the number of training steps their window (called when fit starts)."""
  for wrapper in sparse_wrappers(model):
    if wrapper.begin_step is None or wrapper.end_step is None:
      wrapper.begin_step, wrapper.end_step = wrapper.algorithm.window(total_steps)


class ResolveWindow(keras.callbacks.Callback):
  """Added to `fit` by prune_sparse: turns fractional windows into steps from epochs × steps per epoch."""

  def __init__(self, sparse_model):
    super().__init__()
    self._sparse_model = sparse_model

  def on_epoch_end(self, epoch, logs=None):
    for wrapper in sparse_wrappers(self._sparse_model):  # after fit's own state sync (JAX)
      wrapper.sync_from_optimizer()

  def on_train_end(self, logs=None):
    self.on_epoch_end(None)

  def on_train_begin(self, logs=None):
    pending = [w for w in sparse_wrappers(self._sparse_model) if w.begin_step is None or w.end_step is None]
    if not pending:
      return
    steps, epochs = self.params.get("steps"), self.params.get("epochs") or 1
    if not steps:
      raise ValueError("The update window is a fraction of training, but fit does not know its steps per epoch "
                       "(a dataset of unknown length): pass steps_per_epoch to fit, or total_steps to prune_sparse.")
    resolve_window(self._sparse_model, int(steps) * int(epochs))


def install_fit_hook(model):
  """`model.fit` resolves fractional windows when it starts (an instance attribute; nothing is serialised)."""
  if "fit" in vars(model):
    return
  original = model.fit

  def fit(*args, **kwargs):
    if len(args) > 5:  # callbacks passed positionally (x, y, batch_size, epochs, verbose, callbacks, ...)
      args = list(args)
      args[5] = list(args[5] or []) + [ResolveWindow(model)]
    else:
      kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [ResolveWindow(model)]
    return original(*args, **kwargs)

  fit.__doc__ = original.__doc__
  object.__setattr__(model, "fit", fit)


def _replace_layers(model, replacements):
  """Puts replacements[id(layer)] wherever a (subclassed) layer tree holds `layer`: attributes, lists, `_layers`."""
  seen = set()

  def visit(owner):
    if id(owner) in seen:
      return
    seen.add(id(owner))
    layers = getattr(owner, "_layers", None)
    if isinstance(layers, list):
      for i, child in enumerate(layers):
        if id(child) in replacements:
          list.__setitem__(layers, i, replacements[id(child)])
    for name, value in list(vars(owner).items()):
      if isinstance(value, keras.layers.Layer) and id(value) in replacements:
        object.__setattr__(owner, name, replacements[id(value)])
      elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
          if isinstance(item, keras.layers.Layer) and id(item) in replacements and isinstance(value, list):
            list.__setitem__(value, i, replacements[id(item)])
    for child in list(getattr(owner, "_layers", [])):
      if not isinstance(child, SparseWrapper):
        visit(child)

  visit(model)


def prune_sparse(to_prune, algorithm=None, sparsity: float = 0.9, distribution: str = "erk",
                 erk_power_scale: float = 1.0, custom_sparsities: Optional[Mapping[str, float]] = None,
                 exclude: Sequence[str] = (), first_layer_dense: Optional[bool] = None,
                 sparsify_depthwise: bool = False, seed: int = 0, total_steps: Optional[int] = None):
  """A Keras 3 model (or layer) set up for sparse training; the arguments of tfmot_rigl.prune_sparse.

  Sequential and functional models are cloned (layers shared, prunable ones wrapped in `SparseWrapper`); subclassed
  models have their prunable layers wrapped in place. Train with an optimizer passed through `wrap_optimizer`.
  """
  check_keras3(to_prune)
  algorithm = algorithms.as_algorithm(algorithm)
  _check_knobs(algorithm)
  begin, end = _window(algorithm, total_steps)
  if not isinstance(to_prune, keras.Model):
    if algorithm.name == "dense" or not sparsity:
      return to_prune
    distributions.check_sparsity(sparsity)
    wrapper = SparseWrapper(to_prune, [float(sparsity)], algorithm, seed, zlib.crc32(to_prune.name.encode()) % 65536,
                            begin, end, sparsify_depthwise)
    if to_prune.built:
      wrapper.build(None)
    return wrapper
  model = to_prune
  sparsities = model_sparsities(model, sparsity, distribution, erk_power_scale, custom_sparsities, exclude,
                                first_layer_dense, sparsify_depthwise)
  if algorithm.name == "dense":
    object.__setattr__(model, "_tfmot_rigl_dense", True)
    return model
  per_layer = {}
  for key, layer_name, _ in _sparsifiable(model, exclude, sparsify_depthwise):
    per_layer.setdefault(layer_name, []).append(sparsities[key])
  left_dense = [name for name, values in per_layer.items() if not any(values)]
  if left_dense:
    logger.info("%d sparsifiable layers left dense by the distribution or custom_sparsities: %s.",
                len(left_dense), ", ".join(left_dense))
  index_of = {name: i for i, name in enumerate(per_layer)}

  def wrap(layer):
    if isinstance(layer, keras.Model) and _is_graph_model(layer):
      return keras.models.clone_model(layer, clone_function=wrap)
    values = per_layer.get(layer.name)
    if not values or not any(values):
      return layer
    return SparseWrapper(layer, values, algorithm, seed, index_of[layer.name], begin, end, sparsify_depthwise)

  if _is_graph_model(model):
    sparse_model = keras.models.clone_model(model, clone_function=wrap)
  else:
    replacements = {}
    for layer in leaf_layers(model):
      wrapper = wrap(layer)
      if wrapper is not layer:
        wrapper.build(None)
        replacements[id(layer)] = wrapper
    _replace_layers(model, replacements)
    sparse_model = model
  install_fit_hook(sparse_model)
  return sparse_model


def strip_sparse(model):
  """The plain model with the final sparse weights (kernels times masks); subclassed models are stripped in place."""
  if isinstance(model, SparseWrapper):
    _apply_masks(model)
    return model.layer
  check_keras3(model, "strip_sparse")
  wrappers = sparse_wrappers(model)
  for wrapper in wrappers:
    _apply_masks(wrapper)
  if not _is_graph_model(model):
    _replace_layers(model, {id(w): w.layer for w in wrappers})
    return model

  def unwrap(layer):
    if isinstance(layer, SparseWrapper):
      return layer.layer
    if isinstance(layer, keras.Model) and _is_graph_model(layer):
      return keras.models.clone_model(layer, clone_function=unwrap)
    return layer

  return keras.models.clone_model(model, clone_function=unwrap)


def _apply_masks(wrapper):
  wrapper.sync_from_optimizer()
  for kernel, mask in zip(wrapper.kernels, wrapper.masks):
    kernel.assign(keras.ops.convert_to_tensor(kernel) * keras.ops.cast(mask, kernel.dtype))


def layer_masks(model) -> dict:
  """{layer name (/index): mask as NumPy} of every sparse layer."""
  out = {}
  for wrapper in sparse_wrappers(model):
    wrapper.sync_from_optimizer()
    for index, mask in enumerate(wrapper.masks):
      key = wrapper.layer.name if len(wrapper.masks) == 1 else f"{wrapper.layer.name}/{index}"
      out[key] = np.asarray(keras.ops.convert_to_numpy(mask))
  return out
