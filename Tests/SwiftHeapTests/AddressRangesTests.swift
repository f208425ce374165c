import Testing
@testable import SwiftHeap

private func R(_ base: UInt, _ limit: UInt) -> AddressRange { AddressRange(base: base, limit: limit) }

private func ok(_ b: Bool, sourceLocation: SourceLocation = #_sourceLocation) { #expect(b, sourceLocation: sourceLocation) }

private func makeRanges(_ rs: [AddressRange]) -> AddressRanges {
    var a = AddressRanges()
    ok(a.initialize())
    for r in rs { ok(a.add(r)) }
    return a
}

private func contents(_ a: AddressRanges) -> [AddressRange] {
    (0..<a.count).map { a[$0] }
}

/// Checks the invariants: sorted, disjoint, non-adjacent, non-empty, totalBytes == sum.
private func checkInvariants(_ a: AddressRanges) {
    var sum: UInt = 0
    for i in 0..<a.count {
        #expect(a[i].size > 0)
        if i > 0 { #expect(a[i - 1].limit < a[i].base) }
        sum += a[i].size
    }
    #expect(a.totalBytes == sum)
}

@Test func addressRangeBasics() {
    #expect(R(10, 20).size == 10)
    #expect(R(20, 10).size == 0)
    #expect(R(10, 20).contains(10))
    #expect(R(10, 20).contains(19))
    #expect(!R(10, 20).contains(20))
    #expect(!R(10, 20).contains(9))
    // subtract: contained -> empty; overlap on either side -> trimmed; disjoint -> same.
    #expect(R(10, 20).subtract(R(0, 30)).size == 0)
    #expect(R(10, 20).subtract(R(10, 20)).size == 0)
    #expect(R(10, 20).subtract(R(15, 30)) == R(10, 15))
    #expect(R(10, 20).subtract(R(0, 15)) == R(15, 20))
    #expect(R(10, 20).subtract(R(30, 40)) == R(10, 20))
    #expect(R(10, 20).subtract(R(0, 10)) == R(10, 20))
}

@Test func addCoalescing() {
    struct Case { var name: String; var add: [AddressRange]; var want: [AddressRange] }
    let cases: [Case] = [
        Case(name: "one", add: [R(0x1000, 0x2000)], want: [R(0x1000, 0x2000)]),
        Case(name: "down", add: [R(0x1000, 0x2000), R(0x2000, 0x3000)], want: [R(0x1000, 0x3000)]),
        Case(name: "up", add: [R(0x2000, 0x3000), R(0x1000, 0x2000)], want: [R(0x1000, 0x3000)]),
        Case(name: "both", add: [R(0x1000, 0x2000), R(0x3000, 0x4000), R(0x2000, 0x3000)], want: [R(0x1000, 0x4000)]),
        Case(name: "bothMiddle", add: [R(0x1000, 0x2000), R(0x3000, 0x4000), R(0x6000, 0x7000), R(0x2000, 0x3000)],
             want: [R(0x1000, 0x4000), R(0x6000, 0x7000)]),
        Case(name: "noneBetween", add: [R(0x1000, 0x2000), R(0x5000, 0x6000), R(0x3000, 0x4000)],
             want: [R(0x1000, 0x2000), R(0x3000, 0x4000), R(0x5000, 0x6000)]),
        Case(name: "insertFront", add: [R(0x5000, 0x6000), R(0x1000, 0x2000)], want: [R(0x1000, 0x2000), R(0x5000, 0x6000)]),
        Case(name: "empty ignored", add: [R(0x5000, 0x6000), R(0x1000, 0x1000)], want: [R(0x5000, 0x6000)]),
    ]
    for c in cases {
        let a = makeRanges(c.add)
        #expect(contents(a) == c.want, "\(c.name)")
        checkInvariants(a)
    }
}

@Test func addGrowsStorage() {
    // 40 discontiguous ranges, inserted in a scrambled order: exercises growth twice.
    var a = AddressRanges()
    ok(a.initialize())
    var order = Array(0..<40)
    order.reverse()
    order.swapAt(3, 17)
    for i in order {
        let base = UInt(i) * 0x10000 + 0x100000
        ok(a.add(R(base, base + 0x1000)))
        checkInvariants(a)
    }
    #expect(a.count == 40)
    #expect(a.capacity >= 40)
    #expect(a.totalBytes == 40 * 0x1000)
    for i in 0..<40 { #expect(a[i].base == UInt(i) * 0x10000 + 0x100000) }
    // Fill every gap: all coalesce into one range.
    for i in 0..<39 {
        let base = UInt(i) * 0x10000 + 0x100000 + 0x1000
        ok(a.add(R(base, base + 0x10000 - 0x1000)))
        checkInvariants(a)
    }
    #expect(contents(a) == [R(0x100000, 0x100000 + 39 * 0x10000 + 0x1000)])
}

@Test func findSuccAndContains() {
    let a = makeRanges([R(0x1000, 0x2000), R(0x3000, 0x4000), R(0x6000, 0x8000)])
    struct Case { var addr: UInt; var succ: Int; var contains: Bool; var ge: UInt? }
    let cases: [Case] = [
        Case(addr: 0, succ: 0, contains: false, ge: 0x1000),           // before all ranges
        Case(addr: 0xfff, succ: 0, contains: false, ge: 0x1000),
        Case(addr: 0x1000, succ: 1, contains: true, ge: 0x1000),       // base of a range
        Case(addr: 0x1fff, succ: 1, contains: true, ge: 0x1fff),
        Case(addr: 0x2000, succ: 1, contains: false, ge: 0x3000),      // limit is exclusive
        Case(addr: 0x3000, succ: 2, contains: true, ge: 0x3000),
        Case(addr: 0x5000, succ: 2, contains: false, ge: 0x6000),
        Case(addr: 0x7fff, succ: 3, contains: true, ge: 0x7fff),
        Case(addr: 0x8000, succ: 3, contains: false, ge: nil),         // past all ranges
        Case(addr: UInt.max, succ: 3, contains: false, ge: nil),
    ]
    for c in cases {
        #expect(a.findSucc(c.addr) == c.succ, "findSucc(\(c.addr))")
        #expect(a.contains(c.addr) == c.contains, "contains(\(c.addr))")
        #expect(a.findAddrGreaterEqual(c.addr) == c.ge, "ge(\(c.addr))")
    }
    let e = makeRanges([])
    #expect(e.findSucc(5) == 0)
    #expect(!e.contains(5))
    #expect(e.findAddrGreaterEqual(5) == nil)
}

@Test func removeLastCases() {
    struct Case { var name: String; var initial: [AddressRange]; var n: UInt; var got: AddressRange; var after: [AddressRange] }
    let cases: [Case] = [
        Case(name: "empty", initial: [], n: 0x1000, got: .empty, after: []),
        Case(name: "part of last", initial: [R(0x1000, 0x2000), R(0x4000, 0x8000)], n: 0x1000,
             got: R(0x7000, 0x8000), after: [R(0x1000, 0x2000), R(0x4000, 0x7000)]),
        Case(name: "exactly last", initial: [R(0x1000, 0x2000), R(0x4000, 0x8000)], n: 0x4000,
             got: R(0x4000, 0x8000), after: [R(0x1000, 0x2000)]),
        Case(name: "more than last", initial: [R(0x1000, 0x2000), R(0x4000, 0x8000)], n: 0x10000,
             got: R(0x4000, 0x8000), after: [R(0x1000, 0x2000)]),
        Case(name: "max", initial: [R(0x4000, 0x8000)], n: UInt.max, got: R(0x4000, 0x8000), after: []),
        Case(name: "zero", initial: [R(0x4000, 0x8000)], n: 0, got: R(0x8000, 0x8000), after: [R(0x4000, 0x8000)]),
    ]
    for c in cases {
        var a = makeRanges(c.initial)
        let got = a.removeLast(c.n)
        #expect(got.base == c.got.base || (got.size == 0 && c.got.size == 0), "\(c.name)")
        #expect(got.size == c.got.size, "\(c.name)")
        #expect(contents(a) == c.after, "\(c.name)")
        checkInvariants(a)
    }
}

@Test func removeGreaterEqualCases() {
    let base = [R(0x1000, 0x2000), R(0x3000, 0x4000), R(0x6000, 0x8000)]
    struct Case { var addr: UInt; var after: [AddressRange] }
    let cases: [Case] = [
        Case(addr: 0, after: []),                                   // before all ranges
        Case(addr: 0x1000, after: []),                              // at the base of the first
        Case(addr: 0x1800, after: [R(0x1000, 0x1800)]),             // splits the first
        Case(addr: 0x2000, after: [R(0x1000, 0x2000)]),             // at a limit
        Case(addr: 0x2800, after: [R(0x1000, 0x2000)]),             // in a gap
        Case(addr: 0x3000, after: [R(0x1000, 0x2000)]),             // base of the middle one
        Case(addr: 0x7000, after: [R(0x1000, 0x2000), R(0x3000, 0x4000), R(0x6000, 0x7000)]),
        Case(addr: 0x8000, after: base),                            // past all ranges
        Case(addr: UInt.max, after: base),
    ]
    for c in cases {
        var a = makeRanges(base)
        a.removeGreaterEqual(c.addr)
        #expect(contents(a) == c.after, "removeGreaterEqual(\(c.addr))")
        checkInvariants(a)
    }
}

@Test func cloneIntoCopiesAndReuses() {
    let a = makeRanges([R(0x1000, 0x2000), R(0x3000, 0x4000)])
    var b = makeRanges([R(0x9000, 0xa000)])
    let storage = b.storage
    ok(a.cloneInto(&b))
    #expect(b.storage == storage)  // reused
    #expect(contents(b) == contents(a))
    #expect(b.totalBytes == a.totalBytes)
    // The clone is deep: changing b leaves a alone.
    _ = b.removeLast(0x800)
    #expect(contents(a) == [R(0x1000, 0x2000), R(0x3000, 0x4000)])
    checkInvariants(b)
    // A large source forces a bigger block in the destination.
    var big = AddressRanges()
    ok(big.initialize())
    for i in 0..<50 { big.add(R(UInt(i) * 0x10000 + 0x10000, UInt(i) * 0x10000 + 0x18000)) }
    var c = AddressRanges()
    ok(c.initialize())
    ok(big.cloneInto(&c))
    #expect(contents(c) == contents(big))
    #expect(c.totalBytes == big.totalBytes)
    // Cloning into a zero-value set works too.
    var d = AddressRanges()
    ok(a.cloneInto(&d))
    #expect(contents(d) == contents(a))
}

@Test func reservationsCarveFromTheTop() {
    // The scavenger's use: removeLast then removeGreaterEqual at a chunk-aligned base.
    var a = makeRanges([R(0x0, 0x1000_0000), R(0x2000_0000, 0x2080_0000)])
    var r = a.removeLast(0x10_0000)
    #expect(r == R(0x2070_0000, 0x2080_0000))
    let newBase = alignDown(r.base, chunkBytes)
    a.removeGreaterEqual(newBase)
    r.base = newBase
    #expect(r == R(0x2040_0000, 0x2080_0000))
    #expect(contents(a) == [R(0x0, 0x1000_0000), R(0x2000_0000, 0x2040_0000)])
    checkInvariants(a)
    // Unreserve the unsearched part: it coalesces back.
    a.add(R(0x2040_0000, 0x2060_0000))
    #expect(contents(a) == [R(0x0, 0x1000_0000), R(0x2000_0000, 0x2060_0000)])
    checkInvariants(a)
}
