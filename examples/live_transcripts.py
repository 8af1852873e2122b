#!/usr/bin/python3
"""A live transcript feed: one line per transcript line, as VoIPBIN delivers it.

    python3 examples/live_transcripts.py "dbname=app"     # libpq conninfo; PG* variables work too
    python3 examples/live_transcripts.py --limit 10 --seconds 60

Each line is announced by `NOTIFY transcript_created` when the worker commits
it.  The payload carries the event, or past 7,900 bytes only its id (and
"truncated": true), and then the row is read from voipbin_events.  The call the
line belongs to comes from voipbin_transcripts, which knows it once the
transcription session (transcribe_created) is in.

Needs psycopg2 (Debian: python3-psycopg2), SELECT on voipbin_events and
voipbin_transcripts, and EXECUTE on voipbin_timestamp and voipbin_offset (the
view calls them).
"""
import argparse
import json
import select
import signal
import sys
import time

import psycopg2


def line_of(cur, event):
    data = event.get("data")
    if data is None:
        cur.execute("SELECT data FROM voipbin_events WHERE id = %s", (event["id"],))
        row = cur.fetchone()
        if row is None:  # already pruned by voipbin.event_retention
            return None
        data = row[0]
    cur.execute("SELECT call_id, tm_offset::text FROM voipbin_transcripts WHERE transcript_id = %s",
                (data["id"],))
    call_id, offset = cur.fetchone() or (None, None)
    return "%s  call %s  +%s  %-3s  %s" % (
        time.strftime("%H:%M:%S"), call_id or "?", offset, data.get("direction"),
        data.get("message"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("conninfo", nargs="?", default="", help="libpq connection string")
    ap.add_argument("--limit", type=int, default=0, help="exit after this many lines")
    ap.add_argument("--seconds", type=float, default=0, help="exit after this long")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    conn = psycopg2.connect(args.conninfo)
    # notifications are delivered between transactions: never sit in one
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("LISTEN transcript_created")
    deadline = time.monotonic() + args.seconds if args.seconds else None
    shown = 0
    while True:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            return 0
        if not select.select([conn], [], [], wait)[0]:
            continue
        conn.poll()
        while conn.notifies:
            line = line_of(cur, json.loads(conn.notifies.pop(0).payload))
            if line is None:
                continue
            print(line, flush=True)
            shown += 1
            if args.limit and shown >= args.limit:
                return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
