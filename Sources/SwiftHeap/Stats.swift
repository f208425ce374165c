// Statistics: the heap's figures, taken once per report, and the reports made of them:
// malloc_stats() and the SWIFTHEAP_STATS summary at exit (text, or one JSON line with
// SWIFTHEAP_STATS=json), and mallinfo2(). malloc_info's XML (Introspection.swift)
// uses the same figures.
//
// Figures. HeapSnapshot holds the page heap's counters, read together under the heap
// lock, and the atomic counters of the scavenger. A HeapReport adds, per size class,
// the spans and objects of its central list (read without the central locks: the
// counts are words, read as estimates, as Go reads heapLive between GCs) and the
// objects sitting in thread caches (summed under the registry lock, which keeps the
// caches' records alive; the bins' counts are read racily too). In a quiet heap all of
// it is exact, and every report agrees with mallinfo2(): in-use bytes are the objects
// handed out of spans (those in thread caches included, as glibc counts its tcache)
// plus the large objects, free bytes are mapped bytes less in-use bytes.
//
// Output goes through a ReportWriter (ReportWriter.swift): figures first, under their
// locks, text after with no lock held, written with write(2), never through stdio:
// malloc_stats to stderr; the summary at exit to SWIFTHEAP_STATS_FILE (appended; %p in
// the name becomes the process id) or else to the copy of stderr taken at start, since
// many programs close stderr before exit.

import CShim

/// A snapshot of the heap's counters.
struct HeapSnapshot {
    var mappedBytes: UInt = 0
    var spanBytes: UInt = 0
    var liveBytes: UInt = 0
    var largeBytes: UInt = 0
    var largeCount: UInt = 0
    /// Large objects mapped on their own (included in mapped, large and live bytes too).
    var directBytes: UInt = 0
    var directCount: UInt = 0
    var releasedBytes: UInt = 0
    var freePageBytes: UInt = 0
    var scavengedFreeBytes: UInt = 0
    var inSpanReleasedBytes: UInt = 0
    var retainedBytes: UInt = 0
    var generation: UInt32 = 0
    var scavengerCPUNanos: UInt = 0
    var metadataBytes: UInt = 0
    var threadCaches: UInt = 0
    /// Large spans freed by the program and kept in threads' large caches
    /// (LargeCache.swift): free, not counted among the large objects.
    var cachedLargeCount: UInt = 0
    var cachedLargeBytes: UInt = 0

    /// In-use bytes as mallinfo2 reports them (never above the mapped bytes).
    var inUseBytes: UInt { min(liveBytes, mappedBytes) }
    /// Mapped bytes not in use.
    var freeBytes: UInt { mappedBytes &- inUseBytes }
    /// Bytes that are free and still resident: what malloc_trim could release.
    var releasableBytes: UInt { retainedBytes > inUseBytes ? retainedBytes &- inUseBytes : 0 }

    /// Takes the registry's lock, then the page heap's; must hold neither.
    static func take() -> HeapSnapshot {
        var snapshot = HeapSnapshot()
        if !heapIsReady() { return snapshot }
        let root = heap
        let pageHeap = processPageHeap
        let scavenger = processScavenger
        let cachedLarge = processCaches.cachedLargeFigures()
        snapshot.cachedLargeCount = cachedLarge.spans
        snapshot.cachedLargeBytes = cachedLarge.pages &<< pageShift
        pageHeap.lockPointer.lock()
        let stats = pageHeap.pointee.stats
        let pages = pageHeap.pointee.pages.pointee
        // Objects mapped on their own count as mapped, retained and large like the others
        // (and are also reported on their own).
        snapshot.directBytes = stats.directBytes
        snapshot.directCount = stats.directCount
        snapshot.mappedBytes = stats.mappedBytes &+ stats.directBytes
        snapshot.spanBytes = stats.spanBytes
        // (The page heap counts cached large spans among its large objects: they are not.)
        snapshot.largeBytes = stats.largeBytes &+ stats.directBytes &- min(stats.largeBytes, snapshot.cachedLargeBytes)
        snapshot.largeCount = stats.largeCount &+ stats.directCount &- min(stats.largeCount, snapshot.cachedLargeCount)
        snapshot.releasedBytes = pages.releasedBytes
        snapshot.freePageBytes = pages.freeBytes
        snapshot.scavengedFreeBytes = pages.scavengedBytes
        snapshot.retainedBytes = scavenger.retainedBytesLocked() &+ stats.directBytes
        snapshot.generation = pages.scav.gen
        pageHeap.lockPointer.unlock()
        snapshot.inSpanReleasedBytes = root.pointer(to: \.events)!.inSpanReleasedBytes
        snapshot.scavengerCPUNanos = UInt(scavenger.cpuNanos)
        let live = scavenger.liveBytesEstimate()
        snapshot.liveBytes = live &- min(live, snapshot.cachedLargeBytes) &+ stats.directBytes
        snapshot.metadataBytes = metadataState.pointee.bytesMapped &+ pageHeap.pointee.spanRecords.residentBytes
        snapshot.threadCaches = root.pointee.caches.liveCount
        return snapshot
    }
}

/// One size class's figures in a report.
struct ClassFigures {
    var size: UInt = 0
    var pages: UInt = 0
    var objectsPerSpan: UInt = 0
    var spans: UInt = 0
    /// Objects handed out of the class's spans (to the program or to thread caches).
    var allocated: UInt = 0
    /// Of those, objects sitting in thread caches.
    var cached: UInt = 0

    /// Free objects in the class's spans.
    var freeInSpans: UInt {
        let capacity = spans &* objectsPerSpan
        return capacity > allocated ? capacity &- allocated : 0
    }
    /// Whether the class has anything to report.
    var isEmpty: Bool { spans == 0 && allocated == 0 }
}

/// Every figure of a report: the snapshot and the classes, whose figures live in the
/// report's memory.
struct HeapReport {
    var snapshot = HeapSnapshot()
    var classes: UnsafeMutablePointer<ClassFigures>
    /// Number of classes including class 0 (which has no figures).
    var classCount = 0
    var smallSpans: UInt = 0
    var cachedObjects: UInt = 0
    var cachedBytes: UInt = 0
    var freeObjects: UInt = 0
    var freeObjectBytes: UInt = 0

    /// Bytes of report memory the class figures take; the text buffer follows. (Computed:
    /// a stored static would be initialised lazily, through swift_once.)
    static var figuresBytes: Int { (maxSizeClasses * MemoryLayout<ClassFigures>.stride + 63) & ~63 }

    /// Takes the figures into `memory` (report memory, at least figuresBytes).
    ///
    /// Takes the page heap's lock, then the registry lock; must hold no allocator lock.
    static func take(into memory: UnsafeMutableRawPointer) -> HeapReport {
        let figures = memory.bindMemory(to: ClassFigures.self, capacity: maxSizeClasses)
        var report = HeapReport(classes: figures)
        report.snapshot = HeapSnapshot.take()
        if !heapIsReady() { return report }
        let root = heap
        let classCount = root.pointee.classes.count
        report.classCount = classCount
        for cls in 0..<classCount {
            let central = (root.pointee.centrals + cls).pointee
            let info = root.pointee.classes.info[cls]
            (figures + cls).initialize(to: ClassFigures(size: UInt(info.size), pages: UInt(info.pages),
                                                        objectsPerSpan: UInt(info.objects),
                                                        spans: cls == 0 ? 0 : UInt(central.spanCount),
                                                        allocated: cls == 0 ? 0 : central.allocatedObjects))
        }
        let caches = processCaches
        caches.lockPointer.lock()
        // Live caches, then parked ones (ThreadCache.swift: CacheRegistry.park).
        func countCached(from head: UnsafeMutablePointer<ThreadCache>?) {
            var cache = head
            while let current = cache {
                for cls in 1..<classCount {
                    figures[cls].cached &+= UInt(current.bin(cls).pointee.count) &+ UInt(current.remoteBin(cls).pointee.count)
                }
                cache = current.header.pointee.next
            }
        }
        countCached(from: caches.pointee.live)
        countCached(from: caches.pointee.parked)
        caches.lockPointer.unlock()
        var live = report.snapshot.largeBytes
        for cls in 1..<classCount {
            let f = figures[cls]
            // Racy reads may see an object counted in a cache before its class counted it.
            figures[cls].cached = min(f.cached, f.allocated)
            live &+= f.allocated &* f.size
            report.smallSpans &+= f.spans
            report.cachedObjects &+= figures[cls].cached
            report.cachedBytes &+= figures[cls].cached &* f.size
            report.freeObjects &+= f.freeInSpans
            report.freeObjectBytes &+= f.freeInSpans &* f.size
        }
        // The same sum as the scavenger's liveBytesEstimate (plus the objects mapped on
        // their own), from the figures this report prints.
        report.snapshot.liveBytes = live
        return report
    }
}

/// Takes a report's figures and formats it with `format` into report memory, drained to
/// the writer `makeWriter` builds over the text buffer. Returns whether the sink took
/// it all, or nil if the report memory could not be mapped.
///
/// Takes the heap and registry locks for the figures; must hold no allocator lock.
func withHeapReport(_ makeWriter: (UnsafeMutableRawPointer, Int) -> ReportWriter,
                    _ format: (HeapReport, inout ReportWriter) -> Void) -> Bool? {
    withReportMemory { memory in
        let report = HeapReport.take(into: memory)
        var writer = makeWriter(memory + HeapReport.figuresBytes, Int(reportMemoryBytes) &- HeapReport.figuresBytes)
        format(report, &writer)
        writer.flush()
        return !writer.failed
    }
}

// MARK: - Text and JSON summaries

private func line(_ out: inout ReportWriter, _ label: StaticString, _ value: UInt, _ unit: StaticString = " bytes\n") {
    out.put(label)
    out.put(number: value)
    out.put(unit)
}

/// The text summary (malloc_stats, SWIFTHEAP_STATS=1).
func formatTextStats(_ r: HeapReport, _ out: inout ReportWriter) {
    let s = r.snapshot
    out.put("swiftheap stats\n")
    line(&out, "  mapped (arenas):        ", s.mappedBytes)
    line(&out, "  in spans:               ", s.spanBytes)
    line(&out, "  in use (live objects):  ", s.inUseBytes)
    line(&out, "  free in heap:           ", s.freeBytes)
    line(&out, "  free pages:             ", s.freePageBytes)
    line(&out, "  retained from the OS:   ", s.retainedBytes)
    line(&out, "  released (free pages):  ", s.scavengedFreeBytes)
    line(&out, "  released inside spans:  ", s.inSpanReleasedBytes)
    line(&out, "  large objects:          ", s.largeCount, "\n")
    line(&out, "  large object bytes:     ", s.largeBytes)
    line(&out, "  mapped on their own:    ", s.directBytes, " bytes (objects of 64 MiB or more)\n")
    line(&out, "  metadata mapped:        ", s.metadataBytes)
    line(&out, "  thread caches live:     ", s.threadCaches, "\n")
    line(&out, "  cached in threads:      ", r.cachedBytes)
    line(&out, "  large cached (threads): ", s.cachedLargeBytes)
    line(&out, "  scavenge generations:   ", UInt(s.generation), "\n")
    line(&out, "  scavenger released:     ", s.releasedBytes, " bytes (all generations)\n")
    line(&out, "  scavenger CPU:          ", s.scavengerCPUNanos / 1_000_000, " ms\n")
    out.put("  class  size  spans  objects-in-use  cached  free-in-spans\n")
    for cls in 1..<max(r.classCount, 1) {
        let f = r.classes[cls]
        if f.isEmpty { continue }
        out.put("  ")
        out.put(number: UInt(cls))
        out.put(" ")
        out.put(number: f.size)
        out.put(" ")
        out.put(number: f.spans)
        out.put(" ")
        out.put(number: f.allocated)
        out.put(" ")
        out.put(number: f.cached)
        out.put(" ")
        out.put(number: f.freeInSpans)
        out.put("\n")
    }
}

/// A size class's figures as fields (the JSON summary's and malloc_info's).
func putClassFields(_ out: inout ReportWriter, _ cls: Int, _ f: ClassFigures) {
    out.field("class", UInt(cls))
    out.field("size", f.size)
    out.field("pages", f.pages)
    out.field("objects_per_span", f.objectsPerSpan)
    out.field("spans", f.spans)
    out.field("allocated", f.allocated)
    out.field("cached", f.cached)
    out.field("free", f.freeInSpans)
}

/// The JSON summary (SWIFTHEAP_STATS=json): one object on one line.
func formatJSONStats(_ r: HeapReport, _ out: inout ReportWriter) {
    let s = r.snapshot
    out.json = true
    out.openObject()
    out.field("allocator", text: "swiftheap")
    out.field("version", string: sh_version())
    out.field("pid", UInt(bitPattern: Int(getpid())))
    out.field("mapped_bytes", s.mappedBytes)
    out.field("span_bytes", s.spanBytes)
    out.field("in_use_bytes", s.inUseBytes)
    out.field("free_bytes", s.freeBytes)
    out.field("free_page_bytes", s.freePageBytes)
    out.field("retained_bytes", s.retainedBytes)
    out.field("releasable_bytes", s.releasableBytes)
    out.field("released_free_page_bytes", s.scavengedFreeBytes)
    out.field("released_in_span_bytes", s.inSpanReleasedBytes)
    out.field("small_spans", r.smallSpans)
    out.field("large_objects", s.largeCount)
    out.field("large_bytes", s.largeBytes)
    out.field("direct_objects", s.directCount)
    out.field("direct_bytes", s.directBytes)
    out.field("metadata_bytes", s.metadataBytes)
    out.field("thread_caches", s.threadCaches)
    out.field("cached_objects", r.cachedObjects)
    out.field("cached_bytes", r.cachedBytes)
    out.field("cached_large_objects", s.cachedLargeCount)
    out.field("cached_large_bytes", s.cachedLargeBytes)
    out.field("free_objects", r.freeObjects)
    out.field("free_object_bytes", r.freeObjectBytes)
    out.openObject("scavenger")
    out.field("enabled", flag: !heapIsReady() || heap.pointee.config.scavengerEnabled)
    out.field("generations", UInt(s.generation))
    out.field("released_bytes", s.releasedBytes)
    out.field("cpu_ns", s.scavengerCPUNanos)
    out.closeObject()
    out.openArray("classes")
    for cls in 1..<max(r.classCount, 1) where !r.classes[cls].isEmpty {
        out.openObject()
        putClassFields(&out, cls, r.classes[cls])
        out.closeObject()
    }
    out.closeArray()
    out.closeObject()
    out.put("\n")
}

/// Writes the text summary to stderr. Must hold no allocator lock.
func printHeapStats() {
    if withHeapReport({ ReportWriter(buffer: $0, capacity: $1, descriptor: 2) }, formatTextStats) != true {
        writeDiagnostic("swiftheap: stats: could not write the summary\n")
    }
}

@_cdecl("swiftheap_malloc_stats")
public func swiftheap_malloc_stats() {
    let savedErrno = sh_errno_get()
    printHeapStats()
    sh_errno_set(savedErrno)
}

/// Fills glibc's struct mallinfo2 fields, in order: arena, ordblks, smblks, hblks,
/// hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost. Only what is honestly
/// known is filled: arena = mapped heap bytes, hblks/hblkhd = large objects and their
/// bytes, uordblks = bytes in live objects, fordblks = arena - uordblks, keepcost =
/// bytes that are free and still resident (what malloc_trim could release).
@_cdecl("swiftheap_mallinfo")
public func swiftheap_mallinfo(_ fields: UnsafeMutablePointer<Int>) {
    let s = HeapSnapshot.take()
    for i in 0..<10 { fields[i] = 0 }
    fields[0] = Int(bitPattern: s.mappedBytes)
    fields[3] = Int(bitPattern: s.largeCount)
    fields[4] = Int(bitPattern: s.largeBytes)
    fields[7] = Int(bitPattern: s.inUseBytes)
    fields[8] = Int(bitPattern: s.freeBytes)
    fields[9] = Int(bitPattern: s.releasableBytes)
}

// MARK: - The summary at exit

/// atexit handler for SWIFTHEAP_STATS: the summary in the configured form, to stderr or
/// appended to SWIFTHEAP_STATS_FILE. Must hold no allocator lock.
func printStatsAtExit() {
    let savedErrno = sh_errno_get()
    defer { sh_errno_set(savedErrno) }
    let config = heap.pointee.config
    let format: (HeapReport, inout ReportWriter) -> Void = config.statsJSON ? formatJSONStats : formatTextStats
    var descriptor: Int32 = config.statsDescriptor >= 0 ? config.statsDescriptor : 2
    if let template = config.statsPath {
        descriptor = openStatsFile(template)
        if descriptor < 0 {
            writeDiagnostic("swiftheap: stats: cannot open SWIFTHEAP_STATS_FILE, writing to stderr\n")
            descriptor = 2
        }
    }
    // The file gets the whole report in one write (the buffer holds it), so that
    // processes appending to the same file do not interleave their lines.
    var written = withHeapReport({ ReportWriter(buffer: $0, capacity: $1, descriptor: descriptor) }, format)
    if written == false && descriptor == config.statsDescriptor {
        // The program closed our copy of stderr (daemons close every descriptor).
        written = withHeapReport({ ReportWriter(buffer: $0, capacity: $1, descriptor: 2) }, format)
    }
    if written != true { writeDiagnostic("swiftheap: stats: could not write the summary\n") }
    if descriptor != 2 && descriptor != config.statsDescriptor { _ = close(descriptor) }
}

/// Opens the stats file named by `template` (%p: the process id, %%: %) for appending.
/// Returns the descriptor, or -1.
private func openStatsFile(_ template: UnsafePointer<CChar>) -> Int32 {
    let descriptor: Int32? = withReportMemory { memory in
        // The name is shorter than 4096 bytes (Config) and %p grows 2 bytes to at most
        // 20: the expansion fits report memory, so the writer never drains (it has no sink).
        var path = ReportWriter(buffer: memory, capacity: Int(reportMemoryBytes), descriptor: -1)
        path.put(expanding: template)
        path.put(byte: 0)
        return sh_open_append(UnsafeRawPointer(memory).assumingMemoryBound(to: CChar.self))
    }
    return descriptor ?? -1
}
