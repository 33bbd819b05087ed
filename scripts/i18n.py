"""Keep the message catalogues in step with the code (Babel).

    python scripts/i18n.py            # extract, update be and ru, compile the .mo files
    python scripts/i18n.py --check    # exit 1 when a message lacks a translation

Extracting reads every ``_("...")``, ``ngettext("...", "...", n)`` and ``N_("...")``
under ``probe/``; updating adds new messages to ``probe/locale/{be,ru}/LC_MESSAGES/probe.po``
(untranslated, for a translator) and marks the ones whose English changed as fuzzy;
compiling writes the ``.mo`` files the probe reads. ``tests/test_i18n.py`` fails while
any message is missing, fuzzy or untranslated, or its placeholders differ.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "probe" / "locale"
DOMAIN = "probe"
TRANSLATED = ("be", "ru")
KEYWORDS = {"_": None, "ngettext": (1, 2), "N_": None}
PLACEHOLDER = re.compile(r"(?<!\{)\{([a-zA-Z_][a-zA-Z0-9_]*)(?:[!:][^{}]*)?\}")


def extract() -> Catalog:
    """Every message of the code, as a template."""
    template = Catalog(project="bynet-probe", charset="utf-8")
    for filename, lineno, message, comments, context in extract_from_dir(
        str(ROOT / "probe"), method_map=[("**.py", "python")], keywords=KEYWORDS,
        comment_tags=("Translators:",), strip_comment_tags=True,
    ):
        template.add(message, None, [(f"probe/{filename}", lineno)], auto_comments=comments, context=context)
    return template


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def read(lang: str) -> Catalog:
    with po_path(lang).open("rb") as fh:
        return read_po(fh, locale=lang, domain=DOMAIN)


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def problems(template: Catalog, lang: str) -> list[str]:
    """What a volunteer reading ``lang`` would meet in English or broken: messages of
    the code missing from the catalogue, untranslated, fuzzy, or with other placeholders."""
    catalog = read(lang)
    found = []
    for msg in template:
        if not msg.id:
            continue
        have = catalog.get(msg.id)
        name = msg.id if isinstance(msg.id, str) else msg.id[0]
        if have is None:
            found.append(f"{lang}: missing: {name!r}")
            continue
        if have.fuzzy:
            found.append(f"{lang}: fuzzy: {name!r}")
        raw = list(have.string) if isinstance(have.string, (list, tuple)) else [have.string]
        strings = [str(x) for x in raw if x]
        if not strings or len(strings) != len(raw):
            found.append(f"{lang}: untranslated: {name!r}")
            continue
        ids = [str(i) for i in msg.id] if isinstance(msg.id, (list, tuple)) else [str(msg.id)]
        want = set().union(*(placeholders(i) for i in ids))
        for s in strings:
            if placeholders(s) - want:
                found.append(f"{lang}: placeholders {sorted(placeholders(s) - want)} not in the English: {name!r}")
    return found


def update(template: Catalog) -> None:
    LOCALE_DIR.mkdir(parents=True, exist_ok=True)
    with (LOCALE_DIR / f"{DOMAIN}.pot").open("wb") as fh:
        write_po(fh, template, width=100, omit_header=False, sort_output=False)
    for lang in TRANSLATED:
        path = po_path(lang)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            catalog = read(lang)
        else:
            catalog = Catalog(locale=lang, domain=DOMAIN, project="bynet-probe", charset="utf-8")
        catalog.update(template, no_fuzzy_matching=False)
        catalog.fuzzy = False  # the header: its Plural-Forms must reach the .mo
        catalog.language_team = {"be": "Belarusian", "ru": "Russian"}[lang]
        catalog.last_translator = "bynet-probe maintainers"
        with path.open("wb") as fh:
            write_po(fh, catalog, width=100, ignore_obsolete=True)
        compile_mo(lang)


def compile_mo(lang: str) -> None:
    catalog = read(lang)
    with po_path(lang).with_suffix(".mo").open("wb") as fh:
        write_mo(fh, catalog, use_fuzzy=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report what is missing")
    ap.add_argument("--compile", action="store_true", help="only compile the .po files into .mo")
    args = ap.parse_args()
    template = extract()
    if args.compile:
        for lang in TRANSLATED:
            compile_mo(lang)
        return 0
    if not args.check:
        update(template)
    found = [p for lang in TRANSLATED for p in problems(template, lang)]
    for p in found:
        print(p)
    print(f"{len(template) - 1} messages; {len(found)} problems", file=sys.stderr)
    return 1 if found and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
