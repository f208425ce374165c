// The page allocator (Go's pageAlloc, mpagealloc.go and mpagealloc_64bit.go).
//
// It manages the heap's pages (8 KiB) for allocation and reuse, address-ordered first
// fit. Every page has a bit in a per-chunk bitmap (PallocData: 1 = allocated, plus a
// scavenged bit). Chunks (512 pages, 4 MiB) are found through a two-level table:
// chunksL1 (2^13 pointers, mapped at initialize) -> L2 blocks of 2^13 PallocData (1 MiB,
// mapped on demand when grow first touches them, never freed before destroy), each
// followed by its chunks' allocation stamps (32 KiB): allocRange writes allocStamp, which
// the scavenger sets at each of its ticks, into every chunk it allocates pages of, so
// that its paced passes can spare the chunks the program allocated from lately
// (PageAllocScavenge.swift).
//
// Search is by a radix tree of summaries over the whole 48-bit address space, exactly
// Go's amd64 layout since our pages and chunks have Go's sizes: 5 levels with radix bits
// 14, 3, 3, 3, 3. A summary (PallocSum) tells the free pages at the start, the longest
// free run, and the free pages at the end of its region; a leaf summarises one chunk,
// a root entry 16 GiB.
//
// Summary storage is sparse (unlike Go's, which reserves the whole tree, ~585 MiB of
// address space, at start: a cap on address space such as `ulimit -v` then breaks every
// program; golang/go#38010). Level 0 (2^14 entries, 128 KiB) is one flat array mapped at
// initialize. Levels 1-4 are split into blocks of summaryBlockEntries entries (one OS
// page), found through a per-level directory mapped at initialize (1.2 MiB in all, touched
// only where used); grow maps the blocks a new region's summaries need. Only summaries of
// regions in `inUse` (widened to their radix block, which a storage block always holds
// whole) are ever read, so every block read exists. Address space used: ~1.3 MiB, plus
// 4 KiB per block, which covers 2 GiB of heap address space at the leaves, 16 GiB at
// level 3, 128 GiB at level 2 and 1 TiB at level 1.
//
// Invariants (all under the heap lock):
//   - inUse holds exactly the regions passed to grow (chunk-aligned, disjoint); the
//     summaries and chunk bitmaps of every chunk in inUse are mapped; every leaf is
//     current (leaf = summarize(bitmap)), and each parent = merge of its 8 (root: whole)
//     children but above the leaves in [staleLow, staleHigh], whose ancestors find brings
//     up to date before it reads them (propagateSummaries: levels 0-3 are read by find
//     alone, and most allocations never call it, taking searchAddr's chunk);
//   - searchAddr: every heap page below it is allocated; it is inside inUse or UInt.max
//     ("no free page"), so the fast path may read the leaf summary of its chunk;
//   - start/end: the chunk indices [start, end) bound every chunk in inUse;
//   - a page's scavenged bit is set only while the page is free; scavenged pages are
//     not resident and read as zero;
//   - freeBytes = bytes of free pages; scavengedBytes = bytes of free and scavenged
//     pages. Both are exact after every public call (the scavenger takes the pages it
//     releases as allocated while it drops the lock, so they are briefly not "free");
//   - metadataBytes = bytes this allocator mapped for its own tables; never more than
//     metadataLimit (grow fails instead).
//
// Locking: the owner holds `heapLock` around every call; only the scavenger (PageAllocScavenge.swift)
// drops it, when told it may, and then only reads chunk bitmaps racily (relaxed atomics,
// L2 pointers published with release stores), re-checking under the lock.
//
// Test mode (`test: true`): the allocator never touches the memory it manages (no
// madvise), so unit tests may grow it with any chunk-aligned addresses.

import CShim

/// Levels of the summary radix tree (PageAlloc.update walks levels 3 to 0 by name).
let summaryLevels = 5
/// Radix bits of every level but the root.
let summaryLevelBits: UInt = 3
/// Radix bits of the root level: 48 - 22 - 4*3 = 14.
let summaryL0Bits: UInt = heapAddressBits - chunkShift - UInt(summaryLevels - 1) * summaryLevelBits

/// Radix bits of level l.
@inline(__always) func levelBits(_ l: Int) -> UInt { l == 0 ? summaryL0Bits : summaryLevelBits }
/// Shift from an address to its summary index at level l: 34, 31, 28, 25, 22.
@inline(__always) func levelShift(_ l: Int) -> UInt {
    heapAddressBits &- summaryL0Bits &- UInt(l) &* summaryLevelBits
}
/// log2 of the pages one summary of level l covers: 21, 18, 15, 12, 9.
@inline(__always) func levelLogPages(_ l: Int) -> UInt {
    (chunkShift &- pageShift) &+ UInt(summaryLevels &- 1 &- l) &* summaryLevelBits
}

/// Bits of a chunk index used by chunksL1 and by an L2 block.
let chunksL1Bits: UInt = 13
let chunksL2Bits: UInt = heapAddressBits - chunkShift - chunksL1Bits
let chunksL2Count: UInt = 1 << chunksL2Bits
/// Bytes of one L2 block of chunk bitmaps (1 MiB).
let chunksL2Bytes: UInt = chunksL2Count * UInt(MemoryLayout<PallocData>.stride)
/// Bytes of the chunks' allocation stamps that follow the bitmaps in an L2 block (32 KiB).
let chunksL2StampBytes: UInt = chunksL2Count * UInt(MemoryLayout<UInt32>.stride)
/// Bytes mapped for one L2 block: the bitmaps, then the stamps.
let chunksL2BlockBytes: UInt = chunksL2Bytes + chunksL2StampBytes
/// Bytes of the L1 table.
let chunksL1Bytes: UInt = (1 << chunksL1Bits) * UInt(MemoryLayout<UInt>.stride)

/// searchAddr when the heap has no free page.
let maxSearchAddr: UInt = UInt.max

/// log2 of the entries in one block of summary storage (levels 1-4).
let summaryBlockShift: UInt = 9
/// Entries in one block of summary storage: one OS page of PallocSum.
let summaryBlockEntries: UInt = 1 << summaryBlockShift
/// Bytes of one block of summary storage.
let summaryBlockBytes: UInt = summaryBlockEntries * UInt(MemoryLayout<PallocSum>.stride)

/// Entries of summary level l (2^14, 2^17, ..., 2^26).
@inline(__always) func levelEntries(_ l: Int) -> UInt { UInt(1) << (heapAddressBits &- levelShift(l)) }

/// Bytes of level l's storage table: level 0's summaries themselves, or the directory of
/// blocks of a lower level (page-rounded).
func summaryTableBytes(_ l: Int) -> UInt {
    let bytes = l == 0 ? levelEntries(0) &* UInt(MemoryLayout<PallocSum>.stride)
                       : (levelEntries(l) >> summaryBlockShift) &* UInt(MemoryLayout<UnsafeMutableRawPointer?>.stride)
    return alignUp(bytes, osPageSize)
}

struct PageAlloc {
    /// Per summary level, its storage table (see the file comment): level 0's summaries,
    /// the directory of blocks of levels 1-4. 0 when not initialised.
    var summaryTables = InlineArray<5, UInt>(repeating: 0)
    /// The L1 table of chunk bitmaps: 2^13 slots, each nil or an L2 block.
    var chunksL1: UnsafeMutablePointer<UnsafeMutablePointer<PallocData>?>? = nil
    /// Heap pages below it are all allocated (see the file comment).
    var searchAddr: UInt = maxSearchAddr
    /// Chunk index bounds [start, end) of the heap.
    var start: UInt = 0
    var end: UInt = 0
    /// Chunks [staleLow, staleHigh] hold every leaf summary changed since the levels
    /// above were last recomputed from them (staleLow > staleHigh: none); see update.
    var staleLow: UInt = UInt.max
    var staleHigh: UInt = 0
    /// Regions of address space passed to grow.
    var inUse = AddressRanges()
    /// The scavenger's state (Scavenge.swift).
    var scav = ScavengeState()
    /// The lock the callers hold; the scavenger may drop it when allowed.
    var heapLock: UnsafeMutablePointer<Mutex>? = nil
    /// Unit tests: never touch managed memory.
    var test = false
    /// Bytes of free pages.
    var freeBytes: UInt = 0
    /// Bytes of free pages that are scavenged (not resident, read as zero).
    var scavengedBytes: UInt = 0
    /// Total bytes ever released to the OS by the scavenger (counted in test mode too).
    var releasedBytes: UInt = 0
    /// Bytes of metadata mapped (summary tables and blocks, L1, L2 blocks).
    var metadataBytes: UInt = 0
    /// grow fails rather than map metadata beyond this (no bound by default; tests set it).
    var metadataLimit: UInt = UInt.max
    /// Written into the stamp of every chunk allocRange allocates pages of (see the file
    /// comment). 1 until the scavenger's first tick sets it (a chunk never allocated
    /// from is stamped 0); it only grows.
    var allocStamp: UInt32 = 1

    init() {}

    // MARK: - Setup

    /// Maps the summary tables and the chunk table. Returns false (leaving nothing
    /// mapped) if the kernel refuses. Called once, before any other method; the heap lock
    /// need not be held.
    mutating func initialize(heapLock: UnsafeMutablePointer<Mutex>, test: Bool) -> Bool {
        self = PageAlloc()
        self.heapLock = heapLock
        self.test = test
        var l = 0
        while l < summaryLevels {
            let bytes = summaryTableBytes(l)
            let table = osMap(bytes)
            if table == 0 {
                destroy()
                return false
            }
            summaryTables[l] = table
            metadataBytes &+= bytes
            l &+= 1
        }
        let l1 = osMap(chunksL1Bytes)
        if l1 == 0 {
            destroy()
            return false
        }
        chunksL1 = UnsafeMutablePointer(bitPattern: l1)
        metadataBytes &+= chunksL1Bytes
        if !inUse.initialize() || !scav.inUse.initialize() {
            destroy()
            return false
        }
        searchAddr = maxSearchAddr
        return true
    }

    /// Unmaps everything initialize and grow mapped (the AddressRanges storage is
    /// metadata memory and is not returned) and returns how many bytes that was. The
    /// allocator is unusable afterwards until initialize. The heap lock need not be held;
    /// no other thread may use it.
    @discardableResult mutating func destroy() -> UInt {
        var unmapped: UInt = 0
        var l = 0
        while l < summaryLevels {
            if summaryTables[l] != 0 {
                if l > 0 {
                    let directory = UnsafeMutablePointer<UInt>(bitPattern: summaryTables[l]).unsafelyUnwrapped
                    var b = 0
                    while b < Int(levelEntries(l) >> summaryBlockShift) {
                        if directory[b] != 0 {
                            osUnmap(directory[b], summaryBlockBytes)
                            unmapped &+= summaryBlockBytes
                        }
                        b &+= 1
                    }
                }
                osUnmap(summaryTables[l], summaryTableBytes(l))
                unmapped &+= summaryTableBytes(l)
            }
            l &+= 1
        }
        if let l1 = chunksL1 {
            var i = 0
            while i < (1 << chunksL1Bits) {
                if let block = l1[i] {
                    osUnmap(UInt(bitPattern: block), chunksL2BlockBytes)
                    unmapped &+= chunksL2BlockBytes
                }
                i &+= 1
            }
            osUnmap(UInt(bitPattern: l1), chunksL1Bytes)
            unmapped &+= chunksL1Bytes
        }
        self = PageAlloc()
        return unmapped
    }

    // MARK: - Addressing

    /// Summary entry i of level l and the ones after it in its storage block (at least
    /// its radix block: 8 entries, or the whole of level 0). i must be in a block grow
    /// mapped, which every summary of a region in inUse is.
    @inline(__always) func summaries(_ l: Int, from i: UInt) -> UnsafeMutablePointer<PallocSum> {
        Self.entry(summaryTables[l], flat: l == 0, i)
    }

    /// Summary entry i of level l (see summaries(_:from:)).
    @inline(__always) func summary(_ l: Int, _ i: UInt) -> PallocSum { summaries(l, from: i).pointee }

    /// Maps the summary blocks of levels 1-4 that a region [base, limit) needs (its radix
    /// blocks). Returns false if the kernel or metadataLimit refuses; blocks mapped
    /// before the failure stay (harmless: unused until a grow succeeds).
    private mutating func mapSummaryBlocks(_ base: UInt, _ limit: UInt) -> Bool {
        var l = 1
        while l < summaryLevels {
            let (lo0, hi0) = Self.addrsToSummaryRange(l, base, limit)
            let (lo, hi) = Self.blockAlignSummaryRange(l, lo0, hi0)
            let directory = UnsafeMutablePointer<UInt>(bitPattern: summaryTables[l]).unsafelyUnwrapped
            var b = lo >> summaryBlockShift
            while b <= (hi &- 1) >> summaryBlockShift {
                if directory[Int(b)] == 0 {
                    if metadataBytes &+ summaryBlockBytes > metadataLimit { return false }
                    let block = osMap(summaryBlockBytes)
                    if block == 0 { return false }
                    metadataBytes &+= summaryBlockBytes
                    directory[Int(b)] = block
                }
                b &+= 1
            }
            l &+= 1
        }
        return true
    }

    /// The bitmaps of chunk ci, which must be in the heap.
    @inline(__always) func chunkOf(_ ci: UInt) -> UnsafeMutablePointer<PallocData> {
        chunksL1.unsafelyUnwrapped[Int(ci >> chunksL2Bits)].unsafelyUnwrapped + Int(ci & (chunksL2Count &- 1))
    }

    /// The bitmaps of chunk ci read without the heap lock through the L1 table l1, or
    /// nil if its L2 block is not (yet) visible.
    @inline(__always) static func chunkOfRacy(_ l1: UnsafeMutablePointer<UnsafeMutablePointer<PallocData>?>,
                                              _ ci: UInt) -> UnsafeMutablePointer<PallocData>? {
        let slot = UnsafeMutableRawPointer(l1 + Int(ci >> chunksL2Bits)).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        guard let block = sh_load_ptr(slot) else { return nil }
        return block.assumingMemoryBound(to: PallocData.self) + Int(ci & (chunksL2Count &- 1))
    }

    /// The stamp of chunks allocated from within the scavenger's last spareTickPeriods
    /// tick periods (or since the heap was made, before its first tick): as
    /// spareAllocatedSince, spares them (PageAllocScavenge.swift).
    var recentAllocStamp: UInt32 { allocStamp > spareTickPeriods ? allocStamp &- spareTickPeriods : 1 }

    /// The allocation stamp of chunk ci, which must be in the heap (see the file comment).
    @inline(__always) func stampOf(_ ci: UInt) -> UnsafeMutablePointer<UInt32> {
        let block = UnsafeMutableRawPointer(chunksL1.unsafelyUnwrapped[Int(ci >> chunksL2Bits)].unsafelyUnwrapped)
        return (block + Int(chunksL2Bytes)).assumingMemoryBound(to: UInt32.self) + Int(ci & (chunksL2Count &- 1))
    }

    /// The allocation stamp of chunk ci read without the heap lock (a relaxed load)
    /// through the L1 table l1, or 0 if its L2 block is not (yet) visible.
    @inline(__always) static func stampRacy(_ l1: UnsafeMutablePointer<UnsafeMutablePointer<PallocData>?>,
                                            _ ci: UInt) -> UInt32 {
        let slot = UnsafeMutableRawPointer(l1 + Int(ci >> chunksL2Bits)).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        guard let block = sh_load_ptr(slot) else { return 0 }
        return sh_load32_relaxed((block + Int(chunksL2Bytes)).assumingMemoryBound(to: UInt32.self) + Int(ci & (chunksL2Count &- 1)))
    }

    /// Summary index range [lo, hi) of level l covering [base, limit).
    @inline(__always) static func addrsToSummaryRange(_ l: Int, _ base: UInt, _ limit: UInt) -> (lo: UInt, hi: UInt) {
        (base >> levelShift(l), ((limit &- 1) >> levelShift(l)) &+ 1)
    }

    /// [lo, hi) widened to level l's block width (its whole parent's children).
    @inline(__always) static func blockAlignSummaryRange(_ l: Int, _ lo: UInt, _ hi: UInt) -> (lo: UInt, hi: UInt) {
        let e = UInt(1) << levelBits(l)
        return (alignDown(lo, e), alignUp(hi, e))
    }

    // MARK: - Growth

    /// Adds the fresh, chunk-aligned region [base, base+size) to the heap: its pages become
    /// free and scavenged (a fresh mapping is not resident and reads zero). The region
    /// must not overlap the heap. Returns false, with the allocator unchanged, if the
    /// region is invalid or metadata memory cannot be committed.
    ///
    /// Must hold the heap lock.
    mutating func grow(base: UInt, size: UInt) -> Bool {
        if chunksL1 == nil || size == 0 { return false }
        let (top, overflow) = base.addingReportingOverflow(size)
        if overflow || top > (UInt(1) << heapAddressBits) { return false }
        let limit = alignUp(top, chunkBytes)
        let base = alignDown(base, chunkBytes)
        // Must not overlap what the heap already has.
        let succ = inUse.findSucc(base)
        if succ > 0 && inUse[succ &- 1].limit > base { return false }
        if succ < inUse.count && inUse[succ].base < limit { return false }

        if !mapSummaryBlocks(base, limit) { return false }
        // Chunk bitmap blocks.
        let sc = chunkIndex(base), ec = chunkIndex(limit)
        var c = sc
        while c < ec {
            let i1 = Int(c >> chunksL2Bits)
            if chunksL1.unsafelyUnwrapped[i1] == nil {
                if metadataBytes &+ chunksL2BlockBytes > metadataLimit { return false }
                let block = osMap(chunksL2BlockBytes)
                if block == 0 { return false }
                metadataBytes &+= chunksL2BlockBytes
                // Published with a release store: the scavenger reads it without the lock.
                let slot = UnsafeMutableRawPointer(chunksL1.unsafelyUnwrapped + i1).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
                sh_store_ptr(slot, UnsafeMutableRawPointer(bitPattern: block))
            }
            c = ((c >> chunksL2Bits) &+ 1) << chunksL2Bits
        }
        if !inUse.add(AddressRange(base: base, limit: limit)) { return false }

        // From here on nothing can fail.
        if end == 0 || sc < start { start = sc }
        if ec > end { end = ec }
        if base < searchAddr { searchAddr = base }
        c = sc
        while c < ec {
            let chunk = chunkOf(c)
            chunk.pointee.alloc.freeAll()
            chunk.pointee.scavenged.setAll()
            c &+= 1
        }
        let bytes = limit &- base
        update(base, bytes >> pageShift, contig: true, alloc: false)
        freeBytes &+= bytes
        scavengedBytes &+= bytes
        return true
    }

    // MARK: - Summaries

    /// Recomputes the leaf summaries over [base, base + npages pages) after its bitmaps
    /// changed, and marks the levels above them stale (propagateSummaries). contig: the
    /// change was one contiguous alloc (alloc true) or free of the whole range, so chunks
    /// strictly inside are entirely allocated or free.
    ///
    /// Must hold the heap lock.
    mutating func update(_ base: UInt, _ npages: UInt, contig: Bool, alloc: Bool) {
        let limit = base &+ (npages << pageShift) &- 1  // inclusive
        let sc = chunkIndex(base), ec = chunkIndex(limit)
        let leaf = summaryLevels &- 1
        if sc == ec {
            // One range in one chunk: its summary from the old one and the run the change
            // cut or made (PallocBits.summary(after:)), else from the whole bitmap.
            let entry = summaries(leaf, from: sc)
            let bits = chunkOf(sc).pointee.alloc
            let y: PallocSum
            if contig, let z = bits.summary(after: entry.pointee, chunkPageIndex(base), npages, alloc: alloc) {
                y = z
                if test { precondition(y == bits.summarize(), "PageAlloc.update: the incremental summary differs") }
            } else {
                y = bits.summarize()
            }
            if entry.pointee == y { return }
            entry.pointee = y
        } else if contig {
            summaries(leaf, from: sc).pointee = chunkOf(sc).pointee.alloc.summarize()
            let whole = alloc ? PallocSum(raw: 0) : PallocSum.freeChunk
            var c = sc &+ 1
            while c < ec {
                summaries(leaf, from: c).pointee = whole
                c &+= 1
            }
            summaries(leaf, from: ec).pointee = chunkOf(ec).pointee.alloc.summarize()
        } else {
            var c = sc
            while c <= ec {
                summaries(leaf, from: c).pointee = chunkOf(c).pointee.alloc.summarize()
                c &+= 1
            }
        }
        // The levels above go stale: find recomputes them (propagateSummaries). Walking
        // them up here, at every change, was a quarter of the instructions of a loop that
        // replaced one large object at a time (790 a replacement, four levels twice),
        // where the next allocation takes searchAddr's chunk and reads no level above.
        // Only changes within the stale chunks are deferred together: a change outside
        // them brings them up to date first, so that no walk covers more than one change
        // did (a range widened over the chunks between changes walked up more than the
        // changes would have: 3% more instructions where 64 live objects of up to 4 MiB
        // were replaced at random, each replacement's two changes chunks apart).
        if sc < staleLow || ec > staleHigh {
            propagateSummaries()
            staleLow = sc
            staleHigh = ec
        }
    }

    /// Recomputes the levels above the leaves over the stale chunks [staleLow,
    /// staleHigh] (see update), and marks none stale. The range is one change's, in one
    /// region of inUse (the summary blocks of a gap between two may not exist). For
    /// find, and for tests that read every level.
    ///
    /// Must hold the heap lock.
    mutating func propagateSummaries() {
        if staleLow > staleHigh { return }
        let base = chunkBase(staleLow), limit = chunkBase(staleHigh) &+ chunkBytes &- 1  // inclusive
        staleLow = UInt.max
        staleHigh = 0
        Self.walkUp(summaryTables, base, limit, (start: start, end: end))
    }

    /// Recomputes the parents of the leaves over [base, limit] (inclusive), level by
    /// level up to the root while something changes: levels 3, 2, 1, 0 written out, so
    /// that each level's shifts are constants (and the tables read once: stores through
    /// the summary pointers would make the compiler reload them from self). Must hold
    /// the heap lock.
    private static func walkUp(_ t: InlineArray<5, UInt>, _ base: UInt, _ limit: UInt, _ heap: (start: UInt, end: UInt)) {
        if updateLevel(3, parents: t[3], children: t[4], base, limit, heap)
            && updateLevel(2, parents: t[2], children: t[3], base, limit, heap)
            && updateLevel(1, parents: t[1], children: t[2], base, limit, heap) {
            _ = updateLevel(0, parents: t[0], children: t[1], base, limit, heap)
        }
    }

    /// Summary i of a level stored in `table` (summaryTables[l]; level 0's is flat): see
    /// summaries(_:from:).
    @inline(__always) private static func entry(_ table: UInt, flat: Bool, _ i: UInt) -> UnsafeMutablePointer<PallocSum> {
        if flat { return UnsafeMutablePointer<PallocSum>(bitPattern: table).unsafelyUnwrapped + Int(i) }
        let directory = UnsafeMutablePointer<UnsafeMutablePointer<PallocSum>?>(bitPattern: table).unsafelyUnwrapped
        return directory[Int(i >> summaryBlockShift)].unsafelyUnwrapped + Int(i & (summaryBlockEntries &- 1))
    }

    /// walkUp's step: recomputes level l's summaries over [base, limit] (inclusive) from
    /// their children, stored in `parents` and `children` (summaryTables[l], [l + 1]).
    /// A parent merges only its children inside the heap's chunks [heap.start, heap.end);
    /// the others have no free page and only cut its start or end. Returns whether any
    /// summary changed. Must hold the heap lock.
    @inline(__always) private static func updateLevel(_ l: Int, parents: UInt, children: UInt, _ base: UInt, _ limit: UInt,
                                                      _ heap: (start: UInt, end: UInt)) -> Bool {
        let childShift = levelShift(l &+ 1) &- chunkShift
        let firstChild = heap.start >> childShift, lastChild = (heap.end &- 1) >> childShift
        var changed = false
        var i = base >> levelShift(l)
        let hi = limit >> levelShift(l)
        while i <= hi {
            let c0 = i << summaryLevelBits, c1 = c0 &+ (1 << summaryLevelBits) &- 1
            let first = Swift.max(c0, firstChild), last = Swift.min(c1, lastChild)
            let sum = mergeChildSummaries(entry(children, flat: false, first), count: Int(bitPattern: last &- first) &+ 1,
                                          logMaxPagesPerSum: levelLogPages(l &+ 1),
                                          zeroBefore: first > c0, zeroAfter: last < c1)
            let parent = entry(parents, flat: l == 0, i)
            if parent.pointee != sum {
                changed = true
                parent.pointee = sum
            }
            i &+= 1
        }
        return changed
    }

    // MARK: - Allocation

    /// Marks [base, base + npages pages) allocated, stamps its chunks with allocStamp and
    /// updates the summaries. Returns the bytes of it that were scavenged (they are no
    /// longer). Pages must be in the heap.
    ///
    /// Must hold the heap lock.
    mutating func allocRange(_ base: UInt, _ npages: UInt) -> UInt {
        let limit = base &+ (npages << pageShift) &- 1
        let sc = chunkIndex(base), ec = chunkIndex(limit)
        let si = chunkPageIndex(base), ei = chunkPageIndex(limit)
        var stamped = sc
        while true {
            // A plain store: the scavenger's racy read tolerates a stale stamp (it reads it
            // again under the lock before it releases anything).
            sh_store32_relaxed(stampOf(stamped), allocStamp)
            if stamped == ec { break }
            stamped &+= 1
        }
        var scav: UInt = 0
        if sc == ec {
            let chunk = chunkOf(sc)
            scav &+= chunk.pointee.scavenged.popcntRange(si, ei &+ 1 &- si)
            chunk.pointee.allocRange(si, ei &+ 1 &- si)
        } else {
            var chunk = chunkOf(sc)
            scav &+= chunk.pointee.scavenged.popcntRange(si, chunkPages &- si)
            chunk.pointee.allocRange(si, chunkPages &- si)
            var c = sc &+ 1
            while c < ec {
                chunk = chunkOf(c)
                scav &+= chunk.pointee.scavenged.popcount()
                chunk.pointee.allocAll()
                c &+= 1
            }
            chunk = chunkOf(ec)
            scav &+= chunk.pointee.scavenged.popcntRange(0, ei &+ 1)
            chunk.pointee.allocRange(0, ei &+ 1)
        }
        update(base, npages, contig: true, alloc: true)
        return scav << pageShift
    }

    /// Finds the first (lowest) run of npages free pages by walking the summary tree
    /// from the root. Returns its address (0 if none) and a new candidate searchAddr
    /// (valid only on success): a heap address below which everything is allocated.
    /// Reads every level: the caller brings them up to date first (propagateSummaries).
    ///
    /// Must hold the heap lock.
    func find(_ npages: UInt) -> (addr: UInt, searchAddr: UInt) {
        // i: index of the first entry of the block of entries searched at this level.
        var i: UInt = 0
        // firstFree: [base, bound] (inclusive) is known to hold the heap's first free
        // page; narrowed while we descend along the first free memory.
        var firstFree = FirstFreeWindow()
        var l = 0
        levels: while l < summaryLevels {
            let entriesPerBlock = UInt(1) << levelBits(l)
            let logMaxPages = levelLogPages(l)
            i <<= levelBits(l)
            let entries = summaries(l, from: i)

            // Start at searchAddr's entry if it lies in this block.
            var j0: UInt = 0
            let searchIdx = searchAddr >> levelShift(l)
            if searchIdx & ~(entriesPerBlock &- 1) == i {
                j0 = searchIdx & (entriesPerBlock &- 1)
            }

            // Level 0's block is its whole table (2^14 entries), and entries outside the
            // heap's chunks [start, end) are zero: the scan stops at the heap's last one
            // (PageAllocTests: NotContiguousRootEntries). A search that fails (the heap
            // must grow, or the allocation drains caches first) walked every entry up to
            // the table's end before: 107k instructions, in a loop of one live object of
            // 64 KiB..4 MiB in a 4 MiB heap for a fortieth of its allocations, 46% of its
            // instructions under callgrind.
            let limit = l == 0 ? Swift.min(entriesPerBlock, ((end &- 1) >> (levelShift(0) &- chunkShift)) &+ 1)
                               : entriesPerBlock

            // Look for npages free either inside one entry (descend) or across entries.
            var base: UInt = 0  // first page of the current run, relative to entry 0
            var size: UInt = 0  // length of the current run
            var j = j0
            var descended = false
            while j < limit {
                let sum = entries[Int(j)]
                if sum.raw == 0 {
                    size = 0
                    j &+= 1
                    continue
                }
                firstFree.found(((i &+ j) << levelShift(l)), (UInt(1) << logMaxPages) << pageShift)
                let s = sum.start
                if size &+ s >= npages {
                    if size == 0 { base = j << logMaxPages }
                    size &+= s
                    break
                }
                if sum.max >= npages {
                    i &+= j
                    descended = true
                    break
                }
                if size == 0 || s < (UInt(1) << logMaxPages) {
                    size = sum.end
                    base = ((j &+ 1) << logMaxPages) &- size
                    j &+= 1
                    continue
                }
                size &+= UInt(1) << logMaxPages
                j &+= 1
            }
            if descended {
                l &+= 1
                continue levels
            }
            if size >= npages {
                let addr = (i << levelShift(l)) &+ (base << pageShift)
                return (addr, findMappedAddr(firstFree.base))
            }
            if l == 0 { return (0, maxSearchAddr) }
            fatalInternal("page allocator: summaries promised free pages that are not there")
        }

        // Every level said "inside this entry": the run is inside chunk i.
        let ci = i
        let (j, searchIdx) = chunkOf(ci).pointee.alloc.find(npages, 0)
        if j == UInt.max {
            fatalInternal("page allocator: chunk summary promised free pages that are not there")
        }
        let addr = chunkBase(ci) &+ (j << pageShift)
        let candidate = chunkBase(ci) &+ (searchIdx << pageShift)
        firstFree.found(candidate, chunkBase(ci &+ 1) &- candidate)
        return (addr, findMappedAddr(firstFree.base))
    }

    /// The window [base, bound] (inclusive) known to hold the heap's first free page
    /// during find; narrowed while the search descends along the first free memory.
    struct FirstFreeWindow {
        var base: UInt = 0
        var bound: UInt = (UInt(1) << heapAddressBits) &- 1

        /// Records free memory in [addr, addr+size): narrows the window if the range is
        /// inside it. A range partly overlapping it means corrupt summaries.
        @inline(__always) mutating func found(_ addr: UInt, _ size: UInt) {
            let last = addr &+ size &- 1
            if base <= addr && last <= bound {
                base = addr
                bound = last
            } else if !(last < base || addr > bound) {
                fatalInternal("page allocator: free range partially overlaps the search window")
            }
        }
    }

    /// The lowest heap address >= addr, or maxSearchAddr if there is none: keeps a
    /// searchAddr candidate inside memory the allocator knows.
    @inline(__always) func findMappedAddr(_ addr: UInt) -> UInt {
        inUse.findAddrGreaterEqual(addr) ?? maxSearchAddr
    }

    /// Allocates npages contiguous pages, lowest address first. Returns their base (0 if
    /// no run of npages free pages exists) and how many bytes of them were scavenged:
    /// those read as zero and are resident again (no longer counted as scavenged).
    ///
    /// Must hold the heap lock.
    mutating func alloc(npages: UInt) -> (base: UInt, scavenged: UInt) {
        if npages == 0 || chunkIndex(searchAddr) >= end { return (0, 0) }
        var addr: UInt = 0
        var newSearchAddr: UInt = 0
        // Fast path: the run may fit in searchAddr's chunk.
        var found = false
        if chunkPages &- chunkPageIndex(searchAddr) >= npages {
            let i = chunkIndex(searchAddr)
            if summary(summaryLevels &- 1, i).max >= npages {
                let (j, searchIdx) = chunkOf(i).pointee.alloc.find(npages, chunkPageIndex(searchAddr))
                if j == UInt.max {
                    fatalInternal("page allocator: chunk summary promised free pages that are not there")
                }
                addr = chunkBase(i) &+ (j << pageShift)
                newSearchAddr = chunkBase(i) &+ (searchIdx << pageShift)
                found = true
            }
        }
        if !found {
            propagateSummaries()
            (addr, newSearchAddr) = find(npages)
            if addr == 0 {
                // Not even one page: the heap is full. (Otherwise only no run was long enough.)
                if npages == 1 { searchAddr = maxSearchAddr }
                return (0, 0)
            }
        }
        let scav = allocRange(addr, npages)
        if newSearchAddr > searchAddr { searchAddr = newSearchAddr }
        freeBytes &-= npages << pageShift
        scavengedBytes &-= scav
        return (addr, scav)
    }

    /// Allocates exactly [base, base + npages pages) if every page of it is in the heap
    /// and free (for growing an allocation in place). Returns false, changing nothing,
    /// otherwise; on success, how many bytes of it were scavenged (they read as zero).
    ///
    /// Must hold the heap lock.
    mutating func allocRangeIfFree(base: UInt, npages: UInt) -> (ok: Bool, scavenged: UInt) {
        if !isRangeFree(base: base, npages: npages) { return (false, 0) }
        let scav = allocRange(base, npages)
        freeBytes &-= npages << pageShift
        scavengedBytes &-= scav
        return (true, scav)
    }

    /// Whether every page of [base, base + npages pages) is in one region of the heap and
    /// free. Must hold the heap lock.
    func isRangeFree(base: UInt, npages: UInt) -> Bool {
        if npages == 0 || base & (pageSize &- 1) != 0 { return false }
        if npages > (UInt(1) << (heapAddressBits &- pageShift)) { return false }
        let (limitX, overflow) = base.addingReportingOverflow(npages << pageShift)
        if overflow { return false }
        // The whole run must lie in one region of inUse.
        let i = inUse.findSucc(base)
        if i == 0 { return false }
        let r = inUse[i &- 1]
        if !r.contains(base) || limitX > r.limit { return false }
        // Every page free?
        let limit = limitX &- 1
        let sc = chunkIndex(base), ec = chunkIndex(limit)
        let si = chunkPageIndex(base), ei = chunkPageIndex(limit)
        if sc == ec { return chunkOf(sc).pointee.isFree(si, ei &+ 1 &- si) }
        // Cheap rejection by summaries first: inner chunks must be entirely free.
        var c = sc &+ 1
        while c < ec {
            if summary(summaryLevels &- 1, c).max != chunkPages { return false }
            c &+= 1
        }
        return chunkOf(sc).pointee.isFree(si, chunkPages &- si) && chunkOf(ec).pointee.isFree(0, ei &+ 1)
    }

    /// Returns npages pages at base, all allocated, to the free pool. Freeing a page that
    /// is not allocated is a caller bug and aborts.
    ///
    /// Must hold the heap lock.
    mutating func free(base: UInt, npages: UInt) {
        if npages == 0 { return }
        if base < searchAddr { searchAddr = base }
        if npages == 1 {
            let chunk = chunkOf(chunkIndex(base))
            let i = chunkPageIndex(base)
            if !chunk.pointee.alloc.bits.get(i) { fatalMisuse("free", "pages not allocated at", address: base) }
            chunk.pointee.free1(i)
        } else {
            let limit = base &+ (npages << pageShift) &- 1
            let sc = chunkIndex(base), ec = chunkIndex(limit)
            let si = chunkPageIndex(base), ei = chunkPageIndex(limit)
            if sc == ec {
                let chunk = chunkOf(sc)
                let n = ei &+ 1 &- si
                if !chunk.pointee.alloc.bits.rangeIs(set: true, si, n) {
                    fatalMisuse("free", "pages not allocated at", address: base)
                }
                chunk.pointee.free(si, n)
            } else {
                var chunk = chunkOf(sc)
                if !chunk.pointee.alloc.bits.rangeIs(set: true, si, chunkPages &- si) {
                    fatalMisuse("free", "pages not allocated at", address: base)
                }
                chunk.pointee.free(si, chunkPages &- si)
                var c = sc &+ 1
                while c < ec {
                    chunk = chunkOf(c)
                    if !chunk.pointee.alloc.bits.rangeIs(set: true, 0, chunkPages) {
                        fatalMisuse("free", "pages not allocated at", address: chunkBase(c))
                    }
                    chunk.pointee.freeAll()
                    c &+= 1
                }
                chunk = chunkOf(ec)
                if !chunk.pointee.alloc.bits.rangeIs(set: true, 0, ei &+ 1) {
                    fatalMisuse("free", "pages not allocated at", address: chunkBase(ec))
                }
                chunk.pointee.free(0, ei &+ 1)
            }
        }
        update(base, npages, contig: true, alloc: false)
        freeBytes &+= npages << pageShift
    }

    // MARK: - Releasing pages (for the scavenger: PageAllocScavenge.swift, and the page heap)

    /// Takes the free, unscavenged run [addr, addr + npages pages), inside one chunk, as
    /// allocated while its memory is released without the heap lock, so that nobody is
    /// handed it meanwhile. finishRelease(held: true) gives it back.
    ///
    /// Must hold the heap lock.
    mutating func holdForRelease(_ addr: UInt, _ npages: UInt) {
        chunkOf(chunkIndex(addr)).pointee.allocRange(chunkPageIndex(addr), npages)
        update(addr, npages, contig: true, alloc: true)
        freeBytes &-= npages << pageShift
    }

    /// The run [addr, addr + npages pages), inside one chunk, free (or held by
    /// holdForRelease, if `held`), has been released to the OS: marks it free and
    /// scavenged and counts it.
    ///
    /// Must hold the heap lock.
    mutating func finishRelease(_ addr: UInt, _ npages: UInt, held: Bool) {
        let chunk = chunkOf(chunkIndex(addr))
        let first = chunkPageIndex(addr)
        if held {
            // Allocations while the lock was dropped may have moved searchAddr above it.
            if addr < searchAddr { searchAddr = addr }
            chunk.pointee.free(first, npages)
            update(addr, npages, contig: true, alloc: false)
            freeBytes &+= npages << pageShift
        }
        chunk.pointee.scavenged.setRange(first, npages)
        scavengedBytes &+= npages << pageShift
        releasedBytes &+= npages << pageShift
    }

    /// Marks the free page at `addr` scavenged if it is not: its memory was released while
    /// it belonged to a span (its OS pages read as zero) and it has just been freed.
    /// Not counted in releasedBytes (the scavenger counted that release when it made it).
    ///
    /// Must hold the heap lock; the page must be free.
    mutating func markScavenged(_ addr: UInt) {
        let chunk = chunkOf(chunkIndex(addr))
        let index = chunkPageIndex(addr)
        if chunk.pointee.alloc.bits.get(index) { fatalInternal("markScavenged: the page is allocated") }
        if chunk.pointee.scavenged.popcntRange(index, 1) == 0 {
            chunk.pointee.scavenged.setRange(index, 1)
            scavengedBytes &+= pageSize
        }
    }

    // MARK: - Inspection

    /// Whether `address` lies in the heap and its page is free. Must hold the heap lock.
    func isFreePage(_ address: UInt) -> Bool {
        let i = inUse.findSucc(address)
        if i == 0 || !inUse[i &- 1].contains(address) { return false }
        return !chunkOf(chunkIndex(address)).pointee.alloc.bits.get(chunkPageIndex(address))
    }

    /// Whether the `npages` pages from `address` (in the heap, within one chunk) are all
    /// free. Must hold the heap lock.
    func isFreeRange(_ address: UInt, _ npages: UInt) -> Bool {
        chunkOf(chunkIndex(address)).pointee.isFree(chunkPageIndex(address), npages)
    }

    /// Whether pages first..<first+count of chunk `ci` (a chunk of the heap) are all free
    /// and none is scavenged. Must hold the heap lock.
    func isFreeUnscavenged(chunk ci: UInt, first: UInt, count: UInt) -> Bool {
        let chunk = chunkOf(ci)
        return chunk.pointee.isFree(first, count) && chunk.pointee.scavenged.popcntRange(first, count) == 0
    }

    /// Recounts free and free+scavenged bytes from the bitmaps of every chunk in the heap
    /// (O(heap); for tests and consistency checks). Must hold the heap lock.
    func countFreeAndScavenged() -> (free: UInt, scavenged: UInt) {
        var free: UInt = 0
        var scav: UInt = 0
        var k = 0
        while k < inUse.count {
            let r = inUse[k]
            var c = chunkIndex(r.base)
            while c < chunkIndex(r.limit) {
                let chunk = chunkOf(c)
                free &+= chunkPages &- chunk.pointee.alloc.bits.popcount()
                var w = 0
                while w < 8 {
                    scav &+= UInt((chunk.pointee.scavenged.words[w] & ~chunk.pointee.alloc.bits.words[w]).nonzeroBitCount)
                    w &+= 1
                }
                c &+= 1
            }
            k &+= 1
        }
        return (free << pageShift, scav << pageShift)
    }
}
