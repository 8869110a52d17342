"""Train-step time of sparse methods against dense and TFMOT's prune_low_magnitude, side by side in one process.

Each configuration gets its own model, optimizer and compiled train step; steps are timed round-robin (one step of
each configuration in turn, repeated) so that machine noise hits all of them alike. Reported: median step time, its
interquartile range, ratios of medians to dense and to TFMOT's `prune_low_magnitude` (ConstantSparsity, mask update
every 100 steps, as TFMOT users run it), and, for the dynamic methods, the step amortised over ΔT = 100:
(99 · non-update step + update step) / 100.

- "non-update step": begin_step lies beyond the timed steps, so every timed step takes the no-update branch;
- "update step": ΔT = 1, so every timed step drops and grows connections in every layer (constant α = 0.3).
Then the mask-update math alone (`core.masks.drop_and_grow` over every kernel of ResNet-50 at 80% ERK, α = 0.3, one
tf.function, with and without XLA), and, where the code has it, the full-sort `drop_and_grow_reference` beside it.

Usage: python benchmarks/step_overhead.py [--models lenet,wrn,resnet50] [--repeats 50] [--resnet_repeats 5]
       python benchmarks/step_overhead.py --quick      # smoke run: LeNet, dense/TFMOT/RigL, 3 repeats
"""
import argparse
import time

import numpy as np

from _common import keras, lenet_300_100, quick_output, resnet50, tf, write_table

import tensorflow_model_optimization as tfmot  # noqa: E402
import tfmot_rigl  # noqa: E402
from tfmot_rigl.core import distributions  # noqa: E402
from tfmot_rigl.core import masks as mask_math  # noqa: E402

AMORTISED_TARGET = {"lenet": 1.10, "wrn": 1.05, "resnet50": 1.05}  # issue 11's targets, vs dense
NEVER = 10**8  # a begin_step no timed step reaches
AMORTISE_OVER = 100
UPDATE_MATH_DROP_FRACTION = 0.3


def wide_resnet(seed=0, depth=16, width=2, size=32):
  from tfmot_rigl.modelgarden import backbones  # noqa: F401  (registers the backbone)
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((size, size, 3))
  features = backbones.WideResNetBackbone(depth=depth, width_multiplier=width, input_specs=keras.layers.InputSpec(
      shape=[None, size, size, 3]))(inputs)
  x = keras.layers.GlobalAveragePooling2D()(features[max(features)])
  return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


QUICK_METHODS = ("dense", "tfmot", "rigl")
# (label, method, kind): kind "none" = the no-update branch only, "every" = an update at every step.
CONFIGS = [
    ("dense", "dense", None),
    ("TFMOT prune_low_magnitude", "tfmot", None),
    ("static", "static", None),
    ("set, non-update step", "set", "none"),
    ("rigl, non-update step", "rigl", "none"),
    ("snfs, non-update step", "snfs", "none"),
    ("set, update step", "set", "every"),
    ("rigl, update step", "rigl", "every"),
    ("snfs, update step", "snfs", "every"),
]


def make_step(build, method, kind, sparsity, batch):
  model = build()
  optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
  if method == "tfmot":
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=AMORTISE_OVER)
    model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    for wrapper in tfmot_rigl.sparse_wrappers(model):
      wrapper.pruning_step.assign(1)  # the wrapper counts its own steps from here (no UpdatePruningStep callback)
  elif method != "dense":
    knobs = {"update_frequency": 1, "begin_step": 0, "end_step": NEVER, "drop_fraction_anneal": "constant"}
    if kind == "none":
      knobs.update(update_frequency=AMORTISE_OVER, begin_step=NEVER, end_step=2 * NEVER)
    model = tfmot_rigl.prune_sparse(model, tfmot_rigl.make_algorithm(method, **knobs), sparsity=sparsity,
                                    distribution="erk")
    optimizer = tfmot_rigl.wrap_optimizer(optimizer, model)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  x, y = batch

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss

  for _ in range(2):  # trace and warm up
    step().numpy()
  return step


def time_round_robin(steps, repeats):
  times = {label: [] for label in steps}
  for _ in range(repeats):
    for label, step in steps.items():
      start = time.perf_counter()
      step().numpy()
      times[label].append(time.perf_counter() - start)
  return times


def overhead_rows(model_name, times):
  medians = {label: float(np.median(values)) for label, values in times.items()}
  dense, tfmot_step = medians["dense"], medians["TFMOT prune_low_magnitude"]
  rows, summary = [], {}
  for label, values in times.items():
    q1, q3 = np.percentile(values, [25, 75]) * 1000
    amortised = ""
    method = label.split(",")[0]
    if label.endswith("non-update step"):
      update = medians[f"{method}, update step"]
      amortised_s = ((AMORTISE_OVER - 1) * medians[label] + update) / AMORTISE_OVER
      amortised = f"{amortised_s / dense:.3f}"
      summary[method] = {"non_update_vs_tfmot": medians[label] / tfmot_step, "amortised_vs_dense": amortised_s / dense,
                         "update_minus_non_update_s": update - medians[label]}
    if label == "static":
      summary["static"] = {"non_update_vs_tfmot": medians[label] / tfmot_step}
    rows.append([model_name, label, f"{medians[label] * 1000:.2f}", f"{q1:.2f}–{q3:.2f}",
                 f"{medians[label] / dense:.3f}", f"{medians[label] / tfmot_step:.3f}", amortised])
  summary["dense_s"] = dense
  return rows, summary


def random_batch(shape, classes=10):
  rng = np.random.RandomState(0)
  return tf.constant(rng.rand(*shape).astype("float32")), tf.constant(rng.randint(0, classes, shape[0]))


def update_math_rows(build, label, sparsity, repeats, jit_options=(False, True)):
  """Times the drop/grow math of one update over every kernel of `build()`'s model, as one tf.function."""
  model = build()
  kernels = [w for w in model.trainable_weights if w.name.split("/")[-1].startswith("kernel")]
  shapes = {w.name: tuple(w.shape) for w in kernels}
  layer_sparsity = distributions.layer_sparsities(shapes, sparsity, "erk")
  state = []
  for index, weight in enumerate(kernels):
    mask = mask_math.random_mask(weight.shape, layer_sparsity[weight.name], tf.constant([0, index]))
    grad = tf.random.stateless_normal(weight.shape, seed=[1, index])
    state.append((tf.Variable(mask), tf.Variable(weight * mask), tf.Variable(grad)))
  implementations = [("drop_and_grow", mask_math.drop_and_grow)]
  if hasattr(mask_math, "drop_and_grow_reference"):
    implementations.append(("drop_and_grow_reference (full sort)", mask_math.drop_and_grow_reference))

  def make(fn, jit):
    @tf.function(jit_compile=jit)
    def update_all():
      active = []
      for index, (mask, weight, grad) in enumerate(state):
        new_mask, _ = fn(mask, tf.abs(weight), tf.abs(grad), UPDATE_MATH_DROP_FRACTION, tf.constant([7, index]))
        active.append(tf.reduce_sum(new_mask))
      return tf.add_n(active)
    return update_all

  functions = {}
  for name, fn in implementations:
    for jit in jit_options:
      try:
        compiled = make(fn, jit)
        compiled().numpy()
        functions[f"{name}, {'XLA' if jit else 'no XLA'}"] = compiled
      except Exception as error:  # pylint: disable=broad-except  (reported as a row, the rest still runs)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        print(f"{name} with jit_compile={jit} failed: {type(error).__name__}: {first_line}")
  times = time_round_robin(functions, repeats)
  size = sum(int(np.prod(w.shape)) for w in kernels)
  rows = []
  for name, values in times.items():
    q1, med, q3 = np.percentile(values, [25, 50, 75]) * 1000
    rows.append([label, f"{len(kernels)} kernels, {size / 1e6:.1f} M weights", name, f"{med:.1f}",
                 f"{q1:.1f}–{q3:.1f}"])
  return rows, {name: float(np.median(values)) for name, values in times.items()}


MODELS = {
    # name: (label, builder, batch shape, sparsity)
    "lenet": ("LeNet-300-100, batch 128", lenet_300_100, (128, 28, 28, 1), 0.9),
    "wrn": ("WRN-16-2 32x32, batch 32", wide_resnet, (32, 32, 32, 3), 0.9),
    "resnet50": ("ResNet-50 224x224, batch 16", resnet50, (16, 224, 224, 3), 0.8),
}


def verdicts(summaries):
  """One line per issue-11 target that these measurements decide, with the figure and met/missed."""
  lines = []
  for name, summary in summaries.items():
    model_label = MODELS[name][0]
    update = summary.get("rigl", {}).get("update_minus_non_update_s")
    if update is not None:
      ratio = update / summary["dense_s"]
      verdict = f" (target ≤ 0.5×: {'met' if ratio <= 0.5 else 'missed'})" if name == "resnet50" else ""
      lines.append(f"{model_label}: one RigL mask update (update step − non-update step) = {update * 1000:.1f} ms "
                   f"= {ratio:.3f}× one dense training step{verdict}.")
    limit = AMORTISED_TARGET[name]
    for method in ("set", "rigl", "snfs"):
      if method in summary:
        value = summary[method]["amortised_vs_dense"]
        lines.append(f"{model_label}: {method} amortised over ΔT=100 = {value:.3f}× dense "
                     f"(target ≤ {limit:.2f}×: {'met' if value <= limit else 'missed'}).")
    for method in ("static", "set", "rigl", "snfs"):
      if method in summary:
        value = summary[method]["non_update_vs_tfmot"]
        lines.append(f"{model_label}: {method} non-update step = {value:.3f}× TFMOT's step (target ≤ 1.03×: "
                     f"{'met' if value <= 1.03 else 'missed'}).")
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="lenet,wrn,resnet50")
  parser.add_argument("--methods", default="static,set,rigl,snfs",
                      help="sparse methods timed beside dense and TFMOT (always timed)")
  parser.add_argument("--repeats", type=int, default=50, help="timed steps per configuration (LeNet, WRN)")
  parser.add_argument("--resnet_repeats", type=int, default=5, help="timed steps per configuration on ResNet-50")
  parser.add_argument("--update_math", choices=["auto", "only", "skip"], default="auto",
                      help="the ResNet-50 update-math table: with resnet50 in --models (auto), alone, or not at all")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: LeNet only, dense/TFMOT/RigL, 3 repeats, update math without XLA")
  parser.add_argument("--output", help="markdown table path (default docs/results/step_overhead.md; --quick: temp)")
  args = parser.parse_args()
  models = ["lenet"] if args.quick else args.models.split(",")
  methods = set(QUICK_METHODS if args.quick else ["dense", "tfmot"] + args.methods.split(","))
  configs = [c for c in CONFIGS if c[1] in methods]
  unknown = sorted(set(models) - set(MODELS))
  if unknown:
    parser.error(f"unknown model(s) {unknown}; choose from {','.join(MODELS)}")
  output = args.output or (quick_output("step_overhead") if args.quick else "docs/results/step_overhead.md")
  notes = [f"Timed steps per configuration: {3 if args.quick else args.repeats} (LeNet, WRN), "
           f"{3 if args.quick else args.resnet_repeats} (ResNet-50); round-robin, after 2 warm-up steps each. "
           "SGD momentum 0.9, random inputs.",
           "amortised = ((ΔT−1) · non-update + update) / ΔT / dense, ΔT = 100. TFMOT: "
           "prune_low_magnitude(ConstantSparsity(sparsity, frequency=100)) over the whole model (uniform sparsity); "
           "its median is a non-update step."]
  rows, summaries = [], {}
  for name in models if args.update_math != "only" else []:
    label, build, shape, sparsity = MODELS[name]
    repeats = 3 if args.quick else (args.resnet_repeats if name == "resnet50" else args.repeats)
    classes = 1000 if name == "resnet50" else 10
    batch = random_batch(shape, classes)
    steps = {}
    for config_label, method, kind in configs:
      start = time.perf_counter()
      steps[config_label] = make_step(build, method, kind, sparsity, batch)
      print(f"{label}: {config_label} built and warmed up in {time.perf_counter() - start:.1f} s", flush=True)
    model_rows, summaries[name] = overhead_rows(f"{label}, {sparsity:.0%} ERK", time_round_robin(steps, repeats))
    rows += model_rows
    print(f"{label}: timed {repeats} round-robin steps per configuration", flush=True)
    del steps
    # Written after every model, so that a long run that is stopped still leaves what it measured.
    write_table(output, "Train-step time: sparse methods vs dense and vs TFMOT prune_low_magnitude (CPU)",
                ["model", "configuration", "median ms/step", "IQR ms", "vs dense", "vs TFMOT",
                 "amortised ΔT=100 vs dense"],
                rows, notes + [""] + [f"- {line}" for line in verdicts(summaries)])
  math_rows = []
  if args.quick:
    math_rows, _ = update_math_rows(lenet_300_100, "LeNet-300-100 (quick)", 0.8, 3, jit_options=(False,))
  elif args.update_math == "only" or (args.update_math == "auto" and "resnet50" in models):
    math_rows, _ = update_math_rows(resnet50, "ResNet-50", 0.8, args.resnet_repeats)
  if math_rows:
    write_table(output.replace(".md", "_update_math.md"),
                "One mask update's drop/grow math over every kernel (80% ERK, α = 0.3), one tf.function",
                ["model", "kernels", "implementation", "median ms", "IQR ms"], math_rows,
                [f"Median of {3 if args.quick else args.resnet_repeats} round-robin calls after one warm-up "
                 "(tracing/compilation) call. Masks, |W ⊙ M| and |random gradients| are variables read inside the "
                 "function; the update's weight and slot writes are not included."])


if __name__ == "__main__":
  main()
