import Testing
@testable import SwiftHeap

/// Central lists: refill takes objects out of span bitmaps, release puts them back,
/// and an emptied span goes back to the page heap.
@Suite(.serialized) struct CentralTests {
    init() { #expect(ensureHeapInitialized()) }

    @Test func recordsFillWholeCacheLines() {
        #expect(MemoryLayout<Central>.stride == 64)
    }

    @Test func refillAndReleaseRoundTrip() {
        let cls = heap.pointee.classes.sizeClass(of: 4000)
        let info = heap.pointee.classes.info[cls]
        let central = heap.pointee.centrals + cls
        let want = Int(info.objects) * 3 + 1  // crosses several spans
        var slots = [UInt](repeating: 0, count: want)
        let got = slots.withUnsafeMutableBufferPointer { central.refill(into: $0.baseAddress!, want: want, owner: UnsafeMutableRawPointer(bitPattern: 0x10)!) }
        #expect(got == want)
        #expect(Set(slots).count == want, "no object handed out twice")
        for address in slots {
            let span = heap.pointee.spanMap.span(containing: address)
            #expect(span != nil && span!.pointee.sizeClass == UInt32(cls))
            #expect((address - span!.pointee.base) % UInt(info.size) == 0)
            UnsafeMutableRawPointer(bitPattern: address)!.storeBytes(of: address, as: UInt.self)
        }
        let firstSpanBase = heap.pointee.spanMap.span(containing: slots[0])!.pointee.base
        slots.withUnsafeMutableBufferPointer { central.release($0.baseAddress!, count: want) }
        // The first span was full and is now entirely free: it went back to the page heap,
        // unless other tests share the class; at least its span record no longer counts objects.
        if let span = heap.pointee.spanMap.span(containing: firstSpanBase) {
            #expect(span.pointee.allocatedCount < span.pointee.objectCount)
        }
    }
}
