"""Redaction of secrets, in one place, for everything a run writes.

A secret is (1) the value of a config key or an environment variable whose name looks
secret (API_KEY, TOKEN, SECRET, PASSWORD, ...), (2) the password in a URL
(`postgresql://user:PASSWORD@host/db`), or (3) an `key=value` override whose key looks
secret. Config snapshots, events, the experiment database and every metric writer pass
what they write through `redact` (or `redact_text`), which puts "***" in their place.
Redaction is stateless: the environment is read at each call, so a secret set after
start-up is still caught.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Mapping

MASK = "***"

# Words that make a name secret when they appear as a whole component of it
# ("max_tokens" is not a secret; "hf_token" and "WANDB_API_KEY" are).
_SECRET_WORDS = {"token", "secret", "password", "passwd", "pwd", "credential", "credentials", "apikey",
                 "passphrase"}
_SECRET_PAIRS = {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("auth", "key")}
# Environment values shorter than this are too likely to occur by chance ("1", "true").
_MIN_ENV_SECRET_LENGTH = 6
# Shell variables whose names contain a secret word but hold no secret: the working
# directory ("pwd") would otherwise be masked in every path below it (run.dir, say),
# and a run's recorded overrides could no longer be replayed.
_NOT_SECRET_ENV = {"PWD", "OLDPWD"}

# Hydra escapes ':' in the overrides it records (http\://user\:pw@host), hence the optional backslashes.
_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*\\?://[^:/@\s\\]*)\\?:(?P<password>[^@/\s]+)@")
_OVERRIDE = re.compile(r"^(?P<key>[+~]{0,2}[\w.\-/]+)=(?P<value>.*)$", re.DOTALL)
# key=value inside a longer text, e.g. Hydra's override_dirname "a=1,db.password=x,b=2".
_ASSIGNMENT = re.compile(r"(?P<key>[A-Za-z_][\w.\-/]*)=(?P<value>[^,\s]*)")


@functools.lru_cache(maxsize=4096)  # the same few keys come by in every logged row and event
def is_secret_name(name: str) -> bool:
  """True for names like API_KEY, hf_token, db.password, WANDB_API_KEY, aws_secret_access_key."""
  spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))  # camelCase -> camel_Case
  words = [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]
  if any(w in _SECRET_WORDS for w in words):
    return True
  return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
  """Values of the environment variables whose names look secret, longest first."""
  environ = os.environ if environ is None else environ
  values = {v for k, v in environ.items()
            if k not in _NOT_SECRET_ENV and is_secret_name(k) and len(v) >= _MIN_ENV_SECRET_LENGTH}
  return sorted(values, key=len, reverse=True)


def redact_text(text: str, env_secrets: list[str] | None = None) -> str:
  """`text` with URL passwords, secret overrides and secret environment values masked."""
  env_secrets = environment_secrets() if env_secrets is None else env_secrets
  override = _OVERRIDE.match(text)
  if override and is_secret_name(override.group("key").rsplit(".", 1)[-1]):
    return f"{override.group('key')}={MASK}"
  text = _URL_CREDENTIALS.sub(rf"\g<head>:{MASK}@", text)
  text = _ASSIGNMENT.sub(lambda m: f"{m['key']}={MASK}" if is_secret_name(m["key"]) else m.group(0), text)
  for value in env_secrets:
    text = text.replace(value, MASK)
  return text


def redact(value: Any, env_secrets: list[str] | None = None) -> Any:
  """A copy of `value` (dicts, lists, strings, numbers) with every secret masked.

  Values under secret-looking keys become "***" whatever they are (null stays null:
  an unset key reveals nothing).
  """
  # Only text can carry an environment value; matching every variable's name costs ~0.6 ms, and
  # numbers-only records (an epoch's end, every 5 steps of the digits) are written often.
  if env_secrets is None and _holds_text(value):
    env_secrets = environment_secrets()
  if isinstance(value, str):
    return redact_text(value, env_secrets)
  if isinstance(value, Mapping):
    return {key: (MASK if is_secret_name(str(key)) and item is not None else redact(item, env_secrets))
            for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [redact(item, env_secrets) for item in value]
  return value


def _holds_text(value: Any) -> bool:
  if isinstance(value, str):
    return True
  if isinstance(value, Mapping):
    return any(_holds_text(item) for item in value.values())
  if isinstance(value, (list, tuple)):
    return any(_holds_text(item) for item in value)
  return False


def redact_yaml_files(folder: Path) -> None:
  """Rewrites the YAML files of `folder` (a run's .hydra/) with their secrets masked.

  Hydra's command line writes config.yaml, hydra.yaml and overrides.yaml before the run
  starts; interpolations are kept as written (they are not resolved here).
  """
  import yaml
  from omegaconf import OmegaConf

  loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
  for path in sorted(folder.glob("*.yaml")):
    # A quick look first (OmegaConf's loader takes ~20 ms a file, libyaml's ~1 ms). Its every
    # scalar is text, so it flags all that the exact pass below could mask, and more (a number
    # equal to a secret value, a null under a secret name): only flagged files are parsed again.
    quick = yaml.load(path.read_text(), Loader=loader)
    if redact(quick) == quick:
      continue
    original = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    cleaned = redact(original)
    if cleaned != original:
      tmp = path.with_suffix(".yaml.tmp")
      tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(cleaned)))
      tmp.replace(path)
