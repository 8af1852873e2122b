#!/usr/bin/python3
"""A careful batched Python client: what a competent engineer would write in
an afternoon instead of the extension.

- A reader thread does nothing but read the WebSocket (websocket-client, UTF-8
  checked once by decode instead of its pure-Python validator; pings answered)
  into a queue, so a slow database never stalls the socket.
- The main thread takes whatever has arrived (at most --batch frames; it never
  waits to fill a batch, so latency stays low at low rates), classifies each
  frame, COPYs the batch (the frames' own JSON text) into a temporary staging
  table, then one statement inserts it (ON CONFLICT DO NOTHING: the table's
  dedupe index, as the extension) and sends the same two NOTIFYs per stored
  event (payload = the frame's text, data left out past 7,900 bytes), and
  commits: one transaction per batch.

  batched_client.py --url wss://127.0.0.1:N/v1.0/ws --ca ca.pem --dsn DSN
                    --table bench.voipbin_events --count K [--batch 2000]
Prints one JSON line when it has handled K frames, then exits.
"""
import argparse
import io
import json
import os
import queue
import ssl
import sys
import threading
import time

import psycopg2
import websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from events import TOPICS, classify  # noqa: E402

STAGE_DDL = """
CREATE TEMP TABLE stage (
    event_type text, resource text, resource_id uuid, customer_id uuid, raw text
) ON COMMIT DELETE ROWS
"""

# Shared with the COPY-with-NOTIFY ceiling (bench.py), so both send the same.
# Ids are drawn in arrival order; the payload carries the frame's own JSON
# text (no jsonb round trip), as the extension's does; only rows really
# inserted are announced.
STORE_SQL = """
WITH src AS MATERIALIZED (
    SELECT nextval('{sequence}') AS id, event_type, resource, resource_id, customer_id, raw
    FROM pg_temp.stage
), ins AS (
    INSERT INTO {table} (id, event_type, resource, resource_id, customer_id, data)
    SELECT id, event_type, resource, resource_id, customer_id, raw::jsonb FROM src
    ON CONFLICT DO NOTHING
    RETURNING id
), msg AS (
    SELECT event_type, CASE WHEN octet_length(head) + octet_length(raw) + 11 <= 7900
                            THEN head || ', "data": ' || raw || '}}'
                            ELSE head || ', "truncated": true}}' END AS payload
    FROM (SELECT src.event_type, src.raw,
                 '{{"id": ' || src.id || ', "event_type": ' || to_json(src.event_type)
                 || ', "resource_id": ' || coalesce('"' || src.resource_id || '"', 'null') AS head
          FROM src JOIN ins USING (id)) h
)
SELECT count(*) FROM (
    SELECT CASE WHEN event_type ~ '^[a-z][a-z0-9_]{{0,62}}$'
                THEN pg_notify(event_type, payload) END AS by_type,
           pg_notify('voipbin_events', payload) AS all_events
    FROM msg
) n
"""


def copy_escape(s):
    # COPY text format: backslash, and the three characters it would split on
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if "\n" in s or "\r" in s or "\t" in s:
        s = s.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return s


def copy_line(text):
    """One frame as a line of COPY pg_temp.stage FROM STDIN."""
    obj = json.loads(text)
    et, resource, data = classify(obj)
    if data is not obj:                 # an envelope: store its data only
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    rid = data.get("id") if isinstance(data, dict) else None
    cust = data.get("customer_id") if isinstance(data, dict) else None
    return "%s\t%s\t%s\t%s\t%s\n" % (copy_escape(et), copy_escape(resource) if resource else "\\N",
                                     rid if isinstance(rid, str) else "\\N",
                                     cust if isinstance(cust, str) else "\\N",
                                     copy_escape(text))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sequence", help="the table's id sequence (default: <table>_id_seq)")
    p.add_argument("--batch", type=int, default=2000)
    args = p.parse_args()

    db = psycopg2.connect(args.dsn)
    cur = db.cursor()
    cur.execute(STAGE_DDL)
    db.commit()
    store = STORE_SQL.format(table=args.table, sequence=args.sequence or args.table + "_id_seq")

    frames = queue.SimpleQueue()
    ws = websocket.create_connection(args.url + "?accesskey=vb_bench",
                                     sslopt={"ca_certs": args.ca, "cert_reqs": ssl.CERT_REQUIRED},
                                     skip_utf8_validation=True)
    ws.send(json.dumps({"type": "subscribe", "topics": TOPICS}))

    def reader():
        try:
            while True:
                opcode, data = ws.recv_data()     # answers pings itself
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    frames.put(data)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
        except Exception:                   # closed by main() at the end
            pass
        frames.put(None)

    threading.Thread(target=reader, daemon=True).start()

    handled = batches = 0
    started = None
    while handled < args.count:
        first = frames.get()
        if first is None:
            break
        if started is None:
            started = time.time()
        batch = [first]
        while len(batch) < args.batch:
            try:
                f = frames.get_nowait()
            except queue.Empty:
                break
            if f is None:
                frames.put(None)
                break
            batch.append(f)
        buf = io.StringIO("".join(copy_line(f.decode("utf-8")) for f in batch))
        cur.copy_expert("COPY pg_temp.stage FROM STDIN", buf, size=1 << 20)
        cur.execute(store)
        db.commit()
        handled += len(batch)
        batches += 1
    print(json.dumps({"handled": handled, "batches": batches,
                      "seconds": time.time() - (started or time.time())}), flush=True)
    ws.close()
    db.close()
    return 0 if handled >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
