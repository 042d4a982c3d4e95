"""User-facing errors: reported as one line and exit code 2, never as a traceback."""


class ConfigError(ValueError):
  """A bad config value, override, data file or checkpoint, named in the message."""

  exit_code = 2


class IncompatibleCheckpoint(ConfigError):
  """A readable checkpoint that does not fit the current config (other param shapes,
  another data pipeline): not damage, so it is never set aside or skipped."""


class TrainingDiverged(RuntimeError):
  """Too many consecutive updates were skipped (non-finite or spiking loss)."""

  exit_code = 3
