"""Model Garden configs for sparse training: the `task.sparsity` block and the registered experiments.

Follows Model Garden's project layout (compare `official/projects/pruning/configs`): a config dataclass for the new
block, a task config that adds it to the stock image-classification task, and `exp_factory` experiments with the
paper's settings. Every field can be set from YAML (`--config_file`) or `--params_override`.
"""
import dataclasses
import os
from typing import Dict, List

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import optimization
from official.vision.configs import backbones as stock_backbones
from official.vision.configs import common
from official.vision.configs import image_classification as stock

from tfmot_rigl.modelgarden import backbones
from tfmot_rigl.modelgarden import field_checks
from tfmot_rigl.modelgarden import sparsity_config
from tfmot_rigl.modelgarden import summaries

METHODS = sparsity_config.METHODS
SparsityConfig = sparsity_config.SparsityConfig

# Names of the experiments this package registers (what `tfm experiments` lists).
EXPERIMENTS: Dict[str, str] = {}


def _register(name: str, summary: str):
  """Registers an experiment factory with Model Garden and records its one-line summary."""
  def decorator(factory):
    EXPERIMENTS[name] = summary
    return exp_factory.register_config_factory(name)(factory)
  return decorator


@dataclasses.dataclass
class SparseDataConfig(stock.DataConfig):
  """Model Garden's classification input plus CIFAR's standard augmentation.

  Attributes:
    pad_and_crop: training only: pad each image by this many zero pixels per side (after normalisation), then crop a
      random window of the input size, as the reference's CIFAR-10 input does (4). 0 disables it.
  """
  pad_and_crop: int = 0


@dataclasses.dataclass
class SparseImageClassificationModel(stock.ImageClassificationModel):
  """The stock classification model whose backbone may also be one of this package's (wide_resnet, mlp)."""
  backbone: backbones.SparseBackbone = dataclasses.field(
      default_factory=lambda: backbones.SparseBackbone(type='resnet', resnet=stock_backbones.ResNet()))
  # Compute what the TF1 reference networks compute (fixed padding of strided convolutions; ReLU in MobileNets):
  # set by `tfm import-checkpoint` for the published RigL checkpoints (tfmot_rigl.modelgarden.tf1_reference).
  match_tf1_reference: bool = False


@dataclasses.dataclass
class SparseImageClassificationTask(stock.ImageClassificationTask):
  """The stock image-classification task plus a `sparsity` block.

  Attributes:
    train_microbatches: split each replica's training batch into this many equal micro-batches, one forward and
      backward pass each, their gradients summed into one update: the update that many replicas sharing the batch
      make (one worker with 2 reproduces a 2-worker run), with the activations of one micro-batch in memory at a
      time. 1 (default) is Model Garden's own train step.
  """
  model: SparseImageClassificationModel = dataclasses.field(default_factory=SparseImageClassificationModel)
  train_data: SparseDataConfig = dataclasses.field(default_factory=lambda: SparseDataConfig(is_training=True))
  validation_data: SparseDataConfig = dataclasses.field(default_factory=lambda: SparseDataConfig(is_training=False))
  sparsity: SparsityConfig = dataclasses.field(default_factory=SparsityConfig)
  monitoring: summaries.MonitoringConfig = dataclasses.field(default_factory=summaries.MonitoringConfig)
  train_microbatches: int = 1

  def validate(self):
    super().validate()
    count = self.train_microbatches
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
      raise ValueError(f'task.train_microbatches={count!r} must be a positive int (1: no micro-batches).')
    if count > 1 and self.train_data.global_batch_size % count:
      raise ValueError(f'task.train_microbatches={count} does not divide task.train_data.global_batch_size='
                       f'{self.train_data.global_batch_size}; choose a divisor of the batch.')
    if count > 1 and self.losses.use_binary_cross_entropy:
      raise ValueError('task.train_microbatches > 1 works with the softmax cross-entropy loss; set '
                       'task.losses.use_binary_cross_entropy=false or train_microbatches=1.')


@dataclasses.dataclass
class SparseExperimentConfig(cfg.ExperimentConfig):
  """An experiment whose validation also checks `task.sparsity` and ties its step fractions to the trainer."""
  task: SparseImageClassificationTask = dataclasses.field(default_factory=SparseImageClassificationTask)

  def validate(self):
    super().validate()
    sparsity = self.task.sparsity
    if sparsity.total_steps is None and self.trainer.train_steps > 0 and not getattr(sparsity, '_locked', False):
      # The task only sees task config, so fractional begin/end steps get the trainer's horizon here, the one
      # place (after every override, before the lock) that sees both.
      sparsity.total_steps = self.trainer.train_steps
    sparsity.validate()
    self.task.validate()
    field_checks.check_trainer(self.trainer)
    field_checks.check_runtime(self.runtime)
    data_configs = (('task.train_data', self.task.train_data), ('task.validation_data', self.task.validation_data))
    for what, data in data_configs:
      field_checks.check_data(data, what)
    field_checks.check_input_size(self.task.model.input_size,
                                  any(data.tfds_name == field_checks.MNIST_TFDS_NAME for _, data in data_configs))


_RESTRICTIONS = ['task.train_data.is_training != None', 'task.validation_data.is_training != None']


def _stepwise_sgd(base_lr: float, boundaries: List[int], multipliers: List[float], warmup_steps: int = 0,
                  momentum: float = 0.9, nesterov: bool = True) -> optimization.OptimizationConfig:
  """SGD with (Nesterov) momentum and a piecewise-constant learning rate base_lr · multipliers[i]."""
  config = {
      'optimizer': {'type': 'sgd', 'sgd': {'momentum': momentum, 'nesterov': nesterov}},
      'learning_rate': {'type': 'stepwise', 'stepwise': {
          'boundaries': boundaries, 'values': [round(base_lr * m, 8) for m in multipliers]}},
  }
  if warmup_steps:
    config['warmup'] = {'type': 'linear', 'linear': {'warmup_steps': warmup_steps, 'warmup_learning_rate': 0.0}}
  return optimization.OptimizationConfig(config)


def _trainer(train_steps: int, steps_per_loop: int, validation_steps: int, optimizer_config,
             max_to_keep: int = 5, every_n_loops: int = 1) -> cfg.TrainerConfig:
  return cfg.TrainerConfig(
      train_steps=train_steps,
      steps_per_loop=steps_per_loop,
      summary_interval=steps_per_loop,
      checkpoint_interval=steps_per_loop * every_n_loops,
      validation_interval=steps_per_loop * every_n_loops,
      validation_steps=validation_steps,
      max_to_keep=max_to_keep,
      best_checkpoint_eval_metric='accuracy',
      best_checkpoint_metric_comp='higher',
      optimizer_config=optimizer_config)


# ImageNet, as the reference's ResNet-50 runs: batch 4096, 32k steps (~102 epochs) at 1x, base LR 0.1 per 256
# examples, 5 warm-up epochs, LR ×0.1 at epochs 30, 70 and 90, Nesterov momentum 0.9, L2 1e-4, label smoothing 0.1.
IMAGENET_BATCH_SIZE = 4096
IMAGENET_TRAIN_STEPS = 32000
IMAGENET_STEPS_PER_EPOCH = stock.IMAGENET_TRAIN_EXAMPLES / IMAGENET_BATCH_SIZE
IMAGENET_INPUT_PATH_BASE = stock.IMAGENET_INPUT_PATH_BASE


def imagenet_optimizer() -> optimization.OptimizationConfig:
  """The reference's ResNet-50 ImageNet schedule (official_configs/generate.py stretches it for 5x runs)."""
  epoch = IMAGENET_STEPS_PER_EPOCH
  return _stepwise_sgd(
      base_lr=0.1 * IMAGENET_BATCH_SIZE / 256,
      boundaries=[int(30 * epoch), int(70 * epoch), int(90 * epoch)],
      multipliers=[1.0, 0.1, 0.01, 0.001],
      warmup_steps=int(5 * epoch))


def _imagenet_task(backbone: backbones.SparseBackbone, sparsity: SparsityConfig, dropout_rate: float = 0.0,
                   l2_weight_decay: float = 1e-4, norm_momentum: float = 0.9,
                   norm_epsilon: float = 1e-5) -> SparseImageClassificationTask:
  return SparseImageClassificationTask(
      model=SparseImageClassificationModel(
          num_classes=1001,
          input_size=[224, 224, 3],
          backbone=backbone,
          dropout_rate=dropout_rate,
          norm_activation=common.NormActivation(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
                                                use_sync_bn=False)),
      losses=stock.Losses(l2_weight_decay=l2_weight_decay, label_smoothing=0.1),
      train_data=SparseDataConfig(input_path=os.path.join(IMAGENET_INPUT_PATH_BASE, 'train*'), is_training=True,
                                  global_batch_size=IMAGENET_BATCH_SIZE),
      validation_data=SparseDataConfig(input_path=os.path.join(IMAGENET_INPUT_PATH_BASE, 'valid*'),
                                       is_training=False, global_batch_size=IMAGENET_BATCH_SIZE,
                                       drop_remainder=False),
      sparsity=sparsity)


def _accelerator_runtime() -> cfg.RuntimeConfig:
  # XLA on, as a fast dense run would have it: the sparse layers add no merge_call to the forward pass and the mask
  # update keeps static shapes, so Model Garden's jit-compiled train step (GPUs; TPUs compile everything) takes the
  # whole sparse step. SparseTrainer also compiles it on one CPU device.
  return cfg.RuntimeConfig(enable_xla=True)


def _imagenet_trainer(optimizer_config) -> cfg.TrainerConfig:
  steps_per_epoch = int(IMAGENET_STEPS_PER_EPOCH)
  return _trainer(train_steps=IMAGENET_TRAIN_STEPS, steps_per_loop=steps_per_epoch,
                  validation_steps=-(-stock.IMAGENET_VAL_EXAMPLES // IMAGENET_BATCH_SIZE),
                  optimizer_config=optimizer_config)


@_register('resnet_rigl', 'ImageNet ResNet-50, RigL ERK 80% (paper 1x: 32k steps at batch 4096, dT=100, '
           'alpha=0.3 cosine, updates end at 75%)')
def resnet_rigl() -> SparseExperimentConfig:
  """ResNet-50 on ImageNet with the paper's RigL settings."""
  return SparseExperimentConfig(
      runtime=_accelerator_runtime(),
      task=_imagenet_task(
          backbone=backbones.SparseBackbone(type='resnet', resnet=stock_backbones.ResNet(model_id=50)),
          sparsity=SparsityConfig(method='rigl', sparsity=0.8, distribution='erk')),
      trainer=_imagenet_trainer(imagenet_optimizer()),
      restrictions=list(_RESTRICTIONS))


@_register('mobilenet_rigl', 'ImageNet MobileNet-v1 (v2 by model_id override), RigL uniform 75%, '
           'depthwise kernels dense')
def mobilenet_rigl() -> SparseExperimentConfig:
  """MobileNet-v1 on ImageNet; the reference keeps the depthwise kernels and the first layer dense."""
  epoch = IMAGENET_STEPS_PER_EPOCH
  # The reference's MobileNet schedule: 8 warm-up epochs, LR ×0.1 at 40, ×0.01 at 75, ×0.001 at 95 epochs.
  optimizer_config = _stepwise_sgd(
      base_lr=0.1 * IMAGENET_BATCH_SIZE / 256,
      boundaries=[int(40 * epoch), int(75 * epoch), int(95 * epoch)],
      multipliers=[1.0, 0.1, 0.01, 0.001],
      warmup_steps=int(8 * epoch))
  return SparseExperimentConfig(
      runtime=_accelerator_runtime(),
      task=_imagenet_task(
          backbone=backbones.SparseBackbone(
              type='mobilenet', mobilenet=stock_backbones.MobileNet(model_id='MobileNetV1', filter_size_scale=1.0)),
          sparsity=SparsityConfig(method='rigl', sparsity=0.75, distribution='uniform', sparsify_depthwise=False),
          dropout_rate=0.2, l2_weight_decay=4e-5, norm_momentum=0.997, norm_epsilon=1e-3),
      trainer=_imagenet_trainer(optimizer_config),
      restrictions=list(_RESTRICTIONS))


# CIFAR-10 as the reference's WideResNet runs: batch 128, 97,656 steps (250 epochs), LR 0.1 divided by 5 at 30k,
# 60k and 90k steps, Nesterov momentum 0.9, L2 5e-4.
CIFAR10_TRAIN_EXAMPLES = 50000
CIFAR10_TEST_EXAMPLES = 10000
CIFAR10_BATCH_SIZE = 128
CIFAR10_TRAIN_STEPS = 97656


@_register('wrn_cifar10_rigl', 'CIFAR-10 WideResNet-22-2, RigL ERK 90% (batch 128, ~250 epochs, momentum 0.9, '
           'L2 5e-4); TFDS cifar10 or JPEG TFRecords')
def wrn_cifar10_rigl() -> SparseExperimentConfig:
  """WideResNet-22-2 on CIFAR-10 with the reference's settings."""
  steps_per_epoch = CIFAR10_TRAIN_EXAMPLES // CIFAR10_BATCH_SIZE
  eval_batch_size = 500
  # The reference's augmentation: random flips and 4-pixel pad-and-crop (not the ImageNet-style area crop).
  data = dict(tfds_name='cifar10', aug_rand_hflip=True, aug_crop=False, shuffle_buffer_size=CIFAR10_TRAIN_EXAMPLES)
  return SparseExperimentConfig(
      runtime=_accelerator_runtime(),
      task=SparseImageClassificationTask(
          model=SparseImageClassificationModel(
              num_classes=10,
              input_size=[32, 32, 3],
              backbone=backbones.SparseBackbone(type='wide_resnet', wide_resnet=backbones.WideResNet(
                  depth=22, width_multiplier=2)),
              norm_activation=common.NormActivation(norm_momentum=0.9, norm_epsilon=1e-5, use_sync_bn=False)),
          losses=stock.Losses(l2_weight_decay=5e-4),
          train_data=SparseDataConfig(tfds_split='train', is_training=True, global_batch_size=CIFAR10_BATCH_SIZE,
                                      pad_and_crop=4, **data),
          validation_data=SparseDataConfig(tfds_split='test', is_training=False, global_batch_size=eval_batch_size,
                                           **data),
          sparsity=SparsityConfig(method='rigl', sparsity=0.9, distribution='erk')),
      trainer=_trainer(
          train_steps=CIFAR10_TRAIN_STEPS, steps_per_loop=steps_per_epoch,
          validation_steps=CIFAR10_TEST_EXAMPLES // eval_batch_size,
          optimizer_config=_stepwise_sgd(base_lr=0.1, boundaries=[30000, 60000, 90000],
                                         multipliers=[1.0, 1 / 5, 1 / 25, 1 / 125])),
      restrictions=list(_RESTRICTIONS))


MNIST_TRAIN_EXAMPLES = 60000
MNIST_TEST_EXAMPLES = 10000
MNIST_BATCH_SIZE = 100
MNIST_EPOCHS = 10


@_register('mnist_rigl', 'MNIST 784-300-100-10 MLP, RigL ERK 90%; a few minutes on a laptop CPU')
def mnist_rigl() -> SparseExperimentConfig:
  """The paper's MNIST fully connected network, shortened so it trains in minutes on CPU.

  The reference trains 200 epochs at batch 100 with Nesterov momentum 0.9 and LR 0.2; 10 epochs with the same
  optimizer and a step decay already reach ~98% at 90% sparsity.
  """
  steps_per_epoch = MNIST_TRAIN_EXAMPLES // MNIST_BATCH_SIZE
  train_steps = MNIST_EPOCHS * steps_per_epoch
  eval_batch_size = 1000
  return SparseExperimentConfig(
      task=SparseImageClassificationTask(
          model=SparseImageClassificationModel(
              num_classes=10,
              input_size=[28, 28, 1],
              backbone=backbones.SparseBackbone(type='mlp', mlp=backbones.MLP(hidden_sizes=[300, 100])),
              kernel_initializer='glorot_uniform'),
          losses=stock.Losses(l2_weight_decay=1e-4),
          train_data=SparseDataConfig(tfds_name='mnist', tfds_split='train', is_training=True,
                                      global_batch_size=MNIST_BATCH_SIZE, shuffle_buffer_size=MNIST_TRAIN_EXAMPLES),
          validation_data=SparseDataConfig(tfds_name='mnist', tfds_split='test', is_training=False,
                                           global_batch_size=eval_batch_size),
          sparsity=SparsityConfig(method='rigl', sparsity=0.9, distribution='erk')),
      # One loop per mask update (ΔT = 100), so each update gets its own progress line and summaries;
      # evaluation and checkpoints stay once per epoch.
      trainer=_trainer(
          train_steps=train_steps, steps_per_loop=100, every_n_loops=steps_per_epoch // 100,
          validation_steps=MNIST_TEST_EXAMPLES // eval_batch_size,
          optimizer_config=_stepwise_sgd(base_lr=0.2, boundaries=[int(0.5 * train_steps), int(0.75 * train_steps)],
                                         multipliers=[1.0, 1 / 3, 1 / 9])),
      restrictions=list(_RESTRICTIONS))
