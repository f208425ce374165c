// Allocation: the malloc fast path, its slow paths, large and aligned objects.
//
// The fast path (allocate) is: read the thread-local cache pointer, look the size's
// class up in a byte table, pop the class's bin. Anything else — no cache yet, an
// empty bin, a large or aligned request — goes to a separate, never-inlined slow
// path, so the fast path stays a handful of instructions with no call, lock, atomic
// or overflow trap.
//
// Large objects (above maxSmallSize) are spans of their own, taken from the page heap
// under the heap lock. So are the allocations the heap profiler samples, whatever
// their size (Profile.swift): their free then takes the slow path, which drops the
// sample, without a test on the free fast path. Their memory is known to be zero when every page of the span
// was fresh from mmap or released with MADV_DONTNEED, and calloc then skips the memset.

import CShim

/// malloc without the C conventions: nil on failure with errno set.
///
/// The size limit is maxSmallSize, read from the shim (sh_small_limit) instead of an
/// immediate: the same one compare. With heap profiling on it is 0, and every malloc
/// takes the slow path, which counts its bytes toward the next sample (Profile.swift).
@inline(__always) func allocate(_ size: UInt) -> UnsafeMutableRawPointer? {
    if size <= sh_small_limit(), let cache = sh_tls_get() {
        let bin = cacheBin(cache, heap.pointee.classes.sizeClass(of: size))
        if bin.pointee.count != 0 { return popBin(bin) }
    }
    return allocateSlow(size)
}

/// The object on top of a bin that is not empty.
@inline(__always) func popBin(_ bin: UnsafeMutablePointer<CacheBin>) -> UnsafeMutableRawPointer? {
    let top = bin.pointee.count &- 1
    bin.pointee.count = top
    return UnsafeMutableRawPointer(bitPattern: bin.pointee.slots[Int(top)])
}

@inline(never) func allocateSlow(_ size: UInt) -> UnsafeMutableRawPointer? {
    if profilingOn { return allocateProfiled(size) }  // heap profiler hook (Profile.swift)
    return allocateUnprofiled(size)
}

/// malloc with heap profiling on: counts the bytes toward this thread's next sample,
/// then pops the thread's cache as the fast path would. Everything else is a tail
/// call, so that this common case needs no saved register.
@inline(never) func allocateProfiled(_ size: UInt) -> UnsafeMutableRawPointer? {
    var counted = false
    if let cache = sh_tls_get() {
        counted = profileThreadState(cache).pointee.countIfShort(size)
        if counted && size <= maxSmallSize {
            let bin = cacheBin(cache, heap.pointee.classes.sizeClass(of: size))
            if bin.pointee.count != 0 { return popBin(bin) }
        }
    }
    return allocateProfiledSlow(size, counted: counted)
}

/// allocateProfiled's other cases: `counted` tells whether the bytes were counted
/// already (short of the sample point); if not, this allocation may be sampled.
@inline(never) func allocateProfiledSlow(_ size: UInt, counted: Bool) -> UnsafeMutableRawPointer? {
    if !counted && profileCrossedSlow(size), let sampled = allocateSampled(size, alignment: minAlignment, zeroed: false) {
        return sampled
    }
    return allocateUnprofiled(size)
}

/// The slow path of malloc proper (below the profiler's hook).
@inline(never) func allocateUnprofiled(_ size: UInt) -> UnsafeMutableRawPointer? {
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
    if bin.pointee.count != 0 { return popBin(bin) }
    return UnsafeMutableRawPointer(bitPattern: refillBin(cache, sizeClass))
}

/// A large object of at least `size` bytes aligned to `alignment`; nil with ENOMEM
/// if the size is impossible or memory is exhausted. `profiled` marks the span as a
/// heap-profile sample (its free goes through the profiler).
///
/// Takes the heap lock.
@inline(never) func allocateLarge(_ size: UInt, alignment: UInt, zeroed mustBeZero: Bool,
                                  profiled: Bool = false) -> UnsafeMutableRawPointer? {
    let savedErrno = sh_errno_get()
    let (padded, overflow) = size.addingReportingOverflow(pageSize &- 1)
    if overflow || !ensureHeapInitialized() {
        sh_errno_set(ENOMEM)
        return nil
    }
    let pageCount = padded >> pageShift
    heapLock.lock()
    guard let (span, zeroed) = allocSpanLocked(pageCount: pageCount, alignment: alignment) else {
        heapLock.unlock()
        sh_errno_set(ENOMEM)
        return nil
    }
    span.pointee.state = .large
    span.pointee.profiled = profiled
    heap.pointee.stats.largeBytes &+= pageCount &<< pageShift
    heap.pointee.stats.largeCount &+= 1
    heapLock.unlock()
    let memory = UnsafeMutableRawPointer(bitPattern: span.pointee.base)!
    if mustBeZero && !zeroed { memset(memory, 0, Int(bitPattern: pageCount &<< pageShift)) }
    sh_errno_set(savedErrno)
    return memory
}

/// An object of at least `size` bytes aligned to `alignment` (a power of two).
@inline(never) func allocateAligned(_ size: UInt, alignment: UInt) -> UnsafeMutableRawPointer? {
    if alignment <= minAlignment { return allocate(size) }
    // ---- heap profiler hook (Profile.swift)
    if profilingOn && profileShouldSample(size), let sampled = allocateSampled(size, alignment: alignment, zeroed: false) {
        return sampled
    }
    // ---- end of hook
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
    if total > maxSmallSize {
        // ---- heap profiler hook (Profile.swift); small sizes are counted in allocate.
        if profilingOn && profileShouldSample(total), let sampled = allocateSampled(total, alignment: pageSize, zeroed: true) {
            return sampled
        }
        // ---- end of hook
        return allocateLarge(total, alignment: pageSize, zeroed: true)
    }
    guard let memory = allocate(total) else { return nil }
    memset(memory, 0, Int(bitPattern: total))
    return memory
}
