"""`tfm import-checkpoint` of the RigL reference ResNet-50 (the README's commands), and the reference-matching patch.

The source checkpoint is written in the reference's exact variable layout (tests/reference_resnet.py) at full
ResNet-50 size with random values, ERK-80 % masks and batch norms calibrated on two images (so activations stay alive
under the masks: two images get clearly different logits). The imported model must hold the same kernels and masks
and compute what the reference's forward pass computes: logits within 1e-4 of the reference's (relative to its
largest logit), top-1 agreeing; built without `match_tf1_reference` it must fail that comparison (tests/
imported_models.py). MobileNet-v1/v2: tests/test_checkpoint_import_mobilenet.py.
"""
import contextlib
import io
import os
import re
import shlex

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from official.vision.modeling.layers import nn_blocks

import imported_models as imported
import reference_resnet as reference
import tfmot_rigl
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.modelgarden import checkpoint_import
from tfmot_rigl.modelgarden import reference_checkpoint
from tfmot_rigl.modelgarden import tf1_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERK_SPARSITY = 0.8
README_MODEL_DIR = 'model_dir/rn50_erk80_imported'


def readme_command(prefix: str):
  """The README's one shell line that starts with `prefix` and works on README_MODEL_DIR, as an argv list."""
  with open(os.path.join(REPO, 'README.md')) as readme:
    (line,) = [line.strip() for line in readme if line.startswith(prefix) and README_MODEL_DIR in line]
  return shlex.split(line)


@pytest.fixture(scope='module')
def resnet(tmp_path_factory):
  """The README's import and report commands, run in a directory holding an ERK-80% reference ResNet-50 checkpoint."""
  workdir = tmp_path_factory.mktemp('import_resnet')
  os.symlink(os.path.join(REPO, 'official_configs'), workdir / 'official_configs')
  import_argv, report_argv = readme_command('tfm import-checkpoint'), readme_command('tfm report')
  source = next(arg.split('=', 1)[1] for arg in import_argv if arg.startswith('--source='))
  layers = reference.resnet50_layers()
  # Masks as the reference's ERK draws them: every layer masked, the ones ERK keeps dense with masks of all ones.
  erk = tfmot_rigl.layer_sparsities({scope: shape for scope, shape, _ in layers}, ERK_SPARSITY, 'erk')
  os.makedirs(workdir / os.path.dirname(source))
  values = reference.write_reference_checkpoint(
      str(workdir / source), layers, lambda scope, shape: erk[scope],
      calibration=(lambda x, v: reference.resnet50_forward(x, v)['logits'], imported.images(1, 224)))
  outputs = []
  cwd = os.getcwd()
  os.chdir(workdir)
  try:
    for argv in (import_argv, report_argv):
      assert argv[0] == 'tfm'
      buffer = io.StringIO()
      with contextlib.redirect_stdout(buffer):
        assert tfm.main(argv[1:]) == 0
      outputs.append(buffer.getvalue())
  finally:
    os.chdir(cwd)
  return dict(values=values, layers=layers, model_dir=str(workdir / README_MODEL_DIR), source=str(workdir / source),
              import_output=outputs[0], report_output=outputs[1], workdir=workdir)


@pytest.fixture(scope='module')
def resnet_model(resnet):
  """The imported model as `tfm report` loads it, but built with `match_tf1_reference` off (one ResNet-50 build for
  the negative control and the comparison: `test_outputs_equal_the_reference_forward_pass` turns the patch on)."""
  return imported.load_imported('resnet_rigl', resnet['model_dir'], match_reference=False)


def test_every_reference_variable_is_mapped_and_printed(resnet):
  lines = resnet['import_output'].strip().splitlines()
  mapping = [line for line in lines if ' -> ' in line]
  # 53 convolutions and the head, 53 batch norms: one line each.
  assert len(mapping) == 2 * 53 + 1
  sources = {line.split(' -> ')[0].split('/{')[0] for line in mapping}
  scopes = {scope for scope, _, _ in resnet['layers']} | {bn for _, _, bn in resnet['layers'] if bn}
  assert sources == scopes
  stem = next(line for line in mapping if line.startswith('resnet_model/initial_conv/'))
  assert re.search(r'\[7, 7, 3, 64\]  sparsity 0\.\d{4}$', stem)
  stem_mask = resnet['values']['resnet_model/initial_conv/mask']
  assert float(stem.rsplit(' ', 1)[1]) == pytest.approx(1 - stem_mask.mean(), abs=1e-4)
  training_state = [name for name in resnet['values'] if checkpoint_import.is_training_state(name)]
  assert f'left out {len(training_state)} training-state variables' in lines[-2]
  model_variables = len(resnet['values']) - len(training_state)
  assert lines[-2].startswith(f'imported {model_variables} variables of the reference resnet50')
  assert sorted(os.listdir(resnet['model_dir'])) == ['checkpoint', 'ckpt-0.data-00000-of-00001', 'ckpt-0.index',
                                                      'experiment.txt', 'params.yaml']


def test_imported_kernels_and_masks_equal_the_source(resnet, resnet_model):
  values = resnet['values']
  masks = {id(weight): mask for wrapper in tfmot_rigl.keras.sparse_wrappers(resnet_model)
           for weight, mask, _ in wrapper.pruning_vars}
  pairs = checkpoint_import.layer_pairs(resnet_model, 'resnet50')
  assert len(pairs) == 2 * 53 + 1
  checked_masks = 0
  for pair in pairs:
    if pair.kind == 'bn':
      for name in checkpoint_import.BN_VARIABLES:
        np.testing.assert_array_equal(getattr(pair.target, name).numpy(), values[f'{pair.scope}/{name}'])
      continue
    kernel, mask = values[f'{pair.scope}/weights'], values[f'{pair.scope}/mask']
    target_kernel = pair.target.kernel.numpy()
    target_mask = masks[id(pair.target.kernel)].numpy() if id(pair.target.kernel) in masks else None
    if pair.kind == 'dense':  # Model Garden's background class 0 comes first, pruned
      np.testing.assert_array_equal(target_kernel[:, 0], 0)
      np.testing.assert_array_equal(target_mask[:, 0], 0)
      np.testing.assert_array_equal(pair.target.bias.numpy()[1:], values[f'{pair.scope}/biases'])
      target_kernel, target_mask = target_kernel[:, 1:], target_mask[:, 1:]
    np.testing.assert_array_equal(target_kernel, kernel * mask)
    if target_mask is None:  # a layer ERK keeps dense: the reference's mask is all ones there too
      assert mask.all(), pair.scope
    else:
      np.testing.assert_array_equal(target_mask, mask)
      checked_masks += 1
  assert checked_masks > 40


def test_outputs_equal_the_reference_forward_pass(resnet, resnet_model):
  image = imported.images(7, 224)
  expected = reference.resnet50_forward(image, resnet['values'])
  # Negative control: without the reference's padding the same comparison fails.
  imported.assert_fails_without_the_patch(resnet_model(image, training=False).numpy(), expected['logits'].numpy())
  # The 7x7 stem and the three strided 3x3s (the strided 1x1 shortcuts pad nothing: 'valid').
  assert imported.patch_as_the_task_does(resnet_model, 'resnet_rigl', resnet['model_dir']) == 4
  # The backbone is a chain up to its first block: run its layers one by one to see the stem and block outputs.
  backbone = next(layer for layer in resnet_model.layers if isinstance(layer, keras.Model))
  x, stem_out = image, None
  for layer in backbone.layers[1:]:
    x = layer(x, training=False)
    if isinstance(layer, keras.layers.MaxPooling2D):
      stem_out = x
    elif stem_out is not None:
      block_out = x
      break
  for name, output in (('stem', stem_out), ('block1', block_out)):
    assert imported.relative_difference(output.numpy(), expected[name].numpy()) <= imported.RELATIVE_TOLERANCE, name
  imported.assert_computes_the_reference(resnet_model(image, training=False).numpy(), expected['logits'].numpy())


def test_model_garden_padding_alone_would_differ_from_the_reference(resnet):
  """Why `match_tf1_reference` exists: Keras 'same' padding on the strided 7x7 stem shifts the output."""
  kernel = resnet['values']['resnet_model/initial_conv/weights'] * resnet['values']['resnet_model/initial_conv/mask']
  image = np.random.default_rng(3).standard_normal((1, 32, 32, 3)).astype(np.float32)
  conv = keras.layers.Conv2D(64, 7, strides=2, padding='same', use_bias=False)
  conv.build(image.shape)
  conv.kernel.assign(kernel)
  reference_out = tf.nn.conv2d(tf.pad(image, [[0, 0], [3, 3], [3, 3], [0, 0]]), kernel, 2, 'VALID').numpy()
  assert np.abs(conv(image).numpy() - reference_out).max() > 1e-2
  tf1_reference.match_tf1_reference(keras.Sequential([conv]))
  np.testing.assert_allclose(conv(image).numpy(), reference_out, atol=1e-5)


def test_strided_depthwise_convolutions_get_the_reference_padding():
  """MobileNets' four stride-2 depthwise convolutions (not Conv2D subclasses in tf_keras 2.20)."""
  rng = np.random.default_rng(4)
  image = rng.standard_normal((1, 16, 16, 8)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 8, 1)).astype(np.float32)
  conv = keras.layers.DepthwiseConv2D(3, strides=2, padding='same', use_bias=False)
  conv.build(image.shape)
  conv.depthwise_kernel.assign(kernel)
  reference_out = tf.nn.depthwise_conv2d(tf.pad(image, [[0, 0], [1, 1], [1, 1], [0, 0]]), kernel, [1, 2, 2, 1],
                                         'VALID').numpy()
  assert np.abs(conv(image).numpy() - reference_out).max() > 1e-2
  assert tf1_reference.match_tf1_reference(keras.Sequential([conv])) == 1
  np.testing.assert_allclose(conv(image).numpy(), reference_out, atol=1e-5)


def test_model_garden_mobilenet_v1_blocks_get_the_reference_relu():
  """MobileNet-v1's blocks apply Model Garden's own relu6 function (not tf.nn.relu6): it becomes ReLU too."""
  # pylint: disable=protected-access
  block = nn_blocks.DepthwiseSeparableConvBlock(filters=8, activation='relu6')
  image = np.random.default_rng(6).normal(0.0, 20.0, (1, 8, 8, 8)).astype(np.float32)
  assert block(image, training=False).numpy().max() == 6.0
  assert tf1_reference.match_tf1_reference(keras.Sequential([block]), relu_activations=True) == 1
  # The block's own layers with ReLU after each batch norm, as the reference's block applies them.
  hidden = tf.nn.relu(block._norm0(block._dwconv0(image), training=False))
  expected = tf.nn.relu(block._norm1(block._conv1(hidden), training=False)).numpy()
  assert expected.max() > 6.0
  np.testing.assert_array_equal(block(image, training=False).numpy(), expected)


def test_report_gives_the_sparsity_of_the_source_masks(resnet):
  report = resnet['report_output']
  values = resnet['values']
  source_masks = [values[f'{scope}/mask'] for scope, _, _ in resnet['layers']]
  nonzeros = sum(int(mask.sum()) for mask in source_masks)
  params = sum(mask.size for mask in source_masks) + 2048  # plus the background column of the 1001-way head
  totals = re.search(r'Kernel sparsity ([\d.]+) \(([\d,]+) of ([\d,]+) kernel weights nonzero\)', report)
  assert int(totals.group(2).replace(',', '')) == nonzeros
  assert int(totals.group(3).replace(',', '')) == params
  assert float(totals.group(1)) == pytest.approx(1 - nonzeros / params, abs=1e-4)
  # Per layer: each kernel's sparsity in the report's table is its source mask's (head: plus the pruned background).
  rows = re.findall(r'^\| [^|]+ \| ([\d×]+) \| ([\d.]+) \| [\d,]+ \|', report, flags=re.M)
  head = values['resnet_model/final_dense/mask']
  expected = [('×'.join(map(str, mask.shape)), f'{1 - mask.sum() / mask.size:.4f}') for mask in source_masks[:-1]]
  expected.append(('2048×1001', f'{1 - head.sum() / (head.size + 2048):.4f}'))
  assert sorted(rows) == sorted(expected)


def test_errors_are_one_line_with_exit_code_2(resnet, tmp_path, capsys):
  workdir = resnet['workdir']
  base = ['import-checkpoint', '--experiment=resnet_rigl', f'--model_dir={tmp_path / "new"}']
  assert tfm.main(base + [f'--source={workdir}/missing/model.ckpt-1']) == 2
  assert 'not found' in imported.error_line(capsys)
  assert tfm.main(['import-checkpoint', '--experiment=resnet_rigl', f'--source={resnet["source"]}',
                   f'--model_dir={resnet["model_dir"]}']) == 2
  assert 'already holds a run' in imported.error_line(capsys)
  # Another network's checkpoint: told before any model is built.
  assert tfm.main(['import-checkpoint', '--experiment=mobilenet_rigl', f'--source={resnet["source"]}',
                   f'--model_dir={tmp_path / "mobilenet"}']) == 2
  assert 'holds the reference resnet50' in imported.error_line(capsys)
  assert not os.path.exists(tmp_path / 'new') and not os.path.exists(tmp_path / 'mobilenet')


def _tf1_unpruned_names():
  """Variable names TF1 gives an unpruned conv and dense layer built as `pruning_layers.sparse_conv2d` /
  `sparse_fully_connected` build them ('baseline': tf.layers inside a scope whose getter renames kernel/bias)."""
  v1 = tf.compat.v1

  def rename(getter, name, *args, **kwargs):
    parts = name.split('/')
    parts[-1] = {'kernel': 'weights', 'bias': 'biases'}.get(parts[-1], parts[-1])
    return getter('/'.join(parts), *args, **kwargs)

  with tf.Graph().as_default() as graph:
    images = v1.placeholder(tf.float32, [1, 16, 16, 3])
    with v1.variable_scope(None, 'resnet_model'):
      with v1.variable_scope('initial_conv', 'Conv', [images], custom_getter=rename):
        features = v1.layers.conv2d(images, 8, 7, strides=2, use_bias=False, name='initial_conv')
      with v1.variable_scope('final_dense', 'Dense', [features], custom_getter=rename):
        v1.layers.dense(v1.reshape(features, [1, -1]), 10, name='final_dense')
    return {variable.name.split(':')[0]: variable.shape.as_list() for variable in graph.get_collection('variables')}


def test_unpruned_layers_are_found_under_either_reference_naming():
  """`resnet_model/initial_conv/kernel` when built directly (MobileNet's stem), `.../initial_conv/initial_conv/weights`
  inside `pruning_layers`' renaming scope (ResNet's stem when the first layer is not pruned)."""
  shapes = dict(_tf1_unpruned_names(), **{'resnet_model/contraction_1x1_0/kernel': [1, 1, 32, 64]})
  assert 'resnet_model/initial_conv/initial_conv/weights' in shapes
  source = reference_checkpoint.SourceVariables(reader=None, shapes=shapes)
  assert source.find('resnet_model/initial_conv', ['weights', 'kernel']) == (
      'resnet_model/initial_conv/initial_conv/weights')
  assert source.find('resnet_model/final_dense', ['weights', 'kernel']) == (
      'resnet_model/final_dense/final_dense/weights')
  assert source.find('resnet_model/final_dense', ['biases', 'bias']) == 'resnet_model/final_dense/final_dense/biases'
  assert source.find('resnet_model/contraction_1x1_0', ['weights', 'kernel']) == (
      'resnet_model/contraction_1x1_0/kernel')
  assert source.find('resnet_model/initial_conv', ['mask']) is None
