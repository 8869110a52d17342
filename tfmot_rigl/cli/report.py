"""`tfm report`: the paper's accounting for an experiment — per-layer sparsity, FLOPs and size, totals, training FLOPs.

Two sources for the masks:
  * the config alone (no --model_dir / --checkpoint_path): the task's model is built and every sparsified kernel
    gets its target sparsity from the distribution (methods whose masks start dense, SNIP and magnitude pruning,
    are counted at their final sparsity);
  * a trained run (--model_dir, or --checkpoint_path): the actual masks from its checkpoint.
Counting is `tfmot_rigl.keras.accounting` / `tfmot_rigl.core.accounting` (MicroNet-style inference FLOPs, sparse
model size, the paper's training FLOPs per method); this module only chooses the inputs and renders the result.
"""
import json
import sys
from typing import List, Optional

import numpy as np

from tfmot_rigl.cli import UsageError
from tfmot_rigl.core import accounting as core_accounting
from tfmot_rigl.cli import export as export_cli

SYNOPSIS = ('--experiment=NAME [--model_dir=DIR | --checkpoint_path=CKPT] [--config_file=FILE.yaml] '
            '[--params_override=...] [--training_multiplier=1] [--json]')


def define_flags():
  from absl import flags
  flags_obj = export_cli.define_flags()  # --checkpoint_path
  if 'json' not in flags_obj:
    flags.DEFINE_boolean('json', False, 'Print the report as JSON instead of markdown tables.')
    flags.DEFINE_float('training_multiplier', 1.0, 'The run is an extended one, this many times the dense '
                       'baseline\'s steps (5 for the paper\'s 5x rows, whose trainer.train_steps already holds the '
                       'extended steps): training FLOPs are then a ratio to dense training for '
                       'train_steps / multiplier steps, as in the paper\'s tables.')
  return flags_obj


def set_target_masks(model) -> None:
  """Gives every sparsified kernel of a freshly built model its final number of nonzeros.

  Masks of static, SET, RigL and SNFS are already drawn at the target; SNIP's (before its one shot) and magnitude
  pruning's (before pruning) are dense, so they get a mask with the target's nonzero count (positions do not matter
  to the accounting).
  """
  from tfmot_rigl import keras as sparse_keras
  from tfmot_rigl.core import accounting
  for wrapper in sparse_keras.sparse_wrappers(model):
    for index, (_, mask, _) in enumerate(wrapper.pruning_vars):
      if isinstance(wrapper, sparse_keras.SparseWrapper):
        target = wrapper.sparsity_of(index)
      else:  # TFMOT's own wrapper (magnitude pruning): every weight ends at the schedule's final sparsity
        target = wrapper.pruning_schedule.final_sparsity
      size = int(np.prod(mask.shape))
      keep = accounting.sparse_kernel_nonzeros(size, target)
      if int(np.count_nonzero(mask.numpy())) != keep:
        flat = np.zeros(size, dtype=mask.dtype.as_numpy_dtype)
        flat[:keep] = 1
        mask.assign(flat.reshape(mask.shape))


def experiment_report(params, model_dir: Optional[str] = None, checkpoint_path: Optional[str] = None,
                      training_multiplier: float = 1.0, experiment: str = '') -> dict:
  """The accounting report (JSON-ready dict) of an experiment, from its config or from a trained checkpoint.

  Adds a 'config' section (experiment, method, distribution, target sparsity, steps, batch size, mask source) to
  `tfmot_rigl.keras.accounting.report`'s layers / totals / training sections.

  Raises:
    tfmot_rigl.export.saved_model.ExportError: a missing or unreadable checkpoint.
  """
  from tfmot_rigl.export import saved_model
  from tfmot_rigl.keras import accounting
  if not training_multiplier > 0:
    raise ValueError(f'training_multiplier={training_multiplier!r} must be > 0 (e.g. 5 for a 5x run).')
  if model_dir or checkpoint_path:
    model, source = saved_model.load_trained_model(params, model_dir, checkpoint_path)
  else:
    model, source = saved_model.build_sparse_model(params), 'config (masks at the distribution\'s sparsities)'
    set_target_masks(model)
  sparsity = params.task.sparsity
  train_steps = params.trainer.train_steps
  batch_size = params.task.train_data.global_batch_size
  baseline_steps = max(1, int(round(train_steps / training_multiplier)))
  report = accounting.report(model, method=sparsity.algorithm(), steps=baseline_steps, batch_size=batch_size,
                             multiplier=train_steps / baseline_steps)
  report['config'] = {
      'experiment': experiment, 'method': sparsity.method, 'distribution': sparsity.distribution,
      'sparsity': sparsity.sparsity, 'train_steps': train_steps, 'batch_size': batch_size,
      'training_multiplier': training_multiplier, 'masks': source,
  }
  report['left_dense'] = left_dense(report, sparsity.distribution, sparsity.sparsify_depthwise)
  return report


def left_dense(report: dict, distribution: str, sparsify_depthwise: bool) -> dict:
  """{row name: why} for the conv/dense kernels of the report that stay dense (density 1)."""
  reasons = {}
  for row in report['layers']:
    if row['kind'] not in ('conv', 'dense', 'depthwise') or row['density'] is None or row['density'] < 1.0:
      continue
    if row['kind'] == 'depthwise' and not sparsify_depthwise:
      reasons[row['name']] = 'depthwise (task.sparsity.sparsify_depthwise=false)'
    else:
      reasons[row['name']] = (f'sparsity 0 from the {distribution} distribution (small or first layer), '
                              'custom_sparsities or exclude')
  return reasons


def _kernel_rows(report: dict) -> int:
  return sum(row['kind'] in ('conv', 'dense', 'depthwise') for row in report['layers'])


def left_dense_line(reasons: dict, total: int) -> str:
  """One line: how many conv/dense kernels stay dense, per reason, with a few names."""
  if not reasons:
    return 'Every conv/dense kernel is sparse.'
  by_reason = {}
  for name, reason in reasons.items():
    by_reason.setdefault(reason, []).append(name)
  parts = [f"{len(names)} {reason} [{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}]"
           for reason, names in by_reason.items()]
  return f"{len(reasons)} of {total} conv/dense kernels left dense: {'; '.join(parts)}."


def render_markdown(report: dict) -> str:
  """A heading naming the experiment and where the masks came from, then the accounting's kernel tables."""
  config = report['config']
  return (f"## {config['experiment'] or 'experiment'}: {config['method']}, {config['distribution']} distribution, "
          f"target sparsity {config['sparsity']:g}\nMasks from {config['masks']}.\n"
          f"{left_dense_line(report.get('left_dense', {}), _kernel_rows(report))}\n\n"
          + core_accounting.render_markdown(report, kernels_only=True))


def main(argv: Optional[List[str]] = None) -> int:
  """`tfm report --experiment=NAME [--model_dir=DIR] [--json]`: markdown tables on stdout, or JSON."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if {'-h', '--help', '--helpshort'} & set(argv):
    define_flags()
    print(export_cli.usage('report', SYNOPSIS, modules=[sys.modules[__name__]]))
    print('(--checkpoint_path from `tfm export` applies too: a checkpoint prefix or directory.)')
    return 0
  with export_cli.parsed_flags('report', argv, define=define_flags) as flags_obj:
    if not flags_obj.training_multiplier > 0:
      raise UsageError(f'--training_multiplier={flags_obj.training_multiplier} must be > 0 (e.g. 5 for a 5x run).')
    params = export_cli.experiment_params(flags_obj)
    from tfmot_rigl.export import saved_model
    try:
      report = experiment_report(params, flags_obj.model_dir, flags_obj.checkpoint_path,
                                 flags_obj.training_multiplier, experiment=flags_obj.experiment)
    except saved_model.ExportError as error:
      raise UsageError(str(error)) from None
    as_json = flags_obj.json
  if as_json:
    print(json.dumps(report, indent=2))
  else:
    print(render_markdown(report), end='')
  return 0
