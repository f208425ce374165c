import Testing
@testable import SwiftHeap

/// The page heap: spans from the page allocator, the span map, growth, in-place resizing.
@Suite(.serialized) struct HeapTests {
    init() { #expect(ensureHeapInitialized()) }

    @Test(arguments: [1, 2, 7, 512, 513, 9000] as [UInt])
    func allocSpanMapsItsPagesAndFreeUnmapsThem(pages: UInt) throws {
        let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: pages) })
        let base = span.pointee.base
        #expect(base % pageSize == 0)
        #expect(span.pointee.pages == pages)
        #expect(heap.pointee.spanMap.span(containing: base) == span)
        #expect(heap.pointee.spanMap.span(containing: base + pages * pageSize - 1) == span)
        // The memory is really ours: write its first and last bytes.
        UnsafeMutablePointer<UInt8>(bitPattern: base)!.pointee = 1
        UnsafeMutablePointer<UInt8>(bitPattern: base + pages * pageSize - 1)!.pointee = 1
        withHeapLock { freeSpanLocked(span) }
        #expect(heap.pointee.spanMap.span(containing: base) == nil)
    }

    @Test(arguments: [2 * pageSize, 64 << 10, 1 << 20, 4 << 20] as [UInt])
    func alignedSpansAreAligned(alignment: UInt) throws {
        let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: 3, alignment: alignment) })
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
            return allocSpanLocked(pageCount: 300)
        })
        #expect(scavenged == 300 * pageSize)
        withHeapLock { freeSpanLocked(span) }
    }

    /// calloc's zeroing of a large span does not trust released pages: bytes written into
    /// them after the release (a use-after-free) are gone, by either of its two ways.
    @Test func zeroLargeClearsWhatWasWrittenAfterARelease() throws {
        for scavengedShare: UInt in [0, 1, 2] {  // none, half, all of the span reported released
            let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: 4) })
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
        #expect(withHeapLock { allocSpanLocked(pageCount: UInt.max / pageSize) } == nil)
        #expect(withHeapLock { allocSpanLocked(pageCount: 1 << 40) } == nil)
        #expect(heap.pointee.stats.mappedBytes == mapped)
    }

    @Test func growInPlaceTakesTheFreePagesThatFollow() throws {
        // Within one lock hold: shrink a span, then grow it back into the pages it gave up.
        let (grown, blocked) = withHeapLock { () -> (Bool, Bool) in
            guard let (span, _) = allocSpanLocked(pageCount: 40) else { return (false, true) }
            shrinkSpanLocked(span, keepPages: 30)
            let grown = growSpanInPlaceLocked(span, extraPages: 10) && span.pointee.pages == 40
                && heap.pointee.spanMap.span(containing: span.pointee.base + 39 * pageSize) == span
            // A span right after it blocks growth.
            let neighbour = allocSpanLocked(pageCount: 1, alignment: pageSize)
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
        let (span, _) = try #require(withHeapLock { allocSpanLocked(pageCount: 10) })
        let base = span.pointee.base
        withHeapLock { shrinkSpanLocked(span, keepPages: 4) }
        #expect(span.pointee.pages == 4)
        #expect(heap.pointee.spanMap.span(containing: base + 3 * pageSize) == span)
        #expect(heap.pointee.spanMap.span(containing: base + 4 * pageSize) == nil)
        withHeapLock { freeSpanLocked(span) }
    }
}
