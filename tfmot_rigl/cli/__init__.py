"""The `tfm` command line: one subcommand per module in this package, dispatched by `tfmot_rigl.cli.main`."""


class UsageError(Exception):
  """Bad input from the user: `tfm` prints the message as one line on stderr and exits with code 2."""
