"""Env profiles (configs/env/): run.root and the compilation cache follow the machine's profile."""

from __future__ import annotations

import jaxtrain


def test_local_is_the_default_profile():
  cfg = jaxtrain.compose([])
  assert cfg.env.name == "local" and cfg.run.root == "outputs"
  assert cfg.trainer.compilation_cache_dir is None  # the cache's own default folder


def test_slurm_profile_puts_outputs_on_scratch(monkeypatch, tmp_path):
  monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
  monkeypatch.setenv("TMPDIR", str(tmp_path / "node"))
  cfg = jaxtrain.compose(["env=slurm"])
  assert cfg.run.root == f"{tmp_path}/scratch/jaxtrain/outputs"
  assert cfg.env.data_root == f"{tmp_path}/scratch/data"
  assert cfg.trainer.compilation_cache_dir == f"{tmp_path}/node/jaxtrain-cache"
  assert cfg.hydra.run.dir.startswith(f"{tmp_path}/scratch/jaxtrain/outputs/runs/run_")
  # An explicit run.root still wins over the profile.
  assert jaxtrain.compose(["env=slurm", f"run.root={tmp_path}/mine"]).run.root == f"{tmp_path}/mine"


def test_a_site_profile_from_its_own_config_directory(tmp_path):
  (tmp_path / "env").mkdir()
  (tmp_path / "env" / "mysite.yaml").write_text(
      f"name: mysite\ndata_root: {tmp_path}/data\noutput_root: {tmp_path}/out\ncache_dir: null\n")
  cfg = jaxtrain.compose([f"hydra.searchpath=[file://{tmp_path}]", "env=mysite"])
  assert cfg.env.name == "mysite" and cfg.run.root == f"{tmp_path}/out"
