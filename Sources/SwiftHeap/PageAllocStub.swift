// TEMPORARY stand-in until the real page allocator lands (not committed).
struct PageAlloc {
    var cursor: UInt = 0
    var end: UInt = 0
    var freeBytes: UInt = 0
    var scavengedBytes: UInt = 0
    mutating func initialize(heapLock: UnsafeMutablePointer<Mutex>, test: Bool) -> Bool { true }
    mutating func grow(base: UInt, size: UInt) -> Bool { cursor = base; end = base + size; return true }
    mutating func alloc(npages: UInt) -> (base: UInt, scavenged: UInt) {
        let bytes = npages * pageSize
        if cursor == 0 || cursor + bytes > end { return (0, 0) }
        let b = cursor; cursor += bytes; return (b, bytes)
    }
    mutating func free(base: UInt, npages: UInt) {}
    mutating func allocRangeIfFree(base: UInt, npages: UInt) -> (ok: Bool, scavenged: UInt) { (false, 0) }
}
struct ScavengeStateStub { var gen: UInt32 = 0; var released: UInt = 0 }
extension PageAlloc {
    var scav: ScavengeStateStub { get { ScavengeStateStub() } set {} }
    var releasedBytes: UInt { 0 }
    mutating func scavengeStartGen() {}
    mutating func scavenge(_ nbytes: UInt, mayUnlock: Bool) -> UInt { 0 }
}
