import Testing
import Glibc
@testable import SwiftHeap

/// The page heap on private instances: spans, the span map's rule, growth, large objects,
/// objects mapped on their own, and what it publishes in its events. Every expectation is
/// exact: nothing else uses these heaps.
@Suite struct PageHeapTests {
    @Test(arguments: [1, 2, 7, 512, 513, 9000] as [UInt])
    func allocSpanMapsItsPagesAndFreeUnmapsThem(pages: UInt) throws {
        // A small span maps every page (a free finds it from any object); a large span its
        // first page only (its metadata must not grow with its size).
        let h = PrivateHeap()
        for state in [SpanState.small, .large] {
            let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: pages, state: state) })
            let base = span.pointee.base
            let map = h.pageHeap.pointee.spanMap
            #expect(base % pageSize == 0)
            #expect(span.pointee.pages == pages && span.pointee.state == state)
            #expect(h.pageHeap.pointee.stats.spanBytes == pages * pageSize)
            #expect(map.span(containing: base) == span)
            #expect(pages == 1 || map.span(containing: base + pages * pageSize - 1) == (state == .small ? span : nil), "\(state)")
            // The memory is really ours: write its first and last bytes.
            UnsafeMutablePointer<UInt8>(bitPattern: base)!.pointee = 1
            UnsafeMutablePointer<UInt8>(bitPattern: base + pages * pageSize - 1)!.pointee = 1
            h.locked { h.pageHeap.freeSpanLocked(span) }
            #expect(map.span(containing: base) == nil)
            #expect(map.span(containing: base + pages * pageSize - 1) == nil)
            #expect(h.pageHeap.pointee.stats.spanBytes == 0)
        }
    }

    /// The first region's hint: chunk-aligned, in [16 TiB, 40 TiB), and in the first
    /// quarter of a span-map slot, so that a heap of up to three quarters of a GiB needs
    /// one slot's table (anywhere in the slot, a heap of 100 MB straddled two slots in
    /// one process in twenty, and got 4 MiB less under `ulimit -v`); and random.
    @Test func placementHintsStayInTheFirstQuarterOfASlot() {
        var seen = Set<UInt>()
        for salt in 0..<2000 as Range<UInt> {
            let hint = heapPlacementHint(salt: salt &* 4096)
            #expect(hint % chunkBytes == 0)
            #expect(hint >= 1 << 44 && hint < (1 << 44) + (24 << 40))
            #expect(hint % (1 << spanMapSlotShift) < (1 << spanMapSlotShift) / 4, "hint \(hint)")
            seen.insert(hint)
        }
        #expect(seen.count > 1900, "\(seen.count) distinct hints of 2000")
    }

    @Test func theHeapGrowsByWhatItNeeds() throws {
        let h = PrivateHeap()
        let stats = h.pageHeap.stats
        #expect(stats.pointee.mappedBytes == 0, "nothing mapped before the first span")
        let (a, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 1, state: .small) })
        #expect(stats.pointee.mappedBytes == 4 << 20 && stats.pointee.regionCount == 1, "a first region of 4 MiB")
        // 600 pages do not fit what is left: the next region is 8 MiB (twice the last,
        // and more than the 4.7 MiB asked).
        let (b, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 600, state: .large) })
        #expect(stats.pointee.mappedBytes == 12 << 20 && stats.pointee.regionCount == 2)
        // A request above the growth step maps the request, rounded to whole chunks.
        let (c, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 5000, state: .large) })
        #expect(stats.pointee.mappedBytes == (12 << 20) + alignUp(5000 * pageSize, chunkBytes))
        #expect(stats.pointee.nextGrowthBytes == 32 << 20)
        h.locked {
            for span in [a, b, c] { h.pageHeap.freeSpanLocked(span) }
        }
        #expect(h.pageHeap.pointee.pages.pointee.freeBytes == stats.pointee.mappedBytes)
    }

    @Test(arguments: [2 * pageSize, 64 << 10, 1 << 20, 4 << 20] as [UInt])
    func alignedSpansAreAligned(alignment: UInt) throws {
        let h = PrivateHeap()
        let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 3, alignment: alignment, state: .large) })
        #expect(span.pointee.base % alignment == 0)
        #expect(span.pointee.pages == 3)
        #expect(h.pageHeap.pointee.stats.spanBytes == 3 * pageSize, "the head and tail went back")
        h.locked { h.pageHeap.freeSpanLocked(span) }
    }

    @Test func spansOfFreshPagesReportEveryByteScavenged() throws {
        let h = PrivateHeap()
        let (span, scavenged) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 300, state: .large) })
        #expect(scavenged == 300 * pageSize)
        // Written, freed, taken again: no longer scavenged.
        UnsafeMutableRawPointer(bitPattern: span.pointee.base)!.initializeMemory(as: UInt8.self, repeating: 1, count: Int(300 * pageSize))
        h.locked { h.pageHeap.freeSpanLocked(span) }
        let (again, scavengedAgain) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 300, state: .large) })
        #expect(again.pointee.base == span.pointee.base && scavengedAgain == 0)
        h.locked { h.pageHeap.freeSpanLocked(again) }
    }

    /// calloc's zeroing of a large span does not trust released pages: bytes written into
    /// them after the release (a use-after-free) are gone, by either of its two ways.
    @Test func zeroLargeClearsWhatWasWrittenAfterARelease() throws {
        let h = PrivateHeap()
        for scavengedShare: UInt in [0, 1, 2] {  // none, half, all of the span reported released
            let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 4, state: .large) })
            let bytes = 4 * pageSize
            let memory = try #require(UnsafeMutableRawPointer(bitPattern: span.pointee.base))
            osRelease(span.pointee.base, bytes)
            memory.initializeMemory(as: UInt8.self, repeating: 0xA5, count: Int(bytes))
            zeroLarge(memory, bytes: bytes, scavengedBytes: bytes / 2 * scavengedShare)
            let view = UnsafeBufferPointer(start: memory.assumingMemoryBound(to: UInt8.self), count: Int(bytes))
            #expect(view.allSatisfy { $0 == 0 }, "scavenged share \(scavengedShare)/2")
            h.locked { h.pageHeap.freeSpanLocked(span) }
        }
    }

    @Test func impossibleSizesFailWithoutGrowing() {
        let h = PrivateHeap()
        #expect(h.locked { h.pageHeap.allocSpanLocked(pageCount: UInt.max / pageSize, state: .large) } == nil)
        #expect(h.locked { h.pageHeap.allocSpanLocked(pageCount: 1 << 40, state: .large) } == nil)
        #expect(h.pageHeap.pointee.stats.mappedBytes == 0)
        #expect(h.pageHeap.allocateLarge(UInt.max - 10, alignment: pageSize, zeroed: false) == nil)
        #expect(h.pageHeap.allocateLarge(1 << 40, alignment: pageSize, zeroed: false) == nil, "the kernel refuses 1 TiB")
        #expect(h.pageHeap.pointee.stats.mappedBytes == 0 && h.pageHeap.pointee.stats.directBytes == 0)
    }

    @Test func growInPlaceTakesTheFreePagesThatFollowAndStopsAtANeighbour() throws {
        let h = PrivateHeap()
        let pages = h.pageHeap.pointee.pages
        let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 40, state: .large) })
        let base = span.pointee.base
        h.locked { h.pageHeap.shrinkSpanLocked(span, keepPages: 30) }
        #expect(span.pointee.pages == 30 && h.pageHeap.pointee.stats.spanBytes == 30 * pageSize)
        #expect(h.locked { pages.pointee.isFreePage(base + 30 * pageSize) && !pages.pointee.isFreePage(base + 29 * pageSize) })
        #expect(h.locked { h.pageHeap.growSpanInPlaceLocked(span, extraPages: 10) })
        #expect(span.pointee.pages == 40 && h.locked { !pages.pointee.isFreePage(base + 39 * pageSize) })
        // First fit in a fresh heap: the next span lies right after it and blocks growth.
        let (next, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 1, state: .large) })
        #expect(next.pointee.base == span.pointee.limit)
        #expect(!h.locked { h.pageHeap.growSpanInPlaceLocked(span, extraPages: 1) })
        #expect(span.pointee.pages == 40)
        h.locked {
            h.pageHeap.freeSpanLocked(next)
            h.pageHeap.freeSpanLocked(span)
        }
    }

    @Test func largeObjectsCountAndResizeInPlace() throws {
        let h = PrivateHeap()
        let stats = h.pageHeap.stats
        let p = try #require(h.pageHeap.allocateLarge(200_000, alignment: pageSize, zeroed: false))
        let pages = alignUp(200_000, pageSize) / pageSize
        #expect(stats.pointee.largeBytes == pages * pageSize && stats.pointee.largeCount == 1)
        let span = try #require(h.pageHeap.pointee.spanMap.span(containing: UInt(bitPattern: p)))
        // Fresh heap: the pages after it are free, so it grows in place, and shrinks in place.
        #expect(h.pageHeap.resizeLarge(span, 260_000) == p)
        #expect(stats.pointee.largeBytes == alignUp(260_000, pageSize))
        #expect(h.pageHeap.resizeLarge(span, 100_000) == p)
        #expect(stats.pointee.largeBytes == alignUp(100_000, pageSize))
        h.pageHeap.freeLarge(span, address: UInt(bitPattern: p), call: "free()")
        #expect(stats.pointee.largeBytes == 0 && stats.pointee.largeCount == 0 && stats.pointee.spanBytes == 0)
    }

    /// What the page heap publishes for the scavenger: every page freed counts toward the
    /// epoch, which is due at the threshold; pages moving raise pagesMoved.
    @Test func freedPagesArePublishedInTheEvents() throws {
        let h = PrivateHeap()
        h.events.pointee.epochThreshold = 100 * pageSize
        let (a, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 60, state: .large) })
        let (b, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 60, state: .large) })
        #expect(h.events.pointee.pagesMoved == 1)
        h.events.pointee.pagesMoved = 0
        h.locked { h.pageHeap.freeSpanLocked(a) }
        #expect(h.events.pointee.freedSinceEpoch == 60 * pageSize && h.events.pointee.epochDue == 0)
        #expect(h.events.pointee.pagesMoved == 1)
        h.locked { h.pageHeap.shrinkSpanLocked(b, keepPages: 10) }
        #expect(h.events.pointee.freedSinceEpoch == 110 * pageSize && h.events.pointee.epochDue == 1)
        h.locked { h.pageHeap.freeSpanLocked(b) }
        #expect(h.events.pointee.freedSinceEpoch == 120 * pageSize)
    }

    /// The span map's table memory of a megabyte whose pages are all free goes back to the
    /// OS (its entries are zero, and the kernel's zero page reads the same); that of a
    /// megabyte holding a span stays, and so do its entries.
    @Test func idleSpanMapMemoryIsReleasedAndLiveEntriesStay() throws {
        let h = PrivateHeap()
        let megabyte = SpanMap.bytesPerTablePage
        #expect(megabyte == 1 << 20)
        let perMegabyte = megabyte >> pageShift
        // Four megabytes of small one-page spans, every entry written.
        var spans: [UnsafeMutablePointer<Span>] = []
        for _ in 0..<(4 * perMegabyte) {
            let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 1, state: .small) })
            spans.append(span)
        }
        let map = h.pageHeap.pointee.spanMap
        func tablePage(_ address: UInt) -> UInt { UInt(bitPattern: map.entry(containingMapped: address)!) & ~(osPageSize - 1) }
        func resident(_ address: UInt) -> Bool {
            var vector: UInt8 = 0
            #expect(mincore(UnsafeMutableRawPointer(bitPattern: tablePage(address)), Int(osPageSize), &vector) == 0)
            return vector & 1 != 0
        }
        // Free every span but one whose megabyte is kept (the first megabyte-aligned one).
        let bases = spans.map { $0.pointee.base }
        let keptMegabyte = try #require(bases.first { $0 % megabyte == 0 })
        let kept = spans.filter { $0.pointee.base >= keptMegabyte && $0.pointee.base < keptMegabyte + megabyte }.first!
        for span in spans where span != kept { h.locked { h.pageHeap.freeSpanLocked(span) } }
        let freeMegabyte = try #require(bases.first { $0 % megabyte == 0 && $0 != keptMegabyte })
        #expect(resident(freeMegabyte) && resident(keptMegabyte))
        let released = h.locked { h.pageHeap.releaseIdleSpanMapLocked() }
        #expect(released >= osPageSize)
        #expect(!resident(freeMegabyte), "the free megabyte's entries are released")
        #expect(resident(keptMegabyte), "the megabyte holding a span keeps its entries")
        #expect(map.span(containing: kept.pointee.base) == kept && map.span(containing: freeMegabyte) == nil)
        // Spans made on the released entries write them again.
        let (again, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 1, state: .small) })
        #expect(map.span(containing: again.pointee.base) == again)
        h.locked { h.pageHeap.freeSpanLocked(again) }
        h.locked { h.pageHeap.freeSpanLocked(kept) }
    }

    /// A small span emptied with some of its pages released inside it gives those pages
    /// back scavenged: not counted as resident, not released again.
    @Test func anEmptiedSpanLeavesItsReleasedPagesScavenged() throws {
        let h = PrivateHeap()
        let pages = h.pageHeap.pointee.pages
        let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 3, state: .small) })
        let base = span.pointee.base
        // Dirty all three pages first, so they are not scavenged when freed.
        UnsafeMutableRawPointer(bitPattern: base)!.initializeMemory(as: UInt8.self, repeating: 1, count: Int(3 * pageSize))
        let before = pages.pointee.scavengedBytes
        // OS pages 2-5 released (allocator pages 1 and 2), OS page 0 only of page 0.
        h.locked { h.pageHeap.freeSpanLocked(span, releasedOSPages: 0b111101) }
        #expect(pages.pointee.scavengedBytes == before + 2 * pageSize)
        let scavenged = h.locked {
            (0..<UInt(3)).map { page in
                let address = base + page * pageSize
                return pages.pointee.chunkOf(chunkIndex(address)).pointee.scavenged.popcntRange(chunkPageIndex(address), 1) == 1
            }
        }
        #expect(scavenged == [false, true, true])
    }

    /// Objects of directThreshold or more are mapped on their own: their record maps one
    /// page, freeing unmaps them, and a free of the same address again is recognised.
    @Test func directSpansAreMappedOnTheirOwnAndRememberedWhenFreed() throws {
        let h = PrivateHeap()
        let bytes = directThreshold + 3 * pageSize
        let span = try #require(h.pageHeap.allocDirectSpan(bytes: bytes, alignment: pageSize))
        let base = span.pointee.base
        let map = h.pageHeap.pointee.spanMap
        #expect(span.pointee.direct && span.pointee.state == .large && span.pointee.pages == bytes / pageSize)
        #expect(map.span(containing: base) == span && map.span(containing: base + pageSize) == nil)
        #expect(h.pageHeap.pointee.stats.directBytes == bytes && h.pageHeap.pointee.stats.mappedBytes == 0,
                "not page-heap memory")
        UnsafeMutablePointer<UInt8>(bitPattern: base + bytes - 1)!.pointee = 7
        // Grow it by remapping: the contents stay.
        let moved = try #require(h.pageHeap.resizeDirectSpan(span, bytes: 2 * bytes))
        #expect(UnsafeMutablePointer<UInt8>(bitPattern: moved + bytes - 1)!.pointee == 7)
        #expect(map.span(containing: moved) == span)
        #expect(moved == base || map.span(containing: base) == nil)
        #expect(h.pageHeap.pointee.stats.directBytes == 2 * bytes)
        h.pageHeap.freeLarge(span, address: moved, call: "free()")
        #expect(map.span(containing: moved) == nil && h.pageHeap.pointee.stats.directBytes == 0)
        #expect(h.pageHeap.looksLikeFreedObject(moved), "a second free is a double free")
        #expect(!h.pageHeap.looksLikeFreedObject(moved + pageSize))
        // A direct span aligned beyond the page is aligned.
        let aligned = try #require(h.pageHeap.allocDirectSpan(bytes: directThreshold, alignment: 16 << 20))
        #expect(aligned.pointee.base % (16 << 20) == 0)
        h.pageHeap.freeLarge(aligned, address: aligned.pointee.base, call: "free()")
    }

    @Test func aPageAlignedAddressInsideALiveLargeObjectIsNotAFreedObject() throws {
        let h = PrivateHeap()
        let p = try #require(h.pageHeap.allocateLarge(1 << 20, alignment: pageSize, zeroed: false))
        let interior = UInt(bitPattern: p) + 8 * pageSize
        #expect(h.pageHeap.pointee.spanMap.span(containing: interior) == nil)
        #expect(!h.pageHeap.looksLikeFreedObject(interior))
        let span = try #require(h.pageHeap.pointee.spanMap.span(containing: UInt(bitPattern: p)))
        h.pageHeap.freeLarge(span, address: UInt(bitPattern: p), call: "free()")
        #expect(h.pageHeap.looksLikeFreedObject(UInt(bitPattern: p)))
        #expect(h.pageHeap.looksLikeFreedObject(interior))
    }

    /// The heap grows upward from its first region, so that first fit (lowest address
    /// first) reuses old memory before new; and a run of free pages is taken from resident
    /// ones before released ones, given that the scavenger releases from the top.
    @Test func theHeapGrowsUpwardAndFirstFitReusesResidentPagesFirst() throws {
        let h = PrivateHeap()
        let (a, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 256, state: .large) })  // 2 MiB of the first 4 MiB
        let (b, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 600, state: .large) })  // the next region
        let first = h.pageHeap.pointee.pages.pointee.inUse[0]
        #expect(first.base == a.pointee.base)
        #expect(b.pointee.base > a.pointee.base, "the second region lies above the first")
        #expect(h.pageHeap.pointee.pages.pointee.inUse.count == 1, "right above it: one range")
        for span in [a, b] {
            UnsafeMutableRawPointer(bitPattern: span.pointee.base)!.initializeMemory(as: UInt8.self, repeating: 1, count: Int(span.pointee.pages * pageSize))
        }
        h.locked {
            h.pageHeap.freeSpanLocked(b)
            h.pageHeap.freeSpanLocked(a)
            // The scavenger releases from the top: b's run (600 pages, released whole).
            _ = h.pageHeap.pointee.pages.pointee.scavengeStartGen()
            #expect(PageAlloc.scavenge(h.pageHeap.pointee.pages, 4 << 20, mayUnlock: false) == 600 * pageSize)
        }
        // 256 pages: first fit takes a's resident pages again, none of them released.
        let (again, scavenged) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 256, state: .large) })
        #expect(again.pointee.base == a.pointee.base && scavenged == 0)
        h.locked { h.pageHeap.freeSpanLocked(again) }
    }

    /// The heap's first region (4 MiB, one chunk) as one span, written and freed: 4 MiB
    /// free and retained. Returns the span (free now) for its base.
    private func writtenAndFreedRegion(_ h: PrivateHeap) throws -> UnsafeMutablePointer<Span> {
        let (a, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 512, state: .large) })
        UnsafeMutableRawPointer(bitPattern: a.pointee.base)!.initializeMemory(as: UInt8.self, repeating: 1, count: Int(512 * pageSize))
        h.locked { h.pageHeap.freeSpanLocked(a) }
        #expect(h.pageHeap.pointee.pages.pointee.scavengedBytes == 0)
        return a
    }

    /// Go's mheap.grow: a heap that grows while it retains more than the goal releases as
    /// much as it grew, from its free pages (not the new ones).
    @Test func growingAboveTheGoalReleasesAsMuchAsItGrew() throws {
        let h = PrivateHeap()
        let pages = h.pageHeap.pointee.pages
        _ = try writtenAndFreedRegion(h)
        // A goal of 2 MiB; spareTickPeriods + 1 scavenger tick periods later (a's chunk is
        // no longer spared: PageAllocScavenge.swift), a span of 600 pages grows the heap by
        // 8 MiB: 2 MiB of the free, resident pages go (the excess; a whole huge page), not 8.
        h.events.pointee.retainedGoal = 2 << 20
        h.locked { pages.pointee.allocStamp += spareTickPeriods + 1 }
        let (b, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 600, state: .large) })
        #expect(h.pageHeap.pointee.stats.releasedOnGrowthBytes == 2 << 20)
        // With no goal yet (0), growth releases nothing.
        h.events.pointee.retainedGoal = 0
        let (c, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 5000, state: .large) })
        #expect(h.pageHeap.pointee.stats.releasedOnGrowthBytes == 2 << 20)
        h.locked { for span in [b, c] { h.pageHeap.freeSpanLocked(span) } }
    }

    /// Growth spares the chunks allocated from within the last spareTickPeriods tick
    /// periods: a heap whose live bytes swing grows when its free pages are too
    /// scattered, and its next allocations land in them again.
    @Test func growingSparesTheChunksAllocatedFromLately() throws {
        let h = PrivateHeap()
        let pages = h.pageHeap.pointee.pages
        let a = try writtenAndFreedRegion(h)
        h.events.pointee.retainedGoal = 2 << 20
        // spareTickPeriods tick periods later: a's chunk is spared still.
        h.locked { pages.pointee.allocStamp += spareTickPeriods }
        let (b, scavenged) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 600, state: .large) })
        #expect(h.pageHeap.pointee.stats.releasedOnGrowthBytes == 0)
        #expect(h.locked { pages.pointee.scav.sparedChunks } >= 1)
        // Its free pages stayed resident: the span (the region grew right above a's) takes
        // them with no fault; only its pages in the new region are fresh.
        #expect(b.pointee.base == a.pointee.base && scavenged == (600 - 512) * pageSize)
        h.locked { h.pageHeap.freeSpanLocked(b) }
    }

    /// A heap that shrinks (pages freed less pages taken) by the shrink threshold makes an
    /// epoch due, even below the threshold of pages freed; one that churns does not.
    @Test func shrinkingMakesAnEpochDueAndChurningDoesNot() throws {
        let h = PrivateHeap()
        h.events.pointee.epochThreshold = 1 << 30
        h.events.pointee.shrinkThreshold = 100 * pageSize
        for _ in 0..<20 {  // churn: 1200 pages freed, none net
            let (span, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 60, state: .large) })
            h.locked { h.pageHeap.freeSpanLocked(span) }
        }
        #expect(h.events.pointee.freedSinceEpoch == 1200 * pageSize && h.events.pointee.netFreedSinceEpoch == 0)
        #expect(h.events.pointee.epochDue == 0)
        let (big, _) = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 120, state: .large) })
        h.events.pointee.netFreedSinceEpoch = 0  // as the scavenger resets it at an epoch
        h.locked { h.pageHeap.shrinkSpanLocked(big, keepPages: 20) }
        #expect(h.events.pointee.netFreedSinceEpoch == 100 * Int(pageSize) && h.events.pointee.epochDue == epochDueByShrinking)
        h.locked { h.pageHeap.freeSpanLocked(big) }
    }

    /// What a program with no scavenger thread frees (PageHeap.swift: Releasing at free):
    /// one of a run of frees of marked large objects goes back to the OS at once, with the
    /// one before it; frees that alternate with allocations do not; nor do frees while a
    /// scavenger thread runs (mayRelease false). A free that leaves less than a quarter of
    /// the heap in spans goes back alone. After a release the threshold is twice the
    /// largest large object allocated, so that the next such object is not marked.
    struct ReleaseAtFree: CustomTestStringConvertible, Sendable {
        let name: String
        /// "a": allocate a 1 MiB object; "f": free the oldest live one; "s": a small span of
        /// 1 MiB (first fit: on the pages the last free left).
        let calls: String
        let mayRelease: Bool
        /// With a 4 MiB small span held all along (the frees never leave most of the heap).
        let keeper: Bool
        let releasedMiB: UInt
        var testDescription: String { name }
    }

    @Test(arguments: [
        ReleaseAtFree(name: "a burst of frees", calls: "aaaaffff", mayRelease: true, keeper: true, releasedMiB: 4),
        // A's free waits for the next call, an allocation: A stays; C's free follows B's: both go.
        ReleaseAtFree(name: "frees between allocations", calls: "aaaafaff", mayRelease: true, keeper: true,
                      releasedMiB: 2),
        ReleaseAtFree(name: "a scavenger thread runs", calls: "aaaaffff", mayRelease: false, keeper: true, releasedMiB: 0),
        ReleaseAtFree(name: "most of the heap", calls: "af", mayRelease: true, keeper: false, releasedMiB: 1),
        // A's pages, pending, go to a small span before B's free: only B's are released.
        ReleaseAtFree(name: "a pending object's pages reused", calls: "aaafsf", mayRelease: true, keeper: true,
                      releasedMiB: 1),
    ])
    func largeObjectsFreedInARowGoBackAtOnce(_ c: ReleaseAtFree) throws {
        let h = PrivateHeap()
        let keeper = c.keeper ? try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 512, state: .small) }).span : nil
        var live: [UnsafeMutablePointer<Span>] = []
        var small: [UnsafeMutablePointer<Span>] = []
        var lastFreed: UInt = 0
        let released = { h.pageHeap.pointee.pages.pointee.releasedBytes >> 20 }
        for call in c.calls {
            if call == "s" {
                let span = try #require(h.locked { h.pageHeap.allocSpanLocked(pageCount: 128, state: .small) }).span
                #expect(span.pointee.base == lastFreed, "the small span takes the pages just freed")
                small.append(span)
            } else if call == "a" {
                let memory = try #require(h.pageHeap.allocateLarge(1 << 20, alignment: pageSize, zeroed: false))
                let span = try #require(h.pageHeap.pointee.spanMap.span(containing: UInt(bitPattern: memory)))
                #expect(span.pointee.releaseOnFree == (released() == 0), "marked until a release raises the threshold")
                live.append(span)
            } else {
                let span = live.removeFirst()
                lastFreed = span.pointee.base
                h.pageHeap.freeLarge(span, address: span.pointee.base, call: "free()", mayRelease: c.mayRelease)
            }
        }
        #expect(released() == c.releasedMiB)
        if c.releasedMiB > 0 { #expect(h.pageHeap.pointee.releaseAtFreeBytes == 2 << 20) }
        for span in live { h.pageHeap.freeLarge(span, address: span.pointee.base, call: "free()") }
        for span in small + (keeper.map { [$0] } ?? []) { h.locked { h.pageHeap.freeSpanLocked(span) } }
    }
}
