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
import time

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


# --- issue 18 / 21: values out of range, data of another format, damaged restarts, paths, eval without a model ---

def _refused(args, tmp_path, capsys, command='train', experiment='mnist_rigl'):
  """Runs `tfm <command>` in-process; asserts one line, exit 2, tmp_path unchanged; returns the line."""
  before = snapshot(tmp_path)
  capsys.readouterr()
  with gin.unlock_config():
    code = tfm.main([command, *([f'--experiment={experiment}'] if experiment else []), *args])
  line = one_error_line(capsys.readouterr().err, command)
  assert code == 2, line
  assert snapshot(tmp_path) == before
  return line


# (override on top of QUICK, text the line must hold): each refused before anything is built or written.
OUT_OF_RANGE = [
    ('task.sparsity.grow_init=random_normal_0', "grow_init='random_normal_0' divides by 0"),
    ('task.sparsity.initial_acc_scale=-1e30', 'initial_acc_scale=-1e+30 must be a finite number in [0, 1e+06]'),
    ('task.train_data.global_batch_size=0', 'task.train_data.global_batch_size=0 must be a positive int'),
    ('task.validation_data.global_batch_size=-4', 'task.validation_data.global_batch_size=-4 must be a positive int'),
    ('task.sparsity.seed=-1', 'task.sparsity.seed=-1 must be an int in [0, 4294967295]'),
    (f'task.sparsity.seed={2**40}', f'task.sparsity.seed={2**40} must be an int in [0, 4294967295]'),
    ('trainer.steps_per_loop=0', 'trainer.steps_per_loop=0 must be a positive int'),
    ('trainer.summary_interval=3', 'trainer.summary_interval=3 must be a multiple of trainer.steps_per_loop=2'),
    ('trainer.checkpoint_interval=0', 'trainer.checkpoint_interval=0 must be a positive int'),
    ('trainer.validation_steps=0', 'trainer.validation_steps=0 must be an int >= 1 or -1'),
    ('task.model.input_size=[32,32,3]', 'task.model.input_size=[32, 32, 3] does not match the MNIST data'),
    ('runtime.mixed_precision_dtype=int8', "runtime.mixed_precision_dtype='int8' is not a mixed-precision policy"),
    ('runtime.num_gpus=4', 'runtime.num_gpus=4, but TensorFlow finds 0 GPU(s) on this machine; set '
     'runtime.num_gpus=0 to train on the CPU'),
]


def test_out_of_range_config_values_are_refused(tmp_path, capsys):
  if tf.config.list_physical_devices('GPU'):
    pytest.skip('the num_gpus case needs a machine without GPUs')
  model_dir = tmp_path / 'run'
  for override, message in OUT_OF_RANGE:
    line = _refused([f'--model_dir={model_dir}', '--mode=train', f'--params_override={quick(override)}'],
                    tmp_path, capsys)
    assert message in line, (override, line)
    assert not model_dir.exists()


def _write_examples(path, features_list):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for features in features_list:
      writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def _jpeg_example(label=0):
  image = tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)).numpy()
  return {'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
          'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}


def _garbage_payload_shard(version_dir):
  # Valid TFRecord framing (length, CRCs) around bytes that are no tf.train.Example.
  with tf.io.TFRecordWriter(os.path.join(version_dir, TRAIN_SHARD)) as writer:
    for _ in range(200):
      writer.write(b'\x0a\xff\xff\xff' + os.urandom(60))


def _other_schema_shard(version_dir):
  _write_examples(os.path.join(version_dir, TRAIN_SHARD), [_jpeg_example()] * 200)


def test_records_of_another_format_are_refused(tmp_path, tfds_root, capsys):
  """TFDS records with a garbage payload or another schema, and TFRecord input_path files of another schema or with
  a garbage tail after good records: one line naming the file, before anything is written."""
  model_dir = tmp_path / 'run'
  cases = [
      ([_copy_tfds(tfds_root, tmp_path / 'a', _garbage_payload_shard)], 'record 0 is not a serialized tf.train.Example'),
      ([_copy_tfds(tfds_root, tmp_path / 'b', _other_schema_shard)],
       'record 0 is a tf.train.Example without the feature(s) image, label (it has: image/class/label, image/encoded)'),
  ]
  other_schema = tmp_path / 'other.tfrecord'
  _write_examples(other_schema, [{'x': tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}] * 3)
  tail = tmp_path / 'tail.tfrecord'
  _write_examples(tail, [_jpeg_example(i % 4) for i in range(8)])
  with open(tail, 'ab') as f:
    f.write(os.urandom(100))
  png = tmp_path / 'png.tfrecord'
  _write_examples(png, [dict(_jpeg_example(), **{'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()]))})])
  for path, message in ((other_schema, 'record 0 is a tf.train.Example without the feature(s) image/encoded, '
                                       'image/class/label (it has: x)'),
                        (tail, 'is not a readable TFRecord file (corrupted record at'),
                        (png, 'record 0 is a tf.train.Example whose image/encoded is not a JPEG image')):
    cases.append(([f'--params_override={QUICK},task.train_data.tfds_name=,task.train_data.input_path={path}'],
                  message, f"task.train_data.input_path file '{path}' "))
  for args, *messages in cases:
    line = _refused([f'--model_dir={model_dir}', '--mode=train', *args], tmp_path, capsys)
    assert all(message in line for message in messages), line
    assert not model_dir.exists()


def _edit_state(run_dir, edit):
  path = os.path.join(run_dir, 'checkpoint')
  if edit is None:
    os.remove(path)
    return
  with open(path) as f:
    state = f.read()
  write(path, edit(state))


def test_damaged_restart_state_is_refused(trained, tmp_path, capsys):
  """A `checkpoint` state file that is garbage, names a missing ckpt-N or is gone, and a restart whose train_steps
  is below the checkpoint's step: TensorFlow would restart from step 0 (or train nothing and rewrite params.yaml)."""
  cases = [
      (lambda state: 'garbage \x00\x01 not a state', 'checkpoint is damaged: it does not name a checkpoint'),
      (lambda state: state.replace('"ckpt-4"', '"ckpt-8"'), "names the checkpoint", 'ckpt-8.index'),
      (None, 'holds checkpoints but no `checkpoint` state file'),
  ]
  for number, (edit, *messages) in enumerate(cases):
    run_dir = str(tmp_path / f'run{number}')
    shutil.copytree(trained, run_dir)
    _edit_state(run_dir, edit)
    line = _refused([f'--model_dir={run_dir}', '--mode=train', f'--params_override={QUICK_6_STEPS}'],
                    tmp_path, capsys)
    assert all(message in line for message in messages), line
    assert 'write model_checkpoint_path: "ckpt-4"' in line and 'also there: ckpt-2' in line
  run_dir = str(tmp_path / 'run_short')
  shutil.copytree(trained, run_dir)
  line = _refused([f'--model_dir={run_dir}', '--mode=train', f'--params_override={quick("trainer.train_steps=2")}'],
                  tmp_path, capsys)
  assert 'holds a run at step 4 and trainer.train_steps=2 leaves nothing to train' in line


def test_eval_without_a_checkpoint(tmp_path, capsys):
  """eval refuses to score a random model; continuous_eval says what it waits for, then gives up with one line."""
  model_dir = tmp_path / 'empty'
  line = _refused([f'--model_dir={model_dir}', '--mode=eval', f'--params_override={QUICK}'], tmp_path, capsys)
  assert f'--mode=eval needs a checkpoint in {model_dir} and there is none' in line
  before = snapshot(tmp_path)
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={model_dir}', '--mode=continuous_eval',
                     f'--params_override={QUICK},trainer.continuous_eval_timeout=1'])
  out, err = capsys.readouterr()
  assert code == 2
  assert f'waiting for the first checkpoint in {model_dir}' in out and 'for up to 1 s' in out
  assert f'no checkpoint appeared in {model_dir} within 1 s' in one_error_line(err)
  assert snapshot(tmp_path) == before and not model_dir.exists()


def test_model_dir_paths_over_limits_or_unreachable(tmp_path, capsys):
  too_long = str(tmp_path / '/'.join(['d' * 200] * 25))
  too_long_name = str(tmp_path / ('n' * 300))
  for path, message in ((too_long, '(PATH_MAX)'), (too_long_name, 'over the file system\'s limit of 255 (NAME_MAX)')):
    assert message in _refused([f'--model_dir={path}', '--mode=train'], tmp_path, capsys)
  # No network here: gs:// must fail at once instead of retrying for minutes.
  started = time.monotonic()
  line = _refused(['--model_dir=gs://tfm-no-such-bucket/run', '--mode=train'], tmp_path, capsys)
  assert time.monotonic() - started < 30
  assert line.startswith('tfm train: error: --model_dir gs://tfm-no-such-bucket/run ')
  assert 'check the network and the credentials' in line


def test_export_and_tflite_bad_input(trained, tmp_path, capsys):
  export_dir = tmp_path / 'export'
  assert '--batch_size=-3 must be a positive number' in _refused(
      [f'--model_dir={trained}', f'--export_dir={export_dir}', '--batch_size=-3'], tmp_path, capsys, 'export')
  assert '--export_dir /proc/tfm_export is not writable' in _refused(
      [f'--model_dir={trained}', '--export_dir=/proc/tfm_export'], tmp_path, capsys, 'export')
  assert not export_dir.exists()
  # A SavedModel exported with batch size 0 (by an older `tfm export`, or any tool): no input fits it.
  module = tf.Module()
  module.serve = tf.function(lambda x: {'y': x * 2.0}, input_signature=[tf.TensorSpec([0, 4], tf.float32)])
  saved = str(tmp_path / 'batch0')
  tf.saved_model.save(module, saved, signatures={'serving_default': module.serve})
  line = _refused([f'--saved_model={saved}', f'--output={tmp_path}/model.tflite'], tmp_path, capsys, 'tflite',
                  experiment=None)
  assert "takes input 'x' of shape [0, 4], which holds no data" in line


def test_plot_into_a_read_only_directory(trained, tmp_path, capsys):
  # /proc refuses new entries to every user, root included (chmod does not stop root).
  before = snapshot(trained)
  line = _refused([f'--model_dir={trained}', '--output_dir=/proc/tfm_plots'], tmp_path, capsys, 'plot',
                  experiment=None)
  assert '--output_dir /proc/tfm_plots is not writable' in line
  assert snapshot(trained) == before


def test_import_checkpoint_bad_destinations_and_truncated_source(tmp_path, capsys):
  source = str(tmp_path / 'model.ckpt-1')
  tf.train.Checkpoint(v=tf.Variable(tf.ones([4096]))).write(source)
  a_file = write(tmp_path / 'a_file', 'x')
  for model_dir, message in (('/proc/tfm_import', '--model_dir /proc/tfm_import is not writable'),
                             (a_file, f'--model_dir {a_file} is a file, not a directory')):
    assert message in _refused([f'--source={source}', f'--model_dir={model_dir}'], tmp_path, capsys,
                               'import-checkpoint', experiment='resnet_rigl')
  data = source + '.data-00000-of-00001'
  with open(data, 'rb') as f:
    content = f.read()
  with open(data, 'wb') as f:
    f.write(content[:len(content) // 2])
  line = _refused([f'--source={source}', f'--model_dir={tmp_path}/out'], tmp_path, capsys, 'import-checkpoint',
                  experiment='resnet_rigl')
  assert f"cannot read checkpoint '{source}' (truncated or corrupt?)" in line


# --- property: any number in any numeric field of task.sparsity, trainer and the data configs is refused in one line
# or runs; never a traceback ---

NUMERIC_BLOCKS = ('task.sparsity', 'trainer', 'task.train_data', 'task.validation_data')


def _numeric_fields():
  """(dotted name, int or float) of every field of NUMERIC_BLOCKS typed int, float or Optional of them."""
  import dataclasses
  import typing
  from official.core import exp_factory
  import tfmot_rigl.modelgarden  # noqa: F401  (registers the experiments)
  config = exp_factory.get_exp_config('mnist_rigl')
  fields = []
  for block in NUMERIC_BLOCKS:
    node = config
    for key in block.split('.'):
      node = getattr(node, key)
    hints = typing.get_type_hints(type(node))
    for field in dataclasses.fields(node):
      kinds = {kind for kind in (typing.get_args(hints[field.name]) or (hints[field.name],)) if kind is not type(None)}
      if kinds and kinds <= {int, float}:
        fields.append((f'{block}.{field.name}', float if float in kinds else int))
  return fields


NUMERIC_FIELDS = _numeric_fields()


def _value(kind, bounded):
  from hypothesis import strategies as st
  ints = st.one_of(st.integers(-3, 10), st.sampled_from([-2**31, 2**31, 2**32, 2**40, 2**63]),
                   st.integers(-2**64, 2**64))
  if bounded:  # values a real run can afford: a few steps, small batches
    ints = st.integers(-3, 6)
  floats = st.one_of(st.floats(-2.0, 2.0), st.floats(allow_nan=False, allow_infinity=False),
                     st.sampled_from([0.0, -0.0, 1e-30, -1e30, 1e30]))
  return ints if kind is int else st.one_of(floats, ints)


def _overrides(bounded=False):
  """A strategy of {field: value} for 1-3 numeric fields."""
  from hypothesis import strategies as st
  return st.lists(st.sampled_from(NUMERIC_FIELDS), min_size=1, max_size=3, unique=True).flatmap(
      lambda fields: st.fixed_dictionaries({name: _value(kind, bounded) for name, kind in fields}))


def _as_override(draw):
  """The draw as key=value pairs for --params_override (floats in repr, which Model Garden's loader reads back)."""
  return ','.join(f'{name}={value!r}' for name, value in draw.items())


def test_numeric_fields_are_checked_before_a_run_property():
  """Every draw either parses into a validated config or is one UsageError line; any other exception fails."""
  import argparse
  from hypothesis import HealthCheck, given, settings
  from tfmot_rigl.cli import UsageError
  from tfmot_rigl.cli import train as train_cli
  assert len(NUMERIC_FIELDS) > 30  # the blocks' numeric fields were found (sparsity, trainer, two data configs)
  outcomes = {'refused': 0, 'accepted': 0}

  @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
  @given(_overrides())
  def check(draw):
    flags_obj = argparse.Namespace(experiment='mnist_rigl', config_file=[], tpu='', tf_data_service='',
                                   params_override=f'{QUICK},{_as_override(draw)}')
    try:
      train_cli.parse_experiment(flags_obj, 'train')
      outcomes['accepted'] += 1
    except UsageError as error:
      assert '\n' not in str(error) and str(error), draw
      outcomes['refused'] += 1

  check()
  assert outcomes['refused'] and outcomes['accepted'], outcomes


def test_numeric_fields_run_or_are_refused_property(tmp_path, capsys):
  """A few real `tfm train` runs on drawn values (bounded to a few steps): exit 0, or exit 2 with one line and
  nothing left behind."""
  from hypothesis import HealthCheck, given, settings
  runs = iter(range(1000))

  @settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
  @given(_overrides(bounded=True))
  def check(draw):
    model_dir = tmp_path / f'run{next(runs)}'
    capsys.readouterr()
    with gin.unlock_config():
      code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={model_dir}', '--mode=train',
                       f'--params_override={QUICK},{_as_override(draw)}'])
    err = capsys.readouterr().err
    assert code in (0, 2), (draw, err[-2000:])
    if code == 2:
      one_error_line(err)
      assert not model_dir.exists(), draw

  check()
