"""A module the launcher tests run as ``python -m tests.launch_probe``: it prints what a run
process sees (arguments, an environment variable, its directory, torch's threads, whether the
harness was imported before it started, and with ``cuda`` the GPUs it sees and a sum computed on
one), then sleeps or exits as told."""

import json
import os
import sys
import time

preloaded = "harness.train" in sys.modules  # before this module imports anything of its own
print(json.dumps({"argv": sys.argv[1:], "probe": os.environ.get("PROBE"), "cwd": os.getcwd(),
                  "preloaded": preloaded, "threads": __import__("torch").get_num_threads()}), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[1] == "cuda":
    torch = __import__("torch")
    print(json.dumps({"gpus": torch.cuda.device_count(),
                      "sum": torch.ones(1024, 1024, device="cuda").sum().item()}), flush=True)
if sys.argv[1] == "sleep":
    time.sleep(60)
sys.exit(int(sys.argv[2]))
