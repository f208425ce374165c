// glibc's introspection and tuning calls, answered by SwiftHeap: malloc_info(3) and
// mallopt(3). (malloc_stats and mallinfo2 are in Stats.swift.)
//
// malloc_info(0, fp) writes XML in glibc's shape (what glibc 2.36 prints: a <heap nr="0">
// with <sizes>, the fast and rest totals, system and aspace sizes, then the same totals
// for the whole process with <total type="mmap">), filled with SwiftHeap's figures, and
// then a <swiftheap> element with what glibc's shape has no place for. The mapping:
//   <size from to total count>   per size class with free objects: from = one byte above
//                                the previous class, to = the class's size; count and
//                                total = its free objects (in spans and in thread caches)
//   <total type="fast">          objects sitting in thread caches (glibc: its fastbins)
//   <total type="rest">          free objects in spans (so fast + rest = the sum of <sizes>)
//   <total type="mmap">          large objects (spans of their own), as mallinfo2's hblks/hblkhd
//   <system>, <aspace>           bytes of arenas mapped (mallinfo2's arena; arenas are never
//                                unmapped, so max = current; memory goes back with madvise)
//   <swiftheap>                  memory (in use = mallinfo2's uordblks, free = fordblks,
//                                releasable = keepcost, retained and released), spans,
//                                thread caches, the scavenger, and every size class
// Figures are taken once (HeapReport), formatted in report memory, and written with
// fwrite only after every lock is dropped (stdio may call malloc).
//
// mallopt(param, value) returns 1 for each parameter glibc documents, as glibc does
// (M_MXFAST only for values 0...160, glibc's limit), and 0 for any other. None of them
// changes SwiftHeap, and the man page says why: there is no fastbin (M_MXFAST; the thread
// caches play its part), no top chunk to trim or pad (M_TRIM_THRESHOLD, M_TOP_PAD; the
// scavenger returns free memory, steered by SWIFTHEAP_RETAIN_PERCENT), a fixed threshold
// for objects mapped on their own (M_MMAP_THRESHOLD, M_MMAP_MAX: 64 MiB and up, always;
// smaller large objects are spans of the page heap, released by the scavenger), no
// arenas (M_ARENA_TEST, M_ARENA_MAX; one heap, per-thread caches), the misuse checks are
// always on (M_CHECK_ACTION), and memory is never filled (M_PERTURB: it would cost a
// test on the malloc fast path).

import CShim

// glibc's <malloc.h> parameter numbers.
let mallocOptionMXFast: Int32 = 1
let mallocOptionTrimThreshold: Int32 = -1
let mallocOptionTopPad: Int32 = -2
let mallocOptionMmapThreshold: Int32 = -3
let mallocOptionMmapMax: Int32 = -4
let mallocOptionCheckAction: Int32 = -5
let mallocOptionPerturb: Int32 = -6
let mallocOptionArenaTest: Int32 = -7
let mallocOptionArenaMax: Int32 = -8
/// glibc's MAX_FAST_SIZE on 64-bit: 80 * sizeof(size_t) / 4.
let glibcMaxFastSize: Int32 = 160

@_cdecl("swiftheap_mallopt")
public func swiftheap_mallopt(_ parameter: Int32, _ value: Int32) -> Int32 {
    switch parameter {
    case mallocOptionMXFast:
        return value >= 0 && value <= glibcMaxFastSize ? 1 : 0
    case mallocOptionTrimThreshold, mallocOptionTopPad, mallocOptionMmapThreshold, mallocOptionMmapMax,
         mallocOptionCheckAction, mallocOptionPerturb, mallocOptionArenaTest, mallocOptionArenaMax:
        return 1
    default:
        return 0
    }
}

/// malloc_info(options, stream): 0 on success; EINVAL (also in errno) for options other
/// than 0 or a null stream, as glibc returns EINVAL for options; ENOMEM if the report's
/// memory cannot be mapped. Takes the heap and registry locks for the figures; must hold
/// no allocator lock.
@_cdecl("swiftheap_malloc_info")
public func swiftheap_malloc_info(_ options: Int32, _ stream: UnsafeMutableRawPointer?) -> Int32 {
    guard options == 0, let stream else {
        sh_errno_set(EINVAL)
        return EINVAL
    }
    let savedErrno = sh_errno_get()
    // fwrite failing is the stream's error (ferror), as with glibc; only a report that
    // could not be made at all fails the call.
    if withHeapReport({ ReportWriter(buffer: $0, capacity: $1, stream: stream) }, formatMallocInfo) == nil {
        sh_errno_set(ENOMEM)
        return ENOMEM
    }
    sh_errno_set(savedErrno)
    return 0
}

/// glibc's totals and system figures, inside <heap> and again for the whole process.
private func formatMallocInfoTotals(_ r: HeapReport, _ out: inout ReportWriter, process: Bool) {
    out.put("<total type=\"fast\"")
    out.field("count", r.cachedObjects)
    out.field("size", r.cachedBytes)
    out.put("/>\n<total type=\"rest\"")
    out.field("count", r.freeObjects)
    out.field("size", r.freeObjectBytes)
    out.put("/>\n")
    if process {
        out.put("<total type=\"mmap\"")
        out.field("count", r.snapshot.largeCount)
        out.field("size", r.snapshot.largeBytes)
        out.put("/>\n")
    }
    let mapped = r.snapshot.mappedBytes
    out.put("<system type=\"current\"")
    out.field("size", mapped)
    out.put("/>\n<system type=\"max\"")
    out.field("size", mapped)
    out.put("/>\n<aspace type=\"total\"")
    out.field("size", mapped)
    out.put("/>\n<aspace type=\"mprotect\"")
    out.field("size", mapped)
    out.put("/>\n")
}

/// The malloc_info XML.
func formatMallocInfo(_ r: HeapReport, _ out: inout ReportWriter) {
    let s = r.snapshot
    out.put("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n")
    var previousSize: UInt = 0
    for cls in 1..<max(r.classCount, 1) {
        let f = r.classes[cls]
        let free = f.freeInSpans &+ f.cached
        if free > 0 {
            out.put("  <size")
            out.field("from", previousSize &+ 1)
            out.field("to", f.size)
            out.field("total", free &* f.size)
            out.field("count", free)
            out.put("/>\n")
        }
        previousSize = f.size
    }
    out.put("</sizes>\n")
    formatMallocInfoTotals(r, &out, process: false)
    out.put("</heap>\n")
    formatMallocInfoTotals(r, &out, process: true)

    out.put("<swiftheap")
    out.field("version", string: sh_version())
    out.put(">\n<memory")
    out.field("mapped", s.mappedBytes)
    out.field("spans", s.spanBytes)
    out.field("in_use", s.inUseBytes)
    out.field("free", s.freeBytes)
    out.field("free_pages", s.freePageBytes)
    out.field("retained", s.retainedBytes)
    out.field("releasable", s.releasableBytes)
    out.field("released", s.mappedBytes &- min(s.mappedBytes, s.retainedBytes))
    out.field("released_free_pages", s.scavengedFreeBytes)
    out.field("released_in_spans", s.inSpanReleasedBytes)
    out.field("metadata", s.metadataBytes)
    out.put("/>\n<spans")
    out.field("small", r.smallSpans)
    out.field("small_bytes", s.spanBytes &- min(s.spanBytes, s.largeBytes &+ s.cachedLargeBytes))
    out.field("large", s.largeCount)
    out.field("large_bytes", s.largeBytes)
    out.put("/>\n<thread-caches")
    out.field("live", s.threadCaches)
    out.field("objects", r.cachedObjects)
    out.field("bytes", r.cachedBytes)
    out.field("large_objects", s.cachedLargeCount)
    out.field("large_bytes", s.cachedLargeBytes)
    out.put("/>\n<scavenger")
    let config = heapIsReady() ? heap.pointee.config : Config()
    out.field("enabled", flag: config.scavengerEnabled)
    out.field("generations", UInt(s.generation))
    out.field("released", s.releasedBytes)
    out.field("cpu_ns", s.scavengerCPUNanos)
    out.field("retain_percent", config.retainPercent)
    out.put("/>\n<classes>\n")
    for cls in 1..<max(r.classCount, 1) where !r.classes[cls].isEmpty {
        out.put("  <class")
        putClassFields(&out, cls, r.classes[cls])
        out.put("/>\n")
    }
    out.put("</classes>\n</swiftheap>\n</malloc>\n")
}
