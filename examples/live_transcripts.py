#!/usr/bin/python3
"""A live transcript feed: one line per transcript line, as VoIPBIN delivers it.

    python3 examples/live_transcripts.py "dbname=app"     # libpq conninfo; PG* variables work too
    python3 examples/live_transcripts.py --limit 10 --seconds 60

Each line is announced by `NOTIFY transcript_created` when the worker commits
it.  The payload carries the event, or past 7,900 bytes only its id (and
"truncated": true), and then the row is read from voipbin_events.  The call the
line belongs to comes from voipbin_transcripts, which knows it once the
transcription session (transcribe_created) is in.

A notification is not stored: one sent while this client is not connected
never reaches it.  So at every connection it LISTENs first, then reads the
lines stored past the last id it printed (a lost connection is retried with
backoff, from 0.5 s doubling to 30 s), then takes the notifications, skipping
the ids it printed already.  Every line is printed once, in id order but for
one that committed late (docs/events.md#listen-clients-that-never-miss-an-event):
the catch-up reads again the last --window ids before the newest it printed
for those.

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

CHANNEL = "transcript_created"
HEARTBEAT = 30          # seconds without a notification before the connection is checked
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
PAGE = 1000             # rows per catch-up query


class Feed:
    """What was printed: the newest id, and the ids of the last `window` ids
    (a notification or a catch-up row among them is not printed again)."""

    def __init__(self, limit, window):
        self.limit = limit
        self.window = window
        self.floor = None       # max(id) when the feed started: nothing older is caught up
        self.last = None        # the newest id printed (or the floor)
        self.recent = set()
        self.shown = 0

    def done(self):
        return bool(self.limit) and self.shown >= self.limit

    def handle(self, cur, event_id, data):
        """Prints the line of event event_id once; data None: read the row."""
        if event_id in self.recent:
            return
        if data is None:        # a truncated payload, or voipbin.notify_payload = 'id'
            cur.execute("SELECT data FROM voipbin_events WHERE id = %s", (event_id,))
            row = cur.fetchone()
            data = row[0] if row else None      # None: already pruned by voipbin.event_retention
        if data is not None:
            cur.execute("SELECT call_id, tm_offset::text FROM voipbin_transcripts WHERE transcript_id = %s",
                        (data["id"],))
            call_id, offset = cur.fetchone() or (None, None)
            print("%s  call %s  +%s  %-3s  %s" % (
                time.strftime("%H:%M:%S"), call_id or "?", offset, data.get("direction"),
                data.get("message")), flush=True)
            self.shown += 1
        self.recent.add(event_id)
        if event_id > self.last:
            self.last = event_id
            self.recent = {i for i in self.recent if i > self.last - self.window}

    def start(self, cur):
        """Called once LISTEN is in effect: the first time, where the feed starts;
        after a reconnection, the lines stored meanwhile (and late commits)."""
        if self.last is None:
            cur.execute("SELECT coalesce(max(id), 0) FROM voipbin_events")
            self.floor = self.last = cur.fetchone()[0]
            return
        after = max(self.floor, self.last - self.window)
        while not self.done():
            cur.execute("SELECT id, data FROM voipbin_events"
                        " WHERE event_type = %s AND id > %s ORDER BY id LIMIT %s",
                        (CHANNEL, after, PAGE))
            rows = cur.fetchall()
            for event_id, data in rows:
                self.handle(cur, event_id, data)
                if self.done():
                    return
            if len(rows) < PAGE:
                return
            after = rows[-1][0]


def follow(feed, conn, deadline):
    """Prints notifications until the limit or the deadline; a lost
    connection raises psycopg2.OperationalError (or InterfaceError)."""
    cur = conn.cursor()
    while not feed.done():
        while conn.notifies and not feed.done():
            event = json.loads(conn.notifies.pop(0).payload)
            feed.handle(cur, event["id"], event.get("data"))
        if feed.done():
            break
        wait = HEARTBEAT if deadline is None else min(HEARTBEAT, deadline - time.monotonic())
        if wait <= 0:
            break
        if select.select([conn], [], [], wait)[0]:
            conn.poll()
        elif deadline is None or time.monotonic() < deadline:
            cur.execute("SELECT 1")     # a dead link shows here, not hours later


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("conninfo", nargs="?", default="", help="libpq connection string")
    ap.add_argument("--limit", type=int, default=1000, help="exit after this many lines")
    ap.add_argument("--seconds", type=float, default=1000, help="exit after this long")
    ap.add_argument("--window", type=int, default=1000,
                    help="ids read again after a reconnection, for events that committed late")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    deadline = time.monotonic() + args.seconds if args.seconds else None
    feed = Feed(args.limit, args.window)
    delay = BACKOFF_MIN
    while not feed.done() and (deadline is None or time.monotonic() < deadline):
        conn = None
        try:
            conn = psycopg2.connect(args.conninfo)
            # notifications are delivered between transactions: never sit in one
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("LISTEN " + CHANNEL)    # first: from here on nothing is missed
                feed.start(cur)                     # then what was stored meanwhile
            delay = BACKOFF_MIN
            follow(feed, conn, deadline)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            print("connection lost: %s; connecting again in %.1f s"
                  % (" ".join(str(e).split()), delay), file=sys.stderr, flush=True)
            time.sleep(delay if deadline is None else max(0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, BACKOFF_MAX)
        finally:
            if conn is not None:
                conn.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
