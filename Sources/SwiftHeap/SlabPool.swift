// A pool of fixed-size records whose memory goes back to the OS when a burst of them is
// over (span records: a burst of hundreds of MiB makes tens of thousands of spans).
//
// Records are carved from slabs of slabBytes (64 KiB, aligned to their size, mapped on
// their own). A slab's first record slot holds its header: its free list (linked
// through the records' first word: this is the allocator's own memory, never the
// program's), how many of its records are free, and its links in the pool's list of slabs
// with free records. Freeing a record finds its slab by masking its address. A slab whose
// records are all free again is kept for reuse if it is the only such slab (hysteresis:
// a pool that churns around a slab boundary does not map and release it again and
// again); otherwise its pages after the first are released (MADV_DONTNEED) and the slab
// waits on the released list, rebuilt from scratch when it is taken again.
//
// Invariants: every slab is on exactly one of: the partial list (some record free, not
// released), the released list (every record free, pages after the first released), or
// no list (every record in use). emptySlabs counts partial-list slabs with every record
// free (at most one stays), residentBytes the memory of slabs that are not released.
//
// Not synchronised: the owner's lock guards it (the page heap's, for span records).

import CShim

/// Bytes of one slab.
let slabBytes: UInt = 64 << 10

/// A slab's header, in its first record slot.
struct SlabHeader {
    var freeList: UnsafeMutableRawPointer? = nil
    var freeCount: UInt = 0
    var next: UnsafeMutablePointer<SlabHeader>? = nil
    var previous: UnsafeMutablePointer<SlabHeader>? = nil
    var onPartialList: Bool = false
}

struct SlabPool {
    /// Bytes of a record (a multiple of 64: records fill whole cache lines).
    var recordBytes: UInt
    var partial: UnsafeMutablePointer<SlabHeader>? = nil
    var released: UnsafeMutablePointer<SlabHeader>? = nil
    /// Records handed out and not freed.
    var inUse: UInt = 0
    /// Partial-list slabs with every record free.
    var emptySlabs: UInt = 0
    /// Slabs mapped, and bytes of them resident by our count (not released).
    var slabCount: UInt = 0
    var residentBytes: UInt = 0

    init(recordBytes: UInt) {
        self.recordBytes = alignUp(max(recordBytes, UInt(MemoryLayout<SlabHeader>.stride)), 64)
    }

    /// Records per slab (the first slot is the header).
    var recordsPerSlab: UInt { slabBytes / recordBytes &- 1 }
}

extension UnsafeMutablePointer where Pointee == SlabPool {
    /// A zeroed record, or nil if the kernel refuses a new slab.
    func alloc() -> UnsafeMutableRawPointer? {
        if pointee.partial == nil && !takeReleasedSlab() && !mapSlab() { return nil }
        let slab = pointee.partial.unsafelyUnwrapped
        let record = slab.pointee.freeList.unsafelyUnwrapped
        slab.pointee.freeList = record.load(as: UnsafeMutableRawPointer?.self)
        if slab.pointee.freeCount == pointee.recordsPerSlab { pointee.emptySlabs &-= 1 }
        slab.pointee.freeCount &-= 1
        if slab.pointee.freeCount == 0 { unlink(slab, from: pointer(to: \.partial)!) }
        memset(record, 0, Int(bitPattern: pointee.recordBytes))
        pointee.inUse &+= 1
        return record
    }

    /// Returns a record to its slab (see the file comment for what happens to a slab
    /// that empties).
    func free(_ record: UnsafeMutableRawPointer) {
        let slab = UnsafeMutablePointer<SlabHeader>(bitPattern: alignDown(UInt(bitPattern: record), slabBytes)).unsafelyUnwrapped
        record.storeBytes(of: slab.pointee.freeList, as: UnsafeMutableRawPointer?.self)
        slab.pointee.freeList = record
        slab.pointee.freeCount &+= 1
        pointee.inUse &-= 1
        if !slab.pointee.onPartialList { push(slab, on: pointer(to: \.partial)!) }
        if slab.pointee.freeCount == pointee.recordsPerSlab {
            if pointee.emptySlabs == 0 {
                pointee.emptySlabs = 1
            } else {
                unlink(slab, from: pointer(to: \.partial)!)
                osRelease(UInt(bitPattern: slab) &+ osPageSize, slabBytes &- osPageSize)
                pointee.residentBytes &-= slabBytes
                slab.pointee.freeList = nil
                push(slab, on: pointer(to: \.released)!)
                slab.pointee.onPartialList = false
            }
        }
    }

    /// Maps a fresh slab onto the partial list. Returns false if the kernel refuses.
    private func mapSlab() -> Bool {
        let base = osMapAligned(slabBytes, alignment: slabBytes)
        if base == 0 { return false }
        pointee.slabCount &+= 1
        pointee.residentBytes &+= slabBytes
        format(UnsafeMutablePointer<SlabHeader>(bitPattern: base).unsafelyUnwrapped)
        return true
    }

    /// Takes a released slab back onto the partial list. Returns false if there is none.
    private func takeReleasedSlab() -> Bool {
        guard let slab = pointee.released else { return false }
        unlink(slab, from: pointer(to: \.released)!)
        pointee.residentBytes &+= slabBytes
        format(slab)
        return true
    }

    /// Makes every record of `slab` free and puts it on the partial list.
    private func format(_ slab: UnsafeMutablePointer<SlabHeader>) {
        slab.initialize(to: SlabHeader())
        let first = UnsafeMutableRawPointer(slab) + Int(bitPattern: pointee.recordBytes)
        var i = pointee.recordsPerSlab
        while i > 0 {
            i &-= 1
            let record = first + Int(bitPattern: i &* pointee.recordBytes)
            record.storeBytes(of: slab.pointee.freeList, as: UnsafeMutableRawPointer?.self)
            slab.pointee.freeList = record
        }
        slab.pointee.freeCount = pointee.recordsPerSlab
        pointee.emptySlabs &+= 1
        push(slab, on: pointer(to: \.partial)!)
    }

    private func push(_ slab: UnsafeMutablePointer<SlabHeader>, on list: UnsafeMutablePointer<UnsafeMutablePointer<SlabHeader>?>) {
        slab.pointee.previous = nil
        slab.pointee.next = list.pointee
        list.pointee?.pointee.previous = slab
        list.pointee = slab
        slab.pointee.onPartialList = list == pointer(to: \.partial)!
    }

    private func unlink(_ slab: UnsafeMutablePointer<SlabHeader>, from list: UnsafeMutablePointer<UnsafeMutablePointer<SlabHeader>?>) {
        if let previous = slab.pointee.previous { previous.pointee.next = slab.pointee.next } else { list.pointee = slab.pointee.next }
        slab.pointee.next?.pointee.previous = slab.pointee.previous
        slab.pointee.next = nil
        slab.pointee.previous = nil
        slab.pointee.onPartialList = false
    }
}
