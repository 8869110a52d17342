"""`tfm import-checkpoint`: a published RigL TF1 checkpoint as a `tfm train`-style model_dir.

Takes Model Garden's experiment flags as `tfm train` does (--experiment, --config_file, --params_override; the row of
official_configs/ that the checkpoint was trained with gives its distribution), plus --source (the TF1 checkpoint
prefix) and --model_dir (new). Prints one line per reference layer (source variables -> target variables, shape,
mask sparsity) and writes params.yaml and ckpt-0, which `tfm train --mode=eval`, `tfm report` and `tfm export` read.
See `tfmot_rigl.modelgarden.checkpoint_import`.
"""
import argparse
import os
import sys
from typing import List, Optional

from tfmot_rigl.cli import UsageError
from tfmot_rigl.cli import run_checks
from tfmot_rigl.cli import export as export_cli
from tfmot_rigl.cli import train

SYNOPSIS = ('--experiment=resnet_rigl|mobilenet_rigl --source=PATH/model.ckpt-N --model_dir=DIR '
            '[--config_file=official_configs/ROW.yaml] [--params_override=...]')


def define_flags():
  """Model Garden's flags (as `tfm train`) plus --source; defined once per process."""
  from absl import flags
  flags_obj = train._define_flags()  # pylint: disable=protected-access
  if 'source' not in flags_obj:
    flags.DEFINE_string('source', None, 'The reference TF1 checkpoint: its prefix (PATH/model.ckpt-N, for '
                        'model.ckpt-N.index and .data-*) or the directory holding it.')
  return flags_obj


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if {'-h', '--help', '--helpshort'} & set(argv):
    define_flags()
    print(export_cli.usage('import-checkpoint', SYNOPSIS, modules=[sys.modules[__name__]]))
    return 0
  with export_cli.parsed_flags('import-checkpoint', argv, define=define_flags) as flags_obj:
    if not flags_obj.source:
      raise UsageError('--source is required: the reference checkpoint prefix, e.g. s80erk1x/model.ckpt-32000.')
    if not flags_obj.model_dir:
      raise UsageError('--model_dir is required: a new directory for params.yaml and the imported checkpoint.')
    from tfmot_rigl.modelgarden import checkpoint_import
    # Model Garden's parser reads these attributes of its flags object (as `tfm export` passes them).
    parser_flags = argparse.Namespace(experiment=flags_obj.experiment, config_file=list(flags_obj.config_file or []),
                                      params_override=flags_obj.params_override, tpu=flags_obj.tpu,
                                      tf_data_service=flags_obj.tf_data_service)
    experiment, source, model_dir = flags_obj.experiment, flags_obj.source, flags_obj.model_dir
  try:
    # Checked before the experiment is parsed and the model built: both take a while.
    run_checks.check_model_dir(model_dir)  # a directory, or creatable, and writable
    checkpoint_import.check_model_dir(model_dir)
    checkpoint_import.open_checkpoint(source)
    params = train.parse_experiment(parser_flags)
    result = checkpoint_import.import_checkpoint(params, source, model_dir, experiment=experiment)
  except checkpoint_import.CheckpointImportError as error:
    raise UsageError(str(error)) from None
  for line in result.lines():
    print(line)
  masked = [layer for layer in result.layers if layer.sparsity is not None]
  print(f'imported {len(result.source_variables)} variables of the reference {result.architecture} '
        f'({len(masked)} masked kernels) from {source} into {result.checkpoint_path}; left out '
        f'{len(result.skipped_variables)} training-state variables (optimizer slots, step counters).')
  # `tfm train` reads its config from the flags, not from model_dir: params.yaml carries the import's settings.
  print(f'evaluate with: tfm train --mode=eval --experiment={experiment} '
        f'--config_file={os.path.join(model_dir, "params.yaml")} --model_dir={model_dir} '
        '--params_override=task.validation_data.input_path=...')
  return 0
