import Testing
import Glibc
import Foundation
@testable import SwiftHeap

/// Chunk indices used by the tests (like Go's BaseChunkIdx): 64 GiB up, in test mode
/// the allocator never touches these addresses.
let BaseChunkIdx: UInt = 0x4000

func pageBase(_ ci: UInt, _ page: UInt) -> UInt { chunkBase(ci) + page * pageSize }

/// A page allocator in test mode with its own lock, living in stable memory.
final class TestPageAlloc {
    let p: UnsafeMutablePointer<PageAlloc>
    let lock: UnsafeMutablePointer<Mutex>

    init() {
        p = .allocate(capacity: 1)
        p.initialize(to: PageAlloc())
        lock = .allocate(capacity: 1)
        lock.initialize(to: Mutex())
        let ok = p.pointee.initialize(heapLock: lock, test: true)
        precondition(ok)
    }

    deinit {
        p.pointee.destroy()
        p.deallocate()
        lock.deallocate()
    }

    func locked<T>(_ body: (UnsafeMutablePointer<PageAlloc>) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(p)
    }
}

/// Go's NewPageAlloc: grows one chunk per key, then sets its scavenged bits from scav
/// and its allocation bits from chunks (allocation clears scavenged), and starts a
/// scavenge generation.
func makePageAlloc(_ chunks: [UInt: [BitRange]], _ scav: [UInt: [BitRange]]? = nil) -> TestPageAlloc {
    let t = TestPageAlloc()
    t.locked { p in
        for ci in chunks.keys.sorted() {
            let ok = p.pointee.grow(base: chunkBase(ci), size: chunkBytes)
            precondition(ok)
            let chunk = p.pointee.chunkOf(ci)
            chunk.pointee.scavenged.clearAll()
            if let scav, let s = scav[ci] {
                for r in s where r.n > 0 { chunk.pointee.scavenged.setRange(r.i, r.n) }
            }
            for r in chunks[ci]! where r.n > 0 { chunk.pointee.allocRange(r.i, r.n) }
            p.pointee.update(chunkBase(ci), chunkPages, contig: false, alloc: false)
        }
        let (free, scavenged) = p.pointee.countFreeAndScavenged()
        p.pointee.freeBytes = free
        p.pointee.scavengedBytes = scavenged
        p.pointee.scavengeStartGen()
    }
    return t
}

/// Compares bounds and every chunk's bitmaps; checks summaries and counters of got.
func checkPageAlloc(_ want: TestPageAlloc, _ got: TestPageAlloc, sourceLocation: SourceLocation = #_sourceLocation) {
    let w = want.p.pointee, g = got.p.pointee
    #expect(w.start == g.start && w.end == g.end, "bounds", sourceLocation: sourceLocation)
    for k in 0..<g.inUse.count {
        let r = g.inUse[k]
        for ci in chunkIndex(r.base)..<chunkIndex(r.limit) {
            let gc = g.chunkOf(ci).pointee, wc = w.chunkOf(ci).pointee
            #expect(gc.alloc == wc.alloc, "chunk \(ci - BaseChunkIdx) alloc bits", sourceLocation: sourceLocation)
            #expect(gc.scavenged == wc.scavenged, "chunk \(ci - BaseChunkIdx) scavenged bits", sourceLocation: sourceLocation)
        }
    }
    checkSummaries(got, sourceLocation: sourceLocation)
}

/// Every leaf summary equals its chunk's summary, every parent the merge of its
/// children, over the heap; the cheap counters equal a recount.
func checkSummaries(_ t: TestPageAlloc, sourceLocation: SourceLocation = #_sourceLocation) {
    t.locked { $0.pointee.propagateSummaries() }  // the levels above the leaves, brought up to date
    let a = t.p.pointee
    for k in 0..<a.inUse.count {
        let r = a.inUse[k]
        for ci in chunkIndex(r.base)..<chunkIndex(r.limit) {
            #expect(a.summary(summaryLevels - 1, ci) == a.chunkOf(ci).pointee.alloc.summarize(),
                    "leaf \(ci)", sourceLocation: sourceLocation)
        }
        for l in stride(from: summaryLevels - 2, through: 0, by: -1) {
            let (lo, hi) = PageAlloc.addrsToSummaryRange(l, r.base, r.limit)
            for i in lo..<hi {
                let bits = levelBits(l + 1)
                let want = mergeSummaries(a.summaries(l + 1, from: i << bits), count: 1 << Int(bits),
                                          logMaxPagesPerSum: levelLogPages(l + 1))
                #expect(a.summary(l, i) == want, "level \(l) entry \(i)", sourceLocation: sourceLocation)
            }
        }
    }
    let (free, scav) = a.countFreeAndScavenged()
    #expect(a.freeBytes == free, "freeBytes", sourceLocation: sourceLocation)
    #expect(a.scavengedBytes == scav, "scavengedBytes", sourceLocation: sourceLocation)
}

@Test func levelsMatchGoAmd64() {
    #expect(summaryL0Bits == 14)
    #expect((0..<5).map { levelShift($0) } == [34, 31, 28, 25, 22])
    #expect((0..<5).map { levelLogPages($0) } == [21, 18, 15, 12, 9])
    #expect(chunksL2Bytes == 1 << 20)
    #expect(MemoryLayout<PallocData>.stride == 128)
}

@Test func pageAllocGrow() {
    struct Case { var name: String; var chunks: [UInt]; var inUse: [AddressRange] }
    func R(_ a: UInt, _ b: UInt) -> AddressRange { AddressRange(base: pageBase(BaseChunkIdx + a, 0), limit: pageBase(BaseChunkIdx + b, 0)) }
    var cases: [Case] = [
        Case(name: "One", chunks: [0], inUse: [R(0, 1)]),
        Case(name: "Contiguous2", chunks: [0, 1], inUse: [R(0, 2)]),
        Case(name: "Contiguous5", chunks: [0, 1, 2, 3, 4], inUse: [R(0, 5)]),
        Case(name: "Discontiguous", chunks: [0, 2, 4], inUse: [R(0, 1), R(2, 3), R(4, 5)]),
        Case(name: "Mixed", chunks: [0, 1, 2, 4], inUse: [R(0, 3), R(4, 5)]),
        Case(name: "WildlyDiscontiguous", chunks: [0, 1, 0x10, 0x21], inUse: [R(0, 2), R(0x10, 0x11), R(0x21, 0x22)]),
        Case(name: "ExtremelyDiscontiguous", chunks: [0, 0x100000], inUse: [R(0, 1), R(0x100000, 0x100001)]),
    ]
    cases.append(Case(name: "ManyDiscontiguous", chunks: (0...32).map { UInt($0) * 2 },
                      inUse: (0...32).map { R(UInt($0) * 2, UInt($0) * 2 + 1) }))
    for c in cases {
        var m: [UInt: [BitRange]] = [:]
        for ci in c.chunks { m[BaseChunkIdx + ci] = [] }
        let t = makePageAlloc(m)
        let a = t.p.pointee
        #expect((0..<a.inUse.count).map { a.inUse[$0] } == c.inUse, "\(c.name)")
        #expect(a.start == BaseChunkIdx && a.end == BaseChunkIdx + c.chunks.max()! + 1, "\(c.name) bounds")
        #expect(a.freeBytes == UInt(c.chunks.count) * chunkBytes)
        checkSummaries(t)
    }
}

@Test func pageAllocGrowFreshIsFreeAndScavenged() {
    let t = TestPageAlloc()
    t.locked { p in
        // Grow in an order that exercises lower/higher bounds and neighbour pruning.
        check(p.pointee.grow(base: chunkBase(BaseChunkIdx + 8), size: 2 * chunkBytes))
        check(p.pointee.grow(base: chunkBase(BaseChunkIdx), size: chunkBytes))
        check(p.pointee.grow(base: chunkBase(BaseChunkIdx + 1), size: 7 * chunkBytes))  // fills the gap
        #expect(p.pointee.start == BaseChunkIdx && p.pointee.end == BaseChunkIdx + 10)
        #expect(p.pointee.inUse.count == 1)
        #expect(p.pointee.freeBytes == 10 * chunkBytes && p.pointee.scavengedBytes == 10 * chunkBytes)
        // Overlapping, empty, or out-of-range growth fails and changes nothing.
        check(!p.pointee.grow(base: chunkBase(BaseChunkIdx + 9), size: chunkBytes))
        check(!p.pointee.grow(base: chunkBase(BaseChunkIdx + 9), size: 0))
        check(!p.pointee.grow(base: 1 << heapAddressBits, size: chunkBytes))
        check(!p.pointee.grow(base: UInt.max - chunkBytes, size: 2 * chunkBytes))
        #expect(p.pointee.freeBytes == 10 * chunkBytes)
        // Everything fresh reads as scavenged when allocated.
        let (base, scav) = p.pointee.alloc(npages: 3)
        #expect(base == chunkBase(BaseChunkIdx) && scav == 3 * pageSize)
    }
    checkSummaries(t)
}

/// #expect for expressions that call mutating methods (which the macro cannot capture).
func check(_ b: Bool, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(b, comment, sourceLocation: sourceLocation)
}

struct Hit { var npages: UInt; var base: UInt; var scav: UInt }

@Test func pageAllocAlloc() {
    struct Case { var name: String; var scav: [UInt: [BitRange]]; var before: [UInt: [BitRange]]; var after: [UInt: [BitRange]]; var hits: [Hit] }
    let B = BaseChunkIdx
    let S = pageSize
    var cases: [Case] = [
        Case(name: "AllFree1", scav: [B: [BitRange(0, 1), BitRange(2, 2)]], before: [B: []], after: [B: [BitRange(0, 5)]],
             hits: [Hit(npages: 1, base: pageBase(B, 0), scav: S), Hit(npages: 1, base: pageBase(B, 1), scav: 0),
                    Hit(npages: 1, base: pageBase(B, 2), scav: S), Hit(npages: 1, base: pageBase(B, 3), scav: S),
                    Hit(npages: 1, base: pageBase(B, 4), scav: 0)]),
        Case(name: "ManyArena1", scav: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)], B + 2: [BitRange(0, P)]],
             before: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)], B + 2: [BitRange(0, P - 1)]],
             after: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)], B + 2: [BitRange(0, P)]],
             hits: [Hit(npages: 1, base: pageBase(B + 2, P - 1), scav: S)]),
        Case(name: "NotContiguous1", scav: [B: [BitRange(0, P)], B + 0xff: [BitRange(0, P)]],
             before: [B: [BitRange(0, P)], B + 0xff: [BitRange(0, 0)]], after: [B: [BitRange(0, P)], B + 0xff: [BitRange(0, 1)]],
             hits: [Hit(npages: 1, base: pageBase(B + 0xff, 0), scav: S)]),
        Case(name: "AllFree2", scav: [B: [BitRange(0, 3), BitRange(7, 1)]], before: [B: []], after: [B: [BitRange(0, 10)]],
             hits: [Hit(npages: 2, base: pageBase(B, 0), scav: 2 * S), Hit(npages: 2, base: pageBase(B, 2), scav: S),
                    Hit(npages: 2, base: pageBase(B, 4), scav: 0), Hit(npages: 2, base: pageBase(B, 6), scav: S),
                    Hit(npages: 2, base: pageBase(B, 8), scav: 0)]),
        Case(name: "Straddle2", scav: [B: [BitRange(P - 1, 1)], B + 1: []],
             before: [B: [BitRange(0, P - 1)], B + 1: [BitRange(1, P - 1)]], after: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)]],
             hits: [Hit(npages: 2, base: pageBase(B, P - 1), scav: S)]),
        Case(name: "AllFree5", scav: [B: [BitRange(0, 8), BitRange(9, 1), BitRange(17, 5)]], before: [B: []], after: [B: [BitRange(0, 25)]],
             hits: [Hit(npages: 5, base: pageBase(B, 0), scav: 5 * S), Hit(npages: 5, base: pageBase(B, 5), scav: 4 * S),
                    Hit(npages: 5, base: pageBase(B, 10), scav: 0), Hit(npages: 5, base: pageBase(B, 15), scav: 3 * S),
                    Hit(npages: 5, base: pageBase(B, 20), scav: 2 * S)]),
        Case(name: "AllFree64", scav: [B: [BitRange(21, 1), BitRange(63, 65)]], before: [B: []], after: [B: [BitRange(0, 192)]],
             hits: [Hit(npages: 64, base: pageBase(B, 0), scav: 2 * S), Hit(npages: 64, base: pageBase(B, 64), scav: 64 * S),
                    Hit(npages: 64, base: pageBase(B, 128), scav: 0)]),
        Case(name: "ExhaustPallocChunkPages-3", scav: [B: [BitRange(10, 1)]], before: [B: []], after: [B: [BitRange(0, P)]],
             hits: [Hit(npages: P - 3, base: pageBase(B, 0), scav: S), Hit(npages: P - 3, base: 0, scav: 0),
                    Hit(npages: 1, base: pageBase(B, P - 3), scav: 0), Hit(npages: 2, base: pageBase(B, P - 2), scav: 0),
                    Hit(npages: 1, base: 0, scav: 0), Hit(npages: P - 3, base: 0, scav: 0)]),
        Case(name: "AllFreePallocChunkPages", scav: [B: [BitRange(0, 1), BitRange(P - 1, 1)]], before: [B: []], after: [B: [BitRange(0, P)]],
             hits: [Hit(npages: P, base: pageBase(B, 0), scav: 2 * S), Hit(npages: P, base: 0, scav: 0), Hit(npages: 1, base: 0, scav: 0)]),
        Case(name: "StraddlePallocChunkPages+1", scav: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)]],
             before: [B: [BitRange(0, P / 2)], B + 1: []], after: [B: [BitRange(0, P)], B + 1: [BitRange(0, P / 2 + 2)]],
             hits: [Hit(npages: P + 1, base: pageBase(B, P / 2), scav: (P + 1) * S), Hit(npages: P, base: 0, scav: 0),
                    Hit(npages: 1, base: pageBase(B + 1, P / 2 + 1), scav: S)]),
        Case(name: "AllFreePallocChunkPages*2", scav: [B: [], B + 1: []], before: [B: [], B + 1: []],
             after: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)]],
             hits: [Hit(npages: 2 * P, base: pageBase(B, 0), scav: 0), Hit(npages: 2 * P, base: 0, scav: 0), Hit(npages: 1, base: 0, scav: 0)]),
        Case(name: "NotContiguousPallocChunkPages*2", scav: [B: [BitRange(0, P)], B + 0x40: [], B + 0x41: []],
             before: [B: [], B + 0x40: [], B + 0x41: []],
             after: [B: [BitRange(0, 22)], B + 0x40: [BitRange(0, P)], B + 0x41: [BitRange(0, P)]],
             hits: [Hit(npages: 2 * P, base: pageBase(B + 0x40, 0), scav: 0), Hit(npages: 21, base: pageBase(B, 0), scav: 21 * S),
                    Hit(npages: 1, base: pageBase(B, 21), scav: S)]),
        Case(name: "StraddlePallocChunkPages*5/4",
             scav: [B: [BitRange(0, P)], B + 1: [BitRange(P / 2, P / 4 + 1)], B + 2: [BitRange(P / 3, 1)], B + 3: [BitRange(P * 2 / 3, 1)]],
             before: [B: [BitRange(0, P)], B + 1: [BitRange(0, P * 3 / 4)], B + 2: [BitRange(0, P * 3 / 4)], B + 3: [BitRange(0, 0)]],
             after: [B: [BitRange(0, P)], B + 1: [BitRange(0, P * 3 / 4 + 1)], B + 2: [BitRange(0, P)], B + 3: [BitRange(0, P)]],
             hits: [Hit(npages: P * 5 / 4, base: pageBase(B + 2, P * 3 / 4), scav: S), Hit(npages: P * 5 / 4, base: 0, scav: 0),
                    Hit(npages: 1, base: pageBase(B + 1, P * 3 / 4), scav: S)]),
    ]
    // A run across the boundary of two root-level (16 GiB) entries: 4096 chunks each.
    let root = UInt(1) << (levelShift(0) - chunkShift)
    var straddleRoot: [UInt: [BitRange]] = [:]
    for ci in (B + root - 3)...(B + root + 2) { straddleRoot[ci] = [] }
    straddleRoot[B + root - 3] = [BitRange(0, P)]
    var straddleAfter = straddleRoot
    for ci in (B + root - 2)...(B + root + 1) { straddleAfter[ci] = [BitRange(0, P)] }
    cases.append(Case(name: "StraddleRootEntries", scav: [:], before: straddleRoot, after: straddleAfter,
                      hits: [Hit(npages: 4 * P, base: pageBase(B + root - 2, 0), scav: 0)]))
    // Two regions three root entries apart, the first full: the level-0 scan, which
    // stops at the heap's last entry, reaches the second; a run longer than any fails.
    cases.append(Case(name: "NotContiguousRootEntries", scav: [:],
                      before: [B: [BitRange(0, P)], B + 3 * root: [BitRange(0, 1)]],
                      after: [B: [BitRange(0, P)], B + 3 * root: [BitRange(0, 3)]],
                      hits: [Hit(npages: 2, base: pageBase(B + 3 * root, 1), scav: 0), Hit(npages: P, base: 0, scav: 0)]))
    for c in cases {
        let b = makePageAlloc(c.before, c.scav)
        for (k, h) in c.hits.enumerated() {
            let (base, scav) = b.locked { $0.pointee.alloc(npages: h.npages) }
            #expect(base == h.base, "\(c.name) #\(k + 1): base \(base) want \(h.base)")
            #expect(scav == h.scav, "\(c.name) #\(k + 1): scav \(scav) want \(h.scav)")
        }
        let want = makePageAlloc(c.after, c.scav)
        checkPageAlloc(want, b)
    }
}

@Test func pageAllocHugeRuns() {
    // 2048 chunks (8 GiB) in one growth; allocate all of it in one run, then free it.
    let t = TestPageAlloc()
    t.locked { p in
        let n: UInt = 2048
        check(p.pointee.grow(base: chunkBase(BaseChunkIdx), size: n * chunkBytes))
        let (base, scav) = p.pointee.alloc(npages: n * P)
        #expect(base == chunkBase(BaseChunkIdx) && scav == n * chunkBytes)
        #expect(p.pointee.freeBytes == 0 && p.pointee.scavengedBytes == 0)
        check(p.pointee.alloc(npages: 1).base == 0)
        p.pointee.free(base: base + chunkBytes / 2, npages: (n - 1) * P)
        // A request larger than the heap fails; one that fits lands at the hole.
        check(p.pointee.alloc(npages: n * P).base == 0)
        check(p.pointee.alloc(npages: UInt(1) << 40).base == 0)
        check(p.pointee.alloc(npages: (n - 1) * P).base == base + chunkBytes / 2)
    }
    checkSummaries(t)
}

@Test func pageAllocFree() {
    struct Case { var name: String; var before: [UInt: [BitRange]]; var frees: [(UInt, UInt)]; var after: [UInt: [BitRange]] }
    let B = BaseChunkIdx
    let cases: [Case] = [
        Case(name: "Free1", before: [B: [BitRange(0, P)]], frees: [(pageBase(B, 1), 1), (pageBase(B, 3), 1)],
             after: [B: [BitRange(0, 1), BitRange(2, 1), BitRange(4, P - 4)]]),
        Case(name: "FreeAll", before: [B: [BitRange(0, P)]], frees: [(pageBase(B, 0), P)], after: [B: []]),
        Case(name: "Free64Straddle", before: [B: [BitRange(0, P)]], frees: [(pageBase(B, 32), 64)],
             after: [B: [BitRange(0, 32), BitRange(96, P - 96)]]),
        Case(name: "FreeAcrossChunks", before: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)], B + 2: [BitRange(0, P)]],
             frees: [(pageBase(B, P - 10), P + 20)],
             after: [B: [BitRange(0, P - 10)], B + 1: [], B + 2: [BitRange(10, P - 10)]]),
    ]
    for c in cases {
        let b = makePageAlloc(c.before)
        b.locked { p in for (base, n) in c.frees { p.pointee.free(base: base, npages: n) } }
        checkPageAlloc(makePageAlloc(c.after), b)
    }
}

/// update recomputes only the leaves; the levels above go stale until find needs them
/// (PageAlloc.propagateSummaries). A free deferred above the leaves must be seen by the
/// next search from the root: here the only run long enough starts in the freed pages and
/// runs into the next chunk, which a parent summary still saying "no free page at the end
/// of chunk B" would hide.
@Test func findSeesAFreeDeferredAboveTheLeaves() {
    let B = BaseChunkIdx
    let t = makePageAlloc([B: [BitRange(0, P)], B + 1: [BitRange(P / 2, P / 2)]])
    t.locked { p in
        p.pointee.free(base: pageBase(B, 3 * P / 4), npages: P / 4)
        #expect(p.pointee.staleLow == B && p.pointee.staleHigh == B, "the free left the levels above chunk B stale")
        let (base, _) = p.pointee.alloc(npages: 3 * P / 4)
        #expect(base == pageBase(B, 3 * P / 4), "the run across chunks B and B+1: \(base)")
        #expect(p.pointee.staleLow == B && p.pointee.staleHigh == B + 1, "the allocation's chunks are stale now")
    }
    checkPageAlloc(makePageAlloc([B: [BitRange(0, P)], B + 1: [BitRange(0, P)]]), t)
}

@Test func pageAllocAllocAndFree() {
    // Random allocations and frees against a simple model; summaries and counters stay exact.
    let t = makePageAlloc([BaseChunkIdx: [], BaseChunkIdx + 1: [], BaseChunkIdx + 2: [], BaseChunkIdx + 7: []])
    var rng = Rng(state: 99)
    var live: [(UInt, UInt)] = []
    for _ in 0..<400 {
        if live.isEmpty || rng.below(3) != 0 {
            let n = [1, 1, 1, 2, 5, 64, 65, 300, 700][Int(rng.below(9))] as UInt
            let (base, _) = t.locked { $0.pointee.alloc(npages: n) }
            if base != 0 {
                for (b, m) in live { #expect(base + n * pageSize <= b || b + m * pageSize <= base) }
                live.append((base, n))
            }
        } else {
            let k = Int(rng.below(UInt(live.count)))
            let (b, m) = live.remove(at: k)
            t.locked { $0.pointee.free(base: b, npages: m) }
        }
    }
    checkSummaries(t)
    let used = live.reduce(0) { $0 + $1.1 } * pageSize
    #expect(t.p.pointee.freeBytes == 4 * chunkBytes - used)
}

@Test func pageAllocSearchAddrStaysInHeap() {
    // After a straddling find, the new searchAddr must be inside inUse (the fast path
    // reads its leaf summary), even when the first free summary region starts in a gap.
    let B = BaseChunkIdx
    let t = makePageAlloc([B: [BitRange(0, P)], B + 0x40: [], B + 0x41: []])
    t.locked { p in
        let (base, _) = p.pointee.alloc(npages: 2 * P)
        #expect(base == chunkBase(B + 0x40))
        #expect(p.pointee.searchAddr == maxSearchAddr || p.pointee.inUse.contains(p.pointee.searchAddr))
        check(p.pointee.alloc(npages: 1).base == 0)
        #expect(p.pointee.searchAddr == maxSearchAddr)
        p.pointee.free(base: pageBase(B + 0x41, 5), npages: 1)
        check(p.pointee.alloc(npages: 1).base == pageBase(B + 0x41, 5))
    }
    checkSummaries(t)
}

@Test func pageAllocAllocRangeIfFree() {
    let B = BaseChunkIdx
    struct Case { var name: String; var base: UInt; var npages: UInt; var ok: Bool; var scav: UInt }
    let cases: [Case] = [
        Case(name: "FreeInChunk", base: pageBase(B, 100), npages: 10, ok: true, scav: 5 * pageSize),
        Case(name: "OverlapsAllocated", base: pageBase(B, 5), npages: 10, ok: false, scav: 0),
        Case(name: "AcrossChunks", base: pageBase(B, 300), npages: P + 10, ok: true, scav: 0),
        Case(name: "IntoGap", base: pageBase(B + 4, P - 4), npages: 8, ok: false, scav: 0),
        Case(name: "OutsideHeap", base: pageBase(B + 5, 0), npages: 1, ok: false, scav: 0),
        Case(name: "BelowHeap", base: pageBase(B - 1, 0), npages: 1, ok: false, scav: 0),
        Case(name: "Unaligned", base: pageBase(B, 100) + 8, npages: 1, ok: false, scav: 0),
        Case(name: "Zero", base: pageBase(B, 100), npages: 0, ok: false, scav: 0),
        Case(name: "Enormous", base: pageBase(B, 100), npages: UInt.max / 2, ok: false, scav: 0),
        Case(name: "InnerChunkNotFree", base: pageBase(B + 2, 100), npages: 2 * P, ok: false, scav: 0),
        Case(name: "ThreeChunks", base: pageBase(B + 1, 100), npages: 2 * P, ok: true, scav: 0),
    ]
    for c in cases {
        let t = makePageAlloc([B: [BitRange(0, 10)], B + 1: [], B + 2: [], B + 3: [BitRange(200, 1)], B + 4: []],
                              [B: [BitRange(100, 5)]])
        let before = t.locked { $0.pointee.freeBytes }
        let (ok, scav) = t.locked { $0.pointee.allocRangeIfFree(base: c.base, npages: c.npages) }
        #expect(ok == c.ok && scav == c.scav, "\(c.name)")
        let after = t.locked { $0.pointee.freeBytes }
        #expect(after == (ok ? before - c.npages * pageSize : before), "\(c.name) freeBytes")
        if ok {
            // The range is now allocated: trying again fails.
            check(!t.locked { $0.pointee.allocRangeIfFree(base: c.base, npages: c.npages) }.ok)
        }
        checkSummaries(t)
    }
}

@Test func pageAllocScavengedReporting() {
    // Alloc reports scavenged bytes; counters follow alloc, free and fresh growth.
    let B = BaseChunkIdx
    let t = makePageAlloc([B: []], [B: [BitRange(0, 4), BitRange(6, 2)]])
    t.locked { p in
        #expect(p.pointee.scavengedBytes == 6 * pageSize)
        let (b1, s1) = p.pointee.alloc(npages: 8)
        #expect(b1 == pageBase(B, 0) && s1 == 6 * pageSize)
        #expect(p.pointee.scavengedBytes == 0)
        p.pointee.free(base: b1, npages: 8)
        // Freed pages are resident: not scavenged.
        #expect(p.pointee.scavengedBytes == 0)
        let (b2, s2) = p.pointee.alloc(npages: 8)
        #expect(b2 == b1 && s2 == 0)
        check(p.pointee.grow(base: chunkBase(B + 1), size: chunkBytes))
        #expect(p.pointee.scavengedBytes == chunkBytes)
        #expect(p.pointee.freeBytes == 2 * chunkBytes - 8 * pageSize)
    }
    checkSummaries(t)
}

@Test func pageAllocDestroyAndReinit() {
    // Many allocators in a row: destroy unmaps exactly what initialize and grow mapped
    // (by its count: whether the range is still mapped afterwards cannot be asked, since
    // other suites map memory meanwhile and may be given the same addresses).
    for _ in 0..<20 {
        let t = makePageAlloc([BaseChunkIdx: [], BaseChunkIdx + 0x100000: []])
        check(t.locked { $0.pointee.alloc(npages: 1).base } == chunkBase(BaseChunkIdx))
        let mapped = t.p.pointee.metadataBytes
        let leafTable = t.p.pointee.summaryTables[summaryLevels - 1]
        let leafBlock = UnsafeMutablePointer<UInt>(bitPattern: leafTable)![Int(BaseChunkIdx >> summaryBlockShift)]
        #expect(leafBlock != 0)
        #expect(msync(UnsafeMutableRawPointer(bitPattern: leafBlock), Int(osPageSize), MS_ASYNC) == 0)
        let unmapped = t.p.pointee.destroy()
        #expect(unmapped == mapped)
        let reinitialized = t.p.pointee.initialize(heapLock: t.lock, test: true)
        #expect(reinitialized)
    }
}

@Test func pageAllocAddressSpaceIsSmall() {
    // The summaries are sparse: an allocator maps ~1.3 MiB of tables at initialize; a first
    // region needs one block per level below the root and one L2 block of chunk bitmaps; a
    // region 64 GiB above it (BaseChunkIdx is at 64 GiB) needs new blocks at the levels
    // whose block does not reach it: leaves (a block covers 2 GiB), level 3 (16 GiB) and
    // level 2 (128 GiB), not level 1 (1 TiB); and a new L2 block (32 GiB).
    let t = TestPageAlloc()
    let initial = t.p.pointee.metadataBytes
    #expect(initial <= 1_400_000, "\(initial) bytes at initialize")
    t.locked { p in check(p.pointee.grow(base: chunkBase(BaseChunkIdx), size: 16 * chunkBytes)) }
    let one = t.p.pointee.metadataBytes - initial
    #expect(one == 4 * summaryBlockBytes + chunksL2BlockBytes, "\(one) bytes for one region")
    t.locked { p in check(p.pointee.grow(base: chunkBase(BaseChunkIdx + 0x4000), size: chunkBytes)) }
    #expect(t.p.pointee.metadataBytes - initial - one == 3 * summaryBlockBytes + chunksL2BlockBytes)
    checkSummaries(t)
}

@Test func pageAllocGrowFailsCleanlyWhenMetadataIsRefused() {
    // No metadata beyond what initialize mapped: grow must fail and change nothing.
    let t = TestPageAlloc()
    t.p.pointee.metadataLimit = t.p.pointee.metadataBytes
    t.locked { p in
        check(!p.pointee.grow(base: chunkBase(BaseChunkIdx), size: chunkBytes))
        #expect(p.pointee.inUse.count == 0)
        #expect(p.pointee.start == 0 && p.pointee.end == 0)
        #expect(p.pointee.freeBytes == 0 && p.pointee.scavengedBytes == 0)
        #expect(p.pointee.searchAddr == maxSearchAddr)
        check(p.pointee.alloc(npages: 1).base == 0)
        p.pointee.scavengeStartGen()
        #expect(p.pointee.scavenge(UInt.max, mayUnlock: false) == 0)
    }
    // With room again, the same grow succeeds.
    t.p.pointee.metadataLimit = UInt.max
    t.locked { p in check(p.pointee.grow(base: chunkBase(BaseChunkIdx), size: chunkBytes)) }
    checkSummaries(t)
}

@Test func pageAllocStateIsSmall() {
    // The allocator's state lives in the heap's root state (a few KiB of static memory).
    #expect(MemoryLayout<PageAlloc>.size <= 512)
}

@Test func pageAllocBenchmark() {
    // Timing only when asked (SWIFTHEAP_BENCH=1; meaningful with -c release): 1-page
    // allocs and frees on a 256 MiB heap, half full with scattered holes.
    guard ProcessInfo.processInfo.environment["SWIFTHEAP_BENCH"] == "1" else { return }
    var chunks: [UInt: [BitRange]] = [:]
    for i in 0..<64 { chunks[BaseChunkIdx + UInt(i)] = [] }
    let t = makePageAlloc(chunks)
    let n = 1_000_000
    var bases = [UInt](repeating: 0, count: 4096)
    let start = DispatchTime.now().uptimeNanoseconds
    t.locked { p in
        for i in 0..<n {
            let k = i & 4095
            if bases[k] != 0 { p.pointee.free(base: bases[k], npages: 1) }
            bases[k] = p.pointee.alloc(npages: 1).base
        }
    }
    let ns = Double(DispatchTime.now().uptimeNanoseconds - start) / Double(n)
    print("pageAlloc: alloc+free of 1 page: \(ns) ns per pair")
    let start2 = DispatchTime.now().uptimeNanoseconds
    var released: UInt = 0
    t.locked { p in
        for k in 0..<4096 where k % 2 == 0 { p.pointee.free(base: bases[k], npages: 1); bases[k] = 0 }
        p.pointee.scavengeStartGen()
        released = p.pointee.scavenge(UInt.max, mayUnlock: false)
    }
    let ms = Double(DispatchTime.now().uptimeNanoseconds - start2) / 1e6
    print("pageAlloc: scavenge of the whole heap: \(released >> 20) MiB in \(ms) ms")
    checkSummaries(t)
}
