import pytest

from simlab.config import AugConfig, Config, ConfigError, all_field_names, apply_overrides


def test_overrides_parse_by_type_and_accept_section_names():
    cfg = apply_overrides(Config(), ["crop_scale=0.2,1", "aug.flip_p=0.3", "image_size=64", "seed=3",
                                     "data_root=none", "download=true"])
    assert cfg.aug.crop_scale == (0.2, 1.0) and cfg.aug.flip_p == 0.3
    assert cfg.data.image_size == 64 and cfg.seed == 3 and cfg.data.data_root is None and cfg.data.download
    cfg.validate()


@pytest.mark.parametrize("override, field", [
    ("nonsense=1", "nonsense"), ("image_size=3.5", "image_size"), ("flip_p=nan", "flip_p"),
    ("flip_p=abc", "flip_p"), ("download=maybe", "download"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize("override, field", [
    ("flip_p=1.5", "flip_p"), ("crop_scale=0.9,0.1", "crop_scale"), ("dataset=imagenet21k", "dataset"),
    ("image_size=2", "image_size"), ("blur_p=0.5,1.2", "blur_p"),
])
def test_validation_names_the_field(override, field):
    cfg = apply_overrides(Config(), [override])
    with pytest.raises(ConfigError, match=field):
        cfg.validate()


def test_field_names_are_unique_and_round_trip():
    names = all_field_names(Config())
    assert len(names) == len(set(names))
    cfg = apply_overrides(Config(), ["crop_scale=0.3,0.9", "seed=9"])
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_blur_sigma_scales_with_the_image():
    assert AugConfig().sigma_range(224) == (0.1, 2.0)
    lo, hi = AugConfig().sigma_range(32)
    assert abs(hi - 2.0 * 32 / 224) < 1e-12 and abs(lo - 0.1 * 32 / 224) < 1e-12
    assert AugConfig(blur_sigma=(0.1, 0.6)).sigma_range(32) == (0.1, 0.6)
