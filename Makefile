# SwiftHeap — build, test, benchmark.
#
#   make            build libswiftheap.so (Embedded Swift, release)
#   make libpath    print the library's absolute path
#   make test       unit tests (swift test), library checks, C tests, misuse tests and real programs under LD_PRELOAD
#   make bench      throughput and peak RSS against glibc, jemalloc, tcmalloc, mimalloc and the anchors
#                   (mimalloc 3, snmalloc from $(ANCHORS), default ../shared/anchors; skipped where absent)
#   make bench-checks  the cost of free's misuse checks: SwiftHeap against a build without them
#   make rss        RSS over time after bursts and scattered frees (table and PNG)
#   make footprint  VmSize, VmRSS and peak RSS of tiny programs against glibc
#   make stress     multithreaded random stress with pattern checks, forks, real programs
#   make profile    instructions and D1/LL misses per malloc/free pair under cachegrind, every allocator

SWIFT        ?= swift
EMBEDDED_DIR := .build-embedded
LIB          := $(CURDIR)/$(EMBEDDED_DIR)/x86_64-unknown-linux-gnu/release/libswiftheap.so
SOURCES      := $(wildcard Sources/SwiftHeap/*.swift) $(wildcard Shim/CShim/*.c Shim/CShim/include/*.h Shim/CExports/*.c) Shim/exports.map Package.swift
OUT          := $(CURDIR)/out
ANCHORS      ?= $(CURDIR)/../shared/anchors

UNCHECKED_DIR := .build-embedded-unchecked
UNCHECKED_LIB := $(CURDIR)/$(UNCHECKED_DIR)/x86_64-unknown-linux-gnu/release/libswiftheap.so

.PHONY: bench-checks
.PHONY: all lib libpath test unit check-lib layers ctest misuse limits footprint programs bench rss stress clean

all: lib

lib: $(LIB)

$(LIB): $(SOURCES)
	SWIFTHEAP_EMBEDDED=1 $(SWIFT) build -c release --product swiftheap --scratch-path $(EMBEDDED_DIR)
	@touch $(LIB)

libpath:
	@echo $(LIB)

test: lib unit check-lib layers ctest misuse limits programs

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

bench: lib
	scripts/bench $(LIB) --anchors $(ANCHORS)

bench-checks: lib
	SWIFTHEAP_EMBEDDED=1 SWIFTHEAP_UNCHECKED=1 $(SWIFT) build -c release --product swiftheap --scratch-path $(UNCHECKED_DIR)
	scripts/bench $(LIB) --variant swiftheap-unchecked=$(UNCHECKED_LIB) --allocators swiftheap,swiftheap-unchecked

rss: lib
	scripts/rss $(LIB)

stress: lib
	scripts/stress $(LIB)

.PHONY: profile
profile: lib
	scripts/profile $(LIB) --anchors $(ANCHORS)

clean:
	rm -rf .build $(EMBEDDED_DIR) $(OUT)
