"""A module the launcher tests run as ``python -m tests.launch_probe``: it prints what a run
process sees (arguments, an environment variable, its directory, torch's threads, whether the
harness was imported before it started), then sleeps or exits as told."""

import json
import os
import sys
import time

preloaded = "harness.train" in sys.modules  # before this module imports anything of its own
print(json.dumps({"argv": sys.argv[1:], "probe": os.environ.get("PROBE"), "cwd": os.getcwd(),
                  "preloaded": preloaded, "threads": __import__("torch").get_num_threads()}), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[1] == "sleep":
    time.sleep(60)
sys.exit(int(sys.argv[2]))
