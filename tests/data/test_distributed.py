"""A real two-process gloo process group: FFCV's distributed=True through train_loader, each rank
reading its half of the training split in one epoch (what a Ray Train V2 CPU worker does)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from scm_ray.data.records import RecordTable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RANK = """
import json, sys, torch.distributed as dist
from scm_ray.data.loaders import train_loader
rank, port, beton = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
loader = train_loader(beton, 4, 1, 56, 48, seed=7, rank=rank, world_size=2, distributed=True)
order = loader.loader.next_traversal_order().tolist()
labels = [l for _, batch in loader for l in batch.tolist()]
print(json.dumps({"order": order, "labels": labels, "batches": len(loader)}))
dist.destroy_process_group()
"""


@pytest.mark.timeout(300)
def test_two_ranks_over_gloo(synthetic_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", RANK, str(rank), str(port), str(synthetic_dir / "train.beton")],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=280)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    a, b = results
    assert a["batches"] == b["batches"] == 5
    assert not set(a["order"]) & set(b["order"]) and len(a["order"]) == len(b["order"]) == 20
    expected = Counter(r.label for r in RecordTable.read(synthetic_dir).rows("train"))
    assert Counter(a["labels"]) + Counter(b["labels"]) == expected
