#!/usr/bin/python3
"""The "seed-style" baseline: the VoIPBIN docs' Python websocket-client example
(docs "Receiving Events", WebSocketApp + on_open/on_message) extended the
obvious way: each event is classified, INSERTed, announced with the same two
NOTIFYs as the extension, and committed, one event at a time, with psycopg2.

websocket-client is used with its defaults, as in the docs (so it checks each
text frame's UTF-8 in pure Python: Debian has no wsaccel).  Raw frames carry
no event_type, so the example's data.get("event_type") becomes events.classify().

  seed_client.py --url wss://127.0.0.1:N/v1.0/ws --ca ca.pem --dsn DSN
                 --table bench.voipbin_events --count K
Prints one JSON line when it has handled K frames, then exits.
"""
import argparse
import json
import os
import sys
import time

import psycopg2
import psycopg2.extras
import websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from events import TOPICS, classify  # noqa: E402

NOTIFY_LIMIT = 7900


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--count", type=int, required=True)
    args = p.parse_args()

    db = psycopg2.connect(args.dsn)
    cur = db.cursor()
    insert = ("INSERT INTO %s (event_type, resource, resource_id, customer_id, data)"
              " VALUES (%%s, %%s, %%s, %%s, %%s)"
              " ON CONFLICT DO NOTHING"  # whatever the dedupe index is
              " RETURNING id" % args.table)
    handled = 0
    started = None

    def on_message(ws, message):
        nonlocal handled, started
        if started is None:
            started = time.time()
        data = json.loads(message)
        event_type, resource, data = classify(data)
        cur.execute(insert, (event_type, resource, data.get("id"), data.get("customer_id"),
                             psycopg2.extras.Json(data)))
        row = cur.fetchone()
        if row:
            payload = json.dumps({"id": row[0], "event_type": event_type,
                                  "resource_id": data.get("id"), "data": data})
            if len(payload.encode()) > NOTIFY_LIMIT:
                payload = json.dumps({"id": row[0], "event_type": event_type,
                                      "resource_id": data.get("id"), "truncated": True})
            cur.execute("SELECT pg_notify(%s, %s), pg_notify('voipbin_events', %s)",
                        (event_type, payload, payload))
        db.commit()
        handled += 1
        if handled >= args.count:
            ws.close()

    def on_error(ws, error):
        # (not in the docs' example; without it websocket-client would go on
        # after a failed INSERT and the bench would only see a timeout)
        sys.stderr.write("seed_client: %r\n" % (error,))
        ws.close()

    def on_open(ws):
        ws.send(json.dumps({"type": "subscribe", "topics": TOPICS}))

    ws = websocket.WebSocketApp(args.url + "?accesskey=vb_bench",
                                on_open=on_open, on_message=on_message,
                                on_error=on_error)
    ws.run_forever(sslopt={"ca_certs": args.ca})
    print(json.dumps({"handled": handled, "seconds": time.time() - (started or time.time())}),
          flush=True)
    db.close()
    return 0 if handled >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
