"""Config schemas: every field of a trainer's config, its check, and its value in old workdirs.

One mechanism serves every trainer (the VAE's ``config.SCHEMA``, the VQ-VAE's and
prior's in ``vae_jax.vq.config``, semi-supervised's in ``vae_jax.apps.ssl_config``).
A ``Schema`` maps dotted field names ("model.latent_dims") to a spec (``Int``,
``Float``, ``Bool``, ``Str``, ``Choice``, ``Sizes``, ``UserFields``) and declares, on the spec
itself:

* ``old=value``: the field was added after workdirs were first written; a
  workdir whose ``config.json`` lacks it ran with ``value``, so it loads,
  resumes and evaluates as before;
* ``resumable=True``: the field may change between a run and its resumption
  (epochs, intervals, where the data lives).

A ``UserFields`` section (the VAE's ``config.loss.kwargs``) is the declared place for
a user's own fields: any name, holding numbers, strings, booleans or tuples of
them, recorded in ``config.json`` and compared on resume like every field.

``Schema.validate`` refuses unknown and missing fields and values of the
wrong type or range with one ``ConfigError`` naming the field, then runs the
schema's combination checks. It is pure Python: nothing is compiled and no data
is read. ``Schema.load`` reads a workdir's config (old fields filled in) and
``Schema.diff`` lists what differs between a workdir's run and a new config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np


class ConfigError(ValueError):
  """A config field holds a value the library cannot use."""


def fail(field: str, value, allowed: str):
  """Raises the ConfigError of an invalid ``config.<field>``: its value and what is allowed."""
  shown = repr(value)
  if len(shown) > 200:
    shown = shown[:200] + "..."
  raise ConfigError(f"config.{field}={shown} is invalid: {allowed}")


_INT_TYPES = (int, np.integer)
_FLOAT_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)
MAX_SEED = 2**32 - 1    # jax.random.key keeps 32 bits: larger seeds alias smaller ones
MAX_WIDTH = 2**16       # units in a layer, latents, channels
MAX_COUNT = 2**24       # epochs, samples, batch sizes, checkpoints
_NEW = object()         # a field present in every workdir (no ``old`` value)


def _is_int(v) -> bool:
  return isinstance(v, _INT_TYPES) and not isinstance(v, _BOOL_TYPES)


def _is_number(v) -> bool:
  return isinstance(v, _FLOAT_TYPES) and not isinstance(v, _BOOL_TYPES)


def _finite(v) -> bool:
  try:
    return math.isfinite(v)
  except OverflowError:  # an int too large for a float
    return False


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a field may hold (``problem``), and how it relates to older workdirs."""
  old: Any = dataclasses.field(default=_NEW, kw_only=True)
  resumable: bool = dataclasses.field(default=False, kw_only=True)

  def problem(self, v) -> str | None:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Int(Spec):
  lo: int = 0
  hi: int = MAX_COUNT

  def problem(self, v):
    if not _is_int(v) or not self.lo <= v <= self.hi:
      return f"expected an integer in [{self.lo}, {self.hi}]"


@dataclasses.dataclass(frozen=True)
class Float(Spec):
  lo: float = -math.inf
  hi: float = math.inf
  lo_open: bool = False
  hi_open: bool = False

  def problem(self, v):
    ok = _is_number(v) and _finite(v)
    ok = ok and (v > self.lo if self.lo_open else v >= self.lo)
    ok = ok and (v < self.hi if self.hi_open else v <= self.hi)
    if not ok:
      return (f"expected a finite number in {'(' if self.lo_open else '['}{self.lo}, {self.hi}"
              f"{')' if self.hi_open or self.hi == math.inf else ']'}")


@dataclasses.dataclass(frozen=True)
class Bool(Spec):
  def problem(self, v):
    if not isinstance(v, _BOOL_TYPES):
      return "expected True or False"


@dataclasses.dataclass(frozen=True)
class Str(Spec):
  def problem(self, v):
    if not isinstance(v, str):
      return "expected a string"


@dataclasses.dataclass(frozen=True)
class Choice(Spec):
  options: tuple = ()

  def problem(self, v):
    if not isinstance(v, str) or v not in self.options:
      return f"choose one of {sorted(self.options)}"


@dataclasses.dataclass(frozen=True)
class Sizes(Spec):
  """A tuple of positive integers (layer widths); ``nested``: a tuple of such tuples."""
  nested: bool = False

  def problem(self, v):
    def sizes_ok(t):
      return (isinstance(t, (tuple, list)) and 1 <= len(t) <= 64
              and all(_is_int(w) and 1 <= w <= MAX_WIDTH for w in t))
    ok = (isinstance(v, (tuple, list)) and 1 <= len(v) <= 64 and all(map(sizes_ok, v))) \
        if self.nested else sizes_ok(v)
    if not ok:
      inner = f"a non-empty tuple of integers in [1, {MAX_WIDTH}]"
      return f"expected a non-empty tuple of such tuples ({inner})" if self.nested else f"expected {inner}"


_USER_TYPES = (str, bool, np.bool_, int, float, np.integer, np.floating)


@dataclasses.dataclass(frozen=True)
class UserFields(Spec):
  """A section whose fields the user names (``config.loss.kwargs.free_bits = 0.25``): each holds
  a finite number, a string, a boolean or a tuple of them, so that ``config.json`` records it."""

  def problem(self, v):
    if not isinstance(v, Mapping):
      return "expected a section of fields (a ConfigDict)"
    for name, value in v.items():
      items = value if isinstance(value, (tuple, list)) else (value,)
      ok = all(isinstance(e, _USER_TYPES) and (not _is_number(e) or _finite(e)) for e in items)
      if not ok:
        return (f"{name}={value!r}: a user field holds a finite number, a string, a boolean or a "
                "tuple of them")


# The fields every trainer's loop reads (``vae_jax.loop``), declared once.
def training_fields(*, schedules=("constant", "cosine")) -> dict[str, Spec]:
  return {
      "seed": Int(0, MAX_SEED),
      "num_devices": Int(0, 2**16, old=0, resumable=True),  # 0 = all
      "optimizer.name": Choice(("adam", "adamw", "sgd")),
      "optimizer.learning_rate": Float(0.0, 10.0, lo_open=True),
      "optimizer.b1": Float(0.0, 1.0, hi_open=True),   # 1 would divide by 0 in Adam's bias correction
      "optimizer.b2": Float(0.0, 1.0, hi_open=True),
      "optimizer.eps": Float(0.0, 1.0, lo_open=True),
      "optimizer.weight_decay": Float(0.0, 1e3),
      "optimizer.grad_clip_norm": Float(0.0, 1e12),
      "optimizer.schedule": Choice(tuple(schedules)),
      "batch_size": Int(1),
      "num_epochs": Int(1, resumable=True),
      "eval_every_epochs": Int(1, resumable=True),
      "checkpoint_every_epochs": Int(1, resumable=True),
      "keep_checkpoints": Int(1, 1000, resumable=True),
      "progress": Bool(resumable=True),
      "notes": Str(old="", resumable=True),  # free text about the run, recorded in config.json
      "skip_nonfinite_updates": Bool(old=False, resumable=True),
      "skip_threshold": Float(0.0, 1e30, old=0.0, resumable=True),
      "debug_nans": Bool(old=False, resumable=True),
      "eval.batch_size": Int(1, resumable=True),
  }


def leaves(config, prefix="", whole=()):
  """(dotted name, value) of every leaf; sections are anything with ``items``. A section named in
  ``whole`` (user-field sections) is one leaf: a dict."""
  for k, v in config.items():
    name = f"{prefix}{k}"
    if name in whole:
      yield name, dict(v.items()) if hasattr(v, "items") else v
    elif hasattr(v, "items") and not isinstance(v, str):
      yield from leaves(v, name + ".", whole)
    else:
      yield name, v


def _tuplify(d: dict) -> dict:
  for k, v in d.items():
    if isinstance(v, dict):
      _tuplify(v)
    elif isinstance(v, list):
      d[k] = tuple(tuple(e) if isinstance(e, list) else e for e in v)
  return d


@dataclasses.dataclass(frozen=True)
class Schema:
  """Every field of one trainer's config.

  Attributes:
    fields: dotted name -> spec (with ``old`` / ``resumable`` where they apply).
    example: a config file holding every field (named in errors).
    checks: ``values -> None``, raising ConfigError on an impossible combination
      of fields (run after every field passed its own check).
  """
  fields: Mapping[str, Spec]
  example: str
  checks: Callable[[dict], None] | None = None

  @property
  def added(self) -> dict[str, Any]:
    """{field: the value a workdir written before the field existed ran with}."""
    return {n: s.old for n, s in self.fields.items() if s.old is not _NEW}

  @property
  def user_sections(self) -> tuple[str, ...]:
    return tuple(n for n, s in self.fields.items() if isinstance(s, UserFields))

  @property
  def resumable(self) -> tuple[str, ...]:
    return tuple(n for n, s in self.fields.items() if s.resumable)

  def values(self, config) -> dict:
    """{field: value}, refusing a config that is not a ConfigDict, unknown and missing fields."""
    if not hasattr(config, "items"):
      raise ConfigError(f"config={config!r} is invalid: expected an ml_collections.ConfigDict "
                        f"(see {self.example})")
    values = dict(leaves(config, whole=self.user_sections))
    for name in self.user_sections:  # an empty section has no leaves to show it
      section, _, field = name.rpartition(".")
      parent = config.get(section) if section else config
      if name not in values and hasattr(parent, "items") and field in parent:
        values[name] = {}
    sections = {f.rsplit(".", 1)[0] for f in self.fields if "." in f}
    for name in values:
      if name in self.fields:
        continue
      if name in sections:
        fail(name, values[name], "expected a section of fields (a ConfigDict)")
      close = difflib.get_close_matches(name, self.fields, n=1)
      raise ConfigError(f"config.{name} is not a known field"
                        + (f"; did you mean config.{close[0]}?" if close else "")
                        + f" (see {self.example}; a new field needs an entry in its schema)")
    for name in self.fields:
      if name not in values:
        raise ConfigError(f"config.{name} is missing; every field of {self.example} must be present")
    return values

  def validate(self, config) -> dict:
    """Raises ConfigError on the first invalid field or combination; returns {field: value}."""
    values = self.values(config)
    for name, spec in self.fields.items():
      problem = spec.problem(values[name])
      if problem:
        fail(name, values[name], problem)
    if self.checks is not None:
      self.checks(values)
    return values

  def diff(self, saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'name: saved in the workdir, current now' for each setting that differs, except the
    resumable ones; a field missing from the saved config counts as its ``old`` value."""
    diffs, added, resumable = [], self.added, self.resumable
    for k in sorted(set(saved) | set(current)):
      name = f"{prefix}{k}"
      if name in resumable:
        continue
      a, b = saved.get(k, "<missing>"), current.get(k, "<missing>")
      if a == "<missing>" and name in added and b == added[name]:
        continue
      if isinstance(a, dict) and isinstance(b, dict):
        diffs += self.diff(a, b, name + ".")
      elif a != b:  # by value: 0 and 0.0 are the same setting
        diffs.append(f"{name}: {a!r} in the workdir, {b!r} now")
    return diffs

  def check_resume(self, config, workdir: Path) -> None:
    """Refuses a workdir that holds a run of another config, listing the differences."""
    path = Path(workdir) / "config.json"
    if not path.exists():
      return
    diffs = self.diff(json.loads(path.read_text()), json.loads(config.to_json()))
    if diffs:
      raise ConfigError(f"{workdir} holds a run with another config; use a new workdir or the same "
                        "config. Differences:\n  " + "\n  ".join(diffs))

  def load(self, workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (``workdir/config.json``); a field it lacks takes
    its ``old`` value."""
    path = Path(workdir) / "config.json"
    if not path.exists():
      raise FileNotFoundError(f"{path} does not exist: is {workdir} a training workdir?")
    cfg = json.loads(path.read_text())
    for name, value in self.added.items():
      section, _, field = name.rpartition(".")
      parent = cfg
      for part in section.split(".") if section else ():
        parent = parent.get(part, {}) if isinstance(parent, dict) else {}
      if isinstance(parent, dict):  # a section the workdir lacks altogether stays absent
        parent.setdefault(field, value)
    return ml_collections.ConfigDict(_tuplify(cfg))
