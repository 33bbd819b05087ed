"""Messages for volunteers in Belarusian, Russian or English (gettext catalogues).

Why gettext: the catalogues (``probe/locale/*/LC_MESSAGES/probe.po``) are the format
translators and their tools know, Babel extracts and checks them
(``python scripts/i18n.py``), and the standard library reads the compiled ``.mo`` at
run time, so translating costs the probe no dependency.

What is translated: everything a volunteer reads (the consent notice, progress lines,
summaries, ``probe explain``, errors). What is not: researchers' output (JSON, CSV,
column names, verdict codes), which stays stable whatever the language.

Messages use named ``{placeholders}`` (``_("{n} sites").format(n=3)``), so a translator
can reorder them; counts use ``ngettext`` (Belarusian and Russian have three plural
forms).
"""

from __future__ import annotations

import contextlib
import gettext as _gettext
import os
from collections.abc import Iterator
from pathlib import Path

DOMAIN = "probe"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
LANGUAGES = ("en", "be", "ru")
# The names a volunteer might type or a locale might carry, mapped to ours.
_ALIASES = {"by": "be", "bel": "be", "be_by": "be", "rus": "ru", "ru_ru": "ru", "ru_by": "ru",
            "eng": "en", "c": "en", "posix": "en"}

_current = "en"
_translation: _gettext.NullTranslations = _gettext.NullTranslations()


def normalise(code: str | None) -> str | None:
    """'be_BY.UTF-8' -> 'be', 'RU' -> 'ru'; None for a language we have no catalogue for."""
    if not code:
        return None
    base = code.split(".")[0].split("@")[0].strip().lower().replace("-", "_")
    if base in _ALIASES:
        return _ALIASES[base]
    short = base.split("_")[0]
    short = _ALIASES.get(short, short)
    return short if short in LANGUAGES else None


def from_environment(env: dict[str, str] | None = None) -> str | None:
    """The language the locale asks for, in gettext's order (LANGUAGE, LC_ALL,
    LC_MESSAGES, LANG): the first variable that is set decides; LANGUAGE may list
    several, the first we have wins."""
    env = dict(os.environ) if env is None else env
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var)
        if not value:
            continue
        for part in value.split(":") if var == "LANGUAGE" else [value]:
            code = normalise(part)
            if code:
                return code
        if var != "LANGUAGE":
            return "en"
    return None


def set_language(code: str | None) -> str:
    """Use this language from now on (None or unknown: English); returns the one in use."""
    global _current, _translation
    lang = normalise(code) or "en"
    _current = lang
    if lang == "en":
        _translation = _gettext.NullTranslations()
    else:
        _translation = _gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[lang], fallback=True)
    return lang


def language() -> str:
    return _current


@contextlib.contextmanager
def english() -> Iterator[None]:
    """English for a moment: what is stored for researchers (a run's notes) is English
    whatever the volunteer reads."""
    previous = _current
    set_language("en")
    try:
        yield
    finally:
        set_language(previous)


def _(message: str) -> str:
    """The message in the volunteer's language (English when it has no translation)."""
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of a counted message that ``n`` takes in the volunteer's language."""
    return _translation.ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark a message for extraction without translating it yet (module constants,
    translated with ``_`` where they are shown)."""
    return message
