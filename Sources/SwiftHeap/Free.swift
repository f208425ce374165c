// Deallocation and reallocation: the free fast path, large frees, realloc in place.
//
// free(p) finds p's span through the page→span map (no lock), checks that p is the
// start of an object of that span, and pushes it on the calling thread's bin for the
// span's class. The check costs a multiply and a compare and catches frees of interior
// pointers; pointers SwiftHeap never returned find no span.
//
// Double frees are caught from the allocator's own metadata, without touching the
// object (writing a marker into every freed object, as glibc's tcache does, dirties a
// cold cache line per free and cost a third of the time of a churning workload here):
//   * the object's bit in its span's free bitmap is set: the object went back to its
//     span already (freed before, and flushed, or freed by another thread). Read
//     without the central lock: the bit of an object the caller owns is clear, and is
//     set only when the object is released, so a set bit is always a double free;
//   * the object is one of the last four pushed on the bin it would go to: the common
//     free(p); free(p), even with a few frees of other objects in between (four
//     compares on the line of the bin that the push writes anyway).
// A double free of an object that sits deeper in this thread's bin is caught later,
// when the two copies reach the span and the second finds its bit already set; if the
// object is handed out meanwhile, two owners share it until then.
//
// A heap-profile sample is a large span of its own, flagged in its record: its free
// takes the slow path anyway, which drops the sample (Profile.swift).
//
// free preserves errno (glibc's manual asks it of a replacement): the slow paths may
// make system calls (a contended lock's futex), so they save and restore it.

import CShim

@inline(__always) func deallocate(_ pointer: UnsafeMutableRawPointer?) {
    guard let pointer else { return }
    let address = UInt(bitPattern: pointer)
    if let cache = sh_tls_get(), let span = heap.pointee.spanMap.span(containing: address) {
        let cls = Int(span.pointee.sizeClass)
        let index = span.objectIndex(of: address)
        if cls != 0 && (!misuseChecks || span.isObjectStart(address, index: index)) {
            let bin = cacheBin(cache, cls)
            let count = bin.pointee.count
            if count < bin.pointee.capacity && span.pointee.owner == cache
                && (!misuseChecks || !looksFreed(address, index: index, span: span, bin: bin)) {
                bin.pointee.slots[Int(count)] = address
                bin.pointee.count = count &+ 1
                return
            }
        }
    }
    deallocateSlow(address, call: "free()")
}

/// Whether object `index` of `span` (at `address`) is free already: its bit in the
/// span's free bitmap is set, or it is one of the last four objects pushed on `bin`.
/// See the file comment for why the unlocked read of the bitmap is sound. Kept short:
/// in a memory-bound program every instruction here delays the program's next miss.
@inline(__always) func looksFreed(_ address: UInt, index: UInt, span: UnsafeMutablePointer<Span>,
                                  bin: UnsafeMutablePointer<CacheBin>) -> Bool {
    let word = span.freeWords[Int(bitPattern: index >> 6)]
    let count = Int(bin.pointee.count)
    let slots = bin.pointee.slots
    var recent = false
    if count >= 4 {
        recent = slots[count &- 1] == address || slots[count &- 2] == address
            || slots[count &- 3] == address || slots[count &- 4] == address
    } else {
        var i = 0
        while i < count { recent = recent || slots[i] == address; i &+= 1 }
    }
    return recent || word & (UInt64(1) << UInt64(index & 63)) != 0
}

@inline(never) func deallocateSlow(_ address: UInt, call: StaticString) {
    let savedErrno = sh_errno_get()
    defer { sh_errno_set(savedErrno) }
    guard heapIsReady(), let span = heap.pointee.spanMap.span(containing: address) else {
        // A page-aligned address inside an arena but in no span is, almost surely, a
        // large object freed before.
        if heapIsReady() && address & (pageSize &- 1) == 0 && heap.pointee.spanMap.isInArena(address) {
            fatalMisuse(call, "double free of", address: address)
        }
        fatalMisuse(call, "invalid pointer", address: address)
    }
    if span.pointee.state == .large {
        if address != span.pointee.base { fatalMisuse(call, "invalid pointer", address: address) }
        if span.pointee.profiled { profileRecordFree(address) }  // heap profiler hook (Profile.swift)
        freeLarge(span, address: address, call: call)
        return
    }
    let cls = Int(span.pointee.sizeClass)
    if span.pointee.state != .small || !span.isObjectStart(address, index: span.objectIndex(of: address)) {
        fatalMisuse(call, "invalid pointer", address: address)
    }
    guard let cache = currentCacheSlow() else {
        // No cache can be made (out of memory): straight back to the span.
        var single = address
        (heap.pointee.centrals + cls).release(&single, count: 1)
        return
    }
    let bin = cacheBin(cache, cls)
    let remote = span.pointee.owner != cache
    if misuseChecks && looksFreed(address, index: span.objectIndex(of: address), span: span,
                                  bin: remote ? remoteBin(cache, cls) : bin) {
        fatalMisuse(call, "double free of", address: address)
    }
    if remote {
        pushRemote(cache, cls, address)
        maybeStartScavenger()
        return
    }
    let count = bin.pointee.count
    if count < bin.pointee.capacity {
        bin.pointee.slots[Int(count)] = address
        bin.pointee.count = count &+ 1
    } else {
        flushBinAndPush(cache, cls, address)
    }
    maybeStartScavenger()
}

/// Takes the heap lock.
private func freeLarge(_ span: UnsafeMutablePointer<Span>, address: UInt, call: StaticString) {
    heapLock.lock()
    // Verify under the lock: a racing double free may have freed it meanwhile.
    guard heap.pointee.spanMap.span(containing: address) == span, span.pointee.state == .large else {
        heapLock.unlock()
        fatalMisuse(call, "double free of", address: address)
    }
    heap.pointee.stats.largeBytes &-= span.pointee.pages &<< pageShift
    heap.pointee.stats.largeCount &-= 1
    freeSpanLocked(span)
    heapLock.unlock()
    maybeStartScavenger()
}

/// The usable size of a live object; 0 for nil or a pointer SwiftHeap does not know.
func usableSize(_ pointer: UnsafeMutableRawPointer?) -> UInt {
    guard let pointer, heapIsReady(), let span = heap.pointee.spanMap.span(containing: UInt(bitPattern: pointer)) else { return 0 }
    switch span.pointee.state {
    case .small: return UInt(span.pointee.objectSize)
    case .large: return span.pointee.pages &<< pageShift
    case .free: return 0
    }
}

/// realloc without the C conventions. Keeps the contents; grows and shrinks in place
/// where the class or the following pages allow.
func reallocate(_ pointer: UnsafeMutableRawPointer?, _ size: UInt) -> UnsafeMutableRawPointer? {
    guard let pointer else { return allocate(size) }
    if size == 0 {
        deallocate(pointer)
        return nil
    }
    let address = UInt(bitPattern: pointer)
    guard heapIsReady(), let span = heap.pointee.spanMap.span(containing: address),
          span.pointee.state != .free, address == span.pointee.base ||
            (span.pointee.state == .small && span.isObjectStart(address, index: span.objectIndex(of: address)))
    else { fatalMisuse("realloc()", "invalid pointer", address: address) }

    let oldUsable: UInt
    if span.pointee.state == .small {
        oldUsable = UInt(span.pointee.objectSize)
        // Stay in place unless the object would waste more than half its class.
        if size <= oldUsable && (size > oldUsable / 2 || oldUsable <= 16) { return pointer }
    } else {
        oldUsable = span.pointee.pages &<< pageShift
        // A sampled small object has a page of its own: it stays there while it fits,
        // as it would in its class (heap profiler hook).
        if span.pointee.profiled && size <= oldUsable && (oldUsable == pageSize || size > oldUsable / 2) {
            profileReallocatedInPlace(span, address: address, oldBytes: oldUsable, size: size)
            return pointer
        }
        if size > maxSmallSize, let resized = resizeLargeInPlace(span, size) {
            if profilingOn { profileReallocatedInPlace(span, address: address, oldBytes: oldUsable, size: size) }  // heap profiler hook
            return resized
        }
    }
    guard let moved = allocate(size) else { return nil }
    memcpy(moved, pointer, Int(bitPattern: min(size, oldUsable)))
    deallocate(pointer)
    return moved
}

/// Shrinks a large object in place, or grows it into free pages that follow it.
/// Returns nil when it cannot.
///
/// Takes the heap lock.
private func resizeLargeInPlace(_ span: UnsafeMutablePointer<Span>, _ size: UInt) -> UnsafeMutableRawPointer? {
    let (padded, overflow) = size.addingReportingOverflow(pageSize &- 1)
    if overflow { return nil }
    let newPages = padded >> pageShift
    if newPages == span.pointee.pages { return UnsafeMutableRawPointer(bitPattern: span.pointee.base) }
    heapLock.lock()
    defer { heapLock.unlock() }
    let oldPages = span.pointee.pages
    if newPages <= oldPages {
        shrinkSpanLocked(span, keepPages: newPages)
    } else if !growSpanInPlaceLocked(span, extraPages: newPages &- oldPages).grown {
        return nil
    }
    heap.pointee.stats.largeBytes = heap.pointee.stats.largeBytes &- (oldPages &<< pageShift) &+ (span.pointee.pages &<< pageShift)
    return UnsafeMutableRawPointer(bitPattern: span.pointee.base)
}
