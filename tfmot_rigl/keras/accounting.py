"""Reads a tf_keras model into the accounting's layer descriptors and reports its FLOPs and size.

The model is traced once (a tf.function over a batch-of-one input signature: shapes only, nothing is computed)
while each counted leaf layer's `call` records its input and output tensors. That sees every call of every layer —
inside nested models, inside TFMOT wrappers and inside custom block layers such as Model Garden's ResNet blocks —
with its real output shape, and tells which layer produced a batch norm's input, for folding. Kernel densities come
from the masks of TFMOT pruning wrappers (`PruneLowMagnitude`, and its subclass `SparseWrapper`), or from a
{layer name: sparsity} override, so a report can be made from a config before any training.
"""
import contextlib
import dataclasses
from typing import Mapping, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl.core import accounting
from tfmot_rigl.core import distributions

# Layers that only move or drop data: they cost no FLOPs.
_FREE_LAYERS = (keras.layers.InputLayer, keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute,
                keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                keras.layers.SpatialDropout3D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                keras.layers.AlphaDropout, keras.layers.ActivityRegularization, keras.layers.Concatenate,
                keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
                keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D, keras.layers.RepeatVector,
                keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D,
                keras.layers.Identity, keras.layers.Masking)
_TRANSPOSED_CONVS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_SEPARABLE_CONVS = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_DEPTHWISE_CONVS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_BATCH_NORMS = (keras.layers.BatchNormalization, keras.layers.experimental.SyncBatchNormalization)
_GLOBAL_AVG_POOLS = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                     keras.layers.GlobalAveragePooling3D)
_GLOBAL_MAX_POOLS = (keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D)
_AVG_POOLS = (keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D)
_MAX_POOLS = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
# Max/min of inputs cost one comparison per element and extra input, counted like an addition.
_ADDS = (keras.layers.Add, keras.layers.Subtract, keras.layers.Maximum, keras.layers.Minimum)
_ACTIVATION_LAYERS = (keras.layers.Activation, keras.layers.ReLU, keras.layers.Softmax)


def _is_counted(layer) -> bool:
  return isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                            *_SEPARABLE_CONVS, *_DEPTHWISE_CONVS, *_BATCH_NORMS, keras.layers.Normalization,
                            *_GLOBAL_AVG_POOLS, *_GLOBAL_MAX_POOLS, *_AVG_POOLS, *_MAX_POOLS, *_ADDS,
                            keras.layers.Multiply, keras.layers.Average, *_ACTIVATION_LAYERS))


def _leaf_layers(model):
  """Layers without sublayers, nested models and wrappers included, in tracking order."""
  for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
    if not any(True for _ in layer._flatten_layers(include_self=False, recursive=False)):  # pylint: disable=protected-access
      yield layer


def _activation_name(function) -> Optional[str]:
  if function is None:
    return None
  try:
    name = keras.activations.serialize(function)
  except (ValueError, TypeError):
    name = getattr(function, "__name__", repr(function))
  return name if isinstance(name, str) else getattr(function, "__name__", repr(function))


def _relu_layer_activation(layer) -> str:
  slope = float(np.asarray(layer.negative_slope))
  threshold = float(np.asarray(layer.threshold))
  if slope != 0.0 or threshold != 0.0:
    return "leaky_relu"  # not a MicroNet activation: the descriptor rejects it with the layer's name
  return "relu" if layer.max_value is None else "relu6"


def _channels_last(shape, layer, axis=None):
  """Shape without the batch dim, channel axis moved last (channels_first layers, BN over another axis)."""
  shape = [int(d) for d in shape[1:]]
  if axis is None and getattr(layer, "data_format", "channels_last") == "channels_first":
    axis = 1
  if axis is not None:
    axis = axis % (len(shape) + 1)
    if axis != len(shape):
      shape.append(shape.pop(axis - 1))
  return tuple(shape)


def _shape(tensor):
  shape = tensor.shape
  if shape.rank is None or any(d is None for d in shape[1:]):
    raise ValueError(f"Output shape {shape} is not fully known; give describe_model an input_shape with every "
                     "dimension fixed, e.g. (224, 224, 3).")
  return shape


@dataclasses.dataclass
class _Call:
  layer: keras.layers.Layer
  inputs: object
  outputs: object


@contextlib.contextmanager
def _recording_calls(layers, calls):
  """Makes each layer's `call` append a _Call to `calls` (instance attribute, removed again on exit)."""
  patched = []
  try:
    for layer in layers:
      original = layer.call

      def recorded(*args, _layer=layer, _original=original, **kwargs):
        outputs = _original(*args, **kwargs)
        calls.append(_Call(_layer, args[0] if args else kwargs.get("inputs"), outputs))
        return outputs

      # Set on the instance, bypassing Keras's attribute tracking; TFMOT wrappers call `self.layer.call`
      # directly, so wrapped layers are seen too.
      object.__setattr__(layer, "call", tf.autograph.experimental.do_not_convert(recorded))
      patched.append(layer)
    yield
  finally:
    for layer in patched:
      object.__delattr__(layer, "call")


def _input_signature(model, input_shape):
  if input_shape is not None:
    shapes = [input_shape] if not input_shape or not isinstance(input_shape[0], (list, tuple)) else input_shape
    dtypes = [tensor.dtype for tensor in model.inputs] if getattr(model, "inputs", None) else [tf.float32] * len(
        shapes)
    specs = [tf.TensorSpec([1, *shape], dtype) for shape, dtype in zip(shapes, dtypes)]
    return specs[0] if len(specs) == 1 else specs
  if not getattr(model, "inputs", None):
    raise ValueError(f"Model {model.name!r} has no known input shape; pass input_shape (one example, without the "
                     "batch dimension), e.g. input_shape=(32, 32, 3).")

  def spec(tensor):
    if any(d is None for d in tensor.shape[1:]):
      raise ValueError(f"Model {model.name!r} input {tensor.name!r} has shape {tensor.shape} with unknown "
                       "dimensions; pass input_shape with every dimension fixed, e.g. input_shape=(224, 224, 3).")
    return tf.TensorSpec([1, *tensor.shape[1:]], tensor.dtype)

  return tf.nest.map_structure(spec, model.input)


def _trace(model, input_shape) -> list:
  if not model.built:
    if input_shape is None:
      raise ValueError(f"Model {model.name!r} is not built; pass input_shape (one example, without the batch "
                       "dimension), e.g. input_shape=(28, 28, 1).")
    model.build((None, *input_shape))
  leaves = list(_leaf_layers(model))
  unsupported = sorted({f"{layer.name} ({type(layer).__name__})" for layer in leaves
                        if (layer.weights and not _is_counted(layer)) or isinstance(layer, _TRANSPOSED_CONVS)})
  if unsupported:
    raise ValueError(f"The accounting cannot count layer(s) {', '.join(unsupported)}: supported layers with weights "
                     "are Dense, Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D and BatchNormalization.")
  uncounted = sorted({type(layer).__name__ for layer in leaves
                      if not _is_counted(layer) and not isinstance(layer, _FREE_LAYERS)})
  if uncounted:
    logging.warning("Accounting: layers of type %s are counted as free (no FLOPs).", ", ".join(uncounted))
  calls = []
  signature = _input_signature(model, input_shape)
  with _recording_calls([layer for layer in leaves if _is_counted(layer)], calls):
    tf.function(lambda inputs: model(inputs, training=False)).get_concrete_function(signature)
  return calls


def _mask_nnz(model) -> dict:
  """{weight ref: nonzero count of its mask} over every TFMOT pruning wrapper in `model`."""
  nnz = {}
  for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
    if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
      for weight, mask, _ in layer.pruning_vars:
        nnz[weight.ref()] = int(np.count_nonzero(mask.numpy()))
  return nnz


def _wrapper_names(model) -> dict:
  """{wrapper name: wrapped layer name}, so overrides may name either."""
  return {layer.name: layer.layer.name
          for layer in model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
          if isinstance(layer, pruning_wrapper.PruneLowMagnitude)}


def _sparsified_kernel(layer):
  """The kernel a per-layer sparsity applies to: what TFMOT's registry (and prune_sparse) would mask."""
  if isinstance(layer, _SEPARABLE_CONVS):
    return layer.pointwise_kernel
  if isinstance(layer, _DEPTHWISE_CONVS):
    return layer.depthwise_kernel
  return layer.kernel


def _kernel_descriptors(call, name, nnz_of, output_shape):
  """Descriptors of a Dense / Conv / DepthwiseConv / SeparableConv call (a separable conv gives two)."""
  layer = call.layer
  common = dict(use_bias=bool(layer.use_bias), activation=_activation_name(layer.activation))
  if isinstance(layer, _SEPARABLE_CONVS):
    depthwise_channels = int(layer.depthwise_kernel.shape[-2] * layer.depthwise_kernel.shape[-1])
    depthwise = accounting.LayerDescriptor(
        name=f"{name}/depthwise", kind="depthwise", output_shape=(*output_shape[:-1], depthwise_channels),
        kernel_shape=tuple(layer.depthwise_kernel.shape), nnz=nnz_of(layer.depthwise_kernel))
    pointwise = accounting.LayerDescriptor(
        name=f"{name}/pointwise", kind="conv", output_shape=output_shape,
        kernel_shape=tuple(layer.pointwise_kernel.shape), nnz=nnz_of(layer.pointwise_kernel), **common)
    return [depthwise, pointwise]
  if isinstance(layer, _DEPTHWISE_CONVS):
    kind, kernel = "depthwise", layer.depthwise_kernel
  else:
    kind, kernel = ("dense" if isinstance(layer, keras.layers.Dense) else "conv"), layer.kernel
  return [accounting.LayerDescriptor(name=name, kind=kind, output_shape=output_shape,
                                     kernel_shape=tuple(kernel.shape), nnz=nnz_of(kernel), **common)]


def describe_model(model, input_shape: Optional[Sequence[int]] = None,
                   sparsities: Optional[Mapping[str, float]] = None) -> list:
  """The model as a list of `accounting.LayerDescriptor`, one per counted layer call, in execution order.

  Args:
    model: a built tf_keras model (plain, or with TFMOT / tfmot_rigl pruning wrappers; nested models and custom
      block layers are looked into).
    input_shape: one example's input shape (no batch dimension); needed when the model's own input shape is not
      fully known. A list of shapes for a model with several inputs.
    sparsities: {layer name: sparsity} overriding the masks, e.g. `tfmot_rigl.model_sparsities(...)` for a report
      before training. A layer keeps exactly floor(sparsity · N) zeros, like the initial masks. The name may be the
      wrapped layer's or its wrapper's; for a SeparableConv it sets the pointwise kernel (the part TFMOT prunes).

  Returns:
    Descriptors with the kernels' nnz from the masks (None for kernels without a mask). Batch norms that follow a
    conv/dense directly are folded into it. A shared layer gives one descriptor per call; only the first counts
    its weights.
  """
  calls = _trace(model, input_shape)
  mask_nnz = _mask_nnz(model)
  overrides = {}
  if sparsities:
    wrapper_names = _wrapper_names(model)
    kernel_layers = {call.layer.name for call in calls
                     if isinstance(call.layer, (keras.layers.Dense, *_CONVS, *_SEPARABLE_CONVS, *_DEPTHWISE_CONVS))}
    for name, value in sparsities.items():
      target = wrapper_names.get(name, name)
      if target not in kernel_layers:
        raise ValueError(f"sparsities names {name!r}, which is not a Dense/Conv layer of model {model.name!r}; "
                         f"its kernel layers are {sorted(kernel_layers)}.")
      overrides[target] = distributions.check_sparsity(value, f"sparsity of layer {name!r}")

  descriptors = []
  # id(output tensor) -> index of the kernel descriptor that produced it. `calls` keeps every traced tensor alive,
  # so the ids stay unique.
  produced_by = {}
  seen = set()
  for call in calls:
    layer = call.layer
    first_call = id(layer) not in seen
    seen.add(id(layer))
    name = layer.name if first_call else f"{layer.name} (repeated call)"

    def nnz_of(kernel, _layer=layer):
      if _layer.name in overrides and kernel is _sparsified_kernel(_layer):
        size = int(np.prod(kernel.shape))
        # Same rounding as the initial masks (core.masks.random_mask): exactly floor(s · N) zeros.
        return size - int(overrides[_layer.name] * size // 1)
      return mask_nnz.get(kernel.ref())

    if isinstance(layer, (keras.layers.Dense, *_CONVS, *_SEPARABLE_CONVS, *_DEPTHWISE_CONVS)):
      output_shape = _channels_last(_shape(call.outputs), layer)
      new = _kernel_descriptors(call, name, nnz_of, output_shape)
      if new[-1].activation in (None, "linear"):
        produced_by[id(call.outputs)] = len(descriptors) + len(new) - 1
      descriptors.extend(dataclasses.replace(d, counts_weights=first_call) for d in new)
      continue
    if isinstance(layer, _BATCH_NORMS):
      source = produced_by.pop(id(call.inputs), None)
      if source is not None and not descriptors[source].folded_batch_norm:
        # Folded into the conv/dense that produced its input: it costs that layer a bias.
        descriptors[source] = dataclasses.replace(descriptors[source], folded_batch_norm=True)
        continue
      axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
      descriptors.append(accounting.LayerDescriptor(
          name=name, kind="batch_norm", output_shape=_channels_last(_shape(call.outputs), layer, axis),
          counts_weights=first_call))
      continue
    output_shape = _channels_last(_shape(call.outputs), layer)
    common = dict(name=name, output_shape=output_shape, counts_weights=first_call)
    if isinstance(layer, keras.layers.Normalization):
      descriptors.append(accounting.LayerDescriptor(kind="batch_norm", **common))
    elif isinstance(layer, keras.layers.ReLU):
      descriptors.append(accounting.LayerDescriptor(kind="activation", activation=_relu_layer_activation(layer),
                                                    **common))
    elif isinstance(layer, keras.layers.Softmax):
      descriptors.append(accounting.LayerDescriptor(kind="activation", activation="softmax", **common))
    elif isinstance(layer, keras.layers.Activation):
      descriptors.append(accounting.LayerDescriptor(kind="activation",
                                                    activation=_activation_name(layer.activation), **common))
    elif isinstance(layer, (*_GLOBAL_AVG_POOLS, *_GLOBAL_MAX_POOLS)):
      kind = "global_avg_pool" if isinstance(layer, _GLOBAL_AVG_POOLS) else "global_max_pool"
      input_shape_last = _channels_last(_shape(call.inputs), layer)
      descriptors.append(accounting.LayerDescriptor(
          kind=kind, input_shape=input_shape_last, name=name, output_shape=(input_shape_last[-1],),
          counts_weights=first_call))
    elif isinstance(layer, (*_AVG_POOLS, *_MAX_POOLS)):
      kind = "avg_pool" if isinstance(layer, _AVG_POOLS) else "max_pool"
      descriptors.append(accounting.LayerDescriptor(kind=kind, pool_size=tuple(layer.pool_size), **common))
    else:  # merge layers
      kind = "multiply" if isinstance(layer, keras.layers.Multiply) else (
          "average" if isinstance(layer, keras.layers.Average) else "add")
      descriptors.append(accounting.LayerDescriptor(kind=kind, num_inputs=len(call.inputs), **common))
  return descriptors


def report(model, method: Optional[str] = None, steps: Optional[int] = None, batch_size: Optional[int] = None,
           input_shape: Optional[Sequence[int]] = None, sparsities: Optional[Mapping[str, float]] = None,
           **training_options) -> dict:
  """`accounting.build_report` of `describe_model(model, input_shape, sparsities)`.

  Args:
    model, input_shape, sparsities: as for `describe_model`.
    method: a method name (dense, static, set, snip, snfs, rigl, magnitude) or a tfmot_rigl algorithm object, whose
      `update_frequency`, `begin_step`, `end_step` and `power` are used unless given in `training_options`.
    steps: training steps actually run (5× training: 5× the steps).
    batch_size: global batch size.
    **training_options: update_frequency, begin_step, end_step, power, final_sparsity, param_bits.
  """
  if method is not None and not isinstance(method, str):
    algorithm = method
    method = algorithm.name
    for option in ("update_frequency", "begin_step", "end_step", "power"):
      if hasattr(algorithm, option):
        training_options.setdefault(option, getattr(algorithm, option))
  if method is not None and method not in accounting.METHODS:
    raise ValueError(f"Unknown method {method!r}; use one of {', '.join(accounting.METHODS)}.")
  layers = describe_model(model, input_shape=input_shape, sparsities=sparsities)
  return accounting.build_report(layers, method=method, steps=steps, batch_size=batch_size, **training_options)
