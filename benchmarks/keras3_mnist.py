"""The MNIST recipe of accuracy.py through the Keras 3 API (tfmot_rigl.keras3), on the TensorFlow and JAX backends.

Per backend: RigL, ERK 90%, LeNet-300-100, the recipe of benchmarks/accuracy.py (inputs /255, SGD momentum 0.9, lr 0.1
cosine to 0, batch 128, 20 epochs of 468 steps, ΔT = 100, α = 0.3 cosine, updates end at 75%, new connections at
zero), trained with `model.fit` (jit-compiled step), one row per backend against the tf_keras runs of the same seeds
in docs/results/accuracy.json; and the train-step overhead vs dense: epochs of 468 steps (4-5 mask updates each,
ΔT = 100) of the sparse and the dense model, alternated, median wall per epoch, as a ratio.

Each backend runs in its own process (Keras 3 reads KERAS_BACKEND once, at import).

Usage: python benchmarks/keras3_mnist.py [--backends tensorflow,jax] [--seeds 0,1,2] [--timing_repeats 5]
       python benchmarks/keras3_mnist.py --quick      # smoke run: 30 steps, one seed, short timing
       python benchmarks/keras3_mnist.py --render a.json,b.json   # one table from runs made apart
Writes docs/results/keras3_mnist.md and the raw runs as JSON next to it.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH_SIZE = 128
STEPS_PER_EPOCH = 60000 // BATCH_SIZE


def _worker(args):
  """Runs in a process whose KERAS_BACKEND is set: accuracy runs, then the timing; JSON to stdout's last line."""
  import keras
  from tfmot_rigl import keras3 as sparse
  from tfmot_rigl.data import mnist

  arrays = mnist.load_bundled_mnist()
  train_x = arrays["train_images"].reshape(-1, 784)
  train_y = arrays["train_labels"].astype(np.int32)
  test_x = arrays["test_images"].reshape(-1, 784).astype(np.float32) / 255.0
  epochs, steps_per_epoch, update_frequency = args.epochs, STEPS_PER_EPOCH, 100
  if args.quick:
    epochs, steps_per_epoch, update_frequency = 1, 30, 5

  def lenet(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, activation="relu", name="fc1"),
                             keras.layers.Dense(100, activation="relu", name="fc2"),
                             keras.layers.Dense(10, name="logits")])

  def sparse_model(seed, total):
    algorithm = sparse.RigL(update_frequency=update_frequency, begin_step=0, end_step=0.75, drop_fraction=0.3,
                            drop_fraction_anneal="cosine", grow_init="zeros")
    return sparse.prune_sparse(lenet(seed), algorithm, sparsity=0.9, distribution="erk", seed=seed,
                               total_steps=total)

  def compiled(model, total, is_sparse):
    optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, total), momentum=0.9)
    if is_sparse:
      optimizer = sparse.wrap_optimizer(optimizer, model)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    return model

  def epoch_data(order):
    batches = order.permutation(len(train_y))[:steps_per_epoch * BATCH_SIZE]
    return train_x[batches].astype(np.float32) / 255.0, train_y[batches]

  runs = []
  for seed in args.seeds:
    total = epochs * steps_per_epoch
    model = compiled(sparse_model(seed, total), total, True)
    order = np.random.RandomState(seed)
    start = time.perf_counter()
    for _ in range(epochs):
      x, y = epoch_data(order)
      model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
    wall = time.perf_counter() - start
    logits = model.predict(test_x, batch_size=1000, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == arrays["test_labels"]))
    reached = {name: round(value, 4) for name, value in sparse.sparsities(model).items()}
    runs.append({"seed": seed, "accuracy": accuracy, "steps": total, "wall_s": wall, "kernel_sparsity": reached})
    print(f"{keras.backend.backend()} rigl s=0.9 seed={seed}: {accuracy * 100:.2f}% in {wall:.0f} s", flush=True)

  # Step overhead: whole epochs (with their mask updates) of the sparse and the dense model, alternated.
  timing_total = 10**6  # a window far beyond the timed steps: updates every ΔT throughout
  models = {"dense": compiled(lenet(0), timing_total, False),
            "rigl": compiled(sparse_model(0, timing_total), timing_total, True)}
  order = np.random.RandomState(0)
  x, y = epoch_data(order)
  times = {name: [] for name in models}
  for repeat in range(args.timing_repeats + 1):  # the first round compiles: not counted
    for name, model in models.items():
      start = time.perf_counter()
      model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
      if repeat:
        times[name].append((time.perf_counter() - start) / steps_per_epoch * 1000)
  result = {"backend": keras.backend.backend(), "keras": keras.__version__, "runs": runs, "step_ms": times,
            "epochs": epochs, "steps_per_epoch": steps_per_epoch, "update_frequency": update_frequency}
  print("RESULT " + json.dumps(result), flush=True)


def _reference(seeds):
  """The tf_keras runs of the same recipe and seeds (benchmarks/accuracy.py's JSON), if there."""
  path = os.path.join(HERE, "..", "docs", "results", "accuracy.json")
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    runs = json.load(f)["runs"]
  return {r["seed"]: r["accuracy"] for r in runs if r["method"] == "rigl" and r["sparsity"] == 0.9
          and r["seed"] in seeds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--backends", default="tensorflow,jax")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--epochs", type=int, default=20)
  parser.add_argument("--timing_repeats", type=int, default=5)
  parser.add_argument("--quick", action="store_true", help="smoke run: 30 steps, ΔT = 5, one seed")
  parser.add_argument("--output", help="markdown path (default docs/results/keras3_mnist.md; --quick: a temp dir)")
  parser.add_argument("--render", help="comma-separated JSONs of earlier runs (e.g. one per backend, run in "
                      "parallel): only write their table")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  args.seeds = [int(s) for s in args.seeds.split(",")]
  if args.quick:
    args.seeds, args.timing_repeats = args.seeds[:1], 1
  if args.worker:
    return _worker(args)

  sys.path.insert(0, HERE)
  from _common import quick_output, write_table  # noqa: E402 (imports TensorFlow: after the workers' arguments)

  output = args.output or (quick_output("keras3_mnist") if args.quick else "docs/results/keras3_mnist.md")
  results = []
  for path in args.render.split(",") if args.render else []:
    with open(path, encoding="utf-8") as f:
      results += json.load(f)
  for backend in [] if args.render else args.backends.split(","):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--seeds", ",".join(map(str, args.seeds)),
               "--epochs", str(args.epochs), "--timing_repeats", str(args.timing_repeats)] + (
                   ["--quick"] if args.quick else [])
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
      raise SystemExit(f"{backend} run failed:\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}")
    print("\n".join(line for line in process.stdout.splitlines() if not line.startswith("RESULT ")), flush=True)
    results.append(json.loads(lines[-1][len("RESULT "):]))
  if not args.render:
    with open(os.path.splitext(output)[0] + ".json", "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)

  reference = _reference({r["seed"] for result in results for r in result["runs"]})
  rows = []
  for result in results:
    accuracies = np.array([r["accuracy"] for r in result["runs"]]) * 100
    std = accuracies.std(ddof=1) if len(accuracies) > 1 else 0.0
    tf_keras = np.array([reference[r["seed"]] for r in result["runs"] if r["seed"] in reference]) * 100
    delta = (f"{accuracies.mean() - tf_keras.mean():+.2f} ({tf_keras.mean():.2f})"
             if len(tf_keras) == len(accuracies) and not args.quick else "–")
    dense, rigl = (np.array(result["step_ms"][name]) for name in ("dense", "rigl"))
    per_kernel = " / ".join(f"{np.mean([r['kernel_sparsity'].get(k, 0.0) for r in result['runs']]):.3f}"
                            for k in ("fc1", "fc2", "logits"))
    rows.append([f"Keras {result['keras']}, {result['backend']}", f"{accuracies.mean():.2f} ± {std:.2f}",
                 " ".join(f"{a:.2f}" for a in accuracies), delta, per_kernel,
                 f"{np.median(dense):.2f} ({dense.min():.2f}–{dense.max():.2f})",
                 f"{np.median(rigl):.2f} ({rigl.min():.2f}–{rigl.max():.2f})",
                 f"{np.median(rigl) / np.median(dense):.3f}",
                 f"{np.mean([r['wall_s'] for r in result['runs']]):.0f}"])
  header = ["Keras 3 backend", "RigL ERK 90% test acc % (mean ± std)", "per seed", "Δ vs tf_keras, same seeds (its mean)",
            "fc1 / fc2 / logits sparsity", "dense ms/step (median, range)", "RigL ms/step (median, range)",
            "RigL / dense step", "train s per run"]
  first = results[0]
  seeds = sorted({r["seed"] for result in results for r in result["runs"]})
  notes = [f"{len(seeds)} seed(s) ({','.join(map(str, seeds))}); {first['epochs']} epoch(s) of "
           f"{first['steps_per_epoch']} steps at batch {BATCH_SIZE}; ΔT = {first['update_frequency']}; `model.fit` "
           "with a jit-compiled step (XLA on TensorFlow, jax.jit on JAX). std is the sample standard deviation.",
           "tf_keras reference: the rigl 0.90 runs of the same seeds in docs/results/accuracy.json "
           "(benchmarks/accuracy.py, a custom tf.function loop over tf_keras).",
           f"Step times: {len(first['step_ms']['dense'])} alternated epochs of {first['steps_per_epoch']} steps per model after a "
           "compiling one; the RigL epochs include their mask updates (every ΔT), so the ratio is the amortised "
           "overhead. Wall-clock on a shared 2-core CPU: only ratios within a row mean much."]
  write_table(output, "LeNet-300-100 on MNIST through the Keras 3 API: RigL ERK 90% per backend", header, rows,
              notes)


if __name__ == "__main__":
  main()
