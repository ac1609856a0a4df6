#!/usr/bin/env python3
"""Checks an Autobahn report directory written by kosoku.

Every case must be OK, NON-STRICT or INFORMATIONAL, and its result must equal
the one recorded in the expected-results file, so that any change in any case
shows up (and, once accepted, shows as a diff of that file).

usage: check.py REPORT_DIR EXPECTED_JSON [--update]
"""
import glob
import json
import os
import sys

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def load_results(report_dir):
    results = {}
    for path in glob.glob(os.path.join(report_dir, "*_case_*.json")):
        with open(path) as f:
            report = json.load(f)
        results[report["id"]] = {"behavior": report["behavior"], "behaviorClose": report["behaviorClose"]}
    return dict(sorted(results.items(), key=lambda item: case_key(item[0])))


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    report_dir, expected_path = sys.argv[1], sys.argv[2]
    results = load_results(report_dir)
    label = os.path.basename(expected_path).removesuffix(".json")
    if not results:
        print(f"{label}: no case reports found in {report_dir}")
        return 1
    if "--update" in sys.argv[3:]:
        with open(expected_path, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
        print(f"{label}: wrote {len(results)} expected results to {expected_path}")
    with open(expected_path) as f:
        expected = json.load(f)

    failed = []
    for case_id, result in results.items():
        if result["behavior"] not in PASSING or result["behaviorClose"] not in PASSING:
            failed.append(f"{case_id}: {result['behavior']} / close {result['behaviorClose']}")
        elif expected.get(case_id) != result:
            failed.append(f"{case_id}: {result} differs from the expected {expected.get(case_id)}")
    for case_id in sorted(set(expected) - set(results), key=case_key):
        failed.append(f"{case_id}: expected but not run")

    counts = {}
    for result in results.values():
        counts[result["behavior"]] = counts.get(result["behavior"], 0) + 1
    summary = ", ".join(f"{n} {behavior}" for behavior, n in sorted(counts.items()))
    print(f"{label}: {len(results)} cases ({summary})")
    for line in failed:
        print(f"  FAIL {line}")
    print(f"{label}: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
