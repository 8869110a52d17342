"""The published RigL checkpoints (TF1, google-research/rigl `rigl/imagenet_resnet`) as Model Garden checkpoints.

`import_checkpoint` reads such a checkpoint by the reference's TF1 variable names (`reference_checkpoint`), pairs each
reference layer with the layer of the experiment's Model Garden model that plays its role (`reference_layers`; the
pairing follows both networks' structure, not names), copies every kernel, bias, batch-norm statistic and mask, and
writes what `tfm train` would have written: params.yaml and a Model Garden checkpoint (global_step, model, optimizer)
that `tfm train --mode=eval`, `tfm report` and `tfm export` read. Nothing is written unless every variable maps.

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
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras
from official.core import config_definitions as cfg
from official.core import task_factory
from official.core import train_utils

from tfmot_rigl import keras as sparse_keras
from tfmot_rigl.modelgarden import import_checks
from tfmot_rigl.modelgarden import resume
from tfmot_rigl.modelgarden import task as sparse_task  # noqa: F401  (registers the sparse task)
# The import's API (`tfm import-checkpoint` and tests use them through this module).
from tfmot_rigl.modelgarden.reference_checkpoint import (CheckpointImportError, SourceVariables, is_training_state,
                                                         open_checkpoint, short_names)
from tfmot_rigl.modelgarden.reference_layers import (EXPERIMENT_HINTS, LayerPair, architecture_of, layer_pairs,
                                                     source_architecture)

BACKGROUND_BIAS = -1e4  # logit of Model Garden's background class 0, which the reference does not have
# The reference's batch norm (resnet_model.BATCH_NORM_DECAY / BATCH_NORM_EPSILON), used by all three networks.
REFERENCE_NORM_MOMENTUM = 0.9
REFERENCE_NORM_EPSILON = 1e-5
BN_VARIABLES = ('gamma', 'beta', 'moving_mean', 'moving_variance')


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
# Filling the model from the source.


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


def _fill(pairs: List[LayerPair], source: SourceVariables, model: keras.Model) -> Tuple[List[MappedLayer], List[str]]:
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
                                f'{short_names(shapes, 4)}).')
  if held != architecture:
    raise CheckpointImportError(f'{source} holds the reference {held}, the experiment builds {architecture}: use '
                                f'{EXPERIMENT_HINTS[held]}.')
  params = import_params(params)
  task = task_factory.get_task(params.task)
  model = task.build_model()
  pairs = layer_pairs(model, architecture)
  data = SourceVariables(reader, shapes)
  configured = import_checks.mask_sparsities(model)
  mapped, problems = _fill(pairs, data, model)
  if data.missing:
    raise CheckpointImportError(
        f'{source} is not a reference {architecture} checkpoint (or not the experiment\'s width/classes): '
        f'{len(data.missing)} of its variables are missing, e.g. {short_names(data.missing, 4)}.')
  if problems:
    raise CheckpointImportError(f'{len(problems)} layer(s) do not fit: {"; ".join(problems[:3])}'
                                + (f'; and {len(problems) - 3} more' if len(problems) > 3 else '')
                                + ' (for masks: pass the checkpoint\'s row of official_configs/ as --config_file).')
  skipped = sorted(name for name in shapes if is_training_state(name))
  unexpected = sorted(set(shapes) - set(data.read) - set(skipped))
  if unexpected:
    raise CheckpointImportError(f'{source} has {len(unexpected)} variable(s) the reference {architecture} does not: '
                                f'{short_names(unexpected)}; it is another network or a modified one.')
  contradiction = import_checks.contradiction(params, configured, import_checks.mask_sparsities(model))
  if contradiction:
    raise CheckpointImportError(contradiction)
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
