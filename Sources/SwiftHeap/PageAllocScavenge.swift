// The scavenger's core on the page allocator (Go's mgcscavenge.go after the change
// "runtime: remove scavAddr in favor of address ranges", plus Go 1.19's rule that pages
// being released are held as allocated while the heap lock is dropped).
//
// Scavenging returns free, resident pages to the OS (madvise DONTNEED), highest
// addresses first: the allocator is first-fit from low addresses, so the top of the
// heap is the least likely to be reused soon.
//
// Generations and reservations. scavengeStartGen (called when the sweep epoch ends,
// and by malloc_trim) clones the allocator's inUse ranges into scav.inUse: the address
// space this generation has not yet searched. A scavenger takes work with
// scavengeReserve: it removes the top reservationBytes (heap size / 64, so a reservation
// scales with the heap) of scav.inUse, widened down to a chunk boundary. Reservations
// are disjoint, so concurrent scavengers never search the same memory, and every byte
// is searched at most once per generation: no scavenger can move another's position
// backwards (the race that the seed removed). What a scavenger did not search it hands
// back with scavengeUnreserve, which drops it if a new generation started meanwhile
// (the new clone already covers it).
//
// Searching a reservation (scavengeOne): first the chunk holding its top address, under
// the lock; then, with the lock dropped if allowed, an optimistic downward scan of chunk
// bitmaps (relaxed atomic reads; an L2 block not yet visible is skipped) for a chunk
// that seems to hold a free, unscavenged page; that chunk is verified and its highest
// candidate run taken under the lock. A reservation shrinks from the top as it is
// searched: work.limit only decreases.
//
// Sparing chunks in use. The scavenger's paced passes (ScavengerPacing.swift) pass
// spareAllocatedSince: a chunk whose allocation stamp (PageAlloc.swift: allocRange) is at
// least that is skipped as if searched, and counted in scav.sparedChunks. Such a chunk
// had pages handed out lately, and its free pages are where the next allocations of
// the program land (first fit): a heap whose live bytes swing (a loop of big objects),
// or that grows through holes its frees left (sqlite), would have them faulted in again
// within milliseconds of their release. The release of a phase the program dropped and
// malloc_trim spare nothing (spareAllocatedSince 0).
//
// Releasing (scavengeRangeLocked). Never madvise pages another thread may be handed
// meanwhile: if the lock may be dropped, the run is first taken as allocated (so no
// allocation can get it), the lock is dropped for the madvise, and the run is then
// freed and marked scavenged. If the lock may not be dropped, the madvise happens under
// it. Test mode never calls madvise but follows the same steps.
//
// Locking: all state here (scav) is guarded by the heap lock; every function below
// must be called with it held; the ones taking mayUnlock may release and re-acquire it
// when mayUnlock is true. Callers that pass mayUnlock = true should prefer the static
// forms taking UnsafeMutablePointer<PageAlloc>: the allocator's state changes under
// them while the lock is dropped, which a `mutating` (exclusive inout) access does not
// expect. The mutating forms forward to them.

import CShim

/// The scavenger spares the chunks allocated from within this many of its tick periods
/// (300-400 ms: see the file comment and ScavengerPacing.swift). A heap that drops a
/// phase is released at once all the same (its shrink credit spares nothing). Measured:
/// sqlite's page faults were 18.4k with 1, 14.0k with 3 (as with the scavenger off),
/// and 14.0k with 10; python's 66.0k, 60.9k and 58.7k; but with 10 the burst of
/// scripts/rss held 156 MiB 5 s after its frees instead of 150-151 (its churn keeps
/// allocating from the chunks whose free pages decay would release).
let spareTickPeriods: UInt32 = 3

/// A reservation is the heap's in-use bytes / this, chunk-rounded (Go's
/// scavengeReservationShards).
let scavengeReservationShards: UInt = 64

/// The scavenger's state. All fields are guarded by the heap lock.
struct ScavengeState {
    /// Address space not yet searched (or reserved) in this generation.
    var inUse = AddressRanges()
    /// Generation number; reservations of older generations are not handed back.
    var gen: UInt32 = 0
    /// Size of one reservation.
    var reservationBytes: UInt = 0
    /// Bytes of free pages released in this generation (the scavenger counts what it
    /// releases inside spans on its own).
    var pagesReleased: UInt = 0
    /// Chunks this generation's search skipped as allocated from lately (see the file
    /// comment): their free pages were not searched.
    var sparedChunks: UInt = 0

    init() {}
}

extension PageAlloc {
    /// Starts a new generation: the whole in-use address space becomes searchable again.
    /// Returns the generation that ended and the bytes it released (for the scavtrace
    /// line). If metadata memory for the clone is exhausted, the new generation has no
    /// work.
    ///
    /// Must hold the heap lock.
    @discardableResult
    mutating func scavengeStartGen() -> (gen: UInt32, released: UInt) {
        let finished = (scav.gen, scav.pagesReleased)
        if !inUse.cloneInto(&scav.inUse) { scav.inUse.removeAll() }
        // Zero for an empty heap, which turns the scavenger off until it grows.
        scav.reservationBytes = alignUp(inUse.totalBytes, chunkBytes) / scavengeReservationShards
        scav.gen &+= 1
        scav.pagesReleased = 0
        scav.sparedChunks = 0
        return finished
    }

    /// Reserves the highest unsearched part of this generation's address space, at most
    /// reservationBytes (widened down to a chunk boundary). Returns an empty range when
    /// the generation's work is done, and the generation the reservation belongs to.
    ///
    /// Must hold the heap lock.
    mutating func scavengeReserve() -> (AddressRange, UInt32) {
        var r = scav.inUse.removeLast(scav.reservationBytes)
        if r.size == 0 { return (r, scav.gen) }
        // Scavenging works on whole chunks: widen the base down to its chunk and remove
        // what that pulls in from the unsearched set.
        let newBase = alignDown(r.base, chunkBytes)
        scav.inUse.removeGreaterEqual(newBase)
        r.base = newBase
        return (r, scav.gen)
    }

    /// Hands back the unsearched part r of a reservation of generation gen. Dropped if
    /// a newer generation has started (its clone covers r already) or r is empty.
    ///
    /// Must hold the heap lock.
    mutating func scavengeUnreserve(_ r: AddressRange, gen: UInt32) {
        if r.size == 0 || gen != scav.gen { return }
        if r.base & (chunkBytes &- 1) != 0 { fatalInternal("scavengeUnreserve: unaligned region") }
        // Reservations are disjoint from the set, so this cannot overlap. Should metadata
        // memory run out, r is simply not searched again this generation.
        _ = scav.inUse.add(r)
    }

    /// Releases up to nbytes (at least, when available: runs are not split below the
    /// OS page and huge pages are kept whole) of free, unscavenged pages, highest first,
    /// continuing this generation's search, and skipping the chunks stamped
    /// spareAllocatedSince or later (0: none; see the file comment). Returns the bytes
    /// released; less than nbytes means the generation's work is exhausted.
    ///
    /// Must hold the heap lock; it may be released and re-acquired if mayUnlock.
    mutating func scavenge(_ nbytes: UInt, mayUnlock: Bool, spareAllocatedSince: UInt32 = 0) -> UInt {
        withUnsafeMutablePointer(to: &self) {
            Self.scavenge($0, nbytes, mayUnlock: mayUnlock, spareAllocatedSince: spareAllocatedSince)
        }
    }

    /// scavenge through a pointer (preferred when mayUnlock: see the file comment).
    @inline(never)
    static func scavenge(_ p: UnsafeMutablePointer<PageAlloc>, _ nbytes: UInt, mayUnlock: Bool,
                         spareAllocatedSince: UInt32 = 0) -> UInt {
        var work = AddressRange.empty
        var gen: UInt32 = 0
        var released: UInt = 0
        while released < nbytes {
            if work.size == 0 {
                (work, gen) = p.pointee.scavengeReserve()
                if work.size == 0 { break }
            }
            let (r, rest) = scavengeOne(p, work: work, max: nbytes &- released, mayUnlock: mayUnlock,
                                        spareAllocatedSince: spareAllocatedSince)
            released &+= r
            work = rest
        }
        // Hand back only what was neither scavenged nor searched, so that progress is kept.
        p.pointee.scavengeUnreserve(work, gen: gen)
        p.pointee.scav.pagesReleased &+= released
        return released
    }

    /// Searches the reservation `work` from its top for one run of free, unscavenged
    /// pages outside the chunks stamped spareAllocatedSince or later (0: none) and
    /// releases it (at most max bytes, rounded up to pages, unless a huge page would be
    /// broken). Returns the bytes released (0 when work is exhausted) and the part of
    /// work not yet searched: work.base must be chunk-aligned.
    ///
    /// Must hold the heap lock; it may be released and re-acquired if mayUnlock.
    mutating func scavengeOne(work: AddressRange, max: UInt, mayUnlock: Bool,
                              spareAllocatedSince: UInt32 = 0) -> (UInt, AddressRange) {
        withUnsafeMutablePointer(to: &self) {
            Self.scavengeOne($0, work: work, max: max, mayUnlock: mayUnlock, spareAllocatedSince: spareAllocatedSince)
        }
    }

    /// Whether a chunk stamped `stamp` is spared by a search that spares those stamped
    /// `since` or later (0: none).
    @inline(__always) static func spares(_ stamp: UInt32, since: UInt32) -> Bool {
        since != 0 && stamp >= since
    }

    /// scavengeOne through a pointer.
    @inline(never)
    static func scavengeOne(_ p: UnsafeMutablePointer<PageAlloc>, work: AddressRange, max: UInt,
                            mayUnlock: Bool, spareAllocatedSince spare: UInt32 = 0) -> (UInt, AddressRange) {
        var work = work
        if work.size == 0 { return (0, work) }
        if work.base & (chunkBytes &- 1) != 0 { fatalInternal("scavengeOne: unaligned work region") }
        // alignUp(max, pageSize) / pageSize, without overflowing for max = UInt.max.
        var maxPages = max >> pageShift
        if max & (pageSize &- 1) != 0 { maxPages &+= 1 }
        // Whole OS pages only: our pages are two OS pages, so one page is enough.
        var minPages = osPageSize / pageSize
        if minPages < 1 { minPages = 1 }

        // Fast path: the chunk holding work's top address, from that page down.
        let maxAddr = work.limit &- 1
        let maxChunk = chunkIndex(maxAddr)
        if p.pointee.summary(summaryLevels &- 1, maxChunk).max < minPages {
            // Nothing to release here.
        } else if spares(p.pointee.stampOf(maxChunk).pointee, since: spare) {
            p.pointee.scav.sparedChunks &+= 1
        } else {
            let (base, npages) = p.pointee.chunkOf(maxChunk).pointee
                .findScavengeCandidate(chunkPageIndex(maxAddr), minPages, maxPages)
            if npages != 0 {
                // The run lies at or below maxAddr, so work only shrinks.
                work.limit = scavengeRangeLocked(p, maxChunk, base, npages, mayUnlock: mayUnlock)
                return (npages << pageShift, work)
            }
        }
        // maxChunk is done.
        work.limit = chunkBase(maxChunk)

        // Slow path: scan the rest optimistically, lock dropped if allowed; verify under it.
        let lock = p.pointee.heapLock
        while work.size != 0 {
            if mayUnlock { lock.unsafelyUnwrapped.unlock() }
            let (candidate, spared) = findCandidate(p, work, minPages, spare: spare)
            if mayUnlock { lock.unsafelyUnwrapped.lock() }
            p.pointee.scav.sparedChunks &+= spared
            guard let ci = candidate else {
                work.limit = work.base
                break
            }
            // Allocated from while the lock was dropped: spared after all.
            if spares(p.pointee.stampOf(ci).pointee, since: spare) {
                p.pointee.scav.sparedChunks &+= 1
                work.limit = chunkBase(ci)
                continue
            }
            let (base, npages) = p.pointee.chunkOf(ci).pointee.findScavengeCandidate(chunkPages &- 1, minPages, maxPages)
            if npages != 0 {
                work.limit = scavengeRangeLocked(p, ci, base, npages, mayUnlock: mayUnlock)
                return (npages << pageShift, work)
            }
            // Fooled by a stale read: carry on below this chunk.
            work.limit = chunkBase(ci)
        }
        return (0, work)
    }

    /// The highest chunk of work that seems to hold a free, unscavenged min-group of
    /// pages and is not spared (stamped `spare` or later, unless 0), read without the
    /// lock (the heap lock need not be held), and how many chunks above it it skipped as
    /// spared. work is inside the in-use address space, so its chunks exist once their L2
    /// block is visible.
    static func findCandidate(_ p: UnsafeMutablePointer<PageAlloc>, _ work: AddressRange, _ minPages: UInt,
                              spare: UInt32 = 0) -> (chunk: UInt?, spared: UInt) {
        // chunksL1 is fixed after initialize: read that one field, not the whole struct
        // that other threads are changing.
        guard let l1 = p.pointer(to: \.chunksL1)!.pointee else { return (nil, 0) }
        let bottom = chunkIndex(work.base)
        var i = chunkIndex(work.limit &- 1)
        var spared: UInt = 0
        while true {
            if let chunk = PageAlloc.chunkOfRacy(l1, i), PallocData.hasScavengeCandidateRacy(chunk, minPages) {
                if !spares(PageAlloc.stampRacy(l1, i), since: spare) { return (i, spared) }
                spared &+= 1
            }
            if i == bottom { return (nil, spared) }
            i &-= 1
        }
    }

    /// Releases the free, unscavenged pages [base, base+npages) of chunk ci to the OS
    /// and marks them scavenged. Returns the run's address.
    ///
    /// Must hold the heap lock; if mayUnlock it is dropped around the madvise, with the
    /// pages held as allocated meanwhile.
    mutating func scavengeRangeLocked(_ ci: UInt, _ base: UInt, _ npages: UInt, mayUnlock: Bool) -> UInt {
        withUnsafeMutablePointer(to: &self) { Self.scavengeRangeLocked($0, ci, base, npages, mayUnlock: mayUnlock) }
    }

    /// scavengeRangeLocked through a pointer.
    @inline(never)
    static func scavengeRangeLocked(_ p: UnsafeMutablePointer<PageAlloc>, _ ci: UInt, _ base: UInt, _ npages: UInt,
                                    mayUnlock: Bool) -> UInt {
        let addr = chunkBase(ci) &+ (base << pageShift)
        let bytes = npages << pageShift
        let test = p.pointee.test
        if mayUnlock {
            // Hold the run as allocated so nobody is handed it while madvise runs.
            p.pointee.holdForRelease(addr, npages)
            let lock = p.pointee.heapLock.unsafelyUnwrapped
            lock.unlock()
            if !test { osRelease(addr, bytes) }
            lock.lock()
            p.pointee.finishRelease(addr, npages, held: true)
        } else {
            if !test { osRelease(addr, bytes) }
            p.pointee.finishRelease(addr, npages, held: false)
        }
        return addr
    }
}
