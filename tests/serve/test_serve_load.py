"""A bounded load test on loopback: a few concurrent clients for a few seconds, a share of the
uploads corrupt; no good request fails, every corrupt one is refused, throughput and latency shown."""

import json
import urllib.request

from latentad.serve.load import run_load


def test_concurrent_clients_with_corrupt_uploads_lose_nothing(server, images):
    base, api = server
    files = [(p.name, p.read_bytes()) for p in images]
    report = run_load(base, files, clients=4, seconds=3.0, token="s3cret", corrupt_share=0.2)
    s = report.summary()
    print("load:", json.dumps(s))
    assert report.failures == []
    assert s["good_sent"] > 0 and s["good_scored"] == s["good_sent"]
    assert s["corrupt_refused"] == s["corrupt_sent"]
    assert s["p99_ms"] >= s["p50_ms"] > 0
    health = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read())
    assert health["status"] == "ok" and health["images_scored"] == s["good_scored"]
    assert api.state.service.batcher.batches <= s["good_scored"]  # requests arriving together share batches
