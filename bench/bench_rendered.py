#!/usr/bin/env python3
"""bench_rendered.py - DICOMweb hot paths of a viewer: series metadata and rendered frames.

Starts an in-process Voxa (SQLite index in a temporary folder, or --database-url), ingests a
synthetic CT series (--slices x --rows^2, default 300 x 512x512) and measures, over HTTP on
loopback with one keep-alive connection:

* ``metadata``: GET /dicom-web/studies/{s}/series/{r}/metadata, plain and gzip, plus the
  server-side work alone (``metadata_bytes`` called in-process, no HTTP);
* ``rendered_cold``: GET .../instances/{i}/rendered?viewport=512,512 for instances never
  rendered before (cache miss: read, decode, window, encode, write the cache);
* ``rendered_cached``: the same URLs again (cache hit);
* ``health``: GET /health, the HTTP round trip with nothing behind it, for reference.

Targets (docs/dicomweb.md): series metadata of 300 instances well under 100 ms; a cached
rendered frame under 5 ms and a cold 512x512 CT slice under 30 ms at the server.
Prints one JSON line (medians and 90th percentiles in ms).  Not a test: run it by hand,
``.venv/bin/python bench/bench_rendered.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]


def _stats(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"p50_ms": round(statistics.median(ms), 2), "p90_ms": round(_pct(ms, 0.9), 2),
            "min_ms": round(min(ms), 2), "n": len(ms)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, database_url: str | None) -> tuple[Any, Any, str]:
    import uvicorn

    from voxa.config import Settings
    from voxa.runtime import Runtime
    from voxa.web.app import create_app

    settings = Settings(data_dir=data_dir, database_url=database_url, fsync=False, http_host="127.0.0.1")
    rt = Runtime.open(settings, server=True)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise SystemExit("the HTTP server did not start")
    return rt, server, f"http://127.0.0.1:{port}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=30, help="metadata requests per variant")
    ap.add_argument("--frames", type=int, default=60, help="instances rendered cold, then cached")
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()

    from voxa.testing.synthetic import dataset_to_bytes, small_ct
    from voxa.web.dicomweb.wado import metadata_bytes

    tmp = Path(tempfile.mkdtemp(prefix="voxa-bench-rendered-"))
    rt, server, base = start_server(tmp, args.database_url)
    try:
        study = small_ct(7, slices=args.slices, rows=args.rows)
        t0 = time.perf_counter()
        for ds in study.datasets():
            result = rt.archive.ingest(dataset_to_bytes(ds), source="bench")
            assert result.ok, result.reason
        ingest_s = time.perf_counter() - t0
        locs = rt.archive.index.locate(study_uid=study.study_instance_uid)
        series_uid = locs[0].series_instance_uid
        root = f"{base}/dicom-web"
        series_path = f"/dicom-web/studies/{study.study_instance_uid}/series/{series_uid}"
        out: dict[str, Any] = {"test": "dicomweb_rendered", "instances": len(locs), "rows": args.rows,
                               "ingest_s": round(ingest_s, 2)}
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(5):
                client.get("/health")
            t = []
            for _ in range(50):
                s = time.perf_counter()
                client.get("/health")
                t.append(time.perf_counter() - s)
            out["health"] = _stats(t)

            for label, headers in (("metadata", {"Accept-Encoding": "identity"}),
                                   ("metadata_gzip", {"Accept-Encoding": "gzip"})):
                client.get(series_path + "/metadata", headers=headers)
                t = []
                size = 0
                for _ in range(args.repeat):
                    s = time.perf_counter()
                    r = client.get(series_path + "/metadata", headers=headers)
                    t.append(time.perf_counter() - s)
                    assert r.status_code == 200
                    size = int(r.headers.get("content-length", len(r.content)))
                out[label] = {**_stats(t), "bytes_on_wire": size}
            t = []
            for _ in range(args.repeat):
                s = time.perf_counter()
                body = metadata_bytes(rt, root, study.study_instance_uid, series_uid)
                t.append(time.perf_counter() - s)
            out["metadata_server_work"] = {**_stats(t), "bytes": len(body)}
            assert len(json.loads(body)) == len(locs)

            picks = locs[:: max(1, len(locs) // args.frames)][: args.frames]
            urls = [f"{series_path}/instances/{loc.sop_instance_uid}/rendered?viewport={args.rows}%2C{args.rows}"
                    for loc in picks]
            for label in ("rendered_cold", "rendered_cached"):
                t = []
                for u in urls:
                    s = time.perf_counter()
                    r = client.get(u)
                    t.append(time.perf_counter() - s)
                    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text[:200]
                out[label] = {**_stats(t), "bytes": len(r.content)}
        print(json.dumps(out))
    finally:
        server.should_exit = True
        rt.close(grace_s=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
