"""``probe targets ...``: check and convert target lists from the command line.

A thin shell over ``probe.targets.lists`` and ``probe.targets.safety``: parse arguments,
call, print. Exit codes are part of the interface, because maintainers run ``probe targets
lint`` in CI: 0 when the list is usable (warnings alone do not fail, targets that are not
public websites included), 2 when it is not or cannot be read.

``refuse_risky_targets`` is the same rule for ``probe run``: a list with such targets is
measured only with ``--allow-private-targets``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from probe.cli.common import EXIT_BAD_INPUT, fail, say, shown_path
from probe.core.i18n import _, ngettext
from probe.targets import safety
from probe.targets.lists import (
    ERROR,
    WARNING,
    Problem,
    Target,
    TargetCheck,
    TargetError,
    check_targets,
    format_targets,
    import_citizenlab,
    import_header,
)

ALLOW_PRIVATE_HELP = (
    "Also measure targets that are not ordinary public websites: loopback, private, link-local and cloud-metadata "
    "addresses, local-only names (.local, .internal, a name without a dot) and names mixing scripts "
    "(look-alikes). Their pages are stored: for a researcher's own local tests."
)


def refuse_risky_targets(targets: Iterable[Target], lab_networks: Sequence[str], allow: bool, path: Path,
                         *, listing: bool = False) -> None:
    """Stop a run (one line, exit 2) whose list has targets that are not public websites,
    unless ``allow`` (--allow-private-targets); else, or when only ``listing`` them,
    warn about each. Hosts inside ``lab_networks`` stand for the open internet."""
    risky = safety.risky_targets((t.url for t in targets), lab_networks)
    if not risky:
        return
    if not allow and not listing:
        fail(safety.refusal(risky, listed_in=shown_path(path)))
    for line in safety.warnings(risky):
        say(_("warning: {message}").format(message=line), level=-1)
    if not allow:
        say(ngettext("`probe run` measures it only with {flag}", "`probe run` measures them only with {flag}",
                     len(risky)).format(flag=safety.ALLOW_FLAG), level=-1)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group("targets")
def targets_group() -> None:
    """Check and convert lists of URLs to measure."""


def risk_problems(path: str, targets: Sequence[Target], lab_networks: Sequence[str] = ()
                  ) -> list[tuple[Problem, safety.Risk]]:
    """A warning (and its first risk) for every target that is not a public website."""
    lines = {t.url: t.line for t in targets}
    out = []
    for url, risks in safety.risky_targets(lines, lab_networks):
        message = _("{what}; `probe run` measures it only with {flag}").format(
            what=safety.describe(risks), flag=safety.ALLOW_FLAG)
        out.append((Problem(path, lines[url], WARNING, message), risks[0]))
    return out


def _lab_networks(values: tuple[str, ...]) -> list[str]:
    from probe.measure.plan import PlanError, parse_lab_networks

    try:
        return parse_lab_networks(values)
    except PlanError as exc:
        fail(exc)


@targets_group.command("lint")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--lab-network", multiple=True, metavar="CIDR",
              help="A private range (CIDR) that stands for the open internet in a censorship lab: its addresses "
                   "are not warned about; repeatable.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: the errors, the warnings (with a code for targets that are not public "
                   "websites) and their counts.")
def lint_command(file: Path, lab_network: tuple[str, ...], as_json: bool) -> None:
    """Report every problem in FILE (text list or Citizen Lab CSV).

    Prints one line per problem and a summary; exits 2 if there is any error. Targets
    that are not ordinary public websites (this computer, the local network, a cloud
    metadata service, a name mixing scripts) are warnings: `probe run` measures them
    only with --allow-private-targets.
    """
    lab = _lab_networks(lab_network)
    try:
        check = check_targets(file)
    except TargetError as exc:
        if as_json:
            _lint_json(str(file), 0, [Problem(str(file), exc.line or 0, ERROR, exc.reason)], {})
            raise click.exceptions.Exit(EXIT_BAD_INPUT) from None
        fail(exc)
    risky = risk_problems(str(file), check.targets, lab)
    problems = sorted([*check.problems, *(p for p, _risk in risky)], key=lambda p: p.line)
    merged = TargetCheck(check.targets, problems)
    if as_json:
        _lint_json(str(file), len(check.targets), problems, {id(p): r for p, r in risky})
    else:
        for problem in problems:
            click.echo(str(problem))
        summary = merged.summary()
        if risky:
            summary += "; " + ngettext("{n} target is not an ordinary public website",
                                       "{n} targets are not ordinary public websites",
                                       len(risky)).format(n=len(risky))
        click.echo(summary)
    if merged.errors:
        raise click.exceptions.Exit(EXIT_BAD_INPUT)


def _lint_json(path: str, targets: int, problems: list[Problem], risks: dict[int, safety.Risk]) -> None:
    def item(p: Problem) -> dict[str, Any]:
        risk = risks.get(id(p))
        return {"line": p.line or None, "message": p.message, "code": risk.code if risk else None,
                "host": risk.host if risk else None}

    errors = [item(p) for p in problems if p.level == ERROR]
    warnings = [item(p) for p in problems if p.level == WARNING]
    click.echo(json.dumps({
        "file": path,
        "errors": errors,
        "warnings": warnings,
        "counts": {"targets": targets, "errors": len(errors), "warnings": len(warnings), "risky": len(risks)},
    }, ensure_ascii=False, indent=2))


@targets_group.command("import")
@click.argument("csv_file", metavar="CSV", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the list here instead of to standard output.",
)
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="CODE",
    help="Keep only targets of this category code (repeatable; legacy codes accepted).",
)
def import_command(csv_file: Path, output: Path | None, categories: tuple[str, ...]) -> None:
    """Convert a Citizen Lab CSV test list into our text format."""
    try:
        targets = import_citizenlab(csv_file, categories=categories, warn=_warn)
    except ValueError as exc:  # TargetError, or an unknown --category code
        fail(exc)
    text = format_targets(targets, header=import_header(csv_file.name, categories))
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        fail(f"{output}: cannot write ({exc.strerror or exc})")
    click.echo(f"wrote {len(targets)} targets to {output}", err=True)
