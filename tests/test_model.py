import copy

import pytest
import torch

from simlab.config import apply_overrides
from simlab.masking import keyed_masks
from simlab.model import SiM
from simlab.pos_embed import grid_sincos
from simlab.presets import PRESETS, preset
from simlab.views import ViewGeometry, full_geometry
from simlab.vit import TokenBatchNorm


def make_batch(cfg, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    S, grid = cfg.data.image_size, cfg.grid
    geo = lambda: ViewGeometry(torch.rand(B, generator=g) * 4, torch.rand(B, generator=g) * 4,
                               8 + torch.rand(B, generator=g) * 8, 8 + torch.rand(B, generator=g) * 8,
                               torch.rand(B, generator=g) < 0.5)
    return {"view1": torch.randn(B, 3, S, S, generator=g), "view2": torch.randn(B, 3, S, S, generator=g),
            "geom1": geo(), "geom2": geo(), "mask": keyed_masks(seed, 0, torch.arange(B), grid,
                                                                cfg.model.num_masked, cfg.model.mask_kind)}


def test_online_parameters_get_gradients_and_the_target_none():
    cfg = preset("tiny")
    model = SiM(cfg)
    loss, out = model(make_batch(cfg), momentum=0.99)
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("target_"):
            assert not p.requires_grad and p.grad is None, name
        elif name.startswith("encoder.patch_embed"):
            assert not p.requires_grad and p.grad is None, f"{name} is frozen by default"
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    assert out["pred"].shape == out["target"].shape == (4, cfg.grid ** 2, cfg.model.decoder_dim)


def test_trained_patch_embedding_gets_gradients():
    cfg = apply_overrides(preset("tiny"), ["train_patch_embed=true"])
    model = SiM(cfg)
    model(make_batch(cfg))[0].backward()
    assert model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_one_ema_step():
    cfg = preset("tiny")
    model = SiM(cfg)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = copy.deepcopy(model)
    model.update_target(0.9)
    for mod, tmod in (("encoder", "target_encoder"), ("projector", "target_projector")):
        online = dict(getattr(before, mod).named_parameters())
        for name, t_new in getattr(model, tmod).named_parameters():
            t_old = dict(getattr(before, tmod).named_parameters())[name]
            assert torch.allclose(t_new, t_old + (1 - 0.9) * (online[name] - t_old), atol=1e-6), name
    # the forward pass applies the update before the target pass, only when given a momentum
    model2 = copy.deepcopy(before)
    model2(make_batch(cfg), momentum=0.9)
    assert torch.equal(model2.target_encoder.blocks[0].attn.qkv.weight, model.target_encoder.blocks[0].attn.qkv.weight)
    model3 = copy.deepcopy(before)
    model3(make_batch(cfg))
    assert torch.equal(model3.target_encoder.blocks[0].attn.qkv.weight, before.target_encoder.blocks[0].attn.qkv.weight)


def test_queries_of_identical_views_sit_on_the_view1_grid():
    cfg = preset("tiny")
    model = SiM(cfg)
    g = full_geometry(3, 40, 50)
    emb = model.query_embedding(g, g)  # (B, N, 2D)
    D = cfg.model.decoder_dim
    assert torch.allclose(emb[:, :, :D], grid_sincos(cfg.grid, D).expand(3, -1, -1), atol=1e-5)
    assert torch.allclose(emb[:, :, :D], model.decoder.pos_embed[0, 1:].expand(3, -1, -1), atol=1e-5)


def test_absolute_queries_ignore_the_geometry_and_scale_switch_zeroes_scales():
    cfg = apply_overrides(preset("tiny"), ["query_pos=absolute"])
    model = SiM(cfg)
    b = make_batch(cfg)
    D = cfg.model.decoder_dim
    emb = model.query_embedding(b["geom1"], b["geom2"])
    assert torch.allclose(emb[:, :, :D], grid_sincos(cfg.grid, D).expand(4, -1, -1), atol=1e-5)
    cfg2 = apply_overrides(preset("tiny"), ["scale_terms=false"])
    emb2 = SiM(cfg2).query_embedding(b["geom1"], b["geom2"])
    rel = SiM(preset("tiny")).query_embedding(b["geom1"], b["geom2"])
    assert torch.allclose(emb2[:, :, :D], rel[:, :, :D]) and not torch.allclose(emb2, rel)
    assert torch.allclose(emb2[:, :, D:].reshape(4, -1, 4, D // 4)[:, :, 1], torch.ones(1))


ABLATIONS = [[], ["query_pos=absolute"], ["scale_terms=false"], ["projector_depth=0"], ["predictor_depth=2"],
             ["decoder_dim=32", "decoder_heads=4"], ["neg_weight=0.5"], ["mask_kind=random"], ["num_masked=4"],
             ["train_patch_embed=true"], ["f_momentum=0.99"], ["decoder_norm=ln"],
             ["target_centering=true"], ["decoder_pos_gain=5"]]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: ",".join(o) or "default")
def test_each_ablation_builds_and_trains_a_step(overrides):
    cfg = apply_overrides(preset("tiny"), overrides).validate()
    model = SiM(cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = make_batch(cfg)
    loss0, _ = model(batch, momentum=0.99)
    loss0.backward()
    opt.step()
    opt.zero_grad()
    loss1, out = model(batch, momentum=0.99)
    assert torch.isfinite(loss1) and loss1.item() != loss0.item()
    if "f_momentum=0.99" in overrides:
        assert not torch.equal(model.running_correlation, torch.eye(cfg.model.decoder_dim))
    if "decoder_norm=ln" in overrides:
        assert not any(isinstance(m, TokenBatchNorm) for m in model.modules())


def test_target_centering_removes_each_images_mean_token():
    cfg = apply_overrides(preset("tiny"), ["target_centering=true"]).validate()
    model = SiM(cfg)
    view2 = make_batch(cfg)["view2"]
    with torch.no_grad():
        raw = model.target_projector(model.target_encoder.forward_features(view2))[:, 1:].float()
    centred = raw - raw.mean(dim=1, keepdim=True)
    expected = torch.nn.functional.layer_norm(centred, centred.shape[-1:])
    assert torch.allclose(model.forward_target(view2), expected, atol=1e-5)
    model.cfg.model.target_centering = False  # the same weights without the deviation: SiM's targets
    plain = model.forward_target(view2)
    assert torch.allclose(plain, torch.nn.functional.layer_norm(raw, raw.shape[-1:]), atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3)


def test_batchnorm_uses_batch_times_token_statistics_in_fp32():
    bn = TokenBatchNorm(8)
    x = torch.randn(4, 10, 8) * 3 + 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bn(x.bfloat16())
    assert y.dtype == torch.float32
    ref = torch.nn.functional.batch_norm(x.bfloat16().float().permute(0, 2, 1), None, None, training=True)
    assert torch.allclose(y, ref.permute(0, 2, 1), atol=1e-5)


def test_paper_preset_is_the_official_recipe():
    cfg = preset("vit-b16-paper").validate()
    m, t = cfg.model, cfg.train
    assert (cfg.data.image_size, m.patch_size, m.embed_dim, m.depth, m.num_heads) == (224, 16, 768, 12, 12)
    assert (m.decoder_dim, m.decoder_heads, m.projector_depth, m.predictor_depth) == (768, 16, 2, 4)
    assert cfg.grid == 14 and m.num_masked is None and m.mask_kind == "block" and not m.train_patch_embed
    assert t.batch_size == 4096 and t.epochs == 1600 and t.warmup_epochs == 40
    assert abs(t.peak_lr() - 1e-3) < 1e-12 and (t.beta1, t.beta2) == (0.9, 0.95)
    assert (t.weight_decay, t.clip_grad, t.ema_start, t.ema_end, m.neg_weight) == (0.05, 1.0, 0.995, 1.0, 0.02)
    assert cfg.aug.crop_scale == (0.08, 1.0) and m.drop_path == 0.0
    with torch.device("meta"):
        model = SiM(cfg)
        import timm
        ref = timm.create_model("vit_base_patch16_224", pretrained=False)
    n_encoder = sum(p.numel() for p in model.encoder.parameters())
    # timm's ViT-B/16 less its head, final norm and learned position embedding (ours is fixed sin-cos)
    dropped = ("head.", "norm.", "pos_embed")
    n_ref = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith(dropped))
    assert n_encoder == n_ref == 85_645_824


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate_and_keep_a_lossless_patch_embedding(name):
    cfg = preset(name).validate()
    assert cfg.model.embed_dim >= 3 * cfg.model.patch_size ** 2


def test_position_centred_targets_leave_no_content_blind_signal():
    """The labelled deviation target_position_centering removes each grid position's batch mean from
    the targets: their variance explained by position falls to (nearly) nothing."""
    from simlab.config import apply_overrides
    from simlab.floors import variance_shares
    from simlab.model import SiM
    from simlab.presets import preset
    shares = {}
    for flag in (False, True):
        torch.manual_seed(0)
        model = SiM(apply_overrides(preset("tiny"), [f"target_position_centering={flag}"]).validate()).train()
        shares[flag] = variance_shares(model.forward_target(torch.randn(32, 3, 16, 16)))["position"]
    assert shares[True] < 0.002 < 0.03 < shares[False]


def test_decoder_pos_gain_scales_the_position_codes_and_nothing_else():
    """A decoder with gain g is the gain-1 decoder whose fixed sin-cos and query MLP are multiplied by g."""
    cfg = preset("tiny")
    torch.manual_seed(0)
    plain = SiM(cfg).eval()
    gained = copy.deepcopy(plain)
    gained.decoder.pos_gain = 5.0
    reference = copy.deepcopy(plain)
    with torch.no_grad():
        reference.decoder.pos_embed.mul_(5.0)
        reference.decoder.pos_mlp.weight.mul_(5.0)
        reference.decoder.pos_mlp.bias.mul_(5.0)
    batch = make_batch(cfg)
    with torch.no_grad():
        latent = plain.forward_online(batch["view1"], batch["mask"])
        outs = [m.forward_decoder(latent, batch["mask"], batch["geom1"], batch["geom2"])
                for m in (plain, gained, reference)]
    assert torch.allclose(outs[1], outs[2], atol=1e-5) and not torch.allclose(outs[0], outs[1], atol=1e-3)
    assert SiM(apply_overrides(cfg, ["decoder_pos_gain=5"])).decoder.pos_gain == 5.0
    with pytest.raises(Exception, match="decoder_pos_gain"):
        apply_overrides(cfg, ["decoder_pos_gain=0"]).validate()
