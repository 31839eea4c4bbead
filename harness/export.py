"""``python -m harness.export RUN_DIR [--out DIR]``: a merged plain HF folder from a finished run.

The base model is reloaded unquantized in the run's precision, the PEFT adapter is loaded on
top and merged into the weights, and the result is saved with the tokenizer, so any HF tool
(lm-eval's own CLI included) can load it with ``from_pretrained``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from .errors import exit_on_user_error, fail
from .record import RECORD_NAME
from .results import load_record
from .schema import ConfigError, QuantConfig, RunConfig


def run_config_from_record(record: dict) -> RunConfig:
    """The typed config a record was produced with."""
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), record["config"])
    return OmegaConf.to_object(merged)


def load_trained(run_dir: str | Path, device: str = "cpu"):
    """The trained model of a finished run (PEFT-wrapped, or the full model) and its tokenizer.

    The base is reloaded unquantized in the run's precision: merging or scoring on 4-bit
    weights would round the update away, so a QLoRA run comes back at 16/32-bit.
    """
    from peft import PeftModel

    from .models import build_model, load_tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / RECORD_NAME).is_file():
        raise ConfigError(f"{run_dir}: not a run dir (no {RECORD_NAME})")
    record = load_record(run_dir / RECORD_NAME)
    if record["status"] != "ok":
        raise ConfigError(f"{run_dir}: run status is {record['status']!r}, nothing trained to load")
    try:
        run = run_config_from_record(record)
    except Exception as exc:  # a record edited or from another version: its config no longer composes
        raise ConfigError(f"{run_dir / RECORD_NAME}: its config is not a valid run config ({str(exc).splitlines()[0]})") from None
    trained = trained_folder(run_dir, record)
    tokenizer = load_tokenizer(run.model)
    if record.get("model_path"):  # full fine-tuning: the saved model already is a plain HF folder
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(trained).to(device), tokenizer
    adapter = trained
    if run.model.init == "random":  # the same seed rebuilds the same random base weights
        import lightning as L

        L.seed_everything(run.seed, verbose=False)
    base = build_model(run.model, QuantConfig(mode="none"), record.get("precision", "32-true"), device)
    return PeftModel.from_pretrained(base, adapter), tokenizer


def trained_folder(run_dir: Path, record: dict) -> Path:
    """The run's adapter (or full model) folder inside ``run_dir``. The record's path is where the
    run wrote it; a copied or moved run dir keeps its own folder under the same name, so that
    path is never followed outside the dir (it would be another run's weights)."""
    key = "model_path" if record.get("model_path") else "adapter_path"
    written = record.get(key)
    if not isinstance(written, str) or not written:
        raise ConfigError(f"{run_dir / RECORD_NAME}: the record names no {key}, nothing trained to load")
    folder = run_dir / Path(written).name
    if not folder.is_dir():
        raise ConfigError(f"{folder}: the run's {'model' if key == 'model_path' else 'adapter'} folder is missing "
                          f"(the record says it was written to {written})")
    return folder


def export_merged(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Merge the run's adapter into its base model and save a plain HF folder (default RUN_DIR/merged)."""
    import torch

    model, tokenizer = load_trained(run_dir)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    merged.config.use_cache = True
    out = Path(out) if out else Path(run_dir) / "merged"
    with torch.no_grad():
        merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run dir holding record.json")
    parser.add_argument("--out", help="where to write the merged HF folder (default RUN_DIR/merged)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.run_dir) / "merged"
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: is an existing file; give a folder")
    with exit_on_user_error():
        out = export_merged(args.run_dir, args.out)
    print(out)


if __name__ == "__main__":
    main()
