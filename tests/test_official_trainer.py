"""tools/official_trainer.py without an ml-l3m checkout: its argument
checks, its stand-ins, its import of ml-l3m's modules and its parameter
count."""

import math
import os
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE
from conftest import TINY_DECODER
from conftest import load_tool
from conftest import tiny_pretrainer

official = load_tool("official_trainer")


def test_missing_source_names_the_path(tmp_path):
    missing = str(tmp_path / "ml-l3m")
    with pytest.raises(FileNotFoundError) as error:
        official.run_official(missing, TINY_BACKBONE, TINY_DECODER, 2)
    message = str(error.value)
    assert "source=" in message and missing in message
    assert "does not exist" in message
    assert "https://github.com/apple/ml-l3m" in message


def test_source_without_package_names_the_path(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(FileNotFoundError, match="has no src/l3m") as error:
        official.run_official(str(tmp_path), TINY_BACKBONE, TINY_DECODER, 2)
    assert str(tmp_path) in str(error.value)


def test_bad_dtype_policy_is_refused_first(tmp_path):
    with pytest.raises(ValueError) as error:
        official.run_official(
            str(tmp_path),
            TINY_BACKBONE,
            TINY_DECODER,
            2,
            dtype_policy="bfloat16",
        )
    message = str(error.value)
    assert "dtype_policy='bfloat16'" in message
    assert "float32" in message and "mixed_bfloat16" in message


def test_counts_are_checked(tmp_path):
    with pytest.raises(ValueError, match="steps=0"):
        official.run_official(
            str(tmp_path), TINY_BACKBONE, TINY_DECODER, 2, steps=0
        )
    with pytest.raises(TypeError, match="batch_size"):
        official.run_official(str(tmp_path), TINY_BACKBONE, TINY_DECODER, 2.0)


def test_trunc_normal_stays_within_bounds():
    modules = official.stand_in_modules()
    trunc_normal_ = modules["timm.layers"].trunc_normal_
    assert modules["timm.layers.weight_init"].trunc_normal_ is trunc_normal_
    torch.manual_seed(0)
    tensor = torch.empty(20_000)
    assert trunc_normal_(tensor, mean=1.0, std=2.0, a=0.0, b=3.0) is tensor
    assert tensor.min() >= 0.0 and tensor.max() <= 3.0
    assert tensor.std() > 0.5  # filled, not constant
    trunc_normal_(tensor, std=0.02)
    # The default bounds (+-2) cut nothing at this scale.
    assert abs(tensor.std().item() - 0.02) < 0.001


def test_variance_scaling_matches_its_variance():
    variance_scaling_ = official.stand_in_modules()[
        "timm.layers.weight_init"
    ].variance_scaling_
    torch.manual_seed(0)
    weight = torch.empty(400, 250)  # fan_in 250
    variance_scaling_(
        weight, scale=0.5, mode="fan_in", distribution="truncated_normal"
    )
    std = math.sqrt(0.5 / 250)
    assert abs(weight.std().item() - std) / std < 0.03
    bound = 2 * std / 0.87962566103423978
    assert weight.abs().max().item() <= bound + 1e-7
    variance_scaling_(weight, scale=1.0, mode="fan_out", distribution="uniform")
    assert weight.abs().max().item() <= math.sqrt(3 / 400) + 1e-7
    with pytest.raises(ValueError, match="distribution='cauchy'"):
        variance_scaling_(weight, distribution="cauchy")


def test_to_2tuple_and_drop_path():
    layers = official.stand_in_modules()["timm.layers"]
    assert layers.to_2tuple(14) == (14, 14)
    assert layers.to_2tuple((224, 336)) == (224, 336)
    assert layers.to_2tuple("ab") == ("ab", "ab")
    x = torch.randn(64, 5, 3)
    assert layers.DropPath(0.0)(x) is x
    drop = layers.DropPath(0.5)
    assert drop.eval()(x) is x
    torch.manual_seed(0)
    y = drop.train()(x)
    # Whole examples are dropped; kept ones are scaled by 1 / keep.
    kept = y.flatten(1).abs().sum(1) > 0
    assert 0 < kept.sum() < 64
    assert torch.allclose(y[kept], 2 * x[kept])


def test_omegaconf_stand_in_names_dict_config():
    omegaconf = official.stand_in_modules()["omegaconf"]
    assert issubclass(omegaconf.DictConfig, dict)


def test_l3m_packages_import_without_their_init(tmp_path, monkeypatch):
    """A module of the checkout imports, its packages' __init__ do not run."""
    package = tmp_path / "src" / "l3m"
    (package / "model").mkdir(parents=True)
    for init in (package / "__init__.py", package / "model" / "__init__.py"):
        init.write_text("raise ImportError('package __init__ ran')\n")
    (package / "model" / "base.py").write_text("VALUE = 3\n")
    (package / "model" / "leaf.py").write_text(
        "from l3m.model.base import VALUE\nDOUBLE = 2 * VALUE\n"
    )
    finder = official._PackagesWithoutInit(str(tmp_path / "src"))
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    try:
        import l3m.model.leaf as leaf

        assert leaf.DOUBLE == 6
        assert os.path.dirname(leaf.__file__) == str(package / "model")
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "l3m"]:
            del sys.modules[name]


def test_reference_count_is_the_pretrainers():
    pretrainer = tiny_pretrainer()
    trainable = sum(int(np.prod(v.shape)) for v in pretrainer.trainable_weights)
    assert (
        official.reference_parameter_count(TINY_BACKBONE, TINY_DECODER)
        == trainable
    )


@pytest.mark.parametrize("hidden", [128, 512, 1000, 1001, 2816])
def test_swiglu_arguments_give_the_hidden_width(hidden):
    # ml-l3m's rule: int(2 * h / 3), rounded up to a multiple.
    mlp_hidden_dim, multiple_of = official.swiglu_arguments(hidden)
    width = int(2 * mlp_hidden_dim / 3)
    assert -(-width // multiple_of) * multiple_of == hidden


def test_parameter_groups_exclude_as_the_recipe():
    model = torch.nn.ModuleDict(
        {
            "proj": torch.nn.Linear(4, 4),
            "norm_1": torch.nn.LayerNorm(4),
        }
    )
    model.pos_embed = torch.nn.Parameter(torch.zeros(2, 4))
    frozen = torch.nn.Linear(4, 4, bias=False)
    frozen.weight.requires_grad = False
    model["frozen"] = frozen
    decayed, excluded = official.parameter_groups(model)
    assert decayed["weight_decay"] == 1e-4 and excluded["weight_decay"] == 0
    assert [p.shape for p in decayed["params"]] == [(4, 4)]
    assert decayed["params"][0] is model["proj"].weight
    assert len(excluded["params"]) == 4  # bias, norm weight and bias, pos


def test_workloads_come_from_the_benchmark():
    backbone, decoder, batch_size, steps = official.workload("tiny")
    assert backbone["hidden_dim"] == 192 and backbone["image_shape"][0] == 64
    assert decoder["vocabulary_size"] == 1000
    assert (batch_size, steps) == (16, 10)
    with pytest.raises(ValueError, match="workload='huge'"):
        official.workload("huge")
