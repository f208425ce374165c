// The heap: SwiftHeap's root state, its lazy initialisation, and the page heap that
// hands out spans (Go's mheap).
//
// Root state lives in the C shim's static area, zero-initialised before any code runs:
// the very first malloc of the process (possibly from the loader, before any
// constructor) finds an unlocked init mutex and initState 0 there, and initialises
// the heap without calling anything that allocates: tables come from metadata memory,
// address space from mmap.
//
// The heap lock guards the page allocator, the span records and the arena tables.
// Lock order, outermost first: a class's central lock, then the heap lock, then the
// metadata lock. Nothing that may call malloc runs under any of them.
//
// Spans are carved from the page allocator; when it has no free run of the size
// asked, the heap grows by mapping a new arena (64 MiB, or the request rounded up to
// whole arenas) and handing it to the page allocator as free, scavenged memory.

import CShim

/// Counters of the page heap, guarded by the heap lock.
struct HeapStats {
    /// Bytes of arenas mapped from the OS.
    var mappedBytes: UInt = 0
    /// Bytes in spans (small and large) currently handed out by the page heap.
    var spanBytes: UInt = 0
    /// Bytes in large spans currently allocated.
    var largeBytes: UInt = 0
    var largeCount: UInt = 0
    /// Number of arena mappings.
    var arenaCount: UInt = 0
}

struct Heap {
    /// Guards the page allocator, span records, arena tables and stats.
    var lock = Mutex()
    /// Serialises initialisation.
    var initLock = Mutex()
    /// 0: not initialised, 2: ready. Read with acquire on the slow paths.
    var initState: UInt32 = 0
    var pages: UnsafeMutablePointer<PageAlloc>
    var spanMap: SpanMap
    var spanRecords: FixAlloc
    var classes: SizeClassTable
    var centrals: UnsafeMutablePointer<Central>
    var caches: CacheRegistry
    var stats = HeapStats()
    var config = Config()
    var scavenger = ScavengerState()
    /// Set by fork's prepare handler when it took the locks (Fork.swift); only the
    /// forking thread reads it, in the same fork.
    var forkTookLocks = false
}

/// The process's heap, in the shim's static area.
@inline(__always) var heap: UnsafeMutablePointer<Heap> {
    (sh_static_area() + staticRootOffset).assumingMemoryBound(to: Heap.self)
}

/// The heap lock (Heap.lock), for the layers that take it.
@inline(__always) var heapLock: UnsafeMutablePointer<Mutex> {
    withUnsafeMutablePointer(to: &heap.pointee.lock) { $0 }
}

/// True once the heap is usable. Cheap: one acquire load.
@inline(__always) func heapIsReady() -> Bool {
    sh_load32(initStateWord) == 2
}

@inline(__always) private var initStateWord: UnsafeMutablePointer<UInt32> {
    withUnsafeMutablePointer(to: &heap.pointee.initState) { $0 }
}

/// Makes the heap usable. Returns false if the kernel refused the memory it needs
/// (the caller fails the allocation with ENOMEM; a later call tries again).
///
/// Takes the init lock; must not hold any allocator lock.
func ensureHeapInitialized() -> Bool {
    if heapIsReady() { return true }
    return initializeHeapSlow()
}

@inline(never) private func initializeHeapSlow() -> Bool {
    let root = heap
    if MemoryLayout<Heap>.size > sh_static_area_bytes() - staticRootOffset {
        fatalInternal("heap root state does not fit the static area")
    }
    let initLock = withUnsafeMutablePointer(to: &root.pointee.initLock) { $0 }
    initLock.lock()
    defer { initLock.unlock() }
    if heapIsReady() { return true }

    guard let classes = SizeClassTable.make(),
          let spanMap = SpanMap.make(),
          let pagesMemory = persistentAlloc(UInt(MemoryLayout<PageAlloc>.stride), alignment: 64),
          let centralMemory = persistentAlloc(UInt(maxSizeClasses * MemoryLayout<Central>.stride), alignment: 64)
    else { return false }
    let pages = pagesMemory.bindMemory(to: PageAlloc.self, capacity: 1)
    pages.initialize(to: PageAlloc())
    if !pages.pointee.initialize(heapLock: heapLock, test: false) { return false }
    let centrals = centralMemory.bindMemory(to: Central.self, capacity: maxSizeClasses)
    for cls in 0..<maxSizeClasses {
        (centrals + cls).initialize(to: Central(sizeClass: UInt32(cls)))
    }
    root.pointee.pages = pages
    root.pointee.spanMap = spanMap
    // Whole cache lines per span record: the records of spans used by different
    // threads must not share a line (refills write a span's counters).
    root.pointee.spanRecords = FixAlloc(recordBytes: alignUp(UInt(MemoryLayout<Span>.stride), 64))
    root.pointee.classes = classes
    root.pointee.centrals = centrals
    guard let caches = CacheRegistry.make(classes: classes) else { return false }
    root.pointee.caches = caches
    root.pointee.stats = HeapStats()
    root.pointee.config = Config()
    root.pointee.scavenger = ScavengerState()
    sh_store32(initStateWord, 2)
    return true
}

// MARK: - Spans from the page heap

/// Allocates a span of `pageCount` pages whose base is aligned to `alignment` bytes
/// (a power of two; pageSize or less means no constraint beyond the page).
/// Returns the span, in state `.free` with base and pages set and the span map
/// pointing at it, and how many of its bytes the page allocator had as scavenged
/// (released, or fresh from mmap); nil if the address space or metadata memory is
/// exhausted.
///
/// Must hold the heap lock.
func allocSpanLocked(pageCount: UInt, alignment: UInt = pageSize) -> (span: UnsafeMutablePointer<Span>, scavengedBytes: UInt)? {
    let root = heap
    // Over-allocate for alignments above a page, then give back the head and tail.
    let alignmentPages = alignment > pageSize ? alignment >> pageShift : 1
    let (searchPages, overflow) = pageCount.addingReportingOverflow(alignmentPages &- 1)
    if overflow || searchPages > (UInt(1) << (heapAddressBits - pageShift)) { return nil }
    var run = root.pointee.pages.pointee.alloc(npages: searchPages)
    if run.base == 0 {
        if !growHeapLocked(pages: searchPages) { return nil }
        run = root.pointee.pages.pointee.alloc(npages: searchPages)
        if run.base == 0 { return nil }
    }
    var base = run.base
    // (The head and tail given back below for an alignment go back as not scavenged.)
    let scavengedBytes = min(run.scavenged, pageCount &<< pageShift)
    if alignmentPages > 1 {
        base = alignUp(run.base, alignment)
        let headPages = (base &- run.base) >> pageShift
        let tailPages = searchPages &- headPages &- pageCount
        if headPages > 0 { root.pointee.pages.pointee.free(base: run.base, npages: headPages) }
        if tailPages > 0 { root.pointee.pages.pointee.free(base: base &+ pageCount &<< pageShift, npages: tailPages) }
    }
    guard let record = root.pointee.spanRecords.alloc() else {
        root.pointee.pages.pointee.free(base: base, npages: pageCount)
        return nil
    }
    let span = record.bindMemory(to: Span.self, capacity: 1)
    span.initialize(to: Span())
    span.pointee.base = base
    span.pointee.pages = pageCount
    root.pointee.spanMap.set(base: base, pages: pageCount, to: span)
    root.pointee.stats.spanBytes &+= pageCount &<< pageShift
    return (span, scavengedBytes)
}

/// Returns a span's pages to the page allocator and its record to the pool.
///
/// Must hold the heap lock.
func freeSpanLocked(_ span: UnsafeMutablePointer<Span>) {
    let root = heap
    let base = span.pointee.base
    let pageCount = span.pointee.pages
    root.pointee.spanMap.set(base: base, pages: pageCount, to: nil)
    root.pointee.pages.pointee.free(base: base, npages: pageCount)
    root.pointee.stats.spanBytes &-= pageCount &<< pageShift
    noteFreedLocked(pageCount &<< pageShift)
    span.pointee.state = .free
    root.pointee.spanRecords.free(UnsafeMutableRawPointer(span))
}

/// Extends a large span in place by `extraPages` if the pages after it are free.
/// Returns whether it did.
///
/// Must hold the heap lock.
func growSpanInPlaceLocked(_ span: UnsafeMutablePointer<Span>, extraPages: UInt) -> Bool {
    let root = heap
    let limit = span.pointee.limit
    if !root.pointee.pages.pointee.allocRangeIfFree(base: limit, npages: extraPages).ok { return false }
    span.pointee.pages &+= extraPages
    root.pointee.spanMap.set(base: limit, pages: extraPages, to: span)
    root.pointee.stats.spanBytes &+= extraPages &<< pageShift
    return true
}

/// Gives the last `pageCount - keepPages` pages of a span back to the page allocator.
///
/// Must hold the heap lock.
func shrinkSpanLocked(_ span: UnsafeMutablePointer<Span>, keepPages: UInt) {
    let root = heap
    let freedPages = span.pointee.pages &- keepPages
    if freedPages == 0 { return }
    let tail = span.pointee.base &+ keepPages &<< pageShift
    root.pointee.spanMap.set(base: tail, pages: freedPages, to: nil)
    root.pointee.pages.pointee.free(base: tail, npages: freedPages)
    span.pointee.pages = keepPages
    root.pointee.stats.spanBytes &-= freedPages &<< pageShift
    noteFreedLocked(freedPages &<< pageShift)
}

/// Maps a new arena big enough for a run of `pageCount` pages and hands it to the
/// page allocator. Returns false if the kernel refuses the memory.
///
/// Must hold the heap lock.
private func growHeapLocked(pages pageCount: UInt) -> Bool {
    let root = heap
    let (bytes, overflow) = pageCount.multipliedReportingOverflow(by: pageSize)
    if overflow { return false }
    let (arenaSize, overflow2) = bytes.addingReportingOverflow(arenaBytes &- 1)
    if overflow2 { return false }
    let size = alignDown(arenaSize, arenaBytes)
    let base = osMapAligned(size, alignment: arenaBytes)
    if base == 0 { return false }
    if !root.pointee.spanMap.addArena(base: base, bytes: size) || !root.pointee.pages.pointee.grow(base: base, size: size) {
        osUnmap(base, size)
        return false
    }
    root.pointee.stats.mappedBytes &+= size
    root.pointee.stats.arenaCount &+= 1
    return true
}
