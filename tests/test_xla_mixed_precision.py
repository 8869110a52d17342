"""Model Garden sparse steps compiled with XLA and in mixed precision, as the official GPU/TPU trainers run them.

CPU XLA proves the whole step compiles: forward, backward, weight update and every layer's mask update. Model Garden
compiles the task step only on GPUs; `SparseTrainer` (what `tfm train` uses) also compiles it on one CPU device.
"""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from official.core import task_factory
from official.core import train_lib
from official.core import train_utils
from official.modeling import performance

from tfmot_rigl import keras as sparse_keras
from tfmot_rigl.cli import main as cli_main
from tfmot_rigl.core import distributions
from tfmot_rigl.modelgarden import trainer as sparse_trainer
from test_cli_train import QUICK_MNIST
from test_modelgarden_task import TINY_BACKBONES, MaskChangeRecordingTask, jpeg_records, tiny_experiment  # noqa: F401

XLA_FLOAT16 = {'enable_xla': True, 'mixed_precision_dtype': 'float16', 'loss_scale': 'dynamic'}  # stock GPU runtime
XLA_BFLOAT16 = {'enable_xla': True, 'mixed_precision_dtype': 'bfloat16'}  # stock TPU runtime
# Every experiment compiled with XLA, each in one of the two mixed precisions (a compile per run is the cost here).
RUNTIMES = {'resnet_rigl': XLA_FLOAT16, 'wrn_cifar10_rigl': XLA_FLOAT16, 'mobilenet_rigl': XLA_BFLOAT16,
            'mnist_rigl': XLA_BFLOAT16}


@pytest.fixture
def reset_policy():
  yield
  keras.mixed_precision.set_global_policy('float32')


def _assert_exact_masks_and_zero_inactive(model):
  for wrapper in sparse_keras.sparse_wrappers(model):
    for index, (weight, mask, _) in enumerate(wrapper.pruning_vars):
      weight, mask = tf.convert_to_tensor(getattr(weight, '_variable', weight)).numpy(), mask.numpy()
      assert mask.sum() == distributions.nonzeros(mask.size, wrapper.sparsity_of(index)), wrapper.name
      assert np.all(weight[mask == 0] == 0), wrapper.name


@pytest.mark.parametrize('name', sorted(TINY_BACKBONES))
def test_experiment_step_compiles_with_mask_updates(name, jpeg_records, tmp_path, reset_policy):
  params = tiny_experiment(name, jpeg_records, train_steps=3, steps_per_loop=3, runtime=RUNTIMES[name],
                           sparsity={'drop_fraction_anneal': 'constant', 'end_step': 3})
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  with strategy.scope():
    task = MaskChangeRecordingTask(params.task, max_steps=3, logging_dir=str(tmp_path))
    trainer = train_utils.create_trainer(params, task, train=True, evaluate=False,
                                         trainer_cls=sparse_trainer.SparseTrainer)
  assert trainer.compiles_train_step
  train_lib.run_experiment(distribution_strategy=strategy, task=task, mode='train', params=params,
                           model_dir=str(tmp_path), trainer=trainer)

  changed = task.changed_at.numpy()
  if params.runtime.mixed_precision_dtype == 'float16':
    # Dynamic loss scaling may skip a first step whose scaled gradients overflow, and its mask update with it.
    assert changed.sum() >= 1
  else:
    assert changed.tolist() == [1, 1, 1]  # ΔT = 1: every compiled step updated the masks
  wrappers = sparse_keras.sparse_wrappers(trainer.model)
  assert {w.compute_dtype for w in wrappers} == {params.runtime.mixed_precision_dtype}
  _assert_exact_masks_and_zero_inactive(trainer.model)


def _masks(checkpoint):
  reader = tf.train.load_checkpoint(checkpoint)
  return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(checkpoint)
          if '/mask/' in name or name.endswith('/mask/.ATTRIBUTES/VARIABLE_VALUE')}


@pytest.mark.parametrize('method, runtime', [
    ('set', 'runtime.enable_xla=true'),
    ('rigl', 'runtime.enable_xla=true,runtime.mixed_precision_dtype=float16,runtime.loss_scale=dynamic'),
    ('snfs', 'runtime.enable_xla=true,runtime.mixed_precision_dtype=bfloat16'),
])
def test_tfm_train_compiles_each_dynamic_method(method, runtime, tmp_path, reset_policy):
  model_dir = str(tmp_path / 'run')
  quick = QUICK_MNIST.replace('task.sparsity.update_frequency=2', 'task.sparsity.update_frequency=1')
  override = (f'{quick},trainer.train_steps=4,trainer.checkpoint_interval=2,'
              f'task.sparsity.method={method},runtime.distribution_strategy=one_device,{runtime}')
  assert cli_main.main(['train', '--experiment=mnist_rigl', f'--model_dir={model_dir}', '--mode=train',
                        f'--params_override={override}']) == 0
  first, second = (_masks(os.path.join(model_dir, f'ckpt-{step}')) for step in (2, 4))
  assert first and first.keys() == second.keys()
  assert any(np.any(first[name] != second[name]) for name in first)  # steps 2 and 3 updated the masks
  for name in first:
    assert first[name].sum() == second[name].sum(), name  # exact nnz
