// Allocation from the thread cache: the malloc fast path and its refill.
//
// The fast path (cacheBinFast, then popNonEmpty) is: read the thread-local cache pointer, look the
// size's bin up in a table of bin offsets, pop that bin. Anything else — no cache yet, an
// empty bin, a large or aligned request — returns nil to the C ABI's slow path
// (Entry.swift), so the fast path stays a handful of instructions with no call, lock,
// atomic or overflow trap. This layer knows the caches and the central lists only:
// large objects are the page heap's, and the scavenger is the C ABI's to run.

import CShim

/// The calling thread's bin for a small request of `size` bytes if it holds an object,
/// or nil when the fast path cannot serve the request (see the file comment); pop it
/// with popNonEmpty. `limit` is the largest size served: maxSmallSize, or 0 to send
/// every request to the slow path (the C ABI passes a limit read from memory, which is
/// the same one compare as the constant). No lock, no atomic. (Two steps so that the
/// popped address goes back to the caller with no test of its own.)
@inline(__always) func cacheBinFast(_ size: UInt, limit: UInt, binOffsets: UnsafeMutablePointer<UInt16>) -> UnsafeMutablePointer<CacheBin>? {
    // Every thread finds its bin empty before the heap is made (`binOffsets` are then
    // the shim's zeros: Entry.swift).
    if size <= limit { return callingThreadNonEmptyBin(atOffset: SizeClassTable.binOffset(of: size, in: binOffsets)) }
    return nil
}

/// The calling thread's bin at `offset` (cacheBinOffset) if it holds an object, else nil;
/// pop it with popNonEmpty. A thread with no cache yet finds every bin empty (the shim's
/// swiftheap_no_cache_yet). malloc's fast path, and aligned allocation's (Entry.swift:
/// allocateAligned). No lock, no atomic.
@inline(__always) func callingThreadNonEmptyBin(atOffset offset: Int) -> UnsafeMutablePointer<CacheBin>? {
    let bin = UnsafeMutablePointer<ThreadCache>(slot: sh_tls_slot()).bin(atOffset: offset)
    return bin.pointee.isEmpty ? nil : bin
}

/// A small object of `size` bytes from the calling thread's bin, or nil when the fast
/// path cannot serve it (cacheBinFast).
@inline(__always) func cacheAllocateFast(_ size: UInt, limit: UInt, binOffsets: UnsafeMutablePointer<UInt16>) -> UnsafeMutableRawPointer? {
    if let bin = cacheBinFast(size, limit: limit, binOffsets: binOffsets) { return bin.popNonEmpty() }
    return nil
}

extension UnsafeMutablePointer where Pointee == CacheBin {
    /// Takes the top object of a bin that is not empty.
    @inline(__always) func popNonEmpty() -> UnsafeMutableRawPointer? {
        let top = pointee.top - 1
        pointee.top = top
        return UnsafeMutableRawPointer(bitPattern: top.pointee)
    }

    /// Puts `object` on top of a bin that is not full.
    @inline(__always) func pushNonFull(_ object: UInt) {
        let top = pointee.top
        top.pointee = object
        pointee.top = top + 1
    }
}

/// An object of class `sizeClass` from `cache`, refilling its bin if empty; nil if the
/// heap is out of memory.
///
/// Takes the class's central lock (and the page heap's) when it refills.
@inline(__always) func cacheAllocate(_ cache: UnsafeMutablePointer<ThreadCache>, _ sizeClass: Int) -> UnsafeMutableRawPointer? {
    let bin = cache.bin(sizeClass)
    if !bin.pointee.isEmpty { return bin.popNonEmpty() }
    return UnsafeMutableRawPointer(bitPattern: cache.refillBin(sizeClass))
}
