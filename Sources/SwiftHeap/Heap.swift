// The heap: SwiftHeap's root state, its lazy initialisation, and the page heap that
// hands out spans (Go's mheap).
//
// Root state lives in the C shim's static area, zero-initialised before any code runs:
// the very first malloc of the process (possibly from the loader, before any
// constructor) finds an unlocked init mutex and initState 0 there, and initialises
// the heap without calling anything that allocates: tables come from metadata memory,
// address space from mmap.
//
// The heap lock guards the page allocator, the span records, the span map's writes and
// the stats. Lock order, outermost first: a class's central lock, then the heap lock,
// then the metadata lock. Nothing that may call malloc runs under any of them.
//
// Spans are carved from the page allocator. When it has no free run of the size asked,
// the heap grows by mapping a region and handing it to the page allocator as free,
// scavenged memory. Regions are what the heap needs, not more: the first is 4 MiB,
// each next one twice the last up to 64 MiB, or the request rounded up to whole chunks,
// and only the request if the kernel refuses more (an address-space cap). A region is
// placed right below or above the last one where that address range is free, so the
// heap stays one range for the page allocator and the scavenger.
//
// Objects of directThreshold (64 MiB) or more are mapped on their own (allocDirectSpan)
// and unmapped when freed: the page allocator's metadata for them would grow with their
// size (1/1024 of it in the span map alone), and the kernel's overcommit policy refuses
// an absurd size at once, as it does glibc's. Their record maps their first page only;
// the bases of the last few freed are remembered so that freeing one again is reported
// as the double free it is.

import CShim

/// Counters of the page heap, guarded by the heap lock.
struct HeapStats {
    /// Bytes of heap regions mapped from the OS.
    var mappedBytes: UInt = 0
    /// Bytes in spans (small and large) currently handed out by the page heap.
    var spanBytes: UInt = 0
    /// Bytes in large spans of the page heap currently allocated.
    var largeBytes: UInt = 0
    var largeCount: UInt = 0
    /// Bytes and number of objects mapped on their own.
    var directBytes: UInt = 0
    var directCount: UInt = 0
    /// Number of heap regions mapped.
    var regionCount: UInt = 0
    /// Bytes of the next growth (at least; see the file comment).
    var nextGrowthBytes: UInt = heapGrowthMinBytes
    /// The last region mapped, where the next is placed if the address space allows.
    var lastRegion = AddressRange.empty
}

/// Bases of the last objects mapped on their own that were freed (a ring), so that a free
/// of one of them again is told from a pointer SwiftHeap never returned.
struct FreedDirectRing {
    var bases = InlineArray<16, UInt>(repeating: 0)
    var next: Int = 0

    mutating func record(_ base: UInt) {
        bases[next] = base
        next = (next &+ 1) & 15
    }

    func contains(_ address: UInt) -> Bool {
        var i = 0
        while i < 16 {
            if bases[i] == address { return true }
            i &+= 1
        }
        return false
    }
}

struct Heap {
    /// Guards the page allocator, span records, the span map's writes and stats.
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
    /// Guarded by the heap lock.
    var freedDirect = FreedDirectRing()
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
/// (a power of two; pageSize or less means no constraint beyond the page), in `state`
/// (.small or .large; see the span map's rule in Span.swift). Returns the span, with
/// base, pages and state set and the span map pointing at it, and how many of its bytes
/// the page allocator had as scavenged (released, or fresh from mmap); nil if the
/// address space or metadata memory is exhausted.
///
/// Must hold the heap lock.
func allocSpanLocked(pageCount: UInt, alignment: UInt = pageSize,
                     state: SpanState) -> (span: UnsafeMutablePointer<Span>, scavengedBytes: UInt)? {
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
    span.pointee.state = state
    root.pointee.spanMap.set(base: base, pages: state == .small ? pageCount : 1, to: span)
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
    root.pointee.spanMap.set(base: base, pages: span.pointee.state == .small ? pageCount : 1, to: nil)
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
    if !root.pointee.pages.pointee.allocRangeIfFree(base: span.pointee.limit, npages: extraPages).ok { return false }
    span.pointee.pages &+= extraPages
    root.pointee.stats.spanBytes &+= extraPages &<< pageShift
    return true
}

/// Gives the last `pageCount - keepPages` pages of a large span back to the page allocator.
///
/// Must hold the heap lock.
func shrinkSpanLocked(_ span: UnsafeMutablePointer<Span>, keepPages: UInt) {
    let root = heap
    let freedPages = span.pointee.pages &- keepPages
    if freedPages == 0 { return }
    let tail = span.pointee.base &+ keepPages &<< pageShift
    root.pointee.pages.pointee.free(base: tail, npages: freedPages)
    span.pointee.pages = keepPages
    root.pointee.stats.spanBytes &-= freedPages &<< pageShift
    noteFreedLocked(freedPages &<< pageShift)
}

/// Maps a heap region big enough for a run of `pageCount` pages (see the file comment)
/// and hands it to the page allocator. Returns false if the kernel refuses the memory.
///
/// Must hold the heap lock.
private func growHeapLocked(pages pageCount: UInt) -> Bool {
    let stats = heap.pointer(to: \.stats)!
    let (bytes, overflow) = pageCount.multipliedReportingOverflow(by: pageSize)
    if overflow { return false }
    let (rounded, overflow2) = bytes.addingReportingOverflow(chunkBytes &- 1)
    if overflow2 { return false }
    let need = alignDown(rounded, chunkBytes)
    var size = max(need, stats.pointee.nextGrowthBytes)
    var base = mapHeapRegion(size, after: stats.pointee.lastRegion)
    if base == 0 && size > need {
        size = need
        base = mapHeapRegion(size, after: stats.pointee.lastRegion)
    }
    if base == 0 { return false }
    if !heap.pointee.spanMap.ensureSlots(base: base, bytes: size) || !heap.pointee.pages.pointee.grow(base: base, size: size) {
        osUnmap(base, size)
        return false
    }
    stats.pointee.mappedBytes &+= size
    stats.pointee.regionCount &+= 1
    stats.pointee.nextGrowthBytes = min(stats.pointee.nextGrowthBytes &* 2, heapGrowthMaxBytes)
    stats.pointee.lastRegion = AddressRange(base: base, limit: base &+ size)
    return true
}

/// Maps `size` bytes (a multiple of chunkBytes) of chunk-aligned heap memory, right below
/// or right above `last` if that address range is free, anywhere otherwise. Returns 0 if
/// the kernel refuses.
private func mapHeapRegion(_ size: UInt, after last: AddressRange) -> UInt {
    if last.size != 0 {
        if last.base > size, case let below = osMapMemory(size, at: last.base &- size), below != 0 { return below }
        if last.limit &+ size <= (UInt(1) << heapAddressBits),
           case let above = osMapMemory(size, at: last.limit), above != 0 { return above }
    }
    return osMapMemoryAligned(size, alignment: chunkBytes)
}

// MARK: - Objects mapped on their own

/// Maps a large object of `bytes` (page-rounded) aligned to `alignment` on its own and
/// makes a span for it. Its memory is fresh from the kernel: zero, and never seen by the
/// program. Returns nil if the kernel refuses.
///
/// Takes the heap lock; must not hold it.
func allocDirectSpan(bytes: UInt, alignment: UInt) -> UnsafeMutablePointer<Span>? {
    let base = osMapMemoryAligned(bytes, alignment: max(alignment, pageSize))
    if base == 0 { return nil }
    heapLock.lock()
    guard heap.pointee.spanMap.ensureSlots(base: base, bytes: pageSize),
          let record = heap.pointee.spanRecords.alloc() else {
        heapLock.unlock()
        osUnmap(base, bytes)
        return nil
    }
    let span = record.bindMemory(to: Span.self, capacity: 1)
    span.initialize(to: Span())
    span.pointee.base = base
    span.pointee.pages = bytes >> pageShift
    span.pointee.state = .large
    span.pointee.direct = true
    heap.pointee.spanMap.set(base: base, pages: 1, to: span)
    heap.pointee.stats.directBytes &+= bytes
    heap.pointee.stats.directCount &+= 1
    heapLock.unlock()
    return span
}

/// Forgets a span made by allocDirectSpan and returns what to unmap (the caller unmaps
/// it after dropping the lock).
///
/// Must hold the heap lock.
func freeDirectSpanLocked(_ span: UnsafeMutablePointer<Span>) -> AddressRange {
    let root = heap
    let memory = AddressRange(base: span.pointee.base, limit: span.pointee.limit)
    root.pointee.spanMap.set(base: memory.base, pages: 1, to: nil)
    root.pointee.stats.directBytes &-= memory.size
    root.pointee.stats.directCount &-= 1
    root.pointee.freedDirect.record(memory.base)
    span.pointee.state = .free
    root.pointee.spanRecords.free(UnsafeMutableRawPointer(span))
    return memory
}

/// Resizes an object mapped on its own to `bytes` (page-rounded), moving it if the
/// kernel must. Returns its address, or nil (the object unchanged) if the kernel refuses.
/// The caller owns the object.
///
/// Takes the heap lock; must not hold it.
func resizeDirectSpan(_ span: UnsafeMutablePointer<Span>, bytes: UInt) -> UInt? {
    let oldBase = span.pointee.base
    let oldBytes = span.pointee.pages &<< pageShift
    let newBase = osRemap(oldBase, oldBytes, bytes)
    if newBase == 0 { return nil }
    heapLock.lock()
    let map = heap.pointee.spanMap
    if newBase != oldBase {
        // The old range is unmapped already and may be mapped again by now: clear its
        // entry only if it is still ours.
        if map.span(containing: oldBase) == span { map.set(base: oldBase, pages: 1, to: nil) }
        if !map.ensureSlots(base: newBase, bytes: pageSize) {
            heapLock.unlock()
            fatalInternal("span map: no memory for the slot of a moved object")
        }
        map.set(base: newBase, pages: 1, to: span)
        span.pointee.base = newBase
    }
    span.pointee.pages = bytes >> pageShift
    heap.pointee.stats.directBytes = heap.pointee.stats.directBytes &- oldBytes &+ bytes
    heapLock.unlock()
    return newBase
}

// MARK: - Misuse diagnosis

/// Whether an address that maps to no span looks like an object freed before (a double
/// free) rather than a pointer SwiftHeap never returned: one of the last objects mapped
/// on their own that were freed, or a page-aligned address of heap memory whose page is
/// free. (A page-aligned address inside a live large object maps to no span either; its
/// page is allocated.) For the abort path only.
///
/// Takes the heap lock; must not hold it.
func looksLikeFreedObject(_ address: UInt) -> Bool {
    if !heapIsReady() { return false }
    heapLock.lock()
    defer { heapLock.unlock() }
    if heap.pointee.freedDirect.contains(address) { return true }
    return address & (pageSize &- 1) == 0 && heap.pointee.pages.pointee.isFreePage(address)
}
