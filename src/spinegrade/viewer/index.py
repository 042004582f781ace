"""index.html: every study with its highest severe probability, its loss where labelled, its problems and
its notes (how its series were acquired)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from spinegrade.viewer.html import document
from spinegrade.viewer.page import PageSummary

_SHOWN_PROBLEMS = 3


def index_page(
    pages: Sequence[PageSummary], failed: dict[int, str], *, title: str = "spinegrade studies"
) -> str:
    """The index: one row per study (worst loss first where labelled, else highest severe probability),
    sortable by any column; studies whose page could not be written are listed with the reason."""
    labelled = any(p.loss is not None for p in pages)

    def rank(p: PageSummary) -> float:
        if labelled:
            return -1.0 if p.loss is None else p.loss
        return p.max_severe

    order = sorted(pages, key=rank, reverse=True)
    head = ["Study", "Highest severe probability", "Target", "Targets with priors"]
    head += ["Weighted log loss"] if labelled else []
    head += ["Problems", "Notes"]
    rows = []
    for p in order:
        cells = [
            f'<td data-value="{p.study_id}"><a href="{escape(p.page)}">{p.study_id}</a></td>',
            f'<td class="num">{p.max_severe:.3f}</td>',
            f"<td>{escape(p.max_severe_target)}</td>",
            f'<td class="num">{p.n_prior}</td>',
        ]
        if labelled:
            cells.append(
                f'<td class="num">{p.loss:.3f}</td>' if p.loss is not None else '<td data-value="-1">n/a</td>'
            )
        cells.append(f'<td data-value="{len(p.problems)}" class="why">{_listed(p.problems)}</td>')
        cells.append(f'<td data-value="{len(p.notes)}" class="why dim">{_listed(p.notes)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    for study_id, reason in failed.items():
        cells = [f'<td data-value="{study_id}">{study_id}</td>', '<td data-value="-1">n/a</td>', "<td></td>"]
        cells += ['<td data-value="-1"></td>'] * (2 if labelled else 1)
        cells.append(f'<td class="why" data-value="999">page not written: {escape(reason)}</td><td></td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    body = (
        f"<h1>{escape(title)}</h1>"
        f'<p class="dim">{len(pages)} studies{f", {len(failed)} without a page" if failed else ""}. '
        "Click a column to sort by it; a study id opens its page.</p>"
        f'<table class="sortable"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    return document(title, body, scripts=("index.js",))


def _listed(messages: Sequence[str]) -> str:
    """The first few messages of a cell, then how many more."""
    shown = "".join(f"<div>{escape(m)}</div>" for m in messages[:_SHOWN_PROBLEMS])
    if len(messages) > _SHOWN_PROBLEMS:
        shown += f'<div class="dim">and {len(messages) - _SHOWN_PROBLEMS} more</div>'
    return shown
