"""The rules of voipbin_requests (src/requests/request_rules.c) on their own:
test/c/request_rules_unit.c checks every row of them (the classes of
requests, the verdict on each answer, the backoff, giving up, the paths
refused), built here with ASAN and UBSAN.  No cluster needed."""
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def test_every_rule(tmp_path):
    exe = str(tmp_path / "request_rules_unit")
    subprocess.run(["gcc", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-I" + SRC, "-o", exe,
                    os.path.join(HERE, "c", "request_rules_unit.c"),
                    os.path.join(SRC, "requests", "request_rules.c")], check=True)
    r = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "checks passed" in r.stdout
