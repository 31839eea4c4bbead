"""Test environment: never wait on the network; shared fixtures."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory):
    """A small ShareGPT JSONL file with short, learnable conversations."""
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    rows = [{"conversations": [{"from": "human", "value": f"What is {a} plus {a}?"},
                               {"from": "gpt", "value": f"{a} plus {a} is {2 * a}."}]} for a in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
