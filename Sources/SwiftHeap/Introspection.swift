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
// scavenger returns free memory, steered by SWIFTHEAP_RETAIN_PERCENT), no object mapped on
// its own (M_MMAP_THRESHOLD, M_MMAP_MAX; large objects are spans of the page heap), no
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
    out.attribute("count", r.cachedObjects)
    out.attribute("size", r.cachedBytes)
    out.put("/>\n<total type=\"rest\"")
    out.attribute("count", r.freeObjects)
    out.attribute("size", r.freeObjectBytes)
    out.put("/>\n")
    if process {
        out.put("<total type=\"mmap\"")
        out.attribute("count", r.snapshot.largeCount)
        out.attribute("size", r.snapshot.largeBytes)
        out.put("/>\n")
    }
    let mapped = r.snapshot.mappedBytes
    out.put("<system type=\"current\"")
    out.attribute("size", mapped)
    out.put("/>\n<system type=\"max\"")
    out.attribute("size", mapped)
    out.put("/>\n<aspace type=\"total\"")
    out.attribute("size", mapped)
    out.put("/>\n<aspace type=\"mprotect\"")
    out.attribute("size", mapped)
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
            out.attribute("from", previousSize &+ 1)
            out.attribute("to", f.size)
            out.attribute("total", free &* f.size)
            out.attribute("count", free)
            out.put("/>\n")
        }
        previousSize = f.size
    }
    out.put("</sizes>\n")
    formatMallocInfoTotals(r, &out, process: false)
    out.put("</heap>\n")
    formatMallocInfoTotals(r, &out, process: true)

    out.put("<swiftheap version=\"")
    out.put(cString: sh_version())
    out.put("\">\n<memory")
    out.attribute("mapped", s.mappedBytes)
    out.attribute("spans", s.spanBytes)
    out.attribute("in-use", s.inUseBytes)
    out.attribute("free", s.freeBytes)
    out.attribute("free-pages", s.freePageBytes)
    out.attribute("retained", s.retainedBytes)
    out.attribute("releasable", s.releasableBytes)
    out.attribute("released", s.mappedBytes &- min(s.mappedBytes, s.retainedBytes))
    out.attribute("released-free-pages", s.scavengedFreeBytes)
    out.attribute("released-in-spans", s.inSpanReleasedBytes)
    out.attribute("metadata", s.metadataBytes)
    out.put("/>\n<spans")
    out.attribute("small", r.smallSpans)
    out.attribute("small-bytes", s.spanBytes &- min(s.spanBytes, s.largeBytes))
    out.attribute("large", s.largeCount)
    out.attribute("large-bytes", s.largeBytes)
    out.put("/>\n<thread-caches")
    out.attribute("live", s.threadCaches)
    out.attribute("objects", r.cachedObjects)
    out.attribute("bytes", r.cachedBytes)
    out.put("/>\n<scavenger")
    let config = heapIsReady() ? heap.pointee.config : Config()
    out.attribute("enabled", config.scavengerEnabled ? 1 : 0)
    out.attribute("generations", UInt(s.generation))
    out.attribute("released", s.releasedBytes)
    out.attribute("cpu-ns", s.scavengerCPUNanos)
    out.attribute("retain-percent", config.retainPercent)
    out.put("/>\n<classes>\n")
    for cls in 1..<max(r.classCount, 1) {
        let f = r.classes[cls]
        if f.isEmpty { continue }
        out.put("  <class")
        out.attribute("nr", UInt(cls))
        out.attribute("size", f.size)
        out.attribute("pages", f.pages)
        out.attribute("objects-per-span", f.objectsPerSpan)
        out.attribute("spans", f.spans)
        out.attribute("allocated", f.allocated)
        out.attribute("cached", f.cached)
        out.attribute("free", f.freeInSpans)
        out.put("/>\n")
    }
    out.put("</classes>\n</swiftheap>\n</malloc>\n")
}
