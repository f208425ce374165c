// Per-chunk page bitmaps (Go's pageBits / pallocBits / pallocData, mpallocbits.go, and
// the scavenge-candidate search of mgcscavenge.go).
//
// A chunk is chunkPages = 512 pages. PageBits holds one bit per page in 8 UInt64 words;
// bit i of the bitmap is bit (i % 64) of word i / 64. In the allocation bitmap
// (PallocBits) 1 means allocated and 0 free; in the scavenged bitmap 1 means the page's
// memory has been returned to the OS (it is not resident and reads back as zero).
//
// PallocData = allocation bitmap + scavenged bitmap, 128 bytes per chunk. Invariant
// kept by every operation here and by the page allocator: a scavenged bit is set only
// on a free page (allocRange clears the scavenged bits it allocates). The page
// allocator's free+scavenged counters rely on it.
//
// Summaries (PallocSum) pack three 21-bit counts of a region's free pages: the run at
// its start, the longest run anywhere, and the run at its end. 21 bits hold counts below
// 2^21; a region that is entirely free with exactly 2^21 pages (the root level of the
// summary tree: 16 GiB) is encoded by bit 63 alone.
//
// Nothing here takes a lock: the page allocator's callers hold the heap lock, except
// for the scavenger's optimistic probe (hasScavengeCandidateRacy), which tolerates
// torn reads because it re-checks under the lock.

import CShim

/// log2 of the largest count a summary field holds (21: 9 bits of chunk pages plus
/// 3 bits for each of the four levels above the leaves).
let logMaxPackedValue: UInt = 21
/// The largest count a summary can express (all fields equal: bit 63).
let maxPackedValue: UInt = 1 << logMaxPackedValue

/// A packed (start, max, end) summary of a region's free pages.
struct PallocSum: Equatable {
    var raw: UInt64

    @inline(__always) init(raw: UInt64) { self.raw = raw }

    @inline(__always) init(start: UInt, max: UInt, end: UInt) {
        if max == maxPackedValue {
            raw = 1 << 63
            return
        }
        let mask = UInt64(maxPackedValue &- 1)
        raw = (UInt64(start) & mask)
            | ((UInt64(max) & mask) << UInt64(logMaxPackedValue))
            | ((UInt64(end) & mask) << UInt64(2 &* logMaxPackedValue))
    }

    @inline(__always) var isFullyFreeMax: Bool { raw & (1 << 63) != 0 }

    @inline(__always) var start: UInt {
        if isFullyFreeMax { return maxPackedValue }
        return UInt(truncatingIfNeeded: raw & UInt64(maxPackedValue &- 1))
    }
    @inline(__always) var max: UInt {
        if isFullyFreeMax { return maxPackedValue }
        return UInt(truncatingIfNeeded: (raw >> UInt64(logMaxPackedValue)) & UInt64(maxPackedValue &- 1))
    }
    @inline(__always) var end: UInt {
        if isFullyFreeMax { return maxPackedValue }
        return UInt(truncatingIfNeeded: (raw >> UInt64(2 &* logMaxPackedValue)) & UInt64(maxPackedValue &- 1))
    }

    /// The summary of a chunk with every page free.
    static var freeChunk: PallocSum { PallocSum(start: chunkPages, max: chunkPages, end: chunkPages) }
}

/// Merges the summaries of consecutive regions of 2^logMaxPagesPerSum pages each into
/// the summary of their union (Go's mergeSummaries): the definition the summary tree
/// keeps, against which the tests check it; PageAlloc.update merges with its
/// specialisation, mergeChildSummaries.
func mergeSummaries(_ sums: UnsafePointer<PallocSum>, count: Int, logMaxPagesPerSum: UInt) -> PallocSum {
    let full = UInt(1) << logMaxPagesPerSum
    var start = sums[0].start
    var max = sums[0].max
    var end = sums[0].end
    var i = 1
    while i < count {
        let s = sums[i]
        let si = s.start, mi = s.max, ei = s.end
        // The running start grows only while everything so far is free.
        if start == UInt(i) &* full { start &+= si }
        // The longest run is either seen before, across the boundary, or inside sums[i].
        if end &+ si > max { max = end &+ si }
        if mi > max { max = mi }
        // The running end extends through a totally free region, else restarts.
        if ei == full { end &+= full } else { end = ei }
        i &+= 1
    }
    return PallocSum(start: start, max: max, end: end)
}

/// mergeSummaries of `count` (1-8) consecutive children of one summary (children are of
/// levels 1-4), where the parent's other children have no free page: some before them
/// (`zeroBefore`: the parent's start is 0) and some after (`zeroAfter`: its end is 0).
/// A child's counts are below 2^21 (at most 2^18 pages), so it is never the fully free
/// root's encoding and its fields unpack without a test.
@inline(__always) func mergeChildSummaries(_ sums: UnsafePointer<PallocSum>, count: Int, logMaxPagesPerSum: UInt,
                                           zeroBefore: Bool, zeroAfter: Bool) -> PallocSum {
    let full = UInt(1) << logMaxPagesPerSum
    let mask = UInt64(maxPackedValue &- 1)
    let shift = UInt64(logMaxPackedValue)
    let first = sums[0].raw
    var start = UInt(truncatingIfNeeded: first & mask)
    var max = UInt(truncatingIfNeeded: (first >> shift) & mask)
    var end = UInt(truncatingIfNeeded: first >> (2 &* shift))
    var i = 1
    while i < count {
        let raw = sums[i].raw
        if raw == 0 {
            // A region without a free page (allocated whole, or outside the heap: most of
            // the tree's regions) only ends the running end (which never exceeds max).
            end = 0
        } else {
            let si = UInt(truncatingIfNeeded: raw & mask)
            let mi = UInt(truncatingIfNeeded: (raw >> shift) & mask)
            let ei = UInt(truncatingIfNeeded: raw >> (2 &* shift))
            if start == UInt(i) &* full { start &+= si }
            max = Swift.max(Swift.max(max, end &+ si), mi)
            end = ei == full ? end &+ full : ei
        }
        i &+= 1
    }
    return PallocSum(start: zeroBefore ? 0 : start, max: max, end: zeroAfter ? 0 : end)
}

/// One bit per page of a chunk.
struct PageBits: Equatable {
    var words: InlineArray<8, UInt64>

    init() { words = InlineArray(repeating: 0) }

    static func == (a: PageBits, b: PageBits) -> Bool {
        var i = 0
        while i < 8 {
            if a.words[i] != b.words[i] { return false }
            i &+= 1
        }
        return true
    }

    @inline(__always) func get(_ i: UInt) -> Bool {
        (words[Int(i / 64)] >> UInt64(i % 64)) & 1 != 0
    }

    @inline(__always) mutating func set(_ i: UInt) {
        words[Int(i / 64)] |= 1 << UInt64(i % 64)
    }

    @inline(__always) mutating func clear(_ i: UInt) {
        words[Int(i / 64)] &= ~(1 << UInt64(i % 64))
    }

    /// Sets bits [i, i+n); n >= 1 and i+n <= 512.
    mutating func setRange(_ i: UInt, _ n: UInt) {
        let j = i &+ n &- 1
        let wi = Int(i / 64), wj = Int(j / 64)
        if wi == wj {
            words[wi] |= lowMask(n) << UInt64(i % 64)
            return
        }
        words[wi] |= ~UInt64(0) << UInt64(i % 64)
        var k = wi &+ 1
        while k < wj {
            words[k] = ~0
            k &+= 1
        }
        words[wj] |= lowMask(j % 64 &+ 1)
    }

    /// Clears bits [i, i+n); n >= 1 and i+n <= 512.
    mutating func clearRange(_ i: UInt, _ n: UInt) {
        let j = i &+ n &- 1
        let wi = Int(i / 64), wj = Int(j / 64)
        if wi == wj {
            words[wi] &= ~(lowMask(n) << UInt64(i % 64))
            return
        }
        words[wi] &= ~(~UInt64(0) << UInt64(i % 64))
        var k = wi &+ 1
        while k < wj {
            words[k] = 0
            k &+= 1
        }
        words[wj] &= ~lowMask(j % 64 &+ 1)
    }

    mutating func setAll() {
        var k = 0
        while k < 8 { words[k] = ~0; k &+= 1 }
    }

    mutating func clearAll() {
        var k = 0
        while k < 8 { words[k] = 0; k &+= 1 }
    }

    /// Number of set bits in [i, i+n); n >= 1. (Words without a set bit are skipped: the
    /// library is built for the x86-64 baseline, which has no popcnt instruction, and the
    /// page allocator mostly counts scavenged bits where there are none.)
    func popcntRange(_ i: UInt, _ n: UInt) -> UInt {
        @inline(__always) func count(_ x: UInt64) -> UInt { x == 0 ? 0 : UInt(x.nonzeroBitCount) }
        let j = i &+ n &- 1
        let wi = Int(i / 64), wj = Int(j / 64)
        if wi == wj {
            return count(words[wi] >> UInt64(i % 64) & lowMask(n))
        }
        var s = count(words[wi] >> UInt64(i % 64))
        var k = wi &+ 1
        while k < wj {
            s &+= count(words[k])
            k &+= 1
        }
        s &+= count(words[wj] & lowMask(j % 64 &+ 1))
        return s
    }

    /// One past the highest set bit below bit i (0 if none): where the run of clear bits
    /// that ends at i begins.
    func clearRunStart(below i: UInt) -> UInt {
        if i == 0 { return 0 }
        let top = i &- 1
        var k = Int(top >> 6)
        // Bit top of word k moved to bit 63: the bits above it are shifted out.
        var x = words[k] << UInt64(63 &- (top & 63))
        if x != 0 { return top &- UInt(x.leadingZeroBitCount) &+ 1 }
        k &-= 1
        while k >= 0 {
            x = words[k]
            if x != 0 { return UInt(k) &<< 6 &+ 64 &- UInt(x.leadingZeroBitCount) }
            k &-= 1
        }
        return 0
    }

    /// The lowest set bit at or above bit j (chunkPages if none): where the run of clear
    /// bits from j ends.
    func clearRunEnd(from j: UInt) -> UInt {
        if j >= chunkPages { return chunkPages }
        var k = Int(j >> 6)
        var x = words[k] >> UInt64(j & 63)
        if x != 0 { return j &+ UInt(x.trailingZeroBitCount) }
        k &+= 1
        while k < 8 {
            x = words[k]
            if x != 0 { return UInt(k) &<< 6 &+ UInt(x.trailingZeroBitCount) }
            k &+= 1
        }
        return chunkPages
    }

    /// Whether bits [i, i+n) are all set (`set` true) or all clear; n >= 1. A compare per
    /// word, no count.
    func rangeIs(set: Bool, _ i: UInt, _ n: UInt) -> Bool {
        let want: UInt64 = set ? ~0 : 0
        let j = i &+ n &- 1
        let wi = Int(i / 64), wj = Int(j / 64)
        if wi == wj {
            let mask = lowMask(n) << UInt64(i % 64)
            return words[wi] & mask == want & mask
        }
        let first = ~UInt64(0) << UInt64(i % 64)
        if words[wi] & first != want & first { return false }
        var k = wi &+ 1
        while k < wj {
            if words[k] != want { return false }
            k &+= 1
        }
        let last = lowMask(j % 64 &+ 1)
        return words[wj] & last == want & last
    }

    /// Number of set bits.
    func popcount() -> UInt {
        var s: UInt = 0
        var k = 0
        while k < 8 { s &+= UInt(words[k].nonzeroBitCount); k &+= 1 }
        return s
    }
}

/// A mask of the low n bits, 1 <= n <= 64.
@inline(__always) func lowMask(_ n: UInt) -> UInt64 {
    n >= 64 ? ~0 : (UInt64(1) << UInt64(n)) &- 1
}

/// The index of the first run of n consecutive 1 bits in c (n >= 1), or a value >= 64
/// if there is none (Go's findBitRange64).
@inline(__always) func findBitRange64(_ c: UInt64, _ n: UInt) -> UInt {
    var i: UInt = 0
    var cont = UInt((~c).trailingZeroBitCount)
    while cont < n && i < 64 {
        i &+= cont
        i &+= UInt((c >> UInt64(i & 63)).trailingZeroBitCount)
        if i >= 64 { break }
        cont = UInt((~(c >> UInt64(i))).trailingZeroBitCount)
    }
    return i
}

/// The allocation bitmap of a chunk: 1 = allocated, 0 = free.
struct PallocBits: Equatable {
    var bits = PageBits()

    init() {}

    /// The packed summary of the free runs of this chunk.
    func summarize() -> PallocSum {
        // Runs that cross word boundaries first: start, end, and the longest run made of
        // whole free words plus the edges of their neighbours.
        var start = UInt.max  // not yet seen
        var max: UInt = 0
        var cur: UInt = 0
        var k = 0
        while k < 8 {
            let x = bits.words[k]
            if x == 0 {
                cur &+= 64
                k &+= 1
                continue
            }
            cur &+= UInt(x.trailingZeroBitCount)
            if start == UInt.max { start = cur }
            if cur > max { max = cur }
            cur = UInt(x.leadingZeroBitCount)
            k &+= 1
        }
        if start == UInt.max {
            return PallocSum(start: chunkPages, max: chunkPages, end: chunkPages)
        }
        if cur > max { max = cur }
        if max >= 62 {
            // No run strictly inside one word (at most 62 zeros between two ones) can beat it.
            return PallocSum(start: start, max: max, end: cur)
        }
        // Runs strictly inside a word: for each word, find whether a run of zeros longer
        // than max lies between its lowest and highest one bits.
        k = 0
        while k < 8 {
            var x = bits.words[k]
            k &+= 1
            // Drop the low zeros (already counted as a crossing run).
            x >>= UInt64(x.trailingZeroBitCount & 63)
            if x & (x &+ 1) == 0 { continue }  // only ones, then the high zeros
            // Fill every run of zeros from above by max bits: runs of length <= max vanish.
            // Doubling: after filling by k, ones-runs are at least k+1 long, so a shift by
            // up to that length fills without gaps.
            var p = max  // zeros still to fill in each run
            var ones: UInt = 1  // every run of ones in x is at least this long
            var done = false
            while !done {
                while p > 0 {
                    if p <= ones {
                        x |= x >> UInt64(p & 63)
                        if x & (x &+ 1) == 0 { done = true }
                        break
                    }
                    x |= x >> UInt64(ones & 63)
                    if x & (x &+ 1) == 0 { done = true; break }
                    p &-= ones
                    ones &*= 2
                }
                if done { break }
                // A run survived: it is longer than max. Measure the lowest survivor.
                let t1 = UInt((~x).trailingZeroBitCount)
                x >>= UInt64(t1 & 63)
                let z = UInt(x.trailingZeroBitCount)
                x >>= UInt64(z & 63)
                max &+= z
                if x & (x &+ 1) == 0 { break }
                p = z
            }
        }
        return PallocSum(start: start, max: max, end: cur)
    }

    /// The summary after pages [i, i + n) of this chunk were just allocated (`alloc`:
    /// their bits now set) or freed (clear), from `old`, the summary before the change;
    /// nil when an allocation cut a longest run. Only the free run the change cut or
    /// made is measured, from the bits around it (a word or two: clearRunStart,
    /// clearRunEnd); the rest of `old` stands: the start and end runs unless that run
    /// reaches the chunk's first or last page, the longest run unless a free made a
    /// longer one. After an allocation that cut a run as long as the longest, another
    /// run may be as long or none: summarize tells, as for any change that is not one
    /// range. PageAlloc.update's single-chunk path, some ten times cheaper than
    /// summarize on a chunk of many runs; PageAlloc's test mode checks the two agree.
    func summary(after old: PallocSum, _ i: UInt, _ n: UInt, alloc: Bool) -> PallocSum? {
        let low = bits.clearRunStart(below: i), high = bits.clearRunEnd(from: i &+ n)
        if alloc {
            // The run was [low, high) before; what is left of it is shorter.
            if high &- low >= old.max { return nil }
            return PallocSum(start: low == 0 ? i : old.start, max: old.max,
                             end: high == chunkPages ? chunkPages &- (i &+ n) : old.end)
        }
        // The run is [low, high) now.
        return PallocSum(start: low == 0 ? high : old.start, max: Swift.max(old.max, high &- low),
                         end: high == chunkPages ? chunkPages &- low : old.end)
    }

    /// Searches for npages contiguous free pages at or after page searchIdx (a page
    /// below which everything is known allocated). Returns the run's first page and the
    /// first free page seen (a better searchIdx), or UInt.max as the index on failure.
    func find(_ npages: UInt, _ searchIdx: UInt) -> (index: UInt, searchIdx: UInt) {
        if npages == 1 {
            let i = find1(searchIdx)
            return (i, i)
        } else if npages <= 64 {
            return findSmallN(npages, searchIdx)
        }
        return findLargeN(npages, searchIdx)
    }

    func find1(_ searchIdx: UInt) -> UInt {
        var i = Int(searchIdx / 64)
        while i < 8 {
            let x = bits.words[i]
            if x != ~0 {
                return UInt(i) &* 64 &+ UInt((~x).trailingZeroBitCount)
            }
            i &+= 1
        }
        return UInt.max
    }

    /// npages <= 64: such a run crosses at most one word boundary.
    func findSmallN(_ npages: UInt, _ searchIdx: UInt) -> (index: UInt, searchIdx: UInt) {
        var end: UInt = 0  // free pages at the top of the previous word
        var newSearchIdx = UInt.max
        var i = Int(searchIdx / 64)
        while i < 8 {
            let bi = bits.words[i]
            if bi == ~0 {
                end = 0
                i &+= 1
                continue
            }
            let base = UInt(i) &* 64
            if newSearchIdx == UInt.max {
                newSearchIdx = base &+ UInt((~bi).trailingZeroBitCount)
            }
            let start = UInt(bi.trailingZeroBitCount)
            if end &+ start >= npages {
                return (base &- end, newSearchIdx)
            }
            let j = findBitRange64(~bi, npages)
            if j < 64 {
                return (base &+ j, newSearchIdx)
            }
            end = UInt(bi.leadingZeroBitCount)
            i &+= 1
        }
        return (UInt.max, newSearchIdx)
    }

    /// npages > 64: such a run crosses at least one word boundary.
    func findLargeN(_ npages: UInt, _ searchIdx: UInt) -> (index: UInt, searchIdx: UInt) {
        var start = UInt.max
        var size: UInt = 0
        var newSearchIdx = UInt.max
        var i = Int(searchIdx / 64)
        while i < 8 {
            let x = bits.words[i]
            let base = UInt(i) &* 64
            i &+= 1
            if x == ~0 {
                size = 0
                continue
            }
            if newSearchIdx == UInt.max {
                newSearchIdx = base &+ UInt((~x).trailingZeroBitCount)
            }
            if size == 0 {
                size = UInt(x.leadingZeroBitCount)
                start = base &+ 64 &- size
                continue
            }
            let s = UInt(x.trailingZeroBitCount)
            if s &+ size >= npages {
                return (start, newSearchIdx)
            }
            if s < 64 {
                size = UInt(x.leadingZeroBitCount)
                start = base &+ 64 &- size
                continue
            }
            size &+= 64
        }
        if size < npages { return (UInt.max, newSearchIdx) }
        return (start, newSearchIdx)
    }

    @inline(__always) mutating func allocRange(_ i: UInt, _ n: UInt) { bits.setRange(i, n) }
    @inline(__always) mutating func allocAll() { bits.setAll() }
    @inline(__always) mutating func free1(_ i: UInt) { bits.clear(i) }
    @inline(__always) mutating func free(_ i: UInt, _ n: UInt) { bits.clearRange(i, n) }
    @inline(__always) mutating func freeAll() { bits.clearAll() }
}

/// fillAligned returns x with every m-aligned group of m bits that has any bit set made
/// all ones (m a power of two, 1 <= m <= 64). E.g. fillAligned(0x0100a3, 8) == 0xff00ff.
/// Used to view a bitmap at a coarser granularity (Go's fillAligned).
@inline(__always) func fillAligned(_ x: UInt64, _ m: UInt) -> UInt64 {
    // Zero-in-group test (bithacks "determine if a word has a zero byte", generalised):
    // with c = the mask of all but the top bit of each group, ~(((x & c) + c) | x | c) has
    // the top bit of a group set exactly when the group is all zeros.
    @inline(__always) func zeroGroups(_ x: UInt64, _ c: UInt64) -> UInt64 {
        ~((((x & c) &+ c) | x) | c)
    }
    var y: UInt64
    switch m {
    case 1: return x
    case 2: y = zeroGroups(x, 0x5555_5555_5555_5555)
    case 4: y = zeroGroups(x, 0x7777_7777_7777_7777)
    case 8: y = zeroGroups(x, 0x7f7f_7f7f_7f7f_7f7f)
    case 16: y = zeroGroups(x, 0x7fff_7fff_7fff_7fff)
    case 32: y = zeroGroups(x, 0x7fff_ffff_7fff_ffff)
    case 64: y = zeroGroups(x, 0x7fff_ffff_ffff_ffff)
    default: fatalInternal("fillAligned: bad group size")
    }
    // y has the top bit of each all-zero group set. Spread each such bit over its group
    // (subtracting the bit shifted to the group's bottom sets the bits below it), then
    // invert: all-zero groups become 0, every other group all ones.
    return ~((y &- (y >> UInt64(m &- 1))) | y)
}

/// The bitmaps of one chunk: allocation and scavenged.
struct PallocData: Equatable {
    var alloc = PallocBits()
    var scavenged = PageBits()

    init() {}

    /// Marks [i, i+n) allocated; those pages are no longer scavenged (the caller counts
    /// how many were, with scavenged.popcntRange, before calling).
    @inline(__always) mutating func allocRange(_ i: UInt, _ n: UInt) {
        alloc.allocRange(i, n)
        scavenged.clearRange(i, n)
    }

    @inline(__always) mutating func allocAll() {
        alloc.allocAll()
        scavenged.clearAll()
    }

    @inline(__always) mutating func free(_ i: UInt, _ n: UInt) { alloc.free(i, n) }
    @inline(__always) mutating func free1(_ i: UInt) { alloc.free1(i) }
    @inline(__always) mutating func freeAll() { alloc.freeAll() }

    /// Whether every page of [i, i+n) is free.
    @inline(__always) func isFree(_ i: UInt, _ n: UInt) -> Bool { alloc.bits.rangeIs(set: false, i, n) }

    /// Whether some min-aligned group of min pages is free and unscavenged
    /// (min a power of two, 1...64).
    func hasScavengeCandidate(_ min: UInt) -> Bool {
        var i = 7
        while i >= 0 {
            // Ones: scavenged or allocated. Zeros: free and unscavenged.
            let x = fillAligned(scavenged.words[i] | alloc.bits.words[i], min)
            if x != ~0 { return true }
            i &-= 1
        }
        return false
    }

    /// hasScavengeCandidate for a chunk read without the heap lock: word by word with
    /// relaxed atomic loads. The answer may be stale; the caller re-checks under the lock.
    static func hasScavengeCandidateRacy(_ p: UnsafeMutablePointer<PallocData>, _ min: UInt) -> Bool {
        let raw = UnsafeMutableRawPointer(p)
        let allocWords = (raw + MemoryLayout<PallocData>.offset(of: \PallocData.alloc)!).assumingMemoryBound(to: UInt64.self)
        let scavWords = (raw + MemoryLayout<PallocData>.offset(of: \PallocData.scavenged)!).assumingMemoryBound(to: UInt64.self)
        var i = 7
        while i >= 0 {
            let x = fillAligned(sh_load64_relaxed(scavWords + i) | sh_load64_relaxed(allocWords + i), min)
            if x != ~0 { return true }
            i &-= 1
        }
        return false
    }

    /// Finds the highest run of free and unscavenged pages at or below page searchIdx,
    /// searching downwards. Returns (start, size), size 0 if there is none.
    ///
    /// min (a power of two, 1...64) is the hard minimum size and alignment of a run: the
    /// OS page in allocator pages. max is how many pages the caller wants; the run is cut
    /// to its top max pages (max is rounded up to a multiple of min; 0 means min).
    ///
    /// Huge-page aware: if the cut run would start inside a huge page (hugePages pages,
    /// aligned) whose every page is in the free and unscavenged run, the result is
    /// extended down to that huge page's start, so a whole free huge page is released
    /// rather than broken up by a partial release. hugePages 0 disables this.
    func findScavengeCandidate(_ searchIdx: UInt, _ min: UInt, _ max: UInt,
                               hugePages: UInt = hugePagePages) -> (start: UInt, size: UInt) {
        if min == 0 || min & (min &- 1) != 0 || min > 64 {
            fatalInternal("findScavengeCandidate: min must be a power of two <= 64")
        }
        let maxPages = max == 0 ? min : alignUp(max, min)

        let top = Int(searchIdx / 64)
        // Pages above searchIdx are not considered (unlike Go, which looks at the whole
        // word): they count as unavailable, so a returned run never lies above searchIdx
        // and the scavenger's reservation only ever shrinks.
        let aboveMask: UInt64 = searchIdx % 64 == 63 ? 0 : ~lowMask(searchIdx % 64 &+ 1)
        @inline(__always) func unavailable(_ k: Int) -> UInt64 {
            let w = scavenged.words[k] | alloc.bits.words[k]
            return fillAligned(k == top ? w | aboveMask : w, min)
        }
        var i = top
        // Skip words that have no free and unscavenged min-group.
        while i >= 0 {
            if unavailable(i) != ~0 { break }
            i &-= 1
        }
        if i < 0 { return (0, 0) }
        // The highest candidate run ends in word i; find its extent.
        let x = unavailable(i)
        let z1 = UInt((~x).leadingZeroBitCount)  // ones above the run's top
        let end = UInt(i) &* 64 &+ (64 &- z1)
        var run: UInt
        if x << UInt64(z1) != 0 {  // z1 < 64 since x != ~0
            // Ones remain below the run: it ends inside this word.
            run = UInt((x << UInt64(z1)).leadingZeroBitCount)
        } else {
            // The run reaches the bottom of this word; continue into lower words.
            run = 64 &- z1
            var j = i &- 1
            while j >= 0 {
                let y = unavailable(j)
                run &+= UInt(y.leadingZeroBitCount)
                if y != 0 { break }
                j &-= 1
            }
        }
        var size = run < maxPages ? run : maxPages
        var start = end &- size

        if hugePages > 1 && hugePages <= chunkPages {
            let above = alignUp(start, hugePages)
            if above <= end {
                let below = alignDown(start, hugePages)
                if below >= end &- run {
                    // The huge page [below, below+hugePages) lies in the free, unscavenged
                    // run and the cut would break it: release all of it.
                    size &+= start &- below
                    start = below
                }
            }
        }
        return (start, size)
    }
}
