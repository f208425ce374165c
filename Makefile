# SwiftHeap — build, test, benchmark.
#
#   make            build libswiftheap.so (Embedded Swift, release)
#   make libpath    print the library's absolute path
#   make test       unit tests (swift test), library checks, C tests, misuse tests, real programs and heap profiles under LD_PRELOAD
#   make profile-demo  profile a small program and show how to read it (text, and a graph in out/)
#   make bench      throughput and peak RSS against glibc, jemalloc, tcmalloc, mimalloc
#   make bench-checks  the cost of free's misuse checks: SwiftHeap against a build without them
#   make rss        RSS over time after bursts and scattered frees (table and PNG)
#   make stress     multithreaded random stress with pattern checks, forks, real programs

SWIFT        ?= swift
EMBEDDED_DIR := .build-embedded
LIB          := $(CURDIR)/$(EMBEDDED_DIR)/x86_64-unknown-linux-gnu/release/libswiftheap.so
SOURCES      := $(wildcard Sources/SwiftHeap/*.swift) $(wildcard Shim/CShim/*.c Shim/CShim/include/*.h Shim/CExports/*.c) Shim/exports.map Package.swift
OUT          := $(CURDIR)/out

UNCHECKED_DIR := .build-embedded-unchecked
UNCHECKED_LIB := $(CURDIR)/$(UNCHECKED_DIR)/x86_64-unknown-linux-gnu/release/libswiftheap.so

.PHONY: bench-checks
.PHONY: all lib libpath test unit check-lib ctest misuse programs profile profile-demo bench rss stress clean

all: lib

lib: $(LIB)

$(LIB): $(SOURCES)
	SWIFTHEAP_EMBEDDED=1 $(SWIFT) build -c release --product swiftheap --scratch-path $(EMBEDDED_DIR)
	@touch $(LIB)

libpath:
	@echo $(LIB)

test: lib unit check-lib ctest misuse programs profile

unit:
	$(SWIFT) test

check-lib: lib
	scripts/check-lib $(LIB)

ctest: lib
	scripts/test-c $(LIB)

misuse: lib
	scripts/test-misuse $(LIB)

programs: lib
	scripts/test-programs $(LIB)

profile: lib
	scripts/test-profile $(LIB)

profile-demo: lib
	scripts/profile-demo $(LIB)

bench: lib
	scripts/bench $(LIB)

bench-checks: lib
	SWIFTHEAP_EMBEDDED=1 SWIFTHEAP_UNCHECKED=1 $(SWIFT) build -c release --product swiftheap --scratch-path $(UNCHECKED_DIR)
	scripts/bench $(LIB) --variant swiftheap-unchecked=$(UNCHECKED_LIB) --allocators swiftheap,swiftheap-unchecked

rss: lib
	scripts/rss $(LIB)

stress: lib
	scripts/stress $(LIB)

clean:
	rm -rf .build $(EMBEDDED_DIR) $(OUT)
