// Spans: runs of pages that are either carved into objects of one size class (a
// small span) or hold one large object (a large span), and the page→span map that
// finds a pointer's span in O(1).
//
// A small span tracks its free objects in a bitmap inside the span record (one bit
// per object, 1 = free), not in links written into the objects. Keeping the free
// state away from user memory means a use-after-free write cannot steer the
// allocator, a double free is visible as an already-set bit, and the scavenger can
// tell which OS pages of a partly used span hold only free objects.
//
// The page→span map: slots[address >> spanMapSlotShift] (one per GiB of address space) is
// nil or a table with one entry per page of that GiB. Every page of a small span maps to
// it (a free finds the span of any object in it); a large span maps its first page only
// (a large object is freed by its base address, and its metadata must not grow with its
// size); other pages map to nil. Slot tables are created (never freed) where the heap
// maps memory, and a lookup takes no lock: the entry for a pointer the caller owns was
// written before the pointer was handed out, and tables are published with a release
// store.
//
// An entry (SpanMapEntry, 32 bytes) also carries copies of a small span's base,
// reciprocal, bin offset and owner, so that free's fast path finds the object's index
// and its bin from the entry it loads anyway: its one read of the span record, the
// object's free bit, is off the path to the push, rather than each free waiting on two
// dependent loads (entry, then record) before it can push. The copies cost 32 bytes per
// 8 KiB page of the heap (the pointer alone took 8; the scavenger releases the table
// memory of megabytes whose pages are all free: PageHeap.releaseIdleSpanMapLocked) and a
// store per page of the span when its owner changes (Central.swift: setOwner). xthread
// ran in 0.976x the time (quartiles 0.959-0.990x, 15 alternating runs), larson in 0.96x
// (31 runs; quartiles of the inverse 1.00-1.15x).

import CShim

enum SpanState: UInt32 {
    case free = 0
    case small = 1
    case large = 2
    /// A large span the program freed that waits in a thread's large cache
    /// (LargeCache.swift) to be handed out again: still taken from the page allocator and
    /// mapped in the span map, not live. Written by the thread that caches or takes it.
    case cached = 3
}

/// Bits of a span's free bitmap (maxObjectsPerSpan).
let spanBitmapWords = 8

struct Span {
    // Layout: records are 64-byte aligned (SlabPool). free's fast path reads one word of
    // freeBits (the fields it needs besides are copied in the span map's entries); a
    // flush's release and a refill read base, reciprocal, objectCount, sizeClass,
    // objectSize, the allocated count and the partial-list flag and words of freeBits,
    // and write the last two. These hot fields fill the first 32 bytes and freeBits
    // follows, so that for an object of index below 256 everything free, release and
    // refill read is on the record's first cache line.
    // (The allocated count fits 15 bits, a span holding at most maxObjectsPerSpan
    // objects, and the object size 16, at most maxSmallSize.) SpanTests
    // checks the offsets.

    /// First byte of the span (page-aligned).
    var base: UInt = 0
    /// The thread cache that draws from this span (Central.swift: owners), nil if none:
    /// compared, never followed, by the free path; written under the central lock, and
    /// copied into the span map's entries each time (Central.swift: setOwner).
    var owner: UnsafeMutableRawPointer? = nil
    /// Reciprocal of objectSize (see SizeClassInfo.reciprocal).
    var reciprocal: UInt32 = 0
    /// Objects in the span (at most maxObjectsPerSpan).
    var objectCount: UInt32 = 0
    /// objectSize's storage.
    var objectSizeBits: UInt16 = 0
    /// Size class (0 for a large span).
    var sizeClass: UInt16 = 0
    /// The offset of the class's bin in a thread cache (SizeClasses.swift:
    /// cacheBinOffset(ofClass:)), so that free's fast path finds its bin
    /// with no multiply or shift of its own. 0 for a large span, like its class.
    var binOffset: UInt16 = 0
    /// allocatedCount (the low 15 bits) and onPartialList (the top bit). Guarded by the
    /// class's central lock.
    var countAndListed: UInt16 = 0
    /// Free objects, one bit each, 1 = free. Guarded by the class's central lock.
    var freeBits: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    var state: SpanState = .free
    /// Length in pages.
    var pages: UInt = 0
    /// Links of the central list this span is on (partial spans of its class).
    var next: UnsafeMutablePointer<Span>? = nil
    var previous: UnsafeMutablePointer<Span>? = nil
    /// Links of the span list a partial span is on (its owner's or the unowned list, see
    /// Central.swift), and that list's head. Guarded by the class's central lock.
    var listNext: UnsafeMutablePointer<Span>? = nil
    var listPrevious: UnsafeMutablePointer<Span>? = nil
    var listHead: UnsafeMutablePointer<UnsafeMutablePointer<Span>?>? = nil
    /// The span lists of its owner (nil with owner), opaque to this layer (an OwnedSpans
    /// of Central.swift). Guarded by the class's central lock.
    var ownerLists: UnsafeMutableRawPointer? = nil
    /// A large object mapped on its own (Heap.swift: allocDirectSpan), not from the page heap.
    var direct: Bool = false
    /// A large span whose object goes back to the OS when the program frees it while no
    /// scavenger thread runs (PageHeap.swift: Releasing at free). Written at allocation,
    /// under the page heap's lock, and cleared by the object's owner, realloc, before a
    /// move frees it.
    var releaseOnFree: Bool = false
    /// A large span holding an allocation the heap profiler sampled (Profile.swift).
    /// Written by the object's owner: at allocation, and by a realloc in place.
    var profiled: Bool = false
    /// OS pages of this small span released to the OS while every object on them was
    /// free (bit i: the OS page at base + i·4 KiB). Guarded by the class's central lock.
    var releasedOSPages: UInt64 = 0
    /// OS pages the last confirmed (decay) in-span pass found all free but did not
    /// release yet. Guarded by the class's central lock.
    var freeOSPagesSeen: UInt64 = 0

    var limit: UInt { base &+ pages &<< pageShift }

    /// Object size of a small span (at most maxSmallSize; 0 for a large span, whose
    /// usable size in bytes is pages * pageSize).
    var objectSize: UInt32 {
        @inline(__always) get { UInt32(objectSizeBits) }
        @inline(__always) set { objectSizeBits = UInt16(newValue) }
    }

    /// Objects not free in the bitmap: handed to a thread cache or to the program (at
    /// most objectCount). Guarded by the class's central lock.
    var allocatedCount: UInt32 {
        @inline(__always) get { UInt32(countAndListed & Span.countMask) }
        @inline(__always) set {
            let count = UInt16(newValue)  // traps past 16 bits (an underflow)
            precondition(count <= Span.countMask, "span allocated count overflow")
            countAndListed = countAndListed & ~Span.countMask | count
        }
    }

    /// True while the span is on its class's partial list. Guarded by the class's
    /// central lock.
    var onPartialList: Bool {
        @inline(__always) get { countAndListed & ~Span.countMask != 0 }
        @inline(__always) set { countAndListed = countAndListed & Span.countMask | (newValue ? ~Span.countMask : 0) }
    }

    /// Counts `n` more objects allocated, their bits just cleared from the bitmap. The
    /// count cannot pass objectCount (only free bits are taken), so the add stays in the
    /// low bits. Must hold the class's central lock.
    @inline(__always) mutating func countAllocated(_ n: UInt16) { countAndListed &+= n }

    /// Counts `n` objects freed, their bits just set in the bitmap (so they were counted
    /// allocated: n is at most the count). Must hold the class's central lock.
    @inline(__always) mutating func countFreed(_ n: UInt16) { countAndListed &-= n }

    /// The bits of countAndListed that hold allocatedCount.
    static let countMask: UInt16 = 0x7FFF

    /// Sentinel bits after a small span's last object (see objectStart).
    static let tailSentinels: UInt = 2

    /// objectStart's arithmetic, on a span's base and reciprocal (from its record, or from
    /// its copies in the span map: SpanMapEntry).
    @inline(__always) static func objectStart(of address: UInt, base: UInt, reciprocal: UInt32) -> (index: UInt, isStart: Bool) {
        let product = (address &- base) &* UInt(reciprocal)
        return (product >> 32, UInt32(truncatingIfNeeded: product) < reciprocal)
    }

    /// The bits of bitmap word `word` whose indices are below `end`.
    @inline(__always) static func bits(below end: UInt, inWord word: Int) -> UInt64 {
        let first = UInt(bitPattern: word) &<< 6
        if first >= end { return 0 }
        return end &- first >= 64 ? ~0 : (UInt64(1) << UInt64(end &- first)) &- 1
    }
}

extension UnsafeMutablePointer where Pointee == Span {
    /// The free bitmap as words.
    @inline(__always) var freeWords: UnsafeMutablePointer<UInt64> {
        (UnsafeMutableRawPointer(self) + MemoryLayout<Span>.offset(of: \.freeBits)!).assumingMemoryBound(to: UInt64.self)
    }

    /// Index of the object containing `address`.
    @inline(__always) func objectIndex(of address: UInt) -> UInt {
        ((address &- pointee.base) &* UInt(pointee.reciprocal)) >> 32
    }

    /// Whether `address` is the start of object `index` (its objectIndex) of this span:
    /// a whole number of objects from base, and not in the span's tail (the bytes after
    /// the last whole object, where an "object" would run into the next span).
    @inline(__always) func isObjectStart(_ address: UInt, index: UInt) -> Bool {
        index < UInt(pointee.objectCount) && pointee.base &+ index &* UInt(pointee.objectSize) == address
    }

    /// objectIndex and isObjectStart from one multiply, for free's fast path. With
    /// offset = i·size + r (r < size) and reciprocal R = (2^32 + e) / size (0 <= e <
    /// size), offset·R = i·2^32 + (i·e + r·R): the high half is i, and the low half is
    /// i·e when r = 0 and at least R otherwise, so r = 0 exactly when the low half is
    /// below R, as long as (i + 1)·e < R for every object of the span (then the low
    /// half never wraps). That holds for every class; a large span has R = 0 and is
    /// never a start here.
    ///
    /// The span's tail (the bytes after its last whole object) is not tested here: an
    /// address in it gives index objectCount, or objectCount + 1 where the low half
    /// wraps, and those two bits of the bitmap are the tail's sentinels, always set
    /// (setAllFree; Central.take never takes them), so the fast path's free-bit test
    /// sends it to the slow path, whose exact test (isObjectStart) reports it. SpanTests
    /// checks both steps together against isObjectStart on each offset of each class's
    /// span.
    @inline(__always) func objectStart(of address: UInt) -> (index: UInt, isStart: Bool) {
        Span.objectStart(of: address, base: pointee.base, reciprocal: pointee.reciprocal)
    }

    /// Whether object `index` is free in the span's bitmap (read without the central lock
    /// by free's misuse checks: see Free.swift).
    @inline(__always) func isFree(_ index: UInt) -> Bool {
        freeWords[Int(bitPattern: index >> 6)] & (UInt64(1) << UInt64(index & 63)) != 0
    }

    /// Whether objects first...last (inclusive) are all free.
    func allFree(from first: UInt, through last: UInt) -> Bool {
        let words = freeWords
        var index = first
        while index <= last {
            let word = Int(bitPattern: index >> 6)
            let low = index & 63
            let high = min(last &- (index & ~63), 63)
            let width = high &- low &+ 1
            let mask = (width == 64 ? ~UInt64(0) : (UInt64(1) << UInt64(width)) &- 1) << UInt64(low)
            if words[word] & mask != mask { return false }
            index = (index | 63) &+ 1
        }
        return true
    }

    /// Sets up a fresh small span of class `sizeClass`, every object free.
    func initializeSmall(sizeClass: UInt32, info: SizeClassInfo) {
        pointee.state = .small
        pointee.sizeClass = UInt16(sizeClass)
        pointee.binOffset = UInt16(cacheBinOffset(ofClass: Int(sizeClass)))
        pointee.objectSize = info.size
        pointee.reciprocal = info.reciprocal
        pointee.objectCount = info.objects
        pointee.owner = nil
        pointee.ownerLists = nil
        pointee.allocatedCount = 0
        pointee.releasedOSPages = 0
        pointee.freeOSPagesSeen = 0
        setAllFree()
    }

    /// The OS pages of a small span that hold (part of) an object, as a releasedOSPages
    /// mask: the tail after the last object is never touched.
    var objectOSPages: UInt64 {
        let bytes = UInt(pointee.objectCount) &* UInt(pointee.objectSize)
        let count = min((bytes &+ osPageSize &- 1) / osPageSize, 64)
        return count == 64 ? ~0 : (UInt64(1) << UInt64(count)) &- 1
    }

    /// Marks every object free (a fresh span), and sets the tail's sentinel bits: those
    /// of indices objectCount and objectCount + 1 that fit the bitmap (see objectStart).
    func setAllFree() {
        let words = freeWords
        let end = UInt(pointee.objectCount) &+ Span.tailSentinels  // bits past the bitmap dropped
        for i in 0..<spanBitmapWords { words[i] = Span.bits(below: end, inWord: i) }
    }

    /// The bits of bitmap word `word` that stand for objects (not the tail's sentinels).
    @inline(__always) func objectBits(ofWord word: Int) -> UInt64 {
        Span.bits(below: UInt(pointee.objectCount), inWord: word)
    }
}

/// One page's entry in the page→span map: the page's span, and, for a page of a small
/// span, copies of the span's fields that free's fast path needs (Free.swift), so that
/// it finds its bin and the object's index from the entry alone and its one read of the
/// span record (the object's free bit) is not on the path to the push. Entries of a
/// large span's first page, and every other entry, hold only the span (or nil) and
/// zeros: reciprocal 0 is never an object start.
///
/// Written under the heap lock (span, when a span is made or freed) or the span's class's
/// central lock (the copies, SpanMap.publishSmall and publishOwner); read without a lock
/// by free's fast path: the copies of a live small span are written before its first
/// object is handed out, and the owner copy is compared, never followed, like the
/// record's. 32 bytes: two entries per cache line.
struct SpanMapEntry {
    var span: UnsafeMutablePointer<Span>?
    /// The span's base (a small span's; 0 otherwise).
    var base: UInt
    /// The span's owner (Span.owner), copied each time it changes.
    var owner: UnsafeMutableRawPointer?
    /// The span's reciprocal (a small span's; 0 otherwise).
    var reciprocal: UInt32
    /// The span's binOffset (a small span's; 0 otherwise).
    var binOffset: UInt16
    var unused: UInt16
}

extension UnsafeMutablePointer where Pointee == SpanMapEntry {
    /// Span.objectStart from the entry's copies of its span's base and reciprocal.
    @inline(__always) func objectStart(of address: UInt) -> (index: UInt, isStart: Bool) {
        Span.objectStart(of: address, base: pointee.base, reciprocal: pointee.reciprocal)
    }
}

/// The page→span map (see the file comment).
struct SpanMap {
    /// spanMapSlotCount slots, each nil or a table of spanMapSlotPages entries.
    var slots: UnsafeMutablePointer<UnsafeMutablePointer<SpanMapEntry>?>

    /// Bytes of one slot's table.
    static let tableBytes = spanMapSlotPages &* UInt(MemoryLayout<SpanMapEntry>.stride)

    /// The process's map, over the shim's static slot table (swiftheap_span_slots): free's
    /// fast path reads it before the heap exists, when every slot is empty (Entry.swift).
    @inline(__always) static var process: SpanMap {
        SpanMap(slots: UnsafeMutableRawPointer(sh_span_slots()).assumingMemoryBound(to: UnsafeMutablePointer<SpanMapEntry>?.self))
    }

    /// Maps the slot table (2 MiB of address space, touched only where the heap is).
    /// Returns nil if the kernel refuses.
    static func make() -> SpanMap? {
        let bytes = spanMapSlotCount &* UInt(MemoryLayout<UnsafeMutableRawPointer?>.stride)
        let table = osMap(bytes)
        if table == 0 { return nil }
        return SpanMap(slots: UnsafeMutablePointer(bitPattern: table)!)
    }

    /// The span `address` maps to, or nil (see the file comment: for a large span only
    /// its base maps to it). Takes no lock.
    @inline(__always) func span(containing address: UInt) -> UnsafeMutablePointer<Span>? {
        entry(containing: address)?.pointee.span
    }

    /// span(containing:) for an address the caller has checked is below 2^heapAddressBits.
    @inline(__always) func span(containingMapped address: UInt) -> UnsafeMutablePointer<Span>? {
        entry(containingMapped: address)?.pointee.span
    }

    /// The entry of `address`'s page, nil if the address is beyond the map or its slot
    /// has no table (then no span holds it). Takes no lock.
    @inline(__always) func entry(containing address: UInt) -> UnsafeMutablePointer<SpanMapEntry>? {
        if address >> spanMapSlotShift >= spanMapSlotCount { return nil }
        return entry(containingMapped: address)
    }

    /// The entry of `address`'s page, nil if its slot has no table (then no span holds
    /// it), for an address below 2^heapAddressBits. Takes no lock.
    @inline(__always) func entry(containingMapped address: UInt) -> UnsafeMutablePointer<SpanMapEntry>? {
        guard let pages = slots[Int(bitPattern: address >> spanMapSlotShift)] else { return nil }
        return pages + Int(bitPattern: (address >> pageShift) & (spanMapSlotPages &- 1))
    }

    /// Makes sure every slot of [base, base+bytes) has its table. Returns false if the
    /// kernel refuses the memory.
    ///
    /// Must hold the heap lock.
    func ensureSlots(base: UInt, bytes: UInt) -> Bool {
        var slot = base >> spanMapSlotShift
        let end = (base &+ bytes &- 1) >> spanMapSlotShift
        while slot <= end {
            if slots[Int(bitPattern: slot)] == nil {
                let table = osMap(SpanMap.tableBytes)
                if table == 0 { return false }
                sh_store_ptr(UnsafeMutableRawPointer(slots + Int(bitPattern: slot))
                                .assumingMemoryBound(to: UnsafeMutableRawPointer?.self),
                             UnsafeMutableRawPointer(bitPattern: table))
            }
            slot &+= 1
        }
        return true
    }

    /// Unmaps the slot table and every slot's table (a page heap being destroyed; tests).
    /// Not for the process's map, whose slot table is static.
    func destroy() {
        precondition(slots != SpanMap.process.slots, "the process's span map is never destroyed")
        var slot = 0
        while slot < Int(spanMapSlotCount) {
            if let table = slots[slot] { osUnmap(UInt(bitPattern: table), SpanMap.tableBytes) }
            slot &+= 1
        }
        osUnmap(UInt(bitPattern: slots), spanMapSlotCount &* UInt(MemoryLayout<UnsafeMutableRawPointer?>.stride))
    }

    /// Bytes of heap whose entries fill one OS page of a slot's table (1 MiB).
    static let bytesPerTablePage = (osPageSize / UInt(MemoryLayout<SpanMapEntry>.stride)) &<< pageShift

    /// Releases to the OS the table memory of the entries of [base, base + bytes), both
    /// multiples of bytesPerTablePage, inside one slot: entries that are all zero (pages
    /// of no span), so that the zero pages the kernel gives back on the next read or write
    /// hold what they held. Must hold the heap lock (no span is made meanwhile); the
    /// slot must have its table.
    func releaseEntries(base: UInt, bytes: UInt) {
        let first = entry(containingMapped: base).unsafelyUnwrapped
        osRelease(UInt(bitPattern: first), bytes / SpanMap.bytesPerTablePage &* osPageSize)
    }

    /// Calls `body` with the entry of every page of [base, base + pages·pageSize).
    /// The slots must have their tables (ensureSlots).
    @inline(__always) private func forEachEntry(base: UInt, pages: UInt, _ body: (UnsafeMutablePointer<SpanMapEntry>) -> Void) {
        var address = base
        let limit = base &+ pages &<< pageShift
        while address < limit {
            body(entry(containingMapped: address).unsafelyUnwrapped)
            address &+= pageSize
        }
    }

    /// Points every page of [base, base + pages·pageSize) at `span` (nil to clear), with
    /// no copies (publishSmall adds a small span's). Must hold the heap lock; the slots
    /// must have their tables (ensureSlots).
    func set(base: UInt, pages: UInt, to span: UnsafeMutablePointer<Span>?) {
        forEachEntry(base: base, pages: pages) { entry in
            // The copies first, the span last with a release store: an entry read while
            // it changes (a racing misuse) names a span and has no copies, sending a
            // free to the slow path, never copies without their span.
            entry.pointee.reciprocal = 0
            entry.pointee.base = 0
            entry.pointee.owner = nil
            entry.pointee.binOffset = 0
            sh_store_ptr(UnsafeMutableRawPointer(entry.pointer(to: \.span)!).assumingMemoryBound(to: UnsafeMutableRawPointer?.self),
                         UnsafeMutableRawPointer(span))
        }
    }

    /// Copies small span `span`'s base, reciprocal, binOffset and owner into its pages'
    /// entries (set must have pointed them at it). Must hold the span's class's central
    /// lock, before any object of the span is handed out.
    func publishSmall(_ span: UnsafeMutablePointer<Span>) {
        forEachEntry(base: span.pointee.base, pages: span.pointee.pages) { entry in
            entry.pointee.base = span.pointee.base
            entry.pointee.owner = span.pointee.owner
            entry.pointee.binOffset = span.pointee.binOffset
            entry.pointee.reciprocal = span.pointee.reciprocal
        }
    }

    /// Copies small span `span`'s owner into its pages' entries, after it changed. Must
    /// hold the span's class's central lock.
    func publishOwner(_ span: UnsafeMutablePointer<Span>) {
        let owner = span.pointee.owner
        forEachEntry(base: span.pointee.base, pages: span.pointee.pages) { entry in entry.pointee.owner = owner }
    }
}
