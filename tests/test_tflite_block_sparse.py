"""Block-sparse masks through `tfm tflite --sparse`: FULLY_CONNECTED weights stored in blocks, run by sparse kernels.

A 32-64-64-10 MLP at 90% uniform sparsity with Static masks in Keras blocks of (4, 1), (16, 1) and (1, 1)
(unstructured), stripped and saved; converted with EXPERIMENTAL_SPARSITY (and int8).
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.export import saved_model
from tfmot_rigl.export import tflite
from tfmot_rigl.export import tflite_ops

HIDDEN = ('hidden1', 'hidden2')


def _saved_model(block_shape, path):
  keras.utils.set_random_seed(0)
  inputs = keras.Input((32,), name='features')
  x = keras.layers.Dense(64, activation='relu', name='hidden1')(inputs)
  x = keras.layers.Dense(64, activation='relu', name='hidden2')(x)
  model = keras.Model(inputs, keras.layers.Dense(10, name='logits')(x))
  pruned = tfmot_rigl.prune_sparse(model, tfmot_rigl.make_algorithm('static', block_shape=block_shape), sparsity=0.9,
                                   distribution='uniform', first_layer_dense=False)
  plain = saved_model.strip_for_serving(pruned)

  @tf.function(input_signature=[tf.TensorSpec([None, 32], tf.float32, name='features')])
  def serve(features):
    return {'logits': plain(features, training=False)}

  tf.saved_model.save(plain, path, signatures={'serving_default': serve})
  return path


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """{Keras block_shape: SavedModel directory}."""
  root = tmp_path_factory.mktemp('block_sparse')
  return {block: _saved_model(block, str(root / f'b{block[0]}x{block[1]}')) for block in ((4, 1), (16, 1), (1, 1))}


def _features(n=8):
  return np.random.default_rng(3).standard_normal((n, 32)).astype(np.float32)


def _saved_model_logits(path, features):
  return tf.saved_model.load(path).signatures['serving_default'](features=tf.constant(features))['logits'].numpy()


def _op_types(content):
  """The builtin op names of the file's main subgraph, read straight from the flatbuffer."""
  from tensorflow.lite.python import schema_py_generated as schema
  model = schema.ModelT.InitFromPackedBuf(content, 0)
  names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith('_')}
  codes = model.operatorCodes
  return [names[max(codes[op.opcodeIndex].builtinCode, codes[op.opcodeIndex].deprecatedBuiltinCode)]
          for op in model.subgraphs[0].operators]


def _interpreter_blocks(interpreter):
  """{tensor name: dense size of its block dim} for tensors the interpreter reports stored in blocks."""
  blocks = {}
  for detail in interpreter.get_tensor_details():
    sparsity = detail['sparsity_parameters']
    if sparsity and len(sparsity.get('block_map', [])):
      rank = len(sparsity['traversal_order']) - len(sparsity['block_map'])
      blocks[detail['name']] = [m['dense_size'] for m in sparsity['dim_metadata'][rank:]]
  return blocks


def test_float_block_sparse_weights_run_sparse_and_match(saved):
  content = tflite.convert(saved[(4, 1)], sparse=True)
  ops = tflite_ops.weight_ops(content)
  assert [op.name for op in ops] == [*HIDDEN, 'logits'], ops
  for op in ops:
    assert (op.op, op.storage, op.block, op.keras_block, op.densified) == (
        'FULLY_CONNECTED', 'block-sparse', (1, 4), (4, 1), False), op
    assert op.runs_sparse and 0.09 <= op.stored_fraction <= 0.11, op
  assert [op.weight_shape for op in ops] == [(64, 32), (64, 64), (10, 64)]  # TFLite's [out, in]
  assert 'DENSIFY' not in _op_types(content) and _op_types(content).count('FULLY_CONNECTED') == 3
  assert tflite_ops.describe(ops) == [
      'runs sparse: FULLY_CONNECTED hidden1, hidden2, logits (float32 weights in 1×4 blocks = Keras block_shape '
      '(4, 1))']

  # As users load it: a default interpreter (XNNPACK delegate), which leaves these ops to TFLite's sparse kernels.
  interpreter = tf.lite.Interpreter(model_content=content)
  assert sorted(_interpreter_blocks(interpreter).values()) == [[4]] * 3
  features = _features()
  actual = interpreter.get_signature_runner('serving_default')(features=features)['logits']
  expected = _saved_model_logits(saved[(4, 1)], features)
  assert np.max(np.abs(actual - expected)) <= 1e-4 and np.max(np.abs(expected)) > 1e-3


def test_unstructured_weights_are_stored_sparse_but_densified(saved):
  content = tflite.convert(saved[(1, 1)], sparse=True)
  ops = tflite_ops.weight_ops(content)
  assert len(ops) == 3 and all(op.storage == 'sparse' and op.block is None and op.densified for op in ops), ops
  assert _op_types(content).count('DENSIFY') == 3
  assert not _interpreter_blocks(tf.lite.Interpreter(model_content=content))
  lines = tflite_ops.describe(ops)
  assert lines[0] == 'runs sparse: none', lines
  assert 'computed dense: FULLY_CONNECTED hidden1, hidden2, logits' in lines[1] and 'densified at load' in lines[1]


def test_int8_needs_16_blocks_and_the_builtin_resolver(saved):
  features = _features()
  float_logits = tflite.make_interpreter(tflite.convert(saved[(16, 1)], sparse=True)).get_signature_runner()(
      features=features)['logits']
  content = tflite.convert(saved[(16, 1)], sparse=True, int8=True)
  ops = {op.name: op for op in tflite_ops.weight_ops(content)}
  for name in HIDDEN:
    assert (ops[name].weight_type, ops[name].block, ops[name].keras_block) == ('int8', (1, 16), (16, 1)), ops[name]
    assert ops[name].runs_sparse
  # The 10×64 logits kernel is too small for dynamic-range quantisation: float, in the float kernel's 1×4 blocks.
  assert (ops['logits'].weight_type, ops['logits'].block, ops['logits'].densified) == ('float32', (1, 4), False)
  assert 'DENSIFY' not in _op_types(content)
  interpreter = tf.lite.Interpreter(
      model_content=content,
      experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  assert sorted(_interpreter_blocks(interpreter).values()) == [[4], [16], [16]]
  int8_logits = interpreter.get_signature_runner('serving_default')(features=features)['logits']
  assert np.max(np.abs(int8_logits - float_logits)) <= 0.01 * np.max(np.abs(float_logits))
  assert np.max(np.abs(int8_logits - float_logits)) > 0  # int8 weights: close, not the same file

  # (4, 1) blocks are not what int8 weights need: stored unblocked and densified, computed dense.
  coarse = {op.name: op for op in tflite_ops.weight_ops(tflite.convert(saved[(4, 1)], sparse=True, int8=True))}
  assert all(coarse[name].densified and coarse[name].block is None for name in HIDDEN), coarse


def _shown(capsys):
  """The lines `tfm tflite` printed, also shown with -s."""
  printed = capsys.readouterr().out.splitlines()
  with capsys.disabled():
    print('\n'.join(printed))
  return printed


def test_cli_prints_which_ops_run_sparse_and_how_to_load(saved, tmp_path, capsys):
  output = tmp_path / 'float.tflite'
  assert tfm.main(['tflite', f'--saved_model={saved[(4, 1)]}', f'--output={output}', '--sparse']) == 0
  printed = _shown(capsys)
  assert printed[1:] == [
      '  runs sparse: FULLY_CONNECTED hidden1, hidden2, logits (float32 weights in 1×4 blocks = Keras block_shape '
      '(4, 1))',
      f'  run it with tf.lite.Interpreter(model_path={str(output)!r}) (default settings; outputs checked against '
      'the SavedModel).']

  # Sparse int8 files are refused unless meant for the builtin kernels; then the line says how to load them.
  refused = tmp_path / 'refused.tflite'
  args = ['tflite', f'--saved_model={saved[(16, 1)]}', '--sparse', '--int8']
  assert tfm.main(args + [f'--output={refused}']) == 2 and not refused.exists()
  assert 'NaN' in capsys.readouterr().err
  output = tmp_path / 'int8.tflite'
  assert tfm.main(args + [f'--output={output}', '--builtin_kernels_only']) == 0
  printed = _shown(capsys)
  assert printed[1:3] == [
      '  runs sparse: FULLY_CONNECTED hidden1, hidden2 (int8 weights in 1×16 blocks = Keras block_shape (16, 1))',
      '  runs sparse: FULLY_CONNECTED logits (float32 weights in 1×4 blocks = Keras block_shape (4, 1))']
  assert printed[3].startswith(f'  run it with tf.lite.Interpreter(model_path={str(output)!r}, '
                               'experimental_op_resolver_type=tf.lite.experimental.OpResolverType.'
                               'BUILTIN_WITHOUT_DEFAULT_DELEGATES): '), printed[3]
  assert 'hidden1, hidden2' in printed[3] and len(printed) == 4

  # Unstructured masks: stored sparse, computed dense, with the hint to train in blocks.
  output = tmp_path / 'unstructured.tflite'
  assert tfm.main(['tflite', f'--saved_model={saved[(1, 1)]}', f'--output={output}', '--sparse']) == 0
  printed = _shown(capsys)
  assert printed[1] == '  runs sparse: none' and 'densified at load' in printed[2], printed
  assert 'block_shape (4, 1)' in printed[3], printed
