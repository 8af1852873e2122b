"""Upgrades from the released 1.0, the way a user lives them.

A user has 1.0 (library and SQL) storing events; they install the new
package, restart, and run ALTER EXTENSION voipbin UPDATE when they get to it.
Every row must survive, the new library must cope with a database still at
1.0 meanwhile, and the updated extension must be the very objects a fresh
CREATE EXTENSION makes.  The last point is compared in the catalogs (pg_dump
does not print an extension's members), so this is the guard that every SQL
change of 1.1 reached voipbin--1.0--1.1.sql and nothing else.

The released 1.0 is built from git (RELEASE_1_0) into a private copy of the
PostgreSQL installation the tests use.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import psycopg2
import pytest

from helpers import FAST, point_at
from pgcluster import PG_BIN, Cluster, SwitchableCluster, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_1_0 = "926977db66167d14bd7a10f9a902a3ef5e6762ce"   # voipbin 1.0 as released
RELEASE_1_1 = "a05a2130d1a65000f73587a87eb9a525a1a054c1"   # voipbin 1.1 as released
PG_CONFIG = os.path.join(PG_BIN, "pg_config")
CURRENT = "1.2"   # voipbin.control's default_version


def _git(*args):
    return subprocess.run(["git", "-C", REPO] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, check=False)


def _need_history():
    if _git("cat-file", "-e", RELEASE_1_0 + "^{commit}").returncode != 0:
        pytest.skip("needs the git history with release 1.0 (%s): not a full clone"
                    % RELEASE_1_0[:7])


def _pg_config(what):
    return subprocess.check_output([PG_CONFIG, "--" + what], text=True).strip()


def patch_1_0_for_this_major(src):
    """The released 1.0 was written for PostgreSQL 15: on 17 and later,
    CreateWaitEventSet() takes a ResourceOwner where 1.0 passes a memory
    context (what src/compat.h guards today).  The same guard, applied to the
    release's one call, so that the upgrade path is proven on every major."""
    if int(_pg_config("version").split()[1].split(".")[0]) < 17:
        return
    path = os.path.join(src, "src", "worker.c")
    with open(path) as f:
        text = f.read()
    old = "CreateWaitEventSet(TopMemoryContext, "
    assert text.count(old) == 1, "1.0's worker.c: %d calls of %r" % (text.count(old), old)
    with open(path, "w") as f:
        f.write(text.replace(old, "CreateWaitEventSet(NULL, "))


# ---------------------------------------------------------------------------
# The released 1.0 (SwitchableCluster, in pgcluster.py, runs either library)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def release_1_0():
    """A copy of the PostgreSQL installation with voipbin 1.0 installed in it
    (its bin directory).  PostgreSQL finds lib and share relative to its
    binaries, so the copy keeps the original's layout under a new root."""
    _need_history()
    root = tempfile.mkdtemp(prefix="voipbin-rel10-")
    os.chmod(root, 0o755)
    try:
        src = os.path.join(root, "src")
        os.mkdir(src)
        archive = subprocess.run(["git", "-C", REPO, "archive", RELEASE_1_0],
                                 stdout=subprocess.PIPE, check=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        patch_1_0_for_this_major(src)
        build = subprocess.run(["make", "-s", "-C", src, "-j2", "PG_CONFIG=" + PG_CONFIG],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert build.returncode == 0, "building 1.0 failed:\n" + build.stdout[-3000:]
        pgroot = os.path.dirname(PG_BIN)              # .../lib/postgresql/15 (bin, lib)
        sharedir = _pg_config("sharedir")
        for d in (pgroot, sharedir):
            shutil.copytree(d, root + d, symlinks=True)
        pkglibdir = root + _pg_config("pkglibdir")
        extdir = root + sharedir + "/extension"
        for f in os.listdir(extdir):
            if f.startswith("voipbin"):
                os.unlink(os.path.join(extdir, f))
        shutil.copy(os.path.join(src, "voipbin.so"), pkglibdir)
        for f in ("voipbin.control", "voipbin--1.0.sql"):
            shutil.copy(os.path.join(src, f), extdir)
        yield root + PG_BIN
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------
# The extension's objects, as the catalogs describe them
# ---------------------------------------------------------------------------

_MEMBERS = """
    m AS (SELECT classid, objid, objsubid FROM pg_depend
          WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
            AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'voipbin')),
    rels AS (SELECT objid AS oid FROM m WHERE classid = 'pg_class'::regclass
             UNION
             SELECT d.objid FROM pg_depend d JOIN m ON m.classid = 'pg_class'::regclass
               AND d.refclassid = 'pg_class'::regclass AND d.refobjid = m.objid
             JOIN pg_class c ON c.oid = d.objid AND c.relkind <> 't'   -- TOAST: named by oid
               AND NOT c.relispartition   -- the worker's partitions: data, not the extension's
             WHERE d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')),
    related AS (SELECT classid, objid FROM m
                UNION SELECT 'pg_class'::regclass, oid FROM rels
                UNION SELECT 'pg_class'::regclass, indexrelid FROM pg_index
                      WHERE indrelid IN (SELECT oid FROM rels)
                UNION SELECT 'pg_constraint'::regclass, oid FROM pg_constraint
                      WHERE conrelid IN (SELECT oid FROM rels)
                         OR contypid IN (SELECT objid FROM m WHERE classid = 'pg_type'::regclass)
                UNION SELECT 'pg_trigger'::regclass, oid FROM pg_trigger
                      WHERE tgrelid IN (SELECT oid FROM rels)
                UNION SELECT 'pg_policy'::regclass, oid FROM pg_policy
                      WHERE polrelid IN (SELECT oid FROM rels)
                UNION SELECT 'pg_rewrite'::regclass, oid FROM pg_rewrite
                      WHERE ev_class IN (SELECT oid FROM rels))
"""

CATALOG_QUERIES = {
    "extension": """
        SELECT extversion, extrelocatable, extnamespace::regnamespace::text, extowner::regrole::text
        FROM pg_extension WHERE extname = 'voipbin'""",
    "extconfig": """
        SELECT c::regclass::text, cond FROM pg_extension e,
               unnest(e.extconfig, e.extcondition) AS u(c, cond)
        WHERE e.extname = 'voipbin'""",
    "members": "SELECT pg_describe_object(classid, objid, objsubid) FROM m",
    "relations": """
        SELECT c.oid::regclass::text, c.relkind, c.relpersistence, c.reloptions::text,
               c.relreplident, c.relrowsecurity, c.relforcerowsecurity, c.relacl::text,
               c.reloftype::regtype::text, c.relispartition
        FROM pg_class c WHERE c.oid IN (SELECT oid FROM rels)""",
    # the order of the visible columns, not their attnum: a dropped column
    # leaves a gap that means nothing to a user
    "columns": """
        SELECT a.attrelid::regclass::text,
               row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               a.attidentity, a.attgenerated, pg_get_expr(ad.adbin, ad.adrelid),
               co.collname, a.attacl::text, a.attstorage, a.attcompression
        FROM pg_attribute a
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE a.attrelid IN (SELECT oid FROM rels) AND a.attnum > 0 AND NOT a.attisdropped""",
    "sequences": """
        SELECT seqrelid::regclass::text, seqtypid::regtype::text, seqstart, seqincrement,
               seqmax, seqmin, seqcache, seqcycle,
               (SELECT d.refobjid::regclass::text || '.' || a.attname
                FROM pg_depend d JOIN pg_attribute a
                  ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
        FROM pg_sequence s WHERE seqrelid IN (SELECT oid FROM rels)""",
    "indexes": """
        SELECT indrelid::regclass::text, pg_get_indexdef(indexrelid), indisclustered,
               indisreplident, obj_description(indexrelid, 'pg_class')
        FROM pg_index WHERE indrelid IN (SELECT oid FROM rels)""",
    "constraints": """
        SELECT conrelid::regclass::text, contypid::regtype::text, conname, contype,
               pg_get_constraintdef(oid), condeferrable, condeferred, convalidated
        FROM pg_constraint WHERE oid IN
            (SELECT objid FROM related WHERE classid = 'pg_constraint'::regclass)""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), tgenabled
        FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM rels) AND NOT tgisinternal""",
    "event_triggers": """
        SELECT evtname, evtevent, evtfoid::regprocedure::text, evtenabled, evttags::text
        FROM pg_event_trigger WHERE oid IN
            (SELECT objid FROM m WHERE classid = 'pg_event_trigger'::regclass)""",
    "policies": """
        SELECT polrelid::regclass::text, polname, polcmd, polpermissive,
               polroles::regrole[]::text, pg_get_expr(polqual, polrelid),
               pg_get_expr(polwithcheck, polrelid)
        FROM pg_policy WHERE polrelid IN (SELECT oid FROM rels)""",
    "rules": """
        SELECT ev_class::regclass::text, rulename, pg_get_ruledef(oid)
        FROM pg_rewrite WHERE ev_class IN (SELECT oid FROM rels) AND rulename <> '_RETURN'""",
    "views": """
        SELECT oid::regclass::text, pg_get_viewdef(oid)
        FROM pg_class WHERE oid IN (SELECT oid FROM rels) AND relkind IN ('v', 'm')""",
    "functions": """
        SELECT p.oid::regprocedure::text, p.prokind, l.lanname, p.prosrc, p.probin,
               p.proconfig::text, p.prosecdef, p.provolatile, p.proparallel, p.proisstrict,
               p.proretset, p.proleakproof, p.procost, p.prorows, p.prosupport::text,
               pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               p.proacl::text, p.proowner::regrole::text,
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END
        FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
        WHERE p.oid IN (SELECT objid FROM m WHERE classid = 'pg_proc'::regclass)""",
    "types": """
        SELECT t.oid::regtype::text, t.typtype, t.typacl::text,
               format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
               (SELECT array_agg(enumlabel ORDER BY enumsortorder)::text
                FROM pg_enum WHERE enumtypid = t.oid)
        FROM pg_type t WHERE t.oid IN (SELECT objid FROM m WHERE classid = 'pg_type'::regclass)""",
    "comments": """
        SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
        FROM pg_description d JOIN related r ON r.classid = d.classoid AND r.objid = d.objoid""",
    # what pg_dump takes as the extension's own grants
    "init_privs": """
        SELECT pg_describe_object(i.classoid, i.objoid, i.objsubid), i.privtype,
               i.initprivs::text
        FROM pg_init_privs i JOIN related r ON r.classid = i.classoid AND r.objid = i.objoid""",
}


def catalog_in(conn):
    """Every catalog fact about the extension's objects, by kind, sorted."""
    out = {}
    with conn.cursor() as cur:
        for kind, sql in CATALOG_QUERIES.items():
            cur.execute("WITH " + _MEMBERS + sql)
            out[kind] = sorted(tuple("" if v is None else str(v) for v in row)
                               for row in cur.fetchall())
    return out


def catalog(cluster, dbname):
    conn = cluster.connect(dbname)
    try:
        return catalog_in(conn)
    finally:
        conn.close()


def catalog_differences(a, b, a_name="upgraded", b_name="fresh"):
    lines = []
    for kind in CATALOG_QUERIES:
        only_a = [r for r in a[kind] if r not in b[kind]]
        only_b = [r for r in b[kind] if r not in a[kind]]
        for r in only_a:
            lines.append("%s: only in %s: %s" % (kind, a_name, " | ".join(r)))
        for r in only_b:
            lines.append("%s: only in %s: %s" % (kind, b_name, " | ".join(r)))
    return lines


def assert_same_objects(cluster, upgraded_db, fresh_db):
    up, fresh = catalog(cluster, upgraded_db), catalog(cluster, fresh_db)
    assert up["members"], "no extension members found in %s" % upgraded_db
    diff = catalog_differences(up, fresh)
    assert not diff, ("ALTER EXTENSION voipbin UPDATE does not give the objects of a fresh "
                      "CREATE EXTENSION (a change missing from an update script?):\n"
                      + "\n".join(diff))


# What a user had at 1.0, by the columns 1.0 had (an update may add columns;
# the old ones must keep their values).  A subscription's status is the
# worker's to change after a restart, so only its topic and date count.
KEPT = {
    "voipbin_events": "id, received_at, event_type, resource, resource_id, customer_id, data, source",
    "voipbin_dead_letters": "id, received_at, source, raw, error",
    "voipbin_subscriptions": "topic, created_at",
    "voipbin_handlers": "id, event_type, handler, created_at",
}


def kept_rows(cluster, dbname, upto_event_id):
    """count and md5 of the rows a user had at 1.0, per table."""
    out = {}
    for table, cols in KEPT.items():
        where = " WHERE id <= %d" % upto_event_id if table == "voipbin_events" else ""
        out[table] = cluster.query_one(
            "SELECT count(*), md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), ''))"
            " FROM (SELECT %s FROM %s%s) r" % (cols, table, where), dbname=dbname)
    return out


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------

def call_event(fake, n):
    return {
        "id": str(uuid.UUID(int=0x11110000000040008000000000000000 + n)),
        "customer_id": fake.customer_id,
        "type": "flow",
        "status": "ringing",
        "direction": "incoming",
        "source": {"type": "tel", "target": "+1555000%04d" % n},
        "tm_create": "2026-02-21T10:05:10.1Z",
    }


def publish_calls(fake, first, count):
    ids = set()
    for n in range(first, first + count):
        ev = call_event(fake, n)
        fake.publish("call_created", ev, shape="wrapped")
        ids.add(ev["id"])
    return ids


def stored_ids(cluster, dbname):
    return {r[0] for r in cluster.query(
        "SELECT resource_id::text FROM voipbin_events",
        dbname=dbname)}


def subscribe(cluster, fake, dbname):
    cluster.query_one("SELECT voipbin_subscribe(%s)",
                      ("customer_id:%s:call:" % fake.customer_id,), dbname=dbname)


def wait_subscribed(fake, old_conns, timeout=20):
    """A new connection (not one of old_conns, which may not be seen closed
    yet) has subscribed the calls: events published now reach the worker."""
    topic = "customer_id:%s:call:" % fake.customer_id
    fake.wait_state(lambda st: any(conn["id"] not in old_conns and topic in conn["topics"]
                                   and not conn["closed_at"] for conn in st["connections"]),
                    timeout, what="the restarted worker subscribed")


def crash_lines(log):
    return [line for line in log.splitlines()
            if re.search(r"terminated by signal|server process .* was terminated|"
                         r"PANIC|TRAP:|all server processes terminated", line)]


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

def test_released_script_is_frozen():
    """voipbin--1.0.sql is what 1.0 users ran: it never changes."""
    _need_history()
    released = _git("show", RELEASE_1_0 + ":voipbin--1.0.sql")
    assert released.returncode == 0, released.stderr
    with open(os.path.join(REPO, "voipbin--1.0.sql"), "rb") as f:
        assert f.read() == released.stdout, \
            "voipbin--1.0.sql differs from release 1.0: put the change in voipbin--1.1--1.2.sql"


def test_released_update_script_is_frozen():
    """voipbin--1.0--1.1.sql is what 1.1 users ran: it never changes either."""
    _need_history()
    if _git("cat-file", "-e", RELEASE_1_1 + "^{commit}").returncode != 0:
        pytest.skip("needs the git history with release 1.1 (%s)" % RELEASE_1_1[:7])
    released = _git("show", RELEASE_1_1 + ":voipbin--1.0--1.1.sql")
    assert released.returncode == 0, released.stderr
    with open(os.path.join(REPO, "voipbin--1.0--1.1.sql"), "rb") as f:
        assert f.read() == released.stdout, \
            "voipbin--1.0--1.1.sql differs from release 1.1: put the change in voipbin--1.1--1.2.sql"


def worker_cpu_seconds(c, db, over):
    """CPU time the worker process used during `over` seconds of wall time."""
    pid = c.query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'voipbin'",
                      dbname=db)[0]
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick   # utime + stime
    start, t0 = cpu(), time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= over or None, timeout=over + 1, interval=0.05,
               what="the measuring window")
    return cpu() - start


def test_upgrade_from_released_1_0(release_1_0, fake, secret_dir):
    """1.0 stores events; the 1.1 package is installed and the server
    restarted; the database stays at 1.0 for a while; then it is updated.
    No crash, no event lost, every row kept, the objects of a fresh install."""
    db = "voipbin_upgrade"
    c = SwitchableCluster(FAST, release_1_0, dbname=db)
    try:
        c.start()
        c.execute("CREATE EXTENSION voipbin VERSION '1.0'")
        assert c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'voipbin'",
                           dbname=db) == ("1.0",)

        # 1.0, its own library: events stored
        point_at(c, fake, secret_dir)
        subscribe(c, fake, db)
        fake.wait_topics(["customer_id:%s:call:" % fake.customer_id], timeout=15)
        want = publish_calls(fake, 0, 20)
        wait_until(lambda: stored_ids(c, db) >= want, timeout=20, what="1.0 stores 20 events")
        fake.send(text="this frame is no JSON")
        wait_until(lambda: c.query_one("SELECT count(*) FROM voipbin_dead_letters",
                                       dbname=db)[0] == 1, timeout=20, what="a dead letter")
        c.execute("INSERT INTO voipbin_handlers (event_type, handler)"
                  " VALUES ('call_hangup', 'pg_catalog.now')", dbname=db)
        max_id = c.query_one("SELECT max(id) FROM voipbin_events", dbname=db)[0]
        before = kept_rows(c, db, max_id)
        assert before["voipbin_events"][0] == 20
        log_from = len(c.read_log())

        # the new package, the server restarted, the database still at 1.0
        old_conns = {conn["id"] for conn in fake.state()["connections"]}
        c.switch_to(PG_BIN)
        wait_subscribed(fake, old_conns)
        status = c.query("SELECT * FROM voipbin_status()", dbname=db)
        assert len(status) == 1 and len(status[0]) == 11, \
            "voipbin_status() at 1.0 should answer with 1.0's 11 columns: %r" % (status,)
        want |= publish_calls(fake, 100, 10)

        def stored_or_waiting():
            if stored_ids(c, db) >= want:
                return "stored"
            if "ALTER EXTENSION voipbin UPDATE" in c.read_log()[log_from:]:
                return "waiting"
            return None
        wait_until(stored_or_waiting, timeout=20,
                   what="the 1.1 library at 1.0 stores the events or logs that it waits"
                        " for ALTER EXTENSION voipbin UPDATE")
        assert not crash_lines(c.read_log()[log_from:])
        assert kept_rows(c, db, max_id) == before, "rows changed while the database was at 1.0"
        # waiting is sleeping: a timer that cannot run at 1.0 must not spin the loop
        assert worker_cpu_seconds(c, db, over=2.0) < 0.5, "the worker spins while waiting at 1.0"

        # the update: every row kept, nothing lost, storing goes on
        c.execute("ALTER EXTENSION voipbin UPDATE", dbname=db)
        assert c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'voipbin'",
                           dbname=db) == (CURRENT,)
        wait_until(lambda: stored_ids(c, db) >= want, timeout=30,
                   what="every event sent while at 1.0 stored after the update")
        assert kept_rows(c, db, max_id) == before, "rows changed by the update"
        assert len(c.query("SELECT * FROM voipbin_status()", dbname=db)[0]) == 22
        last = publish_calls(fake, 200, 5)
        want |= last
        wait_until(lambda: stored_ids(c, db) >= want, timeout=20, what="storing after the update")
        assert c.query_one("SELECT min(id) FROM voipbin_events WHERE resource_id::text = ANY(%s)",
                           (sorted(last),), dbname=db)[0] > max_id
        assert c.query_one("SELECT count(*) FROM voipbin_events", dbname=db)[0] == len(want), \
            "an event stored twice"
        assert not crash_lines(c.read_log()[log_from:])

        # and the same objects as a fresh install of 1.1
        c.execute("CREATE DATABASE voipbin_fresh", dbname="postgres")
        c.execute("CREATE EXTENSION voipbin", dbname="voipbin_fresh")
        assert_same_objects(c, db, "voipbin_fresh")
    except BaseException:
        print("---- server log (tail)\n" + c.read_log()[-6000:])
        print("---- fake server log (tail)\n" + fake.read_log()[-3000:])
        raise
    finally:
        c.destroy()


def spool_with_1_0(c, fake, secret_dir, db):
    """The released 1.0 receives 20 events (40 frames) while voipbin_events is
    locked and, stopped, spools them.  Returns their ids and the spool's path."""
    c.start()
    c.execute("CREATE EXTENSION voipbin VERSION '1.0'")
    point_at(c, fake, secret_dir)
    subscribe(c, fake, db)
    fake.wait_topics(["customer_id:%s:call:" % fake.customer_id], timeout=15)
    locker = c.connect(dbname=db, autocommit=False)
    with locker.cursor() as cur:
        cur.execute("LOCK voipbin_events IN ACCESS EXCLUSIVE MODE")
    want = set()
    pad = "p" * 20000
    for n in range(20):
        ev = dict(call_event(fake, n), pad=pad)
        fake.publish("call_created", ev, shape="wrapped")
        want.add(ev["id"])
    # each comes twice (a 3-part topic, as VoIPBIN does): 40 frames.  1.0
    # counts in frames_received those its main thread took (the batch
    # waiting for the lock), in buffered_bytes those still queued behind
    # it, each at more than its length: all 40 are in the worker when
    # the queue holds (40 - taken) * 20 kB
    def holding():
        queued, taken = c.query_one("SELECT buffered_bytes, frames_received FROM voipbin_status()",
                                    dbname=db)
        return taken > 0 and queued >= (40 - taken) * len(pad)
    wait_until(holding, timeout=20, what="1.0 holding the 40 frames")
    taken = c.query_one("SELECT frames_received FROM voipbin_status()", dbname=db)[0]
    # a fast stop while the table is locked: 1.0's worker spools what it holds
    r = c.stop("fast")
    assert r.returncode == 0, r.stdout
    try:
        locker.close()
    except psycopg2.Error:
        pass
    spool = os.path.join(c.data, "voipbin.spool")
    # 1.0 spools its queue; the batch its main thread held (taken frames,
    # waiting for the lock) too, unless the stop caught it inside the INSERT,
    # where 1.0 loses it (released behaviour: each event's copy is queued)
    assert os.path.getsize(spool) > (40 - taken) * len(pad), "1.0 did not spool its queue"
    return want, spool, taken


def spooled_frames(log, pattern, taken):
    """How many frames the import said 1.0 had spooled: 40, or fewer by the
    batch 1.0 held when it stopped."""
    m = re.search(pattern, log)
    assert m, log[-3000:]
    n = int(m.group(1))
    assert 40 - taken <= n <= 40, (n, taken)
    return n


def test_frames_spooled_by_1_0_are_stored_after_the_upgrade(release_1_0, fake, secret_dir):
    """1.0 kept what it could not store in $PGDATA/voipbin.spool and replayed
    it at its next start; 1.1 journals instead.  1.1 starts on the data
    directory where 1.0 spooled 40 frames: each is stored once, the file is
    gone, and a later restart imports nothing again."""
    db = "voipbin_spool10"
    c = SwitchableCluster(FAST, release_1_0, dbname=db)
    try:
        want, spool, taken = spool_with_1_0(c, fake, secret_dir, db)
        log_from = len(c.read_log())

        # the 1.1 package on the same data directory
        c.bindir = PG_BIN
        c.start()
        c.execute("ALTER EXTENSION voipbin UPDATE", dbname=db)
        wait_until(lambda: stored_ids(c, db) >= want, timeout=30,
                   what="the events 1.0 had spooled stored by 1.1")
        assert c.query_one("SELECT count(*), count(*) FILTER (WHERE source = 'websocket')"
                           " FROM voipbin_events", dbname=db) == (20, 20)
        assert c.query_one("SELECT count(*) FROM voipbin_dead_letters", dbname=db) == (0,)
        assert not os.path.exists(spool) and not os.path.exists(spool + ".pos")
        log = c.read_log()[log_from:]
        spooled_frames(log, r"imported (\d+) frames that voipbin 1.0 had spooled", taken)
        assert not crash_lines(log)

        # once: a restart has nothing to import and stores nothing twice
        c.stop()
        c.start()
        wait_until(lambda: c.query_one("SELECT worker_pid FROM voipbin_status()", dbname=db)[0],
                   timeout=20, what="the worker back")
        assert c.read_log()[log_from:].count("had spooled") == 1
        # (the partition maintenance after a start moves the rows out of the
        # default partition: a count may see none of them meanwhile)
        wait_until(lambda: c.query_one("SELECT count(*) FROM voipbin_events", dbname=db) == (20,),
                   timeout=30, what="the 20 rows, none twice, after the restart")
    except BaseException:
        print("---- server log (tail)\n" + c.read_log()[-6000:])
        raise
    finally:
        c.destroy()


def test_an_import_of_1_0_s_spool_cut_by_a_crash_imports_nothing_twice(release_1_0, fake,
                                                                       secret_dir):
    """The one moment of the import no outside kill can hit: the 40 frames
    are in the journal, on disk, and 1.0's file is not yet marked taken.  The
    worker dies there (VOIPBIN_FAULT, a crash restart of the server); the next
    one finds the import's marker, skips the 40 frames the journal already
    holds, and each is received once: 20 events, 20 duplicates (each event
    came twice), not 60."""
    db = "voipbin_spool10c"
    c = SwitchableCluster(FAST, release_1_0, dbname=db)
    try:
        want, spool, taken = spool_with_1_0(c, fake, secret_dir, db)
        log_from = len(c.read_log())
        c.bindir = PG_BIN
        os.environ["VOIPBIN_FAULT"] = "spool-import-journaled"
        try:
            # pg_ctl alone: Cluster.start()'s first query could meet the crash restart
            c.run_as_postgres("pg_ctl", "-D", c.data, "-l", c.log, "-w", "-t", "60", "start")
        finally:
            del os.environ["VOIPBIN_FAULT"]
        wait_until(lambda: "terminated by signal 9" in c.read_log()[log_from:], timeout=30,
                   what="the worker killed at the fault point")

        def back():
            try:
                return c.query_one("SELECT worker_pid FROM voipbin_status()", dbname=db)[0]
            except psycopg2.Error:
                return None     # still in crash recovery
        wait_until(back, timeout=30, what="the server and a new worker back after the crash")
        marker = os.path.join(c.data, "voipbin.spool.importing")
        c.execute("ALTER EXTENSION voipbin UPDATE", dbname=db)
        wait_until(lambda: stored_ids(c, db) >= want, timeout=30,
                   what="the events 1.0 had spooled stored by 1.1")
        log = c.read_log()[log_from:]
        n = spooled_frames(log, r"its (\d+) frames already in the journal are not imported again", taken)
        assert not os.path.exists(spool) and not os.path.exists(marker)
        # each of the n frames handled once (not 60 frames); which of them is the
        # stored copy depends on what 1.0 did with the batch it held as it stopped
        # (lost inside its INSERT, or stored just as the locker's session ended)
        s = c.wait_status(lambda s: s["events_stored"] + s["duplicates"] + s["dead_letters"] >= n,
                          what="the %d frames handled" % n)
        assert s["events_stored"] + s["duplicates"] == n and s["dead_letters"] == 0, s
        assert s["frames_received"] == n and s["events_stored"] <= 20, s
        assert c.query_one("SELECT count(*), count(DISTINCT resource_id) FROM voipbin_events",
                           dbname=db) == (20, 20)
    except BaseException:
        print("---- server log (tail)\n" + c.read_log()[-6000:])
        raise
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def plain():
    """A cluster with only the library under test (no worker database in use)."""
    c = Cluster(FAST, dbname="voipbin_unused")
    c.start()
    yield c
    c.destroy()


@pytest.mark.parametrize("start", ["1.0", "1.1"])
def test_update_gives_the_objects_of_a_fresh_install(plain, start):
    """CREATE EXTENSION VERSION '1.0' (or '1.1') + UPDATE == CREATE EXTENSION,
    object by object (needs no git history: the guard runs on a release
    tarball too)."""
    up, fresh = "up_" + start.replace(".", "_"), "fresh_" + start.replace(".", "_")
    for db in (up, fresh):
        plain.execute("CREATE DATABASE %s" % db, dbname="postgres")
    plain.execute("CREATE EXTENSION voipbin VERSION '%s'" % start, dbname=up)
    paths = plain.query("SELECT source, target, path FROM pg_extension_update_paths('voipbin')"
                        " WHERE path IS NOT NULL", dbname=up)
    assert ("1.0", "1.1", "1.0--1.1") in paths
    assert ("1.1", "1.2", "1.1--1.2") in paths
    assert ("1.0", "1.2", "1.0--1.1--1.2") in paths
    plain.execute("ALTER EXTENSION voipbin UPDATE", dbname=up)
    assert plain.query_one("SELECT extversion FROM pg_extension WHERE extname = 'voipbin'",
                           dbname=up) == (CURRENT,)
    plain.execute("CREATE EXTENSION voipbin", dbname=fresh)
    assert_same_objects(plain, up, fresh)


def test_comparison_sees_a_missing_change(plain):
    """The guard can fail: one grant, default or comment of difference shows."""
    plain.execute("CREATE DATABASE odd", dbname="postgres")
    plain.execute("CREATE EXTENSION voipbin", dbname="odd")
    base = catalog(plain, "odd")
    for change in ("COMMENT ON COLUMN voipbin_events.data IS 'x'",
                   "GRANT SELECT ON voipbin_events TO PUBLIC",
                   "ALTER TABLE voipbin_subscriptions ALTER COLUMN topic SET DEFAULT 'x'",
                   "ALTER FUNCTION voipbin_classify(text) SET search_path = pg_catalog",
                   "CREATE INDEX odd_idx ON voipbin_events (event_type)"):
        conn = plain.connect("odd", autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute(change)
            diff = catalog_differences(catalog_in(conn), base)
        finally:
            conn.rollback()
            conn.close()
        assert diff, "no difference seen after: " + change



def test_no_downgrade(plain):
    """docs/operations.md: downgrading is not supported; PostgreSQL says so."""
    plain.execute("CREATE DATABASE down", dbname="postgres")
    plain.execute("CREATE EXTENSION voipbin", dbname="down")
    with pytest.raises(psycopg2.Error) as e:
        plain.execute("ALTER EXTENSION voipbin UPDATE TO '1.0'", dbname="down")
    assert "no update path" in str(e.value)
