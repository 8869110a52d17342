"""Shared helpers of the benchmark scripts: the LeNet-300-100 model and writing result tables with their command."""
import multiprocessing
import os
import platform
import shlex
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Benchmark the tfmot_rigl of the checkout this script sits in (also a copy of an older commit), not an installed one.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


def mlp(hidden, seed=0):
  """An MNIST MLP 784-hidden[0]-hidden[1]-10 with ReLUs; kernels named fc1, fc2, logits."""
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((28, 28, 1))
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(hidden[0], activation="relu", name="fc1")(x)
  x = keras.layers.Dense(hidden[1], activation="relu", name="fc2")(x)
  return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def lenet_300_100(seed=0):
  return mlp((300, 100), seed)


def wide_mlp(seed=0):
  """784-2048-2048-10 (5.8 M weights): wide enough that the fully-connected kernels dominate inference."""
  return mlp((2048, 2048), seed)


def resnet50(seed=0, size=224, classes=1000):
  """tf_keras' ResNet-50 (53 conv kernels and one dense, 25.6 M parameters), randomly initialised."""
  keras.utils.set_random_seed(seed)
  return keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=classes,
                                     classifier_activation=None)


def run_tasks(function, tasks, jobs, on_result):
  """Calls on_result(function(task)) for every task, in `jobs` spawned processes (each its own TF) when jobs > 1.

  `function` must be a module-level function (it is pickled by name); results arrive in the order they finish.
  """
  if jobs > 1 and tasks:
    with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
      for result in pool.imap_unordered(function, tasks, chunksize=1):
        on_result(result)
  else:
    for task in tasks:
      on_result(function(task))


def cpu_model():
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
  except OSError:
    names = []
  return names[0] if names else platform.processor() or "unknown CPU"


def machine():
  return f"{platform.machine()} {cpu_model()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}"


def quick_output(name):
  """Where a --quick smoke run writes its table: a temp dir, so that smoke runs never overwrite docs/results."""
  return os.path.join(tempfile.gettempdir(), "tfmot_rigl_benchmarks", f"{name}_quick.md")


def write_table(path, title, header, rows, notes=()):
  """Prints a markdown table and writes it to `path`, headed by the command that produced it."""
  command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
  lines = [f"### {title}", "", f"Command: `{command}`  ", f"Machine: {machine()}", ""]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "|".join("---" for _ in header) + "|")
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  lines += [""] + list(notes)
  text = "\n".join(lines) + "\n"
  print(text)
  if path:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    print(f"wrote {path}")
