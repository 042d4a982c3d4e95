"""Test setup: 8 fake CPU devices, configured before jax is imported anywhere."""

import os

# Must happen before the first `import jax` in this process; subprocesses
# started by the tests inherit it through the environment.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

assert jax.device_count() == 8, "tests expect 8 fake CPU devices"


@pytest.fixture
def tiny_overrides(tmp_path):
  """Overrides for a short run in a temporary run directory."""
  return [f"run.dir={tmp_path / 'run'}", "trainer.steps=40", "trainer.epochs=null", "trainer.log_every=10",
          "trainer.eval_every=20", "checkpoint.every=20", "logging.progress=none"]
