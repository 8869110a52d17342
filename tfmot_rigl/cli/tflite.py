"""`tfm tflite`: a stripped sparse SavedModel (from `tfm export`) as a TFLite file (see `tfmot_rigl.export.tflite`).

Prints the file size against a dense float conversion of the same SavedModel, and writes the file only after
checking its outputs against the SavedModel's on a few random inputs (TFLite's builtin kernels) and running it in a
default `tf.lite.Interpreter`. `--sparse --int8` files with fully-connected layers fail in the default interpreter
(its XNNPACK delegate cannot prepare sparse int8 weights): they are refused unless --builtin_kernels_only.
With --sparse it then lists which ops run sparse kernels (FULLY_CONNECTED with block-sparse weights) and which
compute dense, and the `tf.lite.Interpreter(...)` call that runs the file.
"""
import sys
from typing import List, Optional

from tfmot_rigl.cli import UsageError
from tfmot_rigl.cli import export as export_cli

SYNOPSIS = '--saved_model=DIR --output=FILE.tflite [--sparse] [--int8] [--overwrite] [--builtin_kernels_only]'


def define_flags():
  from absl import flags
  flags_obj = export_cli.define_flags()  # --overwrite
  if 'saved_model' not in flags_obj:
    flags.DEFINE_string('saved_model', None, 'SavedModel directory to convert (as written by `tfm export`).')
    flags.DEFINE_string('output', None, 'TFLite file to write (must not exist unless --overwrite).')
    flags.DEFINE_boolean('sparse', False, 'Store sparse kernels in TFLite\'s sparse format '
                         '(tf.lite.Optimize.EXPERIMENTAL_SPARSITY).')
    flags.DEFINE_boolean('int8', False, 'Dynamic-range int8 quantisation of the weights (on top of --sparse).')
    flags.DEFINE_string('signature_key', 'serving_default', 'SavedModel signature to convert.')
    flags.DEFINE_boolean('builtin_kernels_only', False, 'Write the file even if the default tf.lite.Interpreter '
                         '(XNNPACK) cannot run it, for interpreters made with BUILTIN_WITHOUT_DEFAULT_DELEGATES.')
  return flags_obj


def main(argv: Optional[List[str]] = None) -> int:
  """`tfm tflite --saved_model=DIR --output=FILE [--sparse] [--int8]`; exit 1 if the outputs do not match."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if {'-h', '--help', '--helpshort'} & set(argv):
    define_flags()
    print(export_cli.usage('tflite', SYNOPSIS, modules=[sys.modules[__name__]], model_garden_flags=False))
    print('(--overwrite: replace an existing --output.)')
    return 0
  with export_cli.parsed_flags('tflite', argv, define=define_flags, experiment=False) as flags_obj:
    if not flags_obj.saved_model:
      raise UsageError('--saved_model is required: a SavedModel directory written by `tfm export`.')
    if not flags_obj.output:
      raise UsageError('--output is required: the .tflite file to write.')
    from tfmot_rigl.cli import console
    from tfmot_rigl.export import tflite
    try:
      with console.filtered_stderr(console.CONVERTER_NOISE):  # the converter's C++ INFO/WARNING lines
        result = tflite.export_tflite(flags_obj.saved_model, flags_obj.output, sparse=flags_obj.sparse,
                                      int8=flags_obj.int8, overwrite=flags_obj.overwrite,
                                      signature_key=flags_obj.signature_key,
                                      builtin_kernels_only=flags_obj.builtin_kernels_only)
    except tflite.TfliteError as error:
      raise UsageError(str(error)) from None
    except tflite.OutputMismatchError as error:
      print(f'tfm tflite: {error}', file=sys.stderr)
      return 1
  print(result.summary())
  if result.sparse:  # which ops got sparse kernels, which compute dense, and the interpreter that runs the file
    for line in result.op_lines():
      print(f'  {line}')
  return 0
