"""What the human formats (terminal, Markdown, HTML, `probe explain`) say, in the
volunteer's language.

Every sentence and heading a person reads goes through ``_``/``ngettext`` here or in the
renderers, with named placeholders so a translator can reorder them. Verdict codes,
JSON/CSV keys and values stay English: they are researchers' vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

from probe.core.i18n import N_, _, ngettext
from probe.core.verdicts import CANT_TELL
from probe.report.model import NetworkSummary, Report, Row, confidence_level, runs_by_db, short_time

# The words of ``confidence_level``'s keys; marked here, translated where shown.
_LEVELS = {"high": N_("high"), "medium": N_("medium"), "low": N_("low")}

# Column headings of the human tables, by column key (cells.py decides which show).
HEADINGS = {
    "site": N_("site"),
    "network": N_("network"),
    "verdict": N_("verdict"),
    "blocked": N_("blocked"),
    "confidence": N_("confidence"),
    "agree": N_("agree"),
    "since": N_("verdict since (UTC)"),
    "last": N_("last measured (UTC)"),
    "measured": N_("measured (UTC)"),
    "seen": N_("verdicts seen"),
    "evidence": N_("evidence (latest)"),
    "trigger": N_("trigger"),
    "where": N_("where the censor sits"),
}


def heading(key: str) -> str:
    return _(HEADINGS[key])


def cant_tell_word() -> str:
    """CANT_TELL as a person reads it (CSV keeps the English constant)."""
    return _("can't tell")


def blocked_text(blocked: bool | None) -> str:
    """yes / no / can't tell, translated: the human formats' "blocked" column."""
    if blocked is None:
        return cant_tell_word()
    return _("yes") if blocked else _("no")


def level_word(level: str | None) -> str:
    """A ``confidence_level`` key in words: "" when confidence means nothing."""
    if level is None:
        return ""
    if level == CANT_TELL:
        return cant_tell_word()
    return _(_LEVELS[level])


def confidence_text(verdict: str | None, blocked: bool | None, confidence: float | None) -> str:
    """``high (0.95)`` for a table cell; ``can't tell`` without a control; "" for a
    verdict whose confidence means nothing (``error``), so no word suggests otherwise."""
    level = confidence_level(verdict, blocked, confidence)
    if level is None:
        return ""
    if level == CANT_TELL or not isinstance(confidence, (int, float)):
        return level_word(level)
    return _("{level} ({number})").format(level=level_word(level), number=f"{confidence:.2f}")


def entry_confidence(entry: Row) -> str:
    return confidence_text(entry.get("verdict"), entry.get("blocked", False), entry.get("confidence"))


def network_label(network: str, names: Sequence[str]) -> str:
    """``BY/AS6697 (Beltelecom)``: the network as a person recognises it."""
    return network + (f" ({', '.join(names)})" if names else "")


def headline_line(s: NetworkSummary) -> str:
    """``3 of 20 sites look blocked on BY/AS6697 (Beltelecom) (2 with high confidence),
    by method: tls.reset 2, dns.nxdomain 1``: the answer a reader came for, first."""
    network = network_label(s.network, s.names)
    if s.blocked:
        methods = ", ".join(f"{verdict} {count}" for verdict, count in s.methods)
        line = ngettext(
            "{n} of {m} site looks blocked on {network} ({k} with high confidence), by method: {methods}",
            "{n} of {m} sites look blocked on {network} ({k} with high confidence), by method: {methods}",
            s.sites,
        ).format(n=s.blocked, m=s.sites, network=network, k=s.high, methods=methods)
    else:
        line = ngettext("{n} of {m} site looks blocked on {network}", "{n} of {m} sites look blocked on {network}",
                        s.sites).format(n=0, m=s.sites, network=network)
    if s.cant_tell:
        line += "; " + ngettext("{c} more can't tell (no control to compare with)",
                                "{c} more can't tell (no control to compare with)", s.cant_tell).format(c=s.cant_tell)
    return line


def headline_lines(report: Report) -> list[str]:
    """One line per network (one line when there is one network)."""
    return [headline_line(s) for s in report.summaries]


def source_labels(report: Report) -> list[str]:
    """``probe.db (run 1a2b3c4d)``: each database by its file name and the runs it gave."""
    runs = runs_by_db(report.rows)
    out = []
    for name in dict.fromkeys(report.sources):
        ids = runs.get(name, [])
        if not ids:
            out.append(_("{db} (nothing to report)").format(db=name))
        else:
            out.append(ngettext("{db} (run {runs})", "{db} ({count} runs: {runs})", len(ids)).format(
                db=name, count=len(ids), runs=", ".join(ids)))
    return out


def header_items(report: Report) -> list[tuple[str, str]]:
    """The report's particulars, as (label, value): where the data came from and when."""
    sites = len({s["url"] for s in report.sites})
    return [
        (_("databases"), ", ".join(source_labels(report)) or "-"),
        (_("networks"), "; ".join(network_label(n["network"], n["names"]) for n in report.networks) or "-"),
        (_("measured (UTC)"), f"{short_time(report.first_measured)} .. {short_time(report.last_measured)}"),
        (_("classifier version"), ", ".join(report.classifier_versions) or "-"),
        (_("measurements"), ngettext("{n} classified", "{n} classified", len(report.rows)).format(n=len(report.rows))
         + ", " + ngettext("{n} site", "{n} sites", sites).format(n=sites)),
        (_("generated (UTC)"), short_time(report.generated_at)),
    ]
