"""Pages decoded as browsers decode them (HTML encoding sniffing), titles with entities."""

from __future__ import annotations

import pytest

from probe.core.pagetext import content_type_of, decode_html, extract_title

CYR = "Хартыя'97"


@pytest.mark.parametrize("body,content_type,title", [
    # declared only in <meta> (http-equiv or charset)
    (f'<meta http-equiv="Content-Type" content="text/html; charset=windows-1251"><title>{CYR}</title>'.encode("cp1251"),
     "text/html", CYR),
    (f'<meta charset="windows-1251"><title>{CYR}</title>'.encode("cp1251"), None, CYR),
    # the HTTP header wins over <meta>
    (f'<meta charset="windows-1251"><title>{CYR}</title>'.encode("koi8-r"), "text/html; charset=koi8-r", CYR),
    # the byte-order mark wins over the header
    ("\ufeff<title>Навіны</title>".encode("utf-8"), "text/html; charset=windows-1251", "Навіны"),
    # browsers read latin-1 as windows-1252
    (b"<title>\x93quoted\x94</title>", "text/html; charset=iso-8859-1", "\u201cquoted\u201d"),
    # entities resolved, whitespace folded, attributes on <title> allowed
    (b'<title lang="en">A &amp; B &#8212;\n  C &lt;x&gt;</title>', "text/html; charset=utf-8", "A & B \u2014 C <x>"),
    # an encoding Python does not know: UTF-8 with replacement, never an exception
    (b"<title>caf\xc3\xa9</title>", "text/html; charset=x-no-such-charset", "caf\u00e9"),
    (b"<html>no title</html>", None, None),
])
def test_titles(body, content_type, title):
    assert extract_title(body, content_type) == title


def test_decode_is_total():
    assert decode_html(b"", None) == ""
    assert "\ufffd" in decode_html(b"abc \xff\xc3\x28", "text/html; charset=utf-8")
    assert decode_html("\ufeffabc".encode("utf-16-le"), None) == "abc"  # a BOM decides
    assert content_type_of([["Server", "x"], ["content-type", "text/html; charset=cp1251"]]) == "text/html; charset=cp1251"
    assert content_type_of([]) is None
