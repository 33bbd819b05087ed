"""The volunteer's own defaults, in the platform's config directory (``probe config``).

One INI file, ``config.ini`` in ``click.get_app_dir("bynet-probe")`` (on Linux
``$XDG_CONFIG_HOME/bynet-probe``, else ``~/.config/bynet-probe``; ``BYNET_PROBE_CONFIG``
names another file). Today it holds one thing, the control helpers to use when a run
names none: a volunteer sets them once and every ``probe run`` has a control.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import click

from probe.core.addresses import url_of

APP_NAME = "bynet-probe"
SECTION = "probe"
KEYS = {"control": "control helpers, in the order they are tried (URLs, ooni+URL for OONI's protocol)"}


class ConfigError(Exception):
    """A bad key or value, or a file that cannot be read or written: one line."""


def config_path() -> Path:
    override = os.environ.get("BYNET_PROBE_CONFIG")
    if override:
        return Path(override)
    return Path(click.get_app_dir(APP_NAME)) / "config.ini"


def _read(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid config file ({' '.join(str(exc).split())})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return parser


def check_control_url(url: str) -> str:
    """A control helper URL as we accept it: http(s)://HOST[:PORT][/PATH], or the same
    behind ``ooni+`` for OONI's test-helper protocol."""
    text = url.strip()
    bare = text[len("ooni+"):] if text.startswith("ooni+") else text
    try:
        u = url_of(bare)
        ok = u.scheme in ("http", "https") and bool(u.host) and u.user is None
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{url!r} is not a control helper URL (use http(s)://HOST[:PORT], "
                          "or ooni+https://HOST for an OONI test helper)")
    return text


def get(key: str, path: Path | None = None) -> list[str]:
    if key not in KEYS:
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(KEYS)})")
    path = path or config_path()
    if not path.exists():
        return []
    parser = _read(path)
    raw = parser.get(SECTION, key, fallback="")
    return [v for v in (x.strip() for x in raw.replace(",", "\n").splitlines()) if v]


def set_values(key: str, values: list[str], path: Path | None = None) -> Path:
    if key not in KEYS:
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(KEYS)})")
    if key == "control":
        values = [check_control_url(v) for v in values]
    path = path or config_path()
    parser = _read(path) if path.exists() else configparser.ConfigParser(interpolation=None)
    if not parser.has_section(SECTION):
        parser.add_section(SECTION)
    if values:
        parser.set(SECTION, key, "\n".join(values))
    else:
        parser.remove_option(SECTION, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            parser.write(fh)
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror})") from None
    return path


def show(path: Path | None = None) -> dict[str, list[str]]:
    path = path or config_path()
    return {key: get(key, path) for key in KEYS}
