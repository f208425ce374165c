#!/usr/bin/env python3
"""Reads a heap profile with google-pprof or Go's pprof (`--text`) and checks it against
what the test program says is true. Used by scripts/test-profile; runs without the
preload.

  check.py shares  READER PROGRAM PROFILE INDEX TRUTH SITE[,SITE...] [--absent N,...]
                   [--tolerance POINTS] [--total-tolerance PERCENT]
      The sites are the heaviest functions of the listing (flat), in this order, each
      holding its true share of the sites' bytes within POINTS percentage points; the
      estimated total is within PERCENT of the truth; no --absent function is listed.
  check.py empty   READER PROGRAM PROFILE INDEX
      The listing accounts for no bytes.
  check.py names   READER PROGRAM PROFILE INDEX REGEX MIN_SHARE [--cum REGEX ...] [--absent REGEX ...]
      The heaviest function (flat) matches REGEX and holds at least MIN_SHARE percent;
      every --cum REGEX matches some function of the listing, no --absent REGEX does.

READER is google (google-pprof) or go (go tool pprof). INDEX is inuse_space or
alloc_space. TRUTH is the program's stdout, with lines "truth NAME BYTES".
Prints one line and exits 0 if the check holds, else prints the listing and exits 1.
"""
import re
import subprocess
import sys

UNITS = {"B": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def listing(reader, program, profile, index):
    if reader == "google":
        argv = ["google-pprof", "--text", "--" + index, program, profile]
    else:
        argv = ["go", "tool", "pprof", "-text", "-sample_index=" + index, program, profile]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        fail("%s exited %d:\n%s" % (" ".join(argv), run.returncode, run.stderr[-3000:]))
    return run.stdout, " ".join(argv)


def parse(text, reader):
    """(total bytes, [(name, flat bytes, flat percent, cum bytes)])"""
    rows = []
    total = None
    for line in text.splitlines():
        if reader == "google":
            m = re.match(r"^Total: ([\d.]+) MB", line)
            if m:
                total = float(m.group(1)) * (1 << 20)
                continue
            m = re.match(r"^\s*([\d.]+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)\s+([\d.]+)%\s+(\S.*)$", line)
            if m:
                rows.append((m.group(6).strip(), float(m.group(1)) * (1 << 20), float(m.group(2)), float(m.group(4)) * (1 << 20)))
        else:
            m = re.match(r"^Showing nodes accounting for .* of ([\d.]+)([kMGT]?B) total", line)
            if m:
                total = float(m.group(1)) * UNITS[m.group(2)]
                continue
            m = re.match(r"^\s*([\d.]+)([kMGT]?B)?\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)([kMGT]?B)?\s+([\d.]+)%\s+(\S.*)$", line)
            if m:
                rows.append((m.group(8).strip(), float(m.group(1)) * UNITS.get(m.group(2) or "B", 1), float(m.group(3)),
                             float(m.group(5)) * UNITS.get(m.group(6) or "B", 1)))
    if total is None:
        # Go's pprof prints no total line for an empty profile.
        total = 0.0 if not rows else sum(r[1] for r in rows)
    return total, rows


def matches(name, function):
    """A listed function name is `function`, possibly with its C++ parameters."""
    return name == function or name.startswith(function + "(") or name.startswith(function + " ")


def fail(message, text=""):
    print("FAIL " + message)
    for line in text.splitlines()[:40]:
        print("    " + line)
    sys.exit(1)


def main():
    mode, reader, program, profile, index = sys.argv[1:6]
    rest = sys.argv[6:]
    text, command = listing(reader, program, profile, index)
    total, rows = parse(text, reader)
    label = "%s %s (%s)" % (profile.rsplit("/", 1)[-1], index, "google-pprof" if reader == "google" else "go tool pprof")

    if mode == "empty":
        if total > 0 or any(r[1] > 0 for r in rows):
            fail("%s: %d bytes listed, expected none" % (label, total), text)
        print("ok   %s: nothing in use" % label)
        return

    if mode == "names":
        pattern, min_share = rest[0], float(rest[1])
        cums = [rest[i + 1] for i in range(2, len(rest) - 1) if rest[i] == "--cum"]
        absents = [rest[i + 1] for i in range(2, len(rest) - 1) if rest[i] == "--absent"]
        if not rows:
            fail("%s: empty listing" % label, text)
        top = max(rows, key=lambda r: r[1])
        if not re.search(pattern, top[0]) or top[2] < min_share:
            fail("%s: heaviest function %r holds %.1f%%, expected /%s/ with at least %.0f%%" % (label, top[0], top[2], pattern, min_share), text)
        for cum in cums:
            if not any(re.search(cum, r[0]) for r in rows):
                fail("%s: no function matches /%s/" % (label, cum), text)
        for name in absents:
            if any(re.search(name, r[0]) for r in rows):
                fail("%s: a function matches /%s/" % (label, name), text)
        print("ok   %s: %s holds %.1f%% of %.1f MiB; %s listed" % (label, top[0], top[2], total / (1 << 20), ", ".join(cums) or "-"))
        return

    truth_file, sites = rest[0], rest[1].split(",")
    absent, tolerance, total_tolerance = [], 3.0, 5.0
    i = 2
    while i < len(rest):
        if rest[i] == "--absent":
            absent = rest[i + 1].split(",")
        elif rest[i] == "--tolerance":
            tolerance = float(rest[i + 1])
        elif rest[i] == "--total-tolerance":
            total_tolerance = float(rest[i + 1])
        i += 2
    truth = {}
    with open(truth_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "truth":
                truth[parts[1]] = int(parts[2])
    true_total = sum(truth[s] for s in sites)
    ranked = sorted(rows, key=lambda r: -r[1])
    found = []
    for site in sites:
        row = next((r for r in ranked if matches(r[0], site)), None)
        if row is None:
            fail("%s: %s not listed" % (label, site), text)
        found.append(row)
    problems = []
    # In order, and the heaviest functions of the listing.
    heaviest = [r[0] for r in ranked[:len(sites)]]
    if not all(matches(h, s) for h, s in zip(heaviest, sites)):
        problems.append("heaviest functions %s, expected %s in this order" % (heaviest, sites))
    report = []
    for site, row in zip(sites, found):
        expected = 100.0 * truth[site] / true_total
        share = 100.0 * row[1] / total if total else 0
        report.append("%s %.1f%% (truth %.1f)" % (site, share, expected))
        if abs(share - expected) > tolerance:
            problems.append("%s holds %.1f%%, truth %.1f%% (tolerance %.1f points)" % (site, share, expected, tolerance))
    error = 100.0 * (total - true_total) / true_total
    if abs(error) > total_tolerance:
        problems.append("estimated total %.1f MiB, truth %.1f MiB (%+.1f%%, tolerance %.0f%%)" % (total / (1 << 20), true_total / (1 << 20), error, total_tolerance))
    for name in absent:
        if any(matches(r[0], name) for r in rows):
            problems.append("%s is listed" % name)
    if problems:
        fail("%s: %s" % (label, "; ".join(problems)), text)
    print("ok   %s: %s; total %.1f MiB (truth %.1f, %+.1f%%)%s" % (
        label, ", ".join(report), total / (1 << 20), true_total / (1 << 20), error,
        "; not listed: " + ",".join(absent) if absent else ""))


if __name__ == "__main__":
    main()
