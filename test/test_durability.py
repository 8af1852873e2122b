"""The write-ahead journal: nothing the worker has read is lost or stored twice.

Each crash kind with a burst that arrives while voipbin_events is locked, the
spool limit, voipbin.max_frame_size, a damaged journal at start, a copied
journal on a standby, and the defects found in review."""
import datetime
import glob
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time

import psycopg2
import pytest

from helpers import cluster_with_a_silent_resolver, count, subscribe, transcript, try_query
from journal_files import HDR, journal_dir, segment_bytes, unstored
from pgcluster import wait_until

BURST = 3000


@pytest.fixture
def handler(vb):
    """A handler that counts its runs per event (voipbin_on), removed afterwards."""
    vb.execute("""
        CREATE TABLE dur_runs (message text);
        CREATE FUNCTION dur_h(e voipbin_events) RETURNS void LANGUAGE sql
            AS $$ INSERT INTO dur_runs VALUES (e.data->>'message') $$;
        SELECT voipbin_on('transcript_created', 'dur_h(voipbin_events)');""")
    yield
    vb.execute("""
        SELECT voipbin_off('transcript_created', 'dur_h(voipbin_events)');
        DROP FUNCTION dur_h(voipbin_events); DROP TABLE dur_runs;""")


def lock_events(cluster):
    locker = cluster.connect(autocommit=False)
    locker.cursor().execute("LOCK TABLE voipbin_events IN ACCESS EXCLUSIVE MODE")
    return locker


def burst(fake, n, start=0, pad="", bad_at=None):
    """n transcripts numbered from start, in chunks the fake never drops for a
    reader that keeps up; a frame that is no JSON after the bad_at-th."""
    sent = 0
    while sent < n:
        k = min(500, n - sent)
        r = fake.publish(events=[{"event_type": "transcript_created",
                                  "data": transcript(fake, "%d%s" % (start + sent + i, pad))}
                                 for i in range(k)], flush=True)
        assert r["dropped"] == 0, "the worker stopped reading: VoIPBIN would drop events"
        sent += k
        if bad_at is not None and sent - k <= bad_at < sent:
            fake.send(text="not json {%d" % bad_at, flush=True)


def wait_journaled(cluster, n, timeout=60):
    """n frames read from the socket and on file (none of them stored yet)."""
    return wait_until(lambda: len(unstored(cluster)) >= n, timeout=timeout,
                      what="%d frames in the journal" % n)


def assert_exactly_once(cluster, n, dead=1, timeout=120):
    wait_until(lambda: try_query(lambda: count(cluster) >= n and count(cluster, "voipbin_dead_letters") >= dead),
               timeout=timeout, what="%d events stored after recovery" % n)
    cluster.wait_status(lambda s: s["buffered_bytes"] == 0, timeout=30, what="journal drained")
    assert count(cluster) == n
    assert count(cluster, "voipbin_dead_letters") == dead
    assert cluster.query_one("SELECT count(DISTINCT data->>'message') FROM voipbin_events")[0] == n
    # the handler ran once per event, no more
    assert count(cluster, "dur_runs") == n
    assert cluster.query_one("SELECT count(DISTINCT message) FROM dur_runs")[0] == n
    # arrival order kept across the restart: ids follow the numbers sent
    nums = [int(r[0]) for r in cluster.query("SELECT data->>'message' FROM voipbin_events ORDER BY id")]
    assert nums == sorted(nums)
    st = cluster.status()
    assert st["duplicates"] == 0, "a replay stored nothing twice, not even as a duplicate"
    assert st["frames_lost"] == 0


def _crash_burst(vb, fake, topic, crash):
    subscribe(vb, fake, topic + "transcript:transcript_")
    pid = vb.worker_pid()
    locker = lock_events(vb)
    try:
        burst(fake, BURST, bad_at=1234)
        wait_journaled(vb, BURST + 1)
        crash(vb, pid)
    finally:
        try:
            locker.close()
        except psycopg2.Error:
            pass
    wait_until(lambda: try_query(lambda: vb.worker_pid() not in (None, pid)), timeout=60,
               what="a new worker after the crash")
    assert_exactly_once(vb, BURST)
    # the journal's files are recycled once stored
    wait_until(lambda: segment_bytes(vb) < 4 * 1024 * 1024, timeout=20, what="segments recycled")


def _kill_worker(vb, pid):
    os.kill(pid, signal.SIGKILL)


def _immediate_shutdown(vb, pid):
    r = vb.stop("immediate")
    assert r.returncode == 0, r.stdout
    vb.start()


def _kill_backend(vb, pid):
    other = vb.connect()
    bpid = other.cursor()
    bpid.execute("SELECT pg_backend_pid()")
    os.kill(bpid.fetchone()[0], signal.SIGKILL)     # the postmaster resets every process
    try:
        other.close()
    except psycopg2.Error:
        pass


@pytest.mark.parametrize("crash", [_kill_worker, _immediate_shutdown, _kill_backend],
                         ids=["kill-9-worker", "stop-immediate", "kill-9-backend"])
def test_burst_behind_a_lock_survives_a_crash(vb, fake, topic, handler, crash):
    _crash_burst(vb, fake, topic, crash)


def _log_time(text):
    """A timestamptz as the server prints it (2026-12-01 23:59:01.123456+00)."""
    if re.search(r"[+-]\d\d$", text):
        text += ":00"
    return datetime.datetime.fromisoformat(text)


def test_spool_limit_counts_what_does_not_fit(vb, fake, topic):
    vb.set_conf(voipbin__spool_limit="2MB", voipbin__buffer_limit="1MB")
    try:
        subscribe(vb, fake, topic + "transcript:transcript_")
        wait_until(lambda: vb.query_one("SHOW voipbin.spool_limit")[0] == "2MB", what="reload")
        limit = 2 * 1024 * 1024
        sent = 3000
        started = time.time()
        locker = lock_events(vb)
        try:
            # ~3 MB against a 2 MB journal: the socket is still read at full speed
            burst(fake, sent, pad=" " + "p" * 900)
            st = vb.wait_status(lambda s: s["frames_lost"] > 0 and
                                len(unstored(vb)) + s["frames_lost"] >= sent,
                                timeout=60, what="every frame journaled or counted as lost")
            assert segment_bytes(vb) <= limit
        finally:
            locker.rollback()
            locker.close()
        lost = vb.status()["frames_lost"]
        assert 0 < lost < sent
        wait_until(lambda: count(vb) == sent - lost, timeout=60, what="the frames that fitted stored")
        assert segment_bytes(vb) <= limit
        log = wait_until(lambda: [l for l in vb.read_log().splitlines()
                                  if re.search(r"received frames? lost between", l)], timeout=20,
                         what="the overflow's WARNING")
        assert len(log) == 1, "one WARNING per overflow, not one per frame: %r" % log
        assert "WARNING:  voipbin: %d received %s lost between" % (lost, "frame" if lost == 1 else "frames") in log[0]
        # the first and the last lost frame's arrival: the burst took a while,
        # so they differ, the first before the last, both within the test
        m = re.search(r"lost between (\S+ \S+) and (\S+ \S+):", log[0])
        assert m, log[0]
        first, last = (_log_time(t) for t in m.groups())
        assert started - 60 <= first.timestamp() < last.timestamp() <= time.time() + 60, m.groups()
        # nothing else broke: the next event is stored
        burst(fake, 1, start=sent)
        wait_until(lambda: count(vb) == sent - lost + 1, what="stored after the overflow")
    finally:
        vb.set_conf(voipbin__spool_limit=None, voipbin__buffer_limit=None)


def test_a_crash_during_an_overflow_is_a_gap_from_before_it(vb, fake, topic):
    """A restart's gap starts at voipbin_journal.alive_at, written every 15 s
    while connected: not while the journal is losing frames, or a worker
    killed during an overflow (reported only once it ends) would leave a gap
    that starts after the frames it lost.  Found by a 30-minute test/chaos run
    (seed 2061462869)."""
    vb.execute("TRUNCATE voipbin_gaps")
    vb.set_conf(voipbin__spool_limit="2MB", voipbin__buffer_limit="1MB")
    try:
        subscribe(vb, fake, topic + "transcript:transcript_")
        wait_until(lambda: vb.query_one("SHOW voipbin.spool_limit")[0] == "2MB", what="reload")
        pid = vb.worker_pid()
        before = vb.query_one("SELECT clock_timestamp()")[0]
        # the store fails at once and is retried (the worker's loop runs on,
        # its timers too), while the journal fills and then loses frames
        vb.execute("""CREATE FUNCTION refuse_for_now() RETURNS trigger LANGUAGE plpgsql AS $$
                      BEGIN RAISE EXCEPTION 'not now' USING ERRCODE = '55P03'; END $$;
                      CREATE TRIGGER refuse_for_now BEFORE INSERT ON voipbin_events
                      FOR EACH ROW EXECUTE FUNCTION refuse_for_now()""")
        try:
            burst(fake, 3000, pad=" " + "p" * 900)
            vb.wait_status(lambda s: s["frames_lost"] > 0, timeout=60, what="the journal losing frames")
            # past a tick of alive_at (15 s) with the overflow still open
            until = time.monotonic() + 17
            wait_until(lambda: time.monotonic() >= until or None, timeout=20, interval=0.2,
                       what="an alive_at tick during the overflow")
            assert vb.status()["frames_lost"] > 0 and vb.worker_pid() == pid
            os.kill(pid, signal.SIGKILL)
        finally:
            wait_until(lambda: try_query(lambda: vb.execute(
                "DROP TRIGGER refuse_for_now ON voipbin_events; DROP FUNCTION refuse_for_now()") or True),
                timeout=60, what="the trigger dropped")
        rows = wait_until(lambda: try_query(lambda: vb.query(
            "SELECT started_at FROM voipbin_gaps WHERE cause = 'restart'")) or None,
            timeout=60, what="the restart's gap")
        assert rows[0][0] <= before, "the gap starts before the lost frames: %s > %s" % (rows[0][0], before)
    finally:
        vb.set_conf(voipbin__spool_limit=None, voipbin__buffer_limit=None)


def test_max_frame_size_dead_letters_a_huge_message(vb, fake, topic):
    subscribe(vb, fake, topic + "transcript:transcript_")
    # the fake takes seconds to build a big message: no idle hang-up meanwhile
    vb.set_conf(voipbin__max_frame_size="1MB", voipbin__idle_timeout="60s")
    try:
        wait_until(lambda: vb.query_one("SHOW voipbin.max_frame_size")[0] == "1MB", what="reload")
        pid = vb.worker_pid()
        huge = json.dumps({"type": "transcript_created", "data": {"message": "h" * (12 << 20)}})
        fake.send(fragments=[huge[i:i + (1 << 20)] for i in range(0, len(huge), 1 << 20)], flush=True)
        wait_until(lambda: count(vb, "voipbin_dead_letters") == 1, timeout=60, what="a dead letter")
        raw, error = vb.query_one("SELECT raw, error FROM voipbin_dead_letters")
        assert len(raw.tobytes()) == 1 << 20, "its first max_frame_size bytes are kept"
        assert raw.tobytes() == huge[:1 << 20].encode()
        assert str(len(huge)) in error and "voipbin.max_frame_size" in error, error
        assert vb.worker_pid() == pid
    finally:
        vb.set_conf(voipbin__max_frame_size=None, voipbin__idle_timeout=None)
    # under the default, a 2 MB event is still stored whole
    wait_until(lambda: vb.query_one("SHOW voipbin.max_frame_size")[0] == "16MB", what="reload")
    big = "b" * (2 << 20)
    fake.publish("transcript_created", transcript(fake, big))
    wait_until(lambda: count(vb) == 1, timeout=30, what="the 2 MB event")
    assert vb.query_one("SELECT length(data->>'message') FROM voipbin_events")[0] == len(big)


def test_damaged_journal_at_start_replays_what_it_can(vb, fake, topic):
    subscribe(vb, fake, topic + "transcript:transcript_")
    locker = lock_events(vb)
    try:
        burst(fake, 100)
        wait_journaled(vb, 100)
        recs = unstored(vb)
        vb.stop("immediate")
    finally:
        try:
            locker.close()
        except psycopg2.Error:
            pass
    assert len(recs) == 100
    # flip a byte inside the 50th frame, and cut the last one short (a torn write)
    seg = sorted(glob.glob(os.path.join(journal_dir(vb), "*.seg")))[-1]
    base = int(os.path.basename(seg)[:16], 16)
    with open(seg, "r+b") as f:
        pos = recs[49][0] - base + HDR.size + 10
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xff]))
        f.truncate(recs[-1][1] - base - 7)
    damaged = {json.loads(recs[49][3])["message"], json.loads(recs[-1][3])["message"]}
    vb.start()
    wait_until(lambda: try_query(lambda: count(vb) == 98), timeout=60, what="the 98 readable frames stored")
    st = vb.wait_status(lambda s: s["state"] == "connected", what="the worker runs")
    assert st["last_error"] and "journal" in st["last_error"], st
    got = {r[0] for r in vb.query("SELECT data->>'message' FROM voipbin_events")}
    assert got == {str(i) for i in range(100)} - damaged
    log = vb.read_log()
    assert "damaged byte(s) at offset" in log
    assert "unreadable byte(s) at its end" in log


def _promoted_stores_nothing(replica):
    """Promotes the standby: connected, nothing pending, nothing stored."""
    replica.execute("SELECT pg_promote()")
    replica.wait_status(lambda s: s["state"] == "connected", timeout=30, what="promoted and connected")
    replica.wait_status(lambda s: s["buffered_bytes"] == 0, what="nothing pending on the promoted server")
    assert count(replica) == 0 and count(replica, "voipbin_dead_letters") == 0


def test_copied_journal_on_a_standby_is_not_stored_twice(vb, fake, topic, secret_dir):
    """pg_basebackup copies the journal with frames not stored yet: the
    promoted standby must not store them again (the original server does)."""
    subscribe(vb, fake, topic + "transcript:transcript_")
    locker = lock_events(vb)
    replica = None
    try:
        burst(fake, 50, bad_at=20)
        wait_journaled(vb, 51)
        replica = vb.make_replica()
        assert len(glob.glob(os.path.join(replica.data, "voipbin_journal", "*.seg"))) > 0
        replica.start()
        replica.wait_status(lambda s: s["state"] == "standby", what="standby")
        _promoted_stores_nothing(replica)
        assert "copied from another server" in replica.read_log()
    finally:
        locker.rollback()
        locker.close()
        if replica:
            replica.destroy()
    # the original stores them, once
    wait_until(lambda: count(vb) == 50 and count(vb, "voipbin_dead_letters") == 1, timeout=60,
               what="stored on the original")


def _write_spool_1_0(path, frames, stored_upto=0, torn=b""):
    """A spool file as release 1.0's src/spool.c wrote it: per frame a 24-byte
    header (magic "VBSP", length, arrival time in Unix us, flags, padding)
    and its bytes; voipbin.spool.pos, the offset stored up to.  torn: a record
    cut short at the end, as a crash mid-append leaves it.  Returns each
    record's end offset.  (test_upgrade.py has the real 1.0 write one.)"""
    ends, off = [], 0
    with open(path, "wb") as f:
        for text in frames:
            b = text.encode()
            f.write(struct.pack("<IIqII", 0x56425350, len(b), int(time.time() * 1e6), 0, 0) + b)
            off += 24 + len(b)
            ends.append(off)
        f.write(torn)
    with open(path + ".pos", "wb") as f:
        f.write(struct.pack("<Q", stored_upto))
    for p in (path, path + ".pos"):
        shutil.chown(p, "postgres", "postgres")
        os.chmod(p, 0o600)
    return ends


def _spooled(fake, tag, n):
    return [json.dumps({"type": "transcript_created", "data": transcript(fake, "%s %d" % (tag, i))})
            for i in range(n)]


def test_1_0_spool_imported_from_its_stored_offset(vb, fake):
    """What 1.0 recorded as stored is not imported again, a torn last record
    is no frame, the rest is stored once and the file removed."""
    frames = _spooled(fake, "spooled", 3)
    torn = struct.pack("<IIqII", 0x56425350, 1000, 0, 0, 0) + b'{"type":"transcript_created"'
    spool = os.path.join(vb.data, "voipbin.spool")
    vb.stop()
    _write_spool_1_0(spool, frames, stored_upto=24 + len(frames[0]), torn=torn)   # the first stored
    vb.start()
    wait_until(lambda: count(vb) == 2, timeout=30, what="the two unstored frames stored")
    assert {r[0] for r in vb.query("SELECT data->>'message' FROM voipbin_events")} == {"spooled 1", "spooled 2"}
    assert count(vb, "voipbin_dead_letters") == 0
    assert not os.path.exists(spool) and not os.path.exists(spool + ".pos")
    assert "imported 2 frames that voipbin 1.0 had spooled" in vb.read_log()


def test_1_0_spool_on_a_standby_is_not_imported(vb, fake):
    """A standby's voipbin.spool is its primary's, copied by pg_basebackup:
    renamed aside, never stored there, not even after promotion."""
    replica = vb.make_replica()
    try:
        spool = os.path.join(replica.data, "voipbin.spool")
        _write_spool_1_0(spool, _spooled(fake, "copied", 3))
        replica.start()
        replica.wait_status(lambda s: s["state"] == "standby", what="standby")
        assert not os.path.exists(spool) and os.path.getsize(spool + ".copied") > 0
        _promoted_stores_nothing(replica)
        assert "a copy of its primary's" in replica.read_log()
    finally:
        replica.destroy()


def test_cancel_of_the_worker_is_not_a_restart(vb, fake, topic):
    subscribe(vb, fake, topic + "transcript:transcript_")
    pid = vb.worker_pid()
    before = vb.read_log().count("canceling statement due to user request")
    for i in range(3):
        vb.execute("SELECT pg_cancel_backend(%s)", (pid,))
        wait_until(lambda: vb.read_log().count("canceling statement due to user request") > before + i,
                   what="cancel %d handled" % (i + 1))
    burst(fake, 10)
    wait_until(lambda: count(vb) == 10, what="still storing")
    assert vb.worker_pid() == pid, "a cancel must not restart the worker"
    assert "terminated by signal" not in vb.read_log().split("canceling statement")[-1]


def test_extension_at_1_0_keeps_frames_in_the_journal(vb, fake, topic):
    subscribe(vb, fake, topic + "transcript:transcript_")
    vb.execute("BEGIN; DROP EXTENSION voipbin; CREATE EXTENSION voipbin VERSION '1.0';"
               " INSERT INTO voipbin_subscriptions (topic) VALUES (%s); COMMIT",
               (topic + "transcript:transcript_",))
    try:
        burst(fake, 20)
        st = vb.wait_status(lambda s: s["last_error"] and "ALTER EXTENSION voipbin UPDATE" in s["last_error"],
                            what="told to update")
        assert st["events_stored"] is not None
        assert count(vb) == 0
        burst(fake, 5, start=20)
        assert len([l for l in vb.read_log().splitlines() if "is at version 1.0" in l]) == 1
    finally:
        vb.execute("ALTER EXTENSION voipbin UPDATE")
    wait_until(lambda: count(vb) == 25, timeout=30, what="stored once updated")


HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def test_ws_connect_never_reads_its_command_after_queueing_it(tmp_path):
    """ws_connect() handed its command to the network thread, which may free it,
    then read the connection number from it (test/c/ws_connect_race.c)."""
    exe = str(tmp_path / "ws_connect_race")
    flags = subprocess.check_output(["pkg-config", "--cflags", "--libs", "libwebsockets"], text=True).split()
    subprocess.run(["gcc", "-g", "-std=gnu11", "-I" + SRC, "-o", exe,
                    os.path.join(HERE, "c", "ws_connect_race.c"), os.path.join(SRC, "net", "ws", "ws_client.c"),
                    os.path.join(SRC, "net", "journal", "journal.c")] + flags + ["-lssl", "-lcrypto", "-pthread", "-ldl"],
                   check=True, timeout=120)
    r = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def test_journal_on_its_own(tmp_path):
    """src/net/journal/journal.c without PostgreSQL, under ASan and UBSan
    (test/c/journal_unit.c): append, reopen and replay in order, recycling, a
    copied directory, memory-only mode, open/close cycles leaking nothing."""
    exe = str(tmp_path / "journal_unit")
    subprocess.run(["gcc", "-g", "-std=gnu11", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-I" + SRC, "-o", exe,
                    os.path.join(HERE, "c", "journal_unit.c"), os.path.join(SRC, "net", "journal", "journal.c"),
                    "-pthread"], check=True, timeout=120)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([exe, str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout


def test_journal_partial_record_that_cannot_be_cut_off(tmp_path):
    """A record written only in part whose rest ftruncate() cannot cut off
    (test/c/journal_torn.c, pwritev and ftruncate wrapped): reported, counted
    lost, never written over; the records around it read back whole, at once
    and after a restart."""
    exe = str(tmp_path / "journal_torn")
    subprocess.run(["gcc", "-g", "-std=gnu11", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-I" + SRC, "-Wl,--wrap=pwritev,--wrap=ftruncate", "-o", exe,
                    os.path.join(HERE, "c", "journal_torn.c"), os.path.join(SRC, "net", "journal", "journal.c"),
                    "-pthread"], check=True, timeout=120)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([exe, str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout


def test_fast_shutdown_while_dns_never_answers(certs, secret_dir):
    """The network thread blocked in getaddrinfo() against a resolver that never
    answers must not hold up pg_ctl stop -m fast (under 3 s)."""
    c, dns = cluster_with_a_silent_resolver(secret_dir, "127.83.0.53")
    try:
        # the worker's network thread is asking our resolver
        dns.settimeout(30)
        dns.recvfrom(4096)
        start = time.monotonic()
        r = c.stop("fast")
        elapsed = time.monotonic() - start
        assert r.returncode == 0, r.stdout
        assert elapsed < 3.0, "pg_ctl stop -m fast took %.1f s" % elapsed
    finally:
        dns.close()
        c.destroy()


def _context_bytes(cluster, pid):
    """TopMemoryContext's grand total in the worker, from pg_log_backend_memory_contexts."""
    before = len(cluster.read_log())
    cluster.execute("SELECT pg_log_backend_memory_contexts(%s)", (pid,))
    line = wait_until(lambda: next((l for l in cluster.read_log()[before:].splitlines()
                                    if "Grand total:" in l), None), what="memory context dump")
    return int(line.split("Grand total:")[1].split()[0])


def test_topic_records_follow_the_table(vb, fake, topic):
    """subscriptions.c kept a record for every topic ever seen: subscribing and
    removing distinct topics, round after round, grew the worker for ever."""
    pid = vb.worker_pid()
    sizes = []
    for rnd in range(4):
        vb.execute("INSERT INTO voipbin_subscriptions (topic, status)"
                   " SELECT %s || 'call:' || md5(%s || g::text), 'active' FROM generate_series(1, 1500) g",
                   (topic, str(rnd)))
        fake.wait_state(lambda s: s["connections"] and len(s["connections"][-1]["topics"]) >= 1500,
                        timeout=60, what="1,500 topics subscribed")
        vb.execute("DELETE FROM voipbin_subscriptions")
        fake.wait_state(lambda s: s["connections"] and not s["connections"][-1]["topics"],
                        timeout=60, what="all unsubscribed")
        sizes.append(_context_bytes(vb, pid))
    assert vb.worker_pid() == pid
    # 1,500 records are ~250 kB: after the first round the worker must not grow by that each round
    assert sizes[-1] - sizes[1] < 200 * 1024, sizes
