#!/usr/bin/env python3
"""The test cases that skipped themselves inside targets Bazel reports as PASSED: a gtest case
that called GTEST_SKIP (it needs root, or another uid) or a unittest case skipped, which the
target's status does not show. Reads the targets' labels (//pkg:name), one a line, on stdin;
prints nothing when none skipped, else a count and, per target, the skipped cases and why.

Reads what Bazel left under bazel-testlogs (run from the workspace's root): each target's
test.xml (gtest writes <testcase result="skipped"> with a <skipped message="..."/>) and, for the
Python tests whose test.xml Bazel makes up from the exit code, test.log (unittest's "... skipped
'why'" lines, or its "OK (skipped=N)" total when not verbose)."""

import glob
import os
import re
import sys
import xml.etree.ElementTree as ElementTree

UNITTEST_CASE = re.compile(r"^(\S+) \((\S+)\) \.\.\. skipped '(.*)'$", re.M)
UNITTEST_TOTAL = re.compile(r"^OK \(.*skipped=(\d+)\)$", re.M)


def short(text, width=70):
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def skipped_in_xml(path):
    cases = []
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError):
        return cases
    for case in root.iter("testcase"):
        skipped = case.find("skipped")
        if case.get("result") == "skipped" or skipped is not None:
            why = skipped.get("message", "") if skipped is not None else ""
            # gtest's message starts with the file and line of the GTEST_SKIP.
            why = re.sub(r"^\S+:\d+\s*(Skipped)?\s*", "", why)
            cases.append((f"{case.get('classname')}.{case.get('name')}", short(why)))
    return cases


def skipped_in_log(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            text = log.read()
    except OSError:
        return []
    cases = []
    for name, where, why in UNITTEST_CASE.findall(text):
        # "test_x (module.Class.test_x)" (3.11), or "test_x (module.Class)" (before).
        parts = where.split(".")
        owner = parts[-2] if len(parts) >= 2 and parts[-1] == name else parts[-1]
        cases.append((f"{owner}.{name}", short(why)))
    if not cases:
        total = sum(int(n) for n in UNITTEST_TOTAL.findall(text))
        cases = [("(unnamed: unittest was not verbose)", "")] * total
    return cases


def main():
    found = {}
    for label in sys.stdin.read().split():
        package, _, name = label.lstrip("/").partition(":")
        directory = os.path.join("bazel-testlogs", package, name)
        cases = []
        # One test.xml per run and shard (--runs_per_test, shard_count): skipped in any counts.
        for xml in sorted(glob.glob(os.path.join(directory, "**", "test.xml"), recursive=True)):
            in_xml = skipped_in_xml(xml)
            in_log = [] if in_xml else skipped_in_log(os.path.join(os.path.dirname(xml),
                                                                   "test.log"))
            for case in in_xml or in_log:
                if case not in cases or case[0].startswith("(unnamed"):
                    cases.append(case)
        if cases:
            found[label] = cases
    if not found:
        return
    total = sum(len(cases) for cases in found.values())
    print(f"skipped: {total} test case(s) in {len(found)} passing target(s), not run here:")
    for label, cases in found.items():
        print(f"  {label}: " + "; ".join(f"{name} ({why})" if why else name
                                          for name, why in cases))


if __name__ == "__main__":
    main()
