"""Train-step time of sparse methods relative to dense, measured side by side in one process.

Each configuration gets its own compiled train step; steps are timed round-robin (one step of each configuration in
turn, repeated) so that machine noise hits all of them alike. Reported: median step time, its interquartile range,
and the ratio of medians to dense. "rigl every step" sets ΔT = 1 so that every timed step is a mask update: it is
the cost of one update; with ΔT = 100 an update is 1% of steps.

Usage: python benchmarks/step_overhead.py [--repeats 200] [--output docs/results/step_overhead.md]
"""
import argparse
import time

import numpy as np

from _common import keras, lenet_300_100, tf, write_table

import tfmot_rigl  # noqa: E402


def wide_resnet(seed=0):
  from tfmot_rigl.modelgarden import backbones  # noqa: F401  (registers the backbone)
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((32, 32, 3))
  features = backbones.WideResNetBackbone(depth=16, width_multiplier=2, input_specs=keras.layers.InputSpec(
      shape=[None, 32, 32, 3]))(inputs)
  x = keras.layers.GlobalAveragePooling2D()(features[max(features)])
  return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def make_step(build, method, frequency, batch):
  model = build()
  optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
  if method != "dense":
    algorithm = tfmot_rigl.make_algorithm(method, update_frequency=frequency, begin_step=0, end_step=10**9)
    model = tfmot_rigl.prune_sparse(model, algorithm, sparsity=0.9, distribution="erk")
    optimizer = tfmot_rigl.wrap_optimizer(optimizer, model)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  x, y = batch

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss

  for _ in range(3):  # trace and warm up
    step().numpy()
  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=200)
  parser.add_argument("--output", default="docs/results/step_overhead.md")
  args = parser.parse_args()
  configs = [("dense", "dense", 1), ("static", "static", 1), ("set, ΔT=100", "set", 100),
             ("rigl, ΔT=100", "rigl", 100), ("rigl every step (ΔT=1)", "rigl", 1), ("snfs, ΔT=100", "snfs", 100)]
  rows = []
  for model_name, build, shape in [("LeNet-300-100, batch 100", lenet_300_100, (100, 28, 28, 1)),
                                   ("WRN-16-2 32x32, batch 32", wide_resnet, (32, 32, 32, 3))]:
    rng = np.random.RandomState(0)
    batch = (tf.constant(rng.rand(*shape).astype("float32")), tf.constant(rng.randint(0, 10, shape[0])))
    steps = {label: make_step(build, method, freq, batch) for label, method, freq in configs}
    times = {label: [] for label in steps}
    for _ in range(args.repeats):
      for label, step in steps.items():
        start = time.perf_counter()
        step().numpy()
        times[label].append(time.perf_counter() - start)
    dense = np.median(times["dense"])
    for label, values in times.items():
      q1, med, q3 = np.percentile(values, [25, 50, 75]) * 1000
      rows.append([model_name, label, f"{med:.2f}", f"{q1:.2f}–{q3:.2f}", f"{np.median(values) / dense:.2f}"])
  write_table(args.output, "Train-step time relative to dense (90% ERK, SGD momentum, CPU)",
              ["model", "configuration", "median ms/step", "IQR ms", "ratio to dense"], rows,
              [f"{args.repeats} timed steps per configuration, round-robin, after 3 warm-up steps.",
               "Sparse kernels are stored dense with a mask (as TFMOT does), so sparse training saves no time on "
               "CPU; the ratio is the cost of masking and of the mask updates."])


if __name__ == "__main__":
  main()
