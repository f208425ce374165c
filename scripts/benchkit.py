"""Pieces shared by scripts/bench, scripts/rss and scripts/profile (not a script itself).

Which allocators are measured besides glibc and SwiftHeap ("the others"), in this order:
  - Debian's packages, which `scripts/install-deps bench` installs: jemalloc, tcmalloc,
    mimalloc (2.0) from /usr/lib/x86_64-linux-gnu;
  - the anchors, the newest releases built from source (see ../shared/anchors/README.md),
    from the directory given with `--anchors DIR`: mimalloc3 (DIR/mimalloc3/libmimalloc.so)
    and snmalloc (DIR/snmalloc/libsnmallocshim.so); `make bench` and `make profile` pass
    ../shared/anchors (relative to the repository; `make bench ANCHORS=dir` overrides it);
  - any library given with `--extra NAME=PATH` (repeatable).
One that is missing is skipped with a note, never an error: a fresh machine has no anchors.

Also: compiling a workload's C source when it is stale, and the progress lines that say
what runs and how long the rest should take (on stderr, so that the tables on stdout
stay clean).
"""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "out")
LIBDIR = "/usr/lib/x86_64-linux-gnu"
DEBIAN = [("jemalloc", "libjemalloc.so.2"),
          ("tcmalloc", "libtcmalloc_minimal.so.4"),
          ("mimalloc", "libmimalloc.so.2")]
ANCHORS = [("mimalloc3", os.path.join("mimalloc3", "libmimalloc.so")),
           ("snmalloc", os.path.join("snmalloc", "libsnmallocshim.so"))]


def add_allocator_options(ap):
    """Adds --anchors DIR and --extra NAME=PATH to an argparse parser."""
    ap.add_argument("--anchors", metavar="DIR",
                    help="directory of the anchor builds: mimalloc3/libmimalloc.so, snmalloc/libsnmallocshim.so "
                         "(make passes ../shared/anchors; missing ones are skipped with a note)")
    ap.add_argument("--extra", action="append", metavar="NAME=PATH", default=[],
                    help="also measure the allocator PATH (a shared object for LD_PRELOAD) as NAME (repeatable)")


def named_paths(values, option):
    """Parses NAME=PATH values; exits with a message on a malformed one. Returns [(name, abs path)]."""
    out = []
    for v in values or []:
        name, sep, path = v.partition("=")
        name = name.strip()
        if not sep or not name or not path or "," in name:
            sys.exit("%s: %s wants NAME=PATH, got %r" % (os.path.basename(sys.argv[0]), option, v))
        out.append((name, os.path.abspath(path)))
    return out


def other_allocators(a):
    """The others (Debian's, the anchors, --extra) for parsed options a: ([(name, path)], [note])."""
    have, notes = [], []
    for name, so in DEBIAN:
        path = os.path.join(LIBDIR, so)
        if os.path.isfile(path):
            have.append((name, path))
        else:
            notes.append("%s skipped: %s not installed" % (name, path))
    if a.anchors:
        for name, rel in ANCHORS:
            path = os.path.join(os.path.abspath(a.anchors), rel)
            if os.path.isfile(path):
                have.append((name, path))
            else:
                notes.append("%s skipped: no anchor at %s" % (name, path))
    for name, path in named_paths(a.extra, "--extra"):
        if os.path.isfile(path):
            have.append((name, path))
        else:
            notes.append("%s skipped: %s does not exist" % (name, path))
    seen = set()
    for name, _ in have:
        if name in seen:
            sys.exit("%s: two allocators are named %s" % (os.path.basename(sys.argv[0]), name))
        seen.add(name)
    return have, notes


def compile_c(src, dst, deps=(), flags=("-O2", "-pthread", "-Wall")):
    """Compiles src into dst with $CC (gcc) unless dst is newer than src and deps; exits on error."""
    srcs = [src] + list(deps)
    if os.path.exists(dst) and os.path.getmtime(dst) >= max(os.path.getmtime(s) for s in srcs):
        return dst
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    r = subprocess.run([cc] + list(flags) + ["-o", dst, src], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("%s: compiling %s failed:\n%s" % (os.path.basename(sys.argv[0]), src, r.stderr))
    return dst


def fmt_duration(s):
    s = int(round(s))
    return "%d:%02d" % (s // 60, s % 60) if s < 3600 else "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


class Progress:
    """Progress lines on stderr: one per run, before it starts, with the time left.

    planned: {workload: number of runs planned}. The time a run should take is the mean
    of the runs of its workload done so far, else prior[workload], else the mean of all
    runs so far, else default_s. The estimate of the time left is that summed over the
    runs still planned (this one included).
    """

    def __init__(self, tool, planned, prior=None, default_s=3.0):
        self.tool = tool
        self.left = dict(planned)
        self.total = sum(planned.values())
        self.prior = prior or {}
        self.default_s = default_s
        self.took = {}
        self.started = time.time()
        self.n = 0

    def _estimate(self, w):
        if self.took.get(w):
            return sum(self.took[w]) / len(self.took[w])
        if w in self.prior:
            return self.prior[w]
        every = [t for ts in self.took.values() for t in ts]
        return sum(every) / len(every) if every else self.default_s

    def start(self, workload, what):
        """Prints the line for the run about to start; what: e.g. 'mimalloc3, run 2/3'."""
        self.n += 1
        left = sum(self._estimate(w) * k for w, k in self.left.items())
        self.left[workload] = max(0, self.left.get(workload, 1) - 1)
        self._t0 = time.time()
        width = len(str(self.total))
        print("%s: [%*d/%d] %s: %s  (%s elapsed, about %s left)" % (
            self.tool, width, self.n, self.total, workload, what,
            fmt_duration(time.time() - self.started), fmt_duration(left)), file=sys.stderr, flush=True)

    def done(self, workload):
        """Records how long the run started last took."""
        self.took.setdefault(workload, []).append(time.time() - self._t0)

    def skip(self, workload, k=1):
        """k planned runs of workload will not run (an allocator failed on it)."""
        self.left[workload] = max(0, self.left.get(workload, 0) - k)
        self.total -= k
