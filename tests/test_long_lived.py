"""The collector pauses while the package imports, and a run's pre-existing objects are frozen only while it runs."""

from __future__ import annotations

import gc

import jaxtrain
from jaxtrain.actions.base import PeriodicAction
from jaxtrain.long_lived import frozen_for_run, imports_uncollected

from _helpers import short_overrides


def test_imports_run_without_collection_and_are_frozen_after():
  gc.unfreeze()
  try:
    with imports_uncollected():
      assert not gc.isenabled()
      made_here = [[] for _ in range(10)]
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0 and made_here
  finally:
    gc.unfreeze()


def test_a_collector_switched_off_by_the_user_stays_off():
  gc.disable()
  try:
    with imports_uncollected():
      pass
    assert not gc.isenabled()
  finally:
    gc.enable()
    gc.unfreeze()


def test_objects_are_frozen_for_the_block_and_released_after():
  gc.unfreeze()
  with frozen_for_run():
    assert gc.get_freeze_count() > 0
  assert gc.get_freeze_count() == 0


def test_a_run_leaves_nothing_frozen(tmp_path):
  frozen_during = []

  class Probe(PeriodicAction):
    """Looks at the collector from inside the training loop, every step."""

    def run(self, ctx):
      frozen_during.append(gc.get_freeze_count())

  result = jaxtrain.run(jaxtrain.compose(short_overrides(tmp_path / "run", 4)),
                        extra_actions=[Probe(every_steps=1)])
  assert result.summary["final_step"] == 4
  assert frozen_during and min(frozen_during) > 0
  assert gc.get_freeze_count() == 0
