import Testing
@testable import SwiftHeap

/// A run of pages [i, i+n) in a chunk.
struct BitRange: Equatable, CustomStringConvertible {
    var i: UInt
    var n: UInt
    init(_ i: UInt, _ n: UInt) { self.i = i; self.n = n }
    var description: String { "{\(i), \(n)}" }
}

let P = chunkPages

func makePallocBits(_ alloc: [BitRange]) -> PallocBits {
    var b = PallocBits()
    for r in alloc where r.n > 0 { b.allocRange(r.i, r.n) }
    return b
}

/// Like Go's makePallocData: allocation first (which clears scavenged bits), then scavenged.
func makePallocData(_ alloc: [BitRange], _ scav: [BitRange]) -> PallocData {
    var d = PallocData()
    for r in alloc where r.n > 0 { d.allocRange(r.i, r.n) }
    for r in scav where r.n > 0 { d.scavenged.setRange(r.i, r.n) }
    return d
}

private func slowSummarize(_ b: PallocBits) -> (UInt, UInt, UInt) {
    var start: UInt = 0
    while start < P && !b.bits.get(start) { start += 1 }
    var end: UInt = 0
    while end < P && !b.bits.get(P - 1 - end) { end += 1 }
    var maxRun: UInt = 0, cur: UInt = 0
    for i in 0..<P {
        if b.bits.get(i) { cur = 0 } else { cur += 1; maxRun = max(maxRun, cur) }
    }
    return (start, maxRun, end)
}

private func slowFind(_ b: PallocBits, _ npages: UInt, _ from: UInt) -> UInt {
    var run: UInt = 0
    var i = from
    while i < P {
        if b.bits.get(i) { run = 0 } else { run += 1; if run == npages { return i + 1 - npages } }
        i += 1
    }
    return UInt.max
}

/// A small deterministic PRNG (splitmix64) so failures reproduce.
struct Rng {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func below(_ n: UInt) -> UInt { UInt(next() % UInt64(n)) }
}

@Test func pageBitsRanges() {
    var rng = Rng(state: 1)
    for _ in 0..<500 {
        var b = PageBits()
        var ref = [Bool](repeating: false, count: Int(P))
        for _ in 0..<6 {
            let i = rng.below(P)
            let n = 1 + rng.below(P - i)
            if rng.below(2) == 0 {
                b.setRange(i, n); for k in i..<i + n { ref[Int(k)] = true }
            } else {
                b.clearRange(i, n); for k in i..<i + n { ref[Int(k)] = false }
            }
        }
        for k in 0..<P { #expect(b.get(k) == ref[Int(k)]) }
        let i = rng.below(P)
        let n = 1 + rng.below(P - i)
        #expect(b.popcntRange(i, n) == UInt(ref[Int(i)..<Int(i + n)].filter { $0 }.count))
        #expect(b.popcount() == UInt(ref.filter { $0 }.count))
        #expect(b.rangeIs(set: true, i, n) == ref[Int(i)..<Int(i + n)].allSatisfy { $0 })
        #expect(b.rangeIs(set: false, i, n) == ref[Int(i)..<Int(i + n)].allSatisfy { !$0 })
        // A range just set (or cleared) is all set (clear), and stops being so when one
        // bit in it, at its ends or inside, changes.
        for set in [true, false] {
            if set { b.setRange(i, n) } else { b.clearRange(i, n) }
            #expect(b.rangeIs(set: set, i, n))
            let k = [i, i + n - 1, i + rng.below(n)][Int(rng.below(3))]
            if set { b.clear(k) } else { b.set(k) }
            #expect(!b.rangeIs(set: set, i, n), "range \(i)+\(n), bit \(k) flipped")
        }
    }
}

@Test func pallocSumPacking() {
    let cases: [(UInt, UInt, UInt)] = [(0, 0, 0), (1, 2, 3), (512, 512, 512), (maxPackedValue - 1, maxPackedValue - 1, 0),
                                       (0, maxPackedValue - 1, maxPackedValue - 1)]
    for (s, m, e) in cases {
        let p = PallocSum(start: s, max: m, end: e)
        #expect(p.start == s && p.max == m && p.end == e)
    }
    let full = PallocSum(start: maxPackedValue, max: maxPackedValue, end: maxPackedValue)
    #expect(full.start == maxPackedValue && full.max == maxPackedValue && full.end == maxPackedValue)
    #expect(PallocSum.freeChunk.max == P)
}

@Test func summarizeTable() {
    let cases: [(String, [BitRange], (UInt, UInt, UInt))] = [
        ("NoneFree", [BitRange(0, P)], (0, 0, 0)),
        ("OnlyStart", [BitRange(2, P - 2)], (2, 2, 0)),
        ("OnlyEnd", [BitRange(0, P - 5)], (0, 5, 5)),
        ("StartAndEnd", [BitRange(2, P - 5)], (2, 3, 3)),
        ("StartMaxEnd", [BitRange(4, 50), BitRange(100, 70), BitRange(P - 5, 5)], (4, max(P - 5 - 170, 46), 0)),
        ("OneFree", [BitRange(0, 40), BitRange(41, P - 41)], (0, 1, 0)),
        ("InsideWord", [BitRange(0, 3), BitRange(20, P - 20)], (0, 17, 0)),
        ("AllFree", [], (P, P, P)),
    ]
    for (name, alloc, want) in cases {
        let b = makePallocBits(alloc)
        let s = b.summarize()
        #expect(s.start == want.0 && s.max == want.1 && s.end == want.2, "\(name): got (\(s.start), \(s.max), \(s.end))")
        let slow = slowSummarize(b)
        #expect(slow == want, "\(name) reference")
    }
}

@Test func summarizeRandom() {
    var rng = Rng(state: 42)
    for iter in 0..<2000 {
        var b = PallocBits()
        // Dense random words with a few long holes, so internal runs are exercised.
        for k in 0..<8 { b.bits.words[k] = rng.next() | rng.next() }
        for _ in 0..<Int(rng.below(4)) {
            let i = rng.below(P)
            let n = 1 + rng.below(min(70, P - i))
            b.free(i, n)
        }
        let s = b.summarize()
        let (ws, wm, we) = slowSummarize(b)
        #expect(s.start == ws && s.max == wm && s.end == we, "iter \(iter)")
    }
}

/// PallocBits.summary(after:): the summary after one range was allocated or freed,
/// from the summary before and the run around the range, as summarize gives it; nil
/// exactly when an allocation cut a run as long as the longest.
@Test(arguments: [
    // (allocated before, the range changed, alloc, the summary after or nil)
    ([], BitRange(0, 5), true, nil),                                   // the whole chunk was the longest run
    ([BitRange(100, 10)], BitRange(0, 5), true, (0, P - 110, P - 110)),  // the start run, not the longest
    ([BitRange(400, 10)], BitRange(P - 3, 3), true, (400, 400, 0)),    // the end run, not the longest
    ([BitRange(400, 10)], BitRange(450, 2), true, (400, 400, 60)),     // the end run cut inside
    ([BitRange(0, 100), BitRange(300, 212)], BitRange(200, 1), true, nil),  // the longest, and the only run
    ([BitRange(0, 10), BitRange(20, 480), BitRange(510, 2)], BitRange(15, 1), true, nil),  // one of two longest runs
    ([BitRange(0, P)], BitRange(0, P), false, (P, P, P)),               // all free again
    ([BitRange(0, P)], BitRange(200, 30), false, (0, 30, 0)),          // a run in the middle
    ([BitRange(0, P)], BitRange(0, 7), false, (7, 7, 0)),              // the start run
    ([BitRange(0, P)], BitRange(P - 64, 64), false, (0, 64, 64)),      // the end run, a whole word
    ([BitRange(0, 100), BitRange(150, P - 150)], BitRange(300, 10), false, (0, 50, 0)),  // shorter than the longest
    ([BitRange(10, 20), BitRange(40, P - 40)], BitRange(20, 10), false, (10, 20, 0)),  // joins a run of 10 into one of 20
    ([BitRange(60, 10), BitRange(130, P - 130)], BitRange(60, 10), false, (130, 130, 0)),  // joins the start run across words
] as [([BitRange], BitRange, Bool, (UInt, UInt, UInt)?)])
func summaryAfterOneRangeMatchesSummarize(before: [BitRange], change: BitRange, alloc: Bool, want: (UInt, UInt, UInt)?) {
    var b = makePallocBits(before)
    let old = b.summarize()
    if alloc { b.allocRange(change.i, change.n) } else { b.free(change.i, change.n) }
    let got = b.summary(after: old, change.i, change.n, alloc: alloc)
    if let want {
        #expect(got == PallocSum(start: want.0, max: want.1, end: want.2),
                "got \(got.map { "(\($0.start), \($0.max), \($0.end))" } ?? "nil")")
        #expect(b.summarize() == PallocSum(start: want.0, max: want.1, end: want.2), "the table's own summary")
    } else {
        #expect(got == nil)
    }
}

/// The same over random bitmaps: a random free run (or allocated run) is cut (or
/// freed) in a random place; summary(after:) agrees with summarize whenever it answers,
/// and declines only when the run it cut was a longest one.
@Test func summaryAfterOneRangeMatchesSummarizeOnRandomBitmaps() {
    var rng = Rng(state: 7)
    var answered = 0, declined = 0
    for iter in 0..<20000 {
        var b = PallocBits()
        // Sparse or dense, so that runs of every length, and runs that cross words, occur.
        let dense = rng.below(2) == 0
        for k in 0..<8 { b.bits.words[k] = dense ? rng.next() | rng.next() : rng.next() & rng.next() & rng.next() }
        if rng.below(8) == 0 { b.bits.words[Int(rng.below(8))] = 0 }
        let old = b.summarize()
        let alloc = rng.below(2) == 0
        // A page whose bit is what the change flips, and the run of such pages around it.
        let page = rng.below(P)
        if b.bits.get(page) == alloc { continue }
        var lo = page, hi = page + 1
        while lo > 0 && b.bits.get(lo - 1) != alloc { lo -= 1 }
        while hi < P && b.bits.get(hi) != alloc { hi += 1 }
        let i = lo + rng.below(hi - lo)
        let n = 1 + rng.below(hi - i)
        let runLength = hi - lo
        if alloc { b.allocRange(i, n) } else { b.free(i, n) }
        let got = b.summary(after: old, i, n, alloc: alloc)
        if let got {
            answered += 1
            #expect(got == b.summarize(), "iter \(iter): [\(i), +\(n)) alloc \(alloc)")
        } else {
            declined += 1
            #expect(alloc && runLength == old.max, "iter \(iter): declined a change it can tell")
        }
    }
    #expect(answered > 5000 && declined > 100, "answered \(answered), declined \(declined)")
}

@Test func mergeSummariesTable() {
    func merge(_ sums: [PallocSum], _ log: UInt) -> PallocSum {
        sums.withUnsafeBufferPointer { mergeSummaries($0.baseAddress!, count: $0.count, logMaxPagesPerSum: log) }
    }
    let f = PallocSum.freeChunk
    let z = PallocSum(start: 0, max: 0, end: 0)
    #expect(merge([f, f, f, f, f, f, f, f], 9) == PallocSum(start: 8 * P, max: 8 * P, end: 8 * P))
    #expect(merge([z, z, z, z, z, z, z, z], 9) == z)
    #expect(merge([PallocSum(start: 3, max: 10, end: 7), f, PallocSum(start: 5, max: 6, end: 0), z, z, z, z, z], 9)
            == PallocSum(start: 3, max: 7 + P + 5, end: 0))
    #expect(merge([z, z, z, z, z, z, PallocSum(start: 1, max: 1, end: 4), f], 9)
            == PallocSum(start: 0, max: 4 + P, end: 4 + P))
    // The root level: 8 fully free 2^18-page regions encode as the special full value.
    let r = PallocSum(start: 1 << 18, max: 1 << 18, end: 1 << 18)
    #expect(merge([r, r, r, r, r, r, r, r], 18).max == maxPackedValue)
}

/// The page allocator's merge of a parent's children inside the heap equals Go's merge of
/// all eight, the ones outside the heap (before, after, or both) having no free page.
@Test func mergeChildSummariesOfTheHeapsChildrenMatchesTheFullMerge() {
    var rng = Rng(state: 7)
    let z = PallocSum(raw: 0)
    for log: UInt in [9, 12, 15, 18] {
        let full = UInt(1) << log
        for iter in 0..<2000 {
            var sums = [PallocSum](repeating: z, count: 8)
            let first = Int(rng.below(8)), last = first + Int(rng.below(UInt(8 - first)))
            for k in first...last {
                switch rng.below(4) {
                case 0: sums[k] = z
                case 1: sums[k] = PallocSum(start: full, max: full, end: full)
                default:
                    let a = rng.below(full), b = rng.below(full - a)
                    sums[k] = PallocSum(start: a, max: Swift.max(Swift.max(a, b), rng.below(full - a - b + 1)), end: b)
                }
            }
            let want = sums.withUnsafeBufferPointer { mergeSummaries($0.baseAddress!, count: 8, logMaxPagesPerSum: log) }
            let got = sums.withUnsafeBufferPointer {
                mergeChildSummaries($0.baseAddress! + first, count: last - first + 1, logMaxPagesPerSum: log,
                                    zeroBefore: first > 0, zeroAfter: last < 7)
            }
            #expect(got == want, "log \(log) iter \(iter): children \(first)...\(last)")
        }
    }
}

@Test func findTable() {
    struct Case { var name: String; var alloc: [BitRange]; var npages: UInt; var from: UInt; var want: UInt }
    let cases: [Case] = [
        Case(name: "AllFree1", alloc: [], npages: 1, from: 0, want: 0),
        Case(name: "From100", alloc: [BitRange(0, 100)], npages: 1, from: 100, want: 100),
        Case(name: "NoneFree1", alloc: [BitRange(0, P)], npages: 1, from: 0, want: UInt.max),
        Case(name: "Last1", alloc: [BitRange(0, P - 1)], npages: 1, from: 0, want: P - 1),
        Case(name: "Straddle2", alloc: [BitRange(0, 63), BitRange(65, P - 65)], npages: 2, from: 0, want: 63),
        Case(name: "Inside5", alloc: [BitRange(0, 3), BitRange(4, 1), BitRange(10, P - 10)], npages: 5, from: 0, want: 5),
        Case(name: "NoFit5", alloc: [BitRange(0, 3), BitRange(7, P - 7)], npages: 5, from: 0, want: UInt.max),
        Case(name: "Exactly64", alloc: [BitRange(0, 32), BitRange(96, P - 96)], npages: 64, from: 0, want: 32),
        Case(name: "Large65", alloc: [BitRange(0, 100), BitRange(200, 10), BitRange(300, 50)], npages: 65, from: 0, want: 100),
        Case(name: "Large150", alloc: [BitRange(0, 100), BitRange(200, 10), BitRange(300, 50)], npages: 150, from: 0, want: 350),
        Case(name: "LargeNoFit", alloc: [BitRange(0, 100), BitRange(200, 10), BitRange(300, 50)], npages: 163, from: 0, want: UInt.max),
        Case(name: "AllFreeP", alloc: [], npages: P, from: 0, want: 0),
        Case(name: "AlmostP", alloc: [BitRange(P - 1, 1)], npages: P, from: 0, want: UInt.max),
    ]
    for c in cases {
        let b = makePallocBits(c.alloc)
        let (got, _) = b.find(c.npages, c.from)
        #expect(got == c.want, "\(c.name)")
        #expect(slowFind(b, c.npages, c.from) == c.want, "\(c.name) reference")
    }
}

@Test func findRandom() {
    var rng = Rng(state: 7)
    for iter in 0..<3000 {
        var b = PallocBits()
        for k in 0..<8 { b.bits.words[k] = rng.next() & rng.next() & rng.next() }
        for _ in 0..<Int(rng.below(3)) {
            let i = rng.below(P); b.free(i, 1 + rng.below(min(200, P - i)))
        }
        let npages = [1, 2, 3, 7, 31, 64, 65, 100, 200][Int(rng.below(9))] as UInt
        // searchIdx must be a page below which all is allocated: use the first free page.
        let first = b.find1(0)
        let from = first == UInt.max ? 0 : first
        let (got, newSearch) = b.find(npages, from)
        #expect(got == slowFind(b, npages, from), "iter \(iter) npages \(npages)")
        if got != UInt.max { #expect(newSearch == first, "iter \(iter) searchIdx") }
    }
}

@Test func fillAlignedMatchesSlow() {
    func slow(_ x: UInt64, _ m: UInt) -> UInt64 {
        if m == 1 { return x }
        var out: UInt64 = 0
        var i: UInt = 0
        while i < 64 {
            if (x >> UInt64(i)) & lowMask(m) != 0 { out |= lowMask(m) << UInt64(i) }
            i += m
        }
        return out
    }
    var rng = Rng(state: 3)
    var m: UInt = 1
    while m <= 64 {
        var tests: [UInt64] = [0, 0x0000_0000_ffff_ffff, 0xffff_ffff_0000_0000, 0x8000_0000_0000_0001,
                               0xf000_0000_0000_000f, 0xf000_0001_0050_000f, ~0, 1, 2, 8,
                               0xb02b_9eff_cf13_7016, 0x3975_a076_a9fb_ff18]
        for _ in 0..<300 { tests.append(rng.next() & rng.next() & rng.next()) }
        for x in tests { #expect(fillAligned(x, m) == slow(x, m), "x \(x) m \(m)") }
        m *= 2
    }
    #expect(fillAligned(0x0100a3, 8) == 0xff00ff)
}

@Test func allocRangeClearsScavenged() {
    var d = makePallocData([], [BitRange(0, P)])
    d.allocRange(10, 20)
    #expect(d.scavenged.popcount() == P - 20)
    #expect(d.scavenged.popcntRange(10, 20) == 0)
    #expect(d.alloc.bits.popcntRange(10, 20) == 20)
    #expect(!d.isFree(9, 2) && d.isFree(30, 100))
    d.free(10, 20)
    // Freeing does not make pages scavenged.
    #expect(d.scavenged.popcntRange(10, 20) == 0)
    d.allocAll()
    #expect(d.scavenged.popcount() == 0)
}

@Test func hasScavengeCandidateTable() {
    let cases: [(String, [BitRange], [BitRange], Bool)] = [
        ("AllFree", [], [], true),
        ("AllScavenged", [], [BitRange(0, P)], false),
        ("NoneFree", [BitRange(0, P)], [], false),
        ("OneFreeUnscav", [BitRange(0, 300), BitRange(301, P - 301)], [], true),
        ("OneFreeScav", [BitRange(0, 300), BitRange(301, P - 301)], [BitRange(300, 1)], false),
        ("Mixed", [BitRange(0, 100)], [BitRange(100, P - 101)], true),
    ]
    for (name, alloc, scav, want) in cases {
        var d = makePallocData(alloc, scav)
        #expect(d.hasScavengeCandidate(1) == want, "\(name)")
        let racy = withUnsafeMutablePointer(to: &d) { PallocData.hasScavengeCandidateRacy($0, 1) }
        #expect(racy == want, "\(name) racy")
    }
}

@Test func findScavengeCandidateTable() {
    struct Case { var name: String; var alloc: [BitRange] = []; var scav: [BitRange] = []; var min: UInt; var max: UInt
                  var hugePages: UInt = 0; var want: BitRange }
    var cases: [Case] = [
        Case(name: "MixedMin1", alloc: [BitRange(0, 40), BitRange(42, P - 42)], scav: [BitRange(0, 41), BitRange(42, P - 42)],
             min: 1, max: P, want: BitRange(41, 1)),
        Case(name: "MultiMin1", alloc: [BitRange(0, 63), BitRange(65, 20), BitRange(87, P - 87)], scav: [BitRange(86, 1)],
             min: 1, max: P, want: BitRange(85, 1)),
    ]
    var m: UInt = 1
    while m <= 64 {
        cases.append(Case(name: "AllFree\(m)", min: m, max: P, want: BitRange(0, P)))
        cases.append(Case(name: "AllScavenged\(m)", scav: [BitRange(0, P)], min: m, max: P, want: BitRange(0, 0)))
        cases.append(Case(name: "NoneFree\(m)", alloc: [BitRange(0, P)], scav: [BitRange(P / 2, P / 2)], min: m, max: P, want: BitRange(0, 0)))
        cases.append(Case(name: "StartFree\(m)", alloc: [BitRange(m, P - m)], min: m, max: P, want: BitRange(0, m)))
        cases.append(Case(name: "EndFree\(m)", alloc: [BitRange(0, P - m)], min: m, max: P, want: BitRange(P - m, m)))
        cases.append(Case(name: "Straddle64\(m)", alloc: [BitRange(0, 64 - m), BitRange(64 + m, P - (64 + m))], min: m, max: 2 * m,
                          want: BitRange(64 - m, 2 * m)))
        cases.append(Case(name: "BottomEdge64WithFull\(m)", alloc: [BitRange(64, 64), BitRange(128 + 3 * m, P - (128 + 3 * m))],
                          scav: [BitRange(1, 10)], min: m, max: 3 * m, want: BitRange(128, 3 * m)))
        cases.append(Case(name: "BottomEdge64WithPocket\(m)", alloc: [BitRange(64, 62), BitRange(127, 1), BitRange(128 + 3 * m, P - (128 + 3 * m))],
                          scav: [BitRange(1, 10)], min: m, max: 3 * m, want: BitRange(128, 3 * m)))
        cases.append(Case(name: "Max0\(m)", scav: [BitRange(0, P - m)], min: m, max: 0, want: BitRange(P - m, m)))
        if m <= 8 {
            cases.append(Case(name: "OneFree\(m)", alloc: [BitRange(0, 40), BitRange(40 + m, P - (40 + m))], min: m, max: P, want: BitRange(40, m)))
            cases.append(Case(name: "OneScavenged\(m)", alloc: [BitRange(0, 40), BitRange(40 + m, P - (40 + m))], scav: [BitRange(40, 1)],
                              min: m, max: P, want: BitRange(0, 0)))
        }
        if m > 1 {
            cases.append(Case(name: "MaxUnaligned\(m)", scav: [BitRange(0, P - (m * 2 - 1))], min: m, max: m - 2, want: BitRange(P - m, m)))
            cases.append(Case(name: "SkipSmall\(m)", alloc: [BitRange(0, 64 - m), BitRange(64, 5), BitRange(70, 11), BitRange(82, P - 82)],
                              min: m, max: m, want: BitRange(64 - m, m)))
            cases.append(Case(name: "SkipMisaligned\(m)", alloc: [BitRange(0, 64 - m), BitRange(64, 63), BitRange(127 + m, P - (127 + m))],
                              min: m, max: m, want: BitRange(64 - m, m)))
            cases.append(Case(name: "MaxLessThan\(m)", scav: [BitRange(0, P - m)], min: m, max: 1, want: BitRange(P - m, m)))
        }
        m *= 2
    }
    // Huge-page preservation with our 256-page (2 MiB) huge pages.
    let h = hugePagePages
    cases.append(Case(name: "PreserveHugePageBottom", alloc: [BitRange(h + 2, P - (h + 2))], min: 1, max: 3, hugePages: h,
                      want: BitRange(0, h + 2)))
    cases.append(Case(name: "PreserveHugePageTop", alloc: [BitRange(0, P - h)], min: 1, max: 1, hugePages: h,
                      want: BitRange(P - h, h)))
    cases.append(Case(name: "PreserveHugePageAllFree", min: 1, max: 1, hugePages: h, want: BitRange(P - h, h)))
    // A huge page that is partly allocated is not protected: the cut stands.
    cases.append(Case(name: "PartialHugePageBroken", alloc: [BitRange(0, P - h + 1)], min: 1, max: 1, hugePages: h,
                      want: BitRange(P - 1, 1)))
    // A partly scavenged huge page is not protected either.
    cases.append(Case(name: "ScavengedHugePageBroken", scav: [BitRange(P - h, 1)], min: 1, max: 1, hugePages: h,
                      want: BitRange(P - 1, 1)))
    // With huge pages of 64 pages, three fit: the middle one is kept whole.
    cases.append(Case(name: "PreserveHugePageMiddle64", alloc: [BitRange(0, 64 - 10), BitRange(128 + 10, P - (128 + 10))],
                      min: 1, max: 12, hugePages: 64, want: BitRange(64, 64 + 10)))
    // The default parameter is our huge page.
    for c in cases {
        let d = makePallocData(c.alloc, c.scav)
        let got = d.findScavengeCandidate(P - 1, c.min, c.max, hugePages: c.hugePages)
        let g = BitRange(got.start, got.size)
        #expect((g.n == 0 && c.want.n == 0) || g == c.want, "\(c.name): got \(g), want \(c.want)")
    }
    let d = makePallocData([BitRange(0, P - h)], [])
    let got = d.findScavengeCandidate(P - 1, 1, 1)
    #expect(got.start == P - h && got.size == h)
}

@Test func findScavengeCandidateHonoursSearchIdx() {
    // Pages above searchIdx are never returned, even in searchIdx's own word.
    struct Case { var name: String; var alloc: [BitRange]; var scav: [BitRange]; var searchIdx: UInt; var min: UInt; var want: BitRange }
    let cases: [Case] = [
        Case(name: "AllFreeMid", alloc: [], scav: [], searchIdx: 100, min: 1, want: BitRange(100, 1)),
        Case(name: "FreeOnlyAbove", alloc: [BitRange(0, 110)], scav: [], searchIdx: 100, min: 1, want: BitRange(0, 0)),
        Case(name: "RunEndsAtSearchIdx", alloc: [BitRange(0, 90)], scav: [], searchIdx: 95, min: 1, want: BitRange(95, 1)),
        Case(name: "WordTop", alloc: [BitRange(0, 60)], scav: [], searchIdx: 63, min: 1, want: BitRange(63, 1)),
        Case(name: "Min4Partial", alloc: [BitRange(0, 96)], scav: [], searchIdx: 97, min: 4, want: BitRange(0, 0)),
        Case(name: "Min4Full", alloc: [BitRange(0, 96)], scav: [], searchIdx: 99, min: 4, want: BitRange(96, 4)),
    ]
    for c in cases {
        let d = makePallocData(c.alloc, c.scav)
        let got = d.findScavengeCandidate(c.searchIdx, c.min, 1, hugePages: 0)
        let g = BitRange(got.start, got.size)
        #expect((g.n == 0 && c.want.n == 0) || g == c.want, "\(c.name): got \(g), want \(c.want)")
        if g.n > 0 { #expect(g.i + g.n <= c.searchIdx + 1, "\(c.name) above searchIdx") }
    }
}
