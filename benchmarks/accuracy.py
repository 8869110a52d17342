"""Test accuracy of every method on LeNet-300-100 / MNIST with one fixed recipe, over seeds: mean ± std.

Recipe (issue 11): inputs /255, SGD momentum 0.9, learning rate 0.1 with cosine decay to 0, batch 128, 20 epochs of
468 steps (the last partial batch of each epoch dropped), all three kernels sparsified, ΔT = 100, α = 0.3 with cosine
anneal, updates end at 75% of training, new connections start at zero; magnitude pruning (TFMOT's PolynomialDecay)
from 10% to 75% of training, every 100 steps; rigl_gradual is that RigL with initial_sparsity 0.5 and prune_end at
37.4% of training (step 3500 of 9360). Layer sparsities follow ERK. Each seed seeds the initial weights, the
masks, the updates' randomness and the order of the training examples, so two runs with the same seed and code see
the same data in the same order.

Usage: python benchmarks/accuracy.py [--seeds 0,1,2] [--sparsities 0.8,0.9,0.95,0.98] [--jobs 1]
       python benchmarks/accuracy.py --quick        # smoke run: 30 steps, one seed, dense and RigL
Writes a markdown table (docs/results/accuracy.md) and the raw runs as JSON next to it; `--baseline OLD.json` adds
the change in mean accuracy against an earlier run of this script (e.g. on the code before a change).
"""
import argparse
import json
import os
import time

import numpy as np

from _common import keras, lenet_300_100, quick_output, run_tasks, tf, write_table

import tfmot_rigl  # noqa: E402
from tfmot_rigl.data import mnist  # noqa: E402
from tfmot_rigl.keras import accounting  # noqa: E402

BATCH_SIZE = 128
STEPS_PER_EPOCH = 60000 // BATCH_SIZE  # 468: the last partial batch is dropped
METHODS = ("dense", "static", "set", "snfs", "snip", "rigl", "magnitude", "rigl_gradual")
# rigl_gradual (issue 19): RigL whose layers start at the ERK sparsities of 0.5 and are pruned on the cubic schedule
# to their targets by 3500 of the 9360 steps (37.4% of training), drop/grow going on every ΔT.
GRADUAL_START, GRADUAL_PRUNE_END = 0.5, 3500 / 9360
KERNELS = ("fc1", "fc2", "logits")


def algorithm_for(method, update_frequency, block_shape=(1, 1)):
  if method == "rigl_gradual":
    return tfmot_rigl.make_algorithm("rigl", update_frequency=update_frequency, begin_step=0, end_step=0.75,
                                     drop_fraction=0.3, drop_fraction_anneal="cosine", grow_init="zeros",
                                     block_shape=block_shape, initial_sparsity=GRADUAL_START,
                                     prune_end=GRADUAL_PRUNE_END)
  if method == "magnitude":
    return tfmot_rigl.make_algorithm("magnitude", update_frequency=update_frequency, begin_step=0.1, end_step=0.75,
                                     block_shape=block_shape)
  return tfmot_rigl.make_algorithm(method, update_frequency=update_frequency, begin_step=0, end_step=0.75,
                                   drop_fraction=0.3, drop_fraction_anneal="cosine", grow_init="zeros",
                                   block_shape=block_shape)


def kernel_sparsities(model):
  """{kernel: fraction of zeros in its mask} at the end of training (0 for kernels left unwrapped, e.g. dense).

  Read from the masks, not from the weights: a connection grown with value 0 can keep an exactly-zero weight (its
  input pixel is always 0 on MNIST's border), yet it is active and counted as such.
  """
  reached = {name: 0.0 for name in KERNELS}
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    for _, mask, _ in wrapper.pruning_vars:
      reached[wrapper.layer.name] = float(1.0 - np.mean(mask.numpy()))
  return reached


def train_and_evaluate(method, sparsity, seed, epochs, steps_per_epoch, update_frequency, model_fn=lenet_300_100,
                       block_shape=(1, 1), keep_model=False):
  """One run of the recipe; returns a dict with test accuracy, per-kernel sparsity and wall time.

  `model_fn(seed)` builds the network (LeNet-300-100 by default); `block_shape` is the algorithm's; with
  `keep_model` the trained (still wrapped) model is returned under "model".
  """
  arrays = mnist.load_bundled_mnist()
  images, labels = tf.constant(arrays["train_images"]), tf.constant(arrays["train_labels"].astype(np.int32))
  total = epochs * steps_per_epoch
  model = model_fn(seed)
  optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, total), momentum=0.9)
  if method != "dense":
    model = tfmot_rigl.prune_sparse(model, algorithm_for(method, update_frequency, block_shape), sparsity=sparsity,
                                    distribution="erk", seed=seed, total_steps=total)
    optimizer = tfmot_rigl.wrap_optimizer(optimizer, model)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def train_step(indices):
    x = tf.cast(tf.gather(images, indices), tf.float32)[..., None] / 255.0
    y = tf.gather(labels, indices)
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss

  @tf.function
  def train_epoch(batches):  # one compiled loop over the epoch's [steps, batch] example indices
    loss = tf.constant(0.0)
    for step in tf.range(tf.shape(batches)[0]):
      loss = train_step(batches[step])
    return loss

  order = np.random.RandomState(seed)
  start = time.perf_counter()
  for _ in range(epochs):
    batches = order.permutation(len(arrays["train_labels"]))[:steps_per_epoch * BATCH_SIZE]
    loss = float(train_epoch(tf.constant(batches.reshape(steps_per_epoch, BATCH_SIZE).astype(np.int32))))
  wall = time.perf_counter() - start
  if not np.isfinite(loss):
    raise RuntimeError(f"{method} at sparsity {sparsity}, seed {seed}: training diverged (loss {loss})")
  test_images = tf.constant(arrays["test_images"], tf.float32)[..., None] / 255.0
  logits = model.predict(test_images, batch_size=1000, verbose=0)
  accuracy = float(np.mean(np.argmax(logits, axis=1) == arrays["test_labels"]))
  run = {"method": method, "sparsity": sparsity, "seed": seed, "steps": total, "accuracy": accuracy,
         "kernel_sparsity": kernel_sparsities(model), "wall_s": wall}
  if keep_model:
    run["model"] = model
  return run


def training_flops(method, sparsity, steps, update_frequency, model_fn=lenet_300_100):
  """(training FLOPs of one run, those of dense training) by tfmot_rigl's accounting; rigl_gradual's summed step by
  step over its density schedule, magnitude's over TFMOT's, the others by the paper's formulas."""
  model = model_fn(0)
  if method == "dense":
    report = accounting.report(model, "dense", steps=steps, batch_size=BATCH_SIZE)
  else:
    algorithm = algorithm_for(method, update_frequency)
    sparse = tfmot_rigl.prune_sparse(model, algorithm, sparsity=sparsity, distribution="erk", total_steps=steps)
    # Masks that start dense (magnitude before pruning, SNIP before its one shot) are counted at their targets.
    targets = tfmot_rigl.model_sparsities(model, sparsity, "erk") if method in ("magnitude", "snip") else None
    report = accounting.report(sparse, algorithm, steps=steps, batch_size=BATCH_SIZE, sparsities=targets)
  return report["training"]["total_flops"], report["training"]["dense_total_flops"]


def _run_alone(config):
  """One run in a worker process of --jobs: one thread each, so that parallel runs do not fight over cores."""
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  return _run_here(config)


def _run_here(config):
  run = train_and_evaluate(*config)
  print(f"{config[0]} s={config[1]} seed={config[2]}: {run['accuracy'] * 100:.2f}% in {run['wall_s']:.0f} s",
        flush=True)
  return run


def _mean_std(values):
  values = np.asarray(values) * 100
  return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def summarize(runs, baseline=None, flops=None):
  """Table rows, one per (method, sparsity), and the largest accuracy loss against `baseline` runs (or None).

  `flops`: {(method, sparsity): (training FLOPs, dense training FLOPs)} adds those columns."""
  groups = {}
  for run in runs:
    groups.setdefault((run["method"], run["sparsity"]), []).append(run)
  old = {}
  for run in baseline or []:
    old.setdefault((run["method"], run["sparsity"]), {})[run["seed"]] = run["accuracy"]
  rows, worst = [], None
  for (method, sparsity), group in sorted(groups.items(), key=lambda item: (METHODS.index(item[0][0]), item[0][1])):
    group.sort(key=lambda r: r["seed"])
    accuracies = [r["accuracy"] for r in group]
    per_kernel = " / ".join(f"{np.mean([r['kernel_sparsity'][k] for r in group]):.3f}" for k in KERNELS)
    row = [method, "–" if method == "dense" else f"{sparsity:.2f}", _mean_std(accuracies),
           " ".join(f"{a * 100:.2f}" for a in accuracies), per_kernel, f"{np.mean([r['wall_s'] for r in group]):.0f}"]
    if flops is not None:
      total, dense = flops[(method, sparsity)]
      row += [f"{total:.3e}", f"{total / dense:.3f}"]
    if baseline is not None:
      before = [old.get((method, sparsity), {}).get(r["seed"]) for r in group]
      if None in before:
        row.append("no baseline")
      else:
        delta = (np.mean(accuracies) - np.mean(before)) * 100
        worst = delta if worst is None else min(worst, delta)
        row.append(f"{delta:+.2f}")
    rows.append(row)
  return rows, worst


def gradual_targets(runs, flops):
  """Issue 19's targets, met or missed, where rigl_gradual and magnitude both ran at 0.9 / 0.98 (means over seeds)."""
  means = {}
  for run in runs:
    means.setdefault((run["method"], run["sparsity"]), []).append(run["accuracy"] * 100)
  lines = []
  for sparsity, slack, flops_cap in ((0.98, 0.0, 0.35), (0.9, 0.10, 0.5)):
    gradual, magnitude = means.get(("rigl_gradual", sparsity)), means.get(("magnitude", sparsity))
    if not gradual or not magnitude:
      continue
    gap = np.mean(gradual) - np.mean(magnitude)
    ratio = flops[("rigl_gradual", sparsity)][0] / flops[("magnitude", sparsity)][0]
    lines.append(f"Issue 19 at {sparsity:g}: rigl_gradual {np.mean(gradual):.2f} vs magnitude {np.mean(magnitude):.2f} "
                 f"({gap:+.2f} points, target >= {-slack + 0.0:+.2f}: {'met' if gap >= -slack - 1e-9 else 'MISSED'}; "
                 f"{len(gradual)} vs {len(magnitude)} seeds); training FLOPs {ratio:.3f}x magnitude's (target <= "
                 f"{flops_cap}: {'met' if ratio <= flops_cap else 'MISSED'}).")
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--sparsities", default="0.8,0.9,0.95,0.98")
  parser.add_argument("--methods", help=f"comma-separated, default {','.join(METHODS)} (--quick: dense,rigl)")
  parser.add_argument("--epochs", type=int, default=20)
  parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (each gets its own TF)")
  parser.add_argument("--baseline", help="JSON written by an earlier run of this script, to compare against")
  parser.add_argument("--resume", action="store_true", help="keep the runs already in the JSON, do the rest")
  parser.add_argument("--render_only", action="store_true", help="only write the table of the runs in the JSON")
  parser.add_argument("--quick", action="store_true", help="smoke run: 30 steps, ΔT = 5, one seed, dense and RigL")
  parser.add_argument("--output", help="markdown table path (default docs/results/accuracy.md; --quick: a temp dir)")
  args = parser.parse_args()
  methods = args.methods.split(",") if args.methods else list(METHODS)
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    parser.error(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  sparsities = [float(s) for s in args.sparsities.split(",")]
  epochs, steps_per_epoch, update_frequency = args.epochs, STEPS_PER_EPOCH, 100
  if args.quick:
    seeds, sparsities, methods = seeds[:1], [0.9], methods if args.methods else ["dense", "rigl"]
    epochs, steps_per_epoch, update_frequency = 1, 30, 5
  output = args.output or (quick_output("accuracy") if args.quick else "docs/results/accuracy.md")
  runs_path = os.path.splitext(output)[0] + ".json"
  # Seed-major order, so that a partial run has every (method, sparsity) cell at the first seeds.
  # Dense does not depend on the sparsity: one run per seed.
  configs = [(method, 0.0 if method == "dense" else sparsity, seed, epochs, steps_per_epoch, update_frequency)
             for seed in seeds for method in methods
             for sparsity in ([sparsities[0]] if method == "dense" else sparsities)]
  runs, previous_wall = [], 0.0
  if (args.resume or args.render_only) and os.path.exists(runs_path):
    with open(runs_path, encoding="utf-8") as f:
      saved = json.load(f)
    runs, previous_wall = saved["runs"], saved.get("total_wall_s", 0.0)
  done = {(r["method"], r["sparsity"], r["seed"], r["steps"]) for r in runs}
  todo = [] if args.render_only else [c for c in configs if (c[0], c[1], c[2], c[3] * c[4]) not in done]
  start = time.perf_counter()

  def save(run):
    runs.append(run)
    os.makedirs(os.path.dirname(runs_path) or ".", exist_ok=True)
    with open(runs_path, "w", encoding="utf-8") as f:
      json.dump({"runs": runs, "total_wall_s": previous_wall + time.perf_counter() - start}, f, indent=1)

  run_tasks(_run_alone if args.jobs > 1 else _run_here, todo, args.jobs, save)
  total_wall = previous_wall + time.perf_counter() - start
  wanted = {(c[0], c[1], c[2], c[3] * c[4]) for c in configs}
  runs = [r for r in runs if (r["method"], r["sparsity"], r["seed"], r["steps"]) in wanted]
  seeds = sorted({r["seed"] for r in runs})
  baseline = None
  if args.baseline:
    with open(args.baseline, encoding="utf-8") as f:
      baseline = json.load(f)["runs"]
  steps = epochs * steps_per_epoch
  flops = {(r["method"], r["sparsity"]): training_flops(r["method"], r["sparsity"], steps, update_frequency)
           for r in runs}
  rows, worst = summarize(runs, baseline, flops)
  header = ["method", "sparsity (ERK)", "test acc % (mean ± std)", "per seed", "fc1 / fc2 / logits sparsity",
            "train s per run", "training FLOPs", "× dense training"] + (
                ["Δ mean acc vs baseline"] if baseline is not None else [])
  notes = [f"{len(seeds)} seed(s) ({','.join(map(str, seeds))}); {epochs} epoch(s) of {steps_per_epoch} steps at "
           f"batch {BATCH_SIZE}; ΔT = {update_frequency}. std is the sample standard deviation over seeds.",
           "Sparsity columns: fraction of zeros in each kernel's mask at the end of training (fc1 784×300, "
           "fc2 300×100, logits 100×10), mean over seeds; ERK keeps a kernel dense when its share would exceed 100%.",
           (f"Rendered from {runs_path}: {len(runs)} of {len(configs)} runs, made in {total_wall / 60:.1f} min of wall "
            "time." if args.render_only else f"Whole benchmark: {total_wall / 60:.1f} min wall with --jobs {args.jobs} "
            f"({len(runs)} of {len(configs)} runs).")]
  notes += gradual_targets(runs, flops)
  if baseline is not None:
    notes.append(f"Baseline: {args.baseline}. Largest loss of mean accuracy: "
                 f"{-worst if worst is not None and worst < 0 else 0.0:.2f} points.")
  write_table(output, f"LeNet-300-100 on MNIST: accuracy of every method ({epochs} epochs, "
              f"{len(seeds)} seed(s))", header, rows, notes)


if __name__ == "__main__":
  main()
