// The page heap: spans from the page allocator, the page→span map, span records, large
// objects, and the heap's growth from the OS (Go's mheap).
//
// A PageHeap is an instance: the process has one (in the heap root, Heap.swift), tests
// make their own. It depends only on the layers below it (the page allocator, spans,
// metadata, the platform) and publishes what the scavenger must know — pages freed,
// pages moved — into the HeapEvents record it was made with.
//
// Locking: the page heap's lock (rank pageHeap) guards the page allocator (which takes it
// by injection), the span records, the span map's writes, the stats and the freed-direct
// ring. Functions named ...Locked must be called holding it; the others say what they
// take. Nothing that may call malloc runs under it.
//
// Growth. When the page allocator has no free run of the size asked, the heap maps a
// region and hands it to the page allocator as free, scavenged memory. Regions are what
// the heap needs, not more: the first is 4 MiB, each next one twice the last up to 64 MiB,
// or the request rounded up to whole chunks, and only the request if the kernel refuses
// more (an address-space cap). The first region goes at a randomised address with room
// above it (heapPlacementHint), and each next one right above the last where that
// address range is free: the heap stays one range for the page allocator and the
// scavenger, and it grows upward, so that first fit reuses old, resident memory before
// new or released memory.
//
// Large objects (above maxSmallSize) are spans of their own, mapping their first page
// only in the span map. Objects of directThreshold (64 MiB) or more are mapped on their
// own (allocDirectSpan) and unmapped when freed: the page allocator's metadata for them
// would grow with their size, and the kernel's overcommit policy refuses an absurd size
// at once, as it does glibc's. The bases of the last few freed are remembered so that
// freeing one again is reported as the double free it is.
//
// Releasing at free. A program that runs no thread of its own has no scavenger thread
// (ScavengerRunner.swift): its memory goes back to the OS only during its own allocator
// calls, and the inline runner ticks at most once a millisecond, so what it frees in a
// burst just before it goes quiet (a tool that frees its buffers and waits for input)
// would stay resident for as long as it waits. glibc hands back at once a block it
// mapped on its own: every block of its mmap threshold (128 KiB at first) or more until
// the program frees one, when the threshold rises to that block's size (up to 32 MiB,
// past which every block is mapped on its own). The page heap does likewise, for a
// program that frees big blocks in a row:
//   * a large object above releaseAtFreeBytes is marked when it is allocated
//     (Span.releaseOnFree);
//   * when the program frees a marked object while no scavenger thread runs (the caller
//     says, freeLarge's `mayRelease`: Scavenger.releasesAtFree, which is also false with
//     the scavenger off), and its previous large-object call was a free
//     too, the object's pages go back to the OS in that call, with those of the marked
//     object that free left (releasePending) if they are still free; after a large
//     allocation the free is only remembered as pending. An object of
//     releaseAtFreeMaxBytes or more goes back at once, and so does one whose free
//     leaves less than a quarter of the heap's bytes in spans. A program that churns big
//     blocks (free one, allocate the next) keeps them: released at every free, `large`
//     took 4% longer, `realloc` 5% and `sqlite` 3% (glibc's rule alone);
//   * at each release the threshold rises to twice the largest large object allocated
//     so far (at most releaseAtFreeMaxBytes), so that a program that frees big blocks
//     in bursts and allocates them again keeps the next ones;
//   * a realloc that moves an object frees the old one unmarked (glibc moves a block it
//     mapped on its own with mremap, and a block of its heap back into its heap), and
//     counts as an allocation (noteLargeAllocation), as does one in place (resizeLarge).
//     The old pages of an object of releaseAtMoveBytes or more go back at once, in any
//     program: mremap leaves no copy behind.
// In a program that runs threads the scavenger's thread releases freed pages within a
// few tick periods, sparing the ones the program reuses (PageAllocScavenge.swift); but a
// block of releaseAtFreeMaxBytes or more goes back at its free there too, as glibc
// unmaps it: the blocks a program allocates next would otherwise
// add to its peak whenever they do not fit in the freed one's pages (GNU sort frees its
// 50 MiB buffer and allocates three of a third of it and a few bytes: its peak RSS was
// 68 MB against glibc's 53; Tests/c/big_block_replaced.c).

import CShim

/// Counters of the page heap, guarded by its lock.
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
    /// Bytes released because the heap grew above the goal (scavengeOnGrowthLocked).
    var releasedOnGrowthBytes: UInt = 0
}

/// releaseAtFreeBytes at first, and at most (glibc's mmap threshold and its maximum on
/// 64-bit systems).
let releaseAtFreeInitialBytes: UInt = 128 << 10
let releaseAtFreeMaxBytes: UInt = 32 << 20
/// A large object of this size or more that realloc moves gives its old pages back at
/// once (PageHeap.freeLarge: `releasing`): glibc moves such a block with mremap, which
/// leaves no copy behind (Tests/c/realloc_peak.c). Below it the old copy stays for the
/// next allocations, as glibc keeps a block of its heap that realloc moves.
let releaseAtMoveBytes: UInt = chunkBytes

/// The most scavengeOnGrowthLocked releases in one growth.
let growthScavengeMaxBytes: UInt = 16 << 20

/// Bases of the last objects mapped on their own that were freed (a ring), so that a free
/// of one of them again is told from a pointer SwiftHeap never returned.
struct FreedDirectRing {
    static let slots = 16
    var bases = InlineArray<16, UInt>(repeating: 0)
    var next: Int = 0

    mutating func record(_ base: UInt) {
        bases[next] = base
        next = (next &+ 1) & (Self.slots &- 1)
    }

    func contains(_ address: UInt) -> Bool {
        var i = 0
        while i < Self.slots {
            if bases[i] == address { return true }
            i &+= 1
        }
        return false
    }
}

struct PageHeap {
    /// Guards everything below (see the file comment).
    var lock = Mutex(rank: .pageHeap)
    var pages: UnsafeMutablePointer<PageAlloc>
    /// Read without the lock by the free paths; written under it.
    var spanMap: SpanMap
    /// Span records: their memory goes back to the OS after a burst (SlabPool.swift).
    var spanRecords: SlabPool
    var stats = HeapStats()
    var freedDirect = FreedDirectRing()
    /// Where this page heap publishes what happened (Events.swift).
    var events: UnsafeMutablePointer<HeapEvents>
    /// Where the first region is mapped if that address range is free (0: anywhere).
    var placementHint: UInt = 0
    /// Large objects allocated above this size are released when freed (see the
    /// file comment: Releasing at free); rises to largestLargeBytes at each release, up
    /// to releaseAtFreeMaxBytes.
    var releaseAtFreeBytes: UInt = releaseAtFreeInitialBytes
    /// The largest large object allocated from the page heap so far (bytes).
    var largestLargeBytes: UInt = 0
    /// Whether the last large object the program allocated or freed was freed.
    var lastLargeCallFreed: Bool = false
    /// The pages of the marked object that free left unreleased (empty if none).
    var releasePending = AddressRange.empty

    /// Makes a page heap at `p` (stable memory) that publishes into `events`, with
    /// `spanMap` (nil: a new one). Returns false if the kernel refuses the memory for its
    /// tables.
    static func initialize(_ p: UnsafeMutablePointer<PageHeap>, events: UnsafeMutablePointer<HeapEvents>,
                           spanMap: SpanMap? = nil) -> Bool {
        guard let spanMap = spanMap ?? SpanMap.make(),
              let pagesMemory = persistentAlloc(UInt(MemoryLayout<PageAlloc>.stride), alignment: 64) else { return false }
        let pages = pagesMemory.bindMemory(to: PageAlloc.self, capacity: 1)
        pages.initialize(to: PageAlloc())
        // Whole cache lines per span record: the records of spans used by different
        // threads must not share a line (refills write a span's counters).
        p.initialize(to: PageHeap(pages: pages, spanMap: spanMap,
                                  spanRecords: SlabPool(recordBytes: UInt(MemoryLayout<Span>.stride)),
                                  events: events, placementHint: heapPlacementHint(salt: UInt(bitPattern: p))))
        return pages.pointee.initialize(heapLock: p.lockPointer, test: false)
    }
}

extension UnsafeMutablePointer where Pointee == PageHeap {
    @inline(__always) var lockPointer: UnsafeMutablePointer<Mutex> { pointer(to: \.lock)! }
    @inline(__always) var stats: UnsafeMutablePointer<HeapStats> { pointer(to: \.stats)! }
    /// stats.spanBytes as a word for racy reads by other layers (the large cache's budget).
    @inline(__always) var heapSpanBytesWord: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(stats.pointer(to: \.spanBytes)!).assumingMemoryBound(to: UInt64.self)
    }

    /// Unmaps every heap region, the span map and the page allocator's tables (span
    /// records are metadata and stay). For a page heap nobody uses any more (tests): live
    /// objects of it, and objects mapped on their own, must be gone.
    func destroy() {
        let pages = pointee.pages
        var k = 0
        while k < pages.pointee.inUse.count {
            let region = pages.pointee.inUse[k]
            osUnmap(region.base, region.size)
            k &+= 1
        }
        pointee.spanMap.destroy()
        pages.pointee.destroy()
    }

    // MARK: - Spans

    /// Allocates a span of `pageCount` pages whose base is aligned to `alignment` bytes
    /// (a power of two; pageSize or less means no constraint beyond the page), in `state`
    /// (.small or .large; see the span map's rule in Span.swift). Returns the span, with
    /// base, pages and state set and the span map pointing at it, and how many of its
    /// bytes the page allocator had as scavenged (released, or fresh from mmap); nil if
    /// the address space or metadata memory is exhausted, or if the heap would have to
    /// grow and `mayGrow` is false.
    ///
    /// Must hold the page heap's lock.
    func allocSpanLocked(pageCount: UInt, alignment: UInt = pageSize, state: SpanState,
                         mayGrow: Bool = true) -> (span: UnsafeMutablePointer<Span>, scavengedBytes: UInt)? {
        // Over-allocate for alignments above a page, then give back the head and tail.
        let alignmentPages = alignment > pageSize ? alignment >> pageShift : 1
        let (searchPages, overflow) = pageCount.addingReportingOverflow(alignmentPages &- 1)
        if overflow || searchPages > (UInt(1) << (heapAddressBits - pageShift)) { return nil }
        let pages = pointee.pages
        var run = pages.pointee.alloc(npages: searchPages)
        if run.base == 0 {
            if !mayGrow || !growLocked(pages: searchPages) { return nil }
            run = pages.pointee.alloc(npages: searchPages)
            if run.base == 0 { return nil }
        }
        var base = run.base
        // (The head and tail given back below for an alignment go back as not scavenged.)
        let scavengedBytes = min(run.scavenged, pageCount &<< pageShift)
        if alignmentPages > 1 {
            base = alignUp(run.base, alignment)
            let headPages = (base &- run.base) >> pageShift
            let tailPages = searchPages &- headPages &- pageCount
            if headPages > 0 { pages.pointee.free(base: run.base, npages: headPages) }
            if tailPages > 0 { pages.pointee.free(base: base &+ pageCount &<< pageShift, npages: tailPages) }
        }
        guard let record = pointer(to: \.spanRecords)!.alloc() else {
            pages.pointee.free(base: base, npages: pageCount)
            return nil
        }
        let span = record.bindMemory(to: Span.self, capacity: 1)
        span.initialize(to: Span())
        span.pointee.base = base
        span.pointee.pages = pageCount
        span.pointee.state = state
        pointee.spanMap.set(base: base, pages: state == .small ? pageCount : 1, to: span)
        stats.pointee.spanBytes &+= pageCount &<< pageShift
        pointee.events.noteTakenLocked(pageCount &<< pageShift, releasedBytes: scavengedBytes,
                                       spanBytes: stats.pointee.spanBytes)
        return (span, scavengedBytes)
    }

    /// Returns a span's pages to the page allocator and its record to the pool. Pages of a
    /// small span whose OS pages were all released inside it (bits of `releasedOSPages`,
    /// one per OS page from the base; their objects free since, or never handed out) stay
    /// released: they are marked scavenged, so that they are neither counted as resident
    /// nor released again.
    ///
    /// Must hold the page heap's lock.
    func freeSpanLocked(_ span: UnsafeMutablePointer<Span>, releasedOSPages: UInt64 = 0) {
        let base = span.pointee.base
        let pageCount = span.pointee.pages
        let pages = pointee.pages
        pointee.spanMap.set(base: base, pages: span.pointee.state == .small ? pageCount : 1, to: nil)
        pages.pointee.free(base: base, npages: pageCount)
        if releasedOSPages != 0 {
            let osPerPage = pageSize / osPageSize
            let pageMask: UInt64 = (UInt64(1) << UInt64(osPerPage)) &- 1
            var page: UInt = 0
            while page < pageCount && (page &+ 1) &* osPerPage <= 64 {
                if (releasedOSPages >> UInt64(page &* osPerPage)) & pageMask == pageMask {
                    pages.pointee.markScavenged(base &+ page &<< pageShift)
                }
                page &+= 1
            }
        }
        stats.pointee.spanBytes &-= pageCount &<< pageShift
        pointee.events.noteFreedLocked(pageCount &<< pageShift)
        span.pointee.state = .free
        pointer(to: \.spanRecords)!.free(UnsafeMutableRawPointer(span))
    }

    /// Extends a large span in place by `extraPages` if the pages after it are free, or
    /// if they run to the end of the heap's last region and the heap grows right above it
    /// (growLocked maps there when it can). Returns whether it did.
    ///
    /// A buffer grown by realloc is often the heap's last span: growing the heap under it
    /// saves the copy, and the old copy's resident pages, that moving it costs (a 67 MB
    /// file read into a buffer grown by realloc peaked at 2.4-2.9x its size, against 1.0x
    /// under glibc, whose mremap moves its pages; Tests/c/realloc_peak.c).
    ///
    /// Must hold the page heap's lock.
    func growSpanInPlaceLocked(_ span: UnsafeMutablePointer<Span>, extraPages: UInt) -> Bool {
        let pages = pointee.pages
        var grown = pages.pointee.allocRangeIfFree(base: span.pointee.limit, npages: extraPages)
        if !grown.ok {
            let last = stats.pointee.lastRegion
            let end = span.pointee.limit
            guard end >= last.base && end <= last.limit else { return false }
            let tailPages = (last.limit &- end) >> pageShift
            guard tailPages < extraPages, tailPages == 0 || pages.pointee.isRangeFree(base: end, npages: tailPages),
                  growLocked(pages: extraPages &- tailPages) else { return false }
            grown = pages.pointee.allocRangeIfFree(base: end, npages: extraPages)
            if !grown.ok { return false }
        }
        span.pointee.pages &+= extraPages
        stats.pointee.spanBytes &+= extraPages &<< pageShift
        pointee.events.noteTakenLocked(extraPages &<< pageShift, releasedBytes: grown.scavenged,
                                       spanBytes: stats.pointee.spanBytes)
        return true
    }

    /// Gives the last `pageCount - keepPages` pages of a large span back to the page allocator.
    ///
    /// Must hold the page heap's lock.
    func shrinkSpanLocked(_ span: UnsafeMutablePointer<Span>, keepPages: UInt) {
        let freedPages = span.pointee.pages &- keepPages
        if freedPages == 0 { return }
        let tail = span.pointee.base &+ keepPages &<< pageShift
        pointee.pages.pointee.free(base: tail, npages: freedPages)
        span.pointee.pages = keepPages
        stats.pointee.spanBytes &-= freedPages &<< pageShift
        pointee.events.noteFreedLocked(freedPages &<< pageShift)
    }

    // MARK: - The span map's idle memory

    /// Releases the span map's table memory of every SpanMap.bytesPerTablePage (1 MiB,
    /// aligned) of the heap whose pages are all free: their entries are zero, and would
    /// otherwise stay resident after the heap shrank (32 bytes for each page it once
    /// used). One madvise per run of such megabytes within a slot. Returns the bytes of
    /// table released (or released again: a scan does not know what an earlier one did).
    ///
    /// Must hold the heap lock.
    func releaseIdleSpanMapLocked() -> UInt {
        let pages = pointee.pages
        let granule = SpanMap.bytesPerTablePage
        let granulePages = granule >> pageShift
        var released: UInt = 0
        var k = 0
        while k < pages.pointee.inUse.count {
            let region = pages.pointee.inUse[k]
            var base = alignUp(region.base, granule)
            while base &+ granule <= region.limit {
                if !pages.pointee.isFreeRange(base, granulePages) {
                    base &+= granule
                    continue
                }
                // A run of free megabytes, inside the region and the slot (one table).
                let limit = min(region.limit, (base | ((UInt(1) << spanMapSlotShift) &- 1)) &+ 1)
                var end = base &+ granule
                while end &+ granule <= limit && pages.pointee.isFreeRange(end, granulePages) { end &+= granule }
                pointee.spanMap.releaseEntries(base: base, bytes: end &- base)
                released &+= (end &- base) / granule &* osPageSize
                base = end
            }
            k &+= 1
        }
        return released
    }

    // MARK: - Growth

    /// Maps a heap region big enough for a run of `pageCount` pages (see the file comment)
    /// and hands it to the page allocator. Returns false if the kernel refuses the memory.
    ///
    /// Must hold the page heap's lock.
    private func growLocked(pages pageCount: UInt) -> Bool {
        let stats = self.stats
        let (bytes, overflow) = pageCount.multipliedReportingOverflow(by: pageSize)
        if overflow { return false }
        let (rounded, overflow2) = bytes.addingReportingOverflow(chunkBytes &- 1)
        if overflow2 { return false }
        let need = alignDown(rounded, chunkBytes)
        var size = max(need, stats.pointee.nextGrowthBytes)
        let hint = pointee.placementHint
        var base = Self.mapRegion(size, after: stats.pointee.lastRegion, firstHint: hint)
        if base == 0 && size > need {
            size = need
            base = Self.mapRegion(size, after: stats.pointee.lastRegion, firstHint: hint)
        }
        if base == 0 { return false }
        if !pointee.spanMap.ensureSlots(base: base, bytes: size) || !pointee.pages.pointee.grow(base: base, size: size) {
            osUnmap(base, size)
            return false
        }
        stats.pointee.mappedBytes &+= size
        stats.pointee.regionCount &+= 1
        stats.pointee.nextGrowthBytes = min(stats.pointee.nextGrowthBytes &* 2, heapGrowthMaxBytes)
        stats.pointee.lastRegion = AddressRange(base: base, limit: base &+ size)
        scavengeOnGrowthLocked(size)
        return true
    }

    /// Go's mheap.grow: a heap that grows while it retains more than the scavenger's goal
    /// (events.retainedGoal) releases free pages as much as it grew (up to the excess, and
    /// at most growthScavengeMaxBytes: this runs in an allocation, with the lock held), so
    /// that what the heap holds from the OS stays at the goal instead of growing by what
    /// fragmentation costs. The pages just mapped are scavenged already and are not touched.
    /// Chunks the program allocated from within the scavenger's last spareTickPeriods tick
    /// periods are spared (PageAllocScavenge.swift): a heap whose live bytes swing grows
    /// when its free pages are too scattered for an allocation, and the next allocations
    /// land in them again.
    ///
    /// Must hold the page heap's lock.
    func scavengeOnGrowthLocked(_ grownBytes: UInt) {
        let goal = pointee.events.pointee.retainedGoal
        if goal == 0 { return }
        let pages = pointee.pages
        let released = pages.pointee.scavengedBytes &+ pointee.events.inSpanReleasedBytes
        let mapped = stats.pointee.mappedBytes
        let retained = mapped > released ? mapped &- released : 0
        if retained <= goal { return }
        let todo = min(min(retained &- goal, grownBytes), growthScavengeMaxBytes)
        let spare = pages.pointee.recentAllocStamp
        var done = PageAlloc.scavenge(pages, todo, mayUnlock: false, spareAllocatedSince: spare)
        if done < todo {
            // The generation's search is used up: search the heap again (the scavenger's
            // next epoch would start a generation anyway).
            _ = pages.pointee.scavengeStartGen()
            done &+= PageAlloc.scavenge(pages, todo &- done, mayUnlock: false, spareAllocatedSince: spare)
        }
        stats.pointee.releasedOnGrowthBytes &+= done
    }

    /// Maps `size` bytes (a multiple of chunkBytes) of chunk-aligned heap memory: right
    /// above `last` where that address range is free, so that the heap grows upward and
    /// first fit (lowest address first) reuses its oldest memory, which is resident, before
    /// its newest, which the scavenger releases first (highest first); the first region at
    /// `firstHint` (see heapPlacementHint); below `last` or anywhere if those are taken.
    /// Returns 0 if the kernel refuses.
    private static func mapRegion(_ size: UInt, after last: AddressRange, firstHint: UInt) -> UInt {
        if last.size == 0 {
            if firstHint != 0, case let hinted = osMapMemory(size, at: firstHint), hinted != 0 { return hinted }
        } else {
            if last.limit &+ size <= (UInt(1) << heapAddressBits),
               case let above = osMapMemory(size, at: last.limit), above != 0 { return above }
            if last.base > size, case let below = osMapMemory(size, at: last.base &- size), below != 0 { return below }
        }
        return osMapMemoryAligned(size, alignment: chunkBytes)
    }

    // MARK: - Large objects

    /// A large object of at least `size` bytes aligned to `alignment`, and whether its
    /// memory must be zeroed; nil if the size is impossible or memory is exhausted, or if
    /// the heap would have to grow and `mayGrow` is false.
    ///
    /// Takes the page heap's lock; must not hold it.
    func allocateLarge(_ size: UInt, alignment: UInt, zeroed mustBeZero: Bool, mayGrow: Bool = true) -> UnsafeMutableRawPointer? {
        let (padded, overflow) = size.addingReportingOverflow(pageSize &- 1)
        if overflow { return nil }
        let pageCount = padded >> pageShift
        let bytes = pageCount &<< pageShift
        let (withAlignment, overflow2) = bytes.addingReportingOverflow(alignment > pageSize ? alignment : 0)
        if overflow2 { return nil }
        if withAlignment >= directThreshold {
            // Fresh from the kernel: zero, and never in the program's hands.
            return allocDirectSpan(bytes: bytes, alignment: alignment).flatMap { UnsafeMutableRawPointer(bitPattern: $0.pointee.base) }
        }
        lockPointer.lock()
        guard let (span, scavenged) = allocSpanLocked(pageCount: pageCount, alignment: alignment, state: .large,
                                                      mayGrow: mayGrow) else {
            lockPointer.unlock()
            return nil
        }
        stats.pointee.largeBytes &+= bytes
        stats.pointee.largeCount &+= 1
        span.pointee.releaseOnFree = bytes > pointee.releaseAtFreeBytes
        pointee.largestLargeBytes = max(pointee.largestLargeBytes, bytes)
        largeCallAllocatedLocked()
        lockPointer.unlock()
        let memory = UnsafeMutableRawPointer(bitPattern: span.pointee.base).unsafelyUnwrapped
        if mustBeZero { zeroLarge(memory, bytes: bytes, scavengedBytes: scavenged) }
        return memory
    }

    /// Frees the large object at `address` (the base of `span`, looked up without the
    /// lock), or reports a double free if another free got there first. With `releasing`
    /// (the old copy of an object realloc moved: releaseAtMoveBytes) its pages go back to
    /// the OS now; so do those of an object of releaseAtFreeMaxBytes or more, and with
    /// `mayRelease` (no scavenger thread runs) perhaps those of one marked releaseOnFree
    /// (see the file comment).
    ///
    /// Takes the page heap's lock; must not hold it.
    func freeLarge(_ span: UnsafeMutablePointer<Span>, address: UInt, call: StaticString, mayRelease: Bool = false,
                   releasing: Bool = false) {
        lockPointer.lock()
        // Verify under the lock: a racing double free may have freed it meanwhile.
        guard pointee.spanMap.span(containing: address) == span, span.pointee.state == .large else {
            lockPointer.unlock()
            fatalMisuse(call, "double free of", address: address)
        }
        if span.pointee.direct {
            let memory = freeDirectSpanLocked(span)
            lockPointer.unlock()
            osUnmap(memory.base, memory.size)
            return
        }
        let freed = AddressRange(base: span.pointee.base, limit: span.pointee.limit)
        let releaseNow = freed.size >= releaseAtFreeMaxBytes || (mayRelease && span.pointee.releaseOnFree)
        freeLargeSpanLocked(span)
        if releasing {
            releaseFreedLocked(freed)
        } else if releaseNow {
            releaseAtFreeLocked(freed)
        }
        pointee.lastLargeCallFreed = true
        lockPointer.unlock()
    }

    /// Records that the program's last large-object call allocated (a realloc that moved a
    /// large object: its free of the old one is part of an allocation). Takes the page
    /// heap's lock; must not hold it.
    func noteLargeAllocation() {
        lockPointer.lock()
        largeCallAllocatedLocked()
        lockPointer.unlock()
    }

    /// The program's last large-object call allocated: a free before it stays unreleased
    /// (Releasing at free). Must hold the page heap's lock.
    private func largeCallAllocatedLocked() {
        pointee.lastLargeCallFreed = false
        pointee.releasePending = .empty
    }

    /// The rule of "Releasing at free" (file comment) for the marked large object whose
    /// pages `freed` the program has just freed. Must hold the page heap's lock.
    private func releaseAtFreeLocked(_ freed: AddressRange) {
        // (The heap in spans fell below a quarter of what it held: a phase ended.)
        let mostOfTheHeap = 3 &* stats.pointee.spanBytes < freed.size
        if freed.size < releaseAtFreeMaxBytes && !mostOfTheHeap && !pointee.lastLargeCallFreed {
            pointee.releasePending = freed
            return
        }
        let pending = pointee.releasePending
        pointee.releasePending = .empty
        if pending.size > 0 && isFreeUnscavengedLocked(pending) { releaseFreedLocked(pending) }
        releaseFreedLocked(freed)
        pointee.releaseAtFreeBytes = max(pointee.releaseAtFreeBytes, min(pointee.largestLargeBytes &* 2, releaseAtFreeMaxBytes))
    }

    /// Calls `body(chunk, first page in it, pages)` for the pieces of `range` (page
    /// aligned) in each chunk, lowest first.
    @inline(__always) private func forEachChunkPiece(_ range: AddressRange, _ body: (UInt, UInt, UInt) -> Void) {
        var address = range.base
        while address < range.limit {
            let first = chunkPageIndex(address)
            let run = min((range.limit &- address) >> pageShift, chunkPages &- first)
            body(chunkIndex(address), first, run)
            address &+= run &<< pageShift
        }
    }

    /// Whether every page of `range` is free and not scavenged (a pending release's pages
    /// may have gone to a small span, or been released by the scavenger, since). Must hold
    /// the page heap's lock.
    private func isFreeUnscavengedLocked(_ range: AddressRange) -> Bool {
        var ok = true
        forEachChunkPiece(range) { chunk, first, count in
            ok = ok && pointee.pages.pointee.isFreeUnscavenged(chunk: chunk, first: first, count: count)
        }
        return ok
    }

    /// Releases to the OS the free, unscavenged pages of `range`, chunk by chunk, and marks
    /// them scavenged. Must hold the page heap's lock, and keeps it: it is what the
    /// program's free costs, as glibc's munmap would.
    private func releaseFreedLocked(_ range: AddressRange) {
        forEachChunkPiece(range) { chunk, first, count in
            _ = pointee.pages.pointee.scavengeRangeLocked(chunk, first, count, mayUnlock: false)
        }
    }

    /// Returns a large span from a thread's large cache (LargeCache.swift: state .cached,
    /// still counted among the large objects) to the page allocator.
    ///
    /// Must hold the page heap's lock.
    func freeCachedLargeLocked(_ span: UnsafeMutablePointer<Span>) {
        precondition(span.pointee.state == .cached && !span.pointee.direct, "freeCachedLargeLocked: not a cached large span")
        freeLargeSpanLocked(span)
    }

    /// Uncounts a large span of the page heap (not one mapped on its own) from the large
    /// objects and returns its pages. Must hold the page heap's lock.
    private func freeLargeSpanLocked(_ span: UnsafeMutablePointer<Span>) {
        stats.pointee.largeBytes &-= span.pointee.pages &<< pageShift
        stats.pointee.largeCount &-= 1
        freeSpanLocked(span)
    }

    /// Shrinks a large object in place, or grows it into free pages that follow it; an
    /// object mapped on its own is remapped (mremap, which may move it without copying).
    /// Returns its address, or nil when it cannot. The caller owns the object.
    ///
    /// Takes the page heap's lock; must not hold it.
    func resizeLarge(_ span: UnsafeMutablePointer<Span>, _ size: UInt) -> UnsafeMutableRawPointer? {
        let (padded, overflow) = size.addingReportingOverflow(pageSize &- 1)
        if overflow { return nil }
        let newPages = padded >> pageShift
        if newPages == span.pointee.pages { return UnsafeMutableRawPointer(bitPattern: span.pointee.base) }
        if span.pointee.direct {
            return resizeDirectSpan(span, bytes: newPages &<< pageShift).flatMap { UnsafeMutableRawPointer(bitPattern: $0) }
        }
        lockPointer.lock()
        defer { lockPointer.unlock() }
        let oldPages = span.pointee.pages
        if newPages <= oldPages {
            shrinkSpanLocked(span, keepPages: newPages)
        } else if !growSpanInPlaceLocked(span, extraPages: newPages &- oldPages) {
            return nil
        }
        stats.pointee.largeBytes = stats.pointee.largeBytes &- (oldPages &<< pageShift) &+ (span.pointee.pages &<< pageShift)
        largeCallAllocatedLocked()  // (a realloc)
        return UnsafeMutableRawPointer(bitPattern: span.pointee.base)
    }

    // MARK: - Objects mapped on their own

    /// Maps a large object of `bytes` (page-rounded) aligned to `alignment` on its own and
    /// makes a span for it. Its memory is fresh from the kernel: zero, and never seen by
    /// the program. Returns nil if the kernel refuses.
    ///
    /// Takes the page heap's lock; must not hold it.
    func allocDirectSpan(bytes: UInt, alignment: UInt) -> UnsafeMutablePointer<Span>? {
        let base = osMapMemoryAligned(bytes, alignment: max(alignment, pageSize))
        if base == 0 { return nil }
        lockPointer.lock()
        guard pointee.spanMap.ensureSlots(base: base, bytes: pageSize),
              let record = pointer(to: \.spanRecords)!.alloc() else {
            lockPointer.unlock()
            osUnmap(base, bytes)
            return nil
        }
        let span = record.bindMemory(to: Span.self, capacity: 1)
        span.initialize(to: Span())
        span.pointee.base = base
        span.pointee.pages = bytes >> pageShift
        span.pointee.state = .large
        span.pointee.direct = true
        pointee.spanMap.set(base: base, pages: 1, to: span)
        stats.pointee.directBytes &+= bytes
        stats.pointee.directCount &+= 1
        lockPointer.unlock()
        return span
    }

    /// Forgets a span made by allocDirectSpan and returns what to unmap (the caller unmaps
    /// it after dropping the lock).
    ///
    /// Must hold the page heap's lock.
    func freeDirectSpanLocked(_ span: UnsafeMutablePointer<Span>) -> AddressRange {
        let memory = AddressRange(base: span.pointee.base, limit: span.pointee.limit)
        pointee.spanMap.set(base: memory.base, pages: 1, to: nil)
        stats.pointee.directBytes &-= memory.size
        stats.pointee.directCount &-= 1
        pointer(to: \.freedDirect)!.pointee.record(memory.base)
        span.pointee.state = .free
        pointer(to: \.spanRecords)!.free(UnsafeMutableRawPointer(span))
        return memory
    }

    /// Resizes an object mapped on its own to `bytes` (page-rounded), moving it if the
    /// kernel must. Returns its address, or nil (the object unchanged) if the kernel
    /// refuses. The caller owns the object.
    ///
    /// Takes the page heap's lock; must not hold it.
    func resizeDirectSpan(_ span: UnsafeMutablePointer<Span>, bytes: UInt) -> UInt? {
        let oldBase = span.pointee.base
        let oldBytes = span.pointee.pages &<< pageShift
        let newBase = osRemap(oldBase, oldBytes, bytes)
        if newBase == 0 { return nil }
        lockPointer.lock()
        let map = pointee.spanMap
        if newBase != oldBase {
            // The old range is unmapped already and may be mapped again by now: clear its
            // entry only if it is still ours.
            if map.span(containing: oldBase) == span { map.set(base: oldBase, pages: 1, to: nil) }
            if !map.ensureSlots(base: newBase, bytes: pageSize) {
                lockPointer.unlock()
                fatalInternal("span map: no memory for the slot of a moved object")
            }
            map.set(base: newBase, pages: 1, to: span)
            span.pointee.base = newBase
        }
        span.pointee.pages = bytes >> pageShift
        stats.pointee.directBytes = stats.pointee.directBytes &- oldBytes &+ bytes
        lockPointer.unlock()
        return newBase
    }

    // MARK: - Misuse diagnosis

    /// Whether an address that maps to no span looks like an object freed before (a double
    /// free) rather than a pointer SwiftHeap never returned: one of the last objects
    /// mapped on their own that were freed, or a page-aligned address of heap memory whose
    /// page is free. (A page-aligned address inside a live large object maps to no span
    /// either; its page is allocated.) For the abort path only.
    ///
    /// Takes the page heap's lock; must not hold it.
    func looksLikeFreedObject(_ address: UInt) -> Bool {
        lockPointer.lock()
        defer { lockPointer.unlock() }
        if pointee.freedDirect.contains(address) { return true }
        return address & (pageSize &- 1) == 0 && pointee.pages.pointee.isFreePage(address)
    }
}

/// A chunk-aligned address in [16 TiB, 40 TiB) for a page heap's first region (leaving at
/// least 24 TiB above it to grow into), random from process to process (ASLR: a fixed heap base would be an attacker's gift),
/// far from where the kernel puts the program, its libraries, mmap and the stack, so that
/// the heap finds room to grow upward (Go places its arenas by hints too). Entropy from the
/// clock and the addresses of this call's stack and of `salt`. 0 disables the hint.
///
/// The address lies in the first quarter of a span-map slot (a GiB: Span.swift), so that a
/// heap of up to three quarters of a GiB, growing upward, needs one slot's table (4 MiB of
/// address space, which counts under `ulimit -v`) rather than two: anywhere in the slot, a
/// heap of 100 MB straddled two slots in one process in twenty, and
/// scripts/test-limits's grab got 4 MiB less (and once 8).
func heapPlacementHint(salt: UInt) -> UInt {
    var local: UInt = 0
    var x = UInt(bitPattern: Int(sh_monotonic_nanos())) ^ UInt(bitPattern: withUnsafeMutablePointer(to: &local) { Int(bitPattern: $0) }) ^ (salt &* 0x9E37_79B9_7F4A_7C15)
    x ^= x >> 31
    x = x &* 0xBF58_476D_1CE4_E5B9
    x ^= x >> 29
    let span: UInt = (UInt(1) << 46) &- (UInt(1) << 44)
    let slot = alignDown((UInt(1) << 44) &+ x % (span / 2), UInt(1) << spanMapSlotShift)
    let offset = ((x >> 48) % ((UInt(1) << spanMapSlotShift) / 4 / chunkBytes)) &* chunkBytes
    return slot &+ offset
}

/// Makes a large object's memory zero for calloc without trusting what it held. Pages the
/// scavenger released read as zero only until someone writes them, and a program that
/// writes into memory it freed (a use-after-free bug) may have: so released pages are not
/// "known zero". Where most of the span was released, releasing it again is the cheap way
/// (madvise of pages that are not resident costs little, and the kernel zero-fills every
/// page on its next touch, written or not); otherwise the memset is the cheaper. Where
/// the kernel refuses the release (pages locked by mlockall, a filter denying madvise:
/// Tests/c/calloc_no_release.c) the pages keep their bytes, and the memset does it.
///
/// The span must be allocated to the caller (no lock is held).
func zeroLarge(_ memory: UnsafeMutableRawPointer, bytes: UInt, scavengedBytes: UInt) {
    if scavengedBytes >= bytes / 2 && osRelease(UInt(bitPattern: memory), bytes) { return }
    memset(memory, 0, Int(bitPattern: bytes))
}
