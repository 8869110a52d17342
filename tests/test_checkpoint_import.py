"""`tfm import-checkpoint`: the RigL reference's TF1 checkpoints as Model Garden model_dirs.

The source checkpoints are written in the reference's exact variable layout (tests/reference_resnet.py) at full
ResNet-50 / MobileNet-v1 / v2 size with random values, random 75-80 % masks and batch norms calibrated on a few images
(so activations stay alive under the masks: two images get clearly different logits). The imported model must hold
the same kernels and masks and compute what the reference's forward pass computes: logits within 1e-4 of the
reference's (relative to its largest logit), top-1 agreeing. Negative control: the same models built without
`match_tf1_reference` fail that comparison.
"""
import argparse
import contextlib
import glob
import io
import os
import re
import shlex

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from official.core import task_factory
from official.vision.modeling.layers import nn_blocks

import reference_resnet as reference
import tfmot_rigl
from tfmot_rigl.cli import export as export_cli
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.export import saved_model
from tfmot_rigl.modelgarden import checkpoint_import
from tfmot_rigl.modelgarden import reference_checkpoint
from tfmot_rigl.modelgarden import tf1_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERK_SPARSITY = 0.8


README_MODEL_DIR = 'model_dir/rn50_erk80_imported'
RELATIVE_TOLERANCE = 1e-4  # of the logits, relative to the largest reference logit
LIVE_SPREAD = 0.1  # two images' reference logits differ by at least this much of the largest logit


def _images(seed: int, size: int, count: int = 2) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-2.0, 2.0, (count, size, size, 3)).astype(np.float32)


def relative_difference(logits: np.ndarray, expected: np.ndarray) -> float:
  """max |logits - expected| over max |expected|: the logits' error on the scale of the reference's logits."""
  return float(np.abs(logits - expected).max() / np.abs(expected).max())


def assert_live(expected: np.ndarray) -> None:
  """The reference logits of two different images differ clearly; dead activations would hide any difference."""
  spread = relative_difference(expected[0], expected[1])
  assert spread > LIVE_SPREAD, f'two images\' reference logits differ by only {spread:.2e} (relative): dead network'


def assert_computes_the_reference(logits: np.ndarray, expected: np.ndarray) -> None:
  """Model Garden's 1001-way logits against the reference's 1000: classes 1..1000 within RELATIVE_TOLERANCE, the
  background class 0 at BACKGROUND_BIAS, top-1 agreeing on every image."""
  assert_live(expected)
  assert (logits[:, 0] == checkpoint_import.BACKGROUND_BIAS).all()
  difference = relative_difference(logits[:, 1:], expected)
  assert difference <= RELATIVE_TOLERANCE, f'logits differ from the reference\'s by {difference:.2e} (relative)'
  assert (np.argmax(logits, axis=1) - 1 == np.argmax(expected, axis=1)).all()


def assert_fails_without_the_patch(logits: np.ndarray, expected: np.ndarray) -> None:
  """Negative control: logits of the model built without `match_tf1_reference` fail the comparison, clearly."""
  with pytest.raises(AssertionError):
    assert_computes_the_reference(logits, expected)
  assert relative_difference(logits[:, 1:], expected) > 100 * RELATIVE_TOLERANCE


def patch_as_the_task_does(model: keras.Model, experiment: str, model_dir: str) -> int:
  """`match_tf1_reference` on an imported model built without it, as the task applies it when params.yaml sets
  `task.model.match_tf1_reference` (as the import writes it): ReLU for ReLU6 in MobileNets. Returns the layers changed.

  One build serves the negative control and the comparison; the task's own path (params.yaml to the patch) is
  compared at the same bar by `test_tfm_export_ships_the_reference_function` and `tfm train --mode=eval`.
  """
  params = imported_params(experiment, model_dir)
  assert params.task.model.match_tf1_reference
  return tf1_reference.match_tf1_reference(model, relu_activations=params.task.model.backbone.type == 'mobilenet')


def readme_command(prefix: str):
  """The README's one shell line that starts with `prefix` and works on README_MODEL_DIR, as an argv list."""
  with open(os.path.join(REPO, 'README.md')) as readme:
    (line,) = [line.strip() for line in readme if line.startswith(prefix) and README_MODEL_DIR in line]
  return shlex.split(line)


def imported_params(experiment: str, model_dir: str, override: str = ''):
  """The config `tfm report` / `tfm export` read from an imported model_dir (its params.yaml)."""
  return export_cli.experiment_params(argparse.Namespace(
      experiment=experiment, config_file=[], params_override=override, tpu='', tf_data_service='',
      model_dir=model_dir))


def load_imported(experiment: str, model_dir: str, match_reference: bool = True):
  """The imported model as `tfm report` / `tfm export` load it: params.yaml's config, weights from ckpt-0.

  `match_reference=False` builds it without the reference-matching patch (the negative control).
  """
  params = imported_params(experiment, model_dir, '' if match_reference else 'task.model.match_tf1_reference=false')
  assert params.task.model.match_tf1_reference == match_reference
  model, _ = saved_model.load_trained_model(params, model_dir)
  return model


def _error_line(capsys) -> str:
  """The one error line of a failed `tfm import-checkpoint` (stderr may also hold the model build's log lines)."""
  captured = capsys.readouterr()
  lines = [line for line in captured.err.splitlines() if line.startswith('tfm import-checkpoint: error:')]
  assert len(lines) == 1, captured.err
  assert 'Traceback' not in captured.err
  return lines[0]


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
      calibration=(lambda x, v: reference.resnet50_forward(x, v)['logits'], _images(1, 224)))
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
  return load_imported('resnet_rigl', resnet['model_dir'], match_reference=False)


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
  image = _images(7, 224)
  expected = reference.resnet50_forward(image, resnet['values'])
  # Negative control: without the reference's padding the same comparison fails.
  assert_fails_without_the_patch(resnet_model(image, training=False).numpy(), expected['logits'].numpy())
  # The 7x7 stem and the three strided 3x3s (the strided 1x1 shortcuts pad nothing: 'valid').
  assert patch_as_the_task_does(resnet_model, 'resnet_rigl', resnet['model_dir']) == 4
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
    assert relative_difference(output.numpy(), expected[name].numpy()) <= RELATIVE_TOLERANCE, name
  assert_computes_the_reference(resnet_model(image, training=False).numpy(), expected['logits'].numpy())


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
  assert 'not found' in _error_line(capsys)
  assert tfm.main(['import-checkpoint', '--experiment=resnet_rigl', f'--source={resnet["source"]}',
                   f'--model_dir={resnet["model_dir"]}']) == 2
  assert 'already holds a run' in _error_line(capsys)
  # Another network's checkpoint: told before any model is built.
  assert tfm.main(['import-checkpoint', '--experiment=mobilenet_rigl', f'--source={resnet["source"]}',
                   f'--model_dir={tmp_path / "mobilenet"}']) == 2
  assert 'holds the reference resnet50' in _error_line(capsys)
  assert not os.path.exists(tmp_path / 'new') and not os.path.exists(tmp_path / 'mobilenet')


# The reference MobileNets, imported at small inputs (the reference network takes any size).
MOBILENETS = {
    'mobilenet_v1': (reference.mobilenet_v1_layers, reference.mobilenet_v1_forward, 96,
                     'mobilenet1_rigl_uniform_s75_1x.yaml'),
    'mobilenet_v2': (reference.mobilenet_v2_layers, reference.mobilenet_v2_forward, 64,
                     'mobilenet2_rigl_uniform_s75_1x.yaml'),
}


def _import_mobilenet(workdir, architecture: str) -> dict:
  """A calibrated reference checkpoint as the paper's runs leave it (first layer and depthwise kernels dense, the
  rest at 75 %), imported by `tfm import-checkpoint`; the reference's logits on two other images."""
  layers_of, forward, size, row = MOBILENETS[architecture]
  layers = layers_of()
  source = str(workdir / 'model.ckpt-32000')
  values = reference.write_reference_checkpoint(
      source, layers, lambda scope, shape: None if scope.endswith('initial_conv') else 0.75,
      calibration=(forward, _images(1, size)))
  model_dir = str(workdir / 'model_dir')
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    assert tfm.main(['import-checkpoint', '--experiment=mobilenet_rigl', f'--config_file={REPO}/official_configs/{row}',
                     f'--params_override=task.model.input_size=[{size},{size},3]', f'--source={source}',
                     f'--model_dir={model_dir}']) == 0
  images = _images(5, size)
  return dict(workdir=workdir, layers=layers, values=values, source=source, model_dir=model_dir, images=images,
              expected=forward(images, values).numpy(), forward=forward,
              import_lines=[line for line in buffer.getvalue().splitlines() if ' -> ' in line])


@pytest.fixture(scope='module')
def mobilenet_v1(tmp_path_factory):
  return _import_mobilenet(tmp_path_factory.mktemp('import_mobilenet_v1'), 'mobilenet_v1')


@pytest.fixture(scope='module')
def mobilenet_v2(tmp_path_factory):
  return _import_mobilenet(tmp_path_factory.mktemp('import_mobilenet_v2'), 'mobilenet_v2')


def _assert_mobilenet_matches_only_with_the_patch(imported: dict, changed: int) -> None:
  model = load_imported('mobilenet_rigl', imported['model_dir'], match_reference=False)
  assert_fails_without_the_patch(model(imported['images'], training=False).numpy(), imported['expected'])
  assert patch_as_the_task_does(model, 'mobilenet_rigl', imported['model_dir']) == changed
  assert_computes_the_reference(model(imported['images'], training=False).numpy(), imported['expected'])


def test_mobilenet_v1_import_matches_the_reference_at_a_small_input(mobilenet_v1):
  lines = mobilenet_v1['import_lines']
  assert len(lines) == 2 + 4 * 13 + 1  # stem conv and batch norm, 13 x (depthwise, bn, pointwise, bn), head
  assert sum('sparsity 0.7500' in line for line in lines if '/contraction_1x1_' in line) == 13
  dense = ('resnet_model/depthwise_nxn_', 'resnet_model/initial_conv/')  # as the reference keeps them
  assert not any('sparsity' in line for line in lines if line.startswith(dense))
  # Padding: the stem and the 4 strided depthwise convolutions; ReLU: the stem's and the 13 blocks'.
  _assert_mobilenet_matches_only_with_the_patch(mobilenet_v1, changed=5 + 14)


def test_mobilenet_v2_import_matches_the_reference_at_a_small_input(mobilenet_v2):
  lines = mobilenet_v2['import_lines']
  assert len(lines) == 2 * (len(mobilenet_v2['layers']) - 1) + 1  # every convolution with its batch norm, the head
  assert sum('sparsity 0.7500' in line for line in lines) == 16 + 17 + 1  # expand, contraction, final 1x1 conv
  # Padding: the stem and the 4 strided depthwise convolutions; ReLU: the stem, the 17 blocks' expansion activations
  # (block 0 holds one it does not use), their 17 depthwise ones and the final 1x1 convolution's.
  _assert_mobilenet_matches_only_with_the_patch(mobilenet_v2, changed=5 + 1 + 17 + 17 + 1)


def test_unexpected_variables_are_listed(mobilenet_v1, tmp_path, capsys):
  source = str(tmp_path / 'model.ckpt-1')
  reference.write_reference_checkpoint(
      source, mobilenet_v1['layers'], lambda scope, shape: None if scope.endswith('initial_conv') else 0.75,
      extra={'resnet_model/squeeze_excite_3/weights': np.zeros((8, 8), np.float32)})
  assert tfm.main(['import-checkpoint', '--experiment=mobilenet_rigl',
                   '--params_override=task.model.input_size=[96,96,3]',
                   f'--source={source}', f'--model_dir={tmp_path / "out"}']) == 2
  line = _error_line(capsys)
  assert 'resnet_model/squeeze_excite_3/weights' in line and 'does not' in line
  assert not os.path.exists(tmp_path / 'out')


def _write_records(path: str, images, labels) -> None:
  with tf.io.TFRecordWriter(path) as writer:
    for image, label in zip(images, labels):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_jpeg(image).numpy()])),
          'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
      })).SerializeToString())


def test_tfm_train_evaluates_the_imported_model(mobilenet_v1):
  """Records labelled with the reference's own predictions: `tfm train --mode=eval` must score 100% on them."""
  model_dir = mobilenet_v1['model_dir']
  params_file = os.path.join(model_dir, 'params.yaml')
  records = str(mobilenet_v1['workdir'] / 'validation.tfrecord')
  images = np.random.default_rng(11).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
  _write_records(records, images, [0] * 4)
  override = (f'task.train_data.input_path={records},task.validation_data.input_path={records},'
              'task.validation_data.global_batch_size=4,trainer.validation_steps=1')
  # The evaluation's own preprocessing (decode, centre crop, resize, normalise) of those images.
  params = export_cli.experiment_params(argparse.Namespace(
      experiment='mobilenet_rigl', config_file=[], params_override=override, tpu='', tf_data_service='',
      model_dir=model_dir))
  task = task_factory.get_task(params.task)
  preprocessed, _ = next(iter(task.build_inputs(params.task.validation_data)))
  labels = np.argmax(reference.mobilenet_v1_forward(preprocessed, mobilenet_v1['values']).numpy(), axis=1) + 1
  assert len(set(labels)) > 1  # live activations: 100 % is not one class predicted for every image
  _write_records(records, images, labels)
  assert tfm.main(['train', '--mode=eval', '--experiment=mobilenet_rigl', f'--config_file={params_file}',
                   f'--model_dir={model_dir}', f'--params_override={override}']) == 0
  assert _summary_values(os.path.join(model_dir, 'validation'), 'accuracy') == [1.0]


def _summary_values(log_dir: str, tag: str) -> list:
  """Every value of scalar `tag` in the TensorBoard event files of `log_dir`."""
  values = []
  for path in sorted(glob.glob(os.path.join(log_dir, 'events.out.tfevents.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      values += [float(tf.make_ndarray(value.tensor)) for value in event.summary.value if value.tag == tag]
  return values


def test_tfm_export_ships_the_reference_function(mobilenet_v1, tmp_path, capsys):
  """The serving SavedModel keeps the reference's padding and ReLU (they live on the layers, not in the config)."""
  model_dir = mobilenet_v1['model_dir']
  export_dir = str(tmp_path / 'export')
  assert tfm.main(['export', '--experiment=mobilenet_rigl', f'--model_dir={model_dir}', f'--export_dir={export_dir}',
                   '--input_type=tflite']) == 0
  serving = tf.saved_model.load(export_dir).signatures['serving_default']
  outputs = serving(tf.constant(mobilenet_v1['images']))
  logits = next(value for key, value in outputs.items() if 'logits' in key).numpy()
  assert_computes_the_reference(logits, mobilenet_v1['expected'])


def test_masks_the_experiment_cannot_hold_are_an_error(mobilenet_v1, tmp_path, capsys):
  """A sparse first layer imported with a config that keeps it dense (uniform, first layer dense)."""
  source = str(tmp_path / 'model.ckpt-1')
  reference.write_reference_checkpoint(source, mobilenet_v1['layers'], lambda scope, shape: 0.5)
  assert tfm.main(['import-checkpoint', '--experiment=mobilenet_rigl',
                   '--params_override=task.model.input_size=[96,96,3]',
                   f'--source={source}', f'--model_dir={tmp_path / "out"}']) == 2
  line = _error_line(capsys)
  assert 'resnet_model/initial_conv is sparse in the checkpoint' in line and 'official_configs' in line
  assert not os.path.exists(tmp_path / 'out')


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
