import Testing
import Foundation
@testable import SwiftHeap

// Our OS page (4 KiB) is below the allocator page (8 KiB): one page is the minimum.
private let minPages: UInt = 1
private let S = pageSize
private let B = BaseChunkIdx

@Test(arguments: [false, true])
func pageAllocScavenge(mayUnlock: Bool) {
    struct Case {
        var name: String
        var beforeAlloc: [UInt: [BitRange]]
        var beforeScav: [UInt: [BitRange]]
        var expect: [(request: UInt, expect: UInt)]
        var afterScav: [UInt: [BitRange]]
    }
    let h = hugePagePages
    let cases: [Case] = [
        Case(name: "AllFreeUnscavExhaust", beforeAlloc: [B: [], B + 1: [], B + 2: []], beforeScav: [B: [], B + 1: [], B + 2: []],
             expect: [(UInt.max, 3 * P * S)],
             afterScav: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)], B + 2: [BitRange(0, P)]]),
        Case(name: "NoneFreeUnscavExhaust", beforeAlloc: [B: [BitRange(0, P)], B + 1: [], B + 2: [BitRange(0, P)]],
             beforeScav: [B: [], B + 1: [BitRange(0, P)], B + 2: []],
             expect: [(UInt.max, 0)],
             afterScav: [B: [], B + 1: [BitRange(0, P)], B + 2: []]),
        Case(name: "ScavHighestPageFirst", beforeAlloc: [B: []], beforeScav: [B: [BitRange(minPages, P - 2 * minPages)]],
             expect: [(1, minPages * S)],
             afterScav: [B: [BitRange(minPages, P - minPages)]]),
        Case(name: "ScavMultiple", beforeAlloc: [B: []], beforeScav: [B: [BitRange(minPages, P - 2 * minPages)]],
             expect: [(minPages * S, minPages * S), (minPages * S, minPages * S)],
             afterScav: [B: [BitRange(0, P)]]),
        Case(name: "ScavMultiple2", beforeAlloc: [B: [], B + 1: []],
             beforeScav: [B: [BitRange(minPages, P - 2 * minPages)], B + 1: [BitRange(0, P - 2 * minPages)]],
             expect: [(2 * minPages * S, 2 * minPages * S), (minPages * S, minPages * S), (minPages * S, minPages * S)],
             afterScav: [B: [BitRange(0, P)], B + 1: [BitRange(0, P)]]),
        Case(name: "ScavDiscontiguous", beforeAlloc: [B: [], B + 0xe: []],
             beforeScav: [B: [BitRange(minPages, P - 2 * minPages)], B + 0xe: [BitRange(2 * minPages, P - 2 * minPages)]],
             expect: [(2 * minPages * S, 2 * minPages * S), (UInt.max, 2 * minPages * S), (UInt.max, 0)],
             afterScav: [B: [BitRange(0, P)], B + 0xe: [BitRange(0, P)]]),
        Case(name: "ScavAllVeryDiscontiguous", beforeAlloc: [B: [], B + 0x1000: []], beforeScav: [B: [], B + 0x1000: []],
             expect: [(UInt.max, 2 * P * S), (UInt.max, 0)],
             afterScav: [B: [BitRange(0, P)], B + 0x1000: [BitRange(0, P)]]),
        // Huge pages: a wholly free, unscavenged 2 MiB huge page is released whole even
        // when less is asked for; one that is partly in use is not protected.
        Case(name: "HugePageKeptWhole", beforeAlloc: [B: []], beforeScav: [B: []],
             expect: [(S, h * S), (S, h * S), (S, 0)],
             afterScav: [B: [BitRange(0, P)]]),
        Case(name: "HugePagePartlyUsed", beforeAlloc: [B: [BitRange(0, P - 3)]], beforeScav: [B: []],
             expect: [(S, S), (S, S), (S, S), (S, 0)],
             afterScav: [B: [BitRange(P - 3, 3)]]),
        Case(name: "HugePageWithScavengedHole", beforeAlloc: [B: [BitRange(0, h)]], beforeScav: [B: [BitRange(h + 5, 1)]],
             expect: [(S, S)],
             afterScav: [B: [BitRange(h + 5, 1), BitRange(P - 1, 1)]]),
    ]
    for c in cases {
        let b = makePageAlloc(c.beforeAlloc, c.beforeScav)
        var total: UInt = 0
        for (k, e) in c.expect.enumerated() {
            let got = b.locked { $0.pointee.scavenge(e.request, mayUnlock: mayUnlock) }
            #expect(got == e.expect, "\(c.name) #\(k + 1): got \(got), want \(e.expect)")
            total += got
        }
        #expect(b.p.pointee.releasedBytes == total, "\(c.name) releasedBytes")
        #expect(b.p.pointee.scav.pagesReleased == total, "\(c.name) scav.pagesReleased")
        // The heap lock is free again after every call.
        #expect(b.lock.tryLock())
        b.lock.unlock()
        let want = makePageAlloc(c.beforeAlloc, c.afterScav)
        checkPageAlloc(want, b)
    }
}

@Test func scavengedPagesReportedOnAlloc() {
    let t = makePageAlloc([B: [BitRange(0, 100)]], [B: []])
    t.locked { p in
        #expect(p.pointee.scavengedBytes == 0)
        let released = p.pointee.scavenge(UInt.max, mayUnlock: true)
        #expect(released == (P - 100) * S)
        #expect(p.pointee.scavengedBytes == released && p.pointee.freeBytes == released)
        // The first free page is scavenged now: alloc says so (calloc may skip the memset).
        let (base, scav) = p.pointee.alloc(npages: 10)
        #expect(base == pageBase(B, 100) && scav == 10 * S)
        #expect(p.pointee.scavengedBytes == released - 10 * S)
    }
    checkSummaries(t)
}

@Test func reservationsNeverOverlap() {
    var chunks: [UInt: [BitRange]] = [:]
    for i in 0..<100 { chunks[B + UInt(i)] = [] }
    for i in 0..<28 { chunks[B + 0x200 + UInt(i)] = [] }
    let t = makePageAlloc(chunks)
    t.locked { p in
        #expect(p.pointee.scav.reservationBytes == 128 * chunkBytes / 64)
        var got: [AddressRange] = []
        var gens: Set<UInt32> = []
        while true {
            let (r, g) = p.pointee.scavengeReserve()
            if r.size == 0 { break }
            #expect(r.base % chunkBytes == 0)
            #expect(r.size <= p.pointee.scav.reservationBytes + chunkBytes)
            got.append(r)
            gens.insert(g)
        }
        #expect(gens.count == 1)
        // Disjoint, highest first, and together exactly the heap.
        for i in 1..<got.count { #expect(got[i].limit <= got[i - 1].base) }
        #expect(got.reduce(0) { $0 + $1.size } == p.pointee.inUse.totalBytes)
        #expect(p.pointee.scav.inUse.totalBytes == 0)
    }
}

@Test func reservationWidensToChunkAndInterplays() {
    // removeLast then removeGreaterEqual: a reservation that is not a chunk multiple is
    // widened down to a chunk boundary, and what it pulls in leaves the unsearched set.
    let t = makePageAlloc([B: [], B + 2: [], B + 3: [], B + 4: []])
    t.locked { p in
        p.pointee.scav.reservationBytes = chunkBytes + chunkBytes / 2
        let (r1, _) = p.pointee.scavengeReserve()
        #expect(r1 == AddressRange(base: chunkBase(B + 3), limit: chunkBase(B + 5)))
        #expect(p.pointee.scav.inUse.count == 2 && p.pointee.scav.inUse[1] == AddressRange(base: chunkBase(B + 2), limit: chunkBase(B + 3)))
        #expect(p.pointee.scav.inUse.totalBytes == 2 * chunkBytes)
        let (r2, _) = p.pointee.scavengeReserve()
        #expect(r2 == AddressRange(base: chunkBase(B + 2), limit: chunkBase(B + 3)))
        let (r3, _) = p.pointee.scavengeReserve()
        #expect(r3 == AddressRange(base: chunkBase(B), limit: chunkBase(B + 1)))
        let (r4, _) = p.pointee.scavengeReserve()
        #expect(r4.size == 0)
    }
}

@Test func unreserveStaleGenerationIsDropped() {
    let t = makePageAlloc([B: [], B + 1: [], B + 2: [], B + 3: []])
    t.locked { p in
        p.pointee.scav.reservationBytes = chunkBytes
        let (r, gen) = p.pointee.scavengeReserve()
        #expect(r == AddressRange(base: chunkBase(B + 3), limit: chunkBase(B + 4)))
        // Same generation: handed back, coalesced with the rest.
        p.pointee.scavengeUnreserve(r, gen: gen)
        #expect(p.pointee.scav.inUse.count == 1 && p.pointee.scav.inUse.totalBytes == 4 * chunkBytes)
        let (r2, gen2) = p.pointee.scavengeReserve()
        let (ended, _) = p.pointee.scavengeStartGen()
        #expect(ended == gen2)
        #expect(p.pointee.scav.gen == gen2 &+ 1)
        let before = p.pointee.scav.inUse.totalBytes
        #expect(before == 4 * chunkBytes)
        // Old generation: dropped (it would overlap the fresh clone).
        p.pointee.scavengeUnreserve(r2, gen: gen2)
        #expect(p.pointee.scav.inUse.totalBytes == before && p.pointee.scav.inUse.count == 1)
        // Empty ranges are ignored.
        p.pointee.scavengeUnreserve(.empty, gen: p.pointee.scav.gen)
        #expect(p.pointee.scav.inUse.totalBytes == before)
    }
}

@Test func reservationBytesFollowsHeapSize() {
    let t = TestPageAlloc()
    t.locked { p in
        p.pointee.scavengeStartGen()
        #expect(p.pointee.scav.reservationBytes == 0)  // empty heap: scavenger off
        #expect(p.pointee.scavenge(UInt.max, mayUnlock: false) == 0)
        check(p.pointee.grow(base: chunkBase(B), size: chunkBytes))
        #expect(p.pointee.scav.reservationBytes == 0)  // until the next generation
        let (gen, released) = p.pointee.scavengeStartGen()
        #expect(released == 0 && gen == p.pointee.scav.gen &- 1)
        #expect(p.pointee.scav.reservationBytes == chunkBytes / 64)
        check(p.pointee.grow(base: chunkBase(B + 1), size: 127 * chunkBytes))
        p.pointee.scavengeStartGen()
        #expect(p.pointee.scav.reservationBytes == 2 * chunkBytes)
    }
}

@Test func generationProgressAndRestart() {
    // Within a generation every byte is searched once; a new generation finds memory freed since.
    let t = makePageAlloc([B: [], B + 1: []], [B: [BitRange(0, P)], B + 1: [BitRange(0, P)]])
    t.locked { p in
        let (base, _) = p.pointee.alloc(npages: 2 * P)
        #expect(p.pointee.scavenge(UInt.max, mayUnlock: false) == 0)
        p.pointee.free(base: base + 100 * S, npages: 10)
        // Same generation: the space was searched already.
        #expect(p.pointee.scavenge(UInt.max, mayUnlock: false) == 0)
        let (_, released) = p.pointee.scavengeStartGen()
        #expect(released == 0)
        #expect(p.pointee.scavenge(UInt.max, mayUnlock: true) == 10 * S)
        #expect(p.pointee.scav.pagesReleased == 10 * S)
    }
    checkSummaries(t)
}

/// Shared state for the concurrency test, outside Swift's concurrency checking.
private final class Box: @unchecked Sendable {
    let t: TestPageAlloc
    init(_ t: TestPageAlloc) { self.t = t }
}

@Test func scavengeWithUnlockRacesAllocation() {
    // One thread scavenges with mayUnlock (dropping the lock around each release) while
    // this one allocates and frees: a page held by the scavenger is never handed out, and
    // summaries and counters end consistent.
    var chunks: [UInt: [BitRange]] = [:]
    for i in 0..<8 { chunks[B + UInt(i)] = [] }
    let box = Box(makePageAlloc(chunks))
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
        for _ in 0..<200 {
            box.t.locked { p in
                p.pointee.scavengeStartGen()
                _ = PageAlloc.scavenge(p, UInt.max, mayUnlock: true)
            }
        }
        done.signal()
    }
    var rng = Rng(state: 5)
    var live: [(UInt, UInt)] = []
    for _ in 0..<3000 {
        if live.count < 50 && rng.below(2) == 0 {
            let n = 1 + rng.below(40)
            let (base, _) = box.t.locked { $0.pointee.alloc(npages: n) }
            if base != 0 {
                for (b, m) in live { #expect(base + n * S <= b || b + m * S <= base) }
                live.append((base, n))
            }
        } else if !live.isEmpty {
            let (b, m) = live.remove(at: Int(rng.below(UInt(live.count))))
            box.t.locked { $0.pointee.free(base: b, npages: m) }
        }
    }
    done.wait()
    box.t.locked { _ in }
    checkSummaries(box.t)
    let used = live.reduce(0) { $0 + $1.1 } * S
    #expect(box.t.p.pointee.freeBytes == 8 * chunkBytes - used)
}

@Test(arguments: [false, true])
func scavengeOneWork(mayUnlock: Bool) {
    // Chunks B..B+3; only B+1 has free, unscavenged pages (a run of 5 at pages 10..14 and
    // one at page 300). The work region shrinks from the top as it is searched.
    let full = [BitRange(0, P)]
    let t = makePageAlloc([B: full, B + 1: [BitRange(0, 10), BitRange(15, 285), BitRange(301, P - 301)], B + 2: [], B + 3: full],
                          [B + 2: [BitRange(0, P)]])
    t.locked { p in
        let work = AddressRange(base: chunkBase(B), limit: chunkBase(B + 4))
        // Slow path: B+3 is full, B+2 all scavenged; the candidate is found in B+1.
        let (r1, w1) = p.pointee.scavengeOne(work: work, max: S, mayUnlock: mayUnlock)
        #expect(r1 == S)
        #expect(w1 == AddressRange(base: chunkBase(B), limit: pageBase(B + 1, 300)))
        // Fast path: the top chunk of the remaining work, below its limit.
        let (r2, w2) = p.pointee.scavengeOne(work: w1, max: UInt.max, mayUnlock: mayUnlock)
        #expect(r2 == 5 * S)
        #expect(w2 == AddressRange(base: chunkBase(B), limit: pageBase(B + 1, 10)))
        // Nothing left: the work is exhausted.
        let (r3, w3) = p.pointee.scavengeOne(work: w2, max: UInt.max, mayUnlock: mayUnlock)
        #expect(r3 == 0 && w3.size == 0)
        // Empty work: nothing to do.
        let (r4, w4) = p.pointee.scavengeOne(work: .empty, max: UInt.max, mayUnlock: mayUnlock)
        #expect(r4 == 0 && w4.size == 0)
        #expect(p.pointee.scavengedBytes == P * S + 6 * S)
    }
    checkSummaries(t)
}

@Test func scavengeRangeLockedMarksAndCounts() {
    for mayUnlock in [false, true] {
        let t = makePageAlloc([B: [BitRange(0, 100)]])
        t.locked { p in
            let free0 = p.pointee.freeBytes
            let addr = p.pointee.scavengeRangeLocked(B, 200, 16, mayUnlock: mayUnlock)
            #expect(addr == pageBase(B, 200))
            #expect(p.pointee.chunkOf(B).pointee.scavenged.popcntRange(200, 16) == 16)
            #expect(p.pointee.chunkOf(B).pointee.isFree(200, 16))
            #expect(p.pointee.freeBytes == free0 && p.pointee.scavengedBytes == 16 * S)
            #expect(p.pointee.releasedBytes == 16 * S)
        }
        checkSummaries(t)
    }
}

/// Sparing chunks in use: allocRange stamps the chunks it allocates pages of with
/// allocStamp, and a search given spareAllocatedSince skips (and counts) the chunks
/// stamped that or later, the top chunk (scavengeOne's fast path) as well as those below
/// it (findCandidate), under the lock and with it dropped. Nothing is spared with 0, and
/// a chunk spared in one generation is searched by the next.
@Test(arguments: [false, true])
func scavengingSparesTheChunksAllocatedFromSinceTheStamp(mayUnlock: Bool) {
    struct Case {
        var name: String
        /// The allocStamp each chunk's pages were allocated (and freed) under.
        var stamps: [UInt: UInt32]
        var spare: UInt32
        var released: [UInt]
        var spared: UInt
    }
    let cases: [Case] = [
        Case(name: "TopChunkSpared", stamps: [B: 2, B + 1: 2, B + 2: 5], spare: 5, released: [B, B + 1], spared: 1),
        Case(name: "MiddleChunkSpared", stamps: [B: 2, B + 1: 5, B + 2: 2], spare: 5, released: [B, B + 2], spared: 1),
        Case(name: "LaterStampsSpared", stamps: [B: 6, B + 1: 4, B + 2: 5], spare: 5, released: [B + 1], spared: 2),
        Case(name: "AllSpared", stamps: [B: 5, B + 1: 5, B + 2: 5], spare: 5, released: [], spared: 3),
        Case(name: "NothingSparedWithZero", stamps: [B: 5, B + 1: 5, B + 2: 5], spare: 0, released: [B, B + 1, B + 2], spared: 0),
    ]
    for c in cases {
        let t = makePageAlloc([B: [], B + 1: [], B + 2: []], [B: [], B + 1: [], B + 2: []])
        t.locked { p in
            // Allocate and free each chunk's pages under its stamp: they are free and
            // resident, and the chunk is stamped.
            for (ci, stamp) in c.stamps {
                p.pointee.allocStamp = stamp
                #expect(p.pointee.allocRangeIfFree(base: chunkBase(ci), npages: chunkPages).ok)
                p.pointee.free(base: chunkBase(ci), npages: chunkPages)
                #expect(p.pointee.stampOf(ci).pointee == stamp, "\(c.name): chunk \(ci - B) stamped")
            }
            p.pointee.scavengeStartGen()
            let released = PageAlloc.scavenge(p, UInt.max, mayUnlock: mayUnlock, spareAllocatedSince: c.spare)
            #expect(released == UInt(c.released.count) * chunkBytes, "\(c.name): released")
            #expect(p.pointee.scav.sparedChunks == c.spared, "\(c.name): spared")
            for ci in c.stamps.keys {
                let scavenged = p.pointee.chunkOf(ci).pointee.scavenged.popcount()
                #expect(scavenged == (c.released.contains(ci) ? chunkPages : 0), "\(c.name): chunk \(ci - B) scavenged pages")
            }
            // The next generation, sparing nothing, releases the rest.
            p.pointee.scavengeStartGen()
            #expect(p.pointee.scav.sparedChunks == 0)
            let rest = PageAlloc.scavenge(p, UInt.max, mayUnlock: mayUnlock)
            #expect(rest == UInt(3 - c.released.count) * chunkBytes, "\(c.name): the rest")
        }
        checkSummaries(t)
    }
}
