"""Where a run's control helper comes from, and what the volunteer is told about it:
--control (several, in order, falling back), the target list's `# control:` header,
`probe config set control`, and `probe control check`."""

from __future__ import annotations

import json
import os

import pytest
from clirun import QUIET, probe, rows
from servers import Answer, DnsServer, WebServer, site_app, unused_port

from probe.core import userconfig
from probe.helper.server import serve_helper
from probe.helper.service import HelperConfig
from probe.measure.url import ProbeConfig
from probe.targets.lists import TargetError, control_header


@pytest.fixture
async def lab():
    async with DnsServer({"site.lab.test": Answer(a=["127.0.0.1"])}) as dns, \
            WebServer(site_app(title="Source site")) as web:
        config = HelperConfig(allow_private=True, probe=ProbeConfig(resolvers=[dns.address], system_resolver=False))
        async with serve_helper(config) as helper:
            yield dns, web, f"http://127.0.0.1:{helper.port}"


def targets_file(tmp_path, web, header: str = "") -> str:
    path = tmp_path / "targets.txt"
    path.write_text(header + f"http://site.lab.test:{web.port}/ NEWS a site\n")
    return str(path)


def run_args(tmp_path, dns, targets: str) -> list[str]:
    return ["run", "--targets", targets, "--db", str(tmp_path / "p.db"), "--resolver", dns.address,
            "--lab-network", "127.0.0.0/8", *QUIET]


async def test_several_controls_are_tried_in_order(tmp_path, lab):
    dns, web, helper = lab
    dead = f"http://127.0.0.1:{unused_port()}"
    rc, _, err = await probe(*run_args(tmp_path, dns, targets_file(tmp_path, web)), "--control", dead,
                             "--control", helper)
    assert rc == 0, err
    assert f"asks the control helper at {helper} (--control" in err
    assert f"control helper skipped: {dead}" in err
    (control_url, controls) = rows(tmp_path / "p.db", "select control_url, json_extract(config, '$.controls') from runs")[0]
    assert control_url == helper and json.loads(controls) == [helper]
    assert rows(tmp_path / "p.db", "select control_url, control_failure from measurements") == [(helper, None)]


async def test_the_target_list_names_its_control(tmp_path, lab):
    dns, web, helper = lab
    targets = targets_file(tmp_path, web, f"# Belarusian media, maintained by us\n# control: {helper}\n")
    rc, _, err = await probe(*run_args(tmp_path, dns, targets))
    assert rc == 0, err
    assert f"asks the control helper at {helper} (named by {targets})" in err
    assert rows(tmp_path / "p.db", "select control_failure from measurements") == [(None,)]


async def test_the_config_file_gives_the_default_control(tmp_path, lab):
    dns, web, helper = lab
    config = tmp_path / "cfg" / "config.ini"
    env = {"BYNET_PROBE_CONFIG": str(config)}
    userconfig.record_consent(config)  # a volunteer who set a control has run the probe before
    rc, out, err = await probe("config", "set", "control", helper, env=env)
    assert rc == 0 and config.exists(), err
    rc, out, _ = await probe("config", "get", "control", env=env)
    assert out.strip() == helper
    rc, _, err = await probe(*run_args(tmp_path, dns, targets_file(tmp_path, web)), env=env)
    assert rc == 0, err
    assert f"asks the control helper at {helper} (from {config})" in err
    # --control wins over the config file, --no-control over both
    rc, _, err = await probe(*run_args(tmp_path, dns, targets_file(tmp_path, web)), "--no-control", env=env)
    assert rc == 0 and "no control helper" in err and "probe config set control URL" in err
    rc, out, _ = await probe("config", "unset", "control", env=env)
    assert rc == 0
    rc, out, _ = await probe("config", "get", "control", env=env)
    assert out == ""


async def test_run_says_when_it_has_no_control_and_what_that_means(tmp_path, lab):
    dns, web, _ = lab
    rc, _, err = await probe(*run_args(tmp_path, dns, targets_file(tmp_path, web)))
    assert rc == 0, err
    assert "no control helper" in err and "can't tell" in err and "--control URL" in err


@pytest.mark.parametrize("bad", ["ftp://helper.example/", "not a url", "https://user:pw@helper.example/"])
async def test_bad_control_urls_are_one_line_errors(tmp_path, bad):
    rc, _, err = await probe("config", "set", "control", bad)
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err
    targets = tmp_path / "t.txt"
    targets.write_text(f"# control: {bad.replace(' ', '')}\nhttps://example.org/\n")
    rc, _, err = await probe("run", "--targets", str(targets), "--db", str(tmp_path / "p.db"), *QUIET)
    assert rc == 2 and "t.txt:1" in err and err.count("\n") == 1


async def test_control_and_no_control_contradict(tmp_path):
    rc, _, err = await probe("run", "--control", "http://127.0.0.1:1", "--no-control", "--db", str(tmp_path / "p.db"))
    assert rc == 2 and "contradict" in err


async def test_control_check_says_what_a_helper_grants(lab):
    dns, web, helper = lab
    rc, out, err = await probe("control", "check", helper)
    assert rc == 0, err
    assert f"{helper}: works (bynet control helper, version" in out
    assert (f"grants each probe: {HelperConfig.per_client_concurrency} measurements at once, "
            f"{HelperConfig.rate_per_minute} a minute") in out
    assert "clocks: this computer is" in out and "(fine)" in out
    assert "--allow-private" in out  # the lab's helper says so; a public one must not be
    rc, out, err = await probe("control", "check", helper, "--measure", f"http://site.lab.test:{web.port}/")
    assert rc == 0, err
    assert "addresses 127.0.0.1" in out and "HTTP 200 Source site" in out


async def test_control_check_of_a_dead_helper_exits_2():
    rc, out, err = await probe("control", "check", f"http://127.0.0.1:{unused_port()}")
    assert rc == 2 and err.startswith("error: control helper unreachable") and err.count("\n") == 1


def test_config_file_round_trip(tmp_path):
    path = tmp_path / "c.ini"
    userconfig.set_values("control", ["https://a.example/", "ooni+https://th.example/"], path)
    assert userconfig.get("control", path) == ["https://a.example/", "ooni+https://th.example/"]
    assert userconfig.show(path)["control"] == ["https://a.example/", "ooni+https://th.example/"]
    with pytest.raises(userconfig.ConfigError):
        userconfig.get("colour", path)
    path.write_text("not an ini file\n[[[")
    with pytest.raises(userconfig.ConfigError):
        userconfig.get("control", path)


def test_config_lives_in_the_platform_config_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("BYNET_PROBE_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert userconfig.config_path() == tmp_path / "bynet-probe" / "config.ini"


def test_control_header_is_read_before_the_first_target():
    text = "# list\n# control: https://a.example/\n#control:ooni+https://b.example\nhttps://x.org/\n# control: https://late.example/\n"
    assert control_header(text) == ["https://a.example/", "ooni+https://b.example"]
    with pytest.raises(TargetError):
        control_header("# control: gopher://x\n", "list.txt")
    assert os.environ["BYNET_PROBE_CONFIG"]  # the tests never read a real user's config
