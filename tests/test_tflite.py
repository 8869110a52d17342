"""`tfm tflite`: the MNIST MLP (784-300-100-10) at 90% ERK, stripped and exported, converted dense, sparse and int8."""
import os

import numpy as np
import pytest
import tensorflow as tf
from official.core import exp_factory

from tfmot_rigl.cli import main as tfm
from tfmot_rigl.export import saved_model
from tfmot_rigl.export import tflite


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """A SavedModel as `tfm export` writes it (uint8 images in) of the experiment's model with its initial masks."""
  params = exp_factory.get_exp_config('mnist_rigl')
  params.validate()
  model = saved_model.build_sparse_model(params)
  path = str(tmp_path_factory.mktemp('tflite') / 'saved_model')
  return saved_model.export_saved_model(params, path, model=model)


def _convert(exported, tmp_path, *flags):
  output = str(tmp_path / (('_'.join(flag.strip('-') for flag in flags) or 'dense') + '.tflite'))
  assert tfm.main(['tflite', f'--saved_model={exported}', f'--output={output}', *flags]) == 0
  return output


def _max_diff_to_saved_model(exported, path, images):
  expected = tf.saved_model.load(exported).signatures['serving_default'](inputs=tf.constant(images))
  interpreter = tflite.make_interpreter(open(path, 'rb').read())
  actual = interpreter.get_signature_runner('serving_default')(inputs=images)
  return max(float(np.max(np.abs(actual[key] - expected[key].numpy()))) for key in ('logits', 'probs'))


def _has_sparse_tensors(path):
  interpreter = tflite.make_interpreter(open(path, 'rb').read())
  return any(detail['sparsity_parameters'] for detail in interpreter.get_tensor_details())


def test_sparse_tflite_is_small_and_matches_the_saved_model(exported, tmp_path, capsys):
  dense = _convert(exported, tmp_path)
  sparse = _convert(exported, tmp_path, '--sparse')
  printed = capsys.readouterr().out
  assert '0.1' in printed and 'builtin kernels' in printed, printed
  dense_size, sparse_size = os.path.getsize(dense), os.path.getsize(sparse)
  print(f'MNIST MLP 784-300-100-10 at 90% ERK: dense TFLite {dense_size:,} bytes, sparse {sparse_size:,} bytes '
        f'({sparse_size / dense_size:.3f}x)')
  assert sparse_size <= 0.2 * dense_size
  assert _has_sparse_tensors(sparse) and not _has_sparse_tensors(dense)

  images = np.random.default_rng(7).integers(0, 256, size=(5, 28, 28, 1), dtype=np.uint8)
  assert _max_diff_to_saved_model(exported, sparse, images) <= 1e-4
  assert _max_diff_to_saved_model(exported, dense, images) <= 1e-4


def _run_in_default_interpreter(path, images):
  """As a user loads the file: tf.lite.Interpreter with default settings (XNNPACK delegate)."""
  runner = tf.lite.Interpreter(model_path=path).get_signature_runner()
  return runner(inputs=images)['probs']


def test_int8_on_top_of_sparse_is_smaller_and_close(exported, tmp_path, capsys):
  sparse = _convert(exported, tmp_path, '--sparse')
  images = np.random.default_rng(8).integers(0, 256, size=(5, 28, 28, 1), dtype=np.uint8)
  assert np.allclose(_run_in_default_interpreter(sparse, images).sum(axis=1), 1.0, atol=1e-5)
  # Sparse int8 fully-connected weights do not run in the default interpreter: refused in one line, nothing written.
  refused = tmp_path / 'refused.tflite'
  assert tfm.main(['tflite', f'--saved_model={exported}', f'--output={refused}', '--sparse', '--int8']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'does not run in the default tf.lite.Interpreter' in err[0], err
  assert '--builtin_kernels_only' in err[0] and not refused.exists()
  int8 = _convert(exported, tmp_path, '--sparse', '--int8', '--builtin_kernels_only')
  assert 'BUILTIN_WITHOUT_DEFAULT_DELEGATES' in capsys.readouterr().out
  print(f'sparse float {os.path.getsize(sparse):,} bytes, sparse int8 {os.path.getsize(int8):,} bytes')
  assert os.path.getsize(int8) < 0.7 * os.path.getsize(sparse)
  assert _max_diff_to_saved_model(exported, int8, images) <= 0.1  # dynamic-range int8 weights: close, not equal
  dense_int8 = _convert(exported, tmp_path, '--int8')
  assert np.allclose(_run_in_default_interpreter(dense_int8, images).sum(axis=1), 1.0, atol=1e-4)


def test_conversion_errors_leave_files_alone(exported, tmp_path, capsys):
  def error_line():
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('tfm tflite: error:'), err
    return err[0]

  class NoSignature(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def double(self, x):
      return 2 * x

  unsigned = str(tmp_path / 'unsigned')
  tf.saved_model.save(NoSignature(), unsigned, signatures={})
  output = tmp_path / 'out.tflite'
  assert tfm.main(['tflite', f'--saved_model={unsigned}', f'--output={output}']) == 2
  assert 'serving_default' in error_line()
  assert tfm.main(['tflite', f'--saved_model={tmp_path}/missing', f'--output={output}']) == 2
  assert 'no SavedModel' in error_line()
  assert not output.exists()

  output.write_bytes(b'keep me')
  assert tfm.main(['tflite', f'--saved_model={exported}', f'--output={output}', '--sparse']) == 2
  assert '--overwrite' in error_line()
  assert output.read_bytes() == b'keep me'
  # --overwrite replaces only a file an earlier `tfm tflite` wrote.
  assert tfm.main(['tflite', f'--saved_model={exported}', f'--output={output}', '--sparse', '--overwrite']) == 2
  assert 'is not a TFLite file' in error_line()
  assert output.read_bytes() == b'keep me'
  output.unlink()
  assert tfm.main(['tflite', f'--saved_model={exported}', f'--output={output}']) == 0
  assert not _has_sparse_tensors(str(output))
  assert tfm.main(['tflite', f'--saved_model={exported}', f'--output={output}', '--sparse', '--overwrite']) == 0
  assert _has_sparse_tensors(str(output))
  assert sorted(os.listdir(tmp_path)) == ['out.tflite', 'unsigned']  # no staging file left behind
  capsys.readouterr()  # the conversions' output (the interpreter's XNNPACK INFO line)

  assert tfm.main(['tflite', f'--output={output}']) == 2
  assert '--saved_model' in error_line()
