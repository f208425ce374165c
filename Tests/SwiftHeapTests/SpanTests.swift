import Testing
@testable import SwiftHeap

@Suite struct SpanTests {
    /// A release or a refill reads base, reciprocal, objectCount, sizeClass, objectSize,
    /// the allocated count with the partial-list flag and words of freeBits, and free's
    /// fast path a word of freeBits (the rest from the span map's entry, which copies
    /// base, owner, binOffset and reciprocal): on a 64-byte-aligned record (SlabPool), the
    /// fields and the words for objects 0..<256 share the first cache line.
    @Test func freeReleaseAndRefillFieldsShareTheRecordsFirstCacheLine() {
        let hot: [Int?] = [MemoryLayout<Span>.offset(of: \.base), MemoryLayout<Span>.offset(of: \.owner),
                           MemoryLayout<Span>.offset(of: \.sizeClass), MemoryLayout<Span>.offset(of: \.binOffset),
                           MemoryLayout<Span>.offset(of: \.objectSizeBits), MemoryLayout<Span>.offset(of: \.reciprocal),
                           MemoryLayout<Span>.offset(of: \.objectCount), MemoryLayout<Span>.offset(of: \.countAndListed)]
        #expect(hot.allSatisfy { $0 != nil && $0! < 32 })
        #expect(MemoryLayout<Span>.offset(of: \.freeBits)! == 32)
        #expect(MemoryLayout<Span>.offset(of: \.freeBits)! + Int(hotBitmapObjects / 8) == 64)
        let pool = SlabPool(recordBytes: UInt(MemoryLayout<Span>.stride))
        #expect(pool.recordBytes % 64 == 0)
    }

    /// The allocated count and the partial-list flag share a 16-bit field: each keeps
    /// its value while the other changes, over the whole range of counts.
    @Test func allocatedCountAndPartialListFlagAreIndependent() {
        var span = Span()
        for listed in [false, true] {
            span.onPartialList = listed
            for count in [0, 1, 255, 256, Int(maxObjectsPerSpan) - 1, Int(maxObjectsPerSpan), 0x7FFF] {
                span.allocatedCount = UInt32(count)
                #expect(span.onPartialList == listed)
                span.onPartialList = !listed
                #expect(span.allocatedCount == UInt32(count))
                span.onPartialList = listed
                #expect(span.allocatedCount == UInt32(count) && span.onPartialList == listed)
            }
        }
        for listed in [false, true] {  // the release's and the refill's counting
            span.allocatedCount = 0
            span.onPartialList = listed
            span.countAllocated(UInt16(maxObjectsPerSpan))
            #expect(span.allocatedCount == UInt32(maxObjectsPerSpan) && span.onPartialList == listed)
            for _ in 0..<maxObjectsPerSpan { span.countFreed(1) }
            #expect(span.allocatedCount == 0 && span.onPartialList == listed)
        }
        span.objectSize = UInt32(maxSmallSize)
        #expect(span.objectSize == UInt32(maxSmallSize))
    }

    /// free's fast test (objectStart: the low half of one multiply, then the object's
    /// free bit) agrees with the exact one (isObjectStart) on every byte of every
    /// class's span and of its tail, with every object allocated: no valid pointer is
    /// sent to the slow path's diagnosis, objects get their exact index, and every tail
    /// address either fails the multiply test or lands on one of the tail's sentinel
    /// bits, inside the bitmap.
    @Test func fastObjectStartTestAgreesWithTheExactOneForEveryClassAndOffset() {
        let table = SizeClassTable.make()!
        let span = UnsafeMutablePointer<Span>.allocate(capacity: 1)
        defer { span.deallocate() }
        var mismatches = 0, wrongIndex = 0, outsideBitmap = 0, sentinelHits = 0
        for cls in 1..<table.count {
            let info = table.info[cls]
            span.initialize(to: Span())
            span.initializeSmall(sizeClass: UInt32(cls), info: info)
            span.pointee.base = 0x7000_0000_0000
            span.pointee.pages = UInt(info.pages)
            for word in 0..<spanBitmapWords { span.freeWords[word] &= ~span.objectBits(ofWord: word) }
            let bytes = UInt(info.pages) << pageShift
            let objectBytes = UInt(info.objects) * UInt(info.size)
            var offset: UInt = 0
            while offset < bytes {
                let address = span.pointee.base + offset
                let (index, isStart) = span.objectStart(of: address)
                let exactIndex = span.objectIndex(of: address)
                let exact = span.isObjectStart(address, index: exactIndex)
                var accepted = isStart
                if isStart {
                    if index >= maxObjectsPerSpan {
                        outsideBitmap += 1
                    } else if span.isFree(index) {
                        accepted = false
                        sentinelHits += 1
                    }
                }
                if accepted != exact { mismatches += 1 }
                if offset < objectBytes && index != exactIndex { wrongIndex += 1 }
                offset += 1
            }
        }
        #expect(mismatches == 0)
        #expect(wrongIndex == 0)
        #expect(outsideBitmap == 0)
        #expect(sentinelHits > 0, "some tail address passes the multiply test: the sentinels are what reject it")
        // The first tail address of a class whose tail is a multiple of 16 (as
        // Tests/misuse's free-span-tail frees it): its index is objectCount, a sentinel.
        span.initialize(to: Span())
        let cls = table.sizeClass(of: 48)
        span.initializeSmall(sizeClass: UInt32(cls), info: table.info[cls])
        span.pointee.base = 0x7000_0000_0000
        let tail = span.pointee.base + UInt(table.info[cls].objects) * 48
        let (index, _) = span.objectStart(of: tail)
        #expect(index == UInt(table.info[cls].objects) && span.isFree(index))
        #expect(!span.isObjectStart(tail, index: span.objectIndex(of: tail)))
    }

    /// A fresh span's bitmap holds its objects and the two sentinel bits after them
    /// (where they fit), and taking every object from it (Central.take) hands out each
    /// object once, never a sentinel, and leaves the sentinels set.
    @Test func takingEveryObjectLeavesTheTailSentinels() {
        let table = SizeClassTable.make()!
        let span = UnsafeMutablePointer<Span>.allocate(capacity: 1)
        defer { span.deallocate() }
        let slots = UnsafeMutablePointer<UInt>.allocate(capacity: Int(maxObjectsPerSpan) + 8)
        defer { slots.deallocate() }
        var central = Central(sizeClass: 0, info: table.info[0], pageHeap: UnsafeMutablePointer(bitPattern: 64)!, keptEmptyBytes: 0)
        var wrong: [Int] = []
        for cls in 1..<table.count {
            let info = table.info[cls]
            span.initialize(to: Span())
            span.initializeSmall(sizeClass: UInt32(cls), info: info)
            span.pointee.base = 0x7000_0000_0000
            let sentinels = min(UInt(info.objects) + Span.tailSentinels, maxObjectsPerSpan) - UInt(info.objects)
            var bits: UInt = 0
            for word in 0..<spanBitmapWords { bits += UInt(span.freeWords[word].nonzeroBitCount) }
            let got = withUnsafeMutablePointer(to: &central) {
                $0.take(from: span, into: slots, already: 0, want: Int(maxObjectsPerSpan) + 8)
            }
            var left: UInt = 0
            for word in 0..<spanBitmapWords { left += UInt(span.freeWords[word].nonzeroBitCount) }
            var distinct = Set<UInt>()
            for i in 0..<got { distinct.insert(slots[i]) }
            let inObjects = (0..<got).allSatisfy {
                slots[$0] >= span.pointee.base && slots[$0] < span.pointee.base + UInt(info.objects) * UInt(info.size)
            }
            if bits != UInt(info.objects) + sentinels || got != Int(info.objects) || distinct.count != got
                || !inObjects || left != sentinels || span.pointee.allocatedCount != info.objects {
                wrong.append(cls)
            }
        }
        #expect(wrong.isEmpty, "classes \(wrong)")
    }

    /// A small span's binOffset finds its class's bin and remote bin in a thread cache,
    /// for every class (free's fast path reads it instead of scaling the class); the
    /// size-class table's offset for every small size agrees with the size's class.
    @Test func binOffsetsFindEveryClasssBinsFromTheSpanAndTheSizeTable() {
        let table = SizeClassTable.make()!
        let span = UnsafeMutablePointer<Span>.allocate(capacity: 1)
        defer { span.deallocate() }
        let cache = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<ThreadCache>.stride, alignment: 64)
            .assumingMemoryBound(to: ThreadCache.self)
        defer { cache.deallocate() }
        // The size-class layer's unit is the thread cache's bin: class n's bin is the n-th.
        #expect(MemoryLayout<CacheBin>.stride == cacheBinStride)
        let bins = UnsafeMutableRawPointer(cache).assumingMemoryBound(to: CacheBin.self)
        var wrong = 0
        for cls in 1..<table.count {
            if cache.bin(cls) != bins + cls { wrong += 1 }
            span.initialize(to: Span())
            span.initializeSmall(sizeClass: UInt32(cls), info: table.info[cls])
            if Int(span.pointee.sizeClass) != cls { wrong += 1 }
            span.pointee.owner = UnsafeMutableRawPointer(cache)
            if cache.freeBin(span) != cache.bin(cls) { wrong += 1 }
            span.pointee.owner = nil
            if cache.freeBin(span) != cache.remoteBin(cls) { wrong += 1 }
        }
        #expect(wrong == 0)
        #expect(cache.remoteBin(table.count - 1) < UnsafeMutableRawPointer(cache.header).assumingMemoryBound(to: CacheBin.self))
        var size: UInt = 0
        var mismatched = 0
        while size <= maxSmallSize {
            let cls = table.sizeClass(of: size)
            if cache.bin(atOffset: table.binOffset(of: size)) != cache.bin(cls) || UInt(table.info[cls].size) < size
                || (cls > 1 && UInt(table.info[cls - 1].size) >= size) { mismatched += 1 }
            size += 1
        }
        #expect(mismatched == 0)
    }

    /// setAllFree sets the bits of the objects and of the two tail sentinels after them
    /// (those inside the bitmap), and objectBits tells the two apart.
    @Test func setAllFreeMarksTheObjectsAndTheTailSentinels() {
        for count: UInt32 in [1, 8, 62, 63, 64, 65, 100, 510, 511, 512] {
            let span = UnsafeMutablePointer<Span>.allocate(capacity: 1)
            defer { span.deallocate() }
            span.initialize(to: Span())
            span.pointee.objectCount = count
            span.setAllFree()
            var objects = 0, sentinels = 0, misplaced = 0
            for i in 0..<Int(maxObjectsPerSpan) {
                let set = span.freeWords[i >> 6] & (1 << UInt64(i & 63)) != 0
                let isObject = span.objectBits(ofWord: i >> 6) & (1 << UInt64(i & 63)) != 0
                if isObject != (i < Int(count)) { misplaced += 1 }
                if set && isObject { objects += 1 }
                if set && !isObject { sentinels += 1 }
                if set != (i < Int(count) + Int(Span.tailSentinels)) { misplaced += 1 }
            }
            #expect(objects == Int(count))
            #expect(sentinels == min(Int(count) + 2, 512) - Int(count))
            #expect(misplaced == 0)
        }
    }

    @Test func objectIndexFindsTheContainingObject() {
        let table = SizeClassTable.make()!
        let span = UnsafeMutablePointer<Span>.allocate(capacity: 1)
        defer { span.deallocate() }
        span.initialize(to: Span())
        let info = table.info[table.sizeClass(of: 48)]
        span.pointee.base = 0x7000_0000_0000
        span.pointee.objectSize = info.size
        span.pointee.reciprocal = info.reciprocal
        #expect(span.objectIndex(of: 0x7000_0000_0000) == 0)
        #expect(span.objectIndex(of: 0x7000_0000_0000 + 47) == 0)
        #expect(span.objectIndex(of: 0x7000_0000_0000 + 48) == 1)
        #expect(span.objectIndex(of: 0x7000_0000_0000 + 48 * 100 + 5) == 100)
    }

    /// Runs `body` with a new span map and the base of 64 MiB of address space mapped for
    /// it (unmapped after); `body` makes the slots' tables (ensureSlots).
    private func withSpanMapAndRegion(_ body: (SpanMap, UInt, UInt) -> Void) {
        let map = SpanMap.make()!
        let bytes = 64 << 20 as UInt
        let base = osMapMemoryAligned(bytes, alignment: chunkBytes)
        #expect(base != 0)
        defer { osUnmap(base, bytes); map.destroy() }
        body(map, base, bytes)
    }

    @Test func spanMapPointsEveryPageOfASpanAndClearsThem() { withSpanMapAndRegion { map, base, bytes in
        #expect(map.span(containing: base) == nil, "a slot without a table maps nothing")
        #expect(map.ensureSlots(base: base, bytes: bytes))
        let span = UnsafeMutablePointer<Span>.allocate(capacity: 1)
        defer { span.deallocate() }
        span.initialize(to: Span())
        let spanBase = base + 10 * pageSize
        map.set(base: spanBase, pages: 3, to: span)
        #expect(map.span(containing: spanBase) == span)
        #expect(map.span(containing: spanBase + 3 * pageSize - 1) == span)
        #expect(map.span(containing: spanBase - 1) == nil)
        #expect(map.span(containing: spanBase + 3 * pageSize) == nil)
        #expect(map.span(containing: 0x10) == nil, "an address outside every slot has no span")
        #expect(map.span(containing: UInt.max) == nil, "an address beyond 48 bits has no span")
        map.set(base: spanBase, pages: 3, to: nil)
        #expect(map.span(containing: spanBase + pageSize) == nil)
    } }

    /// free's fast path reads a small span's base, reciprocal, binOffset and owner from the
    /// page's entry (SpanMapEntry): publishSmall copies them into every page's entry,
    /// publishOwner follows the owner, and set, which points pages at a span or clears
    /// them, leaves no copies (a large span's entry, or a freed page's, is never an object
    /// start).
    @Test func spanMapEntriesCarryASmallSpansFieldsUntilTheyAreCleared() { withSpanMapAndRegion { map, base, bytes in
        #expect(map.ensureSlots(base: base, bytes: bytes))
        let classes = SizeClassTable.make()!
        let cls = Int(classes.sizeClass(of: 48))
        let info = classes.info[cls]
        let span = UnsafeMutablePointer<Span>.allocate(capacity: 1)
        defer { span.deallocate() }
        span.initialize(to: Span())
        span.pointee.base = base + 20 * pageSize
        span.pointee.pages = UInt(info.pages)
        map.set(base: span.pointee.base, pages: span.pointee.pages, to: span)
        span.initializeSmall(sizeClass: UInt32(cls), info: info)
        let pages = (0..<Int(span.pointee.pages)).map { map.entry(containingMapped: span.pointee.base + UInt($0) * pageSize)! }
        #expect(pages.allSatisfy { $0.pointee.span == span && $0.pointee.reciprocal == 0 }, "no copies before publishSmall")
        let owner = UnsafeMutableRawPointer(bitPattern: 0x40)!
        span.pointee.owner = owner
        map.publishSmall(span)
        for entry in pages {
            #expect(entry.pointee.base == span.pointee.base && entry.pointee.reciprocal == info.reciprocal)
            #expect(entry.pointee.binOffset == span.pointee.binOffset && entry.pointee.owner == owner)
        }
        let last = span.pointee.base + UInt(info.objects - 1) * UInt(info.size)
        let (index, isStart) = map.entry(containingMapped: last)!.objectStart(of: last)
        #expect(index == UInt(info.objects - 1) && isStart)
        #expect(!map.entry(containingMapped: last + 16)!.objectStart(of: last + 16).isStart)
        span.pointee.owner = nil
        map.publishOwner(span)
        #expect(pages.allSatisfy { $0.pointee.owner == nil && $0.pointee.reciprocal == info.reciprocal })
        map.set(base: span.pointee.base, pages: span.pointee.pages, to: nil)
        #expect(pages.allSatisfy { $0.pointee.span == nil && $0.pointee.reciprocal == 0 && $0.pointee.base == 0 })
        #expect(!map.entry(containingMapped: span.pointee.base)!.objectStart(of: span.pointee.base).isStart)
    } }
}
