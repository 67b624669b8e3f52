"""Interoperability: the official SiM release imported into simlab, and the encoder exported for timm.

The fake official checkpoint is written from the official model's layout (models_sim.py,
models_vit.py: names and shapes only, random values), independently of simlab's key map."""

import argparse

import pytest
import torch

from simlab.checkpoint import CheckpointError, config_of, load_checkpoint, load_encoder
from simlab.cli import main
from simlab.model import SiM

D, DEPTH, DD, PROJ, PRED, P, GRID, C = 48, 2, 32, 1, 2, 4, 4, 3


def _block(prefix: str, dim: int, batch_norm: bool) -> dict:
    """One official ``Block``: LayerNorm, or ``PermuteBN`` (its BatchNorm1d under ``.bn``)."""
    s = {}
    for norm in ("norm1", "norm2"):
        if batch_norm:
            s.update({f"{prefix}.{norm}.bn.weight": (dim,), f"{prefix}.{norm}.bn.bias": (dim,),
                      f"{prefix}.{norm}.bn.running_mean": (dim,), f"{prefix}.{norm}.bn.running_var": (dim,),
                      f"{prefix}.{norm}.bn.num_batches_tracked": ()})
        else:
            s.update({f"{prefix}.{norm}.weight": (dim,), f"{prefix}.{norm}.bias": (dim,)})
    s.update({f"{prefix}.attn.qkv.weight": (3 * dim, dim), f"{prefix}.attn.qkv.bias": (3 * dim,),
              f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
              f"{prefix}.mlp.fc1.weight": (4 * dim, dim), f"{prefix}.mlp.fc1.bias": (4 * dim,),
              f"{prefix}.mlp.fc2.weight": (dim, 4 * dim), f"{prefix}.mlp.fc2.bias": (dim,)})
    return s


def official_state(seed: int = 0) -> dict:
    shapes = {"cls_token": (1, 1, D), "pos_embed": (1, GRID * GRID + 1, D), "mask_token": (1, 1, DD),
              "decoder_pos_embed": (1, GRID * GRID + 1, DD), "mm_cls_token": (1, 1, D), "mm_mask_token": (1, 1, DD),
              "decoder_embed.weight": (DD, D), "decoder_embed.bias": (DD,),
              "decoder_pred.weight": (DD, DD), "decoder_pred.bias": (DD,),
              "decoder_pos_mlp.weight": (DD, 2 * DD), "decoder_pos_mlp.bias": (DD,),
              "mm_decoder_embed.weight": (DD, D), "mm_decoder_embed.bias": (DD,)}
    for online in ("", "mm_"):
        shapes[f"{online}patch_embed.proj.weight"] = (D, C, P, P)
        shapes[f"{online}patch_embed.proj.bias"] = (D,)
        for i in range(DEPTH):
            shapes.update(_block(f"{online}blocks.{i}", D, batch_norm=False))
        for i in range(PROJ):
            shapes.update(_block(f"{online}projector_decoder_blocks.{i}", DD, batch_norm=True))
    for i in range(PRED):
        shapes.update(_block(f"predictor_decoder_blocks.{i}", DD, batch_norm=True))
    g = torch.Generator().manual_seed(seed)
    state = {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(*s, generator=g))
             for k, s in shapes.items()}
    return {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}  # variances > 0


def official_args(**kw) -> argparse.Namespace:
    base = dict(model="sim_vit_small_test", input_size=P * GRID, decoder_embed_dim=DD, projector_depth=PROJ,
                predictor_depth=PRED, use_proj_ln=False, use_pred_ln=False, init_values=None, drop_path_rate=0.0,
                neg_weight=0.05, with_blockwise_mask=True, blockwise_num_masking_patches=6)
    return argparse.Namespace(**{**base, **kw})


def save_official(path, state=None, **args):
    torch.save({"model": state or official_state(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 1599,
                "scaler": {"scale": 65536.0}, "args": official_args(**args)}, path)


@pytest.fixture()
def imported(tmp_path):
    src, dst = tmp_path / "sim_test_pretrain.pth", tmp_path / "imported.pt"
    save_official(src)
    assert main(["import-official", "--checkpoint", str(src), "--out", str(dst), "--num-heads", "2",
                 "--decoder-heads", "4"]) == 0
    return src, dst


def test_the_mapping_is_complete_and_shape_exact(imported):
    src, dst = imported
    official = official_state()
    ckpt = load_checkpoint(dst)
    cfg = config_of(ckpt)
    m = cfg.model
    assert (m.embed_dim, m.depth, m.decoder_dim, m.projector_depth, m.predictor_depth, m.patch_size) == \
        (D, DEPTH, DD, PROJ, PRED, P)
    assert (m.num_heads, m.decoder_heads, m.neg_weight, m.num_masked, cfg.data.image_size) == (2, 4, 0.05, 6, 16)
    model = SiM(cfg)
    assert set(ckpt["model"]) == set(model.state_dict())  # every simlab key, nothing else
    pairs = {  # official key -> simlab key, spelled out by hand
        "blocks.1.attn.qkv.weight": "encoder.blocks.1.attn.qkv.weight",
        "mm_blocks.0.mlp.fc2.bias": "target_encoder.blocks.0.mlp.fc2.bias",
        "patch_embed.proj.weight": "encoder.patch_embed.proj.weight",
        "mm_patch_embed.proj.weight": "target_encoder.patch_embed.proj.weight",
        "cls_token": "encoder.cls_token", "mm_cls_token": "target_encoder.cls_token",
        "pos_embed": "target_encoder.pos_embed",
        "decoder_embed.weight": "projector.embed.weight", "mm_decoder_embed.bias": "target_projector.embed.bias",
        "projector_decoder_blocks.0.norm1.bn.running_var": "projector.blocks.0.norm1.running_var",
        "mm_projector_decoder_blocks.0.norm2.bn.weight": "target_projector.blocks.0.norm2.weight",
        "predictor_decoder_blocks.1.norm2.bn.running_mean": "decoder.blocks.1.norm2.running_mean",
        "predictor_decoder_blocks.0.attn.proj.weight": "decoder.blocks.0.attn.proj.weight",
        "mask_token": "decoder.mask_token", "decoder_pos_mlp.weight": "decoder.pos_mlp.weight",
        "decoder_pos_embed": "decoder.pos_embed", "decoder_pred.bias": "decoder.pred.bias",
    }
    for off, ours in pairs.items():
        assert torch.equal(ckpt["model"][ours], official[off]), (off, ours)
    # every official tensor landed somewhere (mm_mask_token and the batch counters have no use)
    values = {tuple(v.flatten()[:4].tolist()) for v in ckpt["model"].values() if v.numel() >= 4}
    for k, v in official.items():
        if k != "mm_mask_token" and not k.endswith("num_batches_tracked") and v.numel() >= 4:
            assert tuple(v.flatten()[:4].tolist()) in values, k
    assert ckpt["source"]["file"] == src.name and ckpt["optimizer"] is None and ckpt["epoch"] == 1600


def test_the_imported_checkpoint_feeds_load_encoder_and_the_model(imported):
    _, dst = imported
    encoder = load_encoder(dst)
    assert encoder.preprocess["input_size"] == 16 and encoder.preprocess["interpolation"] == "bicubic"
    tokens = encoder.forward_features(torch.randn(2, 3, 16, 16))
    assert tokens.shape == (2, 1 + GRID * GRID, D) and torch.isfinite(tokens).all()
    ckpt = load_checkpoint(dst)
    model = SiM(config_of(ckpt)).eval()
    model.load_state_dict(ckpt["model"])


def test_shape_or_name_mismatches_are_refused_naming_the_key(tmp_path):
    state = official_state()
    state["blocks.0.mlp.fc1.weight"] = torch.randn(4 * D + 1, D)
    save_official(tmp_path / "bad.pth", state)
    with pytest.raises(CheckpointError, match="blocks.0.mlp.fc1"):
        from simlab.official import import_official
        import_official(tmp_path / "bad.pth", tmp_path / "out.pt", 2, 4, log=lambda *_: None)
    state = official_state()
    state["head.weight"] = torch.randn(10, D)
    save_official(tmp_path / "extra.pth", state)
    with pytest.raises(CheckpointError, match="head.weight"):
        import_official(tmp_path / "extra.pth", tmp_path / "out.pt", 2, 4, log=lambda *_: None)
    save_official(tmp_path / "ls.pth", init_values=0.1)
    with pytest.raises(CheckpointError, match="LayerScale"):
        import_official(tmp_path / "ls.pth", tmp_path / "out.pt", 2, 4, log=lambda *_: None)


class _Canary:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("zip_format", [True, False])
def test_only_argparse_namespace_is_allowed_and_code_never_runs(tmp_path, capsys, zip_format):
    canary = tmp_path / "ran"
    src = tmp_path / "evil.pth"
    torch.save({"model": official_state(), "args": _Canary(canary)}, src, _use_new_zipfile_serialization=zip_format)
    assert main(["import-official", "--checkpoint", str(src), "--out", str(tmp_path / "o.pt")]) == 2
    assert "not a loadable official checkpoint" in capsys.readouterr().err
    assert not canary.exists() and not (tmp_path / "o.pt").exists()


def test_timm_export_loads_strictly_and_gives_the_same_features(imported, tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import load_file
    _, dst = imported
    out = tmp_path / "enc_timm.safetensors"
    assert main(["export", "--checkpoint", str(dst), "--out", str(out), "--format", "timm"]) == 0
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=16, patch_size=P, embed_dim=D, depth=DEPTH, num_heads=2, qkv_bias=True,
                              global_pool="avg", num_classes=0).eval()
    model.load_state_dict(load_file(str(out)), strict=True)
    x = torch.randn(3, 3, 16, 16)
    ours = load_encoder(dst)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), ours.forward_features(x), atol=1e-5)
    # the registered timm name builds the same layout at ViT-B size (keys and shapes only)
    base = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="avg")
    assert {k for k in base.state_dict()} >= {"cls_token", "pos_embed", "fc_norm.weight", "blocks.11.mlp.fc2.bias"}
    assert not any(k.startswith("norm.") for k in base.state_dict())


def test_the_imported_checkpoint_feeds_the_dense_view_and_the_probes(imported):
    from simlab.data import build_dataset
    from simlab.dense import dense_pair, load_sim_model
    from simlab.probes import probe_checkpoint
    _, dst = imported
    model = load_sim_model(dst)
    images = build_dataset("shapes", "test", size=4, image_size=32).tensors()["images"]
    with torch.no_grad():
        pair = dense_pair(model, images, torch.arange(4), model.preprocess["mean"], model.preprocess["std"])
    assert pair.pred.shape == pair.target.shape == (4, GRID * GRID, DD) and torch.isfinite(pair.cosine).all()
    res = probe_checkpoint(dst, train_size=60, test_size=30, dataset="shapes")
    assert 0.0 <= res["knn"] <= 1.0 and 0.0 <= res["linear"] <= 1.0
