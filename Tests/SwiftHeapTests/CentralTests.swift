import Testing
@testable import SwiftHeap

/// Central lists on a private page heap: refill takes objects out of span bitmaps,
/// release puts them back, an emptied span goes back to the page heap, and the counters
/// say exactly that.
@Suite struct CentralTests {
    @Test func recordsFillWholeCacheLines() {
        #expect(MemoryLayout<Central>.stride == 64)
    }

    @Test func refillAndReleaseRoundTrip() {
        let h = PrivateHeap()
        let (cls, central) = h.central(forSize: 4000)
        let info = h.classes.info[cls]
        let spanBytes = UInt(info.pages) * pageSize
        let want = Int(info.objects) * 3 + 1  // crosses four spans
        var slots = [UInt](repeating: 0, count: want)
        let owner = UnsafeMutableRawPointer(bitPattern: 0x10)!
        let got = slots.withUnsafeMutableBufferPointer { central.refill(into: $0.baseAddress!, want: want, owner: owner) }
        #expect(got == want)
        #expect(Set(slots).count == want, "no object handed out twice")
        #expect(central.pointee.spanCount == 4 && central.pointee.allocatedObjects == UInt(want))
        #expect(h.pageHeap.pointee.stats.spanBytes == 4 * spanBytes)
        let map = h.pageHeap.pointee.spanMap
        for address in slots {
            let span = map.span(containing: address)
            #expect(span != nil && span!.pointee.sizeClass == UInt32(cls) && span!.pointee.owner == owner)
            #expect((address - span!.pointee.base) % UInt(info.size) == 0)
            UnsafeMutableRawPointer(bitPattern: address)!.storeBytes(of: address, as: UInt.self)
        }
        // Give back all but the last object: three spans empty and go back to the page heap.
        let firstSpanBase = map.span(containing: slots[0])!.pointee.base
        slots.withUnsafeMutableBufferPointer { central.release($0.baseAddress!, count: want - 1) }
        #expect(central.pointee.spanCount == 1 && central.pointee.allocatedObjects == 1)
        #expect(map.span(containing: firstSpanBase) == nil)
        #expect(h.pageHeap.pointee.stats.spanBytes == spanBytes)
        #expect(h.events.pointee.freedSinceEpoch == 3 * spanBytes)
        // The last span is on the partial list with every object but one free: the next
        // refill takes from it before making a new span.
        var more = [UInt](repeating: 0, count: 2)
        #expect(more.withUnsafeMutableBufferPointer { central.refill(into: $0.baseAddress!, want: 2, owner: owner) } == 2)
        #expect(central.pointee.spanCount == 1 && map.span(containing: more[0]) == map.span(containing: slots[want - 1]))
        more.append(slots[want - 1])
        more.withUnsafeMutableBufferPointer { central.release($0.baseAddress!, count: 3) }
        #expect(central.pointee.spanCount == 0 && central.pointee.allocatedObjects == 0)
        #expect(h.pageHeap.pointee.stats.spanBytes == 0)
    }
}
