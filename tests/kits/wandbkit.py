"""Reading a W&B offline run file (``run-ID.wandb``) back in the tests.

wandb 0.31 ships no Python reader of it; the file is a LevelDB-style log (a 7-byte W&B header,
then 32 KiB blocks of records, each a 7-byte header: checksum, little-endian length, type FULL /
FIRST / MIDDLE / LAST) of ``wandb_internal_pb2.Record`` messages, which wandb's own protobuf
module parses."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def read_run(path: Path) -> dict:
    """{"history": [{key: value} per logged step], "summary": {key: value}, "config": {...}}."""
    from wandb.proto import wandb_internal_pb2 as pb

    history, summary, config, names = [], {}, {}, {}
    for raw in raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            names = {
                "name": record.run.display_name,
                "project": record.run.project,
                "group": record.run.run_group,
                "tags": list(record.run.tags),
            }
    return {"history": history, "summary": summary, "config": config, "run": names}
