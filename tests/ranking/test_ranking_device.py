"""Every tensor of the ranker's forward pass lives on its inputs' device.

Run on the ``meta`` device: a tensor built on the CPU by a constructor that forgot
``device=`` (the ``IdRemap`` bug: ``rows`` on the CPU, the ids on the GPU) then fails with
"Tensor on device cpu is not on the expected device meta", so the bug class is caught
without a GPU. On a machine with CUDA the same forward also runs there against the CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from moon_rec.data.embeddings import load_moon_embeddings
from moon_rec.ranking.config import load_ranker_config
from moon_rec.ranking.data import load_training_set
from moon_rec.ranking.features import RankerBatch
from moon_rec.ranking.model import MoonRanker
from moon_rec.ranking.sparse import IdRemap
from moon_rec.ranking.synthetic import SyntheticPaths
from moon_rec.ranking.train import build_model, table_sizes

META = torch.device("meta")
EXPERIMENTS = ["din_ids", "din_moon", "cube_moon", "cube_moon_plain", "cube_moon_dcn",
               "sim_moon", "din_ids_tiny", "cube_moon_tiny", "sim_moon_tiny"]


@contextmanager
def _meta_nonzero() -> Iterator[None]:
    # DIN's attention packs the real behaviours with mask.nonzero(), whose size a meta
    # tensor cannot know: let it assume every place is real (shapes stay consistent)
    from torch.fx.experimental import _config

    with _config.patch(meta_nonzero_assume_all_nonzero=True):  # type: ignore[attr-defined]
        yield


def _on(batch: RankerBatch, device: torch.device) -> RankerBatch:
    for kjt in (batch.pooled, batch.sequence):  # cache the per-key sizes before the move:
        kjt.length_per_key()  # a meta tensor has no values to count them from
        kjt.offset_per_key()
    return batch.to(device)


def _model_and_batch(ranker_data: SyntheticPaths, configs_file: Path, name: str
                     ) -> tuple[MoonRanker, RankerBatch]:
    cfg = load_ranker_config(configs_file, name)
    data = load_training_set(ranker_data.training_set, cfg.max_seq_len, cfg.query_token_buckets)
    emb = load_moon_embeddings(ranker_data.embeddings, cfg.moon_dim)
    data.attach_queries(emb)
    model = build_model(cfg, table_sizes(data, cfg), emb, seed=0).eval()
    return model, data.batch(np.arange(16), emb.query_vectors)


def test_id_remap_builds_its_rows_on_the_values_device() -> None:
    kjt = KeyedJaggedTensor(keys=["a", "b"], values=torch.tensor([1, 99, 3]),
                            lengths=torch.tensor([1, 1, 1, 0]), stride=2)
    remap = IdRemap({"a": 5, "b": 10}, "oov")
    assert remap(kjt).values().tolist() == [1, 4, 3]
    kjt.length_per_key()
    kjt.offset_per_key()
    out = remap(kjt.to(META))
    assert out.values().device == META and out.values().shape == (3,)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_ranker_forward_stays_on_the_inputs_device(ranker_data: SyntheticPaths, configs_file: Path,
                                                   name: str) -> None:
    model, batch = _model_and_batch(ranker_data, configs_file, name)
    with torch.no_grad(), _meta_nonzero():
        logits = model.to(META)(_on(batch, META))
    assert logits.device == META and logits.shape == (16,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["din_ids_tiny", "cube_moon_tiny", "sim_moon_tiny"])
def test_ranker_forward_on_cuda_matches_cpu(ranker_data: SyntheticPaths, configs_file: Path,
                                            name: str) -> None:
    model, batch = _model_and_batch(ranker_data, configs_file, name)
    cuda = torch.device("cuda")
    with torch.no_grad():
        want = model(batch)
        got = copy.deepcopy(model).to(cuda)(_on(batch, cuda))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)
