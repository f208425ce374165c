// Metadata memory: never-freed memory for the allocator's own tables (Go's
// persistentalloc), and fixed-size record pools on top of it (Go's fixalloc).
//
// The allocator cannot use malloc for its own bookkeeping, so every table, span
// record and thread cache comes from here. Memory is carved from 256 KiB mmap'd
// blocks by bumping a cursor under a mutex; requests larger than a quarter block are
// mapped on their own. Nothing is ever returned to the OS: metadata is small next to
// the heap it describes and is reused through the record pools.
//
// The state lives in the static area the C shim provides (zero-initialised before
// any code runs), so the first allocation of the process needs no initialisation.
// The static area is shared out by fixed offsets:
//   [0, 64)      MetadataState
//   [64, 4096)   the heap's root state (see Heap.swift)

import CShim

struct MetadataState {
    var lock = Mutex()
    var cursor: UInt = 0
    var end: UInt = 0
    /// Bytes of metadata handed out (for stats).
    var bytesAllocated: UInt = 0
    /// Bytes mapped for metadata.
    var bytesMapped: UInt = 0
}

let metadataBlockBytes: UInt = 256 << 10

/// Offset in the static area where the heap's root state begins.
let staticRootOffset = 64

@inline(__always) var metadataState: UnsafeMutablePointer<MetadataState> {
    sh_static_area().assumingMemoryBound(to: MetadataState.self)
}

/// Returns `bytes` of zeroed, never-freed memory aligned to `alignment` (a power of
/// two, at most the OS page), or nil if the kernel refuses memory.
///
/// Takes and releases the metadata lock; must not be called with it held.
func persistentAlloc(_ bytes: UInt, alignment: UInt = 16) -> UnsafeMutableRawPointer? {
    let size = alignUp(bytes, 16)
    if size >= metadataBlockBytes / 4 {
        let mapped = osMap(alignUp(size, osPageSize))
        if mapped == 0 { return nil }
        let state = metadataState
        metadataLockPointer.lock()
        state.pointee.bytesAllocated &+= size
        state.pointee.bytesMapped &+= alignUp(size, osPageSize)
        metadataLockPointer.unlock()
        return UnsafeMutableRawPointer(bitPattern: mapped)
    }
    let state = metadataState
    metadataLockPointer.lock()
    var base = alignUp(state.pointee.cursor, alignment)
    if state.pointee.cursor == 0 || base &+ size > state.pointee.end {
        let block = osMap(metadataBlockBytes)
        if block == 0 {
            metadataLockPointer.unlock()
            return nil
        }
        state.pointee.bytesMapped &+= metadataBlockBytes
        state.pointee.end = block &+ metadataBlockBytes
        base = block
    }
    state.pointee.cursor = base &+ size
    state.pointee.bytesAllocated &+= size
    metadataLockPointer.unlock()
    return UnsafeMutableRawPointer(bitPattern: base)
}

/// The metadata lock (rank metadata: innermost). It lives in zeroed static memory, so its
/// rank is set on every use, the same value by every thread.
@inline(__always) var metadataLockPointer: UnsafeMutablePointer<Mutex> {
    let lock = metadataState.pointer(to: \.lock)!
    lock.pointee.rank = LockRank.metadata.rawValue
    return lock
}

/// A pool of fixed-size records (span records, thread caches) over metadata memory.
/// Freed records go on a free list, linked through their first word, and are reused
/// before new memory is carved. New records are zeroed; reused ones too, unless the pool
/// is made with zeroOnReuse false (then only the first word, the free-list link, is
/// zeroed: the thread cache records, which keep state across reuse).
///
/// Not synchronised: the owner's lock guards it.
struct FixAlloc {
    var recordBytes: UInt = 0
    var freeList: UnsafeMutableRawPointer? = nil
    /// Records handed out and not freed.
    var inUse: UInt = 0
    var zeroOnReuse: Bool = true

    init(recordBytes: UInt, zeroOnReuse: Bool = true) {
        self.recordBytes = alignUp(recordBytes, 16)
        self.zeroOnReuse = zeroOnReuse
    }

    mutating func alloc() -> UnsafeMutableRawPointer? { allocReportingReuse()?.record }

    /// alloc, and whether the record was reused (with zeroOnReuse false, only its first
    /// word is then zero; a new record is all zero, from memory never written, so a
    /// caller that leaves its zero words alone leaves those pages untouched).
    mutating func allocReportingReuse() -> (record: UnsafeMutableRawPointer, reused: Bool)? {
        if let record = freeList {
            freeList = record.load(as: UnsafeMutableRawPointer?.self)
            if zeroOnReuse {
                memset(record, 0, Int(bitPattern: recordBytes))
            } else {
                record.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
            }
            inUse &+= 1
            return (record, true)
        }
        guard let record = persistentAlloc(recordBytes, alignment: 64) else { return nil }
        inUse &+= 1
        return (record, false)
    }

    mutating func free(_ record: UnsafeMutableRawPointer) {
        record.storeBytes(of: freeList, as: UnsafeMutableRawPointer?.self)
        freeList = record
        inUse &-= 1
    }
}
