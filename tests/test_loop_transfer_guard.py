"""The loop refuses a step that would copy its batch from the host implicitly (a hidden sync)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain import loop


def _step(state, batch):
  return state + batch.sum(), {"loss": state}


def test_a_host_batch_is_refused_on_the_first_step():
  step = jax.jit(_step)
  host_batches = itertools.repeat(np.ones(4, np.float32))
  with pytest.raises(Exception, match="host-to-device"):
    loop.fit(jnp.float32(0.0), step, host_batches, [], start_step=0, total_steps=3, steps_per_epoch=3)


def test_device_batches_pass_and_every_step_runs():
  step = jax.jit(_step)
  device_batches = itertools.repeat(jax.device_put(np.ones(4, np.float32)))
  result = loop.fit(jnp.float32(0.0), step, device_batches, [], start_step=2, total_steps=7, steps_per_epoch=3)
  assert result.steps_run == 5
  assert float(result.state) == pytest.approx(20.0)
