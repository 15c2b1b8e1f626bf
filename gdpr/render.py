"""The register for the DPO: one document model, rendered to Markdown or HTML.

``document`` turns the register into headings, paragraphs, lists and tables in the
order of Art. 30(1); ``to_markdown`` and ``to_html`` only lay them out, so both
formats always say the same thing. The output is deterministic (no date of
rendering): the rendered files in ``docs/gdpr/`` are checked to be current.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from gdpr.model import PLACEHOLDER, FieldEntry, Register, Retention, Store
from jobs.contract import CONTRACT

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = Heading | Paragraph | Bullets | Table


def time_limit(item: Retention, exact: bool = True) -> str:
    """'3 years (94608000 s)', '7 days (604800000 ms)', or 'no fixed time limit'."""
    seconds = item.seconds
    if seconds is None:
        return "no fixed time limit"
    days = seconds / SECONDS_PER_DAY
    if days >= 365 and days % 365 == 0:
        human = _plural(int(days // 365), "year")
    elif days >= 1 and days == int(days):
        human = _plural(int(days), "day")
    elif seconds % 3600 == 0:
        human = _plural(int(seconds // 3600), "hour")
    else:
        human = _plural(int(seconds), "second")
    return f"{human} ({item.value} {item.unit})" if exact else human


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _field_retention(register: Register, entry: FieldEntry) -> str:
    stores, retention = register.store_by_id(), register.retention_by_id()
    parts = []
    for store_id in entry.stored_in:
        store = stores[store_id]
        parts.append(f"{store.name}: {time_limit(retention[store.retention], exact=False)}")
    return "; ".join(parts) or "never stored"


def _columns(entry: FieldEntry) -> str:
    return ", ".join(f"{column.column} ({column.as_})" for column in entry.columns) or "-"


def _controller_section(register: Register) -> list[Block]:
    controller, dpo = register.controller, register.dpo
    return [
        Heading(2, "1. Controller and data protection officer - Art. 30(1)(a)"),
        Table(
            ("Role", "Name", "Contact"),
            (
                (
                    "Controller",
                    controller.name,
                    f"{controller.address}; {controller.email}; {controller.phone}",
                ),
                ("Joint controllers", register.joint_controllers, ""),
                ("Representative (Art. 27)", register.representative, ""),
                ("Data protection officer", dpo.name, f"{dpo.email}; {dpo.phone}"),
            ),
        ),
        Heading(3, "The processing"),
        Table(
            ("Item", "Description"),
            (
                ("Name", register.processing.name),
                ("Description", register.processing.description),
                ("Source of the data", register.processing.source),
                ("Location of the hosts", register.processing.hosts_location),
                ("Automated decisions", register.processing.automated_decisions),
            ),
        ),
    ]


def _purposes_section(register: Register) -> list[Block]:
    return [
        Heading(2, "2. Purposes and lawful basis - Art. 30(1)(b), Art. 6"),
        Table(
            ("Purpose", "Lawful basis", "Note"),
            tuple((p.purpose, p.lawful_basis, p.note or "") for p in register.purposes),
        ),
    ]


def _categories_section(register: Register) -> list[Block]:
    retention = register.retention_by_id()
    return [
        Heading(2, "3. Data subjects and personal data - Art. 30(1)(c)"),
        Heading(3, "Categories of data subjects"),
        Bullets(tuple(register.data_subjects)),
        Paragraph(f"Special categories (Art. 9): {register.special_categories}"),
        Heading(3, "Categories of personal data"),
        Table(
            ("Category", "Time limit for erasure", "Note"),
            tuple(
                (c.name, f"{retention[c.retention].what}: {time_limit(retention[c.retention])}", c.note or "")
                for c in register.data_categories
            ),
        ),
    ]


def _recipients_section(register: Register) -> list[Block]:
    transfers = register.third_country_transfers
    return [
        Heading(2, "4. Recipients - Art. 30(1)(d)"),
        Table(
            ("Recipient", "Kind", "Receives"),
            tuple((r.name, r.kind, r.receives) for r in register.recipients),
        ),
        Heading(2, "5. Transfers to third countries - Art. 30(1)(e)"),
        Paragraph(transfers.summary),
        Paragraph(transfers.details),
    ]


def _retention_section(register: Register) -> list[Block]:
    rows = []
    for item in register.retention:
        setting = f"{item.source.variable} in {item.source.file}" if item.source else "-"
        rows.append((item.what, time_limit(item), item.enforced_by, setting, item.why))
    return [
        Heading(2, "6. Time limits for erasure - Art. 30(1)(f)"),
        Table(("What", "Time limit", "Enforced by", "Set by", "Why"), tuple(rows)),
    ]


def _security_section(register: Register) -> list[Block]:
    in_place = [m for m in register.security_measures if m.status == "in_place"]
    gaps = [m for m in register.security_measures if m.status == "gap"]
    return [
        Heading(2, "7. Technical and organisational security measures - Art. 30(1)(g), Art. 32"),
        Heading(3, "In place"),
        Table(
            ("Measure", "Description", "Implemented in"),
            tuple(
                (m.title, m.description, ", ".join(sorted({e.file for e in m.evidence}))) for m in in_place
            ),
        ),
        Heading(3, "Not in place yet"),
        Table(("Measure", "Risk", "Remedy"), tuple((m.title, m.description, m.remedy or "") for m in gaps)),
    ]


def _fields_section(register: Register) -> list[Block]:
    categories = register.category_by_id()
    rows = []
    for entry in register.fields:
        for path in entry.fields:
            rows.append(
                (
                    path,
                    categories[entry.category].name,
                    entry.treatment,
                    _columns(entry),
                    ", ".join(entry.aggregated_in) or "-",
                    _field_retention(register, entry),
                    entry.why,
                )
            )
    return [
        Heading(2, "8. Every field of the profile record"),
        Paragraph(
            "Treatment: kept (stored as received, normalised), generalised (a coarse value), "
            "encrypted (AES-256-GCM), derived (computed from the field), dropped (never "
            "stored by the job). Every field is in the raw message of the Kafka topic until "
            "its time limit, whatever its treatment."
        ),
        Table(
            (
                "Field",
                "Category",
                "Treatment",
                "Cassandra columns",
                "Counted in",
                "Where and how long",
                "Why",
            ),
            tuple(rows),
        ),
        Heading(3, "Stored columns that come from no field"),
        Table(("Column", "Why"), tuple((n.column or "", n.why) for n in register.bookkeeping_columns)),
        Heading(3, "Other MongoDB collections"),
        Table(("Collection", "Why"), tuple((n.collection or "", n.why) for n in register.other_collections)),
    ]


def _contract_section(register: Register) -> list[Block]:
    """From ``jobs.contract``, the declaration the job enforces: the register cannot drift."""
    return [
        Heading(3, "The input contract: what a message must be to be processed"),
        Paragraph(
            "Checked on every message's bytes before anything is stored or counted (the "
            "declaration in jobs/contract.py, enforced in the JVM). The message must be valid "
            "UTF-8 and one JSON object, with no duplicate keys and nothing after it. Text has no "
            "control characters; null and empty text count as absent. A message that breaks a "
            "rule goes to the dead-letter topic with the field and the rule, never the value, "
            "as its reason; so does a row a store refuses."
        ),
        Table(("Field", "Rule"), tuple((rule.field, rule.describe()) for rule in CONTRACT)),
    ]


def _stores_section(register: Register) -> list[Block]:
    retention = register.retention_by_id()
    return [
        Heading(2, "9. Where the data is"),
        Table(
            ("Store", "Holds", "Readable by", "Time limit"),
            tuple(
                (s.name, s.holds, _topic_readers(s), time_limit(retention[s.retention]))
                for s in register.stores
            ),
        ),
    ]


def _topic_readers(store: Store) -> str:
    if store.topic is None:
        return "as described under Holds"
    return ", ".join([*store.readers, "the Kafka super users (admin)"])


def _rights_section(register: Register) -> list[Block]:
    retention = register.retention_by_id()
    return [
        Heading(2, "10. Data-subject rights"),
        Table(("Right", "How it is served"), tuple((r.right, r.how) for r in register.subject_rights)),
        Heading(3, "After an erasure"),
        Table(
            ("Copy that remains", "Readable", "Until"),
            tuple(
                (c.copy_, c.readable, f"{retention[c.until].what}: {time_limit(retention[c.until])}")
                for c in register.after_erasure
            ),
        ),
    ]


def document(register: Register) -> list[Block]:
    """The register as blocks, in the order of Art. 30(1)."""
    blocks: list[Block] = [
        Heading(1, register.title),
        Paragraph(f"Version {register.version}; last reviewed {register.last_reviewed}."),
        Paragraph(
            "Generated from gdpr/register.yaml by `bdf-gdpr register render`; do not edit by hand. "
            "`bdf-gdpr register check` verifies it against the code and the deployment defaults."
        ),
    ]
    missing = register.placeholders()
    if missing:
        blocks.append(
            Paragraph(
                f'To complete: {len(missing)} values marked "{PLACEHOLDER} ...>" '
                "are the controller's to give."
            )
        )
    for section in (
        _controller_section,
        _purposes_section,
        _categories_section,
        _recipients_section,
        _retention_section,
        _security_section,
        _fields_section,
        _contract_section,
        _stores_section,
        _rights_section,
    ):
        blocks.extend(section(register))
    return blocks


# --- Markdown --------------------------------------------------------------------------------


def _md_text(text: str) -> str:
    """One line; "<" escaped so that "<FILL IN: ...>" is shown, not taken for an HTML tag."""
    return " ".join(text.split()).replace("<", "\\<")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|") or " "


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {_md_text(block.text)}"
    if isinstance(block, Paragraph):
        return _md_text(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md_text(item)}" for item in block.items)
    lines = [
        "| " + " | ".join(block.headers) + " |",
        "|" + "|".join(" --- " for _ in block.headers) + "|",
        *("| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in block.rows),
    ]
    return "\n".join(lines)


def to_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_md_block(block) for block in blocks) + "\n"


# --- HTML --------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d1d1f; line-height: 1.45; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1.5rem; font-size: 0.92rem; }
th, td { border: 1px solid #c8c8cc; padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f3; }
h2 { border-bottom: 2px solid #d0d0d5; padding-bottom: 0.2rem; margin-top: 2.2rem; }
code { background: #f0f0f3; padding: 0 0.2rem; }
"""


def _html_text(text: str) -> str:
    escaped = html.escape(" ".join(text.split()))
    parts = escaped.split("`")
    return "".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts))


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_html_text(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_html_text(block.text)}</p>"
    if isinstance(block, Bullets):
        items = "".join(f"<li>{_html_text(item)}</li>" for item in block.items)
        return f"<ul>{items}</ul>"
    head = "".join(f"<th>{_html_text(h)}</th>" for h in block.headers)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{_html_text(cell)}</td>" for cell in row) + "</tr>" for row in block.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def to_html(blocks: list[Block]) -> str:
    title = next((b.text for b in blocks if isinstance(b, Heading)), "Register of processing")
    body = "\n".join(_html_block(block) for block in blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


RENDERERS = {"md": to_markdown, "html": to_html}


def render(register: Register, fmt: str) -> str:
    return RENDERERS[fmt](document(register))
