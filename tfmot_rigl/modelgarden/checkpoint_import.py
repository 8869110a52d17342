"""The published RigL checkpoints (TF1, google-research/rigl `rigl/imagenet_resnet`) as Model Garden checkpoints.

The reference builds ResNet-50 and MobileNet-v1/v2 with TF1 variable scopes: every pruned convolution or dense layer
is a contrib `masked_conv2d` / `masked_fully_connected` under `resnet_model/<layer>/` with `weights`, `mask`,
`threshold` (and `biases` for the head); unpruned ones are plain `tf.layers` (`<layer>/kernel` when built directly,
`<layer>/<layer>/weights` inside `pruning_layers`' renaming scope); depthwise kernels are `depthwise_weights`; batch norms are `tf.layers.batch_normalization`
named `resnet_model/batch_normalization[_N]` in creation order (`gamma`, `beta`, `moving_mean`, `moving_variance`).

`import_checkpoint` reads such a checkpoint with `tf.train.load_checkpoint`, pairs each reference layer with the
layer of the experiment's Model Garden model that plays its role (the pairing follows both networks' structure, not
names), copies every kernel, bias, batch-norm statistic and mask, and writes what `tfm train` would have written:
params.yaml and a Model Garden checkpoint (global_step, model, optimizer) that `tfm train --mode=eval`, `tfm report`
and `tfm export` read. Nothing is written unless every variable maps.

Differences bridged on the way:
  * the reference classifies 1000 classes (labels 0..999, the TFRecord label minus one), Model Garden 1001 (label 0
    is background): the head gets a background column with zero weights, a pruned mask and a bias of
    BACKGROUND_BIAS, so it never wins and classes 1..1000 get the reference's logits;
  * kernels are stored multiplied by their masks (what the reference computes with; this project keeps masked weights
    at zero);
  * the experiment's model is set to the reference's function: `task.model.match_tf1_reference` (fixed padding of
    strided convolutions, ReLU in MobileNets; see `tf1_reference`) and the reference's batch-norm epsilon/momentum.
Optimizer slots and step counters of the reference's training (`global_step`, `*/Momentum`, `last_mask_update_step`)
are not model state and are left out; any other variable the network does not have is an error.
"""
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras
from official.core import config_definitions as cfg
from official.core import task_factory
from official.core import train_utils
from official.vision.modeling.backbones import mobilenet as mg_mobilenet
from official.vision.modeling.layers import nn_blocks
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl import keras as sparse_keras
from tfmot_rigl.modelgarden import resume
from tfmot_rigl.modelgarden import task as sparse_task  # noqa: F401  (registers the sparse task)

SCOPE = 'resnet_model'  # the reference's outer variable scope, for all three networks
BACKGROUND_BIAS = -1e4  # logit of Model Garden's background class 0, which the reference does not have
# The reference's batch norm (resnet_model.BATCH_NORM_DECAY / BATCH_NORM_EPSILON), used by all three networks.
REFERENCE_NORM_MOMENTUM = 0.9
REFERENCE_NORM_EPSILON = 1e-5
# Training state of the reference's TF1 run (optimizer slots, step counters): in the checkpoint, not in the network.
TRAINING_STATE_NAMES = ('global_step', 'last_mask_update_step', 'beta1_power', 'beta2_power')
TRAINING_STATE_SUFFIXES = ('/Momentum', '/Adam', '/Adam_1', '/ExponentialMovingAverage')
BN_VARIABLES = ('gamma', 'beta', 'moving_mean', 'moving_variance')


class CheckpointImportError(ValueError):
  """A checkpoint that cannot be imported as asked; the message is one line saying what is wrong and what to do."""


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


@dataclasses.dataclass
class MappedLayer:
  """What one reference layer became: for the printed table and for checks."""
  source: str  # reference scope, with the variables read, e.g. 'resnet_model/initial_conv/{weights,mask}'
  target: str  # target variables, e.g. 'conv2d/kernel + sparse_wrapper_conv2d/mask'
  shape: Tuple[int, ...]
  sparsity: Optional[float]  # fraction of zeros of the target mask; None for batch norms and unmasked layers

  def line(self) -> str:
    sparsity = '' if self.sparsity is None else f'  sparsity {self.sparsity:.4f}'
    return f'{self.source} -> {self.target}  {list(self.shape)}{sparsity}'


@dataclasses.dataclass
class ImportResult:
  """What `import_checkpoint` wrote and mapped."""
  model_dir: str
  checkpoint_path: str
  architecture: str
  layers: List[MappedLayer]
  source_variables: List[str]  # every variable of the source checkpoint that was read into the model
  skipped_variables: List[str]  # training state left out (optimizer slots, step counters)
  model: keras.Model
  params: cfg.ExperimentConfig

  def lines(self) -> List[str]:
    return [layer.line() for layer in self.layers]


# ----------------------------------------------------------------------------------------------------------------------
# The experiment's architecture and the pairing of its layers with the reference's.


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


# ----------------------------------------------------------------------------------------------------------------------
# Reading the source and filling the model.


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


def is_training_state(name: str) -> bool:
  """Variables of the reference's training run that are not part of the network (optimizer slots, counters)."""
  return name in TRAINING_STATE_NAMES or name.endswith(TRAINING_STATE_SUFFIXES)


def open_checkpoint(source: str):
  """(reader, {name: shape}) of a TF1 or TF2 checkpoint prefix (or a directory: its latest checkpoint)."""
  if not source:
    raise CheckpointImportError('--source is required: the reference checkpoint prefix, e.g. '
                                's80erk1x/model.ckpt-32000 (the files are PREFIX.index and PREFIX.data-*).')
  path = source
  if tf.io.gfile.isdir(source):
    path = tf.train.latest_checkpoint(source)
    if not path:
      raise CheckpointImportError(f'no checkpoint in directory {source!r}; pass a checkpoint prefix such as '
                                  f'{os.path.join(source, "model.ckpt-32000")}.')
  elif not tf.io.gfile.exists(source + '.index'):
    raise CheckpointImportError(f'checkpoint {source!r} not found (no {source}.index); pass the prefix, e.g. '
                                'model.ckpt-32000 for model.ckpt-32000.index and model.ckpt-32000.data-*.')
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.OpError, ValueError) as error:
    message = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise CheckpointImportError(f'cannot read checkpoint {path!r}: {message}') from None
  return reader, reader.get_variable_to_shape_map()


def _short(names: Sequence[str], limit: int = 6) -> str:
  names = sorted(names)
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


class _Source:
  """The source checkpoint's variables, recording which ones were read."""

  def __init__(self, reader, shapes: Dict[str, list]):
    self.reader = reader
    self.shapes = shapes
    self.read: List[str] = []
    self.missing: List[str] = []

  def find(self, scope: str, names: Sequence[str]) -> Optional[str]:
    """The first of scope/name (or scope/<leaf>/name, a tf.layers layer inside a same-named scope) present."""
    leaf = scope.rsplit('/', 1)[-1]
    for name in names:
      for candidate in (f'{scope}/{name}', f'{scope}/{leaf}/{name}'):
        if candidate in self.shapes:
          return candidate
    return None

  def get(self, name: str) -> np.ndarray:
    self.read.append(name)
    return self.reader.get_tensor(name)

  def require(self, scope: str, names: Sequence[str]) -> Optional[str]:
    found = self.find(scope, names)
    if found is None:
      self.missing.append(f'{scope}/{names[0]}')
    return found


def _mask_of(model: keras.Model) -> Dict[int, Tuple[tf.Variable, tf.Variable]]:
  """{id(kernel variable): (mask, threshold)} over every pruning wrapper of the model."""
  found = {}
  for wrapper in sparse_keras.sparse_wrappers(model):
    for weight, mask, threshold in wrapper.pruning_vars:
      found[id(weight)] = (mask, threshold)
  return found


def _name(variable) -> str:
  return variable.name.split(':')[0]


def _with_background(value: np.ndarray, fill: float) -> np.ndarray:
  """Reference head values for classes 0..999 as Model Garden's 1001 classes (background first)."""
  pad = [(0, 0)] * (value.ndim - 1) + [(1, 0)]
  return np.pad(value, pad, constant_values=fill)


def _fill(pairs: List[LayerPair], source: _Source, model: keras.Model) -> Tuple[List[MappedLayer], List[str]]:
  """Assigns every source value to its target variable; returns the mapped layers and the problems found."""
  masks = _mask_of(model)
  mapped, problems, assignments = [], [], []
  for pair in pairs:
    layer = pair.target
    if pair.kind == 'bn':
      names = [source.require(pair.scope, [variable]) for variable in BN_VARIABLES]
      if None in names:
        continue
      targets = [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]
      for name, variable in zip(names, targets):
        if tuple(source.shapes[name]) != tuple(variable.shape):
          problems.append(f'{name} has shape {source.shapes[name]}, the model\'s {_name(variable)} {variable.shape}')
        else:
          assignments.append((variable, source.get(name)))
      mapped.append(MappedLayer(f'{pair.scope}/{{{",".join(BN_VARIABLES)}}}',
                                f'{_name(layer.gamma).rsplit("/", 1)[0]}/{{...}}', tuple(layer.gamma.shape), None))
      continue
    kernel = layer.depthwise_kernel if pair.kind == 'depthwise' else layer.kernel
    kernel_name = source.require(pair.scope, ['depthwise_weights'] if pair.kind == 'depthwise' else
                                 ['weights', 'kernel'])
    if kernel_name is None:
      continue
    value = source.get(kernel_name)
    mask_name = source.find(pair.scope, ['mask'])
    mask = source.get(mask_name) if mask_name else None
    threshold_name = source.find(pair.scope, ['threshold'])
    threshold = source.get(threshold_name) if threshold_name else None
    bias = None
    if pair.kind == 'dense':
      bias_name = source.require(pair.scope, ['biases', 'bias'])
      if bias_name is None:
        continue
      bias = source.get(bias_name)
      if value.shape[-1] + 1 == kernel.shape[-1]:  # 1000 reference classes -> Model Garden's 1001
        value = _with_background(value, 0.0)
        bias = _with_background(bias, BACKGROUND_BIAS)
        mask = _with_background(mask, 0.0) if mask is not None else None
    if tuple(value.shape) != tuple(kernel.shape):
      problems.append(f'{kernel_name} has shape {list(value.shape)}, the model\'s {_name(kernel)} '
                      f'{kernel.shape.as_list()}')
      continue
    if mask is not None and mask.shape != value.shape:
      problems.append(f'{mask_name} has shape {list(mask.shape)}, its weights {list(value.shape)}')
      continue
    target_mask, target_threshold = masks.get(id(kernel), (None, None))
    read = [kernel_name.rsplit('/', 1)[-1]] + (['mask'] if mask_name else [])
    target = _name(kernel)
    sparsity = None
    if target_mask is not None:
      new_mask = np.ones(value.shape) if mask is None else mask
      assignments.append((target_mask, new_mask))
      if threshold is not None:
        assignments.append((target_threshold, np.reshape(threshold, target_threshold.shape)))
      target += f' + {_name(target_mask)}'
      sparsity = float(1.0 - np.count_nonzero(new_mask) / new_mask.size)
    elif mask is not None and np.count_nonzero(mask) != mask.size:
      problems.append(f'{pair.scope} is sparse in the checkpoint ({1 - np.count_nonzero(mask) / mask.size:.3f} '
                      f'zeros) but the experiment keeps {target} dense')
      continue
    # What the reference computes with: its weights times its mask (contrib pruning keeps stale values under 0s).
    assignments.append((kernel, value if mask is None else value * mask))
    if bias is not None:
      assignments.append((layer.bias, bias))
      read.append(bias_name.rsplit('/', 1)[-1])
      target += f' + {_name(layer.bias)}'
    mapped.append(MappedLayer(f'{kernel_name.rsplit("/", 1)[0]}/{{{",".join(read)}}}', target,
                              tuple(value.shape), sparsity))
  if not problems:
    for variable, value in assignments:
      variable.assign(np.asarray(value, dtype=variable.dtype.as_numpy_dtype))
  return mapped, problems


# ----------------------------------------------------------------------------------------------------------------------
# The whole import.


def import_params(params: cfg.ExperimentConfig) -> cfg.ExperimentConfig:
  """The experiment config set to the reference's function (params.yaml of the imported model_dir)."""
  # A fresh (unlocked) copy: `tfm` parses configs locked, and the caller's config stays as it was.
  params = type(params)(default_params=params.as_dict(), restrictions=params.restrictions)
  params.override({'task': {'model': {
      'match_tf1_reference': True,
      'norm_activation': {'norm_momentum': REFERENCE_NORM_MOMENTUM, 'norm_epsilon': REFERENCE_NORM_EPSILON},
  }}}, is_strict=True)
  params.validate()
  params.lock()
  return params


def check_model_dir(model_dir: str) -> None:
  if not model_dir:
    raise CheckpointImportError('--model_dir is required: the new directory for params.yaml and the checkpoint.')
  if tf.io.gfile.exists(os.path.join(model_dir, 'params.yaml')) or tf.train.latest_checkpoint(model_dir):
    raise CheckpointImportError(f'--model_dir {model_dir!r} already holds a run (params.yaml or a checkpoint); '
                                'pass a new or empty directory.')


def import_checkpoint(params: cfg.ExperimentConfig, source: str, model_dir: str,
                      experiment: Optional[str] = None) -> ImportResult:
  """Imports the reference checkpoint `source` into the experiment `params`' model and writes it to `model_dir`.

  Args:
    params: the experiment config (e.g. `resnet_rigl` with an official_configs row); it is set to the reference's
      function (`import_params`) and saved as model_dir/params.yaml.
    source: the TF1 checkpoint prefix (model.ckpt-N) or a directory holding it.
    model_dir: a new or empty directory.
    experiment: the registered experiment `params` comes from, recorded in model_dir as `tfm train` records it (so
      `tfm train`, `tfm report` and `tfm export` check they are given the same one).

  Returns:
    An ImportResult with the per-layer mapping and the filled model.

  Raises:
    CheckpointImportError: a missing or unreadable source, another network's checkpoint, variables the network does
      not have, shape mismatches, masks the experiment cannot hold, or an occupied model_dir; nothing is written.
  """
  check_model_dir(model_dir)
  reader, shapes = open_checkpoint(source)
  architecture = architecture_of(params)
  held = source_architecture(shapes)
  if held is None:
    raise CheckpointImportError(f'{source} is not a RigL reference ResNet-50 / MobileNet checkpoint (its variables: '
                                f'{_short(shapes, 4)}).')
  if held != architecture:
    raise CheckpointImportError(f'{source} holds the reference {held}, the experiment builds {architecture}: use '
                                f'{EXPERIMENT_HINTS[held]}.')
  params = import_params(params)
  task = task_factory.get_task(params.task)
  model = task.build_model()
  pairs = layer_pairs(model, architecture)
  data = _Source(reader, shapes)
  mapped, problems = _fill(pairs, data, model)
  if data.missing:
    raise CheckpointImportError(
        f'{source} is not a reference {architecture} checkpoint (or not the experiment\'s width/classes): '
        f'{len(data.missing)} of its variables are missing, e.g. {_short(data.missing, 4)}.')
  if problems:
    raise CheckpointImportError(f'{len(problems)} layer(s) do not fit: {"; ".join(problems[:3])}'
                                + (f'; and {len(problems) - 3} more' if len(problems) > 3 else '')
                                + ' (for masks: pass the checkpoint\'s row of official_configs/ as --config_file).')
  skipped = sorted(name for name in shapes if is_training_state(name))
  unexpected = sorted(set(shapes) - set(data.read) - set(skipped))
  if unexpected:
    raise CheckpointImportError(f'{source} has {len(unexpected)} variable(s) the reference {architecture} does not: '
                                f'{_short(unexpected)}; it is another network or a modified one.')
  path = write_model_dir(params, task, model, model_dir)
  if experiment:
    resume.record_experiment(model_dir, experiment)
  return ImportResult(model_dir=model_dir, checkpoint_path=path, architecture=architecture, layers=mapped,
                      source_variables=sorted(set(data.read)), skipped_variables=skipped, model=model, params=params)


def write_model_dir(params: cfg.ExperimentConfig, task, model: keras.Model, model_dir: str) -> str:
  """params.yaml and a step-0 checkpoint laid out as Model Garden's trainer writes them; returns the checkpoint."""
  optimizer = train_utils.create_optimizer(task, params)
  global_step = tf.Variable(0, dtype=tf.int64, name='global_step', trainable=False,
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
  # The object graph of official.core.base_trainer.Trainer.checkpoint, so the runner restores it as its own.
  checkpoint = tf.train.Checkpoint(global_step=global_step, model=model, optimizer=optimizer)
  manager = tf.train.CheckpointManager(checkpoint, directory=model_dir, max_to_keep=params.trainer.max_to_keep,
                                       step_counter=global_step,
                                       checkpoint_interval=params.trainer.checkpoint_interval)
  tf.io.gfile.makedirs(model_dir)
  train_utils.serialize_config(params, model_dir)
  return manager.save(checkpoint_number=0)
