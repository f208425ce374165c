// Statistics: malloc_stats(), mallinfo2() and the SWIFTHEAP_STATS=1 summary at exit.
// Everything is written with write(2) (stdio allocates). Counters are read under the
// page heap's lock where they are guarded by it; per-class counts are read racily, as
// estimates.

import CShim

/// A snapshot of the heap's counters.
struct HeapSnapshot {
    var mappedBytes: UInt = 0
    var spanBytes: UInt = 0
    var liveBytes: UInt = 0
    var largeBytes: UInt = 0
    var largeCount: UInt = 0
    /// Large objects mapped on their own (included in neither of the two above).
    var directBytes: UInt = 0
    var directCount: UInt = 0
    var releasedBytes: UInt = 0
    var scavengedFreeBytes: UInt = 0
    var inSpanReleasedBytes: UInt = 0
    var retainedBytes: UInt = 0
    var generation: UInt32 = 0
    var scavengerCPUNanos: UInt = 0
    var metadataBytes: UInt = 0
    var threadCaches: UInt = 0

    /// Takes the page heap's lock; must not hold it.
    static func take() -> HeapSnapshot {
        var snapshot = HeapSnapshot()
        if !heapIsReady() { return snapshot }
        let root = heap
        let pageHeap = processPageHeap
        let scavenger = processScavenger
        pageHeap.lockPointer.lock()
        let stats = pageHeap.pointee.stats
        snapshot.mappedBytes = stats.mappedBytes
        snapshot.spanBytes = stats.spanBytes
        snapshot.largeBytes = stats.largeBytes
        snapshot.largeCount = stats.largeCount
        snapshot.directBytes = stats.directBytes
        snapshot.directCount = stats.directCount
        snapshot.releasedBytes = pageHeap.pointee.pages.pointee.releasedBytes
        snapshot.scavengedFreeBytes = pageHeap.pointee.pages.pointee.scavengedBytes
        snapshot.retainedBytes = scavenger.retainedBytesLocked()
        snapshot.generation = pageHeap.pointee.pages.pointee.scav.gen
        pageHeap.lockPointer.unlock()
        snapshot.inSpanReleasedBytes = root.pointer(to: \.events)!.inSpanReleasedBytes
        snapshot.scavengerCPUNanos = UInt(scavenger.cpuNanos)
        snapshot.liveBytes = scavenger.liveBytesEstimate()
        snapshot.metadataBytes = metadataState.pointee.bytesMapped
        snapshot.threadCaches = root.pointee.caches.liveCount
        return snapshot
    }
}

private func line(_ label: StaticString, _ value: UInt, _ unit: StaticString = " bytes\n") {
    writeDiagnostic(label)
    writeDiagnostic(number: value)
    writeDiagnostic(unit)
}

/// Writes the summary to stderr. Takes the heap lock; must not hold any allocator lock.
func printHeapStats() {
    let s = HeapSnapshot.take()
    writeDiagnostic("swiftheap stats\n")
    line("  mapped (arenas):        ", s.mappedBytes)
    line("  mapped on their own:    ", s.directBytes, " bytes in objects of 64 MiB or more\n")
    line("  in spans:               ", s.spanBytes)
    line("  in use (live objects):  ", s.liveBytes)
    line("  free in heap:           ", s.mappedBytes &- min(s.mappedBytes, s.liveBytes))
    line("  retained from the OS:   ", s.retainedBytes)
    line("  released (free pages):  ", s.scavengedFreeBytes)
    line("  released inside spans:  ", s.inSpanReleasedBytes)
    line("  large objects:          ", s.largeCount &+ s.directCount, "\n")
    line("  large object bytes:     ", s.largeBytes &+ s.directBytes)
    line("  metadata mapped:        ", s.metadataBytes)
    line("  thread caches live:     ", s.threadCaches, "\n")
    line("  scavenge generations:   ", UInt(s.generation), "\n")
    line("  scavenger released:     ", s.releasedBytes, " bytes (all generations)\n")
    line("  scavenger CPU:          ", s.scavengerCPUNanos / 1_000_000, " ms\n")
    writeDiagnostic("  class  size  spans  objects-in-use\n")
    let root = heap
    if !heapIsReady() { return }
    for cls in 1..<root.pointee.classes.count {
        let central = (root.pointee.centrals + cls).pointee
        if central.spanCount == 0 && central.allocatedObjects == 0 { continue }
        writeDiagnostic("  ")
        writeDiagnostic(number: UInt(cls))
        writeDiagnostic(" ")
        writeDiagnostic(number: UInt(root.pointee.classes.info[cls].size))
        writeDiagnostic(" ")
        writeDiagnostic(number: central.spanCount)
        writeDiagnostic(" ")
        writeDiagnostic(number: central.allocatedObjects)
        writeDiagnostic("\n")
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
/// known is filled: arena = mapped heap bytes (with the objects mapped on their own),
/// hblks/hblkhd = large objects and their bytes, uordblks = bytes in live objects,
/// fordblks = arena - uordblks, keepcost = bytes that are free and still resident (what
/// malloc_trim could release).
@_cdecl("swiftheap_mallinfo")
public func swiftheap_mallinfo(_ fields: UnsafeMutablePointer<Int>) {
    let s = HeapSnapshot.take()
    for i in 0..<10 { fields[i] = 0 }
    let mapped = s.mappedBytes &+ s.directBytes
    fields[0] = Int(bitPattern: mapped)
    fields[3] = Int(bitPattern: s.largeCount &+ s.directCount)
    fields[4] = Int(bitPattern: s.largeBytes &+ s.directBytes)
    let live = min(s.liveBytes &+ s.directBytes, mapped)
    fields[7] = Int(bitPattern: live)
    fields[8] = Int(bitPattern: mapped &- live)
    fields[9] = Int(bitPattern: s.retainedBytes > live ? s.retainedBytes &- live : 0)
}

/// atexit handler for SWIFTHEAP_STATS=1.
func printStatsAtExit() { printHeapStats() }
