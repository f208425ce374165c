// swift-tools-version:6.0
// SwiftHeap: the allocator module (SwiftHeap), its C shim (CShim: system headers, the
// thread-local slot, atomics), the exported libc names (CExports, linked into the shared
// object only), the unit tests, and the dynamic library product `swiftheap`.
//
// Two modes, chosen by the environment:
//   SWIFTHEAP_EMBEDDED=1 swift build -c release --product swiftheap --scratch-path .build-embedded
//     builds libswiftheap.so in Embedded Swift (no Swift runtime in it).
//   swift test
//     builds the same sources as ordinary Swift and runs the unit tests in process.
import PackageDescription

// SwiftHeap's version, kept here only: the SONAME below takes its major number, the
// library reports it (malloc_info, the stats), and the Makefile reads it from this line
// for the installed file name (libswiftheap.so.MAJOR.MINOR.PATCH), swiftheap.pc,
// `swiftheap --version` and the Debian package.
let version = "0.1.0"
let soname = "libswiftheap.so." + version.split(separator: ".")[0]

let embedded = Context.environment["SWIFTHEAP_EMBEDDED"] == "1"
// SWIFTHEAP_UNCHECKED=1 builds the library without free's misuse checks, only so that
// `make bench-checks` can measure what they cost.
let unchecked = Context.environment["SWIFTHEAP_UNCHECKED"] == "1"

let allocatorSettings: [SwiftSetting] = embedded
    ? [.enableExperimentalFeature("Embedded"),
       // -momit-leaf-frame-pointer: functions that call nothing (malloc's and free's fast
       // paths, which end in a jump to their slow paths) set up no frame; every function
       // that calls keeps its frame pointer, which the heap profiler's walk needs
       // (ProfileStack.swift; scripts/check-lib checks both).
       .unsafeFlags(["-wmo", "-Xcc", "-fPIC", "-Xcc", "-momit-leaf-frame-pointer", "-no-allocations"]
                    + (unchecked ? ["-DSWIFTHEAP_UNCHECKED"] : []))]
    : [.unsafeFlags(["-enforce-exclusivity=unchecked"]),
       // The lock-order check of LockRanks.swift, in the unit tests only.
       .define("SWIFTHEAP_LOCK_RANKS")]

var targets: [Target] = [
    .target(name: "CShim", path: "Shim/CShim",
            cSettings: [.define("SWIFTHEAP_VERSION", to: "\"" + version + "\""), .unsafeFlags(["-O2", "-fPIC"])]),
    .target(name: "SwiftHeap", dependencies: ["CShim"], path: "Sources/SwiftHeap",
            swiftSettings: allocatorSettings),
]
var products: [Product] = [
    .library(name: "SwiftHeap", targets: ["SwiftHeap"]),
]
if embedded {
    // The version script keeps every symbol but the malloc API local: the Embedded
    // runtime's weak entry points (swift_retain, ...) must not interpose a Swift
    // program's real runtime. The SONAME lets programs link with -lswiftheap and
    // record libswiftheap.so.MAJOR, as any system library.
    let exportsMap = Context.packageDirectory + "/Shim/exports.map"
    targets.append(.target(name: "CExports", dependencies: ["SwiftHeap"], path: "Shim/CExports", publicHeadersPath: ".",
                           cSettings: [.unsafeFlags(["-O2", "-fPIC", "-momit-leaf-frame-pointer"])],
                           linkerSettings: [.unsafeFlags(["-Xlinker", "--version-script=" + exportsMap,
                                                          "-Xlinker", "-z", "-Xlinker", "nodelete",
                                                          "-Xlinker", "-soname=" + soname])]))
    products.append(.library(name: "swiftheap", type: .dynamic, targets: ["SwiftHeap", "CExports"]))
} else {
    targets.append(.testTarget(name: "SwiftHeapTests", dependencies: ["SwiftHeap"], path: "Tests/SwiftHeapTests"))
}

// Swift 5 language mode: the allocator's globals are guarded by its own locks and
// thread-local caches, which Swift 6's global-isolation checking cannot see.
let package = Package(name: "SwiftHeap", products: products, targets: targets,
                      swiftLanguageModes: [.v5])
