"""``python -m harness.eval PATH [--tasks ...] [--limit N]``: score a run dir, a PEFT adapter dir or
an HF folder with lm-eval (default: the offline suite) and print the scores as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import exit_on_user_error, fail
from .evaluate import HELDOUT_FILE, HELDOUT_TASK, LOCAL_TASKS, score


def load_for_scoring(path: Path, device: str):
    """(model, tokenizer) from a run dir (record.json), a PEFT adapter dir or an HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .export import load_trained
    from .schema import ConfigError

    if (path / "record.json").is_file():
        return load_trained(path, device)
    if (path.parent / "record.json").is_file() and (path / "adapter_config.json").is_file():
        return load_trained(path.parent, device)  # a run's own adapter: rebuild its base as the run did
    if (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path).to(device), AutoTokenizer.from_pretrained(path)
    if (path / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(path).to(device), AutoTokenizer.from_pretrained(path)
    raise ConfigError(f"{path}: not a run dir, a PEFT adapter dir or an HF model folder")


def unknown_tasks(tasks: list[str]) -> list[str]:
    """The names neither lm-eval nor the harness's own task folder defines (a typo, not a hub
    task: lm-eval's task index is local, so this needs no network)."""
    from .evaluate import task_manager

    known = set(task_manager(tasks).all_tasks)
    return [t for t in tasks if t not in known]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.eval", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="lm-eval task names (default: the offline suite; harness_heldout only for run dirs)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    args = parser.parse_args(argv)
    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size)):
        if value is not None and value <= 0:
            fail(f"{flag} {value}: must be > 0")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        fail(f"--num-fewshot {args.num_fewshot}: must be >= 0")
    if args.device not in (None, "cpu", "cuda") and not str(args.device).startswith("cuda:"):
        fail(f"--device {args.device}: expected cuda or cpu")
    if not args.path.exists():
        fail(f"{args.path}: no such run dir, adapter dir or model folder")
    if args.tasks:
        unknown = unknown_tasks(args.tasks)
        if unknown:
            fail(f"--tasks: no such lm-eval task: {', '.join(unknown)}")
    import torch  # after the checks that need no device: a bad flag is one line without loading it

    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device}: no CUDA GPU is available on this machine; use --device cpu")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    run_dir = args.path if (args.path / "record.json").is_file() else args.path.parent
    heldout = run_dir / HELDOUT_FILE
    tasks = args.tasks or [t for t in LOCAL_TASKS if t != HELDOUT_TASK or heldout.is_file()]
    with exit_on_user_error():
        model, tokenizer = load_for_scoring(args.path, device)
        scores = score(model, tokenizer, tasks, device=device, batch_size=args.batch_size,
                       num_fewshot=args.num_fewshot, limit=args.limit, heldout_path=heldout if heldout.is_file() else None)
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
