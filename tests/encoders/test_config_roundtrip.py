"""A loaded-then-saved encoder checkpoint (what a resumed or staged pretraining writes)
has the same ``config.json`` bytes as the first save (issue 27: ``dtype`` was added to
each sub-config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moon_rec.encoders import (
    EncoderConfig,
    MoonEncoder,
    MoonTokenizer,
    build_encoder,
    make_tokenizer,
)

TEXTS = ["Yoxa leather dark blue stripes boots", "Yoko silk crimson gradient skirt",
         "color: red; pattern: dots; material: wool"] * 4


@pytest.mark.parametrize("backbone", ["dual_tower", "mllm", "clip"])
def test_config_json_is_byte_identical_after_a_load_and_save(tmp_path: Path,
                                                             backbone: str) -> None:
    if backbone == "clip":  # a pretrained dual encoder (from_pretrained from the start)
        import pretrained_fixtures as fx

        config = EncoderConfig(hidden_size=32, num_heads=2, vision_layers=1, text_layers=1,
                               patch_size=16, conv_stem=0, max_text_len=16,
                               dims=(8, 16, 64), embed_dim=64,
                               pretrained=str(fx.make_clip(tmp_path / "src")))
        first = build_encoder(config, make_tokenizer(config, TEXTS))
    else:
        config = EncoderConfig(backbone=backbone, hidden_size=32, num_heads=2, vision_layers=1,
                               text_layers=1, patch_size=16 if backbone == "dual_tower" else 8,
                               max_text_len=12, dims=(8, 16, 64), embed_dim=64)
        first = build_encoder(config, MoonTokenizer.train(TEXTS, vocab_size=120))
    first.save_pretrained(tmp_path / "a")
    loaded = MoonEncoder.from_pretrained(tmp_path / "a")
    loaded.save_pretrained(tmp_path / "b")
    MoonEncoder.from_pretrained(tmp_path / "b").save_pretrained(tmp_path / "c")
    a, b, c = ((tmp_path / d / "backbone" / "config.json").read_bytes() for d in "abc")
    assert a == b == c
    assert a.count(b'"dtype"') == 1  # the model's, not once more per sub-config
    assert MoonEncoder.from_pretrained(tmp_path / "c").model_version == first.model_version
