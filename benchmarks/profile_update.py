"""Where one mask update's time goes: TensorFlow's per-op step statistics of the drop/grow math over every kernel.

The update of every kernel of the model (80% ERK masks, |W ⊙ M| drop scores, |random gradient| grow scores, α = 0.3)
runs as one graph in a `tf.compat.v1.Session` with `trace_level=FULL_TRACE`, which records each executed op's
start and end (ops inside functions and loop iterations included). Op times are summed per op type; ops run in
parallel on the two cores, so the sum can exceed the wall time. Both `drop_and_grow` and, where the code has it,
the full-sort `drop_and_grow_reference` are profiled, after one untraced warm-up run each.

Usage: python benchmarks/profile_update.py [--model resnet50] [--top 12]
       python benchmarks/profile_update.py --quick     # smoke run: LeNet-300-100's kernels
"""
import argparse
import collections
import re
import time

import numpy as np

from _common import lenet_300_100, quick_output, resnet50, tf, write_table

from tfmot_rigl.core import distributions  # noqa: E402
from tfmot_rigl.core import masks as mask_math  # noqa: E402

DROP_FRACTION = 0.3
SPARSITY = 0.8


def update_inputs(model):
  """[(mask, |W ⊙ M|, |g|)] as numpy arrays for every kernel of `model`, masks at 80% ERK."""
  kernels = [w for w in model.trainable_weights if w.name.split("/")[-1].startswith("kernel")]
  sparsity = distributions.layer_sparsities({w.name: tuple(w.shape) for w in kernels}, SPARSITY, "erk")
  inputs = []
  for index, weight in enumerate(kernels):
    mask = mask_math.random_mask(weight.shape, sparsity[weight.name], tf.constant([0, index])).numpy()
    grad = tf.random.stateless_normal(weight.shape, seed=[1, index]).numpy()
    inputs.append((mask, np.abs(weight.numpy() * mask), np.abs(grad)))
  return inputs


def profile(implementation, inputs):
  """(untraced wall s, traced wall s, {op type: (total s, count)}) of one update over all kernels."""
  graph = tf.Graph()
  with graph.as_default():
    feeds, active = {}, []
    for index, arrays in enumerate(inputs):
      placeholders = [tf.compat.v1.placeholder(tf.float32, a.shape) for a in arrays]
      feeds.update(zip(placeholders, arrays))
      new_mask, _ = implementation(*placeholders, DROP_FRACTION, tf.constant([7, index]))
      active.append(tf.reduce_sum(new_mask))
    total = tf.add_n(active)
  with tf.compat.v1.Session(graph=graph) as session:
    session.run(total, feed_dict=feeds)  # warm-up
    start = time.perf_counter()
    session.run(total, feed_dict=feeds)
    untraced = time.perf_counter() - start
    metadata = tf.compat.v1.RunMetadata()
    start = time.perf_counter()
    full_trace = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    session.run(total, feed_dict=feeds, options=full_trace, run_metadata=metadata)
    traced = time.perf_counter() - start
  by_op = collections.defaultdict(lambda: [0.0, 0])
  for device in metadata.step_stats.dev_stats:
    for node in device.node_stats:
      match = re.match(r"^[^=]+= (\w+)", node.timeline_label)
      op = match.group(1) if match else node.node_name.split(":")[0]
      by_op[op][0] += node.all_end_rel_micros / 1e6
      by_op[op][1] += 1
  return untraced, traced, dict(by_op)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", choices=["resnet50", "lenet"], default="resnet50")
  parser.add_argument("--top", type=int, default=12, help="op types listed per implementation")
  parser.add_argument("--quick", action="store_true", help="smoke run: LeNet-300-100's three kernels")
  parser.add_argument("--output", help="markdown table path (default docs/results/profile_update.md; --quick: temp)")
  args = parser.parse_args()
  model_name = "lenet" if args.quick else args.model
  output = args.output or (quick_output("profile_update") if args.quick else "docs/results/profile_update.md")
  model = lenet_300_100() if model_name == "lenet" else resnet50()
  inputs = update_inputs(model)
  implementations = [("drop_and_grow", mask_math.drop_and_grow)]
  if hasattr(mask_math, "drop_and_grow_reference"):
    implementations.append(("drop_and_grow_reference", mask_math.drop_and_grow_reference))
  rows, notes = [], []
  for name, implementation in implementations:
    untraced, traced, by_op = profile(implementation, inputs)
    op_total = sum(seconds for seconds, _ in by_op.values())
    notes.append(f"{name}: {untraced * 1000:.1f} ms untraced, {traced * 1000:.1f} ms traced, "
                 f"{op_total * 1000:.1f} ms summed over {sum(count for _, count in by_op.values())} op executions.")
    for op, (seconds, count) in sorted(by_op.items(), key=lambda item: -item[1][0])[:args.top]:
      rows.append([name, op, f"{seconds * 1000:.1f}", f"{100 * seconds / op_total:.1f}", count])
  size = sum(a[0].size for a in inputs)
  write_table(output, f"Per-op time of one mask update over every kernel of {model_name} ({len(inputs)} kernels, "
              f"{size / 1e6:.1f} M weights, 80% ERK, α = 0.3)",
              ["implementation", "op type", "total ms", "% of op time", "executions"], rows, notes)


if __name__ == "__main__":
  main()
