"""Test helper: a checkpoint in the exact variable layout of the RigL reference networks, and their forward pass.

The layout follows google-research/rigl `rigl/imagenet_resnet/resnet_model.py`, `mobilenetv1_model.py` and
`pruning_layers.py` (TF1 variable scopes, contrib masked layers: `weights`, `mask`, `threshold`, `biases`;
`tf.layers.batch_normalization` numbered in creation order). Values are random, masks random at the given per-layer
sparsity; the file is written with the TF1 name-based SaveV2 op, so `tf.train.load_checkpoint` reads it by those
names, as it reads the published checkpoints.

`resnet50_forward` recomputes the reference ResNet-50 in plain TensorFlow ops from the checkpoint's arrays (fixed
padding of strided convolutions, inference batch norm with epsilon 1e-5), written from the reference's definition and
independent of Model Garden.
"""
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

SCOPE = 'resnet_model'
BN_EPSILON = 1e-5


def _bn(index: int) -> str:
  return f'{SCOPE}/batch_normalization' + (f'_{index}' if index else '')


def resnet50_layers(num_classes: int = 1000) -> List[Tuple[str, Tuple[int, ...], Optional[str]]]:
  """[(layer scope, kernel shape, batch-norm scope or None)] of the reference ResNet-50, in creation order."""
  layers, bn = [(f'{SCOPE}/initial_conv', (7, 7, 3, 64), _bn(0))], 1
  channels = 64
  for group, (filters, repeats) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
    for index in range(repeats):
      name = f'block_group_projection_block_group{group}' if index == 0 else f'block_group{group}_{index}_1'
      if index == 0:
        layers.append((f'{SCOPE}/bottleneck_projection_{name}', (1, 1, channels, 4 * filters), _bn(bn)))
        bn += 1
      for part, shape in enumerate([(1, 1, channels, filters), (3, 3, filters, filters), (1, 1, filters, 4 * filters)],
                                   start=1):
        layers.append((f'{SCOPE}/bottleneck_{part}_{name}', shape, _bn(bn)))
        bn += 1
        channels = shape[-1]
  layers.append((f'{SCOPE}/final_dense', (2048, num_classes), None))
  return layers


def mobilenet_v1_layers(num_classes: int = 1000) -> List[Tuple[str, Tuple[int, ...], Optional[str]]]:
  """The reference MobileNet-v1's layers; depthwise kernels have the shape [3, 3, C, 1]."""
  layers, bn, channels = [(f'{SCOPE}/initial_conv', (3, 3, 3, 32), _bn(0))], 1, 32
  for block_id, filters in enumerate([64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]):
    layers.append((f'{SCOPE}/depthwise_nxn_{block_id}', (3, 3, channels, 1), _bn(bn)))
    layers.append((f'{SCOPE}/contraction_1x1_{block_id}', (1, 1, channels, filters), _bn(bn + 1)))
    bn, channels = bn + 2, filters
  layers.append((f'{SCOPE}/final_dense', (1024, num_classes), None))
  return layers


# (filters, stride) of the reference MobileNet-v2's 17 inverted residual blocks (expansion 6, none in block 0).
MOBILENET_V2_BLOCKS = [(16, 1), (24, 2), (24, 1), (32, 2), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1), (64, 1),
                       (96, 1), (96, 1), (96, 1), (160, 2), (160, 1), (160, 1), (320, 1)]


def mobilenet_v2_layers(num_classes: int = 1000) -> List[Tuple[str, Tuple[int, ...], Optional[str]]]:
  """The reference MobileNet-v2's layers (expansion factor 6, width 1)."""
  layers, bn, channels = [(f'{SCOPE}/initial_conv', (3, 3, 3, 32), _bn(0))], 1, 32
  for block_id, (filters, _) in enumerate(MOBILENET_V2_BLOCKS):
    expanded = channels * 6 if block_id else channels
    if block_id:
      layers.append((f'{SCOPE}/expand_1x1_{block_id}', (1, 1, channels, expanded), _bn(bn)))
      bn += 1
    layers.append((f'{SCOPE}/depthwise_nxn_{block_id}', (3, 3, expanded, 1), _bn(bn)))
    layers.append((f'{SCOPE}/contraction_1x1_{block_id}', (1, 1, expanded, filters), _bn(bn + 1)))
    bn, channels = bn + 2, filters
  layers.append((f'{SCOPE}/final_1x1_conv', (1, 1, 320, 1280), _bn(bn)))
  layers.append((f'{SCOPE}/final_dense', (1280, num_classes), None))
  return layers


def reference_values(layers, sparsity: Callable[[str, Tuple[int, ...]], Optional[float]],
                     seed: int = 0) -> Dict[str, np.ndarray]:
  """{name: value} of `layers` as the reference stores them, random, with training state (global_step, Momentum).

  `sparsity(scope, shape)` gives a layer's mask sparsity, or None for an unmasked layer (plain tf.layers: `kernel`,
  depthwise: `depthwise_weights`). Batch-norm scales are drawn wide (1 to 4) so that a ReLU6 in place of the
  reference's ReLU clips some activations once `calibrate_batch_norms` has set the statistics.
  """
  rng = np.random.default_rng(seed)
  values: Dict[str, np.ndarray] = {'global_step': np.array(32000, dtype=np.int64)}
  for scope, shape, bn in layers:
    fan_in = int(np.prod(shape[:-1]))
    kernel = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    depthwise = shape[-1] == 1 and len(shape) == 4 and 'depthwise' in scope
    layer_sparsity = None if depthwise else sparsity(scope, shape)
    if depthwise:
      values[f'{scope}/depthwise_weights'] = kernel
    elif layer_sparsity is None:
      values[f'{scope}/kernel'] = kernel
    else:
      mask = np.ones(kernel.size, dtype=np.float32)
      mask[rng.permutation(kernel.size)[:int(np.floor(layer_sparsity * kernel.size))]] = 0.0
      values[f'{scope}/weights'] = kernel  # stale values under the zeros, as contrib pruning leaves them
      values[f'{scope}/mask'] = mask.reshape(shape)
      values[f'{scope}/threshold'] = np.array(0.0, dtype=np.float32)
      values[f'{scope}/weights/Momentum'] = np.zeros(shape, dtype=np.float32)
    if scope.endswith('final_dense'):
      values[f'{scope}/biases' if layer_sparsity is not None else f'{scope}/bias'] = (
          rng.standard_normal(shape[-1:]) * 0.1).astype(np.float32)
    if bn:
      channels = shape[-2] if depthwise else shape[-1]
      values[f'{bn}/gamma'] = rng.uniform(GAMMA_RANGE[0], GAMMA_RANGE[1], channels).astype(np.float32)
      values[f'{bn}/beta'] = (rng.standard_normal(channels) * BETA_SCALE).astype(np.float32)
      values[f'{bn}/moving_mean'] = (rng.standard_normal(channels) * 0.1).astype(np.float32)
      values[f'{bn}/moving_variance'] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
  return values


GAMMA_RANGE = (1.0, 4.0)
BETA_SCALE = 0.5


class Calibration(dict):
  """Checkpoint values whose batch-norm statistics the forward pass sets from the activations it normalises."""


def calibrate_batch_norms(values: Dict[str, np.ndarray], forward: Callable, images: np.ndarray) -> None:
  """Sets every batch norm's moving mean and variance to the statistics of its input on `images`.

  Random masked weights shrink the activations layer by layer (a 75 % mask keeps a quarter of the variance), so with
  arbitrary statistics they die out and every image gets the same logits; calibrated, every batch norm hands on
  activations of scale gamma, as a trained network's do, and padding or activation differences reach the logits.
  """
  calibration = Calibration(values)
  forward(images, calibration)
  values.update(calibration)


def save_checkpoint(prefix: str, values: Dict[str, np.ndarray]) -> None:
  """Writes `values` with the TF1 name-based SaveV2 op, as the reference's saver does."""
  names = sorted(values)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[''] * len(names),
                    tensors=[tf.constant(values[name]) for name in names])


def write_reference_checkpoint(prefix: str, layers, sparsity: Callable[[str, Tuple[int, ...]], Optional[float]],
                               seed: int = 0, extra: Optional[Dict[str, np.ndarray]] = None,
                               calibration: Optional[Tuple[Callable, np.ndarray]] = None) -> Dict[str, np.ndarray]:
  """Writes `layers` as a reference checkpoint at `prefix`; returns {name: value} of everything written.

  `calibration` = (forward function, images): batch-norm statistics calibrated on those images (live activations).
  """
  values = reference_values(layers, sparsity, seed)
  if calibration is not None:
    calibrate_batch_norms(values, *calibration)
  values.update(extra or {})
  save_checkpoint(prefix, values)
  return values


# ----------------------------------------------------------------------------------------------------------------------
# The reference forward pass (inference), from resnet_model.py's definition.


def _kernel(values, scope):
  kernel = values.get(f'{scope}/weights', values.get(f'{scope}/kernel'))
  mask = values.get(f'{scope}/mask')
  return kernel if mask is None else kernel * mask


def conv2d_fixed_padding(x, values, scope, stride):
  kernel = _kernel(values, scope)
  if stride > 1:
    total = kernel.shape[0] - 1
    x = tf.pad(x, [[0, 0], [total // 2, total - total // 2], [total // 2, total - total // 2], [0, 0]])
  return tf.nn.conv2d(x, kernel, stride, 'SAME' if stride == 1 else 'VALID')


def batch_norm(x, values, bn, relu=True):
  if isinstance(values, Calibration):
    mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
    values[f'{bn}/moving_mean'], values[f'{bn}/moving_variance'] = mean.numpy(), variance.numpy()
  scale = values[f'{bn}/gamma'] / np.sqrt(values[f'{bn}/moving_variance'] + BN_EPSILON)
  x = (x - values[f'{bn}/moving_mean']) * scale + values[f'{bn}/beta']
  return tf.nn.relu(x) if relu else x


def resnet50_stem(x, values):
  """initial_conv (7x7/2, fixed padding), batch norm, ReLU, 3x3/2 SAME max pool."""
  x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/initial_conv', 2), values, _bn(0))
  return tf.nn.max_pool2d(x, 3, 2, 'SAME')


def resnet50_block(x, values, name, stride, bn, projection):
  """One bottleneck block (stride in the 3x3 convolution); returns (output, next batch-norm index)."""
  shortcut = x
  if projection:
    shortcut = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/bottleneck_projection_{name}', stride), values,
                          _bn(bn), relu=False)
    bn += 1
  x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/bottleneck_1_{name}', 1), values, _bn(bn))
  x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/bottleneck_2_{name}', stride), values, _bn(bn + 1))
  x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/bottleneck_3_{name}', 1), values, _bn(bn + 2),
                 relu=False)
  return tf.nn.relu(x + shortcut), bn + 3


def resnet50_forward(x, values) -> Dict[str, tf.Tensor]:
  """{'stem', 'block1', 'logits'}: the reference's stem output, first bottleneck block output and 1000 logits."""
  outputs = {'stem': resnet50_stem(x, values)}
  x, bn = outputs['stem'], 1
  for group, repeats in enumerate((3, 4, 6, 3), start=1):
    for index in range(repeats):
      name = f'block_group_projection_block_group{group}' if index == 0 else f'block_group{group}_{index}_1'
      x, bn = resnet50_block(x, values, name, 2 if index == 0 and group > 1 else 1, bn, projection=index == 0)
      if group == 1 and index == 0:
        outputs['block1'] = x
  pooled = tf.reduce_mean(x, axis=[1, 2])
  bias = values.get(f'{SCOPE}/final_dense/biases', values.get(f'{SCOPE}/final_dense/bias'))
  outputs['logits'] = tf.matmul(pooled, _kernel(values, f'{SCOPE}/final_dense')) + bias
  return outputs


MOBILENET_V1_STRIDES = {1: 2, 3: 2, 5: 2, 11: 2}  # block_id -> stride (others 1)


def mobilenet_v1_forward(x, values) -> tf.Tensor:
  """The reference MobileNet-v1's 1000 logits (ReLU after every batch norm, fixed padding when strided)."""
  x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/initial_conv', 2), values, _bn(0))
  for block_id in range(13):
    stride = MOBILENET_V1_STRIDES.get(block_id, 1)
    if stride > 1:
      x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    x = tf.nn.depthwise_conv2d(x, values[f'{SCOPE}/depthwise_nxn_{block_id}/depthwise_weights'], [1, stride, stride, 1],
                               'SAME' if stride == 1 else 'VALID')
    x = batch_norm(x, values, _bn(1 + 2 * block_id))
    x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/contraction_1x1_{block_id}', 1), values,
                   _bn(2 + 2 * block_id))
  pooled = tf.reduce_mean(x, axis=[1, 2])
  bias = values.get(f'{SCOPE}/final_dense/biases', values.get(f'{SCOPE}/final_dense/bias'))
  return tf.matmul(pooled, _kernel(values, f'{SCOPE}/final_dense')) + bias


def _depthwise(x, values, scope, stride):
  if stride > 1:
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  return tf.nn.depthwise_conv2d(x, values[f'{scope}/depthwise_weights'], [1, stride, stride, 1],
                                'SAME' if stride == 1 else 'VALID')


def mobilenet_v2_forward(x, values) -> tf.Tensor:
  """The reference MobileNet-v2's 1000 logits (ReLU, linear bottlenecks, residual when shapes allow)."""
  x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/initial_conv', 2), values, _bn(0))
  bn, channels = 1, 32
  for block_id, (filters, stride) in enumerate(MOBILENET_V2_BLOCKS):
    shortcut = x
    if block_id:
      x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/expand_1x1_{block_id}', 1), values, _bn(bn))
      bn += 1
    x = batch_norm(_depthwise(x, values, f'{SCOPE}/depthwise_nxn_{block_id}', stride), values, _bn(bn))
    x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/contraction_1x1_{block_id}', 1), values, _bn(bn + 1),
                   relu=False)
    if channels == filters and stride == 1:
      x += shortcut
    bn, channels = bn + 2, filters
  x = batch_norm(conv2d_fixed_padding(x, values, f'{SCOPE}/final_1x1_conv', 1), values, _bn(bn))
  pooled = tf.reduce_mean(x, axis=[1, 2])
  bias = values.get(f'{SCOPE}/final_dense/biases', values.get(f'{SCOPE}/final_dense/bias'))
  return tf.matmul(pooled, _kernel(values, f'{SCOPE}/final_dense')) + bias
