"""What `tfm` prints: the tool's own lines first; TensorFlow's start-up noise and Model Garden's logs on request.

  * TensorFlow's C++ start-up lines that say nothing about the user's run ("failed call to cuInit" on machines
    without a GPU, CPU-feature and cuda-stub notes) are dropped; every other stderr line still comes through.
  * `tfm train` shows its progress lines and summary table; Model Garden's (Orbit's) per-interval metric dicts and
    checkpoint notes go to the absl log, which `--verbosity=0` (or -v 0) prints again, with Model Garden's other
    INFO lines. Without --verbosity, Python warnings logged by TensorFlow are hidden too (ERROR and up still show).
  * `tfm train --help` is this tool's help, not Model Garden's flag dump (`--helpfull` still prints that).
"""
import contextlib
import os
import re
import sys
import tempfile
from typing import Iterable, Sequence

# Start-up lines of TensorFlow's C++ runtime that are not about the user's run.
STARTUP_NOISE = tuple(re.compile(pattern) for pattern in (
    r'failed call to cuInit',
    r'Could not find cuda drivers on your machine',
    r'cpu_feature_guard\.cc',
    r'^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags',
    r'rebuild TensorFlow with the appropriate compiler flags\.$',
    r'Unable to register cu(DNN|FFT|BLAS) factory',
    r'computation placer already registered',
    r'oneDNN custom operations are on',
    r'All log messages before absl::InitializeLog\(\) is called are written to STDERR',
))
# C++ INFO/WARNING lines in absl's format ("W0000 00:00:... file.cc:123] ..."): the TFLite converter's, grappler's.
CONVERTER_NOISE = (re.compile(r'^[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] '),) + STARTUP_NOISE

TRAIN_HELP = """\
usage: tfm train --experiment=NAME --model_dir=DIR [--mode=train_and_eval] [--config_file=FILE.yaml]
                 [--params_override=KEY=VALUE,...] [--verbosity=0]

Trains (and evaluates) a registered sparse experiment with Model Garden's trainer: checkpoints, params.yaml and
TensorBoard summaries in --model_dir; a second run with the same --model_dir resumes from its latest checkpoint.
Prints one progress line per summary interval and a summary table at the end.

flags:
  --experiment       a registered experiment: resnet_rigl, mobilenet_rigl, wrn_cifar10_rigl, mnist_rigl
                     (`tfm experiments` lists them)
  --model_dir        directory for checkpoints, summaries, mask snapshots and params.yaml
  --mode             train_and_eval (default), train, eval or continuous_eval
  --config_file      YAML overrides of the experiment (repeatable), e.g. official_configs/resnet50_rigl_erk_s90_1x.yaml
  --params_override  comma-separated KEY=VALUE overrides, applied after --config_file,
                     e.g. task.sparsity.method=set,task.sparsity.sparsity=0.95,trainer.train_steps=1000
  --verbosity        0 also prints Model Garden's own logs (metric dicts, checkpoint notes, INFO lines)
  --helpfull         every flag of Model Garden's driver (--tpu, --gin_file, ...)

task.sparsity.* (YAML or --params_override):
  method              dense | static | snip | set | rigl | snfs | magnitude
  sparsity            global fraction of zeros over the sparsified kernels, in [0, 1)
  distribution        uniform | er | erk;  erk_power_scale (1.0)
  first_layer_dense   keep the first sparsifiable layer dense (default: true for uniform)
  custom_sparsities   ['layer=sparsity', ...];  exclude: [layer names]
  sparsify_depthwise  also sparsify depthwise kernels (false)
  update_frequency    steps between mask updates (ΔT, 100);  begin_step / end_step: ints or fractions of training
  drop_fraction       fraction of active connections replaced per update (0.3);  drop_fraction_anneal: cosine |
                      constant | exponential_k
  grow_init           zeros | random_normal | random_uniform | initial_dist (RigL also grad_scale, grad_sign)
  initial_acc_scale   RigL: momentum slot of new connections seeded downhill as if it had seen this x gradient (0)
  snfs_momentum       SNFS gradient momentum (0.9)
  block_shape         [b_in, b_out]: Dense/1x1-conv masks in blocks, e.g. [4,1] (TFLite runs them faster); [1,1]
                      unstructured;  block_norm: l1 | l2 (a block's drop score)
  initial_sparsity    set/rigl/snfs: gradual (GraNet-style) pruning from this global sparsity to `sparsity`
                      (null: off);  prune_end: step or fraction of training where the target is reached (0.375)
  initial_mask        random (default) | magnitude (keep each layer's largest |W|, for a pretrained
                      task.init_checkpoint) | checkpoint (the masks of task.init_checkpoint)
  seed                seeds the masks and every random draw of the updates
  total_steps         steps that fractional begin/end refer to (default: trainer.train_steps)
A misspelt key or invalid value stops `tfm train` before anything is written. README.md ("Methods and knobs") and
docs/semantics.md give the exact meaning of each.
"""


# Ends `tfm train --help`: overrides that shrink every registered experiment (tests/test_cli_train.py runs them on
# each one, as written here).
SMOKE_RUN_HELP = """
smoke run: any experiment shrunk (input size, batch sizes, steps, intervals, and a small member of its model family:
the backbone.* items; leave those out to try the full-size model) to check a setup in a minute before the real run.
Add your data paths (task.train_data.input_path=... or tfds_data_dir=..., the same for validation_data); for
mnist_rigl leave out task.model.input_size (MNIST images are 28x28x1):
  tfm train --experiment=resnet_rigl --model_dir=/tmp/smoke --params_override="task.model.input_size=[32,32,3],\\
task.train_data.global_batch_size=4,task.validation_data.global_batch_size=4,trainer.train_steps=2,\\
trainer.steps_per_loop=1,trainer.summary_interval=1,trainer.checkpoint_interval=2,trainer.validation_interval=2,\\
trainer.validation_steps=1,task.sparsity.update_frequency=1,task.model.backbone.resnet.model_id=10,\\
task.model.backbone.resnet.depth_multiplier=0.0625,task.model.backbone.mobilenet.filter_size_scale=0.25,\\
task.model.backbone.wide_resnet.depth=10,task.model.backbone.wide_resnet.width_multiplier=1"
"""


def train_help() -> str:
  return TRAIN_HELP + SMOKE_RUN_HELP


@contextlib.contextmanager
def filtered_stderr(drop: Iterable[re.Pattern] = STARTUP_NOISE):
  """Captures file descriptor 2 (where TensorFlow's C++ runtime writes) and passes on the lines not in `drop`.

  Python's own stderr writes inside the block are captured too and replayed, in order, when it ends.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      kept = [line for line in capture.read().decode(errors='replace').splitlines(keepends=True)
              if not any(pattern.search(line) for pattern in drop)]
      if kept:
        sys.stderr.write(''.join(kept))
        sys.stderr.flush()


def start_tensorflow() -> None:
  """Imports TensorFlow and initialises its devices with the start-up noise dropped (see STARTUP_NOISE)."""
  with filtered_stderr(STARTUP_NOISE):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()


@contextlib.contextmanager
def command_output(argv: Sequence[str]):
  """Around one `tfm` subcommand: TensorFlow started quietly, the library's notes held back.

  The library's one-line notes (logger "tfmot_rigl": layers left dense, short update windows) are for API users;
  the commands say what matters in their own output (`tfm report` lists the kernels left dense), and an error
  stays one line. Help needs neither, and stays fast.
  """
  if {'-h', '--help', '--helpshort'} & set(argv):
    yield
    return
  import logging  # pylint: disable=g-import-not-at-top
  notes = logging.getLogger('tfmot_rigl')
  level = notes.level
  notes.setLevel(logging.ERROR)
  try:
    start_tensorflow()
    yield
  finally:
    notes.setLevel(level)


def wants_model_garden_logs(argv: Sequence[str]) -> bool:
  return any(arg == '-v' or arg.startswith(('--verbosity', '-v=')) for arg in argv)


@contextlib.contextmanager
def model_garden_logs(argv: Sequence[str]):
  """Inside: Orbit's metric dicts and checkpoint notes go to the absl log only, unless --verbosity was given."""
  if wants_model_garden_logs(argv):
    yield
    return
  from absl import logging  # pylint: disable=g-import-not-at-top
  from official.core import train_utils  # pylint: disable=g-import-not-at-top
  from orbit import controller  # pylint: disable=g-import-not-at-top
  printing_log, level = controller._log, logging.get_verbosity()  # pylint: disable=protected-access
  count_flops = train_utils.try_count_flops

  def quiet_count_flops(*args, **kwargs):
    # Model Garden counts FLOPs with TF's profiler after the run; grappler then logs C++ INFO lines to stderr,
    # below the summary table. (The count itself goes to the absl log.)
    with filtered_stderr(CONVERTER_NOISE):
      return count_flops(*args, **kwargs)

  controller._log = logging.info  # pylint: disable=protected-access
  train_utils.try_count_flops = quiet_count_flops
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    controller._log = printing_log  # pylint: disable=protected-access
    train_utils.try_count_flops = count_flops
    logging.set_verbosity(level)
