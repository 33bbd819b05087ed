"""Target lists: both formats, every kind of bad line, lint levels and the CLI exit codes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from probe.cli.targets import targets_group
from probe.targets.lists import (
    CATEGORY_CODES,
    CITIZENLAB_HEADER,
    LEGACY_CATEGORY_CODES,
    LEGACY_CATEGORY_NAMES,
    Problem,
    Target,
    TargetError,
    filter_targets,
    format_targets,
    lint_targets,
    load_targets,
    parse_url,
)

ROOT = Path(__file__).resolve().parent.parent
BY_CSV = Path(__file__).resolve().parent / "data" / "by.csv"


def cli_runner() -> CliRunner:
    """A runner that keeps stderr apart from stdout, on click 8.1 and on 8.2+."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2 always keeps stderr apart


def write(tmp_path: Path, text: str, name: str = "targets.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def csv_file(tmp_path: Path, *rows: str, name: str = "list.csv") -> Path:
    return write(tmp_path, "\n".join((CITIZENLAB_HEADER, *rows)) + "\n", name)


# --- text format -----------------------------------------------------------------------


def test_text_format_with_category_note_comments_and_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# Belarus media\n"
        "\n"
        "https://charter97.org/ NEWS Opposition news portal\n"
        "   # indented comment\n"
        "https://spring96.org/\tHUMR\tViasna   human rights  # trailing comment\n"
        "https://naviny.by/\n"
        "https://nn.by/ - BBC-style note without category\n"
        "https://kyky.org/ a note in lower case\n"
        "https://example.org/#fragment-is-not-a-comment\n",
    )
    assert load_targets(path) == [
        Target("https://charter97.org/", "NEWS", "Opposition news portal", 3),
        Target("https://spring96.org/", "HUMR", "Viasna human rights", 5),
        Target("https://naviny.by/", None, None, 6),
        Target("https://nn.by/", None, "BBC-style note without category", 7),
        Target("https://kyky.org/", None, "a note in lower case", 8),
        Target("https://example.org/#fragment-is-not-a-comment", None, None, 9),
    ]


def test_empty_and_comment_only_files_give_no_targets(tmp_path: Path) -> None:
    assert load_targets(write(tmp_path, "")) == []
    assert load_targets(write(tmp_path, "# nothing yet\n\n", "b.txt")) == []


def test_crlf_and_bom_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "win.txt"
    path.write_bytes("\ufeffhttps://charter97.org/ NEWS note\r\nhttps://nn.by/\r\n".encode())
    assert [(t.url, t.category, t.note) for t in load_targets(path)] == [
        ("https://charter97.org/", "NEWS", "note"),
        ("https://nn.by/", None, None),
    ]


# --- URL normalisation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("HTTPS://Charter97.ORG", "https://charter97.org/"),
        ("https://charter97.org?x=1", "https://charter97.org/?x=1"),
        ("http://1.2.3.4:8080", "http://1.2.3.4:8080/"),
        ("https://[2001:DB8:0::1]:8443/a", "https://[2001:db8::1]:8443/a"),
        ("https://www.dw.com/ru/беларусь/s-9500", "https://www.dw.com/ru/беларусь/s-9500"),
    ],
)
def test_parse_url_normalises(text: str, expected: str) -> None:
    assert parse_url(text) == expected


def test_idn_host_becomes_punycode(tmp_path: Path) -> None:
    assert parse_url("https://ПРИМЕР.бел/путь") == "https://xn--e1afmkfd.xn--90ais/путь"
    (target,) = load_targets(write(tmp_path, "https://пример.бел NEWS\n"))
    assert target.url == "https://xn--e1afmkfd.xn--90ais/"


# --- bad lines -------------------------------------------------------------------------

BAD_LINES = [
    ("charter97.org/ NEWS", "no scheme", "https://charter97.org/"),
    ("ftp://example.org/", "unsupported scheme 'ftp' (only http and https)", None),
    ("https:///path", "no host", None),
    ("https://example.org:0/", "invalid port '0'", None),
    ("https://example.org:70000/", "invalid port '70000'", None),
    ("https://example.org:http/", "invalid port 'http'", None),
    ("https://300.1.1.1/", "invalid IPv4 address", None),
    ("https://[2001:db8::zz]/", "invalid IPv6 address", None),
    ("https://2001:db8::1/", "must be in [brackets]", None),
    ("https://exa_mple.org/", "invalid label 'exa_mple'", None),
    ("https://-example.org/", "invalid label '-example'", None),
    ("https://" + "a" * 64 + ".org/", "invalid label", None),
    ("https://example..org/", "empty label", None),
    ("https://xn--zz.org/", "invalid punycode label", None),
    ("https://user:pw@example.org/", "user name or password", None),
    ("https://example.org/a\x07b", "control character U+0007", None),
    ("https://example.org/ NWES typo", "unknown category code 'NWES'", None),
]


@pytest.mark.parametrize("line, reason, hint", BAD_LINES)
def test_each_bad_line_is_a_one_line_error_naming_file_and_line(
    tmp_path: Path, line: str, reason: str, hint: str | None
) -> None:
    path = write(tmp_path, f"# header\nhttps://nn.by/\n{line}\n")
    with pytest.raises(TargetError) as info:
        load_targets(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert reason in message
    assert "\n" not in message
    if hint:
        assert hint in message


def test_whitespace_inside_a_csv_url_is_an_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "https://exa mple.org/,NEWS,News Media,2025-01-01,me,")
    with pytest.raises(TargetError, match=r"list\.csv:2: whitespace U\+0020 in URL"):
        load_targets(path)


def test_missing_file_and_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(TargetError) as info:
        load_targets(tmp_path / "nope.txt")
    assert str(info.value) == f"{tmp_path / 'nope.txt'}: no such file"

    path = tmp_path / "latin1.txt"
    path.write_bytes(b"https://nn.by/\nhttps://example.org/ - caf\xe9\n")
    with pytest.raises(TargetError) as info:
        load_targets(path)
    assert str(info.value).startswith(f"{path}:2: not UTF-8 (byte 0xe9)")
    assert "\n" not in str(info.value)


def test_skip_invalid_warns_and_continues(tmp_path: Path) -> None:
    path = write(tmp_path, "https://nn.by/\nftp://x.org/\nexample.org\nhttps://naviny.by/\n")
    warnings: list[str] = []
    targets = load_targets(path, skip_invalid=True, warn=warnings.append)
    assert [t.url for t in targets] == ["https://nn.by/", "https://naviny.by/"]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{path}:2: unsupported scheme 'ftp'")
    assert warnings[1].startswith(f"{path}:3: no scheme")
    assert all("skipped" in w and "\n" not in w for w in warnings)


def test_duplicates_kept_once_first_wins_with_a_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "https://charter97.org/ NEWS first\nhttps://nn.by/\nHTTPS://CHARTER97.ORG POLR second\n",
    )
    warnings: list[str] = []
    targets = load_targets(path, warn=warnings.append)
    assert targets == [
        Target("https://charter97.org/", "NEWS", "first", 1),
        Target("https://nn.by/", None, None, 2),
    ]
    assert warnings == [f"{path}:3: duplicate of line 1 (https://charter97.org/), ignored"]


# --- categories ------------------------------------------------------------------------


def test_category_legends_are_consistent() -> None:
    assert len(CATEGORY_CODES) == 31
    assert CATEGORY_CODES["NEWS"] == "News Media"
    # every legacy code has a current replacement, so old lists still load
    assert set(LEGACY_CATEGORY_NAMES) <= set(CATEGORY_CODES) | set(LEGACY_CATEGORY_CODES)
    assert set(LEGACY_CATEGORY_CODES.values()) <= set(CATEGORY_CODES)


def test_legacy_category_codes_are_mapped(tmp_path: Path) -> None:
    text_list = write(tmp_path, "https://nn.by/ FEXP\nhttps://spring96.org/ MINR\n")
    assert [t.category for t in load_targets(text_list)] == ["NEWS", "HUMR"]
    legacy_csv = csv_file(
        tmp_path,
        "https://euroradio.fm/,FEXP,Freedom of expression and media freedom,2015-04-14,x,",
        "https://udf.by/,POLT,Political transformation,2015-04-14,x,",
    )
    assert [t.category for t in load_targets(legacy_csv)] == ["NEWS", "POLR"]


def test_exclude_filter_is_case_insensitive() -> None:
    targets = [
        Target("https://a.org/", "NEWS", None, 1),
        Target("https://b.org/", "PORN", None, 2),
        Target("https://c.org/", None, None, 3),
    ]
    assert [t.url for t in filter_targets(targets, ["porn"])] == ["https://a.org/", "https://c.org/"]
    assert [t.url for t in filter_targets(targets, ["fexp", "Porn"])] == ["https://c.org/"]
    assert filter_targets(targets, []) == targets
    assert [t.url for t in filter_targets(targets, (), include_categories=["news"])] == ["https://a.org/"]
    with pytest.raises(ValueError, match="unknown category code 'NOPE'"):
        filter_targets(targets, ["NOPE"])


# --- Citizen Lab CSV -------------------------------------------------------------------


def test_real_by_csv_is_detected_and_parsed(tmp_path: Path) -> None:
    # a renamed copy: detection is by header, not by extension
    path = tmp_path / "by-list.txt"
    shutil.copy(BY_CSV, path)
    warnings: list[str] = []
    targets = load_targets(path, warn=warnings.append)
    assert warnings == []
    assert len(targets) == 465
    by_url = {t.url: t for t in targets}
    charter = by_url["https://charter97.org/"]
    assert charter.category == "NEWS"
    assert charter.note == "Opposition news portal covering Belarusian politics and human rights."
    assert by_url["https://naviny.by/"].note == "monitor"
    assert by_url["https://nashaniva.com/"].note is None
    assert "https://belapan.by/" not in by_url
    with BY_CSV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [t.category for t in targets] == [r["category_code"] for r in rows]
    assert targets[0].line == 2 and targets[-1].line == 466


def test_csv_multiline_note_is_one_line_and_line_numbers_follow_the_file(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        'https://nn.by/,NEWS,News Media,2025-01-01,me,"two\nlines"',
        "https://naviny.by/,NEWS,News Media,2025-01-01,me,",
    )
    assert load_targets(path) == [
        Target("https://nn.by/", "NEWS", "two lines", 2),
        Target("https://naviny.by/", "NEWS", None, 4),
    ]


def test_csv_with_wrong_columns_or_header(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "https://nn.by/,NEWS,News Media")
    with pytest.raises(TargetError, match=r"list\.csv:2: expected 6 columns"):
        load_targets(path)
    bad_header = write(tmp_path, "url,category_code\nhttps://nn.by/,NEWS\n", "h.csv")
    with pytest.raises(TargetError, match=r"h\.csv:1: CSV header must be exactly"):
        load_targets(bad_header)


# --- lint ------------------------------------------------------------------------------


def test_lint_reports_errors_and_warnings_by_line(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        "https://nn.by/,NEWS,News Media,2025-01-01,me,ok",
        "https://naviny.by,NEWS,News Media,2025-01-01,me,no path",
        "https://charter97.org/,NEWS,News,2025-01-01,me,wrong description",
        "https://euroradio.fm/,NEWS,News Media,01/02/2025,me,bad date",
        "ftp://x.org/,NEWS,News Media,2025-01-01,me,bad scheme",
        "https://nn.by/,NEWS,News Media,2025-01-01,me,duplicate",
        "https://udf.by/,XXXX,Nothing,2025-01-01,me,unknown category",
        "https://belsat.eu/,FEXP,Freedom of expression and media freedom,2025-01-01,me,legacy",
    )
    problems = lint_targets(path)
    assert all(isinstance(p, Problem) for p in problems)
    found = [(p.line, p.level, p.message.split(" ")[0]) for p in problems]
    assert found == [
        (3, "warning", "URL"),
        (4, "warning", "category_description"),
        (5, "warning", "date_added"),
        (6, "error", "unsupported"),
        (7, "warning", "duplicate"),
        (8, "error", "unknown"),
        (9, "warning", "legacy"),
    ]
    assert str(problems[0]) == (
        f"{path}:3: warning: URL has no path: write 'https://naviny.by/' "
        "(Citizen Lab lint requires '/')"
    )


def test_lint_never_raises_for_bad_content(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe junk\n")
    (problem,) = lint_targets(path)
    assert (problem.line, problem.level) == (1, "error")


def test_format_targets_reads_back_the_same(tmp_path: Path) -> None:
    targets = [
        Target("https://a.org/", "NEWS", "PR #1114 reverted", 1),
        Target("https://b.org/", None, "USA based outlet", 2),
        Target("https://c.org/", "HUMR", None, 3),
        Target("https://d.org/", None, None, 4),
    ]
    path = write(tmp_path, format_targets(targets, header=["made by a test"]))
    back = load_targets(path)
    assert [(t.url, t.category) for t in back] == [(t.url, t.category) for t in targets]
    assert back[0].note == "PR \uff031114 reverted"  # "#" would start a comment
    assert [t.note for t in back[1:]] == ["USA based outlet", None, None]


# --- CLI -------------------------------------------------------------------------------


def test_cli_lint_exit_codes(tmp_path: Path) -> None:
    runner = cli_runner()
    clean = write(tmp_path, "https://nn.by/ NEWS\n", "clean.txt")
    result = runner.invoke(targets_group, ["lint", str(clean)])
    assert (result.exit_code, result.stdout) == (0, "1 target, 0 errors, 0 warnings\n")

    warned = write(tmp_path, "https://nn.by NEWS\nhttps://nn.by/\n", "warned.txt")
    result = runner.invoke(targets_group, ["lint", str(warned)])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "1 target, 0 errors, 2 warnings"

    broken = write(tmp_path, "https://nn.by/\nftp://x.org/\n", "broken.txt")
    result = runner.invoke(targets_group, ["lint", str(broken)])
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        f"{broken}:2: error: unsupported scheme 'ftp' (only http and https)",
        "1 target, 1 error, 0 warnings",
    ]


def test_cli_lint_missing_file_is_one_line(tmp_path: Path) -> None:
    runner = cli_runner()
    result = runner.invoke(targets_group, ["lint", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {tmp_path / 'nope.txt'}: no such file\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_import_converts_citizenlab_csv(tmp_path: Path) -> None:
    runner = cli_runner()
    out = tmp_path / "by.txt"
    args = ["import", str(BY_CSV), "-o", str(out), "--category", "news", "--category", "HUMR"]
    result = runner.invoke(targets_group, args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"wrote 155 targets to {out}\n"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Converted by `probe targets import` from by.csv")
    assert "https://charter97.org/ NEWS Opposition news portal" in text
    targets = load_targets(out)
    assert len(targets) == 155
    assert {t.category for t in targets} == {"NEWS", "HUMR"}
    assert lint_targets(out) == []

    to_stdout = runner.invoke(targets_group, ["import", str(BY_CSV), "--category", "IGO"])
    assert to_stdout.exit_code == 0
    assert len(load_targets(write(tmp_path, to_stdout.stdout, "igo.txt"))) == 3


def test_cli_import_refuses_non_csv_and_unknown_category(tmp_path: Path) -> None:
    runner = cli_runner()
    text_list = write(tmp_path, "https://nn.by/\n")
    result = runner.invoke(targets_group, ["import", str(text_list)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {text_list}:1: not a Citizen Lab CSV")
    result = runner.invoke(targets_group, ["import", str(BY_CSV), "--category", "NOPE"])
    assert result.exit_code == 2
    assert result.stderr == "error: unknown category code 'NOPE' (see probe/targets/data/category_codes.csv)\n"


# --- the shipped list ------------------------------------------------------------------


def test_shipped_targets_txt_lints_clean_and_has_the_key_outlets() -> None:
    path = ROOT / "targets.txt"
    assert [p for p in lint_targets(path) if p.level == "error"] == []
    assert lint_targets(path) == []
    urls = {t.url: t for t in load_targets(path, warn=pytest.fail)}
    assert urls["https://charter97.org/"].category == "NEWS"
    assert urls["https://belapan.by/"].category == "NEWS"
    with BY_CSV.open(encoding="utf-8", newline="") as f:
        wanted = {parse_url(r["url"]) for r in csv.DictReader(f) if r["category_code"] in ("NEWS", "HUMR")}
    assert wanted <= set(urls)
