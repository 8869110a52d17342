"""More hostile input to the `tfm` commands (issues 18 and 21), one test per class of input: config values out of
range, records of another format, damaged restart state, eval without a checkpoint, paths over the file system's
limits or unreachable, export / tflite / plot / import-checkpoint destinations and sources; and two property tests
over every numeric field of task.sparsity, trainer and the data configs. Each bad input: one line on stderr, exit
code 2, no traceback, nothing created or changed (content hashes before and after). Helpers and fixtures are
test_cli_errors.py's.
"""
import os
import shutil
import time

import gin
import pytest
import tensorflow as tf

from tfmot_rigl.cli import main as tfm
from test_cli_errors import QUICK, QUICK_6_STEPS, TRAIN_SHARD, _copy_tfds, one_error_line, quick, snapshot, write
from test_cli_errors import tfds_root, trained  # noqa: F401  (fixtures)


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
                     f'--params_override={quick("trainer.continuous_eval_timeout=1")}'])
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


def test_a_diverging_run_ends_in_one_line(tmp_path, capsys):
  """Model Garden stops a run whose loss is NaN or above trainer.loss_upper_bound with a RuntimeError: one line
  (the run was valid input, so its checkpoints so far stay), not a traceback."""
  model_dir = tmp_path / 'run'
  with gin.unlock_config():
    code = tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={model_dir}', '--mode=train',
                     f'--params_override={quick("trainer.loss_upper_bound=1e-9")}'])
  line = one_error_line(capsys.readouterr().err)
  assert code == 2
  assert 'training diverged: The loss value is' in line and 'larger than the bound 1e-09' in line
  assert f'checkpoints before it are kept in {model_dir}' in line


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
  """QUICK with the draw's key=value pairs (floats in repr, which Model Garden's loader reads back)."""
  return quick(*(f'{name}={value!r}' for name, value in draw.items()))


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
                                   params_override=_as_override(draw))
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
                       f'--params_override={_as_override(draw)}'])
    err = capsys.readouterr().err
    assert code in (0, 2), (draw, err[-2000:])
    if code == 2:
      one_error_line(err)
      assert not model_dir.exists(), draw

  check()
