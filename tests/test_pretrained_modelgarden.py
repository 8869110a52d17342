"""`task.init_checkpoint` for the sparse experiments: dense checkpoints as Model Garden's stock trainer writes them,
sparse ones as `tfm train` writes them, `all` and `backbone`, every method; sparse transfer to a new head through
`tfm train`; and bad init checkpoints refused before anything is written.

Models are the tiny members of each experiment's family from test_modelgarden_task (32-pixel JPEG TFRecords).
"""
import zlib

import gin
import numpy as np
import pytest
import tensorflow as tf
from official.core import exp_factory
from official.vision.tasks import image_classification

import imported_models as imported
from tfmot_rigl import keras as sparse_keras
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.modelgarden import task as sparse_task
from test_modelgarden_task import BATCH_SIZE, IMAGE_SIZE, NUM_CLASSES, TINY_BACKBONES, jpeg_records  # noqa: F401

# Every method on the tiny ResNet; one on each of the other experiments' models.
CASES = [('resnet_rigl', method, modules) for method, modules in (
    ('dense', 'all'), ('static', 'backbone'), ('set', 'all'), ('rigl', 'backbone'), ('snfs', 'all'),
    ('snip', 'backbone'), ('magnitude', 'all'))] + [
        ('mobilenet_rigl', 'rigl', 'backbone'), ('wrn_cifar10_rigl', 'magnitude', 'all'), ('mnist_rigl', 'set', 'all')]


def _params(name, records, init=None, **sparsity):
  """The tiny experiment of test_modelgarden_task, with `init` = (init_checkpoint, init_checkpoint_modules)."""
  params = exp_factory.get_exp_config(name)
  data = {'input_path': records, 'tfds_name': '', 'tfds_split': '', 'global_batch_size': BATCH_SIZE}
  params.override({
      'runtime': {'enable_xla': False},
      'task': {'model': {'input_size': [IMAGE_SIZE, IMAGE_SIZE, 3], 'num_classes': NUM_CLASSES,
                         'backbone': TINY_BACKBONES[name]},
               'train_data': data, 'validation_data': dict(data, is_training=False),
               'init_checkpoint': init[0] if init else '', 'init_checkpoint_modules': init[1] if init else 'all',
               'sparsity': dict({'sparsity': 0.5, 'update_frequency': 1}, **sparsity)},
      'trainer': {'train_steps': 2},
  })
  params.validate()
  params.lock()
  return params


@pytest.fixture(scope='module')
def stock_checkpoints(jpeg_records, tmp_path_factory):
  """{experiment: (checkpoint, stock model)}: the dense model of Model Garden's own ImageClassificationTask, saved as
  its trainer saves it (global_step, model, optimizer, and the model's checkpoint_items: the backbone)."""
  found = {}
  for name in sorted({case[0] for case in CASES}):
    params = _params(name, jpeg_records, method='dense')
    stock = image_classification.ImageClassificationTask(params.task)
    model = stock.build_model()
    # Distinct values everywhere (batch-norm statistics too), so a variable left at its initialisation shows.
    for index, variable in enumerate(model.weights):
      seed = [len(found), index]
      variable.assign(tf.random.stateless_uniform(variable.shape, seed, 0.5, 1.5) *
                      tf.sign(tf.random.stateless_normal(variable.shape, seed)))
    optimizer = stock.create_optimizer(params.trainer.optimizer_config, params.runtime)
    checkpoint = tf.train.Checkpoint(global_step=tf.Variable(7, dtype=tf.int64), model=model, optimizer=optimizer,
                                     **model.checkpoint_items)
    found[name] = (checkpoint.save(str(tmp_path_factory.mktemp(name) / 'ckpt')), model)
  return found


def _layer_weights(model):
  """The model's weights as the stock model orders them: the sparse model stripped of its wrappers."""
  return [w.numpy() for w in sparse_keras.strip_sparse(model).weights]


@pytest.mark.parametrize('name, method, modules', CASES)
def test_dense_stock_checkpoint_initialises_every_method(stock_checkpoints, jpeg_records, name, method, modules):
  path, stock_model = stock_checkpoints[name]
  initial_mask = 'random' if method == 'snip' else 'magnitude'
  params = _params(name, jpeg_records, (path, modules), method=method, initial_mask=initial_mask)
  task = sparse_task.SparseImageClassificationTask(params.task)
  model = task.build_model()
  task.initialize(model)
  expected = [w.numpy() for w in stock_model.weights]
  loaded = _layer_weights(model)
  assert [w.shape for w in loaded] == [w.shape for w in expected]
  backbone = {id(v) for v in stock_model.backbone.weights}
  in_scope = [modules == 'all' or id(v) in backbone for v in stock_model.weights]
  sparse_kernels = 0
  for value, reference, scoped in zip(loaded, expected, in_scope):
    kept = value != 0  # reference values are never zero
    if not scoped:
      assert not np.array_equal(value, reference)  # the head stays at its own initialisation
      continue
    np.testing.assert_array_equal(value[kept], reference[kept])  # the checkpoint's values where the mask keeps them
    if not kept.all():
      sparse_kernels += 1
      assert initial_mask == 'magnitude'
      assert np.abs(reference[kept]).min() >= np.abs(reference[~kept]).max()  # the largest |W| are kept
  assert (sparse_kernels > 0) == (method not in ('dense', 'snip'))


@pytest.fixture(scope='module')
def sparse_run(jpeg_records, tmp_path_factory):
  """The model_dir of a 4-class tiny ResNet, RigL at 50 %, as Model Garden's trainer (`tfm train`) saves it."""
  model_dir = str(tmp_path_factory.mktemp('sparse_run') / 'run')
  params = _params('resnet_rigl', jpeg_records, method='rigl', update_frequency=100, end_step=0.75)
  task = sparse_task.SparseImageClassificationTask(params.task)
  model = task.build_model()
  optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
  tf.train.Checkpoint(global_step=tf.Variable(2, dtype=tf.int64), model=model, optimizer=optimizer).save(
      f'{model_dir}/ckpt')
  return model_dir


def _override(records, extra):
  """--params_override for the tiny ResNet on `records`; `extra` ('key=value,...') replaces keys of the defaults."""
  data = {'input_path': records, 'tfds_name': '', 'global_batch_size': 4, 'shuffle_buffer_size': 16}
  items = {'runtime.enable_xla': 'false', 'task.model.input_size': '[32,32,3]',
           'task.model.backbone.resnet.model_id': 10, 'task.model.backbone.resnet.depth_multiplier': 0.0625,
           'task.model.num_classes': 4, 'task.sparsity.sparsity': 0.5, 'task.sparsity.update_frequency': 1,
           'task.sparsity.end_step': 2, 'trainer.train_steps': 2, 'trainer.steps_per_loop': 2,
           'trainer.summary_interval': 2, 'trainer.checkpoint_interval': 2, 'trainer.validation_steps': 1,
           'trainer.validation_interval': 2}
  items.update({f'task.{split}.{key}': value for split in ('train_data', 'validation_data')
                for key, value in data.items()})
  items.update(item.split('=', 1) for item in extra.split(','))
  return '--params_override=' + ','.join(f'{key}={value}' for key, value in items.items())


def _tfm_train(records, model_dir, extra):
  with gin.unlock_config():
    return tfm.main(['train', '--experiment=resnet_rigl', f'--model_dir={model_dir}', '--mode=train',
                     _override(records, extra)])


@pytest.mark.parametrize('method', ['static', 'rigl'])
def test_sparse_transfer_to_a_new_head_keeps_the_backbone_masks(sparse_run, jpeg_records, tmp_path, method):
  model_dir = str(tmp_path / 'transfer')
  assert _tfm_train(jpeg_records, model_dir, (
      f'task.model.num_classes=10,task.sparsity.method={method},task.init_checkpoint={sparse_run},'
      'task.init_checkpoint_modules=backbone,task.sparsity.initial_mask=checkpoint')) == 0
  source = imported.checkpoint_masks(tf.train.latest_checkpoint(sparse_run))
  after = imported.checkpoint_masks(tf.train.latest_checkpoint(model_dir))
  backbone = sorted(key for key in source if key.startswith('model/layer_with_weights-0/'))
  assert backbone and set(backbone) <= set(after)
  # The head has another shape (10 classes), so it is not among the loaded masks.
  changed = [key for key in backbone if not np.array_equal(source[key], after[key])]
  for key in backbone:
    assert source[key].sum() == after[key].sum()  # same number of active connections
  if method == 'static':
    assert not changed  # kept exactly, through 2 training steps
  else:
    assert changed  # RigL went on updating them (update_frequency=1)


@pytest.mark.parametrize('extra, message', [
    ('task.init_checkpoint={missing}', "init checkpoint '{missing}' does not exist"),
    ('task.init_checkpoint={mnist}', 'does not fit this model: '),
    ('task.init_checkpoint={run},task.model.num_classes=10', 'does not fit this model: '),
    ('task.init_checkpoint={run},task.sparsity.initial_mask=checkpoint,task.sparsity.sparsity=0.8',
     "the init checkpoint's masks have sparsity 0.5"),
    ('task.init_checkpoint={stock},task.sparsity.initial_mask=checkpoint', 'holds no masks (a dense checkpoint'),
])
def test_bad_init_checkpoint_is_one_line_exit_2_and_nothing_written(sparse_run, stock_checkpoints, jpeg_records,
                                                                    tmp_path, capsys, extra, message):
  names = dict(missing=str(tmp_path / 'nowhere'), run=sparse_run, mnist=stock_checkpoints['mnist_rigl'][0],
               stock=stock_checkpoints['resnet_rigl'][0])
  model_dir = tmp_path / 'never_written'
  assert _tfm_train(jpeg_records, str(model_dir), extra.format(**names)) == 2
  error = [line for line in capsys.readouterr().err.splitlines() if line.startswith('tfm train: error:')]
  assert len(error) == 1 and message.format(**names) in error[0], error
  assert not model_dir.exists()


def test_sparse_checkpoint_initialises_another_method_with_its_masks(sparse_run, jpeg_records):
  # A RigL run's checkpoint into gradual magnitude pruning (TFMOT's own wrappers), all modules, masks kept.
  params = _params('resnet_rigl', jpeg_records, (sparse_run, 'all'), method='magnitude', initial_mask='checkpoint')
  task = sparse_task.SparseImageClassificationTask(params.task)
  model = task.build_model()
  task.initialize(model)
  source = tf.train.load_checkpoint(tf.train.latest_checkpoint(sparse_run))
  masks = [source.get_tensor(name) for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(sparse_run))
           if name.split('/.ATTRIBUTES')[0].endswith('/mask') or '/pruning_vars/' in name and '/1/.ATTR' in name]
  loaded = [mask.numpy() for wrapper in sparse_keras.sparse_wrappers(model) for _, mask, _ in wrapper.pruning_vars]
  assert len(masks) == len(loaded) > 1
  # The same masks, bit for bit (not merely the same counts, as fresh random masks would have).
  assert sorted(m.astype(np.float32).tobytes() for m in masks) == sorted(m.tobytes() for m in loaded)
  for wrapper in sparse_keras.sparse_wrappers(model):
    for weight, mask, _ in wrapper.pruning_vars:
      assert np.all(weight.numpy()[mask.numpy() == 0] == 0)
