"""`tfm plot --model_dir=DIR [--steps=...] [--output_dir=...]`: PNG pictures of a `tfm train` run.

Reads the sparsity summaries (model_dir/sparsity) and mask snapshots (model_dir/masks) that `tfm train` writes and
draws sparsity per kernel over training, mask turnover per update and the masks at chosen steps
(`tfmot_rigl.plots`). Bad input stops it with one line and exit code 2 before any file is written.
"""
import argparse
import os
from typing import List, Optional

from tfmot_rigl.cli import UsageError
from tfmot_rigl.cli import repeats
from tfmot_rigl.cli import run_checks


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UsageError(f'{message} (tfm plot --help)')


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog='tfm plot', description='Write PNG plots of a tfm train run: sparsity per kernel over '
                   'steps, mask turnover per update and mask images at chosen steps.')
  parser.add_argument('--model_dir', required=True, action=repeats.StoreOnce,
                      help='the --model_dir of a `tfm train` run')
  parser.add_argument('--steps', default=None, action=repeats.StoreOnce,
                      help="comma-separated steps whose recorded masks to draw, or 'all' "
                           '(default: first, middle and last recorded)')
  parser.add_argument('--output_dir', default=None, action=repeats.StoreOnce,
                      help='where the PNGs go (default: MODEL_DIR/plots)')
  return parser


def _parse_steps(text: Optional[str]):
  if text is None or text == 'all':
    return text
  try:
    steps = [int(part) for part in text.split(',') if part.strip()]
  except ValueError:
    raise UsageError(f"--steps={text!r} must be comma-separated step numbers (e.g. 0,3000,6000) or 'all'.") from None
  if not steps or any(step < 0 for step in steps):
    raise UsageError(f"--steps={text!r} must be comma-separated step numbers >= 0 (e.g. 0,3000,6000) or 'all'.")
  return steps


def main(argv: Optional[List[str]] = None) -> int:
  args = _parser().parse_args(argv)
  steps = _parse_steps(args.steps)
  if not os.path.isdir(args.model_dir):
    raise UsageError(f'--model_dir {args.model_dir!r} is not a directory; pass the --model_dir of a tfm train run.')
  output_dir = args.output_dir or os.path.join(args.model_dir, 'plots')
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise UsageError(f'--output_dir {output_dir!r} exists and is not a directory; choose a directory path.')
  run_checks.check_model_dir(output_dir, '--output_dir')  # creatable and writable, checked without writing
  from tfmot_rigl import plots  # TensorFlow and matplotlib load only once the flags are known to be good
  try:
    written = plots.plot_run(args.model_dir, output_dir, steps)
  except ValueError as error:
    raise UsageError(str(error)) from None
  for path in written:
    print(path)
  return 0
