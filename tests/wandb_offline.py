"""Read a W&B offline run back: its transaction log (``run-<id>.wandb``), decoded with wandb's
own protobuf schema (``wandb.proto.wandb_internal_pb2``).

wandb >= 0.20 reads these files only in its Go core, so the record framing (LevelDB's log
format, which W&B uses: 32 KiB blocks, 7-byte chunk headers) is unpacked here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
FILE_HEADER = 7  # ":W&B", magic, version
CHUNK_HEADER = 7  # crc32c, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    """Every ``Record`` in a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    records, pending, pos = [], b"", FILE_HEADER
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0 and length == 0:  # zero padding at the end
            break
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_run(run_dir: Path) -> dict:
    """The config, summary and group of the one offline W&B run in ``run_dir/wandb``."""
    (log_file,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    config, summary, group, name = {}, {}, None, None
    for record in read_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            group, name = record.run.run_group, record.run.display_name
            for item in record.run.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                key = ".".join(item.nested_key) if item.nested_key else item.key
                summary[key] = json.loads(item.value_json)
    return {"config": config, "summary": summary, "group": group, "name": name}
