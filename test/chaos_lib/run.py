"""One chaos run: the rig, the load and the faults for the given time, the
settling, the account.  Returns the exit status (0: the account holds)."""
import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time

from . import noise, schedule
from .account import Account
from .faults import Context, run_lane
from .ledger import Ledger
from .load import Load
from .memory import Sampler
from .rig import Rig
from .settle import settle, snapshot


def parse(argv):
    ap = argparse.ArgumentParser(prog="test/chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, help="replay this run (default: a fresh seed, printed first)")
    ap.add_argument("--minutes", type=float, default=2.0, help="how long the load and the faults last")
    ap.add_argument("--report", help="write the table and the verdict (JSON) to this file")
    ap.add_argument("--lanes", help="comma-separated fault lanes (default: all of %s)"
                    % ",".join(sorted(schedule.LANES)))
    ap.add_argument("--plant", help="start the server with VOIPBIN_FAULT=PLANT (test/test_chaos.py)")
    ap.add_argument("--keep", action="store_true", help="keep the cluster's directory for a look")
    ap.add_argument("--discard", action="store_true",
                    help="remove the cluster's directory even when the account fails (test/test_chaos.py)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2 ** 31)
    # first, so that even a run that hangs can be replayed
    print("chaos: seed %d (replay: test/chaos --seed %d --minutes %g)" % (seed, seed, args.minutes), flush=True)
    t0 = time.monotonic()

    def log(msg):
        print("chaos: [%6.1f s] %s" % (time.monotonic() - t0, msg), flush=True)

    seconds = args.minutes * 60
    lanes = set(args.lanes.split(",")) if args.lanes else None
    faults = schedule.make(seed, seconds, lanes)
    log("%d faults drawn for %g s%s" % (len(faults), seconds, ", plant %s" % args.plant if args.plant else ""))
    workdir = tempfile.mkdtemp(prefix="voipbin-chaos-")
    os.chmod(workdir, 0o755)
    rig = Rig(workdir, args.plant)
    ok = False
    try:
        rig.start()
        log("cluster %s, fake %s, receiver on port %d" % (rig.cluster.dir, rig.fake.api_url, rig.webhook_port))
        ledger, ctx = Ledger(), Context()
        stop, noise_stop, lanes_stop = threading.Event(), threading.Event(), threading.Event()
        sampler = Sampler(rig, stop).start()
        noise_thread, noise_counts = noise.start(rig, seed, noise_stop)
        load = Load(rig, ledger, random.Random("%s/load" % seed), {})
        start = time.monotonic()
        threads = []
        for lane in sorted({f.lane for f in faults}):
            t = threading.Thread(target=run_lane, daemon=True,
                                 args=(rig, [f for f in faults if f.lane == lane], ctx, start, lanes_stop,
                                       lambda m, lane=lane: log("%-6s %s" % (lane, m))))
            t.start()
            threads.append(t)
        load.run(start + seconds)
        log("load done: %d events published; waiting for the faults' lanes" % len(ledger.entries))
        for t in threads:
            t.join(180)
        noise_stop.set()
        noise_thread.join(30)
        # a long run's last repair reaches back to its first unrepaired gap (a
        # worker restarted takes over every gap left unrepaired): time to match
        problems = settle(rig, load, ctx, log, timeout=max(240, seconds / 3))
        snap = snapshot(rig)
        stop.set()
        account = Account(ledger, snap, ctx, sampler, problems)
        ok = account.check()
        table = account.table(faults, noise_counts)
        verdict = account.verdict(seed)
        print(table, flush=True)
        for n in ctx.notes:
            print("note: " + n)
        print(verdict, flush=True)
        if args.report:
            with open(args.report, "w") as f:
                f.write("seed %d, %g minutes\n%s\n%s\n" % (seed, args.minutes, table, verdict))
                f.write(account.to_json(seed, args.minutes, args.plant) + "\n")
        log("done")
    finally:
        keep = args.keep or (not ok and not args.discard)
        rig.stop(keep=keep)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("chaos: files kept in %s" % workdir, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
