"""`tfm`'s console: its own lines first, TensorFlow's start-up noise dropped, Model Garden's logs on request."""
import dataclasses
import os
import subprocess
import sys

import gin

from tfmot_rigl.cli import console
from tfmot_rigl.cli import main as tfm


def test_train_help_is_this_tools_help_and_names_every_sparsity_field(capsys):
  from tfmot_rigl.modelgarden import configs
  assert tfm.main(['train', '--help']) == 0
  out = capsys.readouterr().out
  assert out.startswith('usage: tfm train --experiment=NAME --model_dir=DIR')
  assert 'task.sparsity.*' in out and 'official.common.flags' not in out
  missing = [field.name for field in dataclasses.fields(configs.SparsityConfig) if field.name not in out]
  assert not missing, missing


def test_startup_noise_is_dropped_and_other_stderr_lines_kept(capfd):
  with console.filtered_stderr():
    os.write(2, b'2026-11-30 10:00:00.000000: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] '
                b'failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n')
    os.write(2, b'a real problem\n')
  assert capfd.readouterr().err == 'a real problem\n'


def test_tfm_report_prints_no_tensorflow_startup_lines():
  result = subprocess.run([sys.executable, '-m', 'tfmot_rigl.cli.main', 'report', '--experiment=mnist_rigl'],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='0'))
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'cuInit' not in result.stderr and 'cpu_feature_guard' not in result.stderr, result.stderr
  assert result.stdout.startswith('## mnist_rigl')


def test_train_output_ends_with_the_summary_table(tmp_path, capsys):
  overrides = ('trainer.train_steps=20,trainer.steps_per_loop=10,trainer.summary_interval=10,'
               'trainer.checkpoint_interval=20,trainer.validation_steps=2,task.train_data.global_batch_size=32,'
               'task.sparsity.update_frequency=5')
  with gin.unlock_config():
    assert tfm.main(['train', '--experiment=mnist_rigl', f'--model_dir={tmp_path}',
                     f'--params_override={overrides}']) == 0
  lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
  assert not any(line.startswith(('train | step', ' eval | step', 'saved checkpoint')) for line in lines), lines
  assert any(line.startswith('sparse | step 20/20') for line in lines)
  assert lines[-1].startswith('training FLOPs so far'), lines[-5:]
  assert console.wants_model_garden_logs(['--verbosity=0']) and not console.wants_model_garden_logs(['--mode=train'])
