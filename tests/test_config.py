import importlib
import math
from collections import Counter
from pathlib import Path

import ml_collections
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from vae_jax.configs import default
from vae_jax import config as config_lib
from vae_jax import train


# -- dotted field names ("model.latent_dims") on nested configs (ConfigDicts or
# plain dicts); the VQ test modules use these too.
def _parent(cfg, field: str):
  *path, leaf = field.split(".")
  for p in path:
    cfg = cfg[p]
  return cfg, leaf


def set_field(cfg, field: str, value) -> str:
  """cfg[a][b]... = value for field "a.b..."; returns ``field``."""
  parent, leaf = _parent(cfg, field)
  parent[leaf] = value
  return field


def del_field(cfg, field: str) -> None:
  parent, leaf = _parent(cfg, field)
  del parent[leaf]


def override(cfg, fields: dict):
  """Every ``{dotted field: value}`` of ``fields`` set on ``cfg``; returns ``cfg``."""
  for field, value in fields.items():
    set_field(cfg, field, value)
  return cfg

CONFIGS = sorted(p.stem for p in Path(__file__).resolve().parents[1].glob("vae_jax/configs/*.py")
                 if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_experiment_config_is_valid(name):
  cfg = importlib.import_module(f"vae_jax.configs.{name}").get_config()
  config_lib.validate(cfg)
  assert config_lib.num_epochs(cfg) >= 1
  config_lib.make_model(cfg)


@pytest.mark.parametrize("field,value,match", [
    ("data.name", "imagenet", "data.name='imagenet'"),
    ("data.mode", "fuzzy", "data.mode"),
    ("model.network", "transformer", "model.network='transformer'"),
    ("model.activation", "swishy", "model.activation"),
    ("model.likelihood", "poisson", "model.likelihood"),
    ("model.latent_dims", (0,), "model.latent_dims"),
    ("model.hidden_sizes", ((200,), (100,)), "model.hidden_sizes"),
    ("loss.name", "wgan", "loss.name"),
    ("loss.beta", -1.0, "loss.beta=-1.0"),
    ("loss.num_samples", 0, "loss.num_samples=0"),
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate"),
    ("batch_size", 0, "batch_size=0"),
    ("num_epochs", 0, "num_epochs=0"),
    ("eval.num_importance_samples", 0, "eval.num_importance_samples"),
])
def test_invalid_fields_are_named(field, value, match):
  cfg = override(default.get_config(), {field: value})
  with pytest.raises(config_lib.ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
    config_lib.validate(cfg)


def test_impossible_combinations_are_named():
  cfg = default.get_config()
  cfg.data.mode = "dynamic"  # binarized_mnist is binary already
  with pytest.raises(config_lib.ConfigError, match="binary already"):
    config_lib.validate(cfg)
  cfg = default.get_config()
  cfg.model.latent_dims, cfg.model.hidden_sizes = (100, 50), ((200, 200), (100, 100))
  with pytest.raises(config_lib.ConfigError, match="analytic_kl"):
    config_lib.validate(cfg)
  cfg = default.get_config()
  cfg.data.name, cfg.data.mode = "mnist", "grey"
  with pytest.raises(config_lib.ConfigError, match="Gaussian likelihood"):
    config_lib.validate(cfg)


def test_burda_schedule_lengths_and_rates():
  cfg = importlib.import_module("vae_jax.configs.burda_vae").get_config()
  assert config_lib.burda_stage_epochs(cfg.optimizer) == [1, 3, 9, 27, 81, 243, 729, 2187]
  assert config_lib.num_epochs(cfg) == 3280
  sched = config_lib.make_schedule(cfg.optimizer, steps_per_epoch=10, total_epochs=3280)
  for stage, first_epoch in enumerate([0, 1, 4, 13, 40, 121, 364, 1093]):
    assert float(sched(first_epoch * 10)) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-5)
  cfg.num_epochs = 10
  with pytest.raises(config_lib.ConfigError, match="num_epochs=10"):
    config_lib.validate(cfg)


# -- property-based: random invalid configs --------------------------------------------------------
# What the configs promise (vae_jax/configs/default.py and README), written down here
# independently of vae_jax.config.FIELDS: integer and number ranges (None = unbounded above),
# choices, flags, strings and width tuples.
M = 2**24  # the upper bound on counts (epochs, batch sizes, checkpoints)
INTS = {"seed": (0, 2**32 - 1), "num_devices": (0, 2**16), "data.binarize_seed": (0, 2**32 - 1), "loss.num_samples": (1, 100_000),
        "optimizer.burda_stages": (1, 12), "batch_size": (1, M), "eval_every_epochs": (1, M),
        "eval_num_samples": (1, 100_000), "checkpoint_every_epochs": (1, M), "keep_checkpoints": (1, 1000),
        "eval.num_importance_samples": (1, 10**7), "eval.batch_size": (1, M),
        "eval.chunk_size": (1, 100_000), "num_epochs": (1, M), "model.num_components": (1, M),
        "model.num_classes": (0, 2**16), "loss.num_groups": (1, 100_000)}
# (low, low excluded, high, high excluded)
FLOATS = {"model.fixed_log_sigma": (-10, False, 5, False), "loss.beta": (0, False, 1e6, False),
          "loss.warmup_epochs": (0, False, 1e6, False), "optimizer.learning_rate": (0, True, 10, False),
          "optimizer.b1": (0, False, 1, True), "optimizer.b2": (0, False, 1, True),
          "optimizer.eps": (0, True, 1, False), "optimizer.weight_decay": (0, False, 1e3, False),
          "optimizer.grad_clip_norm": (0, False, 1e12, False),
          "optimizer.burda_epoch_scale": (0, True, 1e3, False), "skip_threshold": (0, False, 1e30, False),
          "loss.corruption_level": (0, False, 1, False), "loss.ciwae_beta": (0, False, 1, False)}
CHOICES = {"data.name": ("binarized_mnist", "mnist", "fashion_mnist", "cifar10"),
           "data.mode": ("static", "dynamic", "grey"), "model.network": ("mlp", "conv"),
           "model.conv_implementation": ("auto", "patches", "xla"),
           "model.matmul_dtype": ("float32", "bfloat16"),
           "model.activation": ("tanh", "relu", "elu", "softplus", "gelu", "silu", "linear", "gated"),
           "model.likelihood": ("bernoulli", "gaussian_fixed", "gaussian_shared", "gaussian_pixel"),
           "model.kind": ("vae", "hvae", "autoencoder"),
           "model.prior": ("standard", "mog", "vamp", "conditional"),
           "model.pseudo_inputs_init": ("noise", "data"),
           "loss.name": ("elbo", "iwae", "miwae", "ciwae", "piwae", "autoencoder"),
           "loss.gradient": ("reparam", "stl", "dreg"), "loss.corruption": ("none", "mask", "flip", "gaussian"),
           "optimizer.name": ("adam", "adamw", "sgd"),
           "optimizer.schedule": ("constant", "cosine", "burda")}
BOOLS = ("data.download", "model.init_output_bias", "model.clip_logvar", "loss.analytic_kl", "progress",
         "skip_nonfinite_updates", "debug_nans")
STRS = ("data.data_dir", "notes")
USER_SECTIONS = ("loss.kwargs",)  # the user's own fields: any name (tests/test_api.py)
SIZES = ("model.latent_dims", "model.conv_features")
NESTED_SIZES = ("model.hidden_sizes",)
ALL_FIELDS = (set(INTS) | set(FLOATS) | set(CHOICES) | set(BOOLS) | set(STRS) | set(SIZES)
              | set(NESTED_SIZES) | set(USER_SECTIONS))

ODD_OBJECTS = st.sampled_from([None, "", "1", "nan", [], {}, (), object(), b"1", 1j, math.nan])


def leaf_names(cfg, prefix=""):
  for k, v in cfg.items():
    if f"{prefix}{k}" in USER_SECTIONS:
      yield f"{prefix}{k}"
    elif isinstance(v, dict):
      yield from leaf_names(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def test_the_property_test_covers_every_field_of_every_config():
  for name in CONFIGS:
    cfg = importlib.import_module(f"vae_jax.configs.{name}").get_config().to_dict()
    assert set(leaf_names(cfg)) == ALL_FIELDS, name
  assert set(config_lib.FIELDS) == ALL_FIELDS


def not_int():
  return st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=5), ODD_OBJECTS,
                   st.lists(st.integers(1, 5), max_size=3))


def bad_int(lo, hi):
  return st.one_of(not_int(), st.integers(max_value=lo - 1), st.integers(min_value=hi + 1))


def bad_float(lo, lo_open, hi, hi_open):
  return st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 10**400]), st.booleans(),
                   st.text(max_size=5), ODD_OBJECTS, st.floats(max_value=lo, exclude_max=not lo_open),
                   st.integers(max_value=math.ceil(lo) - 1),
                   st.floats(min_value=hi, exclude_min=not hi_open))


def bad_sizes():
  width = st.integers(1, 64)
  bad_width = st.one_of(st.integers(max_value=0), st.integers(min_value=2**16 + 1), st.floats(),
                        st.booleans(), st.text(max_size=3), st.none())
  return st.one_of(
      ODD_OBJECTS, st.integers(), st.text(max_size=5),
      st.builds(lambda a, b, i: tuple(a[:i] + [b] + a[i:]), st.lists(width, max_size=3), bad_width,
                st.integers(0, 3)))


def bad_nested_sizes(num_layers):
  good = st.lists(st.integers(1, 64), min_size=1, max_size=3).map(tuple)
  return st.one_of(
      ODD_OBJECTS, st.integers(), st.just(((),) * num_layers),
      bad_sizes().filter(lambda v: isinstance(v, tuple) and len(v) > 0).map(lambda v: (v,) * num_layers),
      # mismatched: not one tuple per stochastic layer
      st.lists(good, min_size=1, max_size=4).filter(lambda v: len(v) != num_layers).map(tuple))


@st.composite
def invalid_configs(draw):
  """(config dict, kind, fields the error may name): one thing wrong in a valid experiment config."""
  name = draw(st.sampled_from(CONFIGS))
  cfg = importlib.import_module(f"vae_jax.configs.{name}").get_config().to_dict()
  num_layers = len(cfg["model"]["latent_dims"])
  kind = draw(st.sampled_from(["int", "float", "choice", "bool", "str", "sizes", "nested", "unknown",
                               "missing", "section", "combination"]))

  def put(field, value):
    return set_field(cfg, field, value)

  if kind == "int":
    field = draw(st.sampled_from(sorted(INTS)))
    if field == "num_epochs" and cfg["optimizer"]["schedule"] == "burda":
      value = draw(st.one_of(not_int(), st.integers(max_value=-2), st.integers(0, 3000)))
    else:
      value = draw(bad_int(*INTS[field]))
    return cfg, kind, {put(field, value)}
  if kind == "float":
    field = draw(st.sampled_from(sorted(FLOATS)))
    return cfg, kind, {put(field, draw(bad_float(*FLOATS[field])))}
  if kind == "choice":
    field = draw(st.sampled_from(sorted(CHOICES)))
    value = draw(st.one_of(st.text(max_size=12).filter(lambda s: s not in CHOICES[field]), ODD_OBJECTS,
                           st.integers(), st.sampled_from([o.upper() for o in CHOICES[field]])))
    return cfg, kind, {put(field, value)}
  if kind == "bool":
    field = draw(st.sampled_from(BOOLS))
    return cfg, kind, {put(field, draw(st.one_of(st.integers(0, 1), st.text(max_size=5), ODD_OBJECTS)))}
  if kind == "str":
    return cfg, kind, {put(STRS[0], draw(st.one_of(st.integers(), st.booleans(), st.none(),
                                                      st.lists(st.text(max_size=2), max_size=2))))}
  if kind == "sizes":
    field = draw(st.sampled_from(SIZES))
    return cfg, kind, {put(field, draw(bad_sizes()))}
  if kind == "nested":
    return cfg, kind, {put(NESTED_SIZES[0], draw(bad_nested_sizes(num_layers)))}
  if kind == "unknown":  # a misspelled or invented field, at the top or inside a section
    section = draw(st.sampled_from([None, "data", "model", "loss", "optimizer", "eval"]))
    leaf = draw(st.from_regex(r"[a-z][a-z_0-9]{0,12}", fullmatch=True))
    field = leaf if section is None else f"{section}.{leaf}"
    if field in ALL_FIELDS or (section is None and leaf in cfg):
      field = field + "_x"
    put(field, draw(st.one_of(st.integers(), st.text(max_size=3), st.booleans())))
    return cfg, kind, {field}
  if kind == "missing":
    field = draw(st.sampled_from(sorted(ALL_FIELDS)))
    del_field(cfg, field)
    return cfg, kind, {field}
  if kind == "section":  # a whole section replaced by a value
    section = draw(st.sampled_from(["data", "model", "loss", "optimizer", "eval"]))
    cfg[section] = draw(st.one_of(st.integers(), st.text(max_size=3), st.none()))
    return cfg, kind, {section}
  # combination: each field legal alone, the pair impossible
  combo = draw(st.sampled_from(["conv_sizes", "grey_bernoulli", "binary_dynamic", "analytic_2layer",
                                "burda_length", "minus_one_not_burda", "hidden_vs_latent",
                                "unlabelled_conditional", "class_prior_without_classes",
                                "bf16_not_mlp_vae"]))
  if combo == "conv_sizes":  # 28 x 28 images cannot be halved 3+ times
    put("model.network", "conv")
    return cfg, kind, {put("model.conv_features", tuple(draw(st.lists(st.integers(1, 64), min_size=3,
                                                                        max_size=5))))}
  if combo == "grey_bernoulli":
    put("data.name", draw(st.sampled_from(["mnist", "fashion_mnist", "cifar10"])))
    put("model.likelihood", "bernoulli")
    return cfg, kind, {put("data.mode", "grey"), "model.likelihood"}
  if combo == "binary_dynamic":
    put("data.name", "binarized_mnist")
    return cfg, kind, {put("data.mode", draw(st.sampled_from(["dynamic", "grey"]))), "model.likelihood"}
  if combo == "analytic_2layer":
    put("loss.name", "elbo")
    put("model.latent_dims", (8, 4))
    put("model.hidden_sizes", ((16,), (8,)))
    return cfg, kind, {put("loss.analytic_kl", True)}
  if combo == "burda_length":
    put("optimizer.schedule", "burda")
    scale = draw(st.floats(0.01, 2.0))
    stages = draw(st.integers(1, 8))
    put("optimizer.burda_epoch_scale", scale)
    put("optimizer.burda_stages", stages)
    length = sum(max(1, round(3**i * scale)) for i in range(stages))
    return cfg, kind, {put("num_epochs", draw(st.integers(0, 5000).filter(lambda n: n != length)))}
  if combo == "unlabelled_conditional":  # binarized_mnist has no labels to condition on
    put("data.name", "binarized_mnist")
    put("data.mode", "static")
    return cfg, kind, {put("model.num_classes", draw(st.integers(1, 2**16)))}
  if combo == "class_prior_without_classes":
    put("model.num_classes", 0)
    return cfg, kind, {put("model.prior", "conditional")}
  if combo == "bf16_not_mlp_vae":  # bf16 matmuls are built for the MLP networks of models.VAE
    if draw(st.booleans()):
      put("model.network", "conv")
      put("model.conv_features", (32, 64))
    else:
      put("model.kind", "hvae")
    return cfg, kind, {put("model.matmul_dtype", "bfloat16")}
  if combo == "minus_one_not_burda":
    put("optimizer.schedule", draw(st.sampled_from(["constant", "cosine"])))
    return cfg, kind, {put("num_epochs", -1)}
  latent = tuple(draw(st.lists(st.integers(1, 32), min_size=1, max_size=3)))
  put("model.latent_dims", latent)
  put("loss.analytic_kl", False)
  hidden = tuple((16,) for _ in range(draw(st.integers(1, 4).filter(lambda n: n != len(latent)))))
  return cfg, kind, {put("model.hidden_sizes", hidden)}


def test_random_invalid_configs_get_one_named_error_before_any_compute(tmp_path, monkeypatch):
  """Every random invalid config -> ConfigError naming the field, before data, compile or workdir."""
  def no_data(*a, **k):
    raise AssertionError("data was loaded for an invalid config")

  monkeypatch.setattr(train, "load_datasets", no_data)
  monkeypatch.setattr(config_lib, "make_model", no_data)
  workdir = tmp_path / "run"
  tried = Counter()

  @settings(max_examples=700, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
  @given(invalid_configs())
  def check(case):
    cfg, kind, fields = case
    with pytest.raises(config_lib.ConfigError) as err:
      train.train_and_evaluate(ml_collections.ConfigDict(cfg), workdir)
    message = str(err.value)
    assert any(f"config.{f}" in message for f in fields), (kind, fields, message)
    assert not workdir.exists()
    tried[kind] += 1

  check()
  total = sum(tried.values())
  print(f"\n{total} random invalid configs, {total} named ConfigErrors: {dict(sorted(tried.items()))}")
  assert total >= 600 and len(tried) == 11, tried


@settings(max_examples=150, deadline=None, database=None)
@given(st.data())
def test_random_legal_values_are_accepted(data):
  name = data.draw(st.sampled_from(CONFIGS))
  cfg = importlib.import_module(f"vae_jax.configs.{name}").get_config().to_dict()
  field = data.draw(st.sampled_from(sorted(set(INTS) | set(FLOATS) | set(BOOLS) | set(STRS))))
  if field in INTS:
    lo, hi = INTS[field]
    value = data.draw(st.integers(lo, hi))
  elif field in FLOATS:
    lo, lo_open, hi, hi_open = FLOATS[field]
    value = data.draw(st.floats(lo, hi, exclude_min=lo_open, exclude_max=hi_open))
  else:
    value = data.draw(st.booleans() if field in BOOLS else st.text(max_size=8))
  if field == "loss.analytic_kl" and cfg["loss"]["name"] == "elbo" and (
      len(cfg["model"]["latent_dims"]) > 1 or cfg["model"]["prior"] != "standard"):
    value = False  # the closed form needs one stochastic layer and the N(0, I) prior
  if field == "model.num_classes" and (cfg["data"]["name"] == "binarized_mnist"
                                      or cfg["model"]["kind"] != "vae" or cfg["model"]["prior"] == "vamp"):
    value = 0  # conditioning needs labels and the plain VAE
  if field == "model.num_classes" and cfg["model"]["prior"] == "conditional":
    value = max(value, 1)  # p(z | y) needs classes
  if field == "loss.num_groups" and cfg["loss"]["name"] not in ("miwae", "piwae"):
    value = 1  # groups of draws are MIWAE's and PIWAE's
  if cfg["optimizer"]["schedule"] == "burda":
    if field == "num_epochs":
      cfg["optimizer"]["schedule"] = "constant"
    else:
      cfg["num_epochs"] = -1  # the schedule's length, whatever its stages and scale
  set_field(cfg, field, value)
  config_lib.validate(ml_collections.ConfigDict(cfg))
