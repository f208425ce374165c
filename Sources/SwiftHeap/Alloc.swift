// Allocation: the malloc fast path, its slow paths, large and aligned objects.
//
// The fast path (allocate) is: read the thread-local cache pointer, look the size's
// class up in a byte table, pop the class's bin. Anything else — no cache yet, an
// empty bin, a large or aligned request — goes to a separate, never-inlined slow
// path, so the fast path stays a handful of instructions with no call, lock, atomic
// or overflow trap.
//
// Large objects (above maxSmallSize) are spans of their own, taken from the page heap
// under the heap lock, or mapped on their own from directThreshold up (Heap.swift). calloc of a large size zeroes by releasing the span's pages again
// where most of them were released already (see zeroLarge): released memory is never
// trusted to still read as zero.

import CShim

/// malloc without the C conventions: nil on failure with errno set.
@inline(__always) func allocate(_ size: UInt) -> UnsafeMutableRawPointer? {
    if size <= maxSmallSize, let cache = sh_tls_get() {
        let bin = cacheBin(cache, heap.pointee.classes.sizeClass(of: size))
        let count = bin.pointee.count
        if count != 0 {
            let top = count &- 1
            bin.pointee.count = top
            return UnsafeMutableRawPointer(bitPattern: bin.pointee.slots[Int(top)])
        }
    }
    return allocateSlow(size)
}

@inline(never) func allocateSlow(_ size: UInt) -> UnsafeMutableRawPointer? {
    if size > maxSmallSize { return allocateLarge(size, alignment: pageSize, zeroed: false) }
    if !ensureHeapInitialized() {
        sh_errno_set(ENOMEM)
        return nil
    }
    return allocateSmallSlow(heap.pointee.classes.sizeClass(of: size))
}

/// An object of class `sizeClass` from this thread's cache, made first if the thread
/// has none; nil with ENOMEM if memory is exhausted. The heap must be initialised.
@inline(never) func allocateSmallSlow(_ sizeClass: Int) -> UnsafeMutableRawPointer? {
    let savedErrno = sh_errno_get()
    guard let cache = currentCacheSlow() else {
        sh_errno_set(ENOMEM)
        return nil
    }
    let object = allocateSmall(cache, sizeClass)
    sh_errno_set(object == nil ? ENOMEM : savedErrno)
    return object
}

/// An object of class `sizeClass` from `cache`, refilling its bin if empty; nil if
/// the heap is out of memory.
@inline(__always) func allocateSmall(_ cache: UnsafeMutableRawPointer, _ sizeClass: Int) -> UnsafeMutableRawPointer? {
    let bin = cacheBin(cache, sizeClass)
    let count = bin.pointee.count
    if count != 0 {
        bin.pointee.count = count &- 1
        return UnsafeMutableRawPointer(bitPattern: bin.pointee.slots[Int(count &- 1)])
    }
    return UnsafeMutableRawPointer(bitPattern: refillBin(cache, sizeClass))
}

/// A large object of at least `size` bytes aligned to `alignment`; nil with ENOMEM
/// if the size is impossible or memory is exhausted.
///
/// Takes the heap lock.
@inline(never) func allocateLarge(_ size: UInt, alignment: UInt, zeroed mustBeZero: Bool) -> UnsafeMutableRawPointer? {
    let savedErrno = sh_errno_get()
    let (padded, overflow) = size.addingReportingOverflow(pageSize &- 1)
    if overflow || !ensureHeapInitialized() {
        sh_errno_set(ENOMEM)
        return nil
    }
    let pageCount = padded >> pageShift
    let bytes = pageCount &<< pageShift
    let (withAlignment, overflow2) = bytes.addingReportingOverflow(alignment > pageSize ? alignment : 0)
    if overflow2 || withAlignment >= directThreshold {
        guard !overflow2, let span = allocDirectSpan(bytes: bytes, alignment: alignment) else {
            sh_errno_set(ENOMEM)
            return nil
        }
        // Fresh from the kernel: zero, and never in the program's hands.
        sh_errno_set(savedErrno)
        return UnsafeMutableRawPointer(bitPattern: span.pointee.base)
    }
    heapLock.lock()
    guard let (span, scavenged) = allocSpanLocked(pageCount: pageCount, alignment: alignment, state: .large) else {
        heapLock.unlock()
        sh_errno_set(ENOMEM)
        return nil
    }
    heap.pointee.stats.largeBytes &+= pageCount &<< pageShift
    heap.pointee.stats.largeCount &+= 1
    heapLock.unlock()
    let memory = UnsafeMutableRawPointer(bitPattern: span.pointee.base)!
    if mustBeZero { zeroLarge(memory, bytes: pageCount &<< pageShift, scavengedBytes: scavenged) }
    scavengerPoke(allocating: true)
    sh_errno_set(savedErrno)
    return memory
}

/// Makes a large object's memory zero for calloc without trusting what it held. Pages the
/// scavenger released read as zero only until someone writes them, and a program that
/// writes into memory it freed (a use-after-free bug) may have: so released pages are not
/// "known zero". Where most of the span was released, releasing it again is the cheap way
/// (madvise of pages that are not resident costs little, and the kernel zero-fills every
/// page on its next touch, written or not); otherwise the memset is the cheaper.
///
/// The span must be allocated to the caller (no lock is held).
func zeroLarge(_ memory: UnsafeMutableRawPointer, bytes: UInt, scavengedBytes: UInt) {
    if scavengedBytes >= bytes / 2 {
        osRelease(UInt(bitPattern: memory), bytes)
    } else {
        memset(memory, 0, Int(bitPattern: bytes))
    }
}

/// An object of at least `size` bytes aligned to `alignment` (a power of two).
@inline(never) func allocateAligned(_ size: UInt, alignment: UInt) -> UnsafeMutableRawPointer? {
    if alignment <= minAlignment { return allocate(size) }
    if size <= maxSmallSize && alignment <= pageSize {
        // A class whose size is a multiple of the alignment has every object aligned,
        // because spans start on a page boundary.
        if !ensureHeapInitialized() {
            sh_errno_set(ENOMEM)
            return nil
        }
        let classes = heap.pointee.classes
        var cls = classes.sizeClass(of: max(size, alignment))
        while cls < classes.count && UInt(classes.info[cls].size) % alignment != 0 { cls &+= 1 }
        if cls < classes.count { return allocateSmallSlow(cls) }
    }
    return allocateLarge(max(size, maxSmallSize &+ 1), alignment: max(alignment, pageSize), zeroed: false)
}

/// calloc without the C conventions.
func allocateZeroed(count: UInt, size: UInt) -> UnsafeMutableRawPointer? {
    let (total, overflow) = count.multipliedReportingOverflow(by: size)
    if overflow {
        sh_errno_set(ENOMEM)
        return nil
    }
    if total > maxSmallSize { return allocateLarge(total, alignment: pageSize, zeroed: true) }
    guard let memory = allocate(total) else { return nil }
    memset(memory, 0, Int(bitPattern: total))
    return memory
}
