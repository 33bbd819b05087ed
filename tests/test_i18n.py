"""Belarusian, Russian and English: every message a volunteer can read exists, translated,
in every catalogue; the language comes from --lang, the config file or the locale; and
researchers' output does not change with it."""

from __future__ import annotations

import gettext
import importlib.util
import json
from pathlib import Path

import pytest
from clirun import QUIET, ROOT, probe, rows
from servers import NXDOMAIN, DnsServer

from probe.core import i18n

pytest.importorskip("babel", reason="the catalogue checks need Babel (pip install -e '.[test]')")


def _i18n_script():
    spec = importlib.util.spec_from_file_location("i18n_script", ROOT / "scripts" / "i18n.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _i18n_script()


@pytest.fixture(scope="module")
def template():
    return script.extract()


def test_the_code_has_messages_to_translate(template):
    ids = [m.id for m in template if m.id]
    assert len(ids) >= 200
    assert "Before your first measurement, please read this." in ids  # the consent notice


@pytest.mark.parametrize("lang", script.TRANSLATED)
def test_every_message_is_translated_in_every_catalogue(template, lang):
    """Missing, untranslated or fuzzy messages, and placeholders the English lacks, are
    listed by `python scripts/i18n.py --check`."""
    problems = script.problems(template, lang)
    assert problems == [], f"{len(problems)} problems, first: {problems[:10]}"


@pytest.mark.parametrize("lang", script.TRANSLATED)
def test_the_compiled_catalogue_is_the_one_in_the_po_file(lang):
    """The .mo the probe reads says what the .po (the translators' file) says."""
    po = script.read(lang)
    with (script.po_path(lang).with_suffix(".mo")).open("rb") as fh:
        mo = gettext.GNUTranslations(fh)
    for message in po:
        if not message.id or message.fuzzy:
            continue
        if isinstance(message.id, (list, tuple)):
            for n, form in ((1, 0), (3, 1), (5, 2)):
                assert mo.ngettext(message.id[0], message.id[1], n) == message.string[form], message.id[0]
        else:
            assert mo.gettext(message.id) == message.string, message.id


def test_plural_forms_follow_each_language():
    try:
        i18n.set_language("ru")
        words = [i18n.ngettext("{n} site", "{n} sites", n) for n in (1, 2, 5, 21)]
        assert i18n.language() == "ru"
        i18n.set_language("be")
        be_words = [i18n.ngettext("{n} site", "{n} sites", n) for n in (1, 2, 5, 21)]
    finally:
        i18n.set_language("en")
    assert words[0] == words[3] and words[0] != words[1] != words[2]
    assert be_words[0] == be_words[3] and be_words[0] != be_words[1] != be_words[2]
    assert i18n.ngettext("{n} site", "{n} sites", 2) == "{n} sites"


@pytest.mark.parametrize("env, expected", [
    ({"LANGUAGE": "be_BY:ru"}, "be"),
    ({"LANGUAGE": "", "LC_ALL": "ru_RU.UTF-8"}, "ru"),
    ({"LANG": "be_BY.UTF-8"}, "be"),
    ({"LC_ALL": "C.UTF-8", "LANG": "ru_RU.UTF-8"}, "en"),
    ({"LANGUAGE": "de:ru"}, "ru"),
    ({"LANG": "de_DE.UTF-8"}, "en"),
    ({}, None),
])
def test_the_locale_chooses_the_language(env, expected):
    assert i18n.from_environment(env) == expected


async def test_lang_flag_config_and_locale_choose_what_the_volunteer_reads(tmp_path):
    english = (await probe("notice", env={"LANGUAGE": "en"}))[1]
    belarusian = (await probe("notice", env={"LANGUAGE": "be"}))[1]
    russian = (await probe("notice", "--lang", "ru", env={"LANGUAGE": "be"}))[1]  # the flag wins
    assert english.startswith("Before your first measurement")
    assert belarusian != english and russian != english and belarusian != russian
    assert any(c in belarusian for c in "іўІЎ")  # letters Russian does not have
    assert "ы" in russian and "і" not in russian
    config = tmp_path / "config.ini"
    rc, _, err = await probe("config", "set", "lang", "be", env={"BYNET_PROBE_CONFIG": str(config)})
    assert rc == 0, err
    from_config = (await probe("notice", env={"BYNET_PROBE_CONFIG": str(config), "LANGUAGE": "ru"}))[1]
    assert from_config.splitlines()[0] == belarusian.splitlines()[0]  # the volunteer's setting over the locale
    rc, _, err = await probe("notice", "--lang", "de")
    assert rc == 2 and "be, ru or en" in err


async def test_errors_progress_and_summary_are_translated_but_json_is_not(tmp_path):
    rc, _, err = await probe("show", "--db", str(tmp_path / "none.db"), "--lang", "ru")
    assert rc == 2 and err.count("\n") == 1 and "none.db" in err and "no such database" not in err
    targets = tmp_path / "t.txt"
    targets.write_text("https://gone.lab.test/\n")
    async with DnsServer({"gone.lab.test": NXDOMAIN}) as dns:
        args = ("run", "--targets", str(targets), "--resolver", dns.address, *QUIET)
        rc, _, be_err = await probe(*args, "--db", str(tmp_path / "be.db"), "--lang", "be")
        assert rc == 0, be_err
        assert "Гэты запуск праверыць 1 сайт" in be_err and "This run measures" not in be_err
        assert "verdicts:" not in be_err  # the summary too
        rc, be_json, err = await probe(*args, "--db", str(tmp_path / "be2.db"), "--lang", "be", "--json")
        rc2, en_json, err2 = await probe(*args, "--db", str(tmp_path / "en.db"), "--lang", "en", "--json")
    assert rc == rc2 == 0, err + err2
    be_events = [json.loads(line) for line in be_json.splitlines()]
    en_events = [json.loads(line) for line in en_json.splitlines()]
    assert [sorted(e) for e in be_events] == [sorted(e) for e in en_events]  # the same keys
    verdicts = [e for e in be_events if e["event"] == "verdicts"]
    assert verdicts[0]["cant_tell"] == {"dns.nxdomain": 1}  # codes stay codes
    # what is kept with the run for researchers is English too
    (notes,) = rows(tmp_path / "be.db", "select notes from runs")[0]
    assert "network unknown (give --cc and --asn to label this run)" in json.loads(notes)
    # reports for researchers are the same bytes in every language
    rc, be_csv, _ = await probe("report", "--db", str(tmp_path / "be.db"), "--format", "csv", "--lang", "be")
    rc2, en_csv, _ = await probe("report", "--db", str(tmp_path / "be.db"), "--format", "csv", "--lang", "en")
    assert rc == rc2 == 0 and be_csv == en_csv and "dns.nxdomain" in en_csv


def test_volunteer_guides_exist_in_three_languages():
    docs = ROOT / "docs"
    for lang in ("en", "be", "ru"):
        text = (docs / f"volunteers.{lang}.md").read_text(encoding="utf-8")
        assert "probe run" in text and "probe schedule install" in text and "--lang" in text
        assert len(text) > 1500
    assert (docs / "volunteers.be.md").read_text() != (docs / "volunteers.ru.md").read_text()


def test_catalogues_are_installed_with_the_package():
    for lang in script.TRANSLATED:
        assert (Path(i18n.LOCALE_DIR) / lang / "LC_MESSAGES" / "probe.mo").is_file()


def test_no_function_hides_the_translation_function():
    """`for _, x in ...` or `a, *_ = ...` inside a function that also calls `_()` makes
    `_` a local there: the message then fails at run time with "'list' object is not
    callable", in exactly the error paths tests reach least. None may do both."""
    import ast

    found = []
    for path in (ROOT / "probe").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            names = [n for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == "_"]
            stores = any(isinstance(n.ctx, ast.Store) for n in names)
            calls = any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == "_"
                        for c in ast.walk(fn))
            if stores and calls:
                found.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}")
    assert found == []


def test_no_message_hides_inside_an_f_string():
    """Babel cannot see `_("...")` inside an f-string's braces (on Python 3.11 an
    f-string is one token): such a message is never extracted, so never translated."""
    import ast

    found = []
    for path in (ROOT / "probe").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                for call in ast.walk(node):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                            and call.func.id in ("_", "ngettext")):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
