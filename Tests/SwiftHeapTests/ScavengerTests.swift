import Testing
@testable import SwiftHeap

/// The scavenger's pieces on private instances: releasing OS pages inside spans whose
/// objects are free, the accounting of never-touched pages, decay samples, scavenging a
/// generation down to its goal, and the inline tick. Every expectation is exact: nothing
/// else uses these heaps.
@Suite struct ScavengerTests {
    /// Class of 3072-byte objects: 8 in a 3-page span (6 OS pages), objects straddle
    /// OS pages: page p holds objects ⌊4096p/3072⌋ ... ⌊(4096p+4095)/3072⌋.
    private func straddlingCentral(_ h: PrivateHeap) -> UnsafeMutablePointer<Central> {
        let (cls, central) = h.central(forSize: 3072)
        let info = h.classes.info[cls]
        #expect(info.size == 3072 && info.pages == 3 && info.objects == 8)
        return central
    }

    /// A span of `central`'s class owned by the test alone (on no list), with every object
    /// handed out to `slots` and written (so every OS page is resident).
    private func makeFullSpan(_ h: PrivateHeap, _ central: UnsafeMutablePointer<Central>, zeroed: Bool,
                              slots: UnsafeMutablePointer<UInt>) throws -> UnsafeMutablePointer<Span> {
        let info = central.pointee.info
        let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: UInt(info.pages), state: .small) })
        central.setUpSpan(span, zeroed: zeroed)
        let got = central.take(from: span, into: slots, already: 0, want: Int(info.objects))
        #expect(got == Int(info.objects))
        #expect(span.pointee.releasedOSPages == 0, "every OS page holds a handed-out object")
        for i in 0..<got {
            UnsafeMutableRawPointer(bitPattern: slots[i])!.initializeMemory(as: UInt8.self, repeating: 0xa5, count: Int(info.size))
        }
        return span
    }

    /// Marks objects free in the span's bitmap, as Central.release does (without
    /// sending an emptied span back to the page heap).
    private func freeObjects(_ span: UnsafeMutablePointer<Span>, _ indices: [UInt]) {
        for index in indices {
            span.freeWords[Int(index >> 6)] |= UInt64(1) << UInt64(index & 63)
            span.pointee.allocatedCount -= 1
        }
    }

    private func osPageIsZero(_ span: UnsafeMutablePointer<Span>, _ page: UInt) -> Bool {
        let bytes = UnsafeBufferPointer(start: UnsafePointer<UInt8>(bitPattern: span.pointee.base + page * osPageSize),
                                        count: Int(osPageSize))
        return bytes.allSatisfy { $0 == 0 }
    }

    @Test func releaseFreePagesReleasesExactlyThePagesWhoseObjectsAreAllFree() throws {
        let h = PrivateHeap()
        let central = straddlingCentral(h)
        var slots = [UInt](repeating: 0, count: 8)
        let span = try slots.withUnsafeMutableBufferPointer { try makeFullSpan(h, central, zeroed: false, slots: $0.baseAddress!) }
        central.lockPointer.lock()
        defer { central.lockPointer.unlock() }

        // Nothing free: nothing released.
        #expect(central.releaseFreePages(of: span) == 0)
        // Objects 2 and 3 free: OS page 2 ([8192, 12288)) holds only them. Pages 1 and 3
        // hold objects 1 and 4 as well.
        freeObjects(span, [2, 3])
        #expect(central.releaseFreePages(of: span) == osPageSize)
        #expect(span.pointee.releasedOSPages == 0b000100)
        #expect(h.events.pointee.inSpanReleased == UInt64(osPageSize))
        #expect(osPageIsZero(span, 2), "the page was really released")
        #expect(!osPageIsZero(span, 1) && !osPageIsZero(span, 3), "its neighbours hold live objects")
        // Again: a released page is not released twice.
        #expect(central.releaseFreePages(of: span) == 0)
        // Objects 4 and 5 free too: page 3 ([12288, 16384)) holds only object 4 and 5.
        freeObjects(span, [4, 5])
        #expect(central.releaseFreePages(of: span) == osPageSize)
        #expect(span.pointee.releasedOSPages == 0b001100)
        #expect(h.events.pointee.inSpanReleased == UInt64(2 * osPageSize))

        // Taking objects back reclaims the pages they lie on, lowest object first:
        // object 2 lies on pages 1 and 2.
        var taken = [UInt](repeating: 0, count: 4)
        #expect(taken.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 0, want: 1) } == 1)
        #expect(taken[0] == span.pointee.base + 2 * 3072)
        #expect(span.pointee.releasedOSPages == 0b001000)
        // Objects 3, 4, 5: page 3 too; nothing is left counted as released.
        #expect(taken.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 1, want: 4) } == 4)
        #expect(span.pointee.releasedOSPages == 0)
        #expect(h.events.pointee.inSpanReleased == 0)
        #expect(span.pointee.allocatedCount == 8)
    }

    @Test func freshZeroSpansCountUntouchedPagesAsReleasedUntilHandedOut() throws {
        let h = PrivateHeap()
        let central = straddlingCentral(h)
        let info = central.pointee.info
        let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: UInt(info.pages), state: .small) })
        central.lockPointer.lock()
        defer { central.lockPointer.unlock() }
        central.setUpSpan(span, zeroed: true)
        // 8 objects of 3072 bytes fill the 6 OS pages exactly.
        #expect(span.objectOSPages == 0b111111)
        #expect(span.pointee.releasedOSPages == 0b111111, "no page was touched yet")
        #expect(h.events.pointee.inSpanReleased == UInt64(6 * osPageSize))
        // Handing out objects 0 and 1 touches pages 0 and 1 only (the high-water mark).
        var slots = [UInt](repeating: 0, count: 8)
        #expect(slots.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 0, want: 2) } == 2)
        #expect(span.pointee.releasedOSPages == 0b111100)
        #expect(h.events.pointee.inSpanReleased == UInt64(4 * osPageSize))
        // The in-span pass does not release (or count) untouched pages a second time.
        #expect(central.releaseFreePages(of: span) == 0)
        // A span whose objects do not reach its end: its tail is never an object's.
        let (small, smallCentral) = h.central(forSize: 48)
        let smallInfo = h.classes.info[small]
        let (other, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: UInt(smallInfo.pages), state: .small) })
        other.initializeSmall(sizeClass: UInt32(small), info: smallCentral.pointee.info)
        let objectBytes = UInt(smallInfo.objects) * UInt(smallInfo.size)
        #expect(UInt(other.objectOSPages.nonzeroBitCount) == (objectBytes + osPageSize - 1) / osPageSize)
    }

    /// take stops counting as released the OS pages under every object it hands out, and
    /// no other: random free objects and released pages, in spans of classes whose objects
    /// lie inside one OS page, straddle two or cover several, against the pages each
    /// taken object covers, computed one by one.
    @Test(arguments: [UInt(48), 416, 3072, 5632, 12288])
    func takingObjectsReclaimsExactlyThePagesTheyLieOn(size: UInt) throws {
        let h = PrivateHeap()
        let (cls, central) = h.central(forSize: size)
        let info = h.classes.info[cls]
        var random = SystemRandomNumberGenerator()
        central.lockPointer.lock()
        defer { central.lockPointer.unlock() }
        for _ in 0..<200 {
            let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: UInt(info.pages), state: .small) })
            central.setUpSpan(span, zeroed: false)
            var slots = [UInt](repeating: 0, count: Int(info.objects))
            // Everything out, then a random subset back, and random pages released.
            #expect(slots.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 0, want: Int(info.objects)) } == Int(info.objects))
            for index in 0..<UInt(info.objects) where Bool.random(using: &random) {
                span.freeWords[Int(index >> 6)] |= UInt64(1) << UInt64(index & 63)
                span.pointee.allocatedCount -= 1
            }
            let released = UInt64.random(in: 0...UInt64.max, using: &random) & span.objectOSPages
            span.pointee.releasedOSPages = released
            let want = Int.random(in: 1...Int(info.objects), using: &random)
            let got = slots.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 0, want: want) }
            var expected = released
            for object in slots.prefix(got) {
                let offset = object - span.pointee.base
                for page in offset / osPageSize...(offset + size - 1) / osPageSize { expected &= ~(UInt64(1) << UInt64(page)) }
            }
            #expect(span.pointee.releasedOSPages == expected, "size \(size), released \(released), took \(got)")
            span.pointee.releasedOSPages = 0
            h.locked { h.pageHeap.freeSpanLocked(span) }
        }
    }

    /// How long an answer of the program's thread count holds: "other threads" a second;
    /// "none" 10 ms at first (the read may have come from inside the pthread_create that
    /// starts the program's next thread: Tests/c/late_thread.c), doubling while it stays
    /// "none", up to a second.
    @Test(arguments: [
        (hasThreads: true, lastHold: Int64(0), lastHadThreads: false, holds: threadCheckIntervalNanos),
        (hasThreads: true, lastHold: threadRecheckMinNanos, lastHadThreads: false, holds: threadCheckIntervalNanos),
        (hasThreads: false, lastHold: 0, lastHadThreads: false, holds: threadRecheckMinNanos),
        (hasThreads: false, lastHold: threadCheckIntervalNanos, lastHadThreads: true, holds: threadRecheckMinNanos),
        (hasThreads: false, lastHold: threadRecheckMinNanos, lastHadThreads: false, holds: 2 * threadRecheckMinNanos),
        (hasThreads: false, lastHold: 640_000_000, lastHadThreads: false, holds: threadCheckIntervalNanos),
        (hasThreads: false, lastHold: threadCheckIntervalNanos, lastHadThreads: false, holds: threadCheckIntervalNanos),
    ])
    func aThreadCountOfNoneHoldsBrieflyAndBacksOff(_ row: (hasThreads: Bool, lastHold: Int64, lastHadThreads: Bool, holds: Int64)) {
        #expect(threadCheckHold(hasThreads: row.hasThreads, lastHold: row.lastHold, lastHadThreads: row.lastHadThreads) == row.holds)
    }

    /// From a first "none", the holds double to a second in eight reads.
    @Test func noneAnswersReachASecondAfterEightReads() {
        var hold = threadCheckHold(hasThreads: false, lastHold: 0, lastHadThreads: false)
        var reads = 1
        while hold < threadCheckIntervalNanos {
            hold = threadCheckHold(hasThreads: false, lastHold: hold, lastHadThreads: false)
            reads += 1
        }
        #expect(reads == 8)
    }

    @Test func decaySamplesKeepTheMinimumOverTheWindow() {
        var samples = DecaySamples()
        // A fresh ring holds zeros: nothing counts as unneeded before a whole window passed.
        #expect(samples.record(100, at: 0, window: 3) == 0)
        #expect(samples.record(50, at: 1, window: 3) == 0)
        #expect(samples.record(80, at: 2, window: 3) == 50)
        #expect(samples.record(90, at: 3, window: 3) == 50)
        #expect(samples.record(95, at: 4, window: 3) == 80, "the 50 left the window")
        // Released memory is no longer free: every sample drops by it (not below zero).
        samples.subtract(85)
        #expect(samples.record(10, at: 5, window: 3) == 5)
        // The ring wraps around.
        for i in 6..<(6 + decaySampleSlots) { _ = samples.record(7, at: i, window: decaySampleSlots) }
        #expect(samples.record(9, at: 6 + decaySampleSlots, window: decaySampleSlots) == 7)
    }

    /// Frees a span of `pages` pages after writing all of it: dirty, free pages.
    private func makeDirtyFreePages(_ h: PrivateHeap, _ pages: UInt) throws {
        let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: pages, state: .large) })
        UnsafeMutableRawPointer(bitPattern: span.pointee.base)!.initializeMemory(as: UInt8.self, repeating: 1, count: Int(pages * pageSize))
        h.locked { h.pageHeap.freeSpanLocked(span) }
    }

    /// One tick of `s` at `now` (inline, or the thread's), holding the runner lock as the
    /// runners do.
    func inlineTick(_ s: UnsafeMutablePointer<Scavenger>, _ now: Int64, inline: Bool = true) {
        let runner = s.pointer(to: \.runner.lock)!
        runner.lock()
        _ = s.tick(now: now, inline: inline)
        runner.unlock()
    }

    /// Stamps every chunk of the heap as last allocated from long ago (0), so that no
    /// tick spares it (PageAllocScavenge.swift).
    private func forgetAllocations(_ h: PrivateHeap) {
        h.locked {
            let pages = h.pageHeap.pointee.pages
            for k in 0..<pages.pointee.inUse.count {
                let r = pages.pointee.inUse[k]
                for ci in chunkIndex(r.base)..<chunkIndex(r.limit) { pages.pointee.stampOf(ci).pointee = 0 }
            }
        }
    }

    @Test func aGenerationScavengesDownToItsGoal() throws {
        let h = PrivateHeap()
        try makeDirtyFreePages(h, 2048)  // 16 MiB, the heap's only region
        #expect(h.pageHeap.pointee.stats.mappedBytes == 16 << 20)
        let s = h.scavenger
        _ = h.locked { s.endEpochLocked(now: 0) }
        // The goal's basis: nothing live, plus the 16 MiB given back since the peak.
        let basis: UInt = 16 << 20
        #expect(s.pointee.goalBytes == basis + basis / 100 * 10 && !s.pointee.goalReached && s.pointee.goalPendingFlag == 1)
        #expect(h.locked { s.retainedBytesLocked() } == 16 << 20)
        let goal: UInt = 14 << 20
        let (released, finished) = s.scavengeTowardGoal(goal, budgetNanos: -1, stepBytes: 4 << 20)
        #expect(finished, "reached its goal")
        #expect(released == 2 << 20)
        #expect(h.locked { s.retainedBytesLocked() } == goal)
        #expect(h.pageHeap.pointee.pages.pointee.scav.pagesReleased == 2 << 20)
    }

    @Test func decayStartsANewGenerationWhenTheCurrentOneIsSearched() throws {
        let h = PrivateHeap()
        let s = h.scavenger
        try makeDirtyFreePages(h, 64)
        let gen = h.locked { () -> UInt32 in
            _ = s.endEpochLocked(now: 0)
            _ = PageAlloc.scavenge(h.pageHeap.pointee.pages, UInt.max, mayUnlock: false)
            return h.pageHeap.pointee.pages.pointee.scav.gen
        }
        // Pages freed now lie in memory this generation searched already.
        try makeDirtyFreePages(h, 64)
        #expect(h.locked { PageAlloc.scavenge(h.pageHeap.pointee.pages, 64 * pageSize, mayUnlock: false) } == 0)
        let (released, _) = s.releaseDecayed(64 * pageSize)
        #expect(released == 64 * pageSize)
        #expect(h.pageHeap.pointee.pages.pointee.scav.gen == gen + 1)
    }

    @Test func confirmedPassesReleaseOnlyPagesFoundFreeTwice() throws {
        let h = PrivateHeap()
        let central = straddlingCentral(h)
        var slots = [UInt](repeating: 0, count: 8)
        let span = try slots.withUnsafeMutableBufferPointer { try makeFullSpan(h, central, zeroed: false, slots: $0.baseAddress!) }
        central.lockPointer.lock()
        defer { central.lockPointer.unlock() }
        freeObjects(span, [2, 3])
        // First confirmed pass: page 2 is only noted.
        #expect(central.releaseFreePages(of: span, confirmed: true) == 0)
        #expect(span.pointee.freeOSPagesSeen == 0b000100)
        freeObjects(span, [4, 5])
        // Second: page 2 was free both times and goes; page 3 is new and is only noted.
        #expect(central.releaseFreePages(of: span, confirmed: true) == osPageSize)
        #expect(span.pointee.releasedOSPages == 0b000100)
        #expect(span.pointee.freeOSPagesSeen == 0b001000)
        // Page 3's objects handed out in between: not released at the next pass.
        var taken = [UInt](repeating: 0, count: 8)
        #expect(taken.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 0, want: 4) } == 4)
        #expect(central.releaseFreePages(of: span, confirmed: true) == 0)
        #expect(span.pointee.freeOSPagesSeen == 0)
    }

    /// The inline runner's tick ends a due epoch and releases toward the goal in bounded
    /// steps, until the goal is met; the CPU budget's bucket bounds a burst.
    @Test func inlineTicksReleaseInBoundedStepsUntilTheGoal() throws {
        var config = Config()
        config.scavengeBurstMillis = 200
        let h = PrivateHeap(config: config)
        let s = h.scavenger
        try makeDirtyFreePages(h, 2048)  // 16 MiB freed: an epoch is due (threshold 1 MiB)
        #expect(h.events.pointee.epochDue == 1)
        // A budget to spend (the bucket starts empty), and a goal of nothing: forget the
        // peak and the allocation, as if the free were long ago.
        forgetAllocations(h)
        s.pointee.runner.started = true
        s.pointee.runner.tokensNanos = 200_000_000
        s.pointee.runner.lastRefillNanos = 1_000_000_000
        h.events.pointee.peakSpanBytes = 0
        var ticks = 0
        var now: Int64 = 1_000_000_000
        repeat {
            let before = h.locked { s.retainedBytesLocked() }
            inlineTick(s, now)
            let after = h.locked { s.retainedBytesLocked() }
            #expect(before - after <= inlineStepBytes * 16, "one inline tick releases a bounded amount")
            ticks += 1
            now += scavengerTickNanos
        } while !h.locked({ s.pointee.goalReached }) && ticks < 1000
        #expect(h.locked { s.retainedBytesLocked() } == 0, "the goal (nothing live) is met")
        #expect(s.pointee.goalReached && s.pointee.goalPendingFlag == 0 && h.events.pointee.epochDue == 0)
        #expect(ticks >= 2, "16 MiB is more than one inline tick's work")
    }
}

extension ScavengerTests {
    /// Pages of a chunk the program allocated from since the last tick, or within the
    /// last spareTickPeriods tick periods, stay resident however far retained memory is
    /// above the goal; once the chunk has gone that long without an allocation, decay
    /// releases them; and while a phase is being dropped (a shrink credit lasts), nothing
    /// is spared.
    @Test(arguments: [false, true])
    func ticksSpareTheChunksAllocatedFromLately(dropping: Bool) throws {
        var config = Config()
        config.scavengeBurstMillis = 200
        let h = PrivateHeap(config: config)
        let s = h.scavenger
        func tick(_ now: Int64) -> UInt {
            let before = h.locked { s.retainedBytesLocked() }
            inlineTick(s, now, inline: false)
            return before - h.locked { s.retainedBytesLocked() }
        }
        var now: Int64 = 10_000_000_000
        #expect(tick(now) == 0, "the first tick has no budget")
        // 16 MiB allocated, written and freed in this tick period; a budget, a goal of nothing.
        try makeDirtyFreePages(h, 2048)
        s.pointee.runner.tokensNanos = 200_000_000
        h.events.pointee.peakSpanBytes = 0
        if dropping {
            s.pointee.lastCreditNanos = now
            s.pointee.runner.creditBytes = 16 << 20
            s.pointee.runner.creditNanos = 100_000_000
        }
        now += scavengerTickNanos / 2
        let first = tick(now)
        if dropping {
            #expect(first == 16 << 20, "a phase dropped is released at once")
            return
        }
        #expect(first == 0, "the chunk allocated from since the last tick is spared")
        #expect(h.locked { s.pointee.goalReached })
        #expect(h.locked { h.pageHeap.pointee.pages.pointee.scav.sparedChunks } == 4, "its four chunks")
        // The next ticks, within spareTickPeriods of the allocation: spared still.
        for period in 1...Int(spareTickPeriods) {
            now += scavengerTickNanos
            #expect(tick(now) == 0, "\(period) tick periods after the allocation")
        }
        // More than spareTickPeriods with no allocation: what stayed free over the decay
        // window goes.
        now += scavengerTickNanos
        #expect(tick(now) == 16 << 20)
        #expect(h.locked { s.retainedBytesLocked() } == 0)
    }

    /// The budget starts empty; an epoch whose goal falls below a quarter of the most the
    /// heap held in spans lately (a phase dropped) credits the whole peak's release, at
    /// most once per creditIntervalNanos; a swing that does not fall that far earns nothing.
    @Test func aPhaseDroppedEarnsItsReleaseBudget() throws {
        let h = PrivateHeap()
        let s = h.scavenger
        func tick(_ now: Int64) { inlineTick(s, now) }
        tick(1_000_000_000)
        #expect(s.pointee.runner.tokensNanos == 0, "the bucket starts empty")
        // A recent peak of 400 MiB in spans; a swing down to 150 MiB earns nothing.
        s.pointee.recentPeakSpanBytes = 400 << 20
        s.pointee.recentPeakNanos = 1_000_000_000
        s.pointee.goalBytes = 400 << 20
        let makeLive = { (bytes: UInt) in  // a large span of `bytes` counts as live
            h.locked { h.pageHeap.stats.pointee.largeBytes = bytes }
        }
        makeLive(150 << 20)
        h.events.pointee.epochDue = 1
        tick(1_001_000_000)
        let swing: UInt = 150 << 20
        #expect(s.pointee.goalBytes == swing + swing / 100 * 10 && s.pointee.runner.tokensNanos < 1_000_000)
        // Down to 10 MiB (below a quarter of the peak): the peak's release is credited.
        makeLive(10 << 20)
        h.events.pointee.epochDue = 1
        tick(1_002_000_000)
        let low: UInt = 10 << 20
        #expect(s.pointee.goalBytes == low + low / 100 * 10)
        #expect(s.pointee.runner.tokensNanos > 400 * shrinkCreditNanosPerMiB - 4 * inlineCreditSliceNanos)
        // Again within creditIntervalNanos: nothing more.
        let tokens = s.pointee.runner.tokensNanos
        h.events.pointee.epochDue = 1
        tick(1_003_000_000)
        #expect(s.pointee.runner.tokensNanos <= tokens + 1_000_000)
        makeLive(0)
    }
}

extension ScavengerTests {
    /// A program that drops a phase, pauses, and builds the next one (scripts/rss's
    /// phases: 200 MiB freed, 1 s asleep, rebuilt) earns one credit per drop. The first
    /// epoch after the pause (an idle epoch: the goal is the few MiB live when the build-up
    /// starts, far below the last peak) is not another dropped phase: a credit there
    /// released free pages the build-up faulted straight back in, and that refault paused
    /// every later credit (doubling up to 32 s), so that the phases' frees were no longer
    /// released at all.
    @Test(arguments: [
        BuildUpStart(troughSpans: 2 << 20, troughLive: 2 << 20, startSpans: 5 << 20, startLive: 5 << 20),
        // The trough's spans hold many free objects (the phases' small blocks): far above
        // its live bytes, and the build-up starts a little above them.
        BuildUpStart(troughSpans: 24 << 20, troughLive: 2 << 20, startSpans: 25 << 20, startLive: 5 << 20),
    ])
    func theStartOfTheNextBuildUpIsNotADroppedPhase(_ c: BuildUpStart) throws {
        let h = PrivateHeap()
        let s = h.scavenger
        func tick(_ now: Int64) { inlineTick(s, now) }
        func inSpans(_ bytes: UInt, live: UInt? = nil) {  // large spans' bytes count as live
            h.locked {
                h.pageHeap.stats.pointee.largeBytes = live ?? bytes
                h.pageHeap.stats.pointee.spanBytes = bytes
                h.events.pointee.peakSpanBytes = max(h.events.pointee.peakSpanBytes, bytes)
            }
        }
        var now: Int64 = 1_000_000_000
        tick(now)
        for cycle in 0..<3 {
            // Built up to 200 MiB, then all freed: the drop is credited.
            inSpans(200 << 20)
            h.events.pointee.epochDue = 1
            now += 300_000_000
            tick(now)
            inSpans(c.troughSpans, live: c.troughLive)
            h.events.pointee.epochDue = 1
            now += 10_000_000
            tick(now)
            #expect(s.pointee.lastCreditNanos == now, "cycle \(cycle): the drop is credited")
            // 1 s later the next build-up starts (an idle epoch ends): no credit.
            now += 1_000_000_000
            inSpans(c.startSpans, live: c.startLive)
            h.events.pointee.epochDue = 1
            tick(now)
            #expect(s.pointee.lastCreditNanos != now, "cycle \(cycle): the build-up's start is credited")
            now += 10_000_000
        }
        inSpans(0)
    }

    /// A peak that recurs a little lower (each of scripts/rss's phases peaks at 209-211
    /// MiB, 1.2 s apart) keeps the recent peak alive: the most the heap held in the last
    /// peakLifetimeNanos is still about that peak, not what an epoch in the middle of a
    /// drop saw once the first peak grew 5 s old (a credit for that lower peak ran out
    /// before the drop's end, and the rest waited for the 1% budget).
    @Test func aRecurringPeakStaysTheRecentPeak() {
        let h = PrivateHeap()
        let s = h.scavenger
        func epoch(at now: Int64, peak: UInt, inSpans: UInt) {
            h.locked {
                h.pageHeap.stats.pointee.spanBytes = inSpans
                h.events.pointee.peakSpanBytes = peak
                h.events.pointee.peakSpanNanos = now
                _ = s.endEpochLocked(now: now)
            }
        }
        var now: Int64 = 1_000_000_000
        var peak: UInt = 211 << 20
        for _ in 0..<5 {
            epoch(at: now, peak: peak, inSpans: peak)
            peak -= 1 << 20
            now += 1_200_000_000
        }
        // 6 s after the first peak (1.2 s after the last), in the middle of a drop.
        epoch(at: now, peak: 120 << 20, inSpans: 100 << 20)
        #expect(s.pointee.recentPeakSpanBytes >= 200 << 20, "recent peak \(s.pointee.recentPeakSpanBytes >> 20) MiB")
        h.locked { h.pageHeap.stats.pointee.spanBytes = 0 }
    }

    /// A shrink credit pays for releasing the peak it was credited for, once: a heap that
    /// swings below a quarter of its peak and back again and again (a loop of big objects)
    /// must not have every swing released, and faulted in again, while the credit's time
    /// lasts. With no time-filled budget (0% of a core), what one credit for a 64 MiB peak
    /// releases over twelve 16 MiB swings is the peak and at most one swing more.
    @Test func aShrinkCreditReleasesAtMostThePeakItWasCreditedFor() throws {
        var config = Config()
        config.scavengeCPUPercent = 0
        let h = PrivateHeap(config: config)
        let s = h.scavenger
        var now: Int64 = 1_000_000_000
        func tick() {
            inlineTick(s, now)
            now += 1_000_000
        }
        tick()
        #expect(s.pointee.runner.tokensNanos == 0, "the bucket starts empty and time adds nothing")
        let peak: UInt = 64 << 20, swing: UInt = 16 << 20
        s.pointee.recentPeakSpanBytes = peak
        s.pointee.recentPeakNanos = now
        var released: UInt = 0
        for _ in 0..<12 {  // 192 MiB of swings, all within one credit interval (12 x 40 ms)
            try makeDirtyFreePages(h, swing / pageSize)
            h.events.pointee.peakSpanBytes = 0  // the goal: nothing live
            let before = h.locked { s.retainedBytesLocked() }
            for _ in 0..<40 { tick() }
            released += before - h.locked { s.retainedBytesLocked() }
        }
        #expect(now - 1_000_000_000 < creditIntervalNanos)
        #expect(released >= swing, "the credit paid for releasing a swing at least")
        #expect(released <= peak + swing, "released \(released >> 20) MiB on a credit for \(peak >> 20) MiB")
    }
}

extension ScavengerTests {
    /// Released pages that spans take back soon after the release are charged to the
    /// budget (refaultNanosPerOSPage an OS page); a shrink credit whose release is taken
    /// back in good part ends, and the next credit waits for a pause that doubles each
    /// time, until a credit goes by without that. Pages fresh from the kernel, or taken
    /// back after refaultWindowNanos, cost nothing. (The heap of a loop of big objects:
    /// each trough below a quarter of the peak looks like a dropped phase.)
    @Test func releasesTakenBackAreChargedAndEndTheCreditThatPaidForThem() throws {
        var config = Config()
        config.scavengeCPUPercent = 0  // only credits fill the bucket
        let h = PrivateHeap(config: config)
        let s = h.scavenger
        var now: Int64 = 1_000_000_000
        let peak: UInt = 64 << 20, swing: UInt = 16 << 20
        let swingCharge = Int64(swing / osPageSize) * refaultNanosPerOSPage
        func tick() { inlineTick(s, now) }
        /// A swing at `time`: 16 MiB allocated where the last swing was (taking back what
        /// was released of it), written and freed, nothing live; then 40 ms of ticks.
        /// Returns the bytes released.
        func swingDown(at time: Int64) throws -> UInt {
            now = time
            s.pointee.recentPeakSpanBytes = peak
            s.pointee.recentPeakNanos = time
            // Built up again since the last swing's trough.
            s.pointee.risenSinceCredit = true
            s.pointee.peakSinceCreditSpanBytes = peak
            try makeDirtyFreePages(h, swing / pageSize)
            // The page heap stamps a take of released pages with the real clock; this test
            // runs on its own.
            if h.events.pointee.releasedTakenNanos != 0 { h.events.pointee.releasedTakenNanos = time }
            h.events.pointee.peakSpanBytes = 0
            let before = h.locked { s.retainedBytesLocked() }
            for _ in 0..<40 {
                tick()
                now += 1_000_000
            }
            return before - h.locked { s.retainedBytesLocked() }
        }
        tick()
        let t0: Int64 = 2_000_000_000
        // Fresh memory, then a trough: credited, released, nothing charged.
        #expect(try swingDown(at: t0) == swing)
        #expect(s.pointee.runner.creditBytes == peak - swing && s.pointee.runner.tokensNanos > 0)
        // Taken back at once: charged, and the credit ends (its time is withdrawn).
        #expect(try swingDown(at: t0 + 50_000_000) == 0)
        #expect(s.pointee.runner.creditBytes == 0 && s.pointee.runner.creditNanos == 0)
        #expect(s.pointee.runner.tokensNanos == -swingCharge)
        #expect(s.pointee.runner.creditPauseNanos == creditPauseMinNanos)
        // Past the credit interval but within the pause: no credit, nothing released.
        #expect(try swingDown(at: t0 + 600_000_000) == 0)
        #expect(s.pointee.runner.tokensNanos == -swingCharge)
        // After the pause: credited again (the debt forgiven).
        let t1 = t0 + 50_000_000 + creditPauseMinNanos + 1_000_000
        #expect(try swingDown(at: t1) == swing)
        #expect(s.pointee.runner.tokensNanos > 0 && s.pointee.runner.creditBytes == peak - swing)
        // Taken back again: the pause doubles.
        #expect(try swingDown(at: t1 + 50_000_000) == 0)
        #expect(s.pointee.runner.creditPauseNanos == 2 * creditPauseMinNanos)
        // A credit whose release stays released for the refault window (the program
        // paused) resets the pause for the next credit.
        let t2 = t1 + 50_000_000 + 2 * creditPauseMinNanos + 1_000_000
        #expect(try swingDown(at: t2) == swing)
        let tokens = s.pointee.runner.tokensNanos
        #expect(try swingDown(at: t2 + max(refaultWindowNanos, creditIntervalNanos) + 100_000_000) == swing)
        #expect(s.pointee.runner.creditPauseNanos == 0)
        #expect(s.pointee.runner.tokensNanos >= tokens - 40 * inlineCreditSliceNanos, "taken back late: not charged")
    }
}

extension ScavengerTests {
    /// A take of released pages counts when it came within refaultWindowNanos of the
    /// release, whenever the tick that sees it runs (a program with one thread may make
    /// no call for a long while after it).
    @Test(arguments: [
        (takeAfter: Int64(50_000_000), tickAfter: Int64(60_000_000), charged: true),
        (takeAfter: Int64(50_000_000), tickAfter: Int64(900_000_000), charged: true),
        (takeAfter: Int64(300_000_000), tickAfter: Int64(310_000_000), charged: false),
    ])
    func aTakeCountsByWhenItHappenedNotWhenATickSawIt(takeAfter: Int64, tickAfter: Int64, charged: Bool) {
        let h = PrivateHeap()
        let s = h.scavenger
        let released: UInt = 4 << 20
        let releaseAt: Int64 = 5_000_000_000
        s.pointee.runner.recentReleasedBytes = released
        s.pointee.runner.lastReleaseNanos = releaseAt
        s.pointee.runner.tokensNanos = 0
        s.chargeRefaults(releasedTaken: released, since: releaseAt + takeAfter, now: releaseAt + tickAfter,
                         debtLimitNanos: 1_000_000_000)
        let charge = Int64(released / osPageSize) * refaultNanosPerOSPage
        #expect(s.pointee.runner.tokensNanos == (charged ? -charge : 0))
    }
}

extension ScavengerTests {
    /// Epochs end at most once per inlineFlaggedTickNanos, except the one that finds the
    /// heap below a quarter of its peak with a credit to grant: a program with one
    /// thread may free its last objects within that millisecond and then make no call
    /// for a long while, so that its phase would be released only when it builds the
    /// next one (and taken back at once).
    @Test(arguments: [(inSpans: UInt(50 << 20), endsAtOnce: true), (inSpans: UInt(150 << 20), endsAtOnce: false)])
    func anEpochThatCreditsADroppedPhaseEndsAtOnce(inSpans: UInt, endsAtOnce: Bool) {
        let h = PrivateHeap()
        let s = h.scavenger
        let now: Int64 = 10_000_000_000
        inlineTick(s, now - 100_000_000)
        s.pointee.recentPeakSpanBytes = 400 << 20
        s.pointee.recentPeakNanos = now - 100_000_000
        s.pointee.goalBytes = 400 << 20
        h.locked { h.pageHeap.stats.pointee.spanBytes = inSpans }
        s.pointee.lastEpochNanos = now - inlineFlaggedTickNanos / 2
        h.events.pointee.epochDue = epochDueByShrinking
        #expect(s.phaseDropped(now) == endsAtOnce)
        inlineTick(s, now)
        #expect((s.pointee.lastEpochNanos == now) == endsAtOnce)
        #expect((s.pointee.runner.creditBytes != 0) == endsAtOnce, "the phase's credit")
        h.locked { h.pageHeap.stats.pointee.spanBytes = 0 }
    }

    /// An epoch ended early for a heap below a quarter of its peak may credit nothing (its
    /// goal counts live bytes the spans no longer show); the next such epoch then waits
    /// inlineFlaggedTickNanos like any other, so that a heap that stays there does not end
    /// an epoch at every call.
    @Test func anEarlyEpochThatCreditsNothingIsNotRepeatedAtEveryCall() {
        let h = PrivateHeap()
        let s = h.scavenger
        let now: Int64 = 10_000_000_000
        func tick(_ at: Int64) { inlineTick(s, at) }
        tick(now - 100_000_000)
        s.pointee.recentPeakSpanBytes = 400 << 20
        s.pointee.recentPeakNanos = now - 100_000_000
        h.locked {
            h.pageHeap.stats.pointee.spanBytes = 50 << 20  // below a quarter of the peak
            h.pageHeap.stats.pointee.largeBytes = 120 << 20  // but a goal above it
        }
        s.pointee.lastEpochNanos = now - inlineFlaggedTickNanos / 2
        h.events.pointee.epochDue = epochDueByShrinking
        tick(now)
        #expect(s.pointee.lastEpochNanos == now, "ended early")
        #expect(s.pointee.runner.creditBytes == 0, "nothing to credit: the goal is above a quarter of the peak")
        #expect(!s.phaseDropped(now + 100_000))
        h.events.pointee.epochDue = epochDueByShrinking
        tick(now + 100_000)
        #expect(s.pointee.lastEpochNanos == now, "not again within inlineFlaggedTickNanos")
        tick(now + inlineFlaggedTickNanos)
        #expect(s.pointee.lastEpochNanos == now + inlineFlaggedTickNanos)
        h.locked {
            h.pageHeap.stats.pointee.spanBytes = 0
            h.pageHeap.stats.pointee.largeBytes = 0
        }
    }
}

/// The lock-order check of the test build (LockRanks.swift).
@Suite struct LockRankTests {
    @Test func locksTakenInOrderAreTracked() {
        let h = PrivateHeap()
        let central = h.central(forSize: 64).central
        central.lockPointer.lock()
        h.pageHeap.lockPointer.lock()
        #expect(heldLockRanks() == [LockRank.central(h.classes.sizeClass(of: 64)).rawValue, LockRank.pageHeap.rawValue])
        h.pageHeap.lockPointer.unlock()
        central.lockPointer.unlock()
        #expect(heldLockRanks() == [])
    }

    @Test func aLockTakenOutOfOrderTraps() async {
        await #expect(processExitsWith: .failure) {
            let h = PrivateHeap()
            h.pageHeap.lockPointer.lock()
            h.central(forSize: 64).central.lockPointer.lock()  // a central after the page heap
        }
    }
}

/// Bytes in spans and live at a phase's trough and at the start of the next build-up
/// (ScavengerTests.theStartOfTheNextBuildUpIsNotADroppedPhase).
struct BuildUpStart: Sendable, CustomTestStringConvertible {
    var troughSpans: UInt, troughLive: UInt, startSpans: UInt, startLive: UInt
    var testDescription: String {
        "trough \(troughSpans >> 20) MiB in spans (\(troughLive >> 20) live), start \(startSpans >> 20) (\(startLive >> 20))"
    }
}
