"""Every method on LeNet-300-100 / real MNIST at one sparsity: accuracy, sparsity, FLOPs, size, wall time.

Usage: python benchmarks/mnist_methods.py [--epochs 3] [--sparsity 0.9] [--output docs/results/mnist_methods.md]
"""
import argparse
import time

from _common import keras, lenet_300_100, tf, write_table  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

import tfmot_rigl  # noqa: E402
from tfmot_rigl.data import mnist  # noqa: E402
from tfmot_rigl.keras import accounting  # noqa: E402


def run(method, sparsity, epochs, batch_size, seed):
  steps_per_epoch = 60000 // batch_size
  total = steps_per_epoch * epochs
  train = mnist.mnist_dataset("train").shuffle(60000, seed=seed).batch(batch_size, drop_remainder=True)
  test = mnist.mnist_dataset("test").batch(1000)
  model = lenet_300_100(seed)
  algorithm = tfmot_rigl.make_algorithm(method, update_frequency=100, end_step=0.75)
  model = tfmot_rigl.prune_sparse(model, algorithm, sparsity=sparsity, distribution="erk", seed=seed,
                                  total_steps=total)
  optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, total), momentum=0.9)
  if tfmot_rigl.sparse_wrappers(model):
    optimizer = tfmot_rigl.wrap_optimizer(optimizer, model)
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
  start = time.perf_counter()
  model.fit(train, epochs=epochs, verbose=0)
  wall = time.perf_counter() - start
  _, acc = model.evaluate(test, verbose=0)
  report = accounting.report(model, method=method, steps=total, batch_size=batch_size)
  t = report["totals"]
  return [method, f"{acc * 100:.2f}", f"{t['kernel_sparsity']:.3f}", f"{t['flops_ratio']:.3f}",
          f"{t['size_ratio']:.3f}", f"{report['training']['flops_ratio']:.3f}", f"{wall:.0f}"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--sparsity", type=float, default=0.9)
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--methods", default="dense,static,set,rigl,snfs,snip,magnitude")
  parser.add_argument("--output", default="docs/results/mnist_methods.md")
  args = parser.parse_args()
  rows = [run(m, args.sparsity, args.epochs, args.batch_size, args.seed) for m in args.methods.split(",")]
  write_table(args.output, f"LeNet-300-100 on MNIST, {args.sparsity:.0%} ERK, {args.epochs} epochs, one seed",
              ["method", "test acc %", "kernel sparsity", "inference FLOPs vs dense", "size vs dense",
               "training FLOPs vs dense", "wall s"], rows,
              ["One seed per method: differences under ~0.2 points are within seed noise on MNIST.",
               "Training FLOPs follow REFERENCE.md (RigL: (3 f_S ΔT + 2 f_S + f_D)/(ΔT + 1); magnitude: 3 f_D x mean "
               "density)."])


if __name__ == "__main__":
  main()
