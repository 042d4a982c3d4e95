"""Test setup: 8 fake CPU devices, configured before jax is imported anywhere."""

import os

# Must happen before the first `import jax` in this process; subprocesses
# started by the tests inherit it through the environment.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Runs record themselves in the experiment database: one per test process, never ./outputs.
import tempfile  # noqa: E402

os.environ["JAXTRAIN_DB_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='jaxtrain-test-db-')}/experiments.db"
# Caches (JAX's compilation cache, generated datasets) in one place shared by every test
# process and kept between runs, instead of the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = os.path.join(tempfile.gettempdir(), "jaxtrain-test-cache")

import jax  # noqa: E402
import pytest  # noqa: E402

assert jax.device_count() == 8, "tests expect 8 fake CPU devices"


@pytest.fixture
def tiny_overrides(tmp_path):
  """Overrides for a short run in a temporary run directory."""
  return [f"run.dir={tmp_path / 'run'}", "trainer.steps=40", "trainer.epochs=null", "trainer.log_every=10",
          "trainer.eval_every=20", "checkpoint.every=20", "logging.progress=none"]


# ---------------------------------------------------------------------------
# One short in-process run shared by several test files (run dir, compilation,
# determinism, checkpoint retention, resume from a path): a run costs seconds.

import logging  # noqa: E402
import types  # noqa: E402

from _helpers import reference_overrides  # noqa: E402


class _MessageCollector(logging.Handler):

  def __init__(self):
    super().__init__(level=logging.DEBUG)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
  """A finished 40-step run, with every message jax logged while `jax.log_compiles` was on."""
  import jaxtrain

  run_dir = tmp_path_factory.mktemp("reference") / "run"
  overrides = reference_overrides(run_dir)
  collector = _MessageCollector()
  jax_logger = logging.getLogger("jax")
  jax_logger.addHandler(collector)
  try:
    with jax.log_compiles(True):
      result = jaxtrain.run(jaxtrain.compose(overrides))
  finally:
    jax_logger.removeHandler(collector)
  return types.SimpleNamespace(result=result, run_dir=run_dir, overrides=overrides,
                               jax_log=collector.messages)


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
  """A persistent JAX compilation cache directory for CLI subprocesses (see _helpers.cached_cli_env)."""
  return tmp_path_factory.mktemp("jax_compilation_cache")
