"""User-facing errors: reported as one line and exit code 2, never as a traceback."""


class ConfigError(ValueError):
  """A bad config value, override, data file or checkpoint, named in the message."""

  exit_code = 2
