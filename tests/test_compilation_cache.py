"""The persistent compilation cache: where trainer.compilation_cache_dir points it, and that it is hit."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from jaxtrain import compose
from jaxtrain.compilation_cache import default_cache_dir, enable_compilation_cache, resolve_cache_dir

_OPTIONS = ("jax_compilation_cache_dir", "jax_enable_compilation_cache",
            "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture
def restore_jax_cache_config():
  """Other tests in this worker keep the process's own cache settings."""
  saved = {name: getattr(jax.config, name) for name in _OPTIONS}
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  jax_cache.reset_cache()


def test_setting_resolves_to_default_path_or_off(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert default_cache_dir() == tmp_path / "xdg" / "jaxtrain" / "jax_cache"
  assert resolve_cache_dir(None) == default_cache_dir()
  assert resolve_cache_dir(str(tmp_path / "mine")) == tmp_path / "mine"
  for off in ("", "false", "off", False):
    assert resolve_cache_dir(off) is None
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert default_cache_dir() == Path.home() / ".cache" / "jaxtrain" / "jax_cache"
  assert compose([]).trainer.compilation_cache_dir is None  # on by default


def test_second_compile_after_clearing_memory_is_a_disk_hit(tmp_path, restore_jax_cache_config):
  cache_dir = enable_compilation_cache(str(tmp_path / "cache"), announce=False)
  assert jax.config.jax_compilation_cache_dir == str(cache_dir)
  assert jax.config.jax_persistent_cache_min_compile_time_secs <= 0.01
  # Zero floor for this check: the test function may compile in under 10 ms.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  hits = []

  def listener(event: str, **kwargs) -> None:
    if event.endswith("/cache_hits"):
      hits.append(event)

  jax.monitoring.register_event_listener(listener)
  try:
    step = lambda w, x: jnp.tanh(x @ w).sum() * 1.2345
    args = (jnp.ones((17, 13)), jnp.ones((5, 17)))
    jax.jit(step).lower(*args).compile()
    assert any(cache_dir.iterdir()), "the compiled step was not written to the cache"
    assert hits == []
    jax.clear_caches()  # forget the in-memory executable: the next compile must come from disk
    jax.jit(step).lower(*args).compile()
    assert len(hits) == 1
  finally:
    jax.monitoring.unregister_event_listener(listener)


def test_off_disables_the_cache(restore_jax_cache_config):
  assert enable_compilation_cache("", announce=False) is None
  assert jax.config.jax_enable_compilation_cache is False


def test_a_run_stores_its_train_and_eval_steps_and_snapshot_copies(tmp_path, restore_jax_cache_config):
  """Every executable compiled before step 1 is stored, so a second start compiles none of them
  (the eval step and the snapshot copies compile in 20-80 ms on a CPU: under a 0.1 s floor they
  were compiled again at every start)."""
  import jaxtrain

  cache = tmp_path / "cache"
  jaxtrain.run(jaxtrain.compose([f"run.dir={tmp_path / 'run'}", "trainer.steps=2", "trainer.epochs=null",
                                 "logging.progress=none", f"trainer.compilation_cache_dir={cache}"]))
  names = {path.name.split("-")[0] for path in cache.iterdir()}
  assert {"jit_init", "jit_train_step", "jit_eval_step", "jit__copy"} <= names, names
