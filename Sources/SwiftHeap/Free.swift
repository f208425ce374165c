// Deallocation and reallocation: the free fast path, large frees, realloc in place.
//
// free(p) finds p's span through the page→span map (no lock), checks that p is the
// start of an object of that span, and pushes it on the calling thread's bin for the
// span's class. The check costs a multiply and a compare and catches frees of interior
// pointers; pointers SwiftHeap never returned find no span. A double free is caught
// when the object's bit is found already free on its way back to the span.
//
// A double free is caught at once in the common case: free writes a marker (the
// address mixed with a per-process secret) into the object's second word, as glibc's
// tcache does with its key. A free that finds the marker already there checks whether
// the object really is free — in this thread's bin, or free in its span's bitmap — and
// reports it; a live object that merely holds the same bytes is not in either place.
// Frees of the same object from two threads are caught later, when the second copy
// reaches the span and finds its bit already free.
//
// free preserves errno (glibc's manual asks it of a replacement): the slow paths may
// make system calls (a contended lock's futex), so they save and restore it.

import CShim

@inline(__always) func deallocate(_ pointer: UnsafeMutableRawPointer?) {
    guard let pointer else { return }
    let address = UInt(bitPattern: pointer)
    if let cache = sh_tls_get(), let span = heap.pointee.spanMap.span(containing: address) {
        let cls = Int(span.pointee.sizeClass)
        if cls != 0 && (!misuseChecks || span.pointee.base &+ span.objectIndex(of: address) &* UInt(span.pointee.objectSize) == address) {
            let bin = cacheBin(cache, cls)
            let count = bin.pointee.count
            let marker = address ^ heap.pointee.freeMarkerSecret
            let markerSlot = pointer.advanced(by: 8).assumingMemoryBound(to: UInt.self)
            if count < bin.pointee.capacity && (!misuseChecks || markerSlot.pointee != marker) && span.pointee.owner == cache {
                if misuseChecks { markerSlot.pointee = marker }
                bin.pointee.slots[Int(count)] = address
                bin.pointee.count = count &+ 1
                return
            }
        }
    }
    deallocateSlow(address, call: "free()")
}

private func binContains(_ bin: UnsafeMutablePointer<CacheBin>, _ address: UInt) -> Bool {
    let slots = bin.pointee.slots
    for i in 0..<Int(bin.pointee.count) where slots[i] == address { return true }
    return false
}

/// Whether a small object that carries the free marker is really free already: in
/// this thread's bins of its class, or free in its span's bitmap (read without the
/// central lock: the bit of an object the caller legitimately owns is clear and only
/// its owner's free sets it).
@inline(never) func isAlreadyFree(_ address: UInt, span: UnsafeMutablePointer<Span>,
                                  cache: UnsafeMutableRawPointer, sizeClass: Int) -> Bool {
    if binContains(cacheBin(cache, sizeClass), address) || binContains(remoteBin(cache, sizeClass), address) { return true }
    let index = span.objectIndex(of: address)
    return span.freeWords[Int(bitPattern: index >> 6)] & (UInt64(1) << UInt64(index & 63)) != 0
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
        freeLarge(span, address: address, call: call)
        return
    }
    let cls = Int(span.pointee.sizeClass)
    if span.pointee.state != .small || span.pointee.base &+ span.objectIndex(of: address) &* UInt(span.pointee.objectSize) != address {
        fatalMisuse(call, "invalid pointer", address: address)
    }
    guard let cache = currentCacheSlow() else {
        // No cache can be made (out of memory): straight back to the span.
        var single = address
        (heap.pointee.centrals + cls).release(&single, count: 1)
        return
    }
    let bin = cacheBin(cache, cls)
    let markerSlot = UnsafeMutablePointer<UInt>(bitPattern: address &+ 8)!
    let marker = address ^ heap.pointee.freeMarkerSecret
    if misuseChecks {
        if markerSlot.pointee == marker && isAlreadyFree(address, span: span, cache: cache, sizeClass: cls) {
            fatalMisuse(call, "double free of", address: address)
        }
        markerSlot.pointee = marker
    }
    if span.pointee.owner != cache {
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
    let heapLock = withUnsafeMutablePointer(to: &heap.pointee.lock) { $0 }
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
            (span.pointee.state == .small && span.pointee.base &+ span.objectIndex(of: address) &* UInt(span.pointee.objectSize) == address)
    else { fatalMisuse("realloc()", "invalid pointer", address: address) }

    let oldUsable: UInt
    if span.pointee.state == .small {
        oldUsable = UInt(span.pointee.objectSize)
        // Stay in place unless the object would waste more than half its class.
        if size <= oldUsable && (size > oldUsable / 2 || oldUsable <= 16) { return pointer }
    } else {
        oldUsable = span.pointee.pages &<< pageShift
        if size > maxSmallSize, let resized = resizeLargeInPlace(span, size) { return resized }
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
    let heapLock = withUnsafeMutablePointer(to: &heap.pointee.lock) { $0 }
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
