"""`tfm plot`: non-empty PNGs from a run's summaries and mask snapshots; bad input is one line, exit 2, no files."""
import os

import numpy as np
import pytest
import tf_keras as keras
from matplotlib import image as mpimg

import tfmot_rigl
from tfmot_rigl import plots
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.keras import monitoring

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A model_dir as `tfm train` leaves it (sparsity/ and masks/), from 12 RigL steps of a tiny MLP on 4x4 images."""
  model_dir = tmp_path_factory.mktemp("run")
  keras.utils.set_random_seed(0)
  inputs = keras.Input((4, 4, 1))
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
  x = keras.layers.Dense(8, activation="relu", name="fc2")(x)
  model = tfmot_rigl.prune_sparse(keras.Model(inputs, keras.layers.Dense(3, name="logits")(x)),
                                  tfmot_rigl.RigL(update_frequency=2, end_step=8), sparsity=0.6, seed=0)
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.5), model)
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  rng = np.random.default_rng(0)
  callback = monitoring.SparsitySummaries(str(model_dir / "sparsity"), str(model_dir / "masks"))
  model.fit(rng.random((48, 4, 4, 1), dtype=np.float32), rng.integers(0, 3, 48), batch_size=4, verbose=0,
            callbacks=[callback])
  return str(model_dir)


def assert_png(path):
  with open(path, "rb") as file:
    assert file.read(8) == PNG_SIGNATURE, path
  height, width = mpimg.imread(path).shape[:2]
  assert height > 100 and width > 100
  assert os.path.getsize(path) > 5000  # more than an empty canvas


def test_plot_writes_sparsity_turnover_and_mask_pngs(run_dir, tmp_path, capsys):
  output_dir = str(tmp_path / "plots")
  assert tfm.main(["plot", f"--model_dir={run_dir}", f"--output_dir={output_dir}"]) == 0
  written = capsys.readouterr().out.split()
  # Snapshots at the start and after each update (steps 0, 2, 4, 6, 8 run at iterations 1, 3, 5, 7, 9).
  assert sorted(monitoring.load_mask_history(os.path.join(run_dir, "masks"))) == [0, 1, 3, 5, 7, 9]
  assert [os.path.basename(p) for p in written] == [
      "sparsity.png", "mask_turnover.png", "masks_step_00000000.png", "masks_step_00000005.png",
      "masks_step_00000009.png"]
  assert sorted(os.listdir(output_dir)) == sorted(os.path.basename(p) for p in written)
  for path in written:
    assert_png(path)


def test_plot_chosen_steps_and_default_output_dir(run_dir, capsys):
  assert tfm.main(["plot", f"--model_dir={run_dir}", "--steps=3,7"]) == 0
  written = capsys.readouterr().out.split()
  assert written[2:] == [os.path.join(run_dir, "plots", "masks_step_00000003.png"),
                         os.path.join(run_dir, "plots", "masks_step_00000007.png")]
  for path in written:
    assert_png(path)
  assert tfm.main(["plot", f"--model_dir={run_dir}", "--steps=all", "--output_dir", str(run_dir + "_all")]) == 0
  assert len([p for p in capsys.readouterr().out.split() if "masks_step_" in p]) == 6


def test_read_scalars_reads_back_what_the_callback_wrote(run_dir):
  scalars = plots.read_scalars(os.path.join(run_dir, "sparsity"))
  assert [step for step, _ in scalars["mask_update/grown/fc1"]] == [0, 2, 4, 6, 8]
  assert [step for step, _ in scalars["sparsity/fc1"]] == [0, 1, 3, 5, 7, 9, 12]
  history = monitoring.load_mask_history(os.path.join(run_dir, "masks"))
  final = monitoring.masks_of(history[9])["fc1"]
  assert dict(scalars["sparsity/fc1"])[9] == pytest.approx(1 - final.mean())


def test_fan_out_image_of_a_first_dense_layer_on_images():
  mask = np.zeros((12, 5), bool)
  mask[3, :4] = True
  fan_out = plots._pixel_fan_out(mask, (3, 4))
  assert fan_out.shape == (3, 4) and fan_out[0, 3] == 4 and fan_out.sum() == 4
  assert plots._pixel_fan_out(mask, (5, 5)) is None  # not this layer's input


@pytest.mark.parametrize("argv, message", [
    ([], "--model_dir"),
    (["--model_dir={missing}"], "is not a directory"),
    (["--model_dir={run}", "--steps=4,x"], "comma-separated step numbers"),
    (["--model_dir={run}", "--steps=2"], "no mask snapshot at step(s) [2]; recorded steps are: 0, 1, 3, 5, 7, 9"),
    (["--model_dir={empty}"], "has no sparsity summaries"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, run_dir, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  output_dir = tmp_path / "plots"
  argv = [a.format(missing=tmp_path / "missing", run=run_dir, empty=empty) for a in argv]
  assert tfm.main(["plot", *argv, f"--output_dir={output_dir}"]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.count("\n") == 1 and captured.err.startswith("tfm plot: error: ") and message in captured.err
  assert not output_dir.exists()
