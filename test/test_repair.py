"""Gap repair: every outage is recorded in voipbin_gaps, and what VoIPBIN sent
meanwhile comes back over REST (docs/voipbin-protocol.md §10)."""
import os
import time

import pytest

from pgcluster import wait_until
from test_worker import subscribe


def gaps(cluster):
    return cluster.query("SELECT id, started_at, ended_at, repaired_at, events_repaired, error, cause"
                         " FROM voipbin_gaps ORDER BY id")


def db_now(cluster):
    return cluster.query_one("SELECT clock_timestamp()")[0]


@pytest.fixture
def clean_gaps(vb):
    vb.execute("TRUNCATE voipbin_gaps")
    yield vb


def outage(fake, cluster, seconds, status=503):
    """The connection drops, and every handshake fails for `seconds`; returns the
    database clock at the drop and at the reconnection."""
    fake.config(ws_reject_status=status)
    dropped = db_now(cluster)
    fake.drop()
    cluster.wait_status(lambda s: s["state"] != "connected", what="the outage noticed")
    deadline = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= deadline or None, timeout=seconds + 1, interval=0.05,
               what="the outage's length")
    fails = sum(1 for h in fake.state()["handshakes"] if h["status"] == status)
    fake.config(ws_reject_status=None)
    fake.wait_state(lambda s: s["connections"], timeout=15, what="reconnected")
    return dropped, fails


def test_an_outage_is_recorded(clean_gaps, fake, topic):
    vb = clean_gaps
    sub = subscribe(vb, fake, topic + "call:")
    dropped, fails = outage(fake, vb, 2)
    assert fails >= 2, "handshakes failed during the outage"
    fake.wait_topics([sub], timeout=15)
    [g] = wait_until(lambda: gaps(vb) or None, timeout=10, what="a gap row")
    _, started, ended, _, _, error, cause = g
    assert cause == "outage"
    assert abs((started - dropped).total_seconds()) < 1, (started, dropped)
    assert (ended - started).total_seconds() >= 2
    assert ended <= db_now(vb)
    assert vb.status()["last_gap_at"] == started
    assert error is None or "not repaired" not in error


def test_repair_off_still_records_the_outage(clean_gaps, fake, topic):
    vb = clean_gaps
    vb.set_conf(voipbin__repair="off")
    try:
        wait_until(lambda: vb.query_one("SELECT current_setting('voipbin.repair')")[0] == "off",
                   what="reloaded")
        subscribe(vb, fake, topic + "call:")
        fake.reset()
        outage(fake, vb, 1)
        [g] = wait_until(lambda: gaps(vb) or None, timeout=10, what="a gap row")
        assert g[3] is None and "voipbin.repair is off" in g[5]
        assert not [r for r in fake.state()["rest_requests"] if r["path"] != "/v1.0/customer"], \
            "no repair request"
    finally:
        vb.set_conf(voipbin__repair=None)


def test_gaps_are_dumped_with_their_ids(clean_gaps, fake, topic):
    vb = clean_gaps
    subscribe(vb, fake, topic + "call:")
    outage(fake, vb, 0.5)
    wait_until(lambda: gaps(vb) or None, timeout=10, what="a gap row")
    dump = os.path.join(vb.dir, "gaps-dump.sql")
    vb._run("pg_dump", "-h", vb.sock, "-p", str(vb.port), "-f", dump, vb.dbname)
    vb.execute("CREATE DATABASE restored_gaps", dbname="postgres")
    try:
        vb._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", vb.sock, "-p", str(vb.port),
                "-f", dump, "restored_gaps")
        assert vb.query("SELECT * FROM voipbin_gaps ORDER BY id", dbname="restored_gaps") \
            == vb.query("SELECT * FROM voipbin_gaps ORDER BY id")
        max_id = vb.query_one("SELECT max(id) FROM voipbin_gaps")[0]
        new_id = vb.query("INSERT INTO voipbin_gaps (started_at, ended_at) VALUES (now(), now())"
                          " RETURNING id", dbname="restored_gaps")[0][0]
        assert new_id > max_id, "ids continue after the restore"
    finally:
        vb.execute("DROP DATABASE restored_gaps", dbname="postgres")
