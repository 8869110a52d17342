"""Block-sparse RigL MLPs against dense and unstructured RigL: MNIST accuracy, TFLite latency and file size.

Each network (LeNet-300-100 and the wide 784-2048-2048-10 MLP) is trained with the standard recipe of
benchmarks/accuracy.py (ERK, ΔT = 100, α = 0.3 cosine, updates end at 75%) — dense, unstructured RigL, and RigL with
(4, 1) blocks (Keras [in, out] kernel; 1×4 in TFLite's [out, in]) at 80 / 90 / 95% — then stripped, saved and
converted as `tfm tflite` does: dense with no optimisation, sparse ones with `--sparse`. The int8 path adds, on the
wide MLP at 90%, RigL with (16, 1) blocks converted with `--sparse --int8` against the dense model with `--int8`.

Latency: batch 1, TFLite's builtin kernels (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`, which run sparse weights) at 1 and 2
threads, every file interleaved round by round in one process, median over the rounds; dense files also in the
default interpreter (XNNPACK), what dense users get. Ratios are dense time / file time (> 1 is faster than dense).

Usage: python benchmarks/block_inference.py [--epochs 20] [--wide_epochs 3] [--rounds 300] [--jobs 1]
       python benchmarks/block_inference.py --quick   # smoke run: LeNet, 30 steps, 90% only, 20 rounds
Trained files are kept in --workdir and reused by a later run with --resume (e.g. to time on a quiet machine).
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

from _common import lenet_300_100, quick_output, run_tasks, tf, wide_mlp, write_table
import accuracy

import tfmot_rigl  # noqa: E402
from tfmot_rigl.data import mnist  # noqa: E402
from tfmot_rigl.export import tflite as tflite_export  # noqa: E402
from tfmot_rigl.export import tflite_ops  # noqa: E402

MODELS = {"lenet": ("LeNet-300-100", lenet_300_100), "wide": ("784-2048-2048-10", wide_mlp)}
RESOLVERS = {"builtin": tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
             "default": tf.lite.experimental.OpResolverType.AUTO}


def configs(quick, sparsities):
  """(model, variant, method, sparsity, block_shape, int8) of every file the benchmark makes."""
  models = ["lenet"] if quick else ["lenet", "wide"]
  runs = []
  for model in models:
    runs.append((model, "dense", "dense", 0.0, (1, 1), False))
    for sparsity in sparsities:
      runs.append((model, "rigl", "rigl", sparsity, (1, 1), False))
      runs.append((model, "block4", "rigl", sparsity, (4, 1), False))
    if model == "wide":
      runs.append((model, "dense-int8", "dense", 0.0, (1, 1), True))
      runs.append((model, "block16-int8", "rigl", 0.9, (16, 1), True))
  return runs


def run_name(config):
  model, variant, _, sparsity, _, _ = config
  return f"{model}-{variant}" + (f"-{sparsity:.2f}" if sparsity else "")


def train_and_convert(config, epochs, steps_per_epoch, update_frequency, workdir):
  """Trains one network, saves the stripped SavedModel, converts it; returns its record (no timing yet)."""
  model_key, variant, method, sparsity, block_shape, int8 = config
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  run = accuracy.train_and_evaluate(method, sparsity, 0, epochs, steps_per_epoch, update_frequency,
                                    model_fn=MODELS[model_key][1], block_shape=block_shape, keep_model=True)
  model = run.pop("model")
  stripped = tfmot_rigl.strip_sparse(model) if method != "dense" else model
  name = run_name(config)
  saved = os.path.join(workdir, name)
  serve = tf.function(lambda x: {"logits": stripped(x, training=False)},
                      input_signature=[tf.TensorSpec([1, 28, 28, 1], tf.float32, name="x")])
  tf.saved_model.save(stripped, saved, signatures=serve.get_concrete_function())
  content = tflite_export.convert(saved, sparse=method != "dense", int8=int8)
  path = os.path.join(workdir, name + ".tflite")
  with open(path, "wb") as f:
    f.write(content)
  record = dict(run, name=name, model=model_key, variant=variant, block_shape=list(block_shape), int8=int8,
                path=path, size_bytes=len(content), weights="; ".join(tflite_ops.describe(tflite_ops.weight_ops(content))))
  images = mnist.load_bundled_mnist()["test_images"][:200].astype(np.float32)[..., None] / 255.0
  if int8:  # int8 against the float model it was converted from, on real test images
    expected = np.concatenate([stripped(images[i:i + 1], training=False).numpy() for i in range(len(images))])
    actual = np.concatenate([_interpreter(content, 1, "builtin").get_signature_runner()(x=images[i:i + 1])["logits"]
                             for i in range(len(images))])
    record["int8_relative_diff"] = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
  print(f"{name}: {run['accuracy'] * 100:.2f}% in {run['wall_s']:.0f} s, {len(content):,} bytes", flush=True)
  return record


def _run_alone(args):
  return train_and_convert(*args)


def _interpreter(content, threads, resolver):
  return tf.lite.Interpreter(model_content=content, num_threads=threads,
                             experimental_op_resolver_type=RESOLVERS[resolver])


def time_files(records, rounds, warmup=20):
  """{(name, threads, resolver): median seconds, IQR} of one invoke, all files interleaved round by round."""
  x = np.random.default_rng(0).random((1, 28, 28, 1), np.float32)
  runners = {}
  for record in records:
    with open(record["path"], "rb") as f:
      content = f.read()
    for threads in (1, 2):
      resolvers = ["builtin", "default"] if record["method"] == "dense" and not record["int8"] else ["builtin"]
      for resolver in resolvers:
        interpreter = _interpreter(content, threads, resolver)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        runners[(record["name"], threads, resolver)] = interpreter
  times = {key: [] for key in runners}
  for round_index in range(warmup + rounds):
    for key, interpreter in runners.items():
      start = time.perf_counter()
      interpreter.invoke()
      if round_index >= warmup:
        times[key].append(time.perf_counter() - start)
  return {key: (float(np.median(v)), float(np.percentile(v, 75) - np.percentile(v, 25))) for key, v in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=20, help="LeNet-300-100 epochs (the standard recipe: 20)")
  parser.add_argument("--wide_epochs", type=int, default=3, help="epochs of the 784-2048-2048-10 MLP (22x LeNet's "
                      "cost per step; the schedules scale to the run)")
  parser.add_argument("--sparsities", default="0.8,0.9,0.95")
  parser.add_argument("--rounds", type=int, default=300, help="timed rounds of every file (interleaved)")
  parser.add_argument("--jobs", type=int, default=1, help="trainings in parallel processes (timing stays serial)")
  parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tfmot_rigl_block_inference"),
                      help="where the SavedModels, .tflite files and their records go")
  parser.add_argument("--resume", action="store_true", help="reuse the trained files recorded in --workdir")
  parser.add_argument("--quick", action="store_true", help="smoke run: LeNet, 30 steps, 90%% only, 20 rounds")
  parser.add_argument("--output", help="markdown path (default docs/results/block_inference.md; --quick: a temp dir)")
  args = parser.parse_args()
  sparsities = [0.9] if args.quick else [float(s) for s in args.sparsities.split(",")]
  steps_per_epoch, update_frequency = (30, 5) if args.quick else (accuracy.STEPS_PER_EPOCH, 100)
  epochs = {"lenet": 1 if args.quick else args.epochs, "wide": args.wide_epochs}
  rounds = 20 if args.quick else args.rounds
  workdir = os.path.join(args.workdir, "quick") if args.quick else args.workdir
  output = args.output or (quick_output("block_inference") if args.quick else "docs/results/block_inference.md")
  os.makedirs(workdir, exist_ok=True)
  records_path = os.path.join(workdir, "records.json")
  records = []
  if args.resume and os.path.exists(records_path):
    with open(records_path, encoding="utf-8") as f:
      records = [r for r in json.load(f) if os.path.exists(r["path"])]
  done = {r["name"] for r in records}
  todo = [(c, epochs[c[0]], steps_per_epoch, update_frequency, workdir)
          for c in configs(args.quick, sparsities) if run_name(c) not in done]

  def save(record):
    records.append(record)
    with open(records_path, "w", encoding="utf-8") as f:
      json.dump(records, f, indent=1)

  run_tasks(_run_alone, todo, args.jobs, save)

  wanted = [run_name(c) for c in configs(args.quick, sparsities)]
  records = sorted([r for r in records if r["name"] in wanted], key=lambda r: wanted.index(r["name"]))
  timings = time_files(records, rounds)
  by_name = {r["name"]: r for r in records}
  rows = []
  for record in records:
    dense = by_name[f"{record['model']}-dense-int8" if record["int8"] else f"{record['model']}-dense"]
    cells = [MODELS[record["model"]][0], record["variant"], f"{record['sparsity']:.2f}" if record["sparsity"] else "–",
             f"{record['accuracy'] * 100:.2f}"]
    for threads in (1, 2):
      median, iqr = timings[(record["name"], threads, "builtin")]
      ratio = timings[(dense["name"], threads, "builtin")][0] / median
      cells.append(f"{median * 1e3:.3f} ± {iqr * 1e3:.3f} ms ({ratio:.2f}x)")
    xnnpack = timings.get((dense["name"], 1, "default"))
    cells.append(f"{xnnpack[0] / timings[(record['name'], 1, 'builtin')][0]:.2f}x" if xnnpack else "–")
    cells += [f"{record['size_bytes'] / 1e3:.0f} kB ({record['size_bytes'] / dense['size_bytes']:.2f}x)",
              record["weights"]]
    if record["int8"] and "int8_relative_diff" in record:
      cells[-1] += f"; int8 vs float: {record['int8_relative_diff'] * 100:.2f}% max relative difference"
    rows.append(cells)
  verdicts = _verdicts(records, timings, by_name)
  header = ["network", "variant", "sparsity (ERK)", "MNIST test acc %", "1 thread, builtin (speedup vs dense)",
            "2 threads, builtin (speedup)", "speedup vs dense in default interpreter (XNNPACK), 1 thread",
            "file (vs dense)", "weights as stored"]
  notes = [f"LeNet-300-100 trained {epochs['lenet']} epoch(s), the wide MLP {epochs['wide']} epoch(s), of "
           f"{steps_per_epoch} steps at batch {accuracy.BATCH_SIZE}, seed 0; ΔT = {update_frequency}. Latency: median "
           f"± IQR of {rounds} interleaved invokes at batch 1. int8 rows are dynamic-range int8 and are compared with "
           "the dense int8 file."] + verdicts
  write_table(output, "Block-sparse RigL: accuracy and TFLite inference", header, rows, notes)


def _verdicts(records, timings, by_name):
  lines = []
  block, rigl, dense = by_name.get("wide-block4-0.90"), by_name.get("wide-rigl-0.90"), by_name.get("wide-dense")
  if block and rigl and dense:
    speedup = timings[(dense["name"], 1, "builtin")][0] / timings[(block["name"], 1, "builtin")][0]
    gap = (rigl["accuracy"] - block["accuracy"]) * 100
    lines.append(f"Target: block-RigL (4, 1) at 90% on the wide MLP ≥ 2.5x faster than dense at 1 thread: "
                 f"{speedup:.2f}x — {'met' if speedup >= 2.5 else 'MISSED'}; accuracy within 0.5 points of "
                 f"unstructured RigL: {gap:+.2f} points below — {'met' if gap <= 0.5 else 'MISSED'}.")
  int8, dense8 = by_name.get("wide-block16-int8-0.90"), by_name.get("wide-dense-int8")
  if int8 and dense8:
    speedup = timings[(dense8["name"], 1, "builtin")][0] / timings[(int8["name"], 1, "builtin")][0]
    diff = int8["int8_relative_diff"] * 100
    lines.append(f"Target: int8 block (16, 1) ≤ 1% relative difference to float: {diff:.2f}% — "
                 f"{'met' if diff <= 1 else 'MISSED'}; ≥ 2x faster than dense int8: {speedup:.2f}x — "
                 f"{'met' if speedup >= 2 else 'MISSED'}.")
  return lines


if __name__ == "__main__":
  main()
