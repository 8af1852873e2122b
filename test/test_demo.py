"""The README's demo command works: the realistic call arrives in the LISTEN client."""
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def test_demo_shows_the_call_arriving():
    out = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "..", "demo", "demo.py")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "13 of 13 events arrived as notifications" in out.stdout
    assert "transcript_created   [in] No, that's all. Thanks!" in out.stdout
    assert "duplicates=13" in out.stdout
