"""Pretrained towers from local checkpoints (issue 26): tiny random checkpoints saved with
``save_pretrained`` (CLIP, SigLIP, ViT) and a small CNN state dict load offline, encode to
unit Matryoshka prefixes, train a step, round-trip through a MOON checkpoint and version
their weights; bad sources get errors naming the path. The EfficientNet-Lite layout is
checked against the original package (``efficientnet_lite_pytorch``) and, when fetched, on
the real ImageNet file."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import BertConfig, BertModel

sys.path.insert(0, str(Path(__file__).parent))
import pretrained_fixtures as fx

from moon_rec.cli import main
from moon_rec.encoders import EncoderConfig, MoonEncoder, build_encoder, make_tokenizer, matryoshka
from moon_rec.encoders.backbones import ImageProcessing, ImageTower, load_dual_encoder
from moon_rec.encoders.cnn import (
    EfficientNetLite,
    check_keys,
    load_efficientnet_lite,
    map_state_dict,
    read_state_file,
)
from moon_rec.encoders.pretrained import PretrainedTowersEncoder
from moon_rec.training.config import StageConfig, load_config
from moon_rec.training.trainer import tower_param_groups, train_stage

KINDS = ("clip", "siglip", "vit", "convnext", "dinov2", "cnn")
SMALL = dict(hidden_size=32, num_heads=2, vision_layers=1, text_layers=1, patch_size=16,
             conv_stem=0, max_text_len=16, dims=(8, 16, 64), embed_dim=64)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pretrained")
    return {"clip": fx.make_clip(root / "clip"), "siglip": fx.make_siglip(root / "siglip"),
            "vit": fx.make_vit(root / "vit"), "convnext": fx.make_convnext(root / "convnext"),
            "dinov2": fx.make_dinov2(root / "dinov2"), "cnn": fx.make_cnn(root / "cnn")}


def source_config(kind: str, path: Path, **kw: object) -> dict[str, object]:
    """The encoder keys that start a ``kind`` encoder from ``path``."""
    if kind in ("clip", "siglip"):
        return {"pretrained": str(path), **kw}
    extra: dict[str, object] = {"image_resolution": 32} if kind == "cnn" else {}
    return {"image_tower": str(path), **extra, **kw}


def make_encoder(kind: str, path: Path, **kw: object) -> MoonEncoder:
    cfg = EncoderConfig.model_validate({**SMALL, **source_config(kind, path, **kw)})
    return build_encoder(cfg, make_tokenizer(cfg, fx.TEXTS * 4)).eval()


# -- EfficientNet-Lite: the key layout of the registry files -------------------------------


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_reproduces_the_original_package(variant: str, tmp_path: Path) -> None:
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(1)
    ours = EfficientNetLite(variant)
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path / f"{variant.replace('_', '-')}.pth"
    torch.save(ours.state_dict(), path)
    # image_size None: "SAME" padding computed per input, as ours (static padding is
    # computed for the native resolution and differs at 64 px where a side turns odd)
    ref = ref_pkg.EfficientNet.from_name(variant.replace("_", "-"), image_size=None)
    state = torch.load(path, weights_only=True)
    report = check_keys(ref, map_state_dict(state))  # one to one, both ways
    assert not report.missing and not report.unexpected and not report.mismatched
    ref.load_state_dict(state, strict=True)
    loaded = load_efficientnet_lite(path)
    assert loaded.variant == variant
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x), ref.eval()(x), atol=1e-5)


def _real_lite0() -> Path | None:
    env = os.environ.get("MOON_EFFICIENTNET_LITE0")
    candidates = [Path(env)] if env else []
    candidates += sorted(Path(__file__).resolve().parents[2].glob(
        "data/pretrained/efficientnet-lite0*.pth"))
    return next((p for p in candidates if p.is_file()), None)


def test_real_efficientnet_lite0_file_maps_one_to_one() -> None:
    path = _real_lite0()
    if path is None:
        pytest.skip("no real EfficientNet-Lite0 file (scripts/fetch_efficientnet_lite.sh)")
    state = map_state_dict(read_state_file(path))
    net = load_efficientnet_lite(path).eval()
    report = check_keys(net, state)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert len(state) == len(net.state_dict()) == 296
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 224, 224, generator=g) * 2 - 1
    with torch.no_grad():
        a, b = net(x), load_efficientnet_lite(path).eval()(x)
    assert torch.equal(a, b)  # deterministic
    probs = a.softmax(-1)
    assert torch.isfinite(a).all() and float(probs.max(-1).values.min()) < 0.999
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    ref = ref_pkg.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.allclose(ref.eval()(x), a, atol=1e-4)


# -- every kind: encode, round-trip, version -----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_loads_offline_and_encodes_unit_matryoshka_prefixes(kind: str,
                                                            sources: dict[str, Path]) -> None:
    enc = make_encoder(kind, sources[kind])
    assert isinstance(enc, PretrainedTowersEncoder)
    imgs = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [enc.encode_text(fx.TEXTS), enc.encode_image(imgs),
                enc.encode_product(fx.TEXTS, imgs), enc.encode_product(fx.TEXTS, None)]
    for out in outs:
        assert out.shape == (3, 64)
        for d in enc.dims:
            assert torch.allclose(matryoshka(out, d).norm(dim=1), torch.ones(3), atol=1e-5)
    assert enc.pretrained_image_parameters()
    assert bool(enc.pretrained_text_parameters()) == (kind in ("clip", "siglip"))


def test_dual_encoder_keeps_its_joint_space(sources: dict[str, Path]) -> None:
    """A CLIP's image / text features go through one shared orthonormal head: their
    cosine is the pretrained model's own, as its processor prepares the image."""
    from transformers import CLIPModel

    enc = make_encoder("clip", sources["clip"])
    clip = CLIPModel.from_pretrained(str(sources["clip"])).eval()
    imgs = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    proc = ImageProcessing.from_folder(sources["clip"])
    assert (proc.resize, proc.crop) == (32, 32)
    assert proc.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    ids, mask = enc.tokenizer(fx.TEXTS, 16)
    with torch.no_grad():
        img = clip.get_image_features(pixel_values=proc(imgs)).pooler_output
        txt = clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        want = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        got = enc.encode_image(imgs) @ enc.encode_text(fx.TEXTS).T
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_roundtrip_and_model_version(kind: str, sources: dict[str, Path],
                                                tmp_path: Path) -> None:
    src = sources[kind]
    copy = tmp_path / "copy" / src.name
    copy.parent.mkdir()
    (shutil.copy if src.is_file() else shutil.copytree)(src, copy)
    enc = make_encoder(kind, copy)
    assert enc.model_version == make_encoder(kind, src).model_version  # path: provenance
    path = enc.save_pretrained(tmp_path / "ckpt")
    (copy.unlink if copy.is_file() else lambda: shutil.rmtree(copy))()
    loaded = MoonEncoder.from_pretrained(path)
    assert isinstance(loaded, PretrainedTowersEncoder)
    assert loaded.model_version == enc.model_version
    imgs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for a, b in ((loaded.encode_product(fx.TEXTS[:2], imgs), enc.encode_product(fx.TEXTS[:2], imgs)),
                     (loaded.encode_text(fx.TEXTS), enc.encode_text(fx.TEXTS)),
                     (loaded.encode_image(imgs), enc.encode_image(imgs))):
            assert torch.allclose(a, b, atol=1e-6)
    # the weights are versioned: a change in the pretrained image side changes it
    with torch.no_grad():
        loaded.pretrained_image_parameters()[0].add_(0.01)
    assert loaded.model_version != enc.model_version
    # the checkpoint's own folder starts another encoder of the same weights
    again_src = path / ("backbone" if kind in ("clip", "siglip") else "image_tower")
    assert make_encoder(kind, again_src).model_version == enc.model_version


@pytest.mark.parametrize("kind", KINDS)
def test_trains_a_step_with_tower_learning_rates(kind: str, sources: dict[str, Path],
                                                 tiny_world: Path, tmp_path: Path) -> None:
    enc_keys = {**SMALL, "dims": "[8, 16, 64]", **source_config(kind, sources[kind])}
    overrides = [f"encoder.{k}={v}" for k, v in enc_keys.items()]
    overrides += ["pretrain.steps=1", "pretrain.batch_size=4", "pretrain.warmup_steps=0",
                  "pretrain.mix={title_image: 1.0}", "pretrain.image_tower_lr=1e-4",
                  "pretrain.frozen_image_blocks=1"]
    config = load_config("tiny", None, overrides)
    summary = train_stage(tiny_world, "pretrain", config, tmp_path / "run", progress=False)
    trained = MoonEncoder.from_pretrained(tmp_path / "run")
    assert trained.model_version == summary["model_version"] != summary["init_version"]
    fresh = make_encoder(kind, sources[kind])
    frozen = {id(p) for p in fresh.image_blocks()[0].parameters()}
    moved_frozen = moved_top = False
    trained_image = {id(p) for p in trained.pretrained_image_parameters()}
    for a, b in zip(trained.parameters(), fresh.parameters(), strict=True):
        if id(b) in frozen:
            moved_frozen |= not torch.equal(a, b)
        elif id(a) in trained_image:
            moved_top |= not torch.equal(a, b)
    assert not moved_frozen and moved_top  # the stem stayed, the blocks above it trained


@pytest.mark.parametrize("kind", ["clip", "cnn"])
def test_resume_reproduces_the_uninterrupted_run(kind: str, sources: dict[str, Path],
                                                 tiny_world: Path, tmp_path: Path) -> None:
    enc_keys = {**SMALL, "dims": "[8, 16, 64]", **source_config(kind, sources[kind])}
    overrides = [f"encoder.{k}={v}" for k, v in enc_keys.items()]
    overrides += ["pretrain.steps=2", "pretrain.batch_size=4", "pretrain.warmup_steps=0",
                  "pretrain.checkpoint_every=1", "pretrain.mix={title_image: 1.0}",
                  "pretrain.image_tower_lr=1e-4", "pretrain.text_tower_lr=0",
                  "pretrain.frozen_image_blocks=1"]
    config = load_config("tiny", None, overrides)
    full = train_stage(tiny_world, "pretrain", config, tmp_path / "full", progress=False)
    # a run killed after step 1: only the state of step 1 is there
    shutil.copytree(tmp_path / "full" / "state", tmp_path / "killed" / "state")
    resumed = train_stage(tiny_world, "pretrain", config, tmp_path / "killed", progress=False)
    assert resumed["resumed_from_step"] == 1
    assert resumed["model_version"] == full["model_version"]
    assert resumed["init_version"] == full["init_version"]


def test_param_groups_freeze_and_rates(sources: dict[str, Path]) -> None:
    enc = make_encoder("clip", sources["clip"])
    sc = StageConfig(lr=1e-3, text_tower_lr=0.0, image_tower_lr=1e-5)
    groups = tower_param_groups(enc, sc)
    assert [g.get("lr") for g in groups] == [None, 1e-5]  # fresh heads, image side
    assert not any(p.requires_grad for p in enc.pretrained_text_parameters())
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in enc.pretrained_image_parameters()}
    enc = make_encoder("cnn", sources["cnn"])
    n_blocks = len(enc.image_blocks())
    assert n_blocks == 17  # stem + 16 MBConv blocks of Lite0
    tower_param_groups(enc, StageConfig(frozen_image_blocks=n_blocks))
    net = enc.image_tower.model  # type: ignore[union-attr]
    head = {id(p) for m in (net._conv_head, net._bn1) for p in m.parameters()}
    assert not any(k.startswith("image_tower.model._fc") for k in enc.state_dict())
    assert all(p.requires_grad == (id(p) in head) for p in enc.pretrained_image_parameters())
    with pytest.raises(ValueError, match="frozen_image_blocks 99: the image trunk has 17"):
        tower_param_groups(enc, StageConfig(frozen_image_blocks=99))
    enc = make_encoder("vit", sources["vit"])
    groups = tower_param_groups(enc, StageConfig(freeze=["image_tower.*"]))
    assert len(groups) == 1 and not any(p.requires_grad for p in enc.pretrained_image_parameters())
    with pytest.raises(ValueError, match=r"'nothing\.\*' matches no parameter"):
        tower_param_groups(enc, StageConfig(freeze=["nothing.*"]))


def test_cnn_keeps_imagenet_batch_norm_statistics(sources: dict[str, Path]) -> None:
    enc = make_encoder("cnn", sources["cnn"]).train()
    before = enc.model_version
    enc.encode_image(torch.rand(4, 3, 64, 64))
    assert enc.model_version == before  # no running-stat update in train mode


def test_resolution_and_random_init(sources: dict[str, Path]) -> None:
    tower = ImageTower.from_source(sources["cnn"], resolution=48)
    assert tower.processing.out_size == 48 and tower.feature_dim == 1280
    x = tower.processing(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        maps = tower.model.stage_maps(x)  # stem, 7 stages, head (the look_layers probe)
        assert len(maps) == 9 and torch.equal(maps[-1], tower.model.feature_map(x))
        assert [m.shape[1] for m in maps] == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    multi = ImageTower.from_source(sources["cnn"], resolution=64, stages=(4, 5))
    assert multi.feature_dim == 2 * (80 + 112)
    assert multi(torch.rand(2, 3, 64, 64)).shape == (2, 384)
    with pytest.raises(ValueError, match="a CNN option, not for a ViTModel"):
        ImageTower.from_source(sources["vit"], stages=(1,))
    with pytest.raises(ValueError, match=r"ascending stage numbers in 0\.\.8"):
        ImageTower.from_source(sources["cnn"], stages=(5, 4))
    conv = ImageProcessing.from_folder(sources["convnext"])  # ConvNeXt: resize 32/0.875, crop 32
    assert (conv.resize, conv.crop) == (36, 32)
    assert conv(torch.rand(1, 3, 64, 64)).shape == (1, 3, 32, 32)
    vit = ImageTower.from_source(sources["vit"], resolution=48)  # position embeddings interpolated
    assert vit(torch.rand(2, 3, 64, 64)).shape == (2, 32)
    a = make_encoder("cnn", sources["cnn"])
    b = make_encoder("cnn", sources["cnn"], image_tower_init="random")
    assert a.model_version != b.model_version


def test_multiscale_cnn_features_round_trip(sources: dict[str, Path], tmp_path: Path) -> None:
    enc = make_encoder("cnn", sources["cnn"], image_tower_stages=(0, 4, 5), image_resolution=64)
    assert enc.image_proj.in_features == 2 * (32 + 80 + 112)
    imgs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    loaded = MoonEncoder.from_pretrained(enc.save_pretrained(tmp_path / "ckpt"))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_product(fx.TEXTS[:2], imgs),
                              enc.encode_product(fx.TEXTS[:2], imgs), atol=1e-6)
    assert loaded.model_version == enc.model_version


# -- bad sources are named -------------------------------------------------------------------


def test_bad_sources_name_the_path(sources: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty: not a transformers model folder"):
        make_encoder("vit", empty)
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        make_encoder("vit", tmp_path / "nowhere")
    # a text model as the image tower
    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(str(bert))
    with pytest.raises(ValueError, match=r"bert: a bert model takes input_ids, not images"):
        make_encoder("vit", bert)
    # a vision model as the dual encoder
    with pytest.raises(ValueError, match=r"vit: a vit model has no get_image_features"):
        load_dual_encoder(sources["vit"])
    # missing processor files
    no_proc = tmp_path / "clip_no_proc"
    shutil.copytree(sources["clip"], no_proc)
    (no_proc / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"clip_no_proc: no preprocessor_config\.json"):
        make_encoder("clip", no_proc)
    vit_no_proc = tmp_path / "vit_no_proc"
    shutil.copytree(sources["vit"], vit_no_proc)
    (vit_no_proc / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"vit_no_proc: no preprocessor_config\.json"):
        make_encoder("vit", vit_no_proc)
    # missing tokenizer files of a dual encoder
    no_tok = tmp_path / "clip_no_tok"
    shutil.copytree(sources["clip"], no_tok)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (no_tok / f).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="clip_no_tok: no"):
        make_encoder("clip", no_tok)
    # CNN files: wrong keys, not a state dict, unnamed architecture
    wrong = tmp_path / "efficientnet-lite1-x.pth"
    shutil.copy(sources["cnn"], wrong)  # a Lite0 file named as Lite1
    with pytest.raises(ValueError, match=r"efficientnet-lite1-x\.pth are not an efficientnet_lite1"):
        make_encoder("cnn", wrong)
    junk = tmp_path / "efficientnet-lite0-junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"lite0-junk\.pth: not a readable state dict"):
        make_encoder("cnn", junk)
    anon = tmp_path / "weights.pth"
    shutil.copy(sources["cnn"], anon)
    with pytest.raises(ValueError, match=r"weights\.pth: name the architecture"):
        make_encoder("cnn", anon)
    assert isinstance(make_encoder("cnn", anon, image_tower_arch="efficientnet_lite0"),
                      PretrainedTowersEncoder)
    # configs that contradict themselves
    with pytest.raises(ValueError, match="brings both towers"):
        EncoderConfig(pretrained=str(sources["clip"]), image_tower=str(sources["vit"]))
    with pytest.raises(ValueError, match="dual_tower option"):
        EncoderConfig(backbone="mllm", image_tower=str(sources["vit"]))


def test_cli_init_from_each_kind(sources: dict[str, Path], tiny_world: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"encoder": {**SMALL, "dims": [8, 16, 64],
                                                  "image_resolution": 32}}))
    for kind, flag in (("clip", "--pretrained"), ("cnn", "--image-tower")):
        out = tmp_path / kind
        assert main(["encoder", "init", "--world", str(tiny_world), "--out", str(out),
                     "--config", str(config), flag, str(sources[kind])]) == 0
        assert isinstance(MoonEncoder.from_pretrained(out), PretrainedTowersEncoder)
    capsys.readouterr()
    assert main(["encoder", "init", "--world", str(tiny_world), "--out", str(tmp_path / "x"),
                 "--image-tower", str(tmp_path / "nowhere")]) != 0
    assert "--image-tower" in (err := capsys.readouterr().err) and "nowhere: no such file" in err


# -- the MLLM from a Qwen2-VL-family checkpoint, optionally through LoRA ----------------------


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.make_qwen2vl(tmp_path_factory.mktemp("qwen") / "qwen2vl")


def mllm_keys(path: Path, lora: bool) -> dict[str, object]:
    keys: dict[str, object] = {"backbone": "mllm", "pretrained": str(path), "max_text_len": 16,
                               "dims": (8, 16, 64), "embed_dim": 64}
    return {**keys, "lora": {"r": 4}} if lora else keys


@pytest.mark.parametrize("lora", [False, True])
def test_mllm_from_a_qwen2vl_checkpoint_round_trips(lora: bool, qwen: Path, tmp_path: Path) -> None:
    from moon_rec.encoders.mllm import MllmEncoder

    cfg = EncoderConfig.model_validate(mllm_keys(qwen, lora))
    enc = build_encoder(cfg, make_tokenizer(cfg, [])).eval()
    assert isinstance(enc, MllmEncoder) and enc.processing is not None
    assert enc.processing.out_size == 64 and enc.image_grid == 4  # 64 px, patch 8, merge 2
    imgs = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        outs = [enc.encode_text(fx.TEXTS), enc.encode_image(imgs), enc.encode_product(fx.TEXTS, imgs)]
    for out in outs:
        for d in enc.dims:
            assert torch.allclose(matryoshka(out, d).norm(dim=1), torch.ones(3), atol=1e-5)
    lora_params = [n for n, p in enc.named_parameters() if "lora_" in n]
    assert bool(lora_params) == lora
    if lora:  # the decoder's base weights are frozen, its adapters and the vision tower train
        decoder = enc.backbone.model.language_model
        assert all(p.requires_grad == ("lora_" in n) for n, p in decoder.named_parameters())
        assert all(p.requires_grad for p in enc.pretrained_image_parameters())
    path = enc.save_pretrained(tmp_path / "ckpt")
    assert (path / "backbone" / "lora.safetensors").is_file() == lora
    loaded = MoonEncoder.from_pretrained(path)
    assert loaded.model_version == enc.model_version
    with torch.no_grad():
        assert torch.allclose(loaded.encode_product(fx.TEXTS, imgs), outs[2], atol=1e-6)
        name = lora_params[0] if lora else "backbone.model.visual.patch_embed.proj.weight"
        dict(loaded.named_parameters())[name].add_(0.01)
    assert loaded.model_version != enc.model_version


def test_mllm_trains_a_step_through_lora(qwen: Path, tiny_world: Path, tmp_path: Path) -> None:
    overrides = [f"encoder.{k}={v}" for k, v in
                 {**mllm_keys(qwen, True), "dims": "[8, 16, 64]", "lora": "{r: 4}",
                  "conv_stem": 0}.items()]
    overrides += ["pretrain.steps=1", "pretrain.batch_size=4", "pretrain.warmup_steps=0",
                  "pretrain.mix={title_image: 1.0}", "pretrain.caption_weight=0.5",
                  "pretrain.image_tower_lr=0"]
    config = load_config("tiny", None, overrides)
    summary = train_stage(tiny_world, "pretrain", config, tmp_path / "run", progress=False)
    trained = dict(MoonEncoder.from_pretrained(tmp_path / "run").named_parameters())
    cfg = EncoderConfig.model_validate(mllm_keys(qwen, True))
    fresh = dict(build_encoder(cfg, make_tokenizer(cfg, [])).named_parameters())
    changed = {n for n, p in fresh.items() if not torch.equal(p, trained[n])}
    assert summary["model_version"] != summary["init_version"]
    assert any("lora_" in n for n in changed)  # the adapters trained
    assert not any(".base_layer." in n for n in changed)  # the decoder's base did not
    assert not any(".visual." in n for n in changed)  # image_tower_lr 0: frozen
    assert "proj.weight" in changed  # the Matryoshka head trained


def test_mllm_bad_checkpoints_name_the_path(qwen: Path, sources: dict[str, Path],
                                            tmp_path: Path) -> None:
    from moon_rec.encoders.mllm import load_mllm

    with pytest.raises(ValueError, match=r"clip: a clip model, not a Qwen2-VL-family one"):
        load_mllm(EncoderConfig.model_validate(mllm_keys(sources["clip"], False)))
    no_proc = tmp_path / "qwen_no_proc"
    shutil.copytree(qwen, no_proc)
    (no_proc / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"qwen_no_proc: no preprocessor_config\.json"):
        load_mllm(EncoderConfig.model_validate(mllm_keys(no_proc, False)))
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        load_mllm(EncoderConfig.model_validate(mllm_keys(tmp_path / "nowhere", False)))
    with pytest.raises(ValueError, match="lora adapts a pretrained mllm"):
        EncoderConfig(lora={"r": 4})  # type: ignore[arg-type]


def test_image_tower_beside_a_pretrained_text_tower(sources: dict[str, Path],
                                                    tmp_path: Path) -> None:
    text = tmp_path / "bert"
    vocab = fx.save_tokenizer(text)
    BertModel(BertConfig(vocab_size=vocab, hidden_size=24, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=48,
                         max_position_embeddings=32)).save_pretrained(str(text))
    enc = make_encoder("vit", sources["vit"], text_tower=str(text))
    assert enc.text_proj.in_features == 24 and enc.image_proj.in_features == 32
    assert enc.pretrained_text_parameters() and enc.pretrained_image_parameters()
    path = enc.save_pretrained(tmp_path / "ckpt")
    assert (path / "text_tower" / "config.json").is_file()
    assert (path / "image_tower" / "config.json").is_file()
    loaded = MoonEncoder.from_pretrained(path)
    imgs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_product(fx.TEXTS[:2], imgs),
                              enc.encode_product(fx.TEXTS[:2], imgs), atol=1e-6)
    assert loaded.model_version == enc.model_version


# -- the frozen trunk's cache (issue 26: the CPU budget) -------------------------------------


def cached_run_matches(runs: dict[str, dict[str, Any]], root: Path, key: str,
                       noun: str) -> MoonEncoder:
    """The stage run with the cache on (``root/true``) reports its cache (``key``: each
    row computed once, some hits) and ends at the weights of the run without it
    (``root/false``); its encoder."""
    stats = runs["true"][key]
    assert stats["hits"] > 0 and stats[noun] == stats["misses"]
    assert key not in runs["false"]
    a = MoonEncoder.from_pretrained(root / "true")
    b = MoonEncoder.from_pretrained(root / "false")
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name  # the cache changes no result
    return a


@pytest.mark.parametrize(("stages", "frozen"), [((), 17), ((0, 4, 5), 17), ((0, 4, 5), 5),
                                                 ((0, 4, 5), 1), ((), 9), ((2, 8), 12)])
def test_frozen_trunk_cache_gives_the_uncached_features(
        sources: dict[str, Path], stages: tuple[int, ...], frozen: int) -> None:
    from moon_rec.encoders.backbones import FrozenTrunkCache

    tower = ImageTower.from_source(sources["cnn"], resolution=64, stages=stages).train()
    for block in tower.blocks()[:frozen]:
        block.requires_grad_(False)
    if frozen == len(tower.blocks()):
        tower.requires_grad_(False)
    imgs = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    want = tower(imgs)
    tower.feature_cache = cache = FrozenTrunkCache()
    first = tower(imgs)
    again = tower(torch.cat([imgs[1:], torch.rand(1, 3, 64, 64)]))
    assert torch.allclose(first, want, atol=1e-5) and torch.allclose(again[:2], want[1:], atol=1e-5)
    assert (cache.misses, cache.hits, len(cache)) == (4, 2, 4)
    if frozen < len(tower.blocks()):  # the blocks above the cached prefix still get gradients
        tower(imgs).sum().backward()
        top = tower.blocks()[frozen]  # the first trained block
        assert all(p.grad is not None for p in top.parameters())


def test_stage_trains_on_cached_frozen_trunk_and_fixed_views(sources: dict[str, Path],
                                                             tiny_world: Path,
                                                             tmp_path: Path) -> None:
    enc_keys = {**SMALL, "dims": "[8, 16, 64]", **source_config("cnn", sources["cnn"])}
    overrides = [f"encoder.{k}={v}" for k, v in enc_keys.items()]
    # 4 x 32 draws of 400 items: rows repeat, so their photo and their one view hit
    overrides += ["pretrain.steps=4", "pretrain.batch_size=32", "pretrain.warmup_steps=0",
                  "pretrain.mix={aug_image: 1.0}", "pretrain.image_tower_lr=0",
                  "pretrain.augment_views=1"]
    runs = {}
    for cache in ("true", "false"):
        config = load_config("tiny", None, [*overrides, f"pretrain.cache_frozen_image={cache}"])
        runs[cache] = train_stage(tiny_world, "pretrain", config, tmp_path / cache,
                                  progress=False)
    a = cached_run_matches(runs, tmp_path, "frozen_image_cache", "photos")
    assert a.image_tower.feature_cache is None  # type: ignore[union-attr]


# -- a frozen pretrained text tower: eval mode, its pooled output cached per text ------------


def _bert(path: Path) -> Path:
    vocab = fx.save_tokenizer(path)
    BertModel(BertConfig(vocab_size=vocab, hidden_size=24, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=48,
                         max_position_embeddings=32)).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("image_side", ["cnn", None])  # beside an image tower / the SigLIP ViT
def test_frozen_text_cache_gives_the_uncached_features(image_side: str | None,
                                                       sources: dict[str, Path],
                                                       tmp_path: Path) -> None:
    from moon_rec.encoders.backbones import FrozenTrunkCache

    kw: dict[str, object] = {"text_tower": str(_bert(tmp_path / "bert"))}
    if image_side is None:
        cfg = EncoderConfig.model_validate({**SMALL, **kw})
        enc = build_encoder(cfg, make_tokenizer(cfg, fx.TEXTS * 4))
    else:
        enc = make_encoder(image_side, sources[image_side], **kw)
    tower = enc.text_tower_module()
    assert tower is not None
    tower.requires_grad_(False)
    enc.train()
    assert enc.training and not tower.training  # frozen: a fixed feature extractor
    ids, mask = enc.tokenizer(fx.TEXTS, 16)
    short = int(mask.sum(1).max())  # the same texts padded to their longest: the same keys
    assert (FrozenTrunkCache.token_keys(ids, mask)
            == FrozenTrunkCache.token_keys(ids[:, :short], mask[:, :short]))
    assert len(set(FrozenTrunkCache.token_keys(ids, mask))) == len(fx.TEXTS)
    want = enc.encode_text(fx.TEXTS)
    enc.text_feature_cache = cache = FrozenTrunkCache()
    enc.encode_text([fx.TEXTS[0], fx.TEXTS[1], fx.TEXTS[0]])  # a repeat: computed once
    assert (cache.misses, cache.hits, len(cache)) == (2, 1, 2)
    got = enc.encode_text(fx.TEXTS)
    assert torch.allclose(got, want, atol=1e-5)
    assert (cache.misses, cache.hits, len(cache)) == (3, 3, 3)
    got.sum().backward()  # the fresh head above the frozen tower still trains
    assert enc.text_proj.weight.grad is not None
    tower.requires_grad_(True)  # trained again: the cache is bypassed, dropout back on
    enc.train()
    assert tower.training
    before = cache.hits
    enc.encode_text(fx.TEXTS)
    assert cache.hits == before


def test_stage_caches_a_frozen_text_tower(sources: dict[str, Path], tiny_world: Path,
                                          tmp_path: Path) -> None:
    text = _bert(tmp_path / "bert")
    enc_keys = {**SMALL, "dims": "[8, 16, 64]", **source_config("cnn", sources["cnn"]),
                "text_tower": str(text)}
    overrides = [f"encoder.{k}={v}" for k, v in enc_keys.items()]
    overrides += ["pretrain.steps=4", "pretrain.batch_size=32", "pretrain.warmup_steps=0",
                  "pretrain.mix={title_image: 1.0}", "pretrain.text_tower_lr=0",
                  "pretrain.image_tower_lr=0"]
    runs, modes = {}, []

    def on_step(_: int, enc: MoonEncoder) -> None:
        tower = enc.text_tower_module()
        assert tower is not None
        modes.append(tower.training)

    for cache in ("true", "false"):
        config = load_config("tiny", None, [*overrides, f"pretrain.cache_frozen_text={cache}"])
        runs[cache] = train_stage(tiny_world, "pretrain", config, tmp_path / cache,
                                  progress=False, on_step=on_step)
    assert modes and not any(modes)  # the frozen tower trained no dropout in either run
    a = cached_run_matches(runs, tmp_path, "frozen_text_cache", "texts")
    assert a.text_feature_cache is None
    # a later stage on the same frozen tower reuses the process's cache: nothing new to run
    config = load_config("tiny", None, overrides)
    again = train_stage(tiny_world, "pretrain", config, tmp_path / "again", progress=False)
    assert again["frozen_text_cache"]["misses"] == runs["true"]["frozen_text_cache"]["misses"]
    assert again["frozen_text_cache"]["hits"] > runs["true"]["frozen_text_cache"]["hits"]
