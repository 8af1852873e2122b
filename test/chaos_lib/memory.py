"""The worker's memory, sampled throughout: its RssAnon (what it allocated,
not the shared buffers it maps) must stay within voipbin.buffer_limit + 16 MB."""
import threading

import psycopg2

SLACK_MB = 16


def rss_anon_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Sampler:
    def __init__(self, rig, stop, interval=0.2):
        self.rig, self.stop, self.interval = rig, stop, interval
        self.peak_kb = 0
        self.peak_pid = None
        self.samples = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        pid = None
        while not self.stop.wait(self.interval):        # the sampling rate
            kb = rss_anon_kb(pid) if pid else None
            if kb is None:
                try:
                    pid = self.rig.cluster.worker_pid()
                except psycopg2.Error:
                    pid = None
                continue
            self.samples += 1
            if kb > self.peak_kb:
                self.peak_kb, self.peak_pid = kb, pid

    def start(self):
        self.thread.start()
        return self
