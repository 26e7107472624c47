"""Reads kcat's JSON envelopes (kcat -J) on stdin and prints, for each message, its topic and its
payload as Python's csv module reads it (topics ending in .csv) or as Python's json module reads it
(the others): {"topic": ..., "key": ..., "csv": [fields]} or {"topic": ..., "key": ..., "json": value}."""
import csv
import io
import json
import sys

for line in sys.stdin:
    if not line.strip():
        continue
    msg = json.loads(line)
    out = {"topic": msg["topic"], "key": msg.get("key")}
    payload = msg.get("payload")
    if payload is None:
        out["json"] = None
    elif msg["topic"].endswith(".csv"):
        rows = list(csv.reader(io.StringIO(payload, newline="")))
        if len(rows) != 1:
            raise SystemExit(f"{len(rows)} CSV rows in one record: {payload!r}")
        out["csv"] = rows[0]
    else:
        out["json"] = json.loads(payload)
    print(json.dumps(out))
