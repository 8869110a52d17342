"""Model Garden train-step time of the `resnet_rigl` experiment with `runtime.enable_xla` off and on (CPU).

The experiment's own task, optimizer and trainer (`tfmot_rigl.modelgarden.trainer.SparseTrainer`, which `tfm train`
uses) run Orbit's train loop; only the data is replaced by one fixed in-memory batch, so that the input pipeline
(JPEG decoding, augmentation) does not hide the step. A smaller ResNet and image size keep it feasible on a CPU.
Trainers are timed round-robin (one loop of `--steps` steps each, in turn), RigL and dense, XLA off and on; mask
updates fall at the same steps in every sparse trainer (ΔT = 100 as the experiment sets it).
A configuration that fails to build or compile gets one line saying so, and the others are still timed.

Usage: python benchmarks/modelgarden_xla.py [--model_id 18] [--image_size 32] [--batch_size 64] [--steps 25]
       python benchmarks/modelgarden_xla.py --quick      # smoke run: RigL only, mnist_rigl's small MLP, 2 steps
"""
import argparse
import time

import numpy as np

from _common import keras, quick_output, tf, write_table  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from official.core import exp_factory  # noqa: E402
from official.core import train_utils  # noqa: E402

import tfmot_rigl.modelgarden  # noqa: E402,F401  (registers the experiments)
from tfmot_rigl.modelgarden import task as sparse_task  # noqa: E402

try:
  from tfmot_rigl.modelgarden.trainer import SparseTrainer as Trainer  # what `tfm train` uses
except ImportError:  # older checkouts: Model Garden's own trainer (it compiles only with GPUs)
  from official.core.base_trainer import Trainer


class FixedBatchTask(sparse_task.SparseImageClassificationTask):
  """The sparse task with one fixed random batch as its training data, repeated."""

  def build_inputs(self, params, input_context=None):
    size = list(self.task_config.model.input_size)
    batch = params.global_batch_size if input_context is None else input_context.get_per_replica_batch_size(
        params.global_batch_size)
    images = tf.random.stateless_uniform([batch] + size, seed=[0, 1], minval=-1.0, maxval=1.0)
    labels = tf.random.stateless_uniform([batch], seed=[0, 2], maxval=self.task_config.model.num_classes,
                                         dtype=tf.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def experiment(method, xla, args):
  params = exp_factory.get_exp_config(args.experiment)
  if args.experiment == "resnet_rigl":
    backbone = {"resnet": {"model_id": args.model_id, "depth_multiplier": args.depth_multiplier}}
    input_size = [args.image_size, args.image_size, 3]
  else:  # mnist_rigl: its MLP on 28x28 inputs
    backbone, input_size = {"mlp": {"hidden_sizes": args.hidden_sizes}}, [28, 28, 1]
  params.override({
      "runtime": {"enable_xla": xla},
      "task": {"model": {"input_size": input_size, "num_classes": 10, "backbone": backbone},
               "train_data": {"global_batch_size": args.batch_size, "input_path": "unused"},
               "sparsity": {"method": method}},
      "trainer": {"train_steps": 10000, "steps_per_loop": args.steps, "summary_interval": args.steps,
                  "checkpoint_interval": 10000},
  })
  params.validate()
  params.lock()
  return params


def build(method, xla, args):
  params = experiment(method, xla, args)
  keras.utils.set_random_seed(0)
  task = FixedBatchTask(params.task)
  trainer = train_utils.create_trainer(params, task, train=True, evaluate=False, trainer_cls=Trainer)
  compiled = getattr(trainer, "compiles_train_step", False)
  steps = tf.constant(args.steps, tf.int32)

  def run_loop():
    logs = trainer.train(steps)
    return float(logs["training_loss"])

  start = time.perf_counter()
  loss = run_loop()  # trace (and compile) + first loop
  return run_loop, compiled, time.perf_counter() - start, loss


def first_line(error):
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--experiment", choices=["resnet_rigl", "mnist_rigl"], default="resnet_rigl")
  parser.add_argument("--model_id", type=int, default=18, help="ResNet depth (Model Garden's ResNet model_id)")
  parser.add_argument("--depth_multiplier", type=float, default=1.0, help="ResNet width multiplier")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=25, help="steps per timed loop (Orbit's steps_per_loop)")
  parser.add_argument("--rounds", type=int, default=5, help="timed loops per configuration, round-robin")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: RigL only, mnist_rigl's MLP at 784-16-8-10, 2 steps, 1 round")
  parser.add_argument("--output", help="markdown table path (default docs/results/modelgarden_xla.md; --quick: temp)")
  args = parser.parse_args()
  args.hidden_sizes = [300, 100]
  if args.quick:  # the script's whole path on the smallest registered model: tracing a ResNet takes minutes here
    args.experiment, args.hidden_sizes, args.batch_size, args.steps, args.rounds = "mnist_rigl", [16, 8], 4, 2, 1
  output = args.output or (quick_output("modelgarden_xla") if args.quick else "docs/results/modelgarden_xla.md")
  loops, rows, failures = {}, [], []
  for method in ("rigl",) if args.quick else ("rigl", "dense"):
    for xla in (False, True):
      label = f"{method}, XLA {'on' if xla else 'off'}"
      try:
        loop, compiled, first, loss = build(method, xla, args)
      except Exception as error:  # pylint: disable=broad-except  (one line per failed configuration, then go on)
        failures.append(f"FAILED {label}: {first_line(error)}")
        print(failures[-1], flush=True)
        continue
      if xla and not compiled:
        failures.append(f"{label}: this trainer does not compile the step on CPU (XLA not applied).")
        print(failures[-1], flush=True)
      loops[label] = loop
      print(f"{label}: first loop (trace{' + XLA compile' if compiled else ''}) {first:.1f} s, loss {loss:.3f}",
            flush=True)
  times = {label: [] for label in loops}
  for _ in range(args.rounds):
    for label, loop in loops.items():
      try:
        start = time.perf_counter()
        loop()
        times[label].append((time.perf_counter() - start) / args.steps)
      except Exception as error:  # pylint: disable=broad-except
        failures.append(f"FAILED {label} while timing: {first_line(error)}")
        print(failures[-1], flush=True)
        loops[label] = None
    loops = {label: loop for label, loop in loops.items() if loop is not None}
  medians = {label: float(np.median(values)) for label, values in times.items() if values}
  for label, median in medians.items():
    method = label.split(",")[0]
    off = medians.get(f"{method}, XLA off")
    dense = medians.get(f"dense, {label.split(', ')[1]}")
    q1, q3 = np.percentile(times[label], [25, 75]) * 1000
    rows.append([label, f"{median * 1000:.1f}", f"{q1:.1f}–{q3:.1f}", f"{1 / median:.1f}",
                 f"{off / median:.2f}×" if off else "–", f"{median / dense:.3f}" if dense else "–"])
  model = (f"Model Garden ResNet-{args.model_id} (width ×{args.depth_multiplier}), {args.image_size}x{args.image_size}"
           if args.experiment == "resnet_rigl" else f"MLP 784-{'-'.join(map(str, args.hidden_sizes))}-10, 28x28")
  notes = [f"Experiment {args.experiment}: {model}, batch {args.batch_size}, 10 classes; its default sparsity "
           "(resnet_rigl: RigL 80% ERK; mnist_rigl: 90% ERK), ΔT = 100; "
           f"{args.rounds} round-robin loops of {args.steps} steps per configuration after one untimed loop.",
           f"Trainer: {Trainer.__module__}.{Trainer.__name__}."] + failures
  write_table(output, f"Model Garden {args.experiment} train step, runtime.enable_xla off vs on (CPU)",
              ["configuration", "median ms/step", "IQR ms", "steps/s", "speed-up vs XLA off", "vs dense (same XLA)"],
              rows, notes)
  return 0


if __name__ == "__main__":
  main()
