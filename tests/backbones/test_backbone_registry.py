import pytest
from torch import nn

from mmsam.backbones import create_backbone, list_backbones, register_backbone
from mmsam.backbones import registry
from mmsam.errors import ConfigError

OFFICIAL = [
    "sam_vit_b", "sam_vit_l", "sam_vit_h",
    "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
    "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
]


def test_every_entry_point_is_registered_on_import():
    names = list_backbones()
    assert set(OFFICIAL + ["sam_vit_tiny", "sam2_hiera_micro"]) <= set(names)
    assert names == sorted(names)


def test_list_backbones_filters_by_shell_pattern():
    assert list_backbones("sam2.1_*") == ["sam2.1_hiera_b+", "sam2.1_hiera_l", "sam2.1_hiera_s", "sam2.1_hiera_t"]
    assert list_backbones("sam_vit_*") == ["sam_vit_b", "sam_vit_h", "sam_vit_l", "sam_vit_tiny"]
    assert list_backbones("nothing*") == []


def test_unknown_name_is_a_config_error_listing_known_names():
    with pytest.raises(ConfigError) as e:
        create_backbone("sam_vit_x")
    msg = str(e.value)
    assert "'sam_vit_x'" in msg and "sam_vit_b" in msg and "sam2.1_hiera_b+" in msg


def test_register_by_function_name_or_explicit_name_and_refuse_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))

    @register_backbone
    def my_net(*, img_size: int = 8) -> nn.Module:
        return nn.Identity()

    @register_backbone("my.net+")
    def other(*, img_size: int = 8) -> nn.Module:
        return nn.Linear(img_size, 1)

    assert isinstance(create_backbone("my_net"), nn.Identity)
    assert create_backbone("my.net+", img_size=3).in_features == 3  # kwargs reach the entry point
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("my_net")(lambda: nn.Identity())
