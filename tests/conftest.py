"""Test environment: never wait on the network; shared fixtures."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# One math thread per process, here and in every run the tests start: the tiny model's matrices
# are too small to share out, make test runs a pytest-xdist worker per core, and on a busy 2-core
# machine threads waiting for cores made a 3-step tiny run train in 7 s instead of 0.9 s.
# Set before torch is imported; an OMP_NUM_THREADS already set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory):
    """A small ShareGPT JSONL file with short, learnable conversations."""
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    rows = [{"conversations": [{"from": "human", "value": f"What is {a} plus {a}?"},
                               {"from": "gpt", "value": f"{a} plus {a} is {2 * a}."}]} for a in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory):
    """The tiny random Llama (torch seed 0) saved as a plain HF folder with its tokenizer, so it
    loads as pretrained weights: unlike a random base, they do not depend on the run's seed."""
    import torch

    from harness.models import build_model, load_tokenizer
    from tests.helpers import compose_run

    run = compose_run(["model=tiny"])
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_pretrained")
    build_model(run.model, run.quant, "32-true", "cpu").save_pretrained(folder)
    load_tokenizer(run.model).save_pretrained(folder)
    return folder


if os.environ.get("HARNESS_TEST_CPU_LOG"):  # measuring the suite: CPU-seconds per test, not wall
    import resource
    import time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        """Append "test, wall s, CPU s of this process, CPU s of its finished children" to the file
        HARNESS_TEST_CPU_LOG names (children: the runs and sweeps a test started and waited for,
        their own trials included). On a shared machine wall time says little; CPU time adds up."""
        def cpu(who):
            usage = resource.getrusage(who)
            return usage.ru_utime + usage.ru_stime

        start = time.time(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
        yield
        wall, own, children = (time.time() - start[0], cpu(resource.RUSAGE_SELF) - start[1],
                               cpu(resource.RUSAGE_CHILDREN) - start[2])
        with open(os.environ["HARNESS_TEST_CPU_LOG"], "a") as log:
            log.write(f"{item.nodeid}\t{wall:.1f}\t{own:.1f}\t{children:.1f}\n")
