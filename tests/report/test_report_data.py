"""The report's data section (``lmtune.report.data``): sections, sentences and dotted keys, never nested JSON."""

from __future__ import annotations

import re

from report_runs import make_realistic_run
from report_runs import section as _section

from lmtune.report.page import write_report


def test_data_section_reads_as_sections_not_nested_json(tmp_path):
    page = write_report(make_realistic_run(tmp_path)).read_text(encoding="utf-8")
    data = _section(page, "Data")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", data, re.S)
    assert not [c for c in cells if "<table" in c]  # no table inside a table
    assert "<h3>Records per split</h3>" in data and "<h3>Cleaning steps</h3>" in data
    warnings = data[data.index("<h3>Warnings</h3>"):]
    warnings = warnings[:warnings.index("</ul>")]
    assert "3 training records repeated validation/test inputs (1 exactly, 2 nearly)" in warnings
    assert "2 training inputs appear with different labels" in warnings
    assert "7 of 476 train examples were cut to max_length 256" in warnings
    assert "pii.train.EMAIL" in data  # small nested dicts as dotted keys
