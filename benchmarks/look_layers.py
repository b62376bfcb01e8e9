"""Diagnostic benchmark: where the look is lost, from the photo to the ranker's content.

Linear probes on look-driven items of a synthetic world (80/20 item split, features
standardised, with the category one-hot): ridge R^2 of the 8-dim ``oracle_style``, and
logistic accuracy of the colour, the pattern and the shape (within its category). Read at
each stage of an encoder checkpoint's image tower (the conv stem's channel mean + std, the
stem pooled to 4x4, the ViT tokens mean-pooled and flattened, the 64-dim image vector, the
64-dim product vector) and, with ``--ranker``, on a look-head ranker's look vectors
(``moon_rec.ranking.look_head``, applied to every item's MOON vector). With ``--cnn`` (a
pretrained CNN state-dict file, e.g. EfficientNet-Lite0 from
``scripts/fetch_efficientnet_lite.sh``) the frozen trunk is read the same way at each
``--cnn-resolution`` (the 64 px photo resized inside, ImageNet normalisation): every stage's
channel mean + std, the pooled 1280-d head (what ``encoder.image_tower`` feeds the heads),
and two 64-d linear maps of it (PCA fitted on the probe's train items; a seeded Gaussian
projection). The same-run baseline is the photo itself at 16x16 pixels.

    python benchmarks/look_layers.py --world artifacts/world \\
        --encoder artifacts/encoder/stage2/encoder --embeddings artifacts/embeddings \\
        --ranker artifacts/rankers/cube_moon_look
    python benchmarks/look_layers.py --world artifacts/world \
        --cnn data/pretrained/efficientnet-lite0-57934424.pth --cnn-resolution 64,224

Prints JSON: one probe dict per feature (dims, r2, color, pattern, shape).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression, Ridge

    from moon_rec.data.embeddings import load_moon_embeddings
    from moon_rec.data.images import decode_prepared
    from moon_rec.data.io import read_table
    from moon_rec.encoders.base import MoonEncoder, images_to_tensor

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", required=True)
    p.add_argument("--encoder", action="append", default=[], help="checkpoint (repeatable)")
    p.add_argument("--embeddings", help="the embed job's snapshot (with --ranker)")
    p.add_argument("--ranker", help="a ranker trained with look_head")
    p.add_argument("--items", type=int, default=4000, help="look-driven items probed")
    p.add_argument("--cnn", action="append", default=[],
                   help="a pretrained CNN state-dict file, probed frozen (repeatable)")
    p.add_argument("--cnn-resolution", default="224",
                   help="comma-separated pixels the CNN runs at (the photo resized inside)")
    p.add_argument("--cnn-stages", default="",
                   help="also probe these stages' mean + std concatenated (and a 64-d PCA), "
                   "e.g. 0,4,5: encoder.image_tower_stages")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cols = ["item_id", "category_id", "oracle_style", "oracle_color", "oracle_pattern",
            "oracle_shape", "image", "title"]
    items = read_table(args.world, "items", columns=cols, validate=False)
    cats = read_table(args.world, "categories", columns=["category_id", "look_driven"],
                      validate=False)
    look = cats.column("category_id").to_numpy()[
        cats.column("look_driven").to_numpy(zero_copy_only=False)]
    cat = items.column("category_id").to_numpy()
    rng = np.random.default_rng(0)
    keep = np.flatnonzero(np.isin(cat, look))
    keep = np.sort(rng.choice(keep, min(args.items, len(keep)), replace=False))
    c = cat[keep]
    onehot = (c[:, None] == np.unique(c)[None, :]).astype(np.float32)
    style = np.stack(items.column("oracle_style").to_numpy(zero_copy_only=False))[keep]
    labels = {"color": items.column("oracle_color").to_numpy()[keep],
              "pattern": items.column("oracle_pattern").to_numpy()[keep],
              "shape": c * 16 + items.column("oracle_shape").to_numpy()[keep]}
    order = rng.permutation(len(keep))
    tr, te = order[: len(order) * 4 // 5], order[len(order) * 4 // 5:]

    def probe(feat: np.ndarray) -> dict[str, Any]:
        f = np.asarray(feat, np.float32).reshape(len(keep), -1)
        f = (f - f[tr].mean(0)) / (f[tr].std(0) + 1e-6)
        x = np.concatenate([f, onehot], 1)
        pred = Ridge(alpha=10.0).fit(x[tr], style[tr]).predict(x[te])
        r2 = 1 - ((pred - style[te]) ** 2).sum() / ((style[te] - style[te].mean(0)) ** 2).sum()
        out: dict[str, Any] = {"dims": f.shape[1], "r2": round(float(r2), 3)}
        for name, y in labels.items():
            clf = LogisticRegression(max_iter=400, C=1.0).fit(x[tr], y[tr])
            out[name] = round(float(clf.score(x[te], y[te])), 3)
        return out

    report: dict[str, Any] = {"world": args.world, "n_items": len(keep)}
    images = None
    if args.encoder or args.cnn:
        images = images_to_tensor(
            [decode_prepared(items.column("image")[int(i)].as_py(), 64) for i in keep], 64)
        report["pixels_16x16"] = probe(F.avg_pool2d(images, 4).numpy())
    for ck in args.encoder:
        enc = MoonEncoder.from_pretrained(ck).eval()
        # a scratch tower is read inside (stem, tokens); any other encoder (a pretrained
        # image tower, the MLLM) at its outputs only
        inside = getattr(enc, "stem", None) is not None
        names = ("stem_mean_std", "stem_4x4", "tokens_mean", "tokens_flat") if inside else ()
        feats: dict[str, list[torch.Tensor]] = {
            k: [] for k in (*names, "image_64", "image_full", "product_64")}
        with torch.no_grad():
            assert images is not None
            for s in range(0, len(keep), 256):
                b = images[s:s + 256]
                if inside:
                    st = enc.stem((b - 0.5) / 0.5)
                    feats["stem_mean_std"].append(torch.cat([st.mean((2, 3)), st.std((2, 3))], 1))
                    feats["stem_4x4"].append(F.avg_pool2d(st, 4).flatten(1))
                    h = enc._vision()(pixel_values=st).last_hidden_state
                    feats["tokens_mean"].append(h.mean(1))
                    feats["tokens_flat"].append(h.flatten(1))
                img = enc._image(b)
                feats["image_64"].append(F.normalize(img[:, :64], dim=-1))
                feats["image_full"].append(F.normalize(img, dim=-1))  # where 64 dims lose it
                titles = [items.column("title")[int(i)].as_py() for i in keep[s:s + 256]]
                feats["product_64"].append(
                    F.normalize(enc.encode_product(titles, b)[:, :64], dim=-1))
        report[ck] = {k: probe(torch.cat(v).numpy()) for k, v in feats.items()}
    for path in args.cnn:
        import time

        from moon_rec.encoders.backbones import ImageTower

        assert images is not None
        for res in (int(r) for r in args.cnn_resolution.split(",")):
            t0 = time.time()
            tower = ImageTower.from_source(path, resolution=res).eval()
            maps: list[list[torch.Tensor]] = []
            with torch.no_grad():
                for s in range(0, len(keep), 128):
                    stages = tower.model.stage_maps(tower.processing(images[s:s + 128]))
                    maps.append([torch.cat([m.mean((2, 3)), m.std((2, 3))], 1) for m in stages])
            seconds = time.time() - t0
            cols = [torch.cat([b[k] for b in maps]).numpy() for k in range(len(maps[0]))]
            names = ["stem", *(f"stage{k}" for k in range(1, len(cols) - 1)), "head"]
            out: dict[str, Any] = {"resolution": res, "embed_seconds": round(seconds, 1)}
            for name, f in zip(names[:-1], cols[:-1], strict=True):
                out[f"{name}_mean_std"] = probe(f)
            head = cols[-1][:, :cols[-1].shape[1] // 2]  # the pooled mean: the tower's output
            out["head_1280"] = probe(head)
            centred = head - head[tr].mean(0)
            _, _, vt = np.linalg.svd(centred[tr], full_matrices=False)
            out["head_pca64"] = probe(centred @ vt[:64].T)
            gauss = np.random.default_rng(0).standard_normal((head.shape[1], 64)) / 8.0
            out["head_rand64"] = probe(head @ gauss)
            if args.cnn_stages:  # the multi-scale pooling of encoder.image_tower_stages
                picks = [int(k) for k in args.cnn_stages.split(",")]
                multi = np.concatenate([cols[k] for k in picks], 1)
                key = "stages" + "+".join(map(str, picks))
                out[f"{key}_mean_std"] = probe(multi)
                mc = (multi - multi[tr].mean(0)) / (multi[tr].std(0) + 1e-6)
                _, _, vt = np.linalg.svd(mc[tr], full_matrices=False)
                out[f"{key}_pca64"] = probe(mc @ vt[:64].T)
            report[f"{path}@{res}"] = out
    if args.ranker:
        from moon_rec.ranking.evaluate import load_ranker

        if not args.embeddings:
            raise SystemExit("--ranker needs --embeddings")
        model, _ = load_ranker(args.ranker)
        if model.look_head is None:
            raise SystemExit(f"{args.ranker}: the ranker has no look head")
        emb = load_moon_embeddings(args.embeddings, model.config.moon_dim)
        pos = np.searchsorted(emb.item_ids, items.column("item_id").to_numpy()[keep])
        raw = np.ascontiguousarray(emb.item_vectors[pos])
        with torch.no_grad():
            z = model.look_head(torch.from_numpy(raw)).numpy()
        small = load_moon_embeddings(args.embeddings, 64)
        v64 = small.item_vectors[np.searchsorted(small.item_ids, emb.item_ids[pos])]
        report["moon_64"] = probe(v64)
        report[f"moon_{model.config.moon_dim}"] = probe(raw)
        report["look_head"] = probe(z)
        report["moon_64+look_head"] = probe(np.concatenate([v64, z], 1))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
