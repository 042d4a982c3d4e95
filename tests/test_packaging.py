"""Every subpackage ships, and a non-editable install finds its configs as package data."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from _helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _package_dirs():
  """Dotted names of every directory under jaxtrain/ with an __init__.py."""
  return sorted(".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "jaxtrain").rglob("__init__.py")
                if "__pycache__" not in p.parts)


def test_every_subpackage_is_listed():
  listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
  missing = [p for p in _package_dirs() if p not in listed]
  assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
  assert "jaxtrain.configs" in listed
  assert PYPROJECT["tool"]["setuptools"]["package-dir"]["jaxtrain.configs"] == "configs"


def test_every_config_group_file_is_package_data():
  patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["jaxtrain.configs"]
  configs = REPO / "configs"
  yamls = {p.relative_to(configs) for p in configs.rglob("*.yaml")}
  matched = {p for p in yamls if any(p.match(pattern) for pattern in patterns)}
  assert yamls and matched == yamls
  assert (configs / "__init__.py").exists()  # so that jaxtrain.configs is importable


def _setuptools_has_bdist_wheel():
  try:
    import setuptools.command.bdist_wheel  # noqa: F401  (setuptools >= 70.1)
    return True
  except ImportError:
    return False


@pytest.mark.slow
def test_non_editable_install_finds_its_configs(tmp_path):
  # Install from a copy so the build leaves nothing (build/, *.egg-info) in the checkout.
  source = tmp_path / "src"
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, source / name)
  for name in ("jaxtrain", "configs"):
    shutil.copytree(REPO / name, source / name, ignore=ignore)
  target = tmp_path / "site"
  if importlib.util.find_spec("wheel") is not None or _setuptools_has_bdist_wheel():
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--quiet", "--target", str(target), str(source)]
  else:
    # No wheel builder in this environment (setuptools < 70.1 without `wheel`): let
    # setuptools lay out the same files a wheel would hold, from the same pyproject
    # (packages, package-dir, package-data), straight into the target.
    command = [sys.executable, "-c", "from setuptools import setup; setup()", "--quiet", "build_py",
               "--build-lib", str(target)]
  install = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=300)
  assert install.returncode == 0, install.stderr[-3000:]
  assert (target / "jaxtrain" / "configs" / "config.yaml").exists()
  assert (target / "jaxtrain" / "configs" / "optim" / "adamw.yaml").exists()

  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  code = ("import jaxtrain, jaxtrain.config.compose as c; cfg = jaxtrain.compose(['trainer.steps=2']); "
          "print(cfg.optim.name); print(jaxtrain.__file__); print(c.config_dir())")
  env = dict(os.environ, PYTHONPATH=str(target))
  proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  name, module_file, config_dir = proc.stdout.strip().splitlines()[-3:]
  assert name == "adamw"
  # The installed copy was used, not the editable checkout.
  assert module_file.startswith(str(target))
  assert config_dir.startswith(str(target))
