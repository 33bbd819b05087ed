"""The volunteer's own defaults, in the platform's config directory (``probe config``).

One INI file, ``config.ini`` in platformdirs' user config directory (on Linux
``$XDG_CONFIG_HOME/bynet-probe``, else ``~/.config/bynet-probe``; on macOS
``~/Library/Application Support/bynet-probe``; on Windows ``%LOCALAPPDATA%``;
``BYNET_PROBE_CONFIG`` names another file). It holds what a volunteer sets once
(control helpers, their own list, where the database lives, concurrency, a data cap, the
language) and that they accepted the notice of what a run does (``[consent]``), so a
scheduled run, which nobody watches, runs as the volunteer agreed.

Why a file and not only flags: a volunteer sets things once, and `probe run` (by hand,
or from `probe schedule`) then does the same every time.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import platformdirs

from probe.core import i18n, units
from probe.core.addresses import url_of
from probe.core.records import utcnow

APP_NAME = "bynet-probe"
SECTION = "probe"
KEYS = {
    "control": i18n.N_("control helpers, in the order they are tried (URLs, ooni+URL for OONI's protocol)"),
    "list": i18n.N_("your target list, measured when `probe run` names none (a file)"),
    "db": i18n.N_("where results go when `probe run` names no --db (a file)"),
    "concurrency": i18n.N_("sites measured at the same time (1-256; 8 suits a home link)"),
    "max-bytes": i18n.N_("a data cap per run, e.g. 200MB (a run stops there; --resume continues)"),
    "max-runtime": i18n.N_("a time cap per run, e.g. 30m"),
    "lang": i18n.N_("language of messages: be, ru or en (default: your locale)"),
    "collector": i18n.N_("a collector to upload results to after each run (a URL; `probe upload` sends them now)"),
    "collector-token": i18n.N_("your token for that collector (from its operator; or BYNET_PROBE_COLLECTOR_TOKEN)"),
}
# Keys that hold several values (tried in order); the others hold one.
MULTI = {"control"}
CONSENT_SECTION = "consent"
# Uploading is agreed to apart from measuring: results leave the machine.
UPLOAD_CONSENT_SECTION = "upload-consent"
# Raised when the notice changes in substance, so that volunteers read it again.
NOTICE_VERSION = 1


class ConfigError(Exception):
    """A bad key or value, or a file that cannot be read or written: one line."""


def config_path() -> Path:
    override = os.environ.get("BYNET_PROBE_CONFIG")
    if override:
        return Path(override)
    return platformdirs.user_config_path(APP_NAME, appauthor=False) / "config.ini"


def data_dir() -> Path:
    """Where results go outside a checkout (platformdirs' user data directory:
    ``~/.local/share/bynet-probe`` on Linux)."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def _read(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid config file ({' '.join(str(exc).split())})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return parser


def _http_url(text: str) -> bool:
    """http(s)://HOST[:PORT][/PATH] with no user name in it."""
    try:
        u = url_of(text)
    except ValueError:
        return False
    return u.scheme in ("http", "https") and bool(u.host) and u.user is None


def check_control_url(url: str) -> str:
    """A control helper URL as we accept it: http(s)://HOST[:PORT][/PATH], or the same
    behind ``ooni+`` for OONI's test-helper protocol."""
    text = url.strip()
    if not _http_url(text[len("ooni+"):] if text.startswith("ooni+") else text):
        raise ConfigError(f"{url!r} is not a control helper URL (use http(s)://HOST[:PORT], "
                          "or ooni+https://HOST for an OONI test helper)")
    return text


def _known(key: str) -> None:
    if key not in KEYS:
        raise ConfigError(i18n._("unknown setting {key!r} (known: {known})").format(key=key, known=", ".join(KEYS)))


def get(key: str, path: Path | None = None) -> list[str]:
    _known(key)
    path = path or config_path()
    if not path.exists():
        return []
    parser = _read(path)
    raw = parser.get(SECTION, key, fallback="")
    if key not in MULTI:
        return [raw.strip()] if raw.strip() else []
    return [v for v in (x.strip() for x in raw.replace(",", "\n").splitlines()) if v]


def value(key: str, path: Path | None = None) -> str | None:
    """A one-value setting, or None when unset."""
    values = get(key, path)
    return values[0] if values else None


def check_collector_url(url: str) -> str:
    """A collector URL: http(s)://HOST[:PORT][/PATH], no user name in it."""
    text = url.strip()
    if not _http_url(text):
        raise ConfigError(i18n._("{url!r} is not a collector URL (use http(s)://HOST[:PORT])").format(url=url))
    return text.rstrip("/")


def check_value(key: str, text: str) -> str:
    """The value as stored, or ConfigError saying what is wrong with it."""
    text = text.strip()
    if key == "control":
        return check_control_url(text)
    if key == "collector":
        return check_collector_url(text)
    if key == "collector-token" and (not text or len(text) > 200 or any(c.isspace() for c in text)):
        raise ConfigError(i18n._("a collector token is one word of at most 200 characters"))
    if key in ("list", "db"):
        p = Path(text).expanduser()
        if key == "list" and not p.is_file():
            raise ConfigError(i18n._("{path}: no such file").format(path=text))
        return str(p.resolve())
    if key == "concurrency":
        if not text.isdigit() or not 1 <= int(text) <= 256:
            raise ConfigError(i18n._("concurrency must be a whole number from 1 to 256, not {value!r}").format(value=text))
        return str(int(text))
    if key == "max-bytes":
        try:
            units.parse_size(text)
        except ValueError:
            raise ConfigError(i18n._("{value!r} is not a size (use e.g. 200MB, 1GB)").format(value=text)) from None
        return text
    if key == "max-runtime":
        try:
            units.parse_duration(text)
        except ValueError:
            raise ConfigError(i18n._("{value!r} is not a duration (use e.g. 30m, 2h)").format(value=text)) from None
        return text
    if key == "lang":
        lang = i18n.normalise(text)
        if lang is None:
            raise ConfigError(i18n._("{value!r} is not a language we speak (be, ru or en)").format(value=text))
        return lang
    return text


def set_values(key: str, values: list[str], path: Path | None = None) -> Path:
    _known(key)
    if len(values) > 1 and key not in MULTI:
        raise ConfigError(i18n._("{key} takes one value").format(key=key))
    values = [check_value(key, v) for v in values]
    return _write(path or config_path(), SECTION, {key: "\n".join(values) if values else None})


def _write(path: Path, section: str, items: dict[str, str | None]) -> Path:
    parser = _read(path) if path.exists() else configparser.ConfigParser(interpolation=None)
    if not parser.has_section(section):
        parser.add_section(section)
    for key, text in items.items():
        if text:
            parser.set(section, key, text)
        else:
            parser.remove_option(section, key)
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


def consent_given(path: Path | None = None, version: int = NOTICE_VERSION, section: str = CONSENT_SECTION) -> bool:
    """Whether the volunteer accepted this version of the notice (``probe run`` asks
    once; ``--yes`` accepts it for automation); ``section`` names another notice (the
    upload notice)."""
    path = path or config_path()
    if not path.exists():
        return False
    parser = _read(path)
    try:
        return parser.getint(section, "version", fallback=0) >= version
    except ValueError:
        return False


def record_consent(path: Path | None = None, version: int = NOTICE_VERSION, how: str = "asked",
                   section: str = CONSENT_SECTION) -> Path:
    """Remember that the notice was accepted, when and how (asked, --yes)."""
    return _write(path or config_path(), section,
                  {"version": str(version), "accepted_at": utcnow(), "how": how})
