"""The one-page audit report of a refresh, as Markdown and JSON files. Pure rendering, no I/O besides writing."""

import json
from pathlib import Path
from typing import Any


def _verdict(passed: bool | None) -> str:
    return {True: "PASSED", False: "FAILED", None: "NOT RUN"}[passed]


def _blank(value: object) -> str:
    return "" if value is None else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# PII audit report: {report['database']}",
        "",
        f"- Verdict: **{_verdict(report['passed'])}**"
        + ("" if report["passed"] else " — this database must not be promoted"),
        f"- Snapshot: `{report['snapshot_id']}`",
        f"- Policy: `{report['policy']}`",
        f"- Generated: {report['generated_at']}",
        "",
        "## Checks",
        "",
        "| check | result | details | seconds |",
        "|---|---|---|---|",
    ]
    for check in report["checks"]:
        details = (check.get("description") or "").replace("|", "\\|")
        lines.append(
            f"| `{check['check']}` | {_verdict(check['passed'])} | {details} | {_blank(check.get('seconds'))} |"
        )
    lines += ["", "## Tables", "", "| table | rules applied | rows | masking | seconds |", "|---|---|---|---|---|"]
    for table in report["tables"]:
        rules = ", ".join(f"{column}: {rule}" for column, rule in table["rules"].items() if rule != "keep") or "kept"
        lines.append(
            f"| {table['table']} | {rules} | {_blank(table.get('rows'))} | {table.get('status') or 'not run'} |"
            f" {_blank(table.get('seconds'))} |"
        )
    if report.get("before_masking"):
        lines += ["", "## Before masking (removed, cut or set aside by the restore)", ""]
        for name, value in report["before_masking"].items():
            lines.append(f"- {name}: `{json.dumps(value, sort_keys=True)}`")
    findings = [c for c in report["checks"] if c.get("findings")]
    if findings:
        lines += ["", "## Findings (counts and row locations only, never values)", ""]
        for check in findings:
            lines.append(f"- `{check['check']}`: `{json.dumps(check['findings'], sort_keys=True)}`")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write `audit_report.md` and `audit_report.json` into `directory`; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / "audit_report.md"
    as_json = directory / "audit_report.json"
    markdown.write_text(render_markdown(report))
    as_json.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    return markdown, as_json
