"""Cost and effect of the learned-embedding stage with a ResNet50-sized ONNX model (random weights).

No pretrained weights can be downloaded here, so the model is ResNet50's topology with random
weights (tests/support/onnx_encoders.py, built with the `onnx` package): it costs what the real model costs
and knows nothing a trained one would. Three parts:

    python benchmarks/bench_embedding.py                 # per-image model cost + cosine top-k cost by N
    python benchmarks/bench_embedding.py --devset        # + the system on ../shared/devset, model off/on,
                                                         #   and `neardup calibrate` with the model

The devset part runs the CLI in embedded mode (private Redis, real workers): ingest, query every
labelled query, score with the devset's scorer, then calibrate. Calibration must refuse this model
(no threshold reaches the target precision), so the precision with the model on equals the one off.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.index.embeddings import EmbeddingMatrix  # noqa: E402
from common.signals import embedding  # noqa: E402
from tests.support.onnx_encoders import parameters, resnet50_encoder  # noqa: E402

DEVSET = ROOT.parent / "shared" / "devset"


def model_cost(model: Path, images: list[Path]) -> None:
    enc = embedding.Encoder(model)
    photos = [Image.open(p).convert("RGB") for p in images]
    for p in photos[:2]:
        enc.vector(p)  # warm-up: first runs allocate
    t = time.perf_counter()
    for p in photos:
        embedding.to_tensor(p, enc.spec)
    prep = (time.perf_counter() - t) / len(photos) * 1000
    t, cpu = time.perf_counter(), time.process_time()
    for p in photos:
        enc.embed(p)
    total = (time.perf_counter() - t) / len(photos) * 1000
    total_cpu = (time.process_time() - cpu) / len(photos) * 1000  # the VM is shared: CPU is the cost
    print(
        f"model: {parameters(model) / 1e6:.1f}M parameters, {model.stat().st_size / 1e6:.0f} MB, "
        f"input {enc.spec}"
    )
    print(
        f"per image (1 thread, {len(photos)} photos): preprocessing {prep:.1f} ms wall, embed total "
        f"{total:.1f} ms wall, {total_cpu:.1f} ms CPU"
    )


def topk_cost(dim: int, sizes: list[int], k: int = 6, repeats: int = 5) -> None:
    rng = np.random.default_rng(0)
    for n in sizes:
        v = rng.standard_normal((n, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        m = EmbeddingMatrix(dim)
        m._grow(n)  # bulk fill for the benchmark (the worker fills row by row from Redis blobs)
        m._m[:n], m._ok[:n], m.n = v, True, n
        q = v[0]
        m.top(q, k)
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            m.top(q, k)
        ms = (time.perf_counter() - t) / repeats * 1000
        ms_cpu = (time.process_time() - cpu) / repeats * 1000
        print(
            f"cosine top-{k} over {n:>9,} x {dim}: {ms:8.2f} ms/query wall, {ms_cpu:8.2f} ms CPU, "
            f"matrix {m.nbytes / 1e6:8.0f} MB"
        )
        _faiss_sq8(v, q, k, repeats)
        del v, m


def _faiss_sq8(v: np.ndarray, q: np.ndarray, k: int, repeats: int) -> None:
    """The peer: FAISS with 8-bit scalar-quantised codes (1 byte per dimension in memory), one thread."""
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(1)
    index = faiss.IndexScalarQuantizer(v.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    index.train(v[: min(len(v), 20_000)])
    index.add(v)
    index.search(q[None], k)
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        index.search(q[None], k)
    ms, ms_cpu = ((time.perf_counter() - t) / repeats * 1000, (time.process_time() - cpu) / repeats * 1000)
    print(
        f"  faiss SQ8 (peer): {ms:8.2f} ms/query wall, {ms_cpu:8.2f} ms CPU, "
        f"codes {index.sa_code_size() * len(v) / 1e6:.0f} MB"
    )


def _cli(args: list[str], env: dict[str, str], timeout: float = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def _score(labels: Path, predictions: Path) -> dict:
    out = subprocess.run(
        [sys.executable, str(labels.parent / "score.py"), str(predictions), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def system_run(folder: Path, model: Path | None, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARDUP_")}
    env.update(PYTHONPATH=str(ROOT), NEARDUP_DATA_DIR=str(tmp / ("on" if model else "off")))
    if model is not None:
        env["NEARDUP_EMBEDDING_MODEL"] = str(model)
    t = time.perf_counter()
    ing = _cli(["ingest", str(folder / "inventory"), "-q"], env)
    ingest_s = time.perf_counter() - t
    assert ing.returncode == 0, ing.stderr[-2000:]
    rate = re.search(r"\(([\d.]+) images/s\)", ing.stderr)
    out = tmp / f"{'on' if model else 'off'}.json"
    t = time.perf_counter()
    q = _cli(["query", str(folder / "queries"), "-q", "-o", str(out)], env)
    query_s = time.perf_counter() - t
    assert q.returncode == 0, q.stderr[-2000:]
    qline = re.search(r"query: (\d+) queries in ([\d.]+) s", q.stderr)
    r = _score(folder / "labels.json", out)
    result = {
        "ingest_images_per_s": float(rate.group(1)) if rate else None,
        "ingest_wall_s": round(ingest_s, 1),
        "query_s": float(qline.group(2)) if qline else round(query_s, 1),
        "queries": int(qline.group(1)) if qline else None,
        "precision": round(r["precision"], 4),
        "recall": round(r["recall"], 4),
        "f1": round(r["f1"], 4),
        "distractor_false_match_rate": r["distractor_false_match_rate"],
    }
    if model is not None:
        cal = _cli(["calibrate", str(folder / "labels.json"), "-q"], env)
        result["calibrate_exit"] = cal.returncode
        result["calibrate_output"] = cal.stderr
        print(cal.stderr)
        again = tmp / "on-after-calibrate.json"
        q2 = _cli(["query", str(folder / "queries"), "-q", "-o", str(again)], env)
        assert q2.returncode == 0, q2.stderr[-2000:]
        r2 = _score(folder / "labels.json", again)
        result["after_calibrate"] = {"precision": round(r2["precision"], 4), "recall": round(r2["recall"], 4)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devset", action="store_true", help="also run the system on ../shared/devset")
    ap.add_argument("--sizes", default="10000,100000", help="matrix sizes for the top-k timing")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="neardup-emb-") as tmp_s:
        tmp = Path(tmp_s)
        t = time.perf_counter()
        model = resnet50_encoder(tmp / "resnet50-random.onnx")
        print(f"built the ResNet50-shaped model in {time.perf_counter() - t:.1f} s")
        images = sorted((DEVSET / "inventory").glob("*.jpg"))[:20] or sorted(
            (ROOT / "samples/inventory").glob("*.jpg")
        )
        model_cost(model, images)
        topk_cost(2048, [int(n) for n in args.sizes.split(",")])
        topk_cost(512, [int(n) for n in args.sizes.split(",")])
        if args.devset:
            if not (DEVSET / "labels.json").is_file():
                print("no ../shared/devset: skipping the system part")
                return
            results = {"off": system_run(DEVSET, None, tmp), "on": system_run(DEVSET, model, tmp)}
            for name, r in results.items():
                print(name, {k: v for k, v in r.items() if k != "calibrate_output"})
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
