"""`task.sparsity` configs, the registered experiments and every YAML in official_configs/."""
import glob
import importlib.util
import os
import re

import numpy as np
import pytest
from official.core import exp_factory
from official.modeling import hyperparams
from official.vision.tasks import image_classification

from tfmot_rigl import algorithms
from tfmot_rigl import keras as sparse_keras
from tfmot_rigl.modelgarden import configs
from tfmot_rigl.modelgarden import task as sparse_task

OFFICIAL_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'official_configs')
YAML_FILES = sorted(glob.glob(os.path.join(OFFICIAL_CONFIGS, '*.yaml')))


def yaml_experiment(path):
  """(experiment name, locked params) of an official_configs YAML, parsed as `tfm train` parses it."""
  with open(path, encoding='utf-8') as f:
    experiment = re.search(r'--experiment=(\w+)', f.readline()).group(1)
  params = exp_factory.get_exp_config(experiment)
  params = hyperparams.override_params_dict(params, path, is_strict=True)
  params.validate()
  params.lock()
  return experiment, params


def test_registered_experiments_validate_with_paper_defaults():
  assert set(configs.EXPERIMENTS) == {'resnet_rigl', 'mobilenet_rigl', 'wrn_cifar10_rigl', 'mnist_rigl'}
  resnet = exp_factory.get_exp_config('resnet_rigl')
  resnet.validate()
  sparsity = resnet.task.sparsity
  assert (sparsity.method, sparsity.sparsity, sparsity.distribution) == ('rigl', 0.8, 'erk')
  assert (sparsity.update_frequency, sparsity.drop_fraction, sparsity.drop_fraction_anneal) == (100, 0.3, 'cosine')
  assert (sparsity.end_step, sparsity.total_steps) == (0.75, 32000)
  assert resnet.task.train_data.global_batch_size == 4096
  wrn = exp_factory.get_exp_config('wrn_cifar10_rigl')
  assert wrn.task.train_data.global_batch_size == 128 and wrn.task.losses.l2_weight_decay == 5e-4
  assert wrn.trainer.optimizer_config.optimizer.sgd.momentum == 0.9
  assert exp_factory.get_exp_config('mobilenet_rigl').task.sparsity.sparsify_depthwise is False


def test_every_sparsity_field_can_be_overridden_from_a_string():
  params = exp_factory.get_exp_config('mnist_rigl')
  params = hyperparams.override_params_dict(params, (
      'task.sparsity.method=snfs,task.sparsity.sparsity=0.7,task.sparsity.distribution=er,'
      'task.sparsity.erk_power_scale=0.5,task.sparsity.first_layer_dense=true,'
      'task.sparsity.custom_sparsities=[hidden_2=0.3],task.sparsity.exclude=[dense],'
      'task.sparsity.sparsify_depthwise=true,task.sparsity.update_frequency=50,task.sparsity.begin_step=10,'
      'task.sparsity.end_step=0.5,task.sparsity.drop_fraction=0.2,task.sparsity.drop_fraction_anneal=exponential_3,'
      'task.sparsity.grow_init=random_normal,task.sparsity.initial_acc_scale=0.1,task.sparsity.snfs_momentum=0.8,'
      'task.sparsity.seed=7,task.sparsity.total_steps=1000,task.sparsity.block_shape=[4,1],'
      'task.sparsity.block_norm=l2,task.sparsity.initial_sparsity=0.5,task.sparsity.prune_end=0.25,'
      'task.sparsity.initial_mask=magnitude'), is_strict=True)
  params.validate()
  sparsity = params.task.sparsity
  assert sparsity.as_dict() == {
      'method': 'snfs', 'sparsity': 0.7, 'distribution': 'er', 'erk_power_scale': 0.5, 'first_layer_dense': True,
      'custom_sparsities': ['hidden_2=0.3'], 'exclude': ['dense'], 'sparsify_depthwise': True,
      'update_frequency': 50, 'begin_step': 10, 'end_step': 0.5, 'drop_fraction': 0.2,
      'drop_fraction_anneal': 'exponential_3', 'grow_init': 'random_normal', 'initial_acc_scale': 0.1,
      'snfs_momentum': 0.8, 'block_shape': [4, 1], 'block_norm': 'l2', 'initial_sparsity': 0.5, 'prune_end': 0.25,
      'initial_mask': 'magnitude', 'seed': 7, 'total_steps': 1000}
  algorithm = sparsity.algorithm()
  assert isinstance(algorithm, algorithms.SNFS) and algorithm.momentum == 0.8
  assert (algorithm.block_shape, algorithm.block_norm) == ((4, 1), 'l2')
  assert (algorithm.begin_step, algorithm.end_step, algorithm.window(1000)) == (10, 0.5, (10, 500))
  assert algorithm.gradual and (algorithm.initial_sparsity, algorithm.prune_window(1000)) == (0.5, (10, 250))
  assert sparsity.prune_kwargs()['custom_sparsities'] == {'hidden_2': 0.3}


def test_rigl_knobs_reach_the_algorithm():
  sparsity = configs.SparsityConfig(method='rigl', grow_init='grad_scale', initial_acc_scale=0.5, total_steps=100)
  algorithm = sparsity.algorithm()
  assert isinstance(algorithm, algorithms.RigL)
  assert (algorithm.grow_init, algorithm.initial_acc_scale) == ('grad_scale', 0.5)


def test_total_steps_follow_the_trainer_unless_set():
  params = exp_factory.get_exp_config('mnist_rigl')
  params.override({'trainer': {'train_steps': 1234}})
  params.validate()
  assert params.task.sparsity.total_steps == 1234
  params = exp_factory.get_exp_config('mnist_rigl')
  params.override({'task': {'sparsity': {'total_steps': 99}}})
  params.validate()
  assert params.task.sparsity.total_steps == 99


@pytest.mark.parametrize('override, message', [
    ({'sparsity': 1.0}, r'task\.sparsity\.sparsity=1\.0 is outside \[0, 1\)'),
    ({'sparsity': -0.1}, r'task\.sparsity\.sparsity=-0\.1 is outside'),
    ({'method': 'lottery'}, r"method='lottery' is unknown; use one of"),
    ({'distribution': 'erdos'}, r"distribution='erdos' is unknown"),
    ({'custom_sparsities': ['hidden_1:0.5']}, r"'hidden_1:0\.5' is not 'layer_name=sparsity'"),
    ({'custom_sparsities': ['hidden_1=1.5']}, r'custom_sparsities\[hidden_1\]=1\.5 is outside'),
    ({'exclude': 'dense'}, r"exclude='dense' must be a list"),
    ({'end_step': 2.5}, r'end_step=2\.5 must be a step number'),
    ({'begin_step': 500, 'end_step': 100}, r'task\.sparsity: end_step=100 is before begin_step=500'),
    ({'update_frequency': 0}, r'update_frequency=0 must be a positive'),
    ({'drop_fraction': 1.5}, r'drop_fraction=1\.5'),
    ({'drop_fraction_anneal': 'linear'}, r"task\.sparsity: Unknown drop_fraction_anneal 'linear'"),
    ({'grow_init': 'ones'}, r"task\.sparsity: Unknown grow_init 'ones'"),
    ({'first_layer_dense': 'yes'}, r"first_layer_dense='yes' must be true, false or null"),
])
def test_invalid_sparsity_settings_are_one_clear_error(override, message):
  params = exp_factory.get_exp_config('mnist_rigl')
  params.override({'task': {'sparsity': override}})
  with pytest.raises(ValueError, match=message) as error:
    params.validate()
  assert '\n' not in str(error.value)


def test_misspelt_key_is_rejected():
  params = exp_factory.get_exp_config('mnist_rigl')
  with pytest.raises(KeyError, match='sparsityy'):
    hyperparams.override_params_dict(params, 'task.sparsity.sparsityy=0.5', is_strict=True)


def test_official_configs_are_generated_and_up_to_date():
  spec = importlib.util.spec_from_file_location('generate', os.path.join(OFFICIAL_CONFIGS, 'generate.py'))
  generate = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(generate)
  assert generate.main(['--check']) == 0
  assert sorted(row.file for row in generate.rows()) == [os.path.basename(path) for path in YAML_FILES]
  names = [os.path.basename(path) for path in YAML_FILES]
  # The paper's rows: ResNet-50 ERK and uniform at five sparsities, 1x and 5x; MobileNets; WRN-22-2 methods.
  for distribution in ('erk', 'uniform'):
    for percent in ('80', '90', '95', '965', '99'):
      for multiplier in ('1x', '5x'):
        assert f'resnet50_rigl_{distribution}_s{percent}_{multiplier}.yaml' in names
  for method in ('rigl', 'set', 'snfs', 'snip', 'static', 'magnitude'):
    for percent in ('50', '80', '90', '95'):
      assert f'wrn22_2_{method}_s{percent}.yaml' in names
  assert any(name.startswith('mobilenet1_') for name in names) and any(name.startswith('mobilenet2_') for name in names)
  # Issue 19's gradual rows (each validated by test_yaml_loads_and_validates).
  assert {name for name in names if '_gradual_' in name} == {
      'resnet50_rigl_gradual_erk_s80_1x.yaml', 'resnet50_rigl_gradual_erk_s90_1x.yaml',
      'mobilenet1_rigl_gradual_uniform_s75_1x.yaml', 'wrn22_2_rigl_gradual_s90.yaml', 'wrn22_2_rigl_gradual_s95.yaml'}


@pytest.mark.parametrize('path', YAML_FILES, ids=os.path.basename)
def test_yaml_loads_and_validates(path):
  experiment, params = yaml_experiment(path)
  sparsity = params.task.sparsity
  percent = re.search(r'_s(\d+)', os.path.basename(path))
  if percent:
    assert f'{sparsity.sparsity * 100:g}'.replace('.', '') == percent.group(1)
  if '_5x' in path:
    assert params.trainer.train_steps == 5 * exp_factory.get_exp_config(experiment).trainer.train_steps
  assert sparsity.total_steps == params.trainer.train_steps
  algorithm = sparsity.algorithm()
  assert algorithm.gradual == ('_gradual_' in path)
  if algorithm.gradual:  # starts at 50%, at the target by 37.5% of training, inside the update window
    assert algorithm.prune_window(sparsity.total_steps) == (0, round(0.375 * sparsity.total_steps))


def _stock_model(params):
  """The experiment's stock Model Garden model with its blocks made prunable (what the sparse task starts from)."""
  stock_task = image_classification.ImageClassificationTask(params.task)
  model = stock_task.build_model()
  sparse_task.make_blocks_prunable(model, sparsify_depthwise=params.task.sparsity.sparsify_depthwise)
  return model


def test_every_yaml_builds_its_model():
  """Every YAML's sparsity settings resolve on its real (full-size) model; one sparse model per architecture.

  Building the sparse model of all ~55 rows would take many minutes on CPU; the rows of one architecture differ only
  in `task.sparsity` and the schedule, so each architecture is built once, every row's per-layer sparsities are
  resolved on it with `model_sparsities` (what `prune_sparse` does first), and one row per architecture is
  sparsified with `prune_sparse`, as the task's `build_model` does.
  """
  by_architecture = {}
  for path in YAML_FILES:
    experiment, params = yaml_experiment(path)
    key = (experiment, str(params.task.model.as_dict()), params.task.sparsity.sparsify_depthwise)
    by_architecture.setdefault(key, []).append((path, params))
  # ResNet-50, MobileNet-v1, MobileNet-v2, WRN-22-2, and MobileNet-v2 with its depthwise kernels sparsified (dropout
  # 0.1), as Model Garden's pruning project prunes it (official_configs/mobilenet2_pruning_*).
  assert len(by_architecture) == 5

  for (experiment, _, _), rows in by_architecture.items():
    model = _stock_model(rows[0][1])
    for path, params in rows:
      kwargs = params.task.sparsity.prune_kwargs()
      per_weight = sparse_keras.model_sparsities(
          model, kwargs['sparsity'], kwargs['distribution'], kwargs['erk_power_scale'],
          kwargs['custom_sparsities'], kwargs['exclude'], kwargs['first_layer_dense'], kwargs['sparsify_depthwise'])
      shapes = sparse_keras.sparsifiable_shapes(model, kwargs['exclude'], kwargs['sparsify_depthwise'])
      sizes = {name: np.prod(shape) for name, shape in shapes.items()}
      first_layer_dense = kwargs['first_layer_dense']
      if first_layer_dense is None:
        first_layer_dense = kwargs['distribution'] == 'uniform'
      # The distribution's budget: every sparsified weight but a first layer kept dense on purpose.
      budget = list(shapes)[1:] if first_layer_dense else list(shapes)
      achieved = sum(per_weight[n] * sizes[n] for n in budget) / sum(sizes[n] for n in budget)
      if params.task.sparsity.method != 'dense':
        assert achieved == pytest.approx(params.task.sparsity.sparsity, abs=1e-3), os.path.basename(path)

    sparse_rows = sorted([(path, params) for path, params in rows if params.task.sparsity.method == 'rigl'],
                         key=lambda row: '_pruning_' in row[0])  # a paper row first where there is one (ResNet: ERK)
    path, params = sparse_rows[0]
    sparse_model = sparse_keras.prune_sparse(model, algorithm=params.task.sparsity.algorithm(),
                                             **params.task.sparsity.prune_kwargs())
    masks = [mask.numpy() for w in sparse_keras.sparse_wrappers(sparse_model) for _, mask, _ in w.pruning_vars]
    kernels = len(sparse_keras.sparsifiable_shapes(model, (), params.task.sparsity.sparsify_depthwise))
    if experiment == 'resnet_rigl':
      # Model Garden's ResNet-50 hides 53 of its 54 kernels inside blocks; all are masked, each at its ERK sparsity.
      assert len(masks) == kernels == 54
      per_kernel = sorted(1 - mask.mean() for mask in masks)
      assert per_kernel[0] < params.task.sparsity.sparsity < per_kernel[-1]
    else:
      assert 0 < len(masks) <= kernels


def test_train_microbatches_must_divide_the_batch_and_be_positive():
  params = exp_factory.get_exp_config('mnist_rigl')
  params.override({'task': {'train_microbatches': 4}})
  params.validate()  # 4 divides mnist_rigl's global batch
  for value, message in ((0, 'must be a positive int'), (7, 'does not divide task.train_data.global_batch_size')):
    params = exp_factory.get_exp_config('mnist_rigl')
    params.override({'task': {'train_microbatches': value}})
    with pytest.raises(ValueError, match=message):
      params.validate()


@pytest.mark.parametrize('name, sparsity, end_step, frequency, optimizer', [
    ('resnet50', 0.8, 40000, 40, 'sgd'), ('mobilenet2', 0.5, 80000, 400, 'rmsprop')])
def test_pruning_project_rows_prune_from_a_dense_checkpoint_on_its_schedule(name, sparsity, end_step, frequency,
                                                                              optimizer):
  _, magnitude = yaml_experiment(os.path.join(OFFICIAL_CONFIGS, f'{name}_pruning_magnitude_s{sparsity * 100:g}.yaml'))
  _, rigl = yaml_experiment(os.path.join(OFFICIAL_CONFIGS, f'{name}_pruning_rigl_s{sparsity * 100:g}.yaml'))
  for params in (magnitude, rigl):
    assert params.task.init_checkpoint == 'DENSE_MODEL_DIR' and params.task.init_checkpoint_modules == 'all'
    assert params.task.train_data.global_batch_size == 1024 and params.task.losses.l2_weight_decay == 0
    assert params.trainer.optimizer_config.optimizer.type == optimizer
    assert params.trainer.optimizer_config.learning_rate.type == 'exponential'
    block = params.task.sparsity
    assert (block.sparsity, block.distribution, block.first_layer_dense) == (sparsity, 'uniform', False)
    assert block.sparsify_depthwise == (name == 'mobilenet2')
  algorithm = magnitude.task.sparsity.algorithm()
  assert isinstance(algorithm, algorithms.Magnitude) and algorithm.initial_sparsity == 0.2
  assert algorithm.window(magnitude.trainer.train_steps) == (0, end_step) and algorithm.update_frequency == frequency
  assert magnitude.task.sparsity.initial_mask == 'random'  # dense checkpoint, PolynomialDecay from 20 %
  assert (rigl.task.sparsity.method, rigl.task.sparsity.initial_mask) == ('rigl', 'magnitude')
