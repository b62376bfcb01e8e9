"""A pretrained text tower from a local folder (issue 17): a tiny BERT and its WordPiece
tokenizer saved with ``save_pretrained`` here (the mechanism that loads all-MiniLM-L6-v2),
never the real files. It encodes, round-trips through a checkpoint, post-trains on a
text-only (MovieLens-format) world without pretraining, and evaluates with "n/a" image
metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# transformers 5: BertTokenizer is the fast (Rust) tokenizer, BertTokenizerFast its alias
from transformers import BertConfig, BertModel, BertTokenizer

from moon_rec.cli import main
from moon_rec.data.movielens import GENRES, import_movielens
from moon_rec.encoders import (
    EncoderConfig,
    MoonEncoder,
    PretrainedTokenizer,
    build_encoder,
    make_tokenizer,
    matryoshka,
    product_text,
)
from moon_rec.encoders.dual_tower import DualTowerEncoder
from moon_rec.retrieval.recall import evaluate_checkpoint
from moon_rec.training.config import load_config
from moon_rec.training.data import load_world
from moon_rec.training.trainer import train_stage

WORDS = ["toy", "story", "scream", "casablanca", "drama", "comedy", "horror", "thriller",
         "animation", "romance", "war", "year", "genres", "children", "action", "adventure",
         "red", "dress", "blue", "boots", "the", "of", "and"]
TEXTS = ["red dress", "Toy Story (1995). year: 1995; genres: Animation, Comedy", "blue boots"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer BERT (hidden 32) + WordPiece tokenizer in a `transformers` model folder."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars,
             *(f"##{c}" for c in chars), *".,:;()'-"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab=str(folder / "vocab.txt"))
    assert tok.is_fast and len(tok) == len(vocab)  # (transformers 5 ignores vocab_file=)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=64))
    bert.save_pretrained(str(folder))
    return folder


def tower_config(path: Path, **kw: object) -> EncoderConfig:
    base: dict[str, object] = dict(hidden_size=32, num_heads=2, vision_layers=1, text_layers=1,
                                   patch_size=16, max_text_len=24, dims=(8, 16, 64),
                                   embed_dim=64, text_tower=str(path))
    return EncoderConfig.model_validate({**base, **kw})


def _build(cfg: EncoderConfig) -> DualTowerEncoder:
    enc = build_encoder(cfg, make_tokenizer(cfg, []))
    assert isinstance(enc, DualTowerEncoder) and enc.text_tower is not None
    return enc.eval()


def _tower(enc: MoonEncoder) -> torch.nn.Module:
    assert isinstance(enc, DualTowerEncoder) and enc.text_tower is not None
    return enc.text_tower


@pytest.fixture(scope="module")
def encoder(tiny_bert: Path) -> DualTowerEncoder:
    torch.set_num_threads(1)
    return _build(tower_config(tiny_bert))


def test_text_is_the_pretrained_tower_mean_pooled_under_the_matryoshka_head(
    encoder: DualTowerEncoder, tiny_bert: Path
) -> None:
    assert isinstance(encoder.tokenizer, PretrainedTokenizer)
    ids, mask = encoder.tokenizer(TEXTS, 24)
    assert ids.shape == mask.shape == (3, 24)
    assert ids[0, 0].item() == encoder.tokenizer.hf.cls_token_id  # the tower's own tokens
    bert = BertModel.from_pretrained(str(tiny_bert)).eval()
    with torch.no_grad():
        hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1)
        expected = F.normalize(encoder.text_proj(pooled), dim=-1)
        got = encoder.encode_text(TEXTS)
    assert got.shape == (3, 64)
    assert torch.allclose(got, expected, atol=1e-5)
    for d in encoder.dims:
        assert torch.allclose(matryoshka(got, d).norm(dim=1), torch.ones(3), atol=1e-5)
    # the head starts semi-orthogonal: the tower's geometry survives it
    w = encoder.text_proj.weight
    assert torch.allclose(w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w,
                          torch.eye(min(w.shape)), atol=1e-5)
    assert [id(p) for p in encoder.pretrained_text_parameters()] == \
        [id(p) for p in _tower(encoder).parameters()]


def test_text_only_product_and_product_with_photo(encoder: DualTowerEncoder) -> None:
    with torch.no_grad():
        text_only = encoder.encode_product(TEXTS, None)
        with_photo = encoder.encode_product(TEXTS, torch.rand(3, 3, 64, 64))
        assert torch.allclose(text_only, encoder.encode_text(TEXTS), atol=1e-6)
    assert with_photo.shape == (3, 64) and not torch.allclose(with_photo, text_only, atol=1e-3)
    assert product_text("Toy Story (1995)", "genres: Comedy") == "Toy Story (1995). genres: Comedy"
    assert product_text("Toy Story (1995)", "") == "Toy Story (1995)"


def test_checkpoint_roundtrip_carries_the_tower_and_its_tokenizer(
    encoder: DualTowerEncoder, tiny_bert: Path, tmp_path: Path
) -> None:
    # built from a copy of the tower, which is then deleted: the checkpoint has its own
    src = tmp_path / "tower_copy"
    shutil.copytree(tiny_bert, src)
    enc = _build(tower_config(src))
    assert enc.model_version == encoder.model_version  # the source path is provenance only
    path = enc.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(src)
    assert (path / "text_tower" / "config.json").is_file()
    assert (path / "text_tower" / "tokenizer.json").is_file()
    assert not (path / "tokenizer.json").exists()
    loaded = MoonEncoder.from_pretrained(path)
    assert isinstance(loaded.tokenizer, PretrainedTokenizer)
    assert loaded.model_version == enc.model_version
    imgs = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(TEXTS), enc.encode_text(TEXTS), atol=1e-6)
        assert torch.allclose(loaded.encode_product(TEXTS[:2], imgs),
                              enc.encode_product(TEXTS[:2], imgs), atol=1e-6)
    # the checkpoint's text_tower/ is itself a tower folder another run can start from
    again = _build(tower_config(path / "text_tower"))
    assert again.model_version == enc.model_version
    # the version covers the tower's weights and its tokenizer
    with torch.no_grad():
        next(_tower(loaded).parameters()).add_(0.01)
    assert loaded.model_version != enc.model_version
    fp = enc.tokenizer.fingerprint()
    enc.tokenizer(["a much longer text than before, to move the truncation state"], 7)
    assert enc.tokenizer.fingerprint() == fp  # a call does not change the version


def test_bad_tower_configs_are_named(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dual_tower option"):
        EncoderConfig(backbone="mllm", text_tower=str(tiny_bert), patch_size=8)
    cfg = tower_config(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        make_tokenizer(cfg, [])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        build_encoder(tower_config(empty), make_tokenizer(tower_config(tiny_bert), []))
    long = tower_config(tiny_bert, max_text_len=100)
    with pytest.raises(ValueError, match="exceeds the text tower's 64 positions"):
        build_encoder(long, make_tokenizer(long, []))


# -- post-training on a text-only world ----------------------------------------------------


def _movielens_world(tmp_path: Path) -> Path:
    """A GroupLens-format folder of 24 movies x 8 users (each user likes a run of movies a
    minute apart, so consecutive likes are item-item pairs), imported as a world."""
    src = tmp_path / "ml-100k"
    src.mkdir()
    names = ["Toy Story", "Scream", "Casablanca", "Red Dress", "Blue Boots", "The War"]
    movies = []
    for m in range(1, 25):
        flags = [0] * len(GENRES)
        flags[1 + m % 6] = 1
        flags[1 + (m * 7) % 18] = 1
        movies.append("|".join([str(m), f"{names[m % 6]} {m} (199{m % 8})", f"01-Jan-199{m % 8}",
                                "", "url", *map(str, flags)]))
    (src / "u.item").write_text("\n".join(movies) + "\n")
    (src / "u.user").write_text("".join(f"{u}|30|F|other|00000\n" for u in range(1, 9)))
    rows, t = [], 880_000_000
    for u in range(1, 9):
        for k in range(10):
            m = 1 + (u * 3 + k * (1 + u % 3)) % 24
            rows.append(f"{u}\t{m}\t{4 + (k % 2) if k % 4 else 2}\t{t}")
            t += 60
        t += 86_400
    (src / "u.data").write_text("\n".join(rows) + "\n")
    out = tmp_path / "world"
    import_movielens(src, out, split_quantile=0.75)
    return out


def test_posttrain_without_pretraining_on_a_text_only_world(tiny_bert: Path, tmp_path: Path) -> None:
    world = _movielens_world(tmp_path)
    data = load_world(world)
    assert data.text_only and data.images is None
    assert data.product_titles[0].startswith(data.title[0] + ". year:")
    overrides = [f"encoder.{k}={v}" for k, v in
                 dict(hidden_size=32, num_heads=2, vision_layers=1, patch_size=16, conv_stem=0,
                      max_text_len=32, embed_dim=64, dims="[8, 16, 64]").items()]
    overrides += ["stage1.steps=3", "stage1.batch_size=8", "stage1.warmup_steps=1",
                  "stage1.checkpoint_every=2", "stage1.log_every=1", "stage1.lr=1e-3",
                  "stage1.mix={item_item: 1.0, photo_product: 1.0, text_product: 0.3}",
                  "stage1.text_tower_lr=1e-4", "stage1.hard_negatives=1",
                  f"encoder.text_tower={tiny_bert}"]
    config = load_config("tiny", None, overrides)
    summary = train_stage(data, "stage1", config, tmp_path / "s1", progress=False)
    assert summary["pairs"].keys() == {"item_item"}  # no photos: the photo kind makes none
    trained = MoonEncoder.from_pretrained(tmp_path / "s1")
    assert trained.model_version == summary["model_version"] != summary["init_version"]
    fresh = BertModel.from_pretrained(str(tiny_bert))
    moved = [not torch.equal(a, b)
             for a, b in zip(_tower(trained).parameters(), fresh.parameters(), strict=True)]
    assert any(moved)  # the pretrained tower was fine-tuned

    frozen = load_config("tiny", None, [*overrides, "stage1.text_tower_lr=0"])
    train_stage(data, "stage1", frozen, tmp_path / "frozen", progress=False)
    still = MoonEncoder.from_pretrained(tmp_path / "frozen")
    for a, b in zip(_tower(still).parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)

    # pretraining (image-title pairs) has nothing to train on in a text-only world
    with pytest.raises(ValueError, match="text-only world: only"):
        train_stage(data, "pretrain", config, tmp_path / "pre", progress=False)

    # the intermediate metrics: image ones are "n/a", the rest computed
    result = evaluate_checkpoint(data, tmp_path / "s1")
    assert result["recall@10"] is None and result["image_title_align"] is None
    assert result["by_dim"] == {d: {"recall@1": None, "recall@10": None, "recall@100": None}
                                for d in ("8", "16", "64")}
    # no search logs: text recall is known-item title search over the catalog's titles
    assert result["text_recall_queries"] == "titles"
    assert 0.0 <= result["text_recall@10"] <= 1.0
    assert result["n_text_queries"] == data.n_items
    assert isinstance(result["probe_acc"], float) and np.isfinite(result["probe_acc"])
    assert result["baselines"]["untrained"]["recall@1"] is None
    assert result["baselines"]["color_histogram"]["probe_acc"] is None
    json.dumps(result)  # None is JSON null


def test_cli_posttrain_with_text_tower_flag(tiny_bert: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    world = _movielens_world(tmp_path)
    common = ["--world", str(world), "--preset", "tiny", "--quiet",
              "--set", "encoder.hidden_size=32", "--set", "encoder.num_heads=2",
              "--set", "encoder.conv_stem=0", "--set", "encoder.max_text_len=32",
              "--set", "stage1.steps=2", "--set", "stage1.batch_size=4",
              "--set", "stage1.mix={item_item: 1.0}", "--set", "stage1.text_tower_lr=1e-4"]
    assert main(["encoder", "posttrain", "--stage", "1", "--out", str(tmp_path / "run"),
                 "--text-tower", str(tiny_bert), *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    cfg = json.loads((tmp_path / "run" / "summary.json").read_text())["config"]
    assert cfg["encoder"]["text_tower"] == str(tiny_bert.resolve())
    assert summary["model_version"] == MoonEncoder.from_pretrained(tmp_path / "run").model_version
    # without --init nor a text tower there is nothing to post-train
    assert main(["encoder", "posttrain", "--stage", "1", "--out", str(tmp_path / "x"),
                 *common]) == 2
    assert "--init" in capsys.readouterr().err
    assert main(["eval", "recall", "--world", str(world), "--checkpoint",
                 str(tmp_path / "run")]) == 0
    table = capsys.readouterr().out
    assert "n/a" in table and "color_histogram" in table


def test_random_init_is_the_same_tower_with_fresh_weights(
    encoder: DualTowerEncoder, tiny_bert: Path
) -> None:
    """text_tower_init=random: the trained-from-scratch ablation keeps the architecture and
    the tokenizer, not the weights."""
    fresh = _build(tower_config(tiny_bert, text_tower_init="random", seed=7))
    pre, new = _tower(encoder).state_dict(), _tower(fresh).state_dict()
    assert pre.keys() == new.keys()
    assert all(pre[k].shape == new[k].shape for k in pre)
    assert not torch.equal(pre["embeddings.word_embeddings.weight"],
                           new["embeddings.word_embeddings.weight"])
    assert fresh.tokenizer.fingerprint() == encoder.tokenizer.fingerprint()
    assert fresh.model_version != encoder.model_version
