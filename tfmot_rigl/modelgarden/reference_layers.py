"""Which layer of a Model Garden ResNet-50 / MobileNet-v1 / v2 plays each layer of the RigL reference network.

The reference (google-research/rigl `rigl/imagenet_resnet`) builds its networks with TF1 variable scopes: every
pruned convolution or dense layer is a contrib `masked_conv2d` / `masked_fully_connected` under `resnet_model/<layer>/`
(`weights`, `mask`, `threshold`, and `biases` for the head); unpruned ones are plain `tf.layers` (`<layer>/kernel`
when built directly, `<layer>/<layer>/weights` inside `pruning_layers`' renaming scope); depthwise kernels are
`depthwise_weights`; batch norms are `tf.layers.batch_normalization` named `resnet_model/batch_normalization[_N]` in
creation order. `layer_pairs` pairs each reference scope with the Model Garden layer that computes the same thing,
following both networks' structure (block by block), not names; `architecture_of` says which reference network an
experiment builds and `source_architecture` which one a checkpoint holds.
"""
import dataclasses
from typing import Dict, List, Optional

import tf_keras as keras
from official.core import config_definitions as cfg
from official.vision.modeling.backbones import mobilenet as mg_mobilenet
from official.vision.modeling.layers import nn_blocks
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl.modelgarden.reference_checkpoint import CheckpointImportError

SCOPE = 'resnet_model'  # the reference's outer variable scope, for all three networks


@dataclasses.dataclass
class LayerPair:
  """One reference layer and the Model Garden layer that computes the same thing.

  Attributes:
    scope: the reference's variable scope of the layer (e.g. 'resnet_model/bottleneck_2_block_group1_1_1').
    target: the Model Garden layer (Conv2D, DepthwiseConv2D, Dense or BatchNormalization).
    kind: 'conv', 'depthwise', 'dense' or 'bn'.
  """
  scope: str
  target: keras.layers.Layer
  kind: str


def architecture_of(params: cfg.ExperimentConfig) -> str:
  """'resnet50', 'mobilenet_v1' or 'mobilenet_v2': the reference network the experiment's model can take."""
  backbone = params.task.model.backbone
  if backbone.type == 'resnet' and backbone.resnet.model_id == 50:
    resnet = backbone.resnet
    if (resnet.stem_type, resnet.resnetd_shortcut, resnet.replace_stem_max_pool, resnet.se_ratio or 0.0,
        resnet.depth_multiplier) != ('v0', False, False, 0.0, 1.0):
      raise CheckpointImportError(
          'the reference ResNet-50 is the plain v1.5 network; the experiment\'s task.model.backbone.resnet differs '
          f'(stem_type={resnet.stem_type}, resnetd_shortcut={resnet.resnetd_shortcut}, '
          f'replace_stem_max_pool={resnet.replace_stem_max_pool}, se_ratio={resnet.se_ratio}, '
          f'depth_multiplier={resnet.depth_multiplier}); drop those overrides.')
    return 'resnet50'
  if backbone.type == 'mobilenet' and backbone.mobilenet.model_id in ('MobileNetV1', 'MobileNetV2'):
    if backbone.mobilenet.filter_size_scale != 1.0:
      raise CheckpointImportError('the published MobileNets have width 1.0; drop the override of '
                                  'task.model.backbone.mobilenet.filter_size_scale.')
    return {'MobileNetV1': 'mobilenet_v1', 'MobileNetV2': 'mobilenet_v2'}[backbone.mobilenet.model_id]
  model_id = getattr(backbone.get(), 'model_id', '')
  raise CheckpointImportError(
      f'the reference checkpoints are ResNet-50 and MobileNet-v1/v2; the experiment\'s backbone is {backbone.type} '
      f'{model_id}: use --experiment=resnet_rigl or --experiment=mobilenet_rigl.')


def _unwrap(layer):
  return layer.layer if isinstance(layer, pruning_wrapper.PruneLowMagnitude) else layer


def _graph_layers(model: keras.Model) -> List[keras.layers.Layer]:
  """Layers of the functional graph(s), nested models flattened, wrappers removed, in order."""
  found = []
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      found += _graph_layers(layer)
    elif not isinstance(layer, keras.layers.InputLayer):
      found.append(_unwrap(layer))
  return found


def _of_type(layers, cls) -> list:
  return [layer for layer in layers if isinstance(layer, cls)]


def _bn_scope(index: int) -> str:
  return f'{SCOPE}/batch_normalization' + (f'_{index}' if index else '')


class _Pairs:
  """Builds the list of LayerPairs, numbering the reference's batch norms in their creation order."""

  def __init__(self):
    self.pairs: List[LayerPair] = []
    self.bn_count = 0

  def conv(self, name: str, conv, norm=None, kind: str = 'conv'):
    self.pairs.append(LayerPair(f'{SCOPE}/{name}', conv, kind))
    if norm is not None:
      self.pairs.append(LayerPair(_bn_scope(self.bn_count), norm, 'bn'))
      self.bn_count += 1


def _head(layers) -> keras.layers.Dense:
  dense = _of_type(layers, keras.layers.Dense)
  if len(dense) != 1:
    raise CheckpointImportError(f'expected one classification head, found {len(dense)} Dense layers; the model is '
                                'not the stock Model Garden classifier.')
  return dense[0]


def resnet50_pairs(model: keras.Model) -> List[LayerPair]:
  """Reference ResNet-50 (resnet_model.resnet_v1_, bottleneck blocks [3, 4, 6, 3]) against Model Garden's ResNet-50.

  Per block the reference creates the projection (first block of a group only) and then bottleneck_1/2/3, each
  followed by its batch norm; Model Garden's BottleneckBlock holds them as _shortcut/_norm0, _conv1/_norm1, ...
  """
  # pylint: disable=protected-access
  layers = _graph_layers(model)
  blocks = _of_type(layers, nn_blocks.BottleneckBlock)
  if len(blocks) != 16:
    raise CheckpointImportError(f'expected ResNet-50\'s 16 bottleneck blocks, found {len(blocks)}.')
  pairs = _Pairs()
  stem, stem_norm = _of_type(layers, keras.layers.Conv2D)[0], _of_type(layers, keras.layers.BatchNormalization)[0]
  pairs.conv('initial_conv', stem, stem_norm)
  block_iter = iter(blocks)
  for group, repeats in enumerate((3, 4, 6, 3), start=1):
    for index in range(repeats):
      block = next(block_iter)
      name = f'block_group_projection_block_group{group}' if index == 0 else f'block_group{group}_{index}_1'
      if index == 0:
        pairs.conv(f'bottleneck_projection_{name}', block._shortcut, block._norm0)
      parts = [(block._conv1, block._norm1), (block._conv2, block._norm2), (block._conv3, block._norm3)]
      for part, (conv, norm) in enumerate(parts, start=1):
        pairs.conv(f'bottleneck_{part}_{name}', conv, norm)
  pairs.conv('final_dense', _head(layers), kind='dense')
  return pairs.pairs


def mobilenet_pairs(model: keras.Model, version: int) -> List[LayerPair]:
  """Reference MobileNet-v1 / v2 (mobilenetv1_model.py / mobilenetv2_model.py) against Model Garden's MobileNet."""
  # pylint: disable=protected-access
  layers = _graph_layers(model)
  stems = _of_type(layers, mg_mobilenet.Conv2DBNBlock)
  pairs = _Pairs()
  pairs.conv('initial_conv', stems[0]._conv0, stems[0]._norm0)
  if version == 1:
    blocks = _of_type(layers, nn_blocks.DepthwiseSeparableConvBlock)
    if len(blocks) != 13:
      raise CheckpointImportError(f'expected MobileNet-v1\'s 13 depthwise-separable blocks, found {len(blocks)}.')
    for block_id, block in enumerate(blocks):
      pairs.conv(f'depthwise_nxn_{block_id}', block._dwconv0, block._norm0, kind='depthwise')
      pairs.conv(f'contraction_1x1_{block_id}', block._conv1, block._norm1)
  else:
    blocks = _of_type(layers, nn_blocks.InvertedBottleneckBlock)
    if len(blocks) != 17 or len(stems) != 2:
      raise CheckpointImportError(f'expected MobileNet-v2\'s 17 inverted bottlenecks and 2 conv-bn blocks, found '
                                  f'{len(blocks)} and {len(stems)}.')
    for block_id, block in enumerate(blocks):
      if block_id:  # the first block has no expansion, in both networks
        pairs.conv(f'expand_1x1_{block_id}', block._conv0, block._norm0)
      pairs.conv(f'depthwise_nxn_{block_id}', block._conv1, block._norm1, kind='depthwise')
      pairs.conv(f'contraction_1x1_{block_id}', block._conv2, block._norm2)
    pairs.conv('final_1x1_conv', stems[1]._conv0, stems[1]._norm0)
  pairs.conv('final_dense', _head(layers), kind='dense')
  return pairs.pairs


def layer_pairs(model: keras.Model, architecture: str) -> List[LayerPair]:
  if architecture == 'resnet50':
    return resnet50_pairs(model)
  return mobilenet_pairs(model, version=1 if architecture == 'mobilenet_v1' else 2)


# A layer scope only one of the reference networks has, tried in this order.
_MARKERS = (('resnet50', '/bottleneck_'), ('mobilenet_v2', '/expand_1x1_'), ('mobilenet_v1', '/contraction_1x1_'))
EXPERIMENT_HINTS = {
    'resnet50': '--experiment=resnet_rigl',
    'mobilenet_v1': '--experiment=mobilenet_rigl',
    'mobilenet_v2': '--experiment=mobilenet_rigl --params_override=task.model.backbone.mobilenet.model_id=MobileNetV2',
}


def source_architecture(shapes: Dict[str, list]) -> Optional[str]:
  """Which reference network a checkpoint's variable names belong to (None: none of them)."""
  for architecture, marker in _MARKERS:
    if any(name.startswith(SCOPE + '/') and marker in name for name in shapes):
      return architecture
  return None
