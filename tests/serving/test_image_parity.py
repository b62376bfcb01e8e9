"""One photo, one vector: a non-square photo imported with ``moon data import`` and
embedded by ``moon embed`` gets the vector that ``POST /items`` gives the same photo
(both go through ``moon_rec.data.images.prepare_image``)."""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from moon_rec.cli import main
from moon_rec.data.embeddings import load_moon_embeddings
from moon_rec.encoders import MoonEncoder
from moon_rec.loop import ServingArtifacts


def test_a_non_square_photo_gets_one_vector_by_import_and_by_post_items(
    serving_loop: ServingArtifacts, tmp_path: Path
) -> None:
    from conftest import AUTH, copy_store, make_service

    from serving.app import create_app

    rng = np.random.default_rng(7)
    photo = np.zeros((48, 80, 3), np.uint8)  # wide: padding and stretching differ
    photo[8:40, 10:70] = rng.integers(0, 256, size=(32, 60, 3), dtype=np.uint8)
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(photo).save(images / "wide.png")
    catalog = tmp_path / "catalog.csv"
    title = "striped wide canvas tote"
    with catalog.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["item_id", "title", "category", "image"])
        w.writeheader()
        w.writerow({"item_id": 990001, "title": title, "category": "bags", "image": "wide.png"})
    encoder = MoonEncoder.from_pretrained(serving_loop.encoder)
    size = int(encoder.config.image_size)
    world, emb = tmp_path / "world", tmp_path / "emb"
    assert main(["data", "import", "--items", str(catalog), "--images", str(images),
                 "--out", str(world), "--image-size", str(size)]) == 0
    assert main(["embed", "--world", str(world), "--checkpoint", str(serving_loop.encoder),
                 "--out", str(emb), "--no-progress"]) == 0  # the default precision

    service = make_service(serving_loop, copy_store(serving_loop, tmp_path / "store"))
    dim = service.dim
    batch = load_moon_embeddings(emb, dim)
    assert batch.item_ids.tolist() == [990001]
    with TestClient(create_app(service)) as http:
        r = http.post("/items", json={
            "item_id": 990002, "title": title,
            "image": base64.b64encode((images / "wide.png").read_bytes()).decode(),
            "category_id": 0, "brand_id": 0, "price": 1.0,
        }, headers=AUTH)
        assert r.status_code == 200, r.text
    online, _cat, _brand, found = service.catalog.center.lookup(np.array([990002]))
    assert bool(found[0])
    np.testing.assert_allclose(online[0], batch.item_vectors[0], atol=1e-5)
    service.close()
