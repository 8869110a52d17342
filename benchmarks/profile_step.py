"""Where a train step's time goes: TensorFlow profiler op times of dense, TFMOT, static and RigL non-update steps.

Each configuration is built as in step_overhead.py, warmed up, then `--steps` steps run under
`tf.profiler.experimental`; the host plane of the trace (xplane.pb) is read back and the time of every TensorFlow op
is summed per op type (the enclosing function and executor events are left out). Ops run in parallel on the two
cores, so per-step op time can exceed the step's wall time.

Usage: python benchmarks/profile_step.py [--model lenet] [--steps 50] [--top 10]
       python benchmarks/profile_step.py --quick     # smoke run: 5 profiled steps
"""
import argparse
import collections
import glob
import os
import tempfile

from _common import lenet_300_100, quick_output, tf, write_table

import step_overhead  # noqa: E402  (same directory: the configurations it times)
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

CONFIGS = [("dense", "dense", None), ("TFMOT prune_low_magnitude", "tfmot", None), ("static", "static", None),
           ("rigl, non-update step", "rigl", "none")]
# Events of the host plane that enclose op executions rather than being ops themselves.
_CONTAINERS = ("Process", "Run", "ExecutorState", "ExecutorDoneCallback")


def op_times(step, steps, logdir):
  """{op type: (seconds per step, executions per step)} of `steps` profiled calls of `step`."""
  tf.profiler.experimental.start(logdir)
  for _ in range(steps):
    step().numpy()
  tf.profiler.experimental.stop()
  path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  totals = collections.defaultdict(lambda: [0.0, 0])
  for plane in space.planes:
    if "host" not in plane.name.lower():
      continue
    names = {key: metadata.name for key, metadata in plane.event_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        name = names.get(event.metadata_id, "")
        op_type = name.split(":")[-1].strip()
        if ":" not in name or op_type in _CONTAINERS or op_type.startswith("__inference") or not op_type:
          continue
        totals[op_type][0] += event.duration_ps / 1e12 / steps
        totals[op_type][1] += 1 / steps
  return dict(totals)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", choices=["lenet", "wrn"], default="lenet")
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--top", type=int, default=10)
  parser.add_argument("--quick", action="store_true", help="smoke run: 5 profiled steps, top 5 op types")
  parser.add_argument("--output", help="markdown table path (default docs/results/profile_step.md; --quick: temp)")
  args = parser.parse_args()
  if args.quick:
    args.model, args.steps, args.top = "lenet", 5, 5
  output = args.output or (quick_output("profile_step") if args.quick else "docs/results/profile_step.md")
  label, build, shape, sparsity = step_overhead.MODELS[args.model]
  batch = step_overhead.random_batch(shape)
  rows, notes = [], []
  with tempfile.TemporaryDirectory() as logdir:
    for config_label, method, kind in CONFIGS:
      step = step_overhead.make_step(build if args.model != "lenet" else lenet_300_100, method, kind, sparsity, batch)
      for _ in range(10):
        step().numpy()
      times = op_times(step, args.steps, os.path.join(logdir, method))
      total = sum(seconds for seconds, _ in times.values())
      notes.append(f"{config_label}: {total * 1000:.2f} ms of op time and "
                   f"{sum(count for _, count in times.values()):.0f} op executions per step.")
      for op_type, (seconds, count) in sorted(times.items(), key=lambda item: -item[1][0])[:args.top]:
        rows.append([config_label, op_type, f"{seconds * 1000:.3f}", f"{100 * seconds / total:.1f}", f"{count:g}"])
  write_table(output, f"Op time per train step, {label}, {sparsity:.0%} ERK ({args.steps} profiled steps)",
              ["configuration", "op type", "ms per step", "% of op time", "executions per step"], rows, notes)


if __name__ == "__main__":
  main()
