"""The report's systems table (``lmtune.report.systems``): aggregate numbers with their intervals in the cell,
and latencies with the machine load they were measured under."""

from __future__ import annotations

import json
import re

from report_runs import REAL_SYSTEMS, make_realistic_run, write_file
from report_runs import section as _section

from lmtune.report.page import write_report


def html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def test_systems_table_keeps_to_the_aggregate_numbers_with_intervals_in_the_cell(tmp_path):
    page = write_report(make_realistic_run(tmp_path)).read_text(encoding="utf-8")
    table = _section(page, "Systems side by side")
    header = table[table.index("<thead>"):table.index("</thead>")]
    # Per-class numbers have their own table; micro averages equal accuracy for one label per example.
    assert "precision[" not in header and "_micro" not in header
    assert header.count("<th") <= 9
    assert re.search(r"0\.\d+<br><small[^>]*>\[0\.\d+[–-]0\.\d+\]</small>", table)  # value with its 95% CI
    for system in REAL_SYSTEMS:
        assert html_escape(system) in table


def test_latency_is_shown_with_the_machine_load_it_was_measured_under(tmp_path):
    run = make_realistic_run(tmp_path)
    page = write_report(run).read_text(encoding="utf-8")
    assert "measured at load average 1.32 (1 min) on 2 CPUs" in _section(page, "Systems side by side")


def test_latency_of_a_run_from_before_the_load_was_recorded_says_so(tmp_path):
    run = make_realistic_run(tmp_path)
    body = json.loads((run / "eval.json").read_text())
    for result in body["results"].values():  # a run from before the load was recorded
        del result["measured_at"]
    write_file(run / "eval.json", json.dumps(body))
    page = write_report(run).read_text(encoding="utf-8")
    assert "machine load was not recorded" in _section(page, "Systems side by side")
