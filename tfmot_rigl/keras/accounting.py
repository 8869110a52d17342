"""Turns a tf_keras model (plain, TFMOT-wrapped or tfmot_rigl-wrapped) into the core accounting's `LayerOp`s.

The model is run once, eagerly, on one all-zeros example while every counted layer records what it was called with.
Tracing the real call, rather than reading a functional graph, gives the true shape at every layer, including layers
inside subclassed blocks (Model Garden's ResNet blocks, for instance), and shows which batch norms read a conv's
output directly and can therefore be folded into it. Only Keras layers are seen: raw TensorFlow ops in a custom
layer's `call` are not counted (their cost is small next to the convolutions and dense layers).
"""
import dataclasses
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl.core import accounting
from tfmot_rigl.keras import gradual as gradual_accounting

_L = keras.layers
_TRANSPOSED_CONVS = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_SEPARABLE_CONVS = (_L.SeparableConv1D, _L.SeparableConv2D)
_DEPTHWISE_CONVS = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_CONVS = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_WEIGHTED = _SEPARABLE_CONVS + _DEPTHWISE_CONVS + _CONVS + (_L.Dense,)
_BATCH_NORMS = (_L.BatchNormalization, _L.experimental.SyncBatchNormalization)
_GLOBAL_AVG = (_L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D)
_GLOBAL_MAX = (_L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D)
_AVG_POOL = (_L.AveragePooling1D, _L.AveragePooling2D, _L.AveragePooling3D)
_MAX_POOL = (_L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D)
_ACTIVATIONS = (_L.Activation, _L.ReLU, _L.Softmax, _L.LeakyReLU, _L.ELU, _L.PReLU, _L.ThresholdedReLU)
_MERGES = (_L.Add, _L.Subtract, _L.Multiply)
# Layers that compute nothing at inference: reshapes, copies, and regularisers that are the identity then.
_FREE = (_L.InputLayer, _L.Flatten, _L.Reshape, _L.Permute, _L.RepeatVector, _L.Concatenate, _L.Dropout,
         _L.SpatialDropout1D, _L.SpatialDropout2D, _L.SpatialDropout3D, _L.GaussianDropout, _L.GaussianNoise,
         _L.AlphaDropout, _L.ActivityRegularization, _L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D,
         _L.Cropping1D, _L.Cropping2D, _L.Cropping3D, _L.Identity)
_KNOWN = (_TRANSPOSED_CONVS + _WEIGHTED + _BATCH_NORMS + _GLOBAL_AVG + _GLOBAL_MAX + _AVG_POOL + _MAX_POOL
          + _ACTIVATIONS + _MERGES + _FREE)


@dataclasses.dataclass
class _Call:
  layer: keras.layers.Layer
  inputs: list   # flattened tensors, kept alive so that their ids stay unique during the trace
  outputs: list


def _is_wrapper(layer) -> bool:
  return isinstance(layer, pruning_wrapper.PruneLowMagnitude)


def _sublayers(layer) -> list:
  return list(layer._flatten_layers(include_self=False, recursive=False))  # pylint: disable=protected-access


def _row_names(model) -> dict:
  """id(leaf layer) -> the name its report rows carry: its own, or "block/name" where leaves share a name.

  Model Garden's residual blocks each create layers called conv2d, conv2d_1, ...: prefixing the enclosing block
  (the wrapped block's own name, not its wrapper's) tells the rows apart.
  """
  parents = {}

  def walk(container, owner):
    for sub in _sublayers(container):
      inner = sub.layer if _is_wrapper(sub) else sub
      if _is_wrapper(sub) and not _is_container(inner):
        parents[id(sub)] = (sub, owner)
        parents[id(inner)] = (inner, owner)
      elif _is_container(inner):
        walk(inner, inner.name if not isinstance(inner, keras.Model) or owner is None else owner)
      else:
        parents[id(sub)] = (sub, owner)

  walk(model, None)
  counts = {}
  for layer, _ in parents.values():
    counts[layer.name] = counts.get(layer.name, 0) + 1
  return {layer_id: (f"{owner}/{layer.name}" if owner and counts[layer.name] > 1 else layer.name)
          for layer_id, (layer, owner) in parents.items()}


def _leaf_layers(layer) -> list:
  """Layers whose calls are recorded: pruning wrappers (their inner layer is counted through them), known layers
  and layers without sublayers. Containers (models, custom blocks) are walked into."""
  leaves = {}
  for sub in _sublayers(layer):
    if _is_wrapper(sub) and _is_container(sub.layer):
      # A whole block made prunable (a PrunableLayer with sublayers): its own layers are counted, with the masks
      # the wrapper keeps for their kernels.
      found = _leaf_layers(sub.layer)
    elif _is_wrapper(sub) or not _is_container(sub):
      found = [sub]
    else:
      found = _leaf_layers(sub)
    for leaf in found:
      leaves.setdefault(id(leaf), leaf)
  return list(leaves.values())


def _is_container(layer) -> bool:
  return not isinstance(layer, _KNOWN) and bool(_sublayers(layer))


def _wrapped_weights(layer):
  """(id(weight) -> mask, id(weight) -> name) of the prunable weights of every pruning wrapper, and of every block
  made prunable as a whole (a PrunableLayer with sublayers), in `layer`, however deeply nested.

  Names follow `tfmot_rigl.model_sparsities`: the layer's name, or "layer/weight" when it has several prunable
  weights."""
  masks, names = {}, {}
  for sub in layer._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
    if _is_wrapper(sub):
      owner, weights = sub.layer.name, [weight for weight, _, _ in sub.pruning_vars]
      masks.update({id(weight): mask for weight, mask, _ in sub.pruning_vars})
    elif _is_container(sub) and hasattr(sub, "get_prunable_weights"):
      owner, weights = sub.name, list(sub.get_prunable_weights())  # not wrapped yet: names for planned sparsities
    else:
      continue
    for weight in weights:
      path = weight.name.split(":")[0]
      names[id(weight)] = owner if len(weights) == 1 else f"{owner}/{path.removeprefix(owner + '/')}"
  return masks, names


def _example_inputs(model, input_shape):
  """One all-zeros example (a batch of one) for each model input."""
  if input_shape is None:
    if not getattr(model, "inputs", None):
      raise ValueError(f"Model {model.name!r} has no known input shape; pass input_shape (one example's shape, "
                       "without the batch dimension, e.g. (32, 32, 3)).")
    specs = [(tuple(t.shape[1:]), t.dtype) for t in model.inputs]
  else:
    shapes = input_shape if input_shape and isinstance(input_shape[0], (tuple, list)) else [input_shape]
    specs = [(tuple(shape), tf.float32) for shape in shapes]
  for shape, _ in specs:
    if any(d is None for d in shape):
      raise ValueError(f"Input shape {shape} of model {model.name!r} has unknown dimensions; pass input_shape with "
                       "every dimension of one example, e.g. (224, 224, 3).")
  tensors = [tf.zeros((1,) + shape, dtype=dtype) for shape, dtype in specs]
  return tensors if len(tensors) > 1 else tensors[0]


def _trace(model, input_shape) -> List[_Call]:
  """Calls the model once and returns, in execution order, every call of every leaf layer."""
  calls = []
  patched = []

  def recording(layer, original):
    def call(*args, **kwargs):
      outputs = original(*args, **kwargs)
      inputs = args[0] if args else kwargs.get("inputs")
      calls.append(_Call(layer, tf.nest.flatten(inputs), tf.nest.flatten(outputs)))
      return outputs
    return call

  inputs = _example_inputs(model, input_shape)
  if not model.built:
    # A model without a known input shape builds itself on its first call, calling its layers once more
    # symbolically on the way; build it before recording.
    model(inputs, training=False)
  try:
    for layer in _leaf_layers(model):
      previous = layer.__dict__.get("call")
      # A plain instance attribute, set past Keras's __setattr__ so that the recorder is never tracked by the layer.
      object.__setattr__(layer, "call", recording(layer, layer.call))
      patched.append((layer, previous))
    model(inputs, training=False)
  finally:
    for layer, previous in patched:
      if previous is None:
        object.__delattr__(layer, "call")
      else:
        object.__setattr__(layer, "call", previous)
  return calls


def _activation_name(fn) -> Optional[str]:
  if fn is None:
    return None
  fn = getattr(fn, "func", fn)  # functools.partial
  name = getattr(fn, "__name__", type(fn).__name__)
  return None if name in ("linear", "identity") else name


def _activation_layer_name(layer) -> Optional[str]:
  if isinstance(layer, _L.ReLU):
    if float(layer.negative_slope) != 0.0:
      return "leaky_relu"
    return "relu6" if layer.max_value is not None and float(layer.max_value) == 6.0 else "relu"
  if isinstance(layer, _L.Softmax):
    return "softmax"
  if isinstance(layer, _L.Activation):
    return _activation_name(layer.activation)
  return type(layer).__name__.lower()  # LeakyReLU, ELU, PReLU, …: no MicroNet cost, so LayerOp reports an error


def _shape(tensor) -> Tuple[int, ...]:
  return tuple(int(d) for d in tensor.shape[1:])


def _with_channels(shape, channels, data_format) -> Tuple[int, ...]:
  """`shape` with its channel count replaced (the depthwise half of a separable conv has c_in · multiplier)."""
  if data_format == "channels_first":
    return (channels,) + shape[1:]
  return shape[:-1] + (channels,)


def _channels_moved_last(shape, axis) -> Tuple[int, ...]:
  """A batch norm's output shape with its channel axis (`axis` counts the batch dim) moved last, where the core
  reads its per-channel parameter count."""
  axis = axis[0] if isinstance(axis, (list, tuple)) else axis
  dims = list(shape)
  channels = dims.pop(axis % (len(shape) + 1) - 1)
  return tuple(dims) + (channels,)


def _nonzeros(kernel, mask) -> Optional[int]:
  """Kept entries of a kernel: from its mask when wrapped, else its exact zeros (so a stripped sparse model counts as
  sparse); None when dense. Under a wrapper only the mask is the truth: RigL grows connections with zero weights."""
  values = keras.backend.get_value(mask if mask is not None else kernel)
  count = int(np.count_nonzero(values))
  return None if count == values.size else count


def _sparsifiable_kernel(layer):
  """The kernel a per-layer sparsity applies to (TFMOT prunes a separable conv's pointwise kernel)."""
  if isinstance(layer, _SEPARABLE_CONVS):
    return layer.pointwise_kernel
  if isinstance(layer, _DEPTHWISE_CONVS):
    return layer.depthwise_kernel
  return layer.kernel


def _weighted_ops(layer, masks, output_shape, reuses_weights, row_name=None) -> List[accounting.LayerOp]:
  """The op(s) of one conv / depthwise / separable / dense layer; `masks` maps id(kernel variable) -> mask."""
  row_name = row_name or layer.name

  def nonzeros(kernel):
    return None if reuses_weights else _nonzeros(kernel, masks.get(id(kernel)))

  activation = _activation_name(getattr(layer, "activation", None))
  if isinstance(layer, _SEPARABLE_CONVS):
    depthwise, pointwise = layer.depthwise_kernel, layer.pointwise_kernel
    depth_channels = int(depthwise.shape[-2] * depthwise.shape[-1])
    return [
        accounting.LayerOp(f"{row_name}/depthwise", "depthwise",
                           _with_channels(output_shape, depth_channels, layer.data_format), tuple(depthwise.shape),
                           nonzeros(depthwise), reuses_weights=reuses_weights),
        accounting.LayerOp(f"{row_name}/pointwise", "conv", output_shape, tuple(pointwise.shape),
                           nonzeros(pointwise), has_bias=layer.use_bias, activation=activation,
                           reuses_weights=reuses_weights),
    ]
  if isinstance(layer, _DEPTHWISE_CONVS):
    kind, kernel = "depthwise", layer.depthwise_kernel
  elif isinstance(layer, _CONVS):
    kind, kernel = "conv", layer.kernel
  else:
    kind, kernel = "dense", layer.kernel
  return [accounting.LayerOp(row_name, kind, output_shape, tuple(kernel.shape), nonzeros(kernel),
                             has_bias=layer.use_bias, activation=activation, reuses_weights=reuses_weights)]


def _describe(model, input_shape=None, sparsities: Optional[Mapping[str, float]] = None):
  """(ops, descriptions of uncounted layers, {name: op indices}) of one forward pass of one example."""
  ops: List[accounting.LayerOp] = []
  uncounted = []
  producer = {}  # id(output tensor) -> index in ops of the weighted op that produced it (no activation between)
  by_name = {}   # layer (and wrapper) name -> indices of that layer's ops, from its first call
  ambiguous = set()  # names shared by several layers (e.g. blocks whose weights are all called "kernel")
  counted_weights = set()

  masks, weight_names = _wrapped_weights(model)
  row_names = _row_names(model)
  for call in _trace(model, input_shape):
    layer, names = call.layer, [call.layer.name]
    if _is_wrapper(layer):
      layer = layer.layer
      names.append(layer.name)
    if not call.outputs:
      continue
    output = call.outputs[0]
    output_shape = _shape(output)

    if isinstance(layer, _TRANSPOSED_CONVS):
      uncounted.append(f"{layer.name} ({type(layer).__name__})")
    elif isinstance(layer, _WEIGHTED):
      reuses = id(layer) in counted_weights
      counted_weights.add(id(layer))
      new_ops = _weighted_ops(layer, masks, output_shape, reuses, row_names.get(id(layer)))
      first = len(ops)
      ops.extend(new_ops)
      if not reuses:
        names.append(weight_names.get(id(_sparsifiable_kernel(layer))))
        for name in filter(None, set(names)):
          if name in by_name:
            ambiguous.add(name)
          by_name.setdefault(name, list(range(first, len(ops))))
      if new_ops[-1].activation is None:
        producer[id(output)] = len(ops) - 1
    elif isinstance(layer, _BATCH_NORMS):
      source = producer.pop(id(call.inputs[0]), None) if call.inputs else None
      if source is not None and not ops[source].folded_bn:
        ops[source] = dataclasses.replace(ops[source], folded_bn=True)
      else:
        ops.append(accounting.LayerOp(layer.name, "batch_norm", _channels_moved_last(output_shape, layer.axis)))
    elif isinstance(layer, _ACTIVATIONS):
      ops.append(accounting.LayerOp(layer.name, "activation", output_shape,
                                    activation=_activation_layer_name(layer)))
    elif isinstance(layer, _MERGES):
      kind = "multiply" if isinstance(layer, _L.Multiply) else "add"
      ops.append(accounting.LayerOp(layer.name, kind, output_shape, num_inputs=len(call.inputs)))
    elif isinstance(layer, _GLOBAL_AVG + _GLOBAL_MAX):
      kind = "global_avg_pool" if isinstance(layer, _GLOBAL_AVG) else "global_max_pool"
      ops.append(accounting.LayerOp(layer.name, kind, output_shape, input_shape=_shape(call.inputs[0])))
    elif isinstance(layer, _AVG_POOL + _MAX_POOL):
      kind = "avg_pool" if isinstance(layer, _AVG_POOL) else "max_pool"
      ops.append(accounting.LayerOp(layer.name, kind, output_shape, input_shape=_shape(call.inputs[0]),
                                    pool_size=int(np.prod(layer.pool_size))))
    elif not isinstance(layer, _FREE):
      uncounted.append(f"{layer.name} ({type(layer).__name__})")

  if sparsities:
    unknown = sorted(set(sparsities) - set(by_name))
    if unknown:
      raise ValueError(f"Sparsities given for unknown layer(s) {unknown}; the counted conv/dense layers are "
                       f"{sorted(by_name)}.")
    clashes = sorted(set(sparsities) & ambiguous)
    if clashes:
      raise ValueError(f"Sparsities name(s) {clashes} match several layers; give the layers unique names.")
    for name, sparsity in sparsities.items():
      index = by_name[name][-1]  # a layer's last op holds its sparsifiable kernel
      op = ops[index]
      kept = accounting.sparse_kernel_nonzeros(op.kernel_size, sparsity)
      ops[index] = dataclasses.replace(op, nonzeros=None if kept == op.kernel_size else kept)
  return ops, uncounted, by_name


def describe_model(model, input_shape: Optional[Sequence[int]] = None,
                   sparsities: Optional[Mapping[str, float]] = None) -> List[accounting.LayerOp]:
  """The counted operations of one forward pass of one example through `model`, in execution order.

  Args:
    model: a tf_keras model, plain or with TFMOT `PruneLowMagnitude` wrappers (tfmot_rigl's SparseWrapper is one);
      nested models and custom blocks are walked into.
    input_shape: one example's shape (no batch dimension), or a list of them for several inputs; default: the
      model's own input shape.
    sparsities: {layer name: sparsity} overriding the density of those layers' kernels (N − floor(s·N) nonzeros,
      as the project's masks keep), e.g. the per-layer sparsities of a distribution, so that a report can be made
      from a config before any training. A wrapped layer may be named by its wrapper's name or its own.

  Kernel densities otherwise come from each wrapper's mask, or, for unwrapped layers, from the kernel's exact zeros.
  """
  ops, uncounted, _ = _describe(model, input_shape, sparsities)
  if uncounted:
    logging.warning("FLOP accounting has no counting rule for %s; they are left out.", ", ".join(uncounted))
  return ops


def report(model, method=None, steps: Optional[int] = None, batch_size: Optional[int] = None, *,
           input_shape: Optional[Sequence[int]] = None, sparsities: Optional[Mapping[str, float]] = None,
           multiplier: float = 1.0, update_frequency: Optional[int] = None, begin_step=None, end_step=None,
           power: Optional[int] = None) -> dict:
  """The full accounting report of a model (see `tfmot_rigl.core.accounting.build_report`).

  `method` is a method name (dense|static|set|rigl|snfs|snip|magnitude) or a tfmot_rigl algorithm, whose
  update_frequency / begin_step / end_step / power are used unless given here. For magnitude pruning, f_S is the
  model as described: pass `sparsities` (the final per-layer targets) while its masks are not pruned yet.
  """
  knobs = {"update_frequency": update_frequency, "begin_step": begin_step, "end_step": end_step, "power": power}
  if method is not None and not isinstance(method, str):
    algorithm, method = method, method.name
    for knob, value in knobs.items():
      if value is None and hasattr(algorithm, knob):
        knobs[knob] = getattr(algorithm, knob)
  knobs = {knob: value for knob, value in knobs.items() if value is not None}
  ops, uncounted, by_name = _describe(model, input_shape, sparsities)
  plan = gradual_accounting.plan(model, by_name, int(round(steps * multiplier))) if steps else None
  if method == "magnitude" and not any(op.is_sparse for op in ops):
    logging.warning("Magnitude pruning report of a model with no pruned kernel: its final FLOPs equal the dense "
                    "ones. Pass sparsities= with the per-layer targets.")
  return accounting.build_report(ops, method=method, steps=steps, batch_size=batch_size, multiplier=multiplier,
                                 uncounted=uncounted, gradual=plan, **knobs)


def describe_for_training(model, sparsities: Optional[Mapping[str, float]] = None, steps: Optional[int] = None):
  """(ops, gradual-pruning plan or None): what the accounting needs to count `model`'s training FLOPs."""
  ops, uncounted, by_name = _describe(model, None, sparsities)
  if uncounted:
    logging.warning("FLOP accounting has no counting rule for %s; they are left out.", ", ".join(uncounted))
  return ops, gradual_accounting.plan(model, by_name, steps)
