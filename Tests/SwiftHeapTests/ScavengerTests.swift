import Testing
@testable import SwiftHeap

/// The background scavenger's pieces: releasing OS pages inside spans whose objects
/// are free, the accounting of never-touched pages, decay samples, and scavenging a
/// generation down to its goal.
///
/// These run on the process's heap, alongside other suites: they build their own
/// spans (not on any central list) and check those spans' state, not global counters
/// other tests move too.
@Suite(.serialized) struct ScavengerTests {
    init() { #expect(ensureHeapInitialized()) }

    /// Class of 3072-byte objects: 8 in a 3-page span (6 OS pages), objects straddle
    /// OS pages: page p holds objects ⌊4096p/3072⌋ ... ⌊(4096p+4095)/3072⌋.
    private var straddlingClass: Int {
        let cls = heap.pointee.classes.sizeClass(of: 3072)
        let info = heap.pointee.classes.info[cls]
        #expect(info.size == 3072 && info.pages == 3 && info.objects == 8)
        return cls
    }

    /// A span of class `cls` owned by the test alone, with every object handed out to
    /// `slots` and written (so every OS page is resident).
    private func makeFullSpan(_ cls: Int, zeroed: Bool, slots: UnsafeMutablePointer<UInt>) throws -> UnsafeMutablePointer<Span> {
        let info = heap.pointee.classes.info[cls]
        let central = heap.pointee.centrals + cls
        let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: UInt(info.pages), state: .small) })
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

    private func dispose(_ span: UnsafeMutablePointer<Span>) {
        let released = span.pointee.releasedOSPages
        if released != 0 { noteInSpanReleased(-Int64(released.nonzeroBitCount) * Int64(osPageSize)) }
        withHeapLock { freeSpanLocked(span) }
    }

    @Test func releaseFreePagesReleasesExactlyThePagesWhoseObjectsAreAllFree() throws {
        let cls = straddlingClass
        let central = heap.pointee.centrals + cls
        var slots = [UInt](repeating: 0, count: 8)
        let span = try slots.withUnsafeMutableBufferPointer { try makeFullSpan(cls, zeroed: false, slots: $0.baseAddress!) }
        central.lockPointer.lock()
        defer { central.lockPointer.unlock() }

        // Nothing free: nothing released.
        #expect(central.releaseFreePages(of: span) == 0)
        // Objects 2 and 3 free: OS page 2 ([8192, 12288)) holds only them. Pages 1 and 3
        // hold objects 1 and 4 as well.
        freeObjects(span, [2, 3])
        #expect(central.releaseFreePages(of: span) == osPageSize)
        #expect(span.pointee.releasedOSPages == 0b000100)
        #expect(osPageIsZero(span, 2), "the page was really released")
        #expect(!osPageIsZero(span, 1) && !osPageIsZero(span, 3), "its neighbours hold live objects")
        // Again: a released page is not released twice.
        #expect(central.releaseFreePages(of: span) == 0)
        // Objects 4 and 5 free too: page 3 ([12288, 16384)) holds only object 4 and 5.
        freeObjects(span, [4, 5])
        #expect(central.releaseFreePages(of: span) == osPageSize)
        #expect(span.pointee.releasedOSPages == 0b001100)

        // Taking objects back reclaims the pages they lie on, lowest object first:
        // object 2 lies on pages 1 and 2.
        var taken = [UInt](repeating: 0, count: 4)
        #expect(taken.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 0, want: 1) } == 1)
        #expect(taken[0] == span.pointee.base + 2 * 3072)
        #expect(span.pointee.releasedOSPages == 0b001000)
        // Objects 3, 4, 5: page 3 too; nothing is left counted as released.
        #expect(taken.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 1, want: 4) } == 4)
        #expect(span.pointee.releasedOSPages == 0)
        #expect(span.pointee.allocatedCount == 8)
        dispose(span)
    }

    @Test func freshZeroSpansCountUntouchedPagesAsReleasedUntilHandedOut() throws {
        let cls = straddlingClass
        let info = heap.pointee.classes.info[cls]
        let central = heap.pointee.centrals + cls
        let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: UInt(info.pages), state: .small) })
        central.lockPointer.lock()
        defer { central.lockPointer.unlock() }
        central.setUpSpan(span, zeroed: true)
        // 8 objects of 3072 bytes fill the 6 OS pages exactly.
        #expect(span.objectOSPages == 0b111111)
        #expect(span.pointee.releasedOSPages == 0b111111, "no page was touched yet")
        // Handing out objects 0 and 1 touches pages 0 and 1 only (the high-water mark).
        var slots = [UInt](repeating: 0, count: 8)
        #expect(slots.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 0, want: 2) } == 2)
        #expect(span.pointee.releasedOSPages == 0b111100)
        // The in-span pass does not release (or count) untouched pages a second time.
        #expect(central.releaseFreePages(of: span) == 0)
        // A span whose objects do not reach its end: its tail is never an object's.
        let small = heap.pointee.classes.sizeClass(of: 48)
        let smallInfo = heap.pointee.classes.info[small]
        let (other, _) = try #require(withHeapLock { allocSpanLocked(pageCount: UInt(smallInfo.pages), state: .small) })
        other.initializeSmall(sizeClass: UInt32(small), info: smallInfo)
        let objectBytes = UInt(smallInfo.objects) * UInt(smallInfo.size)
        #expect(UInt(other.objectOSPages.nonzeroBitCount) == (objectBytes + osPageSize - 1) / osPageSize)
        withHeapLock { freeSpanLocked(other) }
        dispose(span)
    }

    @Test func anEmptiedSpanLeavesItsReleasedPagesScavenged() throws {
        let cls = straddlingClass
        let info = heap.pointee.classes.info[cls]
        let central = heap.pointee.centrals + cls
        let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: UInt(info.pages), state: .small) })
        central.lockPointer.lock()
        central.setUpSpan(span, zeroed: true)
        var slots = [UInt](repeating: 0, count: 8)
        // Object 0 lies on OS page 0 only: allocator page 0 (OS pages 0, 1) is touched,
        // pages 1 and 2 (OS pages 2-5) are not.
        #expect(slots.withUnsafeMutableBufferPointer { central.take(from: span, into: $0.baseAddress!, already: 0, want: 1) } == 1)
        #expect(span.pointee.releasedOSPages == 0b111110)
        central.lockPointer.unlock()
        let base = span.pointee.base
        let released = span.pointee.releasedOSPages
        noteInSpanReleased(-Int64(released.nonzeroBitCount) * Int64(osPageSize))
        let scavengedPages = withHeapLock { () -> [Bool] in
            let before = heap.pointee.pages.pointee.scavengedBytes
            freeSpanLocked(span)
            markReleasedPagesScavengedLocked(base: base, pages: UInt(info.pages), releasedOSPages: released)
            #expect(heap.pointee.pages.pointee.scavengedBytes == before + 2 * pageSize)
            return (0..<UInt(info.pages)).map { page in
                let address = base + page * pageSize
                return heap.pointee.pages.pointee.chunkOf(chunkIndex(address)).pointee.scavenged.popcntRange(chunkPageIndex(address), 1) == 1
            }
        }
        #expect(scavengedPages == [false, true, true])
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
    private func makeDirtyFreePages(_ pages: UInt) throws {
        let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: pages, state: .small) })
        UnsafeMutableRawPointer(bitPattern: span.pointee.base)!.initializeMemory(as: UInt8.self, repeating: 1, count: Int(pages * pageSize))
        withHeapLock { freeSpanLocked(span) }
    }

    @Test func aGenerationScavengesDownToItsGoal() throws {
        _ = withHeapLock { endEpochLocked(now: 0) }
        // 16 MiB of dirty free pages; a goal 2 MiB below what is retained now.
        try makeDirtyFreePages(2048)
        let goal = withHeapLock { retainedBytesLocked() } - (2 << 20)
        let (released, finished) = scavengeTowardGoal(goal, budgetNanos: -1)
        #expect(finished, "reached its goal")
        // Other suites run meanwhile (and may scavenge or touch pages): check the goal
        // was met and the generation stopped there, far short of every free page.
        #expect(released < 8 << 20)
        #expect(withHeapLock { retainedBytesLocked() } <= goal + (4 << 20))
    }

    @Test func decayStartsANewGenerationWhenTheCurrentOneIsSearched() throws {
        let gen = withHeapLock { () -> UInt32 in
            _ = endEpochLocked(now: 0)
            _ = PageAlloc.scavenge(heap.pointee.pages, UInt.max, mayUnlock: false)
            return heap.pointee.pages.pointee.scav.gen
        }
        // Pages freed now lie in memory this generation searched already.
        try makeDirtyFreePages(64)
        #expect(withHeapLock { PageAlloc.scavenge(heap.pointee.pages, 64 * pageSize, mayUnlock: false) } == 0)
        let (released, _) = releaseDecayed(64 * pageSize)
        #expect(released >= 64 * pageSize)
        #expect(withHeapLock { heap.pointee.pages.pointee.scav.gen } == gen + 1)
    }
}

extension ScavengerTests {
    @Test func confirmedPassesReleaseOnlyPagesFoundFreeTwice() throws {
        let cls = straddlingClass
        let central = heap.pointee.centrals + cls
        var slots = [UInt](repeating: 0, count: 8)
        let span = try slots.withUnsafeMutableBufferPointer { try makeFullSpan(cls, zeroed: false, slots: $0.baseAddress!) }
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
        dispose(span)
    }
}
