"""The bootstrap admin key: valid on every start, and only the one given at the last."""

from __future__ import annotations

from harness import start_coordinator


def test_a_replaced_bootstrap_key_stops_working(tmp_path, db_url):
    first, stop = start_coordinator(tmp_path / "a", db_url)
    old = first.admin_key
    with first.client() as c:
        assert c.get("/api/jobs").status_code == 200
    stop()
    second, stop = start_coordinator(tmp_path / "b", db_url)  # the same store, another key
    try:
        assert second.admin_key != old
        with second.client() as c:
            assert c.get("/api/jobs").status_code == 200
        with second.client(old) as c:
            r = c.get("/api/jobs")
            assert r.status_code == 401, r.text
    finally:
        stop()
