"""Every process and every data set declares its options; one function each rejects the rest,
in one line that lists what is accepted. Process configs rebuild from the declared parameters,
including configs written by earlier versions, and every process describes itself in one line."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from orient.dynamics import (
    PROCESSES,
    REGISTRY,
    create_process,
    process_from_config,
    process_options,
)
from orient.dynamics.base import CONFIG_FORMAT
from orient.pipeline.datasets import (
    DATASET_OPTIONS,
    DATASETS,
    DataError,
    describe_dataset,
    load_dataset,
)


def example(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if name == "gou":
        return torch.randn(16, 3, generator=g)
    return torch.rand(4, 1, 8, 8, generator=g) * 2 - 1


def build(name: str, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SPDE's fitted prior on 4 examples
        return create_process(name, steps=None, example=example(name), **options)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_an_unknown_process_option_is_one_line_listing_the_accepted(name):
    accepted = ", ".join(sorted(process_options(name))) or "none"
    with pytest.raises(ValueError) as err:
        build(name, windw=3)
    assert str(err.value) == f"process {name} has no option 'windw'; it takes: {accepted}"
    with pytest.raises(ValueError, match=r"has no options 'a_', 'b_'; it takes: "):
        build(name, a_=1, b_=2)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_the_registry_keyword_is_not_an_option(name):
    """``variant`` / ``instance`` come from the CLI name; an option cannot change them."""
    cls, fixed = REGISTRY[name]
    for key in fixed:
        assert key not in cls.options
        with pytest.raises(ValueError, match=f"has no option '{key}'"):
            build(name, **{key: "global"})
    with pytest.raises(ValueError, match=f"process {cls.kind} has no option 'windw'"):
        cls.create(steps=5, schedule=None, example=example(name), windw=3, **fixed)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_every_declared_option_is_a_parameter(name):
    cls = REGISTRY[name][0]
    params = set(inspect.signature(cls.__init__).parameters)
    if hasattr(cls, "fit_from_data"):
        params |= set(inspect.signature(cls.fit_from_data).parameters)
    assert set(cls.options) <= params


def test_declared_options_are_taken():
    p = build("kuramoto-local", window=3, boundary="reflect", prior_r=0.4)
    assert (p.window, p.boundary, p.prior_r) == (3, "reflect", 0.4)
    assert build("gou", n_anchors=2, grid_power=1.0).anchors.shape[0] == 2
    assert build("spde-heat", prior="noise", scheme="tamed").scheme == "tamed"


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_config_round_trip_and_description(name):
    p = build(name)
    q = process_from_config(p.to_config(), p.buffers())
    assert q.config_hash == p.config_hash and q.to_config() == p.to_config()
    line = p.describe()
    kind, T = p.to_config()["process"], p.T
    assert "\n" not in line and line.startswith(f"{kind} ") and f" T={T}" in line, line
    for key in REGISTRY[name][1].values():  # the variant or instance is named
        assert f"{kind} {key} T=" in line, line
    assert len(line.split()) >= 3, line  # and the schedule follows T


def test_descriptions_name_the_schedule():
    img = example("vp")
    assert build("kuramoto-local").describe() == "kuramoto local T=100 schedule=local-100"
    p = create_process("kuramoto-local", steps=30, example=img)
    assert p.describe() == (
        "kuramoto local T=30 two_D=0.0001:0.3336 K=5e-05:0.1668 K_ref=5e-05:0.1668"
    )
    assert create_process("vp", steps=100, example=img).describe() == "vp T=100 schedule=vp-100"
    assert build("gou").describe() == "gou T=100 horizon=2 grid_power=2"
    heat = build("spde-heat", prior="noise")
    assert heat.describe().startswith("spde heat T=")
    assert "alpha1=0.5:16 alpha2=0.01:0.5 horizon=2 scheme=semi-implicit" in heat.describe()


def test_configs_of_earlier_versions_keep_their_defaults():
    gou = build("gou")
    cfg = gou.to_config()
    del cfg["grid_power"]  # written before the quadratic grid: uniform
    assert process_from_config(cfg, gou.buffers()).grid_power == 1.0
    spde = build("spde-heat", prior="noise")
    cfg = spde.to_config()
    del cfg["scheme"]  # written before the semi-implicit scheme: tamed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert process_from_config(cfg, spde.buffers()).scheme == "tamed"
    kur = build("kuramoto-local").to_config()
    del kur["window"]  # a parameter with no recorded default is still required
    with pytest.raises(KeyError):
        process_from_config(kur)
    assert kur["format"] == CONFIG_FORMAT


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_an_unknown_data_option_is_one_line_listing_the_accepted(name):
    accepted = ", ".join(sorted(DATASET_OPTIONS[name]))
    for f in (load_dataset, describe_dataset):
        with pytest.raises(DataError) as err:
            f(name, sizee=3)
        assert str(err.value) == f"data set {name} has no option 'sizee'; it takes: {accepted}"


def test_data_set_options_are_declared_once():
    assert set(DATASET_OPTIONS) == set(DATASETS)
    assert DATASET_OPTIONS["gmm2d"] == {
        "n": int,
        "separation": float,
        "std": float,
        "weight": float,
        "seed": int,
    }
