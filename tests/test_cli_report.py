"""`tfm report`: per-layer sparsity, FLOPs and size, and training FLOPs, from a config alone or a checkpoint."""
import json

import numpy as np
import pytest
import tensorflow as tf
from official.core import exp_factory
from official.core import train_utils

import tfmot_rigl
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.export import saved_model
from tfmot_rigl.modelgarden import configs

# Keeps the ImageNet models quick to build (a 1/16-width ResNet-50, a quarter-width MobileNet at 64×64).
SMALL = {
    'resnet_rigl': 'task.model.backbone.resnet.depth_multiplier=0.25,task.model.input_size=[64,64,3]',
    'mobilenet_rigl': 'task.model.backbone.mobilenet.filter_size_scale=0.25,task.model.input_size=[64,64,3]',
}
MLP_SHAPES = {'hidden_1': (784, 300), 'hidden_2': (300, 100), 'dense': (100, 10)}


def _report(capsys, *args):
  assert tfm.main(['report', *args, '--json']) == 0
  return json.loads(capsys.readouterr().out)


def _kernel_rows(report):
  return {row['name']: row for row in report['layers'] if row['density'] is not None}


@pytest.mark.parametrize('experiment', sorted(configs.EXPERIMENTS))
def test_every_registered_experiment_reports_from_its_config(experiment, capsys):
  overrides = [f'--params_override={SMALL[experiment]}'] if experiment in SMALL else []
  report = _report(capsys, f'--experiment={experiment}', *overrides)
  target = report['config']['sparsity']
  totals, training = report['totals'], report['training']
  assert report['config']['method'] == 'rigl' and report['config']['masks'].startswith('config')
  assert 0 < totals['flops_ratio'] < 1 and 0 < totals['size_ratio'] < 1 and 0 < training['flops_ratio'] < 1
  rows = _kernel_rows(report)
  sparsified = [1 - row['density'] for row in rows.values() if row['density'] < 1]
  assert sparsified
  if report['config']['distribution'] == 'erk':
    assert abs(totals['kernel_sparsity'] - target) < 1e-3  # ERK spreads the target over every kernel
  else:  # uniform: each sparsified kernel at the target; the first layer (and depthwise kernels) stay dense
    assert np.allclose(sparsified, target, atol=1e-3)
    assert totals['kernel_sparsity'] < target


def test_mnist_rows_follow_the_erk_distribution_and_render_as_markdown(capsys):
  report = _report(capsys, '--experiment=mnist_rigl')
  rows = _kernel_rows(report)
  expected = tfmot_rigl.layer_sparsities(MLP_SHAPES, 0.9, 'erk')
  # (The logits layer's name depends on how many Dense layers this process has made: compare in model order.)
  assert [tuple(row['kernel_shape']) for row in rows.values()] == list(MLP_SHAPES.values())
  for row, (name, shape) in zip(rows.values(), MLP_SHAPES.items()):
    size = int(np.prod(shape))
    assert row['density'] * size == size - int(expected[name] * size)  # floor(s·N) zeros, as the masks
  training = report['training']
  assert (training['steps'], training['batch_size']) == (6000, 100)  # mnist_rigl: 10 epochs at batch 100

  assert tfm.main(['report', '--experiment=mnist_rigl']) == 0
  markdown = capsys.readouterr().out
  assert '| layer | kernel | sparsity | nnz | FLOPs | dense FLOPs | size (bits) |' in markdown
  hidden_1 = next(line for line in markdown.splitlines() if line.startswith('| hidden_1 |'))
  assert f"| 784×300 | {expected['hidden_1']:.4f} |" in hidden_1
  assert '| inference FLOPs / example |' in markdown and '| training FLOPs (rigl, 6,000 steps × 100) |' in markdown


@pytest.mark.parametrize('method', ['snip', 'magnitude', 'dense'])
def test_methods_with_dense_initial_masks_are_counted_at_their_final_sparsity(method, capsys):
  report = _report(capsys, '--experiment=mnist_rigl', f'--params_override=task.sparsity.method={method}')
  totals, training = report['totals'], report['training']
  assert training['method'] == method
  if method == 'dense':
    assert totals['kernel_sparsity'] == 0 and totals['flops_ratio'] == 1 and training['flops_ratio'] == 1
    return
  assert abs(totals['kernel_sparsity'] - 0.9) < 1e-3
  if method == 'magnitude':  # pruning starts dense: training costs more than the final sparse network
    assert totals['flops_ratio'] < training['flops_ratio'] < 1


def test_extended_training_multiplies_the_ratio_to_dense(capsys):
  base = _report(capsys, '--experiment=mnist_rigl')['training']
  extended = _report(capsys, '--experiment=mnist_rigl', '--training_multiplier=5')['training']
  assert extended['steps'] == base['steps'] and extended['multiplier'] == 5
  assert extended['flops_ratio'] == pytest.approx(5 * base['flops_ratio'], rel=1e-9)


def test_report_from_a_checkpoint_reads_its_masks_and_params(tmp_path, capsys):
  params = exp_factory.get_exp_config('mnist_rigl')
  params.override({'task': {'sparsity': {'sparsity': 0.8}}})
  params.validate()
  model = saved_model.build_sparse_model(params)
  wrappers = {w.layer.name: w for w in tfmot_rigl.sparse_wrappers(model)}
  hidden_1_mask = wrappers['hidden_1'].pruning_vars[0][1]
  hidden_1_mask.assign(tf.cast(tf.random.stateless_uniform(hidden_1_mask.shape, seed=[1, 2]) < 0.3, tf.float32))
  wrappers['hidden_2'].pruning_vars[0][1].assign(tf.ones([300, 100]))  # e.g. a run that grew it back to dense
  tf.train.Checkpoint(model=model).save(str(tmp_path / 'ckpt'))
  train_utils.serialize_config(params, str(tmp_path))

  report = _report(capsys, '--experiment=mnist_rigl', f'--model_dir={tmp_path}')
  assert report['config']['sparsity'] == 0.8  # from the run's params.yaml, not the experiment's default 0.9
  assert report['config']['masks'].endswith('ckpt-1')
  rows = _kernel_rows(report)
  assert rows['hidden_1']['density'] == pytest.approx(float(hidden_1_mask.numpy().mean()))
  assert rows['hidden_2']['density'] == 1.0


def test_report_errors_are_one_line(tmp_path, capsys):
  def error_line():
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('tfm report: error:'), err
    return err[0]

  assert tfm.main(['report', '--experiment=mnist_rigl', f'--model_dir={tmp_path}']) == 2
  assert 'no checkpoint' in error_line()
  assert tfm.main(['report', '--experiment=no_such_experiment']) == 2
  assert 'unknown experiment' in error_line()
  assert tfm.main(['report', '--experiment=mnist_rigl', '--training_multiplier=0']) == 2
  assert 'training_multiplier' in error_line()
  assert tfm.main(['report', '--experiment=mnist_rigl', '--params_override=task.sparsity.sparsty=0.5']) == 2
  assert 'sparsty' in error_line()
