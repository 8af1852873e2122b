#!/usr/bin/python3
"""Plays VoIPBIN's webhook sender as fast as it can: each frame of a frames
file (bench/events.py) wrapped as VoIPBIN wraps a webhook body
({"type","data"}, compact), signed, POSTed over keep-alive connections, one
request in flight per connection.  A 200 means committed (or journaled), so
the rate is what the receiver stores.  Prints one JSON line:
{"sent", "ok", "statuses", "t_first_ns", "t_last_ns"}."""
import argparse
import http.client
import json
import os
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
from webhook_sender import envelope, sign, USER_AGENT  # noqa: E402


def read_frames(path):
    out = []
    with open(path, "rb") as f:
        while True:
            h = f.read(4)
            if not h:
                return out
            out.append(f.read(struct.unpack(">I", h)[0]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/voipbin/events")
    ap.add_argument("--secret", required=True)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--types", required=True, help="file: one event type per frame")
    ap.add_argument("--connections", type=int, default=1)
    a = ap.parse_args()
    with open(a.types) as f:
        types = f.read().split()
    requests = []
    for t, fr in zip(types, read_frames(a.frames)):
        body = envelope(t, json.loads(fr))
        requests.append((body, {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                                "X-VoIPBIN-Signature": sign(a.secret, body)}))
    statuses = {}
    lock = threading.Lock()
    nxt = [0]
    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(requests):
                break
            body, headers = requests[i]
            conn.request("POST", a.path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            with lock:
                statuses[r.status] = statuses.get(r.status, 0) + 1
        conn.close()
    t0 = time.time_ns()
    threads = [threading.Thread(target=worker) for _ in range(a.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.time_ns()
    print(json.dumps({"sent": len(requests), "ok": statuses.get(200, 0),
                      "statuses": {str(k): v for k, v in statuses.items()},
                      "t_first_ns": t0, "t_last_ns": t1}), flush=True)


if __name__ == "__main__":
    main()
