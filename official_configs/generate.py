"""Writes official_configs/*.yaml (one file per row of the RigL paper's tables) and their README from one table.

Run from the repository root:
  python official_configs/generate.py          # (re)write the YAML files
  python official_configs/generate.py --check  # exit 1 if a file is missing or differs from what would be written

Each YAML overrides a registered experiment (named in its first line) and is run as that line says. The training
schedule of extended ("5x") runs is the 1x schedule stretched, as the reference's `training_steps_multiplier` does.
"""
import dataclasses
import os
import sys
from typing import Dict, List, Optional

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root, so the script runs without installing the package

import yaml  # noqa: E402

from tfmot_rigl.modelgarden import configs  # noqa: E402

# Published top-1 accuracies. REFERENCE.md gives the ResNet-50 dense / RigL-ERK 80 and 90% and the CIFAR-10 RigL-ERK
# numbers; the other ResNet-50 rows are the tables of the reference code's README (google-research/rigl).
ANCHORS_REFERENCE_MD = 'REFERENCE.md'
ANCHORS_RIGL_README = 'google-research/rigl README'


@dataclasses.dataclass
class Row:
  """One YAML file: which experiment it overrides, the overrides, and what the paper reports for it."""
  file: str
  experiment: str
  description: str
  overrides: Dict
  anchor: Optional[float] = None
  anchor_source: str = ''


def _sparsity_block(method: str, sparsity: float, distribution: str, first_layer_dense: Optional[bool], **extra):
  block = {'method': method, 'sparsity': sparsity, 'distribution': distribution,
           'first_layer_dense': first_layer_dense}
  block.update(extra)
  return block


def _percent(sparsity: float) -> str:
  return f'{sparsity * 100:g}'.replace('.', '')


def _imagenet_trainer(experiment_factory, multiplier: int) -> Dict:
  """train_steps and the learning-rate schedule of an ImageNet experiment, stretched `multiplier` times."""
  optimizer = experiment_factory().trainer.optimizer_config.as_dict()
  stepwise = optimizer['learning_rate']['stepwise']
  warmup = optimizer['warmup']['linear']
  return {'train_steps': configs.IMAGENET_TRAIN_STEPS * multiplier,
          'optimizer_config': {
              'learning_rate': {'type': 'stepwise', 'stepwise': {
                  'boundaries': [b * multiplier for b in stepwise['boundaries']],
                  'values': [round(v, 8) for v in stepwise['values']]}},
              'warmup': {'type': 'linear', 'linear': {
                  'warmup_steps': warmup['warmup_steps'] * multiplier,
                  'warmup_learning_rate': warmup['warmup_learning_rate']}}}}


RESNET_SPARSITIES = (0.8, 0.9, 0.95, 0.965, 0.99)
RESNET_ANCHORS = {
    # (distribution, sparsity, multiplier): (top-1, source)
    ('erk', 0.8, 1): (75.12, ANCHORS_REFERENCE_MD), ('erk', 0.8, 5): (77.17, ANCHORS_REFERENCE_MD),
    ('erk', 0.9, 1): (73.07, ANCHORS_REFERENCE_MD), ('erk', 0.9, 5): (76.42, ANCHORS_REFERENCE_MD),
    ('uniform', 0.8, 1): (74.60, ANCHORS_RIGL_README), ('uniform', 0.8, 5): (76.71, ANCHORS_RIGL_README),
    ('uniform', 0.9, 1): (72.02, ANCHORS_RIGL_README), ('uniform', 0.9, 5): (75.73, ANCHORS_RIGL_README),
    ('erk', 0.95, 5): (74.63, ANCHORS_RIGL_README), ('uniform', 0.95, 5): (73.22, ANCHORS_RIGL_README),
    ('erk', 0.965, 5): (72.77, ANCHORS_RIGL_README), ('uniform', 0.965, 5): (71.31, ANCHORS_RIGL_README),
    ('erk', 0.99, 5): (61.86, ANCHORS_RIGL_README),
}
MOBILENET_SPARSITIES = (0.75, 0.9)
WRN_SPARSITIES = (0.5, 0.8, 0.9, 0.95)
WRN_METHODS = ('rigl', 'set', 'snfs', 'snip', 'static', 'magnitude')
WRN_RIGL_ANCHORS = {0.5: 94.2, 0.8: 93.6, 0.9: 92.9, 0.95: 91.8}
# Gradual (GraNet-style) RigL, issue 19: layers start at the distribution's sparsities for 0.5 and reach their targets
# on the cubic schedule by 37.5% of training (half the update window), drop/grow going on.
GRADUAL = {'initial_sparsity': 0.5, 'prune_end': 0.375}
GRADUAL_NOTE = 'gradual from 50% by 37.5% of training (issue 19; no published number)'


def gradual_rows() -> List[Row]:
  """ResNet-50 ERK 80/90%, MobileNet-v1 uniform 75% and WRN-22-2 ERK 90/95% with the gradual option (1x)."""
  table = []
  for sparsity in (0.8, 0.9):
    table.append(Row(
        f'resnet50_rigl_gradual_erk_s{_percent(sparsity)}_1x.yaml', 'resnet_rigl',
        f'ResNet-50, RigL ERK {sparsity * 100:g}%, {GRADUAL_NOTE}, 1x training',
        {'task': {'sparsity': _sparsity_block('rigl', sparsity, 'erk', False, **GRADUAL)},
         'trainer': _imagenet_trainer(configs.resnet_rigl, 1)}))
  table.append(Row(
      'mobilenet1_rigl_gradual_uniform_s75_1x.yaml', 'mobilenet_rigl',
      f'MobileNet-v1, RigL uniform 75% (first layer and depthwise kernels dense), {GRADUAL_NOTE}, 1x training',
      {'task': {'model': {'backbone': {'mobilenet': {'model_id': 'MobileNetV1'}}},
                'sparsity': _sparsity_block('rigl', 0.75, 'uniform', True, sparsify_depthwise=False, **GRADUAL)},
       'trainer': _imagenet_trainer(configs.mobilenet_rigl, 1)}))
  for sparsity in (0.9, 0.95):
    table.append(Row(
        f'wrn22_2_rigl_gradual_s{_percent(sparsity)}.yaml', 'wrn_cifar10_rigl',
        f'WideResNet-22-2 on CIFAR-10, RigL {sparsity:.0%}, {GRADUAL_NOTE}',
        {'task': {'sparsity': _sparsity_block('rigl', sparsity, 'erk', False, **GRADUAL)}}))
  return table


# Model Garden's pruning project (official/projects/pruning in tensorflow/models): TFMOT's PolynomialDecay from 20 %
# on every prunable kernel (uniform, stem and head included; MobileNet-v2's depthwise kernels too), starting from a
# dense ImageNet checkpoint, with its own batch, steps and learning rates; top-1 as its README publishes it.
ANCHORS_PRUNING_PROJECT = 'Model Garden pruning project README'
PRUNING_PROJECT = {
    # name: (experiment, sparsity, model overrides, losses/data/trainer, (end_step, frequency), dense top-1, top-1)
    'resnet50': ('resnet_rigl', 0.8, {}, dict(
        batch=1024, train_steps=50000, validation_steps=50, loop=1251,
        optimizer={'type': 'sgd', 'sgd': {'momentum': 0.9, 'nesterov': False}},
        learning_rate={'initial_learning_rate': 0.01, 'decay_steps': 2502, 'decay_rate': 0.9, 'staircase': True}),
        (40000, 40), 76.704, 75.508),
    'mobilenet2': ('mobilenet_rigl', 0.5, {'dropout_rate': 0.1, 'backbone': {'mobilenet': {'model_id': 'MobileNetV2'}}},
                   dict(batch=1024, train_steps=125100, validation_steps=98, loop=2502,
                        optimizer={'type': 'rmsprop', 'rmsprop': {'rho': 0.9, 'momentum': 0.9, 'epsilon': 0.002}},
                        learning_rate={'initial_learning_rate': 0.04, 'decay_steps': 5004, 'decay_rate': 0.85,
                                       'staircase': True}),
                   (80000, 400), 72.768, 71.334),
}
DENSE_CHECKPOINT = 'DENSE_MODEL_DIR'  # placeholder: left as it is, `tfm train` stops at once naming it


def _pruning_project_rows() -> List[Row]:
  table = []
  for name, (experiment, sparsity, model, train, (end_step, frequency), dense, top1) in PRUNING_PROJECT.items():
    data = {'global_batch_size': train['batch']}
    task = {'model': model, 'losses': {'l2_weight_decay': 0.0, 'one_hot': True, 'label_smoothing': 0.1},
            'train_data': dict(data), 'validation_data': dict(data),
            'init_checkpoint': DENSE_CHECKPOINT, 'init_checkpoint_modules': 'all'}
    loop = train['loop']
    trainer = {'train_steps': train['train_steps'], 'validation_steps': train['validation_steps'],
               'validation_interval': loop, 'steps_per_loop': loop, 'summary_interval': loop,
               'checkpoint_interval': loop,
               'optimizer_config': {'optimizer': train['optimizer'],
                                    'learning_rate': {'type': 'exponential', 'exponential': train['learning_rate']},
                                    'warmup': {'type': 'linear', 'linear': {'warmup_steps': 0}}}}
    depthwise = {'sparsify_depthwise': True} if name.startswith('mobilenet') else {}
    title, stock = {'resnet50': ('ResNet-50', 'resnet_imagenet'),
                    'mobilenet2': ('MobileNet-v2', 'mobilenet_imagenet')}[name]
    start = (f'from a dense checkpoint (task.init_checkpoint: replace {DENSE_CHECKPOINT} by the model_dir of a dense '
             f'run, e.g. Model Garden\'s {stock})')
    magnitude = _sparsity_block('magnitude', sparsity, 'uniform', False, initial_sparsity=0.2, begin_step=0,
                                end_step=end_step, update_frequency=frequency, **depthwise)
    table.append(Row(
        f'{name}_pruning_magnitude_s{_percent(sparsity)}.yaml', experiment,
        f'{title}, Model Garden pruning project: gradual magnitude 20 -> {sparsity:.0%} (PolynomialDecay to step '
        f'{end_step}, every {frequency} steps) {start}; dense top-1 {dense}',
        {'task': dict(task, sparsity=magnitude), 'trainer': trainer}, top1, ANCHORS_PRUNING_PROJECT))
    rigl = _sparsity_block('rigl', sparsity, 'uniform', False, initial_mask='magnitude', **depthwise)
    table.append(Row(
        f'{name}_pruning_rigl_s{_percent(sparsity)}.yaml', experiment,
        f'{title}, the pruning project\'s run with RigL at {sparsity:.0%} (ΔT = 100, α = 0.3 cosine, updates until '
        f'75%) {start}, keeping its largest weights (initial_mask: magnitude)',
        {'task': dict(task, sparsity=rigl), 'trainer': trainer}))
  return table


def rows() -> List[Row]:
  table = [Row('resnet50_dense.yaml', 'resnet_rigl', 'ResNet-50, dense baseline',
               {'task': {'sparsity': _sparsity_block('dense', 0.0, 'uniform', None)},
                'trainer': _imagenet_trainer(configs.resnet_rigl, 1)}, 76.8, ANCHORS_REFERENCE_MD)]
  for distribution in ('erk', 'uniform'):
    for sparsity in RESNET_SPARSITIES:
      for multiplier in (1, 5):
        # The reference keeps the first layer dense for uniform always, for ERK only at 99% sparsity.
        first_layer_dense = distribution == 'uniform' or sparsity >= 0.99
        anchor, source = RESNET_ANCHORS.get((distribution, sparsity, multiplier), (None, ''))
        table.append(Row(
            f'resnet50_rigl_{distribution}_s{_percent(sparsity)}_{multiplier}x.yaml', 'resnet_rigl',
            f'ResNet-50, RigL {distribution.upper() if distribution == "erk" else "uniform"} '
            f'{sparsity * 100:g}%, {multiplier}x training',
            {'task': {'sparsity': _sparsity_block('rigl', sparsity, distribution, first_layer_dense)},
             'trainer': _imagenet_trainer(configs.resnet_rigl, multiplier)}, anchor, source))
  for version in (1, 2):
    for sparsity in MOBILENET_SPARSITIES:
      for multiplier in (1, 5):
        table.append(Row(
            f'mobilenet{version}_rigl_uniform_s{_percent(sparsity)}_{multiplier}x.yaml', 'mobilenet_rigl',
            f'MobileNet-v{version}, RigL uniform {sparsity:.0%} (first layer and depthwise kernels dense), '
            f'{multiplier}x training',
            {'task': {'model': {'backbone': {'mobilenet': {'model_id': f'MobileNetV{version}'}}},
                      'sparsity': _sparsity_block('rigl', sparsity, 'uniform', True, sparsify_depthwise=False)},
             'trainer': _imagenet_trainer(configs.mobilenet_rigl, multiplier)}))
  table.append(Row('wrn22_2_dense.yaml', 'wrn_cifar10_rigl', 'WideResNet-22-2 on CIFAR-10, dense baseline',
                   {'task': {'sparsity': _sparsity_block('dense', 0.0, 'uniform', None)}}))
  for method in WRN_METHODS:
    for sparsity in WRN_SPARSITIES:
      if method == 'magnitude':
        # Zhu & Gupta as the reference's CIFAR 'prune' runs: uniform, first layer dense, pruning every 1000 steps
        # from step 20k to 75k.
        block = _sparsity_block(method, sparsity, 'uniform', True, begin_step=20000, end_step=75000,
                                update_frequency=1000)
      else:
        block = _sparsity_block(method, sparsity, 'erk', False)
      anchor = WRN_RIGL_ANCHORS.get(sparsity) if method == 'rigl' else None
      table.append(Row(
          f'wrn22_2_{method}_s{_percent(sparsity)}.yaml', 'wrn_cifar10_rigl',
          f'WideResNet-22-2 on CIFAR-10, {method.upper() if method != "magnitude" else "gradual magnitude pruning"} '
          f'{sparsity:.0%}', {'task': {'sparsity': block}}, anchor, ANCHORS_REFERENCE_MD if anchor else ''))
  return table + gradual_rows() + _pruning_project_rows()


def command(row: Row) -> str:
  return (f'tfm train --experiment={row.experiment} --config_file=official_configs/{row.file} '
          '--model_dir=MODEL_DIR')


def render(row: Row) -> str:
  header = f'# {command(row)}\n# {row.description}.'
  if row.anchor is not None:
    header += f' Published top-1: {row.anchor} ({row.anchor_source}).'
  header += '\n# Generated by official_configs/generate.py; edit the table there, not this file.\n'
  return header + yaml.safe_dump(row.overrides, sort_keys=False, default_flow_style=None, width=100)


README_INTRO = """# Paper configurations

One YAML file per row of the RigL paper's tables (Evci et al., ICML 2020), each an override of a registered
experiment. Run a row with the command in its first line, e.g.

```
tfm train --experiment=resnet_rigl --config_file=official_configs/resnet50_rigl_erk_s80_1x.yaml --model_dir=MODEL_DIR
```

and add `--params_override=...` for anything else (data paths, batch size, steps). The ImageNet experiments read
Model Garden's JPEG TFRecords (`task.train_data.input_path`, default `imagenet-2012-tfrecord/train*`); the CIFAR-10
ones read TFDS `cifar10` (set `task.train_data.tfds_data_dir`) or TFRecords (`input_path` with `tfds_name: ''`).

Settings common to a model live in its experiment (`tfmot_rigl/modelgarden/configs.py`): ResNet-50 and MobileNet
train at batch 4096 for 32k steps at 1x (about 100 epochs) with Nesterov momentum 0.9, label smoothing 0.1 and
RigL's ΔT = 100, α = 0.3 with cosine decay, mask updates until 75% of training; WideResNet-22-2 trains at batch 128
for 97,656 steps (250 epochs), momentum 0.9, L2 5e-4. "5x" rows stretch the whole schedule (steps, warm-up and
learning-rate boundaries; the mask-update window is a fraction of training and stretches with it). Uniform
distributions keep the first layer dense, ERK only at 99% sparsity (as the reference code does); the MobileNet rows
use a uniform distribution with the first layer and the depthwise kernels dense (the reference keeps depthwise
kernels dense; `task.sparsity.sparsify_depthwise: true` sparsifies them too). Gradual magnitude pruning (TFMOT's
PolynomialDecay) prunes every 1000 steps from step 20k to 75k with a uniform distribution, as the reference's CIFAR-10
pruning runs. CIFAR-10 training uses the reference's augmentation: random flips and a 4-pixel pad-and-crop.

The `*_rigl_gradual_*` rows are not from the paper: RigL with the gradual option of issue 19 (GraNet-style,
`initial_sparsity: 0.5`, `prune_end: 0.375`): every layer starts at its share of 50% sparsity and is pruned by
magnitude on a cubic schedule to its target by 37.5% of training while drop/grow goes on (docs/semantics.md). Its
LeNet-300-100 results against gradual magnitude pruning and RigL are in docs/benchmarks.md; on these networks it
has not been trained here (no accelerator).

Published top-1 accuracies are anchors to compare against, not results of this code: the ones marked REFERENCE.md
are those the project's reference semantics quote; the others are from the tables of the reference code's README
(google-research/rigl). Rows without an anchor have no number quoted here (the paper shows many of them only in
plots).

Measured with this code so far (CPU only): `tfm train --experiment=mnist_rigl --model_dir=MODEL_DIR` (the paper's
784-300-100-10 MLP, RigL ERK 90%, 10 epochs, no YAML needed) reaches 98.13% test accuracy in 2 min 36 s on 2 CPU
cores.

Prune from a pretrained model as Model Garden's pruning project (official/projects/pruning in tensorflow/models)
does: the `*_pruning_magnitude_*` rows are its ResNet-50 80 % and MobileNet-v2 50 % runs (TFMOT's PolynomialDecay
from 20 % on every prunable kernel, its batch 1024, steps, SGD / RMSprop and exponential learning rates, no weight
decay), started from a dense checkpoint by `task.init_checkpoint` (replace `DENSE_MODEL_DIR` with the model_dir of a
dense run: Model Garden's `resnet_imagenet` / `mobilenet_imagenet` trainers, or `resnet50_dense.yaml`); their anchors
are the top-1 its README publishes (dense 76.704 and 72.768). The `*_pruning_rigl_*` rows run the same schedule with
RigL at the final sparsity from the dense checkpoint's largest weights (`initial_mask: magnitude`); nothing is
published for them.

This file and the YAML files are generated: edit the table in `generate.py` and run
`python official_configs/generate.py` (`--check` verifies they are up to date).

| File | Experiment | Paper row | Published top-1 |
|------|------------|-----------|-----------------|
"""


def render_readme(table: List[Row]) -> str:
  lines = [README_INTRO.rstrip('\n')]
  for row in table:
    anchor = f'{row.anchor} ({row.anchor_source})' if row.anchor is not None else ''
    lines.append(f'| `{row.file}` | `{row.experiment}` | {row.description} | {anchor} |')
  return '\n'.join(lines) + '\n'


def main(argv: List[str]) -> int:
  check = '--check' in argv
  stale = []
  table = rows()
  outputs = [(row.file, render(row)) for row in table] + [('README.md', render_readme(table))]
  for file, text in outputs:
    path = os.path.join(HERE, file)
    current = open(path, encoding='utf-8').read() if os.path.exists(path) else None
    if current == text:
      continue
    if check:
      stale.append(file)
    else:
      with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
  if stale:
    print(f'out of date: {", ".join(stale)}; run python official_configs/generate.py', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
