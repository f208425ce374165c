import Testing
@testable import SwiftHeap

/// The page heap: spans from the page allocator, the span map, growth, in-place resizing.
@Suite(.serialized) struct HeapTests {
    init() { #expect(ensureHeapInitialized()) }

    @Test(arguments: [1, 2, 7, 512, 513, 9000] as [UInt])
    func allocSpanMapsItsPagesAndFreeUnmapsThem(pages: UInt) throws {
        // A small span maps every page (a free finds it from any object); a large span its
        // first page only (its metadata must not grow with its size).
        for state in [SpanState.small, .large] {
            let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: pages, state: state) })
            let base = span.pointee.base
            #expect(base % pageSize == 0)
            #expect(span.pointee.pages == pages)
            #expect(span.pointee.state == state)
            #expect(heap.pointee.spanMap.span(containing: base) == span)
            let last = heap.pointee.spanMap.span(containing: base + pages * pageSize - 1)
            #expect(pages == 1 || last == (state == .small ? span : nil), "\(state)")
            // The memory is really ours: write its first and last bytes.
            UnsafeMutablePointer<UInt8>(bitPattern: base)!.pointee = 1
            UnsafeMutablePointer<UInt8>(bitPattern: base + pages * pageSize - 1)!.pointee = 1
            withHeapLock { freeSpanLocked(span) }
            #expect(heap.pointee.spanMap.span(containing: base) == nil)
            #expect(heap.pointee.spanMap.span(containing: base + pages * pageSize - 1) == nil)
        }
    }

    @Test(arguments: [2 * pageSize, 64 << 10, 1 << 20, 4 << 20] as [UInt])
    func alignedSpansAreAligned(alignment: UInt) throws {
        let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: 3, alignment: alignment, state: .large) })
        #expect(span.pointee.base % alignment == 0)
        #expect(span.pointee.pages == 3)
        withHeapLock { freeSpanLocked(span) }
    }

    @Test func spansOfReleasedPagesReportEveryByteScavenged() throws {
        // With every free page released first (under the same lock hold, so nothing
        // dirty can be freed in between), any span is fresh or released memory.
        let (span, scavenged) = try #require(withHeapLock { () -> (UnsafeMutablePointer<Span>, UInt)? in
            _ = heap.pointee.pages.pointee.scavengeStartGen()
            _ = PageAlloc.scavenge(heap.pointee.pages, UInt.max, mayUnlock: false)
            return allocSpanLocked(pageCount: 300, state: .large)
        })
        #expect(scavenged == 300 * pageSize)
        withHeapLock { freeSpanLocked(span) }
    }

    /// calloc's zeroing of a large span does not trust released pages: bytes written into
    /// them after the release (a use-after-free) are gone, by either of its two ways.
    @Test func zeroLargeClearsWhatWasWrittenAfterARelease() throws {
        for scavengedShare: UInt in [0, 1, 2] {  // none, half, all of the span reported released
            let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: 4, state: .large) })
            let bytes = 4 * pageSize
            let memory = try #require(UnsafeMutableRawPointer(bitPattern: span.pointee.base))
            osRelease(span.pointee.base, bytes)
            memory.initializeMemory(as: UInt8.self, repeating: 0xA5, count: Int(bytes))
            zeroLarge(memory, bytes: bytes, scavengedBytes: bytes / 2 * scavengedShare)
            let view = UnsafeBufferPointer(start: memory.assumingMemoryBound(to: UInt8.self), count: Int(bytes))
            #expect(view.allSatisfy { $0 == 0 }, "scavenged share \(scavengedShare)/2")
            withHeapLock { freeSpanLocked(span) }
        }
    }

    @Test func impossibleSizesFailWithoutGrowing() {
        let mapped = heap.pointee.stats.mappedBytes
        #expect(withHeapLock { allocSpanLocked(pageCount: UInt.max / pageSize, state: .large) } == nil)
        #expect(withHeapLock { allocSpanLocked(pageCount: 1 << 40, state: .large) } == nil)
        #expect(heap.pointee.stats.mappedBytes == mapped)
    }

    @Test func growInPlaceTakesTheFreePagesThatFollow() throws {
        // Within one lock hold: shrink a span, then grow it back into the pages it gave up.
        let (grown, blocked) = withHeapLock { () -> (Bool, Bool) in
            guard let (span, _) = allocSpanLocked(pageCount: 40, state: .large) else { return (false, true) }
            let pages = heap.pointee.pages
            shrinkSpanLocked(span, keepPages: 30)
            let shrunk = pages.pointee.isFreePage(span.pointee.base + 30 * pageSize)
            let grown = growSpanInPlaceLocked(span, extraPages: 10) && span.pointee.pages == 40
                && !pages.pointee.isFreePage(span.pointee.base + 39 * pageSize) && shrunk
            // A span right after it blocks growth.
            let neighbour = allocSpanLocked(pageCount: 1, alignment: pageSize, state: .large)
            var blocked = true
            if let (next, _) = neighbour, next.pointee.base == span.pointee.limit {
                blocked = !growSpanInPlaceLocked(span, extraPages: 1)
            }
            if let (next, _) = neighbour { freeSpanLocked(next) }
            freeSpanLocked(span)
            return (grown, blocked)
        }
        #expect(grown)
        #expect(blocked)
    }

    @Test func shrinkGivesPagesBack() throws {
        let (kept, freed) = try withHeapLock { () -> (Bool, Bool) in
            let (span, _) = try #require(allocSpanLocked(pageCount: 10, state: .large))
            let base = span.pointee.base
            shrinkSpanLocked(span, keepPages: 4)
            let pages = heap.pointee.pages
            let result = (span.pointee.pages == 4 && !pages.pointee.isFreePage(base + 3 * pageSize),
                          pages.pointee.isFreePage(base + 4 * pageSize))
            freeSpanLocked(span)
            return result
        }
        #expect(kept)
        #expect(freed)
    }

    /// Objects of directThreshold or more are mapped on their own: their record maps one
    /// page, freeing unmaps them, and a free of the same address again is recognised.
    @Test func directSpansAreMappedOnTheirOwnAndRememberedWhenFreed() throws {
        let bytes = directThreshold + 3 * pageSize
        let span = try #require(allocDirectSpan(bytes: bytes, alignment: pageSize))
        let base = span.pointee.base
        #expect(span.pointee.direct && span.pointee.state == .large && span.pointee.pages == bytes / pageSize)
        #expect(heap.pointee.spanMap.span(containing: base) == span)
        #expect(heap.pointee.spanMap.span(containing: base + pageSize) == nil)
        #expect(!withHeapLock { heap.pointee.pages.pointee.isFreePage(base) }, "not page-heap memory")
        UnsafeMutablePointer<UInt8>(bitPattern: base + bytes - 1)!.pointee = 7
        // Grow it by remapping: the contents stay.
        let moved = try #require(resizeDirectSpan(span, bytes: 2 * bytes))
        #expect(UnsafeMutablePointer<UInt8>(bitPattern: moved + bytes - 1)!.pointee == 7)
        #expect(heap.pointee.spanMap.span(containing: moved) == span)
        #expect(moved == base || heap.pointee.spanMap.span(containing: base) == nil)
        let memory = withHeapLock { freeDirectSpanLocked(span) }
        #expect(memory.base == moved && memory.size == 2 * bytes)
        osUnmap(memory.base, memory.size)
        #expect(heap.pointee.spanMap.span(containing: moved) == nil)
        #expect(looksLikeFreedObject(moved), "a second free is a double free")
        #expect(!looksLikeFreedObject(moved + pageSize))
    }

    /// A direct span aligned beyond the page is aligned.
    @Test func directSpansHonourAlignment() throws {
        let span = try #require(allocDirectSpan(bytes: directThreshold, alignment: 16 << 20))
        #expect(span.pointee.base % (16 << 20) == 0)
        let memory = withHeapLock { freeDirectSpanLocked(span) }
        osUnmap(memory.base, memory.size)
    }
}
