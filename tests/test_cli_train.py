"""`tfm train` and `tfm experiments`, run as a user runs them (a subprocess of the `tfm` entry module)."""
import glob
import shlex
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from official.modeling import hyperparams

from tfmot_rigl.cli import main as cli_main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small, fast mnist_rigl: the real MLP shape shrunk, real MNIST, a few steps.
QUICK_MNIST = ('task.model.backbone.mlp.hidden_sizes=[32,16],task.train_data.global_batch_size=32,'
               'task.validation_data.global_batch_size=500,trainer.steps_per_loop=2,trainer.summary_interval=2,'
               'trainer.checkpoint_interval=2,trainer.validation_steps=2,trainer.validation_interval=4,'
               'task.sparsity.update_frequency=2')


def tfm(*args):
  return subprocess.run([sys.executable, '-m', 'tfmot_rigl.cli.main', *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def test_experiments_lists_each_registered_experiment_on_one_line(capsys):
  # In-process: the subcommand only reads the registry (the subprocess tests below cover the entry point itself).
  assert cli_main.main(['experiments']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert [line.split()[0] for line in lines] == ['mnist_rigl', 'mobilenet_rigl', 'resnet_rigl', 'wrn_cifar10_rigl']


def test_train_writes_checkpoints_and_summaries_then_resumes(tmp_path):
  model_dir = str(tmp_path / 'run')
  first = tfm('train', '--experiment=mnist_rigl', f'--model_dir={model_dir}', '--mode=train_and_eval',
              f'--params_override={QUICK_MNIST},trainer.train_steps=4')
  assert first.returncode == 0, first.stderr[-3000:]

  saved = hyperparams.read_yaml_to_params_dict(os.path.join(model_dir, 'params.yaml')).as_dict()
  assert saved['task']['sparsity']['method'] == 'rigl' and saved['task']['sparsity']['total_steps'] == 4
  checkpoint = tf.train.latest_checkpoint(model_dir)
  assert checkpoint.endswith('ckpt-4')
  # Masks are variables of the wrappers, so the trainer's checkpoint carries them.
  assert any('mask' in name for name, _ in tf.train.list_variables(checkpoint))
  assert glob.glob(os.path.join(model_dir, 'train', 'events.out.tfevents.*'))
  assert glob.glob(os.path.join(model_dir, 'validation', 'events.out.tfevents.*'))

  second = tfm('train', '--experiment=mnist_rigl', f'--model_dir={model_dir}', '--mode=train', '--verbosity=0',
               f'--params_override={QUICK_MNIST},trainer.train_steps=6')  # --verbosity=0: Orbit's lines too
  assert second.returncode == 0, second.stderr[-3000:]
  output = second.stdout + second.stderr
  # Orbit restored step 4 and trained only the remaining two steps.
  assert 'step:      4 | training until step 6' in output
  assert tf.train.latest_checkpoint(model_dir).endswith('ckpt-6')


@pytest.mark.parametrize('args, message', [
    (['--experiment=resnet_rigll'], "unknown experiment 'resnet_rigll'; registered sparse experiments: mnist_rigl"),
    (['--experiment=mnist_rigl', '--params_override=task.sparsity.sparsityy=0.5'],
     "unknown config key 'sparsityy' in SparsityConfig"),
    (['--experiment=mnist_rigl', '--params_override=task.sparsity.sparsity=1.5'],
     'task.sparsity.sparsity=1.5 is outside [0, 1)'),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path):
  model_dir = tmp_path / 'never_written'
  result = tfm('train', f'--model_dir={model_dir}', *args)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('tfm train: error:')]
  assert len(errors) == 1 and message in errors[0]
  assert result.stderr.rstrip().endswith(errors[0])
  assert not model_dir.exists()


def test_unknown_command_exit_code_2(capsys):
  assert cli_main.main(['trian']) == 2
  assert "unknown command 'trian'" in capsys.readouterr().err


def _smoke_run_command():
  """The smoke-run command that ends `tfm train --help`, as the shell reads it (continuation lines joined)."""
  from tfmot_rigl.cli import console
  help_text = console.train_help()
  assert help_text.rstrip().splitlines()[-1].endswith('"'), 'the smoke run must end the help'
  command = help_text[help_text.index('\n  tfm train ', help_text.index('smoke run:')):].replace('\\\n', '')
  return shlex.split(command)


@pytest.fixture(scope='module')
def jpeg_records(tmp_path_factory):
  """8 JPEG images in Model Garden's classification TFRecord format (stands in for ImageNet and CIFAR-10)."""
  path = str(tmp_path_factory.mktemp('records') / 'images.tfrecord')
  rng = np.random.default_rng(0)
  with tf.io.TFRecordWriter(path) as writer:
    for index in range(8):
      image = tf.io.encode_jpeg(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).numpy()
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
          'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 4])),
      })).SerializeToString())
  return path


@pytest.mark.parametrize('experiment', ['resnet_rigl', 'mobilenet_rigl', 'wrn_cifar10_rigl', 'mnist_rigl'])
def test_the_help_smoke_run_shrinks_every_experiment(experiment, jpeg_records, tmp_path, capsys):
  """The help's smoke-run overrides, as written, on each registered experiment, with the data paths the help says
  to add (tiny JPEG records for the ImageNet and CIFAR experiments): it trains and writes its checkpoint."""
  import gin
  from tfmot_rigl.modelgarden import configs
  assert sorted(configs.EXPERIMENTS) == sorted(['resnet_rigl', 'mobilenet_rigl', 'wrn_cifar10_rigl', 'mnist_rigl'])
  tfm_word, train_word, *args = _smoke_run_command()
  assert (tfm_word, train_word) == ('tfm', 'train')
  override = next(arg for arg in args if arg.startswith('--params_override='))[len('--params_override='):]
  if experiment == 'mnist_rigl':  # as the help says
    override = re.sub(r'task\.model\.input_size=\[[^\]]*\],?', '', override)
  else:  # the data paths the help says to add
    override += ''.join(f',task.{data}.{key}' for data in ('train_data', 'validation_data')
                        for key in ('tfds_name=', f'input_path={jpeg_records}'))
  model_dir = tmp_path / 'smoke'
  # --mode=train: the evaluation's graph would double the test's time and is covered by the tests above.
  argv = ['train', f'--experiment={experiment}', f'--model_dir={model_dir}', '--mode=train',
          f'--params_override={override}']
  with gin.unlock_config():
    assert cli_main.main(argv) == 0, capsys.readouterr().err[-3000:]
  assert tf.train.latest_checkpoint(str(model_dir)).endswith('ckpt-2')
  saved = hyperparams.read_yaml_to_params_dict(os.path.join(model_dir, 'params.yaml')).as_dict()
  assert saved['trainer']['train_steps'] == 2 and saved['task']['train_data']['global_batch_size'] == 4
