"""`tfm`: the tfmot-rigl command line, a dispatcher over subcommands.

Each subcommand is one row of COMMANDS: its name, the `module:function` implementing it, and a one-line summary.
The function takes the arguments after the subcommand name and returns an exit code; it raises
`tfmot_rigl.cli.UsageError` for bad input, which `tfm` prints as one line on stderr with exit code 2. Modules are
imported only when their subcommand runs, so `tfm --help` stays instant.
"""
import importlib
import os
import sys
from typing import List, Optional

# TFMOT supports Keras 2 only; this must be set before TensorFlow is first imported by any subcommand.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
# TensorFlow's C++ INFO/WARNING start-up lines (oneDNN, CPU features) would bury the command's own output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from tfmot_rigl.cli import UsageError  # noqa: E402

COMMANDS = {
    'train': ('tfmot_rigl.cli.train:main', 'train / evaluate a registered experiment (Model Garden flags)'),
    'experiments': ('tfmot_rigl.cli.train:list_experiments', 'list the registered sparse experiments'),
    'export': ('tfmot_rigl.cli.export:main', 'stripped sparse serving SavedModel from a `tfm train` checkpoint'),
    'tflite': ('tfmot_rigl.cli.tflite:main', 'TFLite file (--sparse, --int8) from a SavedModel, size and output check'),
    'report': ('tfmot_rigl.cli.report:main', 'per-layer sparsity, inference/training FLOPs and size vs dense'),
    'plot': ('tfmot_rigl.cli.plot:main', 'PNG plots of a run: sparsity over steps, mask turnover, mask images'),
    'import-checkpoint': ('tfmot_rigl.cli.import_checkpoint:main',
                          'published RigL TF1 checkpoint (ResNet-50, MobileNet) -> Model Garden model_dir'),
}

USAGE_EXIT_CODE = 2


def usage() -> str:
  width = max(len(name) for name in COMMANDS)
  lines = ['usage: tfm <command> [flags]', '', 'commands:']
  lines += [f'  {name:<{width}}  {summary}' for name, (_, summary) in COMMANDS.items()]
  lines += ['', 'Run `tfm <command> --help` for the flags of one command.']
  return '\n'.join(lines)


def _command(name: str):
  module_name, function_name = COMMANDS[name][0].split(':')
  return getattr(importlib.import_module(module_name), function_name)


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ('-h', '--help', 'help'):
    print(usage())
    return 0 if argv else USAGE_EXIT_CODE
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"tfm: error: unknown command {name!r}; use one of {', '.join(COMMANDS)} (tfm --help).", file=sys.stderr)
    return USAGE_EXIT_CODE
  from tfmot_rigl.cli import console
  try:
    with console.command_output(rest):  # no TensorFlow start-up noise (e.g. cuInit on machines without a GPU)
      return _command(name)(rest) or 0
  except UsageError as error:
    print(f'tfm {name}: error: {error}', file=sys.stderr)
    return USAGE_EXIT_CODE


if __name__ == '__main__':
  sys.exit(main())
