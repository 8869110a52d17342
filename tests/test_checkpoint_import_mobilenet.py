"""`tfm import-checkpoint` of the RigL reference MobileNet-v1 and -v2, then `tfm train --mode=eval` and `tfm export`.

The source checkpoints are written in the reference's exact variable layout (tests/reference_resnet.py) at full width
with random values, 75 % masks (first layer and depthwise kernels dense, as the paper's runs leave them) and batch
norms calibrated on two images, and imported at small inputs (the reference network takes any size). The imported
models must compute the reference's logits within 1e-4 (relative), top-1 agreeing, and fail that comparison without
`match_tf1_reference` (tests/imported_models.py).
"""
import argparse
import contextlib
import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from official.core import task_factory

import imported_models as imported
import reference_resnet as reference
from tfmot_rigl.cli import export as export_cli
from tfmot_rigl.cli import main as tfm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
      calibration=(forward, imported.images(1, size)))
  model_dir = str(workdir / 'model_dir')
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    assert tfm.main(['import-checkpoint', '--experiment=mobilenet_rigl', f'--config_file={REPO}/official_configs/{row}',
                     f'--params_override=task.model.input_size=[{size},{size},3]', f'--source={source}',
                     f'--model_dir={model_dir}']) == 0
  images = imported.images(5, size)
  return dict(workdir=workdir, layers=layers, values=values, source=source, model_dir=model_dir, images=images,
              expected=forward(images, values).numpy(), forward=forward,
              import_lines=[line for line in buffer.getvalue().splitlines() if ' -> ' in line])


@pytest.fixture(scope='module')
def mobilenet_v1(tmp_path_factory):
  return _import_mobilenet(tmp_path_factory.mktemp('import_mobilenet_v1'), 'mobilenet_v1')


@pytest.fixture(scope='module')
def mobilenet_v2(tmp_path_factory):
  return _import_mobilenet(tmp_path_factory.mktemp('import_mobilenet_v2'), 'mobilenet_v2')


def _assert_mobilenet_matches_only_with_the_patch(case: dict, changed: int) -> None:
  model = imported.load_imported('mobilenet_rigl', case['model_dir'], match_reference=False)
  imported.assert_fails_without_the_patch(model(case['images'], training=False).numpy(), case['expected'])
  assert imported.patch_as_the_task_does(model, 'mobilenet_rigl', case['model_dir']) == changed
  imported.assert_computes_the_reference(model(case['images'], training=False).numpy(), case['expected'])


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
  line = imported.error_line(capsys)
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
  imported.assert_computes_the_reference(logits, mobilenet_v1['expected'])


def test_masks_the_experiment_cannot_hold_are_an_error(mobilenet_v1, tmp_path, capsys):
  """A sparse first layer imported with a config that keeps it dense (uniform, first layer dense)."""
  source = str(tmp_path / 'model.ckpt-1')
  reference.write_reference_checkpoint(source, mobilenet_v1['layers'], lambda scope, shape: 0.5)
  assert tfm.main(['import-checkpoint', '--experiment=mobilenet_rigl',
                   '--params_override=task.model.input_size=[96,96,3]',
                   f'--source={source}', f'--model_dir={tmp_path / "out"}']) == 2
  line = imported.error_line(capsys)
  assert 'resnet_model/initial_conv is sparse in the checkpoint' in line and 'official_configs' in line
  assert not os.path.exists(tmp_path / 'out')



def test_imported_checkpoint_starts_a_sparse_transfer_run(mobilenet_v1, tmp_path):
  """Issue 17: an imported checkpoint as `task.init_checkpoint` (backbone only, a 10-class head, masks from the
  checkpoint); static training keeps every imported backbone mask exactly."""
  records = str(tmp_path / 'train.tfrecord')
  _write_records(records, np.random.default_rng(3).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8), range(4))
  model_dir = str(tmp_path / 'transfer')
  data = ','.join(f'task.{split}.{key}={value}' for split in ('train_data', 'validation_data') for key, value in (
      ('input_path', records), ('global_batch_size', 2)))
  assert tfm.main([
      'train', '--mode=train', '--experiment=mobilenet_rigl',
      f'--config_file={REPO}/official_configs/mobilenet1_rigl_uniform_s75_1x.yaml', f'--model_dir={model_dir}',
      f'--params_override=task.model.input_size=[96,96,3],task.model.num_classes=10,{data},'
      'trainer.train_steps=2,trainer.steps_per_loop=1,trainer.checkpoint_interval=2,trainer.summary_interval=2,'
      'trainer.validation_interval=2,task.sparsity.method=static,task.init_checkpoint_modules=backbone,'
      f"task.init_checkpoint={mobilenet_v1['model_dir']},task.sparsity.initial_mask=checkpoint"]) == 0
  source = imported.checkpoint_masks(tf.train.latest_checkpoint(mobilenet_v1['model_dir']))
  after = imported.checkpoint_masks(tf.train.latest_checkpoint(model_dir))
  backbone = sorted(key for key in source if key.startswith('model/layer_with_weights-0/'))
  assert backbone and set(backbone) <= set(after)
  assert any(0 < source[key].mean() < 1 for key in backbone)  # sparse masks came over, not all-ones
  for key in backbone:
    np.testing.assert_array_equal(after[key], source[key], err_msg=key)
