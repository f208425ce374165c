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
// The page→span map is per arena (64 MiB): arenaTable[address >> arenaShift] points
// to an ArenaInfo whose spans[] has one entry per page. Every page of an in-use span
// maps to it; pages not in a span map to nil. Both tables only ever gain entries, so
// a lookup takes no lock: the entry for a pointer the caller owns was written before
// the pointer was handed out.

import CShim

enum SpanState: UInt32 {
    case free = 0
    case small = 1
    case large = 2
}

/// Bits of a span's free bitmap (maxObjectsPerSpan).
let spanBitmapWords = 8

struct Span {
    /// Free objects, one bit each, 1 = free. Guarded by the class's central lock.
    /// First in the record so that freeWords needs no offset computation.
    var freeBits: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    /// First byte of the span (page-aligned).
    var base: UInt = 0
    /// Length in pages.
    var pages: UInt = 0
    /// Links of the central list this span is on (partial spans of its class).
    var next: UnsafeMutablePointer<Span>? = nil
    var previous: UnsafeMutablePointer<Span>? = nil
    var state: SpanState = .free
    /// Size class (0 for a large span).
    var sizeClass: UInt32 = 0
    /// Object size (small) — for a large span the usable size in bytes is pages * pageSize.
    var objectSize: UInt32 = 0
    /// Reciprocal of objectSize (see SizeClassInfo.reciprocal).
    var reciprocal: UInt32 = 0
    /// The thread cache that last refilled from this span (compared, never followed,
    /// by the free path; guarded by the central lock for writes).
    var owner: UnsafeMutableRawPointer? = nil
    /// Objects in the span.
    var objectCount: UInt32 = 0
    /// Objects not free in the bitmap: handed to a thread cache or to the program.
    var allocatedCount: UInt32 = 0
    /// True while the span is on its class's partial list.
    var onPartialList: Bool = false
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
}

extension UnsafeMutablePointer where Pointee == Span {
    /// The free bitmap as words.
    @inline(__always) var freeWords: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(self).assumingMemoryBound(to: UInt64.self)
    }

    /// Index of the object containing `address`.
    @inline(__always) func objectIndex(of address: UInt) -> UInt {
        ((address &- pointee.base) &* UInt(pointee.reciprocal)) >> 32
    }

    /// Whether `address` is the start of object `index` (its objectIndex) of this span.
    @inline(__always) func isObjectStart(_ address: UInt, index: UInt) -> Bool {
        pointee.base &+ index &* UInt(pointee.objectSize) == address
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
        pointee.sizeClass = sizeClass
        pointee.objectSize = info.size
        pointee.reciprocal = info.reciprocal
        pointee.objectCount = info.objects
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

    /// Marks every object free (a fresh span).
    func setAllFree() {
        let words = freeWords
        var remaining = UInt(pointee.objectCount)
        for i in 0..<spanBitmapWords {
            if remaining >= 64 {
                words[i] = ~0
                remaining &-= 64
            } else {
                words[i] = remaining == 0 ? 0 : (UInt64(1) << UInt64(remaining)) &- 1
                remaining = 0
            }
        }
    }
}

/// Page→span entries for one 64 MiB arena slot.
struct ArenaInfo {
    var spans: UnsafeMutablePointer<UnsafeMutablePointer<Span>?>
}

/// The flat table of arena slots, reserved for the whole address space (32 MiB of
/// address space, touched only where arenas exist).
struct SpanMap {
    var arenas: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<Span>?>?>

    /// Reserves the table. Returns nil if the kernel refuses the address space.
    static func make() -> SpanMap? {
        let bytes = arenaSlotCount &* UInt(MemoryLayout<UnsafeMutableRawPointer?>.stride)
        let table = osMap(bytes)
        if table == 0 { return nil }
        return SpanMap(arenas: UnsafeMutablePointer(bitPattern: table)!)
    }

    /// The span containing `address`, or nil if the address is not in any span.
    /// Takes no lock (see the file comment).
    @inline(__always) func span(containing address: UInt) -> UnsafeMutablePointer<Span>? {
        let slot = address >> arenaShift
        if slot >= arenaSlotCount { return nil }
        guard let pages = arenas[Int(bitPattern: slot)] else { return nil }
        return pages[Int(bitPattern: (address >> pageShift) & (arenaPages &- 1))]
    }

    /// Whether `address` lies in memory SwiftHeap mapped for its heap.
    func isInArena(_ address: UInt) -> Bool {
        let slot = address >> arenaShift
        return slot < arenaSlotCount && arenas[Int(bitPattern: slot)] != nil
    }

    /// Makes sure every arena slot of [base, base+bytes) has its page table.
    /// Must hold the heap lock. Returns false if metadata memory is exhausted.
    func addArena(base: UInt, bytes: UInt) -> Bool {
        var slot = base >> arenaShift
        let end = (base &+ bytes &- 1) >> arenaShift
        while slot <= end {
            if arenas[Int(bitPattern: slot)] == nil {
                let tableBytes = arenaPages &* UInt(MemoryLayout<UnsafeMutableRawPointer?>.stride)
                guard let table = persistentAlloc(tableBytes, alignment: 64) else { return false }
                sh_store_ptr(UnsafeMutableRawPointer(arenas + Int(bitPattern: slot))
                                .assumingMemoryBound(to: UnsafeMutableRawPointer?.self), table)
            }
            slot &+= 1
        }
        return true
    }

    /// Points every page of [base, base + pages·pageSize) at `span` (nil to clear).
    /// Must hold the heap lock; the arena slots must exist.
    func set(base: UInt, pages: UInt, to span: UnsafeMutablePointer<Span>?) {
        var address = base
        let limit = base &+ pages &<< pageShift
        while address < limit {
            let table = arenas[Int(bitPattern: address >> arenaShift)]!
            table[Int(bitPattern: (address >> pageShift) & (arenaPages &- 1))] = span
            address &+= pageSize
        }
    }
}
