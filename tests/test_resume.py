"""Exact resume: `tfm train` killed with SIGKILL after a checkpoint and started again on the same model_dir ends with
every checkpointed tensor (weights, masks, optimizer slots, algorithm state, step) bit-identical to an uninterrupted
run with the same config.

It holds because the run has one seed (weight initialisation, data order, mask draws: `task.sparsity.seed`), the
training input continues at the restored step instead of replaying the data (`tfmot_rigl.modelgarden.inputs`), and
masks, slots and the step are checkpointed. The uninterrupted run and the one that gets killed run side by side.
"""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_STEPS = 300
CHECKPOINT_INTERVAL = 50
# Small and fast, with a mask update every 10 steps until step 225 (end_step 0.75).
CONFIG = ('task.model.backbone.mlp.hidden_sizes=[32,16],task.train_data.global_batch_size=32,'
          'task.train_data.shuffle_buffer_size=2000,trainer.steps_per_loop=10,trainer.summary_interval=10,'
          f'trainer.checkpoint_interval={CHECKPOINT_INTERVAL},task.sparsity.update_frequency=10,'
          f'trainer.train_steps={TRAIN_STEPS},task.monitoring.record_masks_every=0,task.sparsity.seed=7')


def start_train(model_dir, method):
  return subprocess.Popen(
      [sys.executable, '-m', 'tfmot_rigl.cli.main', 'train', '--experiment=mnist_rigl', f'--model_dir={model_dir}',
       '--mode=train', f'--params_override={CONFIG},task.sparsity.method={method}'],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def finish(process, timeout=300):
  output, _ = process.communicate(timeout=timeout)
  assert process.returncode == 0, output[-3000:]
  return output


def checkpoint_step(model_dir):
  latest = tf.train.latest_checkpoint(model_dir)
  return int(latest.rsplit('-', 1)[1]) if latest else 0


def kill_after_first_checkpoint(process, model_dir, timeout=300):
  """SIGKILL as soon as a checkpoint after step 0 is complete (its `checkpoint` state file names it)."""
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if os.path.isdir(model_dir) and 0 < checkpoint_step(model_dir) < TRAIN_STEPS:
      os.kill(process.pid, signal.SIGKILL)
      process.communicate()
      return checkpoint_step(model_dir)
    time.sleep(0.01)
  output = process.communicate()[0] if process.poll() is not None else ''
  pytest.fail(f'no intermediate checkpoint to kill after: {output[-3000:]}')


def checkpoint_tensors(model_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if not name.startswith('_CHECKPOINTABLE_OBJECT_GRAPH')}


@pytest.mark.parametrize('method', ['rigl', 'set'])
def test_sigkill_then_restart_ends_bit_identical_to_an_uninterrupted_run(method, tmp_path):
  uninterrupted_dir, killed_dir = str(tmp_path / 'uninterrupted'), str(tmp_path / 'killed')
  uninterrupted = start_train(uninterrupted_dir, method)
  victim = start_train(killed_dir, method)
  killed_at = kill_after_first_checkpoint(victim, killed_dir)
  assert victim.returncode == -signal.SIGKILL
  assert 0 < killed_at < TRAIN_STEPS
  output = finish(start_train(killed_dir, method))
  # It resumed, not restarted: its first progress line is one loop (10 steps) after the restored checkpoint.
  first_step = int(re.search(r'^sparse \| step +(\d+)/', output, re.MULTILINE).group(1))
  assert first_step == killed_at + 10, output[-3000:]
  finish(uninterrupted)

  expected, resumed = checkpoint_tensors(uninterrupted_dir), checkpoint_tensors(killed_dir)
  assert sorted(resumed) == sorted(expected)
  assert int(resumed['global_step/.ATTRIBUTES/VARIABLE_VALUE']) == TRAIN_STEPS
  masks = [name for name in expected if '/mask/' in name]
  assert len(masks) >= 2
  assert 'last mask update 220' in output  # mask updates ran after the restart too (every 10 steps until 225)
  different = [name for name in expected if not np.array_equal(expected[name], resumed[name])]
  assert not different, f'{len(different)} tensors differ after resuming at step {killed_at}: {different[:5]}'
