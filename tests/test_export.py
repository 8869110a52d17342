"""`tfm export`: a model trained by the real `tfm train` path, exported as a stripped serving SavedModel."""
import os
import shutil

import gin
import numpy as np
import pytest
import tensorflow as tf
from official.core import exp_factory

import tfmot_rigl
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.cli import export as export_cli
from tfmot_rigl.export import saved_model

# A few RigL steps on real MNIST, mask updates at steps 5, 10 and 15, a checkpoint at steps 10 and 20.
TRAIN_OVERRIDES = ('trainer.train_steps=20,trainer.steps_per_loop=10,trainer.checkpoint_interval=10,'
                   'trainer.summary_interval=10,task.train_data.global_batch_size=32,'
                   'task.train_data.shuffle_buffer_size=100,task.sparsity.update_frequency=5')
WRAPPER_VARIABLE_NAMES = ('mask', 'threshold', 'pruning_step')


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('mnist_rigl'))
  # `tfm train` finalises gin's config; unlocked, it runs whatever in-process `tfm train` ran before.
  with gin.unlock_config():
    assert tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={path}', '--mode=train',
                     f'--params_override={TRAIN_OVERRIDES}']) == 0
  assert tf.train.latest_checkpoint(path).endswith('ckpt-20')
  return path


def _params(model_dir):
  with export_cli.parsed_flags('test', ['--experiment=mnist_rigl', f'--model_dir={model_dir}']) as flags_obj:
    return export_cli.experiment_params(flags_obj)


def _checkpoint_tensors(checkpoint, suffix):
  """{shape: value} of the model's variables named `suffix` in the checkpoint file (the MLP's shapes are distinct)."""
  reader = tf.train.load_checkpoint(checkpoint)
  keys = [key for key in reader.get_variable_to_shape_map()
          if key.startswith('model/') and key.endswith(f'/{suffix}/.ATTRIBUTES/VARIABLE_VALUE')]
  return {tuple(reader.get_tensor(key).shape): reader.get_tensor(key) for key in keys}


def _trained_masks(checkpoint):
  return _checkpoint_tensors(checkpoint, 'mask')


def _one_error_line(capsys):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('tfm export: error:'), err
  return err[0]


def test_stripped_saved_model_has_trained_masks_and_outputs(model_dir, tmp_path):
  export_dir = str(tmp_path / 'export')
  assert tfm.main(['export', '--experiment=mnist_rigl', f'--model_dir={model_dir}', f'--export_dir={export_dir}']) == 0

  loaded = tf.saved_model.load(export_dir)
  names = [v.name for v in loaded.model.variables]
  assert names and not [n for n in names if any(marker in n for marker in WRAPPER_VARIABLE_NAMES)], names
  # Read from the SavedModel's own object graph too: no variable of the sparsity wrappers was saved.
  stored = tf.train.list_variables(os.path.join(export_dir, 'variables', 'variables'))
  assert not [key for key, _ in stored if any(marker in key for marker in WRAPPER_VARIABLE_NAMES)], stored

  checkpoint = os.path.join(model_dir, 'ckpt-20')
  masks, trained_kernels = _trained_masks(checkpoint), _checkpoint_tensors(checkpoint, 'kernel')
  assert sorted(masks) == [(300, 100), (784, 300)]  # the 100×10 logits layer is dense under ERK at 90%
  kernels = {tuple(v.shape): v.numpy() for v in loaded.model.variables if v.name.endswith('kernel:0')}
  for shape, mask in masks.items():
    assert 0.7 < 1 - mask.mean() < 0.95
    # Exactly the trained kernel times the trained mask: zero wherever the mask is, the trained value elsewhere.
    np.testing.assert_array_equal(kernels[shape], trained_kernels[shape] * mask)
    assert np.all(kernels[shape][mask == 0] == 0)
    # So the zero pattern is the mask's, up to the rare active weight that is exactly 0: a connection RigL grew
    # with value 0 from a unit whose output (hence gradient) stayed 0 since.
    assert np.mean((kernels[shape] != 0) == (mask != 0)) > 0.999

  # The served model (uint8 images in, MNIST preprocessing in the graph) equals the trained model in inference.
  trained, _ = saved_model.load_trained_model(_params(model_dir), model_dir)
  images = np.random.default_rng(0).integers(0, 256, size=(8, 28, 28, 1), dtype=np.uint8)
  outputs = loaded.signatures['serving_default'](inputs=tf.constant(images))
  expected = trained(images.astype(np.float32) / 255.0, training=False).numpy()
  assert np.max(np.abs(outputs['logits'].numpy() - expected)) <= 1e-5
  np.testing.assert_allclose(outputs['probs'].numpy(), tf.nn.softmax(expected).numpy(), atol=1e-6)
  assert os.path.isfile(os.path.join(export_dir, 'params.yaml'))  # as Model Garden's export


def test_features_signature_and_named_checkpoint(model_dir, tmp_path):
  export_dir = str(tmp_path / 'export')
  checkpoint = os.path.join(model_dir, 'ckpt-10')
  assert tfm.main(['export', '--experiment=mnist_rigl', f'--model_dir={model_dir}', f'--checkpoint_path={checkpoint}',
                   '--input_type=tflite', f'--export_dir={export_dir}']) == 0
  signature = tf.saved_model.load(export_dir).signatures['serving_default']
  assert signature.structured_input_signature[1]['inputs'].dtype == tf.float32
  features = np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)
  trained, _ = saved_model.load_trained_model(_params(model_dir), checkpoint_path=checkpoint)
  logits = signature(inputs=tf.constant(features))['logits'].numpy()
  assert np.max(np.abs(logits - trained(features, training=False).numpy())) <= 1e-5
  # ckpt-10 is not the latest: its masks differ from ckpt-20's (RigL updated them at step 15).
  masks_10, masks_20 = _trained_masks(checkpoint), _trained_masks(os.path.join(model_dir, 'ckpt-20'))
  assert any(not np.array_equal(masks_10[s], masks_20[s]) for s in masks_10)
  wrapped = tfmot_rigl.sparse_wrappers(trained)
  for wrapper in wrapped:
    (_, mask, _), = wrapper.pruning_vars
    np.testing.assert_array_equal(mask.numpy(), masks_10[tuple(mask.shape)])


def test_non_empty_export_dir_is_refused_unless_overwrite(model_dir, tmp_path, capsys):
  export_dir = tmp_path / 'export'
  export_dir.mkdir()
  (export_dir / 'keep.txt').write_text('precious')
  args = ['export', '--experiment=mnist_rigl', f'--model_dir={model_dir}', f'--export_dir={export_dir}']
  assert tfm.main(args) == 2
  line = _one_error_line(capsys)
  assert 'not empty' in line and '--overwrite' in line, line
  assert (export_dir / 'keep.txt').read_text() == 'precious'
  assert sorted(os.listdir(tmp_path)) == ['export']  # no staging directory left behind

  # --overwrite replaces only an earlier export: not a directory holding anything else.
  assert tfm.main(args + ['--overwrite']) == 2
  assert 'keep.txt, which are not part of a SavedModel' in _one_error_line(capsys)
  assert (export_dir / 'keep.txt').read_text() == 'precious'
  (export_dir / 'keep.txt').unlink()
  assert tfm.main(args) == 0
  first = (export_dir / 'saved_model.pb').stat().st_mtime_ns
  assert tfm.main(args + ['--overwrite']) == 0
  assert (export_dir / 'saved_model.pb').stat().st_mtime_ns != first
  assert sorted(os.listdir(tmp_path)) == ['export']


@pytest.mark.parametrize('damage', ['missing', 'empty_model_dir', 'garbage_index', 'truncated_data',
                                    'other_architecture'])
def test_bad_checkpoints_are_one_line_errors(model_dir, tmp_path, capsys, damage):
  run_dir = tmp_path / 'run'
  shutil.copytree(model_dir, run_dir)
  extra = []
  if damage == 'missing':
    extra = [f'--checkpoint_path={run_dir}/ckpt-999']
  elif damage == 'empty_model_dir':
    for name in os.listdir(run_dir):
      if name.startswith('ckpt-') or name == 'checkpoint':
        os.remove(run_dir / name)
  elif damage == 'garbage_index':
    (run_dir / 'ckpt-20.index').write_bytes(b'not a checkpoint index' * 10)
  elif damage == 'truncated_data':
    data = run_dir / 'ckpt-20.data-00000-of-00001'
    data.write_bytes(data.read_bytes()[:1000])
  elif damage == 'other_architecture':
    extra = ['--params_override=task.model.backbone.mlp.hidden_sizes=[50,20]']
  export_dir = tmp_path / 'export'
  assert tfm.main(['export', '--experiment=mnist_rigl', f'--model_dir={run_dir}', f'--export_dir={export_dir}',
                   *extra]) == 2
  line = _one_error_line(capsys)
  assert 'checkpoint' in line, line
  assert not export_dir.exists()
  assert sorted(os.listdir(tmp_path)) == ['run']


def test_usage_errors(tmp_path, capsys):
  assert tfm.main(['export', '--experiment=mnist_rigl', f'--export_dir={tmp_path}/e']) == 2
  assert '--model_dir' in _one_error_line(capsys)
  assert tfm.main(['export', '--experiment=mnist_rigl', f'--model_dir={tmp_path}/nowhere',
                   f'--export_dir={tmp_path}/e']) == 2
  assert 'does not exist' in _one_error_line(capsys)
  assert tfm.main(['export', '--experiment=no_such_experiment', f'--model_dir={tmp_path}',
                   f'--export_dir={tmp_path}/e']) == 2
  assert 'unknown experiment' in _one_error_line(capsys)
  assert os.listdir(tmp_path) == []


def test_composite_blocks_are_stripped_too(tmp_path):
  """ResNet's residual blocks are wrapped whole (several kernels per wrapper): every kernel exports plain, masked."""
  params = exp_factory.get_exp_config('resnet_rigl')
  params.override({'task': {'model': {'backbone': {'resnet': {'model_id': 18, 'depth_multiplier': 0.25}},
                                      'input_size': [32, 32, 3], 'num_classes': 10}}})
  params.validate()
  model = saved_model.build_sparse_model(params)
  masked = [(weight.name, weight.numpy() * mask.numpy())
            for wrapper in tfmot_rigl.sparse_wrappers(model) for weight, mask, _ in wrapper.pruning_vars]
  assert len(masked) > len(tfmot_rigl.sparse_wrappers(model))  # some wrappers hold several kernels
  features = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
  expected = model(features, training=False).numpy()

  export_dir = saved_model.export_saved_model(params, str(tmp_path / 'resnet'), model=model, input_type='tflite')
  loaded = tf.saved_model.load(export_dir)
  values = {v.name: v.numpy() for v in loaded.model.variables}
  assert not [n for n in values if any(marker in n for marker in WRAPPER_VARIABLE_NAMES)]
  for name, kernel in masked:
    np.testing.assert_array_equal(values[name], kernel)
  zeros = sum(np.count_nonzero(values[name] == 0) for name, _ in masked)
  assert zeros / sum(kernel.size for _, kernel in masked) > 0.75  # ERK at 80% over the wrapped kernels
  logits = loaded.signatures['serving_default'](inputs=tf.constant(features))['logits'].numpy()
  assert np.max(np.abs(logits - expected)) <= 1e-5
