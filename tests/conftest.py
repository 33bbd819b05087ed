"""Shared fixtures: a lab PKI, and probe configurations aimed at local test servers.

Tests talk only to servers they start on loopback addresses (see tests/servers/). The
probe's system resolver is turned off in them, so that no query leaves the machine; the
direct UDP queries go to the test's own DNS server instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import clirun
import pytest
from servers import LabPKI

from probe.core import userconfig
from probe.measure.url import ProbeConfig

# A volunteer's own config (say, a default control helper) must never leak into the
# tests, nor the tests' into it: every test, and every CLI it runs, reads this file.
# It holds one thing: the volunteer accepted the notice, as anyone who ran the probe
# once has (tests/test_first_run.py starts from an empty one). Results a test makes
# outside a checkout go to a data directory of the tests' own.
_home = Path(tempfile.mkdtemp(prefix="probe-config-"))
os.environ["BYNET_PROBE_CONFIG"] = str(_home / "config.ini")
os.environ["XDG_DATA_HOME"] = str(_home / "data")
userconfig.record_consent(Path(os.environ["BYNET_PROBE_CONFIG"]), how="tests")


@pytest.fixture(autouse=True)
def no_traceback_from_the_cli():
    """Every test, whatever it asserts: no run of the `probe` command (through
    tests/clirun.py) printed a Python traceback. A failure a volunteer can meet must end
    in one line; this catches the ones no test was written for yet."""
    clirun.RUNS.clear()
    yield
    for args, code, err in clirun.RUNS:
        assert "Traceback (most recent call last)" not in err, f"`probe {' '.join(args)}` (exit {code}):\n{err[-3000:]}"


@pytest.fixture(scope="session")
def pki() -> LabPKI:
    return LabPKI()


@pytest.fixture(scope="session")
def ca_file(pki, tmp_path_factory) -> str:
    return str(pki.ca_pem_path(tmp_path_factory.mktemp("pki")))


def lab_config(dns_address: str | None, ca_file: str | None = None, **overrides) -> ProbeConfig:
    """Short timeouts, only the test's DNS server, no well-known ports unless asked."""
    base: dict[str, Any] = dict(
        dns_timeout=1.5,
        tcp_timeout=1.0,
        tls_timeout=2.0,
        http_timeout=3.0,
        control_timeout=10.0,
        resolvers=[dns_address] if dns_address else [],
        system_resolver=False,
        dns_late_window=0.3,
        ports=(),
        ca_file=ca_file,
        control_sni="benign.lab.test",
    )
    base.update(overrides)
    return ProbeConfig(**base)
