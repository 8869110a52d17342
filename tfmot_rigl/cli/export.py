"""`tfm export`: a trained sparse model as a stripped serving SavedModel (see `tfmot_rigl.export.saved_model`).

Takes Model Garden's experiment flags (--experiment, --config_file, --params_override) as `tfm train` does, and
first reads the params.yaml that `tfm train` saved in --model_dir, so the training overrides need not be repeated.
The helpers here (flags, experiment config, checkpoint flags) are shared with `tfm report`.
"""
import argparse
import contextlib
import os
import sys
from typing import List, Optional, Sequence

from tfmot_rigl.cli import UsageError
from tfmot_rigl.cli import repeats
from tfmot_rigl.cli import run_checks
from tfmot_rigl.cli import train

PARAMS_FILE = 'params.yaml'


def define_flags():
  """Model Garden's flags (as `tfm train`) plus the checkpoint and export flags; defined once per process."""
  from absl import flags
  flags_obj = train._define_flags()  # pylint: disable=protected-access
  if 'checkpoint_path' not in flags_obj:
    flags.DEFINE_string('checkpoint_path', None, 'A checkpoint prefix (MODEL_DIR/ckpt-N) or a directory (its latest '
                        'checkpoint); default: the latest checkpoint in --model_dir.')
    flags.DEFINE_string('export_dir', None, 'Directory to write the SavedModel to (created; must be empty or absent '
                        'unless --overwrite).')
    flags.DEFINE_boolean('overwrite', False, 'Replace an existing output (it is replaced only once the new one is '
                         'complete).')
    flags.DEFINE_enum('input_type', 'image_tensor', ['image_tensor', 'image_bytes', 'tf_example', 'tflite'],
                      'Serving signature, as Model Garden\'s export: image_tensor (uint8 images, preprocessed in the '
                      'graph), image_bytes, tf_example, or tflite (preprocessed float features).')
    flags.DEFINE_integer('batch_size', None, 'Fixed serving batch size (default: any).')
  return flags_obj


@contextlib.contextmanager
def parsed_flags(command: str, argv: Sequence[str], define=define_flags, experiment: bool = True):
  """The absl flags `define()` returns, parsed from `argv` of `tfm <command>`, every flag not given at its default.

  absl keeps values from an earlier parse in the same process (tests run several commands), so flags are reset
  before parsing and again on exit, leaving nothing behind for the next command. With `experiment`, Model Garden's
  experiment flags are checked as `tfm train` checks them.
  """
  from absl import flags
  flags_obj = define()
  flags_obj.unparse_flags()
  try:
    try:
      rest = flags_obj([f'tfm {command}', *argv])
    except flags.Error as error:
      raise UsageError(str(error)) from None
    if len(rest) > 1:
      raise UsageError(f'unexpected argument(s) {" ".join(rest[1:])!r}; every option is a --flag=value.')
    repeats.check_repeated_flags(argv, flags_obj)
    if experiment:
      if not flags_obj.experiment:
        raise UsageError('--experiment is required; `tfm experiments` lists the registered sparse experiments.')
      for path in flags_obj.config_file or []:
        if not os.path.isfile(path):
          raise UsageError(f'--config_file {path!r} does not exist; pass a YAML file such as '
                           'official_configs/*.yaml.')
    yield flags_obj
  finally:
    flags_obj.unparse_flags()


def experiment_params(flags_obj):
  """The experiment config: the registered experiment, then model_dir's params.yaml (what `tfm train` ran with),
  then --config_file and --params_override."""
  if flags_obj.model_dir and not os.path.isdir(flags_obj.model_dir):
    raise UsageError(f'--model_dir {flags_obj.model_dir!r} does not exist; pass the model_dir of a `tfm train` run.')
  config_files = list(flags_obj.config_file or [])
  saved = os.path.join(flags_obj.model_dir, PARAMS_FILE) if flags_obj.model_dir else None
  from tfmot_rigl.modelgarden import task  # noqa: F401  (registers the experiments and the task)
  if saved and os.path.isfile(saved):
    config_files.insert(0, saved)
    _check_same_experiment(flags_obj.experiment, flags_obj.model_dir, saved)
  # Model Garden's parser reads these attributes of its flags object; a copy keeps the parsed flags as given.
  parser_flags = argparse.Namespace(experiment=flags_obj.experiment, config_file=config_files,
                                    params_override=flags_obj.params_override, tpu=flags_obj.tpu,
                                    tf_data_service=flags_obj.tf_data_service)
  return train.parse_experiment(parser_flags)


def _check_same_experiment(experiment: str, model_dir: str, saved_params: str) -> None:
  """--experiment must be the one model_dir was trained as: its params.yaml would otherwise silently win."""
  from official.core import exp_factory
  from official.modeling import hyperparams
  from tfmot_rigl.modelgarden import configs
  from tfmot_rigl.modelgarden import resume
  try:
    resume.check_same_experiment(model_dir, experiment)
    if resume.saved_experiment(model_dir) is None and experiment in configs.EXPERIMENTS:
      # A model_dir from before the experiment name was recorded: the model must at least be the experiment's.
      saved_type = hyperparams.read_yaml_to_params_dict(saved_params).as_dict()['task']['model']['backbone']['type']
      expected_type = exp_factory.get_exp_config(experiment).task.model.backbone.type
      if saved_type != expected_type:
        raise resume.ResumeError(f'--model_dir {model_dir} holds a {saved_type} model, not the {expected_type} model '
                                 f'of experiment {experiment!r}; pass the --experiment it was trained as.')
  except resume.ResumeError as error:
    raise UsageError(str(error)) from None


def usage(command: str, synopsis: str, modules=(), model_garden_flags: bool = True) -> str:
  """Usage line and the help of the flags defined by `modules` (default: this one), then Model Garden's."""
  from official.common import flags as tfm_flags
  flags_obj = define_flags()
  modules = list(modules) or [sys.modules[__name__]]
  if model_garden_flags:
    modules.append(tfm_flags)
  return '\n'.join([f'usage: tfm {command} {synopsis}', ''] + [flags_obj.module_help(m) for m in modules])


SYNOPSIS = ('--experiment=NAME --model_dir=DIR --export_dir=DIR [--checkpoint_path=CKPT] [--overwrite] '
            '[--input_type=image_tensor] [--config_file=FILE.yaml] [--params_override=...]')


def main(argv: Optional[List[str]] = None) -> int:
  """`tfm export`: restore a `tfm train` checkpoint, strip the sparsity wrappers, write a serving SavedModel."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if {'-h', '--help', '--helpshort'} & set(argv):
    print(usage('export', SYNOPSIS))
    return 0
  with parsed_flags('export', argv) as flags_obj:
    if not flags_obj.export_dir:
      raise UsageError('--export_dir is required: the directory to write the SavedModel to.')
    if not flags_obj.model_dir and not flags_obj.checkpoint_path:
      raise UsageError('--model_dir (of a `tfm train` run) or --checkpoint_path is required.')
    if flags_obj.batch_size is not None and flags_obj.batch_size < 1:
      raise UsageError(f'--batch_size={flags_obj.batch_size} must be a positive number of examples per call; leave '
                       'it out for a SavedModel that takes any batch size.')
    run_checks.check_model_dir(flags_obj.export_dir, '--export_dir')
    from tfmot_rigl.export import saved_model
    params = experiment_params(flags_obj)
    try:
      path = saved_model.export_saved_model(
          params, flags_obj.export_dir, model_dir=flags_obj.model_dir, checkpoint_path=flags_obj.checkpoint_path,
          input_type=flags_obj.input_type, batch_size=flags_obj.batch_size, overwrite=flags_obj.overwrite)
    except saved_model.ExportError as error:
      raise UsageError(str(error)) from None
    signature = saved_model.describe_signature(path, saved_model.serving_preprocessing(params, flags_obj.input_type))
  print(f'wrote the stripped sparse SavedModel to {path}; {signature}')
  return 0
