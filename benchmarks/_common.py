"""Shared helpers of the benchmark scripts: the LeNet-300-100 model and writing result tables with their command."""
import os
import platform
import shlex
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


def lenet_300_100(seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((28, 28, 1))
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(300, activation="relu", name="fc1")(x)
  x = keras.layers.Dense(100, activation="relu", name="fc2")(x)
  return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def machine():
  return f"{platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}"


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
