"""The benchmark, runnable under pytest but out of the default run (-m benchmark)."""

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_thousand_targets_against_local_servers():
    from run_benchmark import bench

    result = asyncio.run(bench(1000))
    print(result)
    assert result["measured"] == 1000 and result["http_200"] == 1000
