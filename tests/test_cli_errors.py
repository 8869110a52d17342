"""Hostile input to `tfm train` / `tfm export` / `tfm report`: one line on stderr, exit code 2, no traceback, and
no file created or changed.

Most cases run in-process (`tfm` main with capsys, for speed); a few run `tfm` as a subprocess to prove that no
traceback reaches the real stderr. Data cases read a small TFDS `mnist` written here in TFDS's own format.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys

import gin
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfmot_rigl.cli import main as tfm
from tfmot_rigl.data import mnist

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ('task.model.backbone.mlp.hidden_sizes=[16,8],task.train_data.global_batch_size=20,'
         'task.validation_data.global_batch_size=50,trainer.steps_per_loop=2,trainer.summary_interval=2,'
         'trainer.checkpoint_interval=2,trainer.validation_steps=1,trainer.validation_interval=4,'
         'task.sparsity.update_frequency=2,trainer.train_steps=4')


def quick(*changes):
  """QUICK with `key=value` changes: replacing its own value of a key (a key given twice is refused) or added."""
  entries = dict(entry.split('=', 1) for entry in re.split(r',(?![^\[]*\])', QUICK))
  entries.update(change.split('=', 1) for change in changes)
  return ','.join(f'{key}={value}' for key, value in entries.items())


QUICK_6_STEPS = quick('trainer.train_steps=6')
TRAIN_SHARD = 'mnist-train.tfrecord-00000-of-00001'


def write_tfds_mnist(data_dir, num_train=200, num_test=100):
  """A TFDS `mnist` prepared in data_dir as `tfds build` lays it out (real MNIST images, TFDS's own encoding)."""
  builder = tfds.builder('mnist', data_dir=str(data_dir))
  os.makedirs(builder.data_path, exist_ok=True)
  arrays = mnist.load_bundled_mnist()
  splits = []
  for split, count in (('train', num_train), ('test', num_test)):
    template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name='mnist', split=split,
                                             filetype_suffix='tfrecord')
    path = os.path.join(builder.data_path, f'mnist-{split}.tfrecord-00000-of-00001')
    with tf.io.TFRecordWriter(path) as writer:
      for i in range(count):
        writer.write(builder.info.features.serialize_example(
            {'image': arrays[f'{split}_images'][i][..., None], 'label': int(arrays[f'{split}_labels'][i])}))
    splits.append(tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=os.path.getsize(path),
                                      filename_template=template))
  builder.info.set_splits(tfds.core.SplitDict(splits))
  builder.info.write_to_directory(builder.data_path)
  return str(builder.data_path)


@pytest.fixture(scope='module')
def tfds_root(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfds')
  write_tfds_mnist(root)
  return root


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-step mnist_rigl run (checkpoints at steps 2 and 4), shared read-only; tests damage copies."""
  path = str(tmp_path_factory.mktemp('trained') / 'run')
  with gin.unlock_config():
    assert tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={path}', '--mode=train',
                     f'--params_override={QUICK}']) == 0
  return path


def snapshot(root):
  """Every file under root with a hash of its content (and every directory), to prove nothing changed."""
  state = {}
  for directory, dirs, files in os.walk(root):
    state[directory] = 'dir'
    for name in files:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        state[path] = hashlib.sha256(f.read()).hexdigest()
  return state


# TensorFlow's C++ start-up error on a machine without a GPU (a CUDA build finding no driver): not from `tfm`.
_NO_GPU_LINE = re.compile(r'^\S+ \S+: E \S+cuda_platform\.cc:\d+\] failed call to cuInit')


def one_error_line(stderr, command='train', strict=False):
  lines = [line for line in stderr.splitlines() if line.strip() and (strict or not _NO_GPU_LINE.match(line))]
  assert 'Traceback' not in stderr
  assert len(lines) == 1, stderr[-3000:]
  assert lines[0].startswith(f'tfm {command}: error: ')
  return lines[0]


def write(path, text):
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


def _config(tmp_path, text):
  return f'--config_file={write(tmp_path / "config.yaml", text)}'


def _copy_tfds(tfds_root, tmp_path, damage):
  root = tmp_path / 'tfds'
  shutil.copytree(tfds_root, root)
  version_dir = tfds.builder('mnist', data_dir=str(root)).data_path
  damage(str(version_dir))
  data = f'task.train_data.tfds_data_dir={root},task.validation_data.tfds_data_dir={root}'
  return f'--params_override={QUICK},{data}'


def _random_bytes_shard(version_dir):
  with open(os.path.join(version_dir, TRAIN_SHARD), 'wb') as f:
    f.write(os.urandom(4096))


def _truncated_shard(version_dir):
  path = os.path.join(version_dir, TRAIN_SHARD)
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(content[:len(content) // 2])


def _shard_cut_at_a_record_boundary(version_dir):
  # A shorter but well-formed file: it reads without any error, only the count betrays it.
  path = os.path.join(version_dir, TRAIN_SHARD)
  records = [record.numpy() for record in tf.data.TFRecordDataset(path)][:50]
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


def _corrupt_dataset_info(version_dir):
  write(os.path.join(version_dir, 'dataset_info.json'), '{"name": "mnist", "splits": [')


# (id, function of tmp_path and the fixtures giving the extra `tfm train` args, expected text in the error line)
TRAIN_CASES = [
    ('malformed_override', lambda tmp, **_: ['--params_override=a.b=[1,'],
     "--params_override 'a.b=[1,' is malformed; write comma-separated key=value pairs"),
    ('yaml_syntax_error', lambda tmp, **_: [_config(tmp, 'task:\n  sparsity: {sparsity: [0.9,\n')],
     'is not valid YAML: '),
    ('empty_yaml', lambda tmp, **_: [_config(tmp, '')], 'is empty; give it the fields to change'),
    ('yaml_list', lambda tmp, **_: [_config(tmp, '- 1\n')], 'not a mapping of config fields'),
    ('seed_not_an_int', lambda tmp, **_: [_config(tmp, 'task:\n  sparsity:\n    seed: "abc"\n')],
     "task.sparsity.seed='abc' must be a number, like its default 0"),
    ('nan_initial_acc_scale', lambda tmp, **_: [_config(tmp, 'task:\n  sparsity:\n    initial_acc_scale: .nan\n')],
     'task.sparsity.initial_acc_scale=nan is not a finite number'),
    ('inf_in_override', lambda tmp, **_: ['--params_override=task.sparsity.drop_fraction=.inf'],
     'task.sparsity.drop_fraction=inf is not a finite number'),
    ('negative_train_steps', lambda tmp, **_: ['--params_override=trainer.train_steps=-5'],
     'trainer.train_steps=-5 must be a positive number of training steps'),
    ('strategy_typo', lambda tmp, **_: ['--params_override=runtime.distribution_strategy=mirrord'],
     "runtime.distribution_strategy='mirrord' is unknown; use one of mirrored, multi_worker_mirrored"),
    ('extra_positional_argument', lambda tmp, **_: ['extra'], "unexpected argument(s) 'extra'"),
    ('missing_config_file', lambda tmp, **_: [f'--config_file={tmp}/nope.yaml'], 'does not exist'),
    ('corrupt_dataset_info', lambda tmp, tfds_root, **_: [_copy_tfds(tfds_root, tmp, _corrupt_dataset_info)],
     "holds an unreadable TFDS 'mnist' (its dataset_info.json or features.json is corrupt"),
    ('random_bytes_tfrecord', lambda tmp, tfds_root, **_: [_copy_tfds(tfds_root, tmp, _random_bytes_shard)],
     f"{TRAIN_SHARD}' is corrupt or truncated (corrupted record at 0"),
    ('truncated_tfrecord', lambda tmp, tfds_root, **_: [_copy_tfds(tfds_root, tmp, _truncated_shard)],
     f"{TRAIN_SHARD}' is corrupt or truncated (truncated record"),
    ('tfrecord_cut_at_record_boundary',
     lambda tmp, tfds_root, **_: [_copy_tfds(tfds_root, tmp, _shard_cut_at_a_record_boundary)],
     'holds 50 records where its dataset_info.json says 200'),
    ('input_path_of_random_bytes', lambda tmp, **_: [
        f'--params_override={QUICK},task.train_data.tfds_name=,task.train_data.input_path='
        f'{write(tmp / "random.tfrecord", "not a tfrecord, just text " * 20)}'],
     "is not a readable TFRecord file (corrupted record at 0"),
    ('input_path_matching_nothing', lambda tmp, **_: [
        f'--params_override={QUICK},task.train_data.tfds_name=,task.train_data.input_path={tmp}/none*'],
     'matches no file'),
]


@pytest.mark.parametrize('make_args, message', [case[1:] for case in TRAIN_CASES],
                         ids=[case[0] for case in TRAIN_CASES])
def test_bad_train_input_is_one_line_and_writes_nothing(make_args, message, tmp_path, tfds_root, capsys):
  args = make_args(tmp_path, tfds_root=tfds_root)
  model_dir = tmp_path / 'model_dir'
  before = snapshot(tmp_path)
  capsys.readouterr()
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={model_dir}', '--mode=train', *args])
  line = one_error_line(capsys.readouterr().err)
  assert code == 2
  assert message in line
  assert snapshot(tmp_path) == before
  assert not model_dir.exists()


def test_model_dir_that_is_a_file(tmp_path, capsys):
  path = write(tmp_path / 'afile', 'x')
  before = snapshot(tmp_path)
  assert tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={path}']) == 2
  assert f'--model_dir {path} is a file, not a directory' in one_error_line(capsys.readouterr().err)
  assert snapshot(tmp_path) == before


@pytest.mark.parametrize('where', ['/proc/tfm_model_dir', '/sys/tfm/model_dir'])
def test_unwritable_model_dir(where, capsys):
  # Read-only for every user, root included (the test machines run as root, where chmod 0o500 stops nothing).
  assert tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={where}']) == 2
  assert f'--model_dir {where} is not writable' in one_error_line(capsys.readouterr().err)
  assert not os.path.exists(where)


def test_read_only_directory_for_non_root(tmp_path, capsys):
  if os.geteuid() == 0:
    pytest.skip('root writes into mode 0o500 directories')
  locked = tmp_path / 'locked'
  locked.mkdir(mode=0o500)
  assert tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={locked}/run']) == 2
  assert 'is not writable' in one_error_line(capsys.readouterr().err)


# Restarts on a model_dir made by another configuration: refused, params.yaml and checkpoints untouched.
RESTART_CASES = [
    ('other_sparsity', 'task.sparsity.sparsity=0.5', "task.sparsity.sparsity=0.9 and this run asks for 0.5"),
    ('other_method', 'task.sparsity.method=set', "task.sparsity.method='rigl' and this run asks for 'set'"),
    ('other_distribution', 'task.sparsity.distribution=uniform',
     "task.sparsity.distribution='erk' and this run asks for 'uniform'"),
    ('other_model', 'task.model.backbone.mlp.hidden_sizes=[32,8]',
     'task.model.backbone.mlp.hidden_sizes=[16, 8] and this run asks for [32, 8]'),
]


@pytest.mark.parametrize('override, message', [case[1:] for case in RESTART_CASES],
                         ids=[case[0] for case in RESTART_CASES])
def test_restart_with_another_configuration_is_refused(override, message, trained, capsys):
  before = snapshot(trained)
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={trained}', '--mode=train',
                     f'--params_override={quick("trainer.train_steps=6", override)}'])
  line = one_error_line(capsys.readouterr().err)
  assert code == 2
  assert message in line
  assert f'pass a new --model_dir, or delete {trained} to start fresh' in line
  assert snapshot(trained) == before


def test_restart_under_another_experiment_name_is_refused(trained, capsys):
  before = snapshot(trained)
  assert tfm.main(['train', '--experiment=wrn_cifar10_rigl', f'--model_dir={trained}', '--mode=train']) == 2
  assert "was trained as experiment 'mnist_rigl', not 'wrn_cifar10_rigl'" in one_error_line(capsys.readouterr().err)
  assert snapshot(trained) == before


@pytest.mark.parametrize('command', ['export', 'report'])
def test_export_and_report_refuse_another_experiment_than_the_model_dirs(command, trained, tmp_path, capsys):
  before = snapshot(trained)
  extra = [f'--export_dir={tmp_path}/export'] if command == 'export' else []
  assert tfm.main([command, '--experiment=resnet_rigl', f'--model_dir={trained}', *extra]) == 2
  line = one_error_line(capsys.readouterr().err, command)
  assert "was trained as experiment 'mnist_rigl', not 'resnet_rigl'; pass --experiment=mnist_rigl" in line
  assert snapshot(trained) == before
  assert not os.path.exists(f'{tmp_path}/export')


def test_model_dir_without_recorded_experiment_is_checked_by_its_model(trained, tmp_path, capsys):
  old_run = str(tmp_path / 'old_run')
  shutil.copytree(trained, old_run)
  os.remove(os.path.join(old_run, 'experiment.txt'))  # as `tfm train` left model_dirs before it recorded the name
  assert tfm.main(['report', '--experiment=resnet_rigl', f'--model_dir={old_run}']) == 2
  assert 'holds a mlp model, not the resnet model' in one_error_line(capsys.readouterr().err, 'report')


def _latest_files(run_dir):
  latest = tf.train.latest_checkpoint(run_dir)
  assert latest.endswith('ckpt-4')
  return latest + '.index', latest + '.data-00000-of-00001'


@pytest.mark.parametrize('which, damage', [
    ('index', 'truncate'), ('data', 'truncate'), ('data', 'flip'), ('index', 'flip')])
def test_unreadable_latest_checkpoint_names_the_file_and_the_fallback(which, damage, trained, tmp_path, capsys):
  run_dir = str(tmp_path / 'run')
  shutil.copytree(trained, run_dir)
  index, data = _latest_files(run_dir)
  path = index if which == 'index' else data
  with open(path, 'rb') as f:
    content = bytearray(f.read())
  if damage == 'truncate':
    content = content[:len(content) // 2]
  else:  # flip bytes in the middle: same size, wrong checksum
    middle = len(content) // 2
    content[middle:middle + 8] = bytes(255 - b for b in content[middle:middle + 8])
  with open(path, 'wb') as f:
    f.write(content)
  before = snapshot(run_dir)
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={run_dir}', '--mode=train',
                     f'--params_override={QUICK_6_STEPS}'])
  line = one_error_line(capsys.readouterr().err)
  assert code == 2
  assert f'the latest checkpoint of {run_dir} is unreadable: ' in line
  assert os.path.basename(path) in line and 'is truncated or corrupt' in line
  assert f'set model_checkpoint_path: "ckpt-2" in {run_dir}/checkpoint' in line
  assert snapshot(run_dir) == before


def test_following_the_fallback_advice_resumes_from_the_previous_checkpoint(trained, tmp_path, capsys):
  run_dir = str(tmp_path / 'run')
  shutil.copytree(trained, run_dir)
  _, data = _latest_files(run_dir)
  with open(data, 'wb') as f:
    f.write(b'')
  checkpoint_file = os.path.join(run_dir, 'checkpoint')
  with open(checkpoint_file) as f:
    state = f.read()
  write(checkpoint_file, state.replace('model_checkpoint_path: "ckpt-4"', 'model_checkpoint_path: "ckpt-2"'))
  with gin.unlock_config():
    assert tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={run_dir}', '--mode=train',
                     f'--params_override={QUICK_6_STEPS}']) == 0
  # Resumed from ckpt-2: the first progress line is one loop (2 steps) later; from scratch it would be step 2.
  assert re.search(r'^sparse \| step 4/6 ', capsys.readouterr().out, re.MULTILINE)
  assert tf.train.latest_checkpoint(run_dir).endswith('ckpt-6')


OTHER_MODEL = 'task.model.backbone.mlp.hidden_sizes=[32,8]'


def test_checkpoint_of_another_model_without_params_yaml_is_refused(trained, tmp_path, capsys):
  run_dir = str(tmp_path / 'run')
  shutil.copytree(trained, run_dir)
  os.remove(os.path.join(run_dir, 'params.yaml'))
  before = snapshot(run_dir)
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={run_dir}', '--mode=train',
                     f'--params_override={quick("trainer.train_steps=6", OTHER_MODEL)}'])
  err = capsys.readouterr().err
  assert code == 2 and 'Traceback' not in err
  errors = [line for line in err.splitlines() if line.startswith('tfm train: error: ')]
  assert len(errors) == 1 and err.rstrip().endswith(errors[0])
  assert f'was made for another model' in errors[0] and f'delete {run_dir} to start fresh' in errors[0]
  assert snapshot(run_dir) == before


def tfm_subprocess(*args):
  return subprocess.run([sys.executable, '-m', 'tfmot_rigl.cli.main', *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def test_as_a_process_no_traceback_reaches_stderr(tmp_path, tfds_root):
  """The entry point itself: each input prints exactly its one line on the real stderr and exits with 2."""
  cases = [
      (['--params_override=a.b=[1,'], 'is malformed'),
      ([_copy_tfds(tfds_root, tmp_path, _random_bytes_shard)], 'corrupted record at 0'),
  ]
  for args, message in cases:
    model_dir = tmp_path / 'model_dir'
    result = tfm_subprocess('train', '--experiment=mnist_rigl', f'--model_dir={model_dir}', *args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in one_error_line(result.stderr, strict=True)  # the error comes before TensorFlow's start-up
    assert not model_dir.exists()
