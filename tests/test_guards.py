"""Nothing a typo can do costs a run (issue 21): what `--overwrite` may replace, what a restart must keep, config
paths kept inside model_dir, repeated flags and keys, import overrides that contradict the checkpoint, Ctrl-C.

Each refusal is one line, exit code 2, and every file of the directories involved keeps its content hash. All run
in-process (`tfm` main), Ctrl-C as a real SIGINT to this process.
"""
import dataclasses
import os
import shutil
import signal
import threading
import time

import gin
import pytest
import tensorflow as tf
from official.core import exp_factory
from official.core import train_utils

from test_cli_errors import QUICK, QUICK_6_STEPS, REPO_ROOT, one_error_line, quick, snapshot, write
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.modelgarden import resume
from tfmot_rigl.modelgarden import sparsity_config


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
  """ws/run: a finished 4-step mnist_rigl run; ws/run2: a copy (another run); ws/data: unrelated files."""
  ws = tmp_path_factory.mktemp('ws')
  run = str(ws / 'run')
  with gin.unlock_config():
    assert tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={run}', '--mode=train',
                     f'--params_override={QUICK}']) == 0
  shutil.copytree(run, ws / 'run2')
  (ws / 'data').mkdir()
  write(ws / 'data' / 'labels.csv', 'precious\n')
  write(ws / 'notes.txt', 'also precious\n')
  return ws


# --------------------------------------------------------------------------------------------------------------------
# 1. --overwrite replaces only what an earlier run of the same command wrote.

EXPORT_CASES = [  # (id, export_dir relative to ws, extra flags, text of the refusal)
    ('is_model_dir', 'run', [], 'is the model_dir'),
    ('parent_of_model_dir', '.', [], 'contains the model_dir'),
    ('inside_model_dir', 'run/train', [], 'lies inside the model_dir'),
    ('another_run', 'run2', [], 'is the training run'),
    ('inside_another_run', 'run2/export', [], 'lies inside the training run'),
    ('not_a_saved_model', 'data', [], 'labels.csv, which are not part of a SavedModel'),
    ('parent_of_checkpoint_path', '.', ['--checkpoint_path={ws}/run/ckpt-4'], 'contains the model_dir'),
]


@pytest.mark.parametrize('export_dir, extra, message', [case[1:] for case in EXPORT_CASES],
                         ids=[case[0] for case in EXPORT_CASES])
def test_export_overwrite_refuses_what_export_did_not_write(export_dir, extra, message, workspace, capsys):
  before = snapshot(workspace)
  source = [arg.format(ws=workspace) for arg in extra] or [f'--model_dir={workspace}/run']
  code = tfm.main(['export', '--experiment=mnist_rigl', *source, f'--export_dir={workspace}/{export_dir}',
                   '--overwrite'])
  line = one_error_line(capsys.readouterr().err, 'export')
  assert code == 2
  assert message in line and 'nothing was changed' in line
  assert snapshot(workspace) == before


@pytest.fixture(scope='module')
def tiny_saved_model(tmp_path_factory):
  class Double(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def serve(self, x):
      return {'y': 2 * x}

  path = str(tmp_path_factory.mktemp('sm') / 'saved')
  module = Double()
  tf.saved_model.save(module, path, signatures={'serving_default': module.serve})
  return path


@pytest.mark.parametrize('output', ['saved_model.pb', 'variables/model.tflite', '.'])
def test_tflite_refuses_an_output_inside_its_saved_model(output, tiny_saved_model, capsys):
  before = snapshot(tiny_saved_model)
  path = os.path.join(tiny_saved_model, output)
  assert tfm.main(['tflite', f'--saved_model={tiny_saved_model}', f'--output={path}', '--overwrite']) == 2
  assert 'lies inside the SavedModel' in one_error_line(capsys.readouterr().err, 'tflite')
  assert snapshot(tiny_saved_model) == before
  tf.saved_model.load(tiny_saved_model)


# --------------------------------------------------------------------------------------------------------------------
# 2. A restart keeps every mask-shaping field: one list (resume.MASK_SHAPING) for the refusal and these tests.

# Another valid value for each field a restart must keep; keyed exactly by resume.identity_fields().
OTHER_VALUES = {
    'task.model': ('task.model.backbone.mlp.hidden_sizes', [32, 8]),
    'task.sparsity.method': ('task.sparsity.method', 'set'),
    'task.sparsity.sparsity': ('task.sparsity.sparsity', 0.5),
    'task.sparsity.distribution': ('task.sparsity.distribution', 'uniform'),
    'task.sparsity.erk_power_scale': ('task.sparsity.erk_power_scale', 0.5),
    'task.sparsity.first_layer_dense': ('task.sparsity.first_layer_dense', True),
    'task.sparsity.custom_sparsities': ('task.sparsity.custom_sparsities', ['dense=0.5']),
    'task.sparsity.exclude': ('task.sparsity.exclude', ['dense']),
    'task.sparsity.sparsify_depthwise': ('task.sparsity.sparsify_depthwise', True),
    'task.sparsity.block_shape': ('task.sparsity.block_shape', [4, 1]),
    'task.sparsity.block_norm': ('task.sparsity.block_norm', 'l2'),
    'task.sparsity.initial_sparsity': ('task.sparsity.initial_sparsity', 0.5),
    'task.sparsity.initial_mask': ('task.sparsity.initial_mask', 'magnitude'),
}
FREE_VALUES = {'update_frequency': 50, 'begin_step': 10, 'end_step': 0.5, 'drop_fraction': 0.1,
               'drop_fraction_anneal': 'constant', 'grow_init': 'random_normal', 'initial_acc_scale': 0.5,
               'snfs_momentum': 0.5, 'prune_end': 0.5, 'seed': 3, 'total_steps': 1000}


def test_every_sparsity_field_is_classified_as_mask_shaping_or_free():
  """A field added to task.sparsity fails here until it is put in resume.MASK_SHAPING or resume.FREE_TO_CHANGE."""
  fields = {field.name for field in dataclasses.fields(sparsity_config.SparsityConfig)}
  assert not set(resume.MASK_SHAPING) & set(resume.FREE_TO_CHANGE)
  assert fields == set(resume.MASK_SHAPING) | set(resume.FREE_TO_CHANGE), (
      f'unclassified: {sorted(fields - set(resume.MASK_SHAPING) - set(resume.FREE_TO_CHANGE))}')
  assert set(OTHER_VALUES) == set(resume.identity_fields())  # each refused field has its case below
  assert set(FREE_VALUES) == set(resume.FREE_TO_CHANGE)


def _nested(path, value):
  for key in reversed(path.split('.')):
    value = {key: value}
  return value


def _saved_run(tmp_path, saved_override=None, drop=()):
  """A model_dir with the params.yaml and experiment.txt `tfm train` writes for mnist_rigl."""
  params = exp_factory.get_exp_config('mnist_rigl')
  if saved_override:
    params.override(saved_override, is_strict=True)
  model_dir = str(tmp_path / 'run')
  os.makedirs(model_dir)
  train_utils.serialize_config(params, model_dir)
  resume.record_experiment(model_dir, 'mnist_rigl')
  path = os.path.join(model_dir, resume.PARAMS_FILE)
  if drop:  # a params.yaml written before these fields existed
    with open(path) as f:
      lines = [line for line in f if not any(line.strip().startswith(f'{name}:') for name in drop)]
    write(path, ''.join(lines))
  return model_dir


def _restart_params(override=None):
  params = exp_factory.get_exp_config('mnist_rigl')
  if override:
    params.override(override, is_strict=True)
  return params


@pytest.mark.parametrize('field', sorted(OTHER_VALUES))
def test_restart_changing_a_mask_shaping_field_is_refused(field, tmp_path):
  model_dir = _saved_run(tmp_path)
  path, value = OTHER_VALUES[field]
  with pytest.raises(resume.ResumeError, match='holds a run with ' + path.replace('.', r'\.')):
    resume.check_restart(_restart_params(_nested(path, value)), model_dir, 'mnist_rigl')


def test_restart_changing_free_fields_is_accepted(tmp_path):
  model_dir = _saved_run(tmp_path)
  resume.check_restart(_restart_params({'task': {'sparsity': FREE_VALUES}}), model_dir, 'mnist_rigl')


def test_params_yaml_older_than_a_field_counts_as_its_default(tmp_path):
  model_dir = _saved_run(tmp_path, drop=('block_shape', 'block_norm'))
  resume.check_restart(_restart_params(), model_dir, 'mnist_rigl')
  with pytest.raises(resume.ResumeError, match=r"block_shape=\[1, 1\] and this run asks for \[4, 1\]"):
    resume.check_restart(_restart_params(_nested('task.sparsity.block_shape', [4, 1])), model_dir, 'mnist_rigl')


def test_unclassified_field_is_treated_as_mask_shaping(monkeypatch):
  monkeypatch.setattr(resume, 'FREE_TO_CHANGE', tuple(f for f in resume.FREE_TO_CHANGE if f != 'seed'))
  assert 'task.sparsity.seed' in resume.identity_fields()


def test_restart_with_another_block_shape_leaves_the_run_untouched(workspace, capsys):
  """The issue's case: a 4-step RigL run restarted with block_shape [4, 1]."""
  run = str(workspace / 'run')
  before = snapshot(run)
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={run}', '--mode=train',
                     f'--params_override={QUICK_6_STEPS},task.sparsity.block_shape=[4,1]'])
  line = one_error_line(capsys.readouterr().err)
  assert code == 2
  assert 'task.sparsity.block_shape=[1, 1] and this run asks for [4, 1]' in line
  assert snapshot(run) == before


# --------------------------------------------------------------------------------------------------------------------
# 4 and 6. Config paths stay inside model_dir; a repeated flag or key names both values.

BAD_TRAIN_INPUT = [  # (id, extra `tfm train` args (tmp: the test's directory), text of the refusal)
    ('absolute_summary_subdir', ['--params_override=task.monitoring.summary_subdir={tmp}/elsewhere'],
     "task.monitoring.summary_subdir='{tmp}/elsewhere' is an absolute path"),
    ('mask_subdir_up', ['--params_override=task.monitoring.mask_subdir=../masks'],
     "task.monitoring.mask_subdir='../masks' leads outside it (to {tmp}/masks)"),
    ('best_checkpoint_up', ['--params_override=trainer.best_checkpoint_export_subdir=a/../../best'],
     "trainer.best_checkpoint_export_subdir='a/../../best' leads outside it"),
    ('model_dir_twice', ['--model_dir={tmp}/other'],
     "--model_dir is given twice, as '{tmp}/model_dir' and as '{tmp}/other'"),
    ('params_override_twice', ['--params_override=trainer.train_steps=4', '--params_override=task.sparsity.seed=1'],
     "--params_override is given twice, as 'trainer.train_steps=4' and as 'task.sparsity.seed=1'"),
    ('mode_twice_no_equals', ['--mode', 'eval'], "--mode is given twice, as 'train' and as 'eval'"),
    ('key_twice_in_override', ['--params_override=trainer.train_steps=4,task.sparsity.sparsity=0.5,'
                               'trainer.train_steps=8'],
     '--params_override gives trainer.train_steps twice, as 4 and as 8'),
    ('key_twice_in_config_file', ['--config_file={tmp}/twice.yaml'],
     '--config_file {tmp}/twice.yaml gives task.sparsity.sparsity twice, as 0.8 and as 0.95'),
    ('layer_twice_in_custom_sparsities',
     ['--params_override=task.sparsity.custom_sparsities=[dense=0.5,dense_1=0.3,dense=0.7]'],
     "task.sparsity.custom_sparsities gives 'dense' twice, as 0.5 and as 0.7"),
]


@pytest.mark.parametrize('args, message', [case[1:] for case in BAD_TRAIN_INPUT],
                         ids=[case[0] for case in BAD_TRAIN_INPUT])
def test_bad_paths_and_repeats_are_one_line_and_write_nothing(args, message, tmp_path, capsys):
  write(tmp_path / 'twice.yaml', 'task:\n  sparsity:\n    sparsity: 0.8\n    method: rigl\n    sparsity: 0.95\n')
  before = snapshot(tmp_path)
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={tmp_path}/model_dir', '--mode=train',
                     *[arg.format(tmp=tmp_path) for arg in args]])
  line = one_error_line(capsys.readouterr().err)
  assert code == 2
  assert message.format(tmp=tmp_path) in line
  assert snapshot(tmp_path) == before


@pytest.mark.parametrize('command, flag, args', [
    ('export', 'export_dir', ['--experiment=mnist_rigl', '--model_dir={ws}/run']),
    ('report', 'model_dir', ['--experiment=mnist_rigl']),
    ('plot', 'output_dir', ['--model_dir={ws}/run']),
])
def test_flag_given_twice_to_the_other_commands(command, flag, args, workspace, tmp_path, capsys):
  assert tfm.main([command, *[arg.format(ws=workspace) for arg in args], f'--{flag}={tmp_path}/a',
                   f'--{flag}={tmp_path}/b']) == 2
  line = one_error_line(capsys.readouterr().err, command)
  assert f"--{flag} is given twice, as '{tmp_path}/a' and as '{tmp_path}/b'" in line
  assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------------------------------
# 7. Ctrl-C during `tfm train`: one line naming the last checkpoint, exit code 130.

def _checkpoint_step(model_dir):
  latest = tf.train.latest_checkpoint(model_dir)
  return int(latest.rsplit('-', 1)[1]) if latest else 0


def test_sigint_during_training_names_the_last_checkpoint(workspace, tmp_path, capsys):
  """A real SIGINT, as Ctrl-C sends it, to this process while `tfm train` resumes the 4-step run towards 100000."""
  run = str(tmp_path / 'run')
  shutil.copytree(workspace / 'run', run)

  def interrupt_after_a_new_checkpoint():
    deadline = time.time() + 180
    while time.time() < deadline and _checkpoint_step(run) <= 4:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)  # also past the deadline: the run must not go on for 100000 steps

  watcher = threading.Thread(target=interrupt_after_a_new_checkpoint, daemon=True)
  watcher.start()
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={run}', '--mode=train',
                     f'--params_override={quick("trainer.train_steps=100000")},task.monitoring.record_masks_every=0'])
  watcher.join()
  err = capsys.readouterr().err
  assert code == 130, err[-3000:]
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err
  latest = tf.train.latest_checkpoint(run)
  assert _checkpoint_step(run) > 4
  ours = [line for line in err.splitlines() if line.startswith('tfm train:')]
  assert ours == [f'tfm train: interrupted; the last checkpoint is {latest} (step {_checkpoint_step(run)}): run the '
                  'same command again to resume from it.'], err[-3000:]
  assert err.rstrip().endswith(ours[0])


# --------------------------------------------------------------------------------------------------------------------
# 4. `tfm import-checkpoint` overrides that contradict the checkpoint's masks.

def test_import_override_contradicting_the_checkpoint_is_refused(tmp_path, capsys):
  import reference_resnet as reference
  source = str(tmp_path / 'model.ckpt-32000')
  reference.write_reference_checkpoint(  # a uniform 75% MobileNet-v1 as the paper's runs leave it
      source, reference.mobilenet_v1_layers(), lambda scope, shape: None if scope.endswith('initial_conv') else 0.75)
  before = snapshot(tmp_path)
  model_dir = tmp_path / 'imported'
  assert tfm.main(['import-checkpoint', '--experiment=mobilenet_rigl',
                   f'--config_file={REPO_ROOT}/official_configs/mobilenet1_rigl_uniform_s75_1x.yaml',
                   '--params_override=task.model.input_size=[96,96,3],task.sparsity.sparsity=0.5',
                   f'--source={source}', f'--model_dir={model_dir}']) == 2
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith('tfm import-checkpoint: error:')]
  assert len(lines) == 1 and 'Traceback' not in err, err[-3000:]
  assert 'has sparsity 0.750, the config (task.sparsity.sparsity=0.5' in lines[0], lines[0]
  assert 'gives 0.500' in lines[0] and 'nothing was written' in lines[0]
  assert not model_dir.exists() and snapshot(tmp_path) == before
