# SwiftHeap — build, test, benchmark.
#
#   make            build libswiftheap.so (Embedded Swift, release)
#   make libpath    print the library's absolute path (make debpath: the Debian package's)
#   make test       unit tests (swift test), library checks, C tests, misuse tests, real programs and heap profiles under LD_PRELOAD
#   make profile-demo  profile a small program and show how to read the profile (text, and a graph in out/)
#   make bench      throughput and peak RSS against glibc, jemalloc, tcmalloc, mimalloc and the anchors
#                   (mimalloc 3, snmalloc from $(ANCHORS), default ../shared/anchors; skipped where absent)
#   make bench-checks  the cost of free's misuse checks: SwiftHeap against a build without them (7 runs, paired)
#   make rss        RSS over time after a burst, scattered frees and repeated phases (tables and PNGs),
#                   then the footprint of tiny programs (scripts/footprint)
#   make footprint  VmSize, VmRSS and peak RSS of tiny programs against glibc
#   make stress     multithreaded random stress with pattern checks, forks, real programs
#   make profile    instructions and D1/LL misses per malloc/free pair under cachegrind, every allocator
#   make install    install the library, swiftheap.pc, the swiftheap command, its man page and the
#                   knobs table under PREFIX (default /usr/local), into DESTDIR if set; make uninstall
#   make deb        a Debian package of the same, installing under /usr (out/swiftheap_VERSION_ARCH.deb)

SWIFT        ?= swift
EMBEDDED_DIR := .build-embedded
LIB          := $(CURDIR)/$(EMBEDDED_DIR)/x86_64-unknown-linux-gnu/release/libswiftheap.so
SOURCES      := $(wildcard Sources/SwiftHeap/*.swift) $(wildcard Shim/CShim/*.c Shim/CShim/include/*.h Shim/CExports/*.c) Shim/exports.map Package.swift
OUT          := $(CURDIR)/out
ANCHORS      ?= $(CURDIR)/../shared/anchors

# The version lives in Package.swift (`let version = "MAJOR.MINOR.PATCH"`), which also
# gives the library its SONAME, libswiftheap.so.MAJOR.
VERSION      := $(shell sed -n 's/^let version = "\(.*\)"$$/\1/p' Package.swift)
SONAME       := libswiftheap.so.$(firstword $(subst ., ,$(VERSION)))
LIBFILE      := libswiftheap.so.$(VERSION)

PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR       ?= $(PREFIX)/share/man
DOCDIR       ?= $(PREFIX)/share/doc/swiftheap
DESTDIR      ?=
INSTALL      ?= install

UNCHECKED_DIR := .build-embedded-unchecked
UNCHECKED_LIB := $(CURDIR)/$(UNCHECKED_DIR)/x86_64-unknown-linux-gnu/release/libswiftheap.so

.PHONY: bench-checks
.PHONY: all lib libpath test unit check-lib layers ctest misuse limits footprint programs bench rss stress clean
.PHONY: install uninstall deb debpath install-test stats-test heap-profile-test profile-demo

all: lib

lib: $(LIB)

$(LIB): $(SOURCES)
	SWIFTHEAP_EMBEDDED=1 $(SWIFT) build -c release --product swiftheap --scratch-path $(EMBEDDED_DIR)
	@touch $(LIB)

libpath:
	@echo $(LIB)

debpath:
	@echo $(DEB)

test: lib unit check-lib layers ctest misuse limits programs stats-test install-test heap-profile-test

unit:
	$(SWIFT) test

check-lib: lib
	scripts/check-lib $(LIB)

layers:
	scripts/check-layers

ctest: lib
	scripts/test-c $(LIB)

misuse: lib
	scripts/test-misuse $(LIB)

limits: lib
	scripts/test-limits $(LIB)

footprint: lib
	scripts/footprint $(LIB)

programs: lib
	scripts/test-programs $(LIB)

stats-test: lib
	scripts/test-stats $(LIB)

install-test: lib
	scripts/test-install

heap-profile-test: lib
	scripts/test-profile $(LIB)

profile-demo: lib
	scripts/profile-demo $(LIB)

# The swiftheap command finds the library through LIBDIR relative to BINDIR, so that a
# tree installed under DESTDIR (or moved) works where it is.
install: lib
	@[ -n "$(VERSION)" ] || { echo "make install: no version in Package.swift" >&2; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(LIBDIR)/$(SONAME).*
	$(INSTALL) -m 0644 $(LIB) $(DESTDIR)$(LIBDIR)/$(LIBFILE)
	ln -sf $(LIBFILE) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libswiftheap.so
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@SONAME@|$(SONAME)|g' \
	    -e "s|@LIBDIR_REL@|$$(realpath -m --relative-to=$(BINDIR) $(LIBDIR))|g" scripts/swiftheap >$(DESTDIR)$(BINDIR)/swiftheap
	chmod 0755 $(DESTDIR)$(BINDIR)/swiftheap
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    scripts/packaging/swiftheap.pc.in >$(DESTDIR)$(PKGCONFIGDIR)/swiftheap.pc
	sed -e 's|@VERSION@|$(VERSION)|g' docs/swiftheap.1 >$(DESTDIR)$(MANDIR)/man1/swiftheap.1
	scripts/packaging/knobs-table README.md >$(DESTDIR)$(DOCDIR)/knobs.md
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(SONAME).* $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libswiftheap.so \
	      $(DESTDIR)$(PKGCONFIGDIR)/swiftheap.pc $(DESTDIR)$(BINDIR)/swiftheap \
	      $(DESTDIR)$(MANDIR)/man1/swiftheap.1 $(DESTDIR)$(DOCDIR)/knobs.md
	@if [ -d $(DESTDIR)$(DOCDIR) ]; then rmdir $(DESTDIR)$(DOCDIR); fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

DEB_ARCH  = $(shell dpkg --print-architecture)
MULTIARCH = $(shell gcc -print-multiarch)
DEB       = $(OUT)/swiftheap_$(VERSION)_$(DEB_ARCH).deb
deb: lib
	rm -rf $(OUT)/deb
	$(MAKE) --no-print-directory install DESTDIR=$(OUT)/deb PREFIX=/usr LIBDIR=/usr/lib/$(MULTIARCH)
	scripts/packaging/make-deb $(OUT)/deb $(VERSION) $(DEB_ARCH) $(DEB)

bench: lib
	scripts/bench $(LIB) --anchors $(ANCHORS)

bench-checks: lib
	SWIFTHEAP_EMBEDDED=1 SWIFTHEAP_UNCHECKED=1 $(SWIFT) build -c release --product swiftheap --scratch-path $(UNCHECKED_DIR)
	scripts/bench $(LIB) --variant swiftheap-unchecked=$(UNCHECKED_LIB) --allocators swiftheap,swiftheap-unchecked --runs 7

rss: lib
	scripts/rss $(LIB)
	scripts/footprint $(LIB) --extra mimalloc3=$(ANCHORS)/mimalloc3/libmimalloc.so --extra snmalloc=$(ANCHORS)/snmalloc/libsnmallocshim.so

stress: lib
	scripts/stress $(LIB)

.PHONY: profile
profile: lib
	scripts/profile $(LIB) --anchors $(ANCHORS)

clean:
	rm -rf .build $(EMBEDDED_DIR) $(OUT)
