#!/usr/bin/python3
"""A LISTEN client for the benchmark, on its own connection like any user's.

  listener.py end --dsn DSN --channel call_hangup --resource-id UUID
      prints "ready" once listening; then, when the notification whose
      payload names that resource arrives, prints its arrival time
      (CLOCK_REALTIME ns) as {"end_ns": t, "seen": n} and exits.
  listener.py latency --dsn DSN --channel voipbin_events --count K --out FILE
      prints "ready"; writes one line "arrival_ns event_type resource_id" per
      notification to FILE until K arrived, then prints {"received": K}.
Each arrival time is taken right after the notifications are read from the
socket (all notifications read together share it).
"""
import argparse
import json
import select
import sys
import time

import psycopg2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["end", "latency"])
    p.add_argument("--dsn", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--resource-id")
    p.add_argument("--count", type=int)
    p.add_argument("--out")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()

    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    conn.cursor().execute('LISTEN "%s"' % args.channel)
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    seen = 0
    out = open(args.out, "w") if args.out else None
    lines = []
    while time.monotonic() < deadline:
        if not select.select([conn], [], [], 1.0)[0]:
            continue
        conn.poll()
        now = time.time_ns()
        while conn.notifies:
            n = conn.notifies.pop(0)
            seen += 1
            if args.mode == "end":
                if args.resource_id in n.payload and \
                        json.loads(n.payload).get("resource_id") == args.resource_id:
                    print(json.dumps({"end_ns": now, "seen": seen}), flush=True)
                    return 0
            else:
                d = json.loads(n.payload)
                lines.append("%d %s %s\n" % (now, d.get("event_type"), d.get("resource_id")))
        if args.mode == "latency" and seen >= args.count:
            out.writelines(lines)
            out.close()
            print(json.dumps({"received": seen}), flush=True)
            return 0
    if out:
        out.writelines(lines)
        out.close()
    print(json.dumps({"timeout": True, "seen": seen}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
