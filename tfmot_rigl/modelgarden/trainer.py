"""`SparseTrainer`: Model Garden's trainer, with `runtime.enable_xla` honoured on one CPU device too.

Model Garden compiles the task's train step with XLA only when `runtime.enable_xla` is on and GPUs are used (and TPUs
compile everything). The sparse train step — forward, backward, weight update and, at update steps, every layer's
mask update — compiles as a whole, so this trainer also compiles it on a single CPU device (OneDeviceStrategy or no
strategy), where users check a config before a long accelerator run. MirroredStrategy over CPUs is left as Model
Garden leaves it: its cross-replica `merge_call` cannot run inside a compiled step.
"""
import tensorflow as tf
from official.core import base_trainer


def compiles_on_cpu(params, strategy) -> bool:
  """Whether `SparseTrainer` compiles the step where Model Garden's trainer would not (XLA on, one CPU device)."""
  if not params.runtime.enable_xla or params.runtime.num_gpus > 0:
    return False
  # No strategy (the default one) or OneDeviceStrategy: one replica, no cross-replica merge_call in the step.
  return isinstance(strategy, tf.distribute.OneDeviceStrategy) or not tf.distribute.has_strategy()


class SparseTrainer(base_trainer.Trainer):
  """The stock trainer; with XLA on and one CPU device, the task's train step is compiled (jit_compile=True)."""

  def __init__(self, config, task, model, optimizer, *args, **kwargs):
    super().__init__(config, task, model, optimizer, *args, **kwargs)
    self._compiled_task_step = None
    if compiles_on_cpu(config, self.strategy):
      self._compiled_task_step = tf.function(self.task.train_step, jit_compile=True)

  @property
  def compiles_train_step(self) -> bool:
    return self._compiled_task_step is not None

  def train_step(self, iterator):
    if self._compiled_task_step is None:
      return super().train_step(iterator)

    def step_fn(inputs):
      logs = self._compiled_task_step(inputs, model=self.model, optimizer=self.optimizer,
                                      metrics=self.train_metrics)
      self._train_loss.update_state(logs[self.task.loss])
      self.global_step.assign_add(1)

    inputs = self.next_train_inputs(iterator)
    self.strategy.run(step_fn, args=(inputs,), options=self._runtime_options)
