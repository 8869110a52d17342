"""The `tfmot_rigl` logger: one-line notes a user should see (layers left dense, short update windows).

Like TensorFlow's own logger it prints to stderr by itself (INFO and up) unless the application configured it;
`logging.getLogger("tfmot_rigl").setLevel(logging.WARNING)` quiets the notes.
"""
import logging
import sys



class _StderrHandler(logging.StreamHandler):
  """Writes to whatever sys.stderr is at the time (so redirections and test captures see the notes)."""

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value):
    del value


logger = logging.getLogger("tfmot_rigl")
if not logger.handlers:
  _handler = _StderrHandler()
  _handler.setFormatter(logging.Formatter("tfmot_rigl: %(message)s"))
  logger.addHandler(_handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
