"""`tfm train` (Model Garden's training driver for the sparse experiments) and `tfm experiments`.

`tfm train` takes Model Garden's own flags (official.common.flags: --experiment, --mode, --model_dir, --config_file,
--params_override, --gin_file, ...) and does what Model Garden's `official/vision/train.py` does: parse and validate
the experiment config, save it as params.yaml in model_dir, and run Orbit's train/eval loop with checkpoints and
summaries in model_dir (a second run resumes from the latest checkpoint). Bad input — an unknown experiment, a
misspelt override key, an invalid sparsity setting — stops it before anything is written, with one line and exit
code 2.
"""
import os
import re
import sys
import time
from typing import List, Optional, Sequence

from tfmot_rigl.cli import UsageError
from tfmot_rigl.cli import repeats
from tfmot_rigl.cli import run_checks
from tfmot_rigl.cli import run_guards

DEFAULT_MODE = 'train_and_eval'
INTERRUPTED_EXIT_CODE = 130
_MISSING_KEY = re.compile(r"The key '([^']+)' does not exist in <class '(?:[\w.]+\.)?(\w+)'>")


def _define_flags():
  from absl import flags
  from official.common import flags as tfm_flags
  if 'experiment' not in flags.FLAGS:
    tfm_flags.define_flags()
  return flags.FLAGS


def _parse_flags(argv: Sequence[str]):
  from absl import flags
  flags_obj = _define_flags()
  # absl keeps values from an earlier parse of the same process (e.g. a second in-process `tfm train`): start fresh.
  flags_obj.unparse_flags()
  try:
    rest = flags_obj(['tfm train', *argv])
  except flags.Error as error:
    raise UsageError(str(error)) from None
  if len(rest) > 1:
    raise UsageError(f'unexpected argument(s) {" ".join(rest[1:])!r}; every option is a --flag=value.')
  repeats.check_repeated_flags(argv, flags_obj)
  if not flags_obj.experiment:
    raise UsageError('--experiment is required; `tfm experiments` lists the registered sparse experiments.')
  if not flags_obj.model_dir:
    raise UsageError('--model_dir is required: the directory for checkpoints, summaries and params.yaml.')
  if flags_obj.mode is None:
    flags_obj.mode = DEFAULT_MODE
  for path in flags_obj.config_file or []:
    if not os.path.isfile(path):
      raise UsageError(f'--config_file {path!r} does not exist; pass a YAML file such as official_configs/*.yaml.')
  return flags_obj


def _config_error(error: Exception) -> str:
  """One readable line for an error raised while building the experiment config."""
  message = error.args[0] if error.args else str(error)
  missing = _MISSING_KEY.search(str(message))
  if missing:
    return (f'unknown config key {missing.group(1)!r} in {missing.group(2)} (misspelt in --config_file or '
            '--params_override?).')
  return str(message).splitlines()[0] if str(message) else type(error).__name__


def parse_experiment(flags_obj, mode: str = ''):
  """The validated, locked ExperimentConfig for the flags (Model Garden's `parse_configuration`).

  The config sources are read first (`run_checks`), so a malformed YAML file or override, a value of the wrong
  type, a non-finite number or a bad step count is one line naming the flag and the key.
  """
  from official.core import train_utils
  from tfmot_rigl.modelgarden import configs
  if flags_obj.experiment not in configs.EXPERIMENTS:
    raise UsageError(f'unknown experiment {flags_obj.experiment!r}; registered sparse experiments: '
                     f"{', '.join(sorted(configs.EXPERIMENTS))}.")
  repeats.check_duplicate_keys(flags_obj.config_file, flags_obj.params_override)
  sources = run_checks.config_sources(flags_obj)
  run_checks.check_finite(sources)
  run_checks.check_types(flags_obj.experiment, sources)
  try:
    params = train_utils.ExperimentParser(flags_obj).parse()
  except KeyError as error:
    if _MISSING_KEY.search(str(error.args[0] if error.args else '')):
      raise UsageError(_config_error(error)) from None
    raise
  except (ValueError, TypeError, AttributeError) as error:
    raise UsageError(run_checks.bad_value(flags_obj.experiment, sources) or _config_error(error)) from None
  run_checks.check_train_steps(params, mode or 'train')
  run_checks.check_strategy(params)
  run_checks.check_devices(params)
  try:
    params.validate()
  except (ValueError, TypeError, AttributeError, KeyError) as error:
    raise UsageError(_config_error(error)) from None
  params.lock()
  return params


def run(flags_obj) -> None:
  """Trains and/or evaluates as Model Garden's vision train.py does, raising UsageError on a bad config."""
  import gin
  from official.common import distribute_utils
  from official.core import task_factory
  from official.core import train_lib
  from official.core import train_utils
  from official.modeling import performance
  # Registers the experiments, the task and the backbones; before gin locks its config, as Model Garden's
  # train.py imports its registry first.
  import tfmot_rigl.modelgarden  # noqa: F401
  from tfmot_rigl.modelgarden import resume
  import tf_keras as keras
  from tfmot_rigl.modelgarden import inputs
  from tfmot_rigl.modelgarden import summaries
  from tfmot_rigl.modelgarden.trainer import SparseTrainer

  if flags_obj.gin_file or flags_obj.gin_params:
    # Only when asked: parsing locks gin's registry for the rest of the process.
    gin.parse_config_files_and_bindings(flags_obj.gin_file, flags_obj.gin_params)
  model_dir = flags_obj.model_dir
  mode = flags_obj.mode
  run_checks.check_model_dir(model_dir)
  params = parse_experiment(flags_obj, mode)
  run_guards.check_config_paths(params, model_dir)
  latest = _check_resume(params, model_dir, flags_obj.experiment, mode)
  if params.task.init_checkpoint and not latest and 'train' in mode:
    from tfmot_rigl.keras import pretrained
    try:
      pretrained.checkpoint_path(params.task.init_checkpoint)  # a missing path: before the model is built
    except ValueError as error:
      raise UsageError(str(error)) from None
  for data in (params.task.train_data, params.task.validation_data):
    try:
      inputs.check_data(data, 'task.train_data' if data.is_training else 'task.validation_data')
    except ValueError as error:
      raise UsageError(str(error)) from None
  if 'train' not in mode and not latest:
    latest = _checkpoint_to_evaluate(params, model_dir, mode)
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  # The checks above run no TensorFlow op (MultiWorkerMirroredStrategy must be created before any) and initialise
  # no device, so bad input is reported before TensorFlow's own start-up lines.
  try:
    strategy = distribute_utils.get_distribution_strategy(
        distribution_strategy=params.runtime.distribution_strategy, all_reduce_alg=params.runtime.all_reduce_alg,
        num_gpus=params.runtime.num_gpus, tpu_address=params.runtime.tpu)
  except ValueError as error:
    raise UsageError(f'runtime: {_config_error(error)}') from None
  # One seed for the whole run: weight initialisation here, the data order and every mask draw from the same
  # task.sparsity.seed, so that two runs, or a run and its resumption, train on the same numbers.
  keras.utils.set_random_seed(params.task.sparsity.seed)
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
    try:
      # Built here rather than inside run_experiment so that a config the model cannot honour (e.g. an unknown layer
      # in custom_sparsities) or unreadable data is reported as bad input before anything is written to model_dir.
      trainer = train_utils.create_trainer(
          params, task, train='train' in mode, evaluate='eval' in mode,
          checkpoint_exporter=train_lib.maybe_create_best_ckpt_exporter(params, model_dir),
          trainer_cls=SparseTrainer)
      if not latest and 'train' in mode:
        task.check_init_checkpoint(trainer.model)  # a missing or unfitting task.init_checkpoint: refused here
    except ValueError as error:
      raise UsageError(_config_error(error)) from None
    if latest and not os.path.exists(os.path.join(model_dir, resume.PARAMS_FILE)):
      # With params.yaml, check_restart has compared the configs; without it, the checkpoint itself is compared.
      _check_checkpoint_fits(trainer, latest, model_dir)
  if 'train' in mode:
    # As Model Garden: pure eval jobs do not write params.yaml, so they cannot race a training job for it.
    train_utils.serialize_config(params, model_dir)
    resume.record_experiment(model_dir, flags_obj.experiment)
  # Progress lines, sparsity summaries, mask snapshots and the final table (tfmot_rigl.modelgarden.summaries). This is
  # run_experiment unrolled: the reporter starts from the masks of the checkpoint the runner has just restored.
  reporter = summaries.reporter_for_experiment(params, trainer, model_dir, mode)
  runner = train_lib.OrbitExperimentRunner(
      distribution_strategy=strategy, task=task, mode=mode, params=params, model_dir=model_dir, trainer=trainer,
      train_actions=reporter.train_actions, eval_actions=reporter.eval_actions)
  reporter.start()
  try:
    runner.run()
  except RuntimeError as error:  # Model Garden's trainer: "The loss value is NaN ..." / loss above its upper bound
    if 'loss' not in str(error).lower():
      raise
    raise UsageError(f'training diverged: {_config_error(error)}; checkpoints before it are kept in {model_dir}; '
                     'lower the learning rate or the sparsity knobs that seed new weights (grow_init, '
                     'initial_acc_scale), or raise trainer.loss_upper_bound.') from None
  train_utils.save_gin_config(mode, model_dir)


def _check_resume(params, model_dir: str, experiment: str, mode: str = 'train') -> Optional[str]:
  """The checkpoint a restart restores, after checking it may be resumed by this config and is readable."""
  from tfmot_rigl.modelgarden import resume
  try:
    resume.check_restart(params, model_dir, experiment)
    latest = resume.check_latest_checkpoint(model_dir)
    if 'train' in mode:
      resume.check_train_steps(model_dir, latest, params.trainer.train_steps)
    return latest
  except resume.ResumeError as error:
    raise UsageError(str(error)) from None


def _checkpoint_to_evaluate(params, model_dir: str, mode: str) -> Optional[str]:
  """eval refuses a model_dir without a checkpoint (it would score a random model); continuous_eval waits for the
  first one for trainer.continuous_eval_timeout seconds, saying so, then gives up with one line."""
  import tensorflow as tf
  if params.task.init_checkpoint:
    return None  # the task starts from that checkpoint
  if mode != 'continuous_eval':
    raise UsageError(f'--mode={mode} needs a checkpoint in {model_dir} and there is none (it would evaluate a '
                     'randomly initialised model); train first (--mode=train), import one (tfm import-checkpoint), '
                     'or set task.init_checkpoint.')
  timeout = params.trainer.continuous_eval_timeout
  print(f'waiting for the first checkpoint in {model_dir} (written by `tfm train` on that model_dir), for up to '
        f'{timeout} s (trainer.continuous_eval_timeout)...', flush=True)
  deadline = time.monotonic() + timeout
  latest = tf.train.latest_checkpoint(model_dir)
  while not latest and time.monotonic() < deadline:
    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    latest = tf.train.latest_checkpoint(model_dir)
  if not latest:
    raise UsageError(f'no checkpoint appeared in {model_dir} within {timeout} s (trainer.continuous_eval_timeout); '
                     f'start `tfm train --mode=train --model_dir={model_dir}` first, or raise the timeout.')
  return latest


def _weight_shapes(names_and_shapes, attribute: str) -> List[tuple]:
  # 'kernel', 'mask', and TFMOT's 'mask_1', ... for the further masks of one wrapper.
  pattern = re.compile(rf'{attribute}(_\d+)?')
  return sorted(tuple(shape) for name, shape in names_and_shapes
                if pattern.fullmatch(name.split('/')[-1].split(':')[0]))


def _check_checkpoint_fits(trainer, latest: str, model_dir: str) -> None:
  """Refuses a checkpoint of another model (when params.yaml was deleted or edited): other kernels or masks.

  Kernels and masks are compared by shape, so a checkpoint without optimizer slots or step counters (an imported
  one) still fits; restoring it is then what Orbit does anyway.
  """
  import tensorflow as tf
  saved = [(name[:-len('/.ATTRIBUTES/VARIABLE_VALUE')], shape) for name, shape in tf.train.list_variables(latest)
           if name.startswith('model/') and name.endswith('/.ATTRIBUTES/VARIABLE_VALUE')]
  built = [(weight.name, weight.shape.as_list()) for weight in trainer.model.weights]
  for attribute in ('kernel', 'mask'):
    saved_shapes, built_shapes = _weight_shapes(saved, attribute), _weight_shapes(built, attribute)
    if saved_shapes != built_shapes:
      raise UsageError(f'the latest checkpoint {latest} was made for another model ({attribute} shapes '
                       f'{_shape_list(saved_shapes)} there, {_shape_list(built_shapes)} in this config\'s model); '
                       f'pass a new --model_dir, or delete {model_dir} to start fresh.')


def _shape_list(shapes) -> str:
  return ', '.join('x'.join(str(d) for d in shape) for shape in shapes) or 'none'


def main(argv: Optional[List[str]] = None) -> int:
  """`tfm train --experiment=NAME --model_dir=DIR [--mode=...] [--config_file=...] [--params_override=...]`."""
  from absl import logging
  argv = sys.argv[1:] if argv is None else list(argv)
  from tfmot_rigl.cli import console
  if {'-h', '--help', '--helpshort'} & set(argv):
    print(console.train_help())
    return 0
  flags_obj = _parse_flags(argv)
  logging.use_absl_handler()
  try:
    with console.model_garden_logs(argv):  # Orbit's metric dicts: only with --verbosity
      run(flags_obj)
  except KeyboardInterrupt:  # Ctrl-C: where to resume from, not a traceback; 128 + SIGINT, as shells report it
    print(f'tfm train: {run_guards.interrupted_line(flags_obj.model_dir)}', file=sys.stderr)
    return INTERRUPTED_EXIT_CODE
  return 0


def list_experiments(argv: Optional[List[str]] = None) -> int:
  """`tfm experiments`: one line per registered sparse experiment."""
  if argv:
    raise UsageError(f'`tfm experiments` takes no arguments, got {" ".join(argv)!r}.')
  from tfmot_rigl.modelgarden import configs
  width = max(len(name) for name in configs.EXPERIMENTS)
  for name, summary in sorted(configs.EXPERIMENTS.items()):
    print(f'{name:<{width}}  {summary}')
  return 0
