"""Fills voipbin_events with millions of realistic rows, fast (issue 14's
growth and retention rows).

Realistic means what the index and the heap see from the real ingest
(src/store.c): the bench's own mix (bench/events.py: per call five `call_*`
events sharing the call's id, around ten `transcript_created` lines with an id
each), the payload's `id` equal to `resource_id`, so that every row has its
own `voipbin_data_hash(data)`; `resource_id` and the dedupe key spread at
random over the UUID space like VoIPBIN's v4 ids (md5 of a salt and a counter:
uniform, and reproducible), ids in arrival order, `received_at` rising with
them over the window asked for.  The payloads are the generated frames
themselves (1.2-1.9 KB calls, 280-400 B transcripts), so the heap's size per
row is the real one.

Fast means one `INSERT ... SELECT ... generate_series` per chunk, in SQL: the
frames are not sent, classified or notified (that is what the blasts
measure), and ids come from a range reserved in one go.  The handlers' row trigger is skipped (session_replication_role =
replica): prefill is history, not ingest.

    from prefill import prefill
    prefill(cluster.connect, 2_000_000, start, end, salt="bench")
"""
import json
import random
import sys
import threading
import time
from datetime import datetime, timezone

import events

TEMPLATE_CALLS = 20            # 300 templates: each block of 15 rows is one call
CHUNK = 200_000                # rows per statement (and per transaction)

_TEMPLATE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS prefill_tpl (
    pos        int PRIMARY KEY,
    event_type text NOT NULL,
    resource   text NOT NULL,
    data       jsonb NOT NULL)
"""

# g is the row's number in the whole prefill (unique per salt); g / 15 its call.
_INSERT = """
INSERT INTO {table} (id, received_at, source, event_type, resource, resource_id, customer_id, data)
SELECT %(id0)s + g - %(g0)s, %(t0)s::timestamptz + (g - %(g0)s) * %(step)s::interval, 'websocket',
       t.event_type, t.resource, r.rid, %(customer)s::uuid,
       jsonb_set(t.data, '{{id}}', to_jsonb(r.rid::text))
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
-- OFFSET 0: a lookup per row, so the rows stay in g's order (ids follow received_at)
CROSS JOIN LATERAL (SELECT * FROM prefill_tpl WHERE pos = g %% %(ntpl)s OFFSET 0) t
CROSS JOIN LATERAL (SELECT md5(%(salt)s || CASE WHEN t.resource = 'call' THEN ':c:' || g / 15
                                               ELSE ':t:' || g END)::uuid AS rid) r
"""


def templates(seed=7):
    """(pos, event_type, resource, data) for TEMPLATE_CALLS calls, each its 15
    events in the order VoIPBIN sends them."""
    rng = random.Random(seed)
    out = []
    start = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc)
    for _ in range(TEMPLATE_CALLS):
        for et, resource, _rid, text in events._call_events(rng, start):
            out.append((len(out), et, resource, text))
    assert len(out) % events.EVENTS_PER_CALL == 0
    return out


def make_partitions(cur, start, end):
    """A partitioned voipbin_events (1.1) gets its range partitions for
    [start, end) first, as the worker makes them for the present: rows no
    range partition covers would go to the default partition, from which the
    worker moves them into theirs, a few ranges a minute."""
    cur.execute("SELECT to_regprocedure('voipbin_partition_for(timestamptz,interval)') IS NOT NULL")
    if not cur.fetchone()[0]:
        return
    cur.execute("SELECT make_interval(secs => setting::int) FROM pg_settings"
                " WHERE name = 'voipbin.partition_interval'")
    step = cur.fetchone()[0]
    t = start
    while t < end:
        # two statements: the list must see the partition the first one makes
        cur.execute("SELECT voipbin_partition_for(%s, %s)::oid", (t, step))
        part = cur.fetchone()[0]
        cur.execute("SELECT upper FROM voipbin_partitions() WHERE partition = %s::oid::regclass", (part,))
        t = cur.fetchone()[0]


def prefill(connect, n, start, end, salt="prefill", g0=0, table="voipbin_events", streams=2, log=None):
    """Inserts n rows numbered g0 .. g0+n-1, received_at spread evenly over
    [start, end) and ids (a range reserved from the table's sequence) both in
    g's order.  A later call with the same salt must pass the next g0 (the
    rows' keys derive from salt and g).  connect() gives a new autocommit
    psycopg2 connection; `streams` of them insert chunks side by side (the
    machine is CPU-bound).  Nothing else may draw ids meanwhile.  Returns rows/s."""
    tpl = templates()
    conn = connect()
    with conn.cursor() as cur:
        make_partitions(cur, start, end)
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,))
        seq = cur.fetchone()[0]
        cur.execute("SELECT nextval(%s)", (seq,))
        id0 = cur.fetchone()[0]
        cur.execute("SELECT setval(%s, %s)", (seq, id0 + n - 1))
    conn.close()
    step = (end - start) / max(n, 1)
    chunks = [(lo, min(lo + CHUNK, g0 + n) - 1) for lo in range(g0, g0 + n, CHUNK)]
    lock = threading.Lock()
    done = [0]
    errors = []
    t_begin = time.monotonic()

    def worker():
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET session_replication_role = replica")
                cur.execute(_TEMPLATE_DDL)
                cur.executemany("INSERT INTO prefill_tpl VALUES (%s, %s, %s, %s::jsonb)", tpl)
                while not errors:
                    with lock:
                        if not chunks:
                            return
                        lo, hi = chunks.pop(0)
                    cur.execute(_INSERT.format(table=table),
                                {"id0": id0, "t0": start, "g0": g0, "step": step,
                                 "customer": events.CUSTOMER_ID, "lo": lo, "hi": hi,
                                 "ntpl": len(tpl), "salt": salt})
                    with lock:
                        done[0] += hi - lo + 1
                        if log:
                            log("prefill: %d / %d rows (%.0f rows/s)"
                                % (done[0], n, done[0] / max(time.monotonic() - t_begin, 1e-6)))
        except Exception as e:      # reported by the caller's thread
            errors.append(e)
        finally:
            conn.close()
    threads = [threading.Thread(target=worker) for _ in range(max(1, streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return n / max(time.monotonic() - t_begin, 1e-6)


if __name__ == "__main__":
    # a quick look at the templates: python3 bench/prefill.py
    for pos, et, res, text in templates()[:15]:
        print(pos, et, res, len(text), json.loads(text)["id"])
    sys.exit(0)
