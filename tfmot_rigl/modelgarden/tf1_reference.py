"""Make a Model Garden ResNet / MobileNet compute what the TF1 reference networks of the RigL paper compute.

The reference (google-research/rigl `rigl/imagenet_resnet`) and Model Garden build the same layers with the same
weights, but differ in two details that change the function:
  * strided convolutions: the reference pads (k - 1) // 2 zeros on *both* sides and convolves with VALID padding
    (`conv2d_fixed_padding`); Keras 'same' pads one zero less before than after on even inputs, which shifts the
    sampling grid by one pixel (ResNet-50's 7x7 stem and three 3x3/2 convolutions, MobileNet's strided ones);
  * MobileNet-v1 and -v2: the reference uses ReLU after batch norms, Model Garden's MobileNet block specs ReLU6.
`match_tf1_reference` changes those layers in place; the weights are untouched, so a checkpoint imported from the
reference (`tfmot_rigl.modelgarden.checkpoint_import`) gives the reference's outputs. The task applies it when
`task.model.match_tf1_reference` is set (as `tfm import-checkpoint` writes it in params.yaml).

Keras has no working explicit padding for convolutions (`tf.nn.convolution` takes only 'SAME' / 'VALID'), so a
strided convolution gets the reference's own computation: its `call` pads the input, then convolves with 'valid'.
That is a change to the layer object, not to its config, so it is made on the finished (sparsified) model, whose layer
objects `strip_sparse` and the export keep; the task makes it again every time it builds the model.
"""
from typing import Iterator

import tensorflow as tf
import tf_keras as keras
from official.modeling import activations as mg_activations


# The 2-D convolutions Keras pads: in tf_keras 2.20 DepthwiseConv2D and SeparableConv2D are not Conv2D subclasses
# (they share only the private base `Conv`), so each is named.
_CONVOLUTIONS_2D = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
# ReLU6 as the MobileNet layers hold it: `tf.nn.relu6` in Activation layers, Model Garden's own `relu6` function where
# a block calls `tf_utils.get_activation('relu6')` (MobileNet-v1's DepthwiseSeparableConvBlock).
_RELU6 = (tf.nn.relu6, mg_activations.relu6)


def _is_relu6(function) -> bool:
  return any(function is relu6 for relu6 in _RELU6)


def _all_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
  """The layer and every layer it holds (wrappers, blocks, nested models), each once."""
  # Keras' own traversal (private, as in tfmot_rigl.modelgarden.task): blocks call their convolutions themselves, so
  # they are not in any functional graph.
  yield from layer._flatten_layers(include_self=True, recursive=True)  # pylint: disable=protected-access


def fixed_padding(kernel_size: int, dilation_rate: int = 1) -> list:
  """The reference's `fixed_padding` of an NHWC input for a square kernel: (k - 1) // 2 zeros before, the rest after."""
  effective = kernel_size + (kernel_size - 1) * (dilation_rate - 1)
  begin = (effective - 1) // 2
  end = effective - 1 - begin
  return [[0, 0], [begin, end], [begin, end], [0, 0]]


def _pad_then_call(layer: keras.layers.Conv2D, paddings: list) -> None:
  unpadded_call = layer.call

  def call(inputs, *args, **kwargs):
    return unpadded_call(tf.pad(inputs, paddings), *args, **kwargs)

  layer.call = call
  layer.padding = 'valid'


def match_tf1_reference(model: keras.Model, relu_activations: bool = False) -> int:
  """Gives `model` the reference's padding (and ReLU for ReLU6 if `relu_activations`); returns the layers changed."""
  changed = 0
  for layer in _all_layers(model):
    if isinstance(layer, _CONVOLUTIONS_2D) and layer.padding == 'same' and max(layer.strides) > 1:
      if layer.kernel_size[0] != layer.kernel_size[1] or layer.data_format != 'channels_last':
        raise ValueError(f'{layer.name}: only square kernels on NHWC inputs have the reference\'s fixed padding.')
      _pad_then_call(layer, fixed_padding(layer.kernel_size[0], layer.dilation_rate[0]))
      changed += 1
    elif relu_activations and isinstance(layer, keras.layers.Activation) and _is_relu6(layer.activation):
      layer.activation = tf.nn.relu
      changed += 1
    elif relu_activations and _is_relu6(getattr(layer, '_activation_fn', None)):
      # Model Garden's DepthwiseSeparableConvBlock (MobileNet-v1) applies a function, not an Activation layer.
      layer._activation_fn = tf.nn.relu  # pylint: disable=protected-access
      changed += 1
  return changed
