// Size classes: the object sizes small requests are rounded up to, and how many
// pages a span of each class has.
//
// The table is computed once at initialisation (Go generates its table offline with
// mksizeclasses.go; computing it here keeps the rule and the table in one place and
// lets the tests check the rule rather than a copy of numbers):
//
//   * sizes are multiples of 16 (every pointer is 16-byte aligned), in steps of 16 up
//     to 128 bytes, then 8 steps per doubling: 128, 144, ..., 256, 288, ..., 512, ...
//     up to maxSmallSize (32 KiB). Above 128 bytes, a request that lands in class c
//     wastes less than 1/8 of the object: (size[c] - size[c-1] - 1) / size[c] < 12.5%.
//     At or below 128 bytes the waste is under 16 bytes.
//   * a span's tail (the bytes left after its last whole object) is at most 1/8 of it.
//   * a class of objects up to wideSpanMaxObjectSize (256 bytes) has the widest span
//     of at most wideSpanBytes (32 KiB) that holds at most hotBitmapObjects (256)
//     objects (one page if a page holds more: the 16-byte class). free reads its span
//     record's first cache line, which holds the bitmap words of objects 0..<256
//     (Span.swift), and in a program that streams its own data through the caches,
//     the fewer records a heap has, the more of them stay cached. With one-page spans,
//     st-churn's frees missed a simulated 512 KiB L2 0.14 times per free; with these,
//     0.05 times (cachegrind --LL=524288,8,64, the size of this machine's L2). larson
//     ran 8% faster (medians of 11 interleaved runs).
//   * a bigger class's span is the fewest pages that hold at least minObjectsPerSpan
//     objects or are at least 64 KiB, so that a refill of a thread cache moves a batch
//     without visiting many spans. Wider spans cost peak RSS where objects are in
//     flight between threads: 64 KiB spans for every class raised prodcons' peak RSS
//     by 31%, for the classes up to 256 bytes by 6%, and 32 KiB ones by 4%.
//   * a span holds at most maxObjectsPerSpan (512) objects: its free bitmap is fixed
//     size, inside the span record.
//
// Lookup is one byte table over every small size by 16-byte steps (2 KiB; every class
// is a multiple of 16, so the step never skips a class): malloc's fast path is one
// add, one shift and one load, with no test of which table. Object index within a span is computed by multiplication with
// a per-class reciprocal (Go's divMagic), exact for every offset inside a span.
//
// Class 0 means "not a small object": large objects are spans of their own.

import CShim

let maxSmallSize: UInt = 32 << 10
let maxObjectsPerSpan: UInt = 512
let minObjectsPerSpan: UInt = 8
/// Classes up to this size have wide spans (see the file comment).
let wideSpanMaxObjectSize: UInt = 256
/// The most bytes of a wide span.
let wideSpanBytes: UInt = 32 << 10
/// Objects whose bitmap words share the span record's first cache line with the fields
/// free reads (Span.swift: the layout; SpanTests checks it).
let hotBitmapObjects: UInt = 256
let maxSizeClasses = 80
/// The cache line size of the machines SwiftHeap targets (x86-64, arm64).
let cacheLineBytes: UInt = 64

/// The fewest objects of `objectSize` bytes, laid out from a line boundary, that fill
/// whole cache lines: lcm(objectSize, cacheLineBytes) / objectSize (1, 2 or 4 for sizes
/// that are multiples of 16). Such a group's lines hold no other object.
func objectsPerLineGroup(objectSize: UInt) -> UInt {
    cacheLineBytes >> UInt(min(objectSize.trailingZeroBitCount, cacheLineBytes.trailingZeroBitCount))
}

struct SizeClassInfo {
    /// Object size in bytes.
    var size: UInt32
    /// Pages per span.
    var pages: UInt32
    /// Objects per span.
    var objects: UInt32
    /// ceil(2^32 / size): (offset * reciprocal) >> 32 == offset / size for offsets in a span.
    var reciprocal: UInt32
}

struct SizeClassTable {
    /// Number of classes including class 0.
    var count: Int = 0
    var info: UnsafeMutablePointer<SizeClassInfo>
    /// The class of sizes 0...maxSmallSize as its bin's offset (cacheBinOffset(ofClass:)),
    /// indexed by (size + 15) >> 4: malloc's fast path adds it to
    /// the cache's address as it is, and sizeClass(of:) divides it back.
    var binOffsets: UnsafeMutablePointer<UInt16>
    /// Per alignment from 32 bytes to a page (alignedClassAlignments of them) and class,
    /// the class's first class at or above it whose size is a multiple of the alignment
    /// (every object of such a class is aligned: spans start on a page), or 0 if none:
    /// aligned allocation's lookup (alignedClass).
    var alignedClasses: UnsafeMutablePointer<UInt8>

    /// Entries of binOffsets: sizes 0...maxSmallSize by 16-byte steps.
    static let binOffsetEntries = Int(maxSmallSize >> 4) + 1
    /// The alignments alignedClasses covers: 32 << k bytes for k below this (up to a page).
    static let alignedClassAlignments = Int(pageShift) - 4

    /// Builds the table in metadata memory, its binOffsets in `binOffsetStorage` if given
    /// (binOffsetEntries entries: the process's table fills the shim's, which malloc's fast
    /// path reads before the heap exists: Entry.swift). Returns nil if metadata memory is
    /// exhausted.
    static func make(binOffsetStorage: UnsafeMutablePointer<UInt16>? = nil) -> SizeClassTable? {
        let entries = binOffsetEntries
        let alignedEntries = alignedClassAlignments * maxSizeClasses
        guard let infoMemory = persistentAlloc(UInt(maxSizeClasses * MemoryLayout<SizeClassInfo>.stride)),
              let binOffsets = binOffsetStorage
                ?? persistentAlloc(UInt(entries * MemoryLayout<UInt16>.stride))?.bindMemory(to: UInt16.self, capacity: entries),
              let alignedMemory = persistentAlloc(UInt(alignedEntries))
        else { return nil }
        var table = SizeClassTable(
            info: infoMemory.bindMemory(to: SizeClassInfo.self, capacity: maxSizeClasses),
            binOffsets: binOffsets,
            alignedClasses: alignedMemory.bindMemory(to: UInt8.self, capacity: alignedEntries))
        table.info[0] = SizeClassInfo(size: 0, pages: 0, objects: 0, reciprocal: 0)
        var count = 1
        var size: UInt = 16
        while size <= maxSmallSize {
            let pages = spanPages(forObjectSize: size)
            let objects = pages * pageSize / size
            let reciprocal = UInt32(truncatingIfNeeded: ((1 as UInt64) << 32 + UInt64(size) - 1) / UInt64(size))
            table.info[count] = SizeClassInfo(size: UInt32(size), pages: UInt32(pages),
                                              objects: UInt32(objects), reciprocal: reciprocal)
            count += 1
            size += sizeStep(after: size)
        }
        table.count = count
        // Fill the lookup table: each entry gets the smallest class that fits.
        var cls = 1
        for i in 0..<entries {
            let request = UInt(i) << 4
            while UInt(table.info[cls].size) < request { cls += 1 }
            table.binOffsets[i] = UInt16(cacheBinOffset(ofClass: cls))
        }
        // Each alignment's classes, from the biggest down: a class's entry is itself if
        // its size is a multiple of the alignment, else the next class's.
        for k in 0..<alignedClassAlignments {
            let alignment = UInt(32) << UInt(k)
            let row = table.alignedClasses + k * maxSizeClasses
            var next: UInt8 = 0
            for c in (0..<maxSizeClasses).reversed() {
                if c >= 1 && c < count && UInt(table.info[c].size) % alignment == 0 { next = UInt8(c) }
                row[c] = c < count ? next : 0
            }
        }
        return table
    }

    /// The class of an allocation of `size` bytes (at most maxSmallSize) aligned to
    /// `alignment` (a power of two from 32 bytes to a page): the first class that holds
    /// max(size, alignment) bytes and whose size is a multiple of `alignment`; 0 if no
    /// small class is.
    @inline(__always) func alignedClass(of size: UInt, alignment: UInt) -> Int {
        let k = alignment.trailingZeroBitCount &- 5
        return Int(alignedClasses[k &* maxSizeClasses &+ sizeClass(of: max(size, alignment))])
    }

    /// The step from one class size to the next: 16 up to 128 bytes, then an eighth of
    /// the power of two at or below the size.
    static func sizeStep(after size: UInt) -> UInt {
        if size < 128 { return 16 }
        let octave = UInt(1) << (UInt(UInt.bitWidth) - 1 - UInt(size.leadingZeroBitCount))
        return octave / 8
    }

    /// The pages of a span of objects of `size` bytes (see the file comment): tail
    /// waste at most 1/8; up to wideSpanMaxObjectSize, the most pages up to
    /// wideSpanBytes with at most hotBitmapObjects objects (or one page); above it,
    /// the fewest pages with at least minObjectsPerSpan objects unless the span is 64
    /// KiB or more.
    static func spanPages(forObjectSize size: UInt) -> UInt {
        if size <= wideSpanMaxObjectSize {
            var widest: UInt = 1
            var pages: UInt = 2
            while pages * pageSize <= wideSpanBytes {
                let bytes = pages * pageSize
                let objects = bytes / size
                if objects > hotBitmapObjects { break }
                if (bytes - objects * size) * 8 <= bytes { widest = pages }
                pages += 1
            }
            return widest
        }
        var pages: UInt = 1
        while true {
            let bytes = pages * pageSize
            let objects = bytes / size
            let tail = bytes - objects * size
            let enoughObjects = objects >= minObjectsPerSpan || bytes >= (64 << 10)
            if objects > 0 && tail * 8 <= bytes && enoughObjects { return pages }
            pages += 1
        }
    }

    /// Whether no two objects of class `cls` share a cache line: the class's size is a
    /// multiple of cacheLineBytes (spans start on a page, so every object starts on a
    /// line).
    func objectsShareNoCacheLine(_ cls: Int) -> Bool {
        UInt(info[cls].size) % cacheLineBytes == 0
    }

    /// The class of a small request (size <= maxSmallSize).
    @inline(__always) func sizeClass(of size: UInt) -> Int {
        binOffset(of: size) / cacheBinStride
    }

    /// The offset of the bin of a small request's class (size <= maxSmallSize): the
    /// malloc fast path's lookup.
    @inline(__always) func binOffset(of size: UInt) -> Int {
        SizeClassTable.binOffset(of: size, in: binOffsets)
    }

    /// binOffset(of:) in a table's binOffsets (malloc's fast path reads the process's
    /// from the shim: Entry.swift).
    @inline(__always) static func binOffset(of size: UInt, in binOffsets: UnsafeMutablePointer<UInt16>) -> Int {
        Int(binOffsets[Int(bitPattern: (size &+ 15) >> 4)])
    }
}

/// The size of a thread cache's bin (ThreadCache.swift: CacheBin, whose stride
/// SpanTests checks is this). The size-class layer publishes bins' offsets for the
/// thread cache above it, so the unit is fixed here rather than read from the type.
let cacheBinStride = 16

/// The offset of class `sizeClass`'s bin from the start of a cache's bins (and of its
/// remote bin from the start of the remote bins). The size-class table and every small
/// span keep it beside the class (SizeClassTable.binOffsets, Span.binOffset), so that
/// neither fast path scales a class number; it fits in 16 bits (maxSizeClasses bins of
/// cacheBinStride bytes; SpanTests checks it for every class).
@inline(__always) func cacheBinOffset(ofClass sizeClass: Int) -> Int {
    sizeClass &* cacheBinStride
}
