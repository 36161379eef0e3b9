"""Budget checks as JUnit XML (``--junit FILE``), so any CI shows each budget as a test.

One ``<testcase>`` per :class:`~mapc.budgets.Check` (a budget, or a budget for one output:
``min_sqnr_db[logits]``), named in file order, with a ``<failure>`` or ``<skipped>`` carrying the
check's detail. No timestamps or durations: the same checks give the same bytes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mapc.budgets import Check


def junit_xml(checks: list[Check], suite: str) -> str:
    """The JUnit XML document for ``checks``, in one ``<testsuite>`` named ``suite``."""
    failures = sum(check.status == "failed" for check in checks)
    skipped = sum(check.status == "skipped" for check in checks)
    root = ET.Element("testsuites", name="mapc budgets", tests=str(len(checks)), failures=str(failures), skipped=str(skipped))
    element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(checks)), failures=str(failures), errors="0", skipped=str(skipped))
    for check in checks:
        case = ET.SubElement(element, "testcase", classname=f"mapc.budgets.{check.budget}", name=check.name)
        if check.status == "failed":
            ET.SubElement(case, "failure", message=check.detail, type="budget").text = check.detail
        elif check.status == "skipped":
            ET.SubElement(case, "skipped", message=check.detail)
        else:
            ET.SubElement(case, "system-out").text = check.detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
