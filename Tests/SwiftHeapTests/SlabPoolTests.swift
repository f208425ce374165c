import Testing
@testable import SwiftHeap

/// The span records' pool: records come zeroed from 64 KiB slabs, and the memory of slabs
/// whose records are all free goes back to the OS, but for one kept for reuse.
@Suite struct SlabPoolTests {
    @Test func aBurstOfRecordsGivesItsSlabsBack() throws {
        let pool = UnsafeMutablePointer<SlabPool>.allocate(capacity: 1)
        defer { pool.deallocate() }
        pool.initialize(to: SlabPool(recordBytes: 150))
        #expect(pool.pointee.recordBytes == 192)
        let perSlab = Int(pool.pointee.recordsPerSlab)
        #expect(perSlab == 340)
        var records: [UnsafeMutableRawPointer] = []
        for i in 0..<(perSlab * 5) {
            let r = try #require(pool.alloc())
            #expect(r.load(as: UInt.self) == 0, "zeroed")
            r.storeBytes(of: UInt(i) | 1, as: UInt.self)
            records.append(r)
        }
        #expect(Set(records).count == perSlab * 5)
        #expect(pool.pointee.slabCount == 5 && pool.pointee.residentBytes == 5 * slabBytes && pool.pointee.inUse == UInt(perSlab * 5))
        for r in records { pool.free(r) }
        #expect(pool.pointee.inUse == 0)
        #expect(pool.pointee.residentBytes == slabBytes, "four slabs released, one kept")
        #expect(pool.pointee.emptySlabs == 1)
        // Taking records again reuses the kept slab, then the released ones (no new slab).
        var again: [UnsafeMutableRawPointer] = []
        for _ in 0..<(perSlab * 2) {
            let r = try #require(pool.alloc())
            #expect(r.load(as: UInt.self) == 0, "zeroed, also from a released slab")
            again.append(r)
        }
        #expect(pool.pointee.slabCount == 5 && pool.pointee.residentBytes == 2 * slabBytes)
        for r in again { pool.free(r) }
        #expect(pool.pointee.residentBytes == slabBytes)
    }

    @Test func aPoolChurningAroundOneSlabKeepsIt() throws {
        let pool = UnsafeMutablePointer<SlabPool>.allocate(capacity: 1)
        defer { pool.deallocate() }
        pool.initialize(to: SlabPool(recordBytes: 192))
        for _ in 0..<1000 {
            let r = try #require(pool.alloc())
            pool.free(r)
        }
        #expect(pool.pointee.slabCount == 1 && pool.pointee.residentBytes == slabBytes)
    }
}
