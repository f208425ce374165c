// The C ABI's paths through the layers: malloc and free (their fast paths inline, their
// slow paths here), calloc, realloc, the aligned allocations, usable size and trim.
//
// This is the top of the allocator: it reads the heap root (Heap.swift) and routes each
// call to the layer that serves it — a small object to the calling thread's cache
// (Alloc.swift, Free.swift), a large one to the page heap (PageHeap.swift) — and, when
// pages moved between spans and the page heap, gives the scavenger's runner its chance
// (ScavengerRunner.swift): no layer below calls the scavenger.
//
// The heap profiler (Profile.swift) hooks in here only, off the fast paths: malloc's
// fast path serves sizes up to a limit read from memory (sh_small_limit: maxSmallSize,
// 0 while profiling, so that every malloc comes to allocateSlow and its bytes are
// counted); calloc of a large size and the aligned allocations count theirs before
// their own paths; a sampled object is a large span flagged `profiled`, so its free
// comes to deallocateSlow, and realloc keeps it in its span while it can.
//
// Before a thread has a cache, and before the heap exists, the fast paths run as they
// do after: the thread's slot holds the shim's zeros (swiftheap_no_cache_yet), whose bins
// read as empty and full, and malloc's size lookup and free's span map are the shim's
// tables (sh_bin_offsets, sh_span_slots), zeros until the heap is made. Each sends the
// call to its slow path, which makes the heap and the thread's cache, without a test of
// its own.
//
// errno: NULL comes with ENOMEM; a successful call leaves errno as it found it (the slow
// paths make system calls), and free always does (glibc's manual asks it of a
// replacement).

import CShim

// MARK: - malloc and free

/// malloc without the C conventions: nil on failure with errno set.
@inline(__always) func allocate(_ size: UInt) -> UnsafeMutableRawPointer? {
    if let bin = cacheBinFast(size, limit: sh_small_limit(), binOffsets: sh_bin_offsets()) { return bin.popNonEmpty() }
    return allocateSlow(size)
}

@inline(never) func allocateSlow(_ size: UInt) -> UnsafeMutableRawPointer? {
    if profilingOn { return allocateProfiled(size) }  // the heap profiler (Profile.swift)
    if let memory = allocateLargeCached(size) { return memory }
    return allocateUnsampled(size)
}

/// A large object of `size` bytes (one the large cache serves) from the calling thread's
/// large cache (LargeCache.swift), or nil: the loop of malloc and free of big objects
/// in one thread goes no further. No lock and no system call, so errno is left as it is.
@inline(__always) func allocateLargeCached(_ size: UInt) -> UnsafeMutableRawPointer? {
    guard let pages = largeCachePages(forSize: size), let slot = sh_tls_get(),
          let span = UnsafeMutablePointer<ThreadCache>(slot: slot).takeLarge(pages: pages) else { return nil }
    return UnsafeMutableRawPointer(bitPattern: span.pointee.base)
}

/// malloc's slow path below the heap profiler: the heap, then a large object from the
/// page heap or a small one from this thread's cache.
@inline(never) func allocateUnsampled(_ size: UInt) -> UnsafeMutableRawPointer? {
    if !ensureHeapInitialized() {
        sh_errno_set(ENOMEM)
        return nil
    }
    if size > maxSmallSize { return allocateLarge(size, alignment: pageSize, zeroed: false) }
    return allocateSmall(heap.pointee.classes.sizeClass(of: size))
}

/// An object of class `sizeClass` from this thread's cache, made first if the thread has
/// none; nil with ENOMEM if memory is exhausted (once the threads' large caches have given
/// back what they keep). The heap must be initialised.
@inline(never) func allocateSmall(_ sizeClass: Int) -> UnsafeMutableRawPointer? {
    let savedErrno = sh_errno_get()
    guard let cache = processCaches.currentCache(),
          let object = cacheAllocate(cache, sizeClass) ?? (drainedLargeCaches() ? cacheAllocate(cache, sizeClass) : nil) else {
        sh_errno_set(ENOMEM)
        return nil
    }
    afterSlowPath(allocating: true)
    sh_errno_set(savedErrno)
    return object
}

/// A large object from this thread's large cache or the page heap; nil with ENOMEM if the
/// size is impossible or memory is exhausted. The heap must be initialised.
@inline(never) func allocateLarge(_ size: UInt, alignment: UInt, zeroed: Bool) -> UnsafeMutableRawPointer? {
    let savedErrno = sh_errno_get()
    var request = size
    if alignment <= pageSize, let pages = largeCachePages(forSize: size) {
        // A size the large cache serves gets its page class's pages (LargeCache.swift),
        // from the cache if this thread has a span of them: no lock, no page allocator.
        if let cache = processCaches.currentCache(), let span = cache.takeLarge(pages: pages) {
            let memory = UnsafeMutableRawPointer(bitPattern: span.pointee.base).unsafelyUnwrapped
            if zeroed { memset(memory, 0, Int(bitPattern: span.pointee.pages &<< pageShift)) }
            return memory
        }
        request = pages &<< pageShift
    }
    // Before the heap grows, the spans the threads' large caches keep go back to it: the
    // object may fit where they are, and under an address-space cap (ulimit -v) growing
    // may fail where they would have served.
    let pageHeap = processPageHeap
    guard let memory = pageHeap.allocateLarge(request, alignment: alignment, zeroed: zeroed, mayGrow: false)
            ?? (drainedLargeCaches() ? pageHeap.allocateLarge(request, alignment: alignment, zeroed: zeroed, mayGrow: false) : nil)
            ?? pageHeap.allocateLarge(request, alignment: alignment, zeroed: zeroed) else {
        sh_errno_set(ENOMEM)
        return nil
    }
    afterSlowPath(allocating: true)
    sh_errno_set(savedErrno)
    return memory
}

/// Gives every thread's cached large spans (LargeCache.swift) and the centrals' kept
/// empty spans (Central.freeEmptySpans) back to the page heap, for an allocation that
/// found no memory without them; returns whether there were any.
@inline(never) func drainedLargeCaches() -> Bool {
    let parked = processCaches.drainParkedCaches(all: true)
    return parked &+ processCaches.drainLargeCaches() &+ processScavenger.freeEmptySpans(all: true) > 0
}

/// free without the C conventions.
@inline(__always) func deallocate(_ pointer: UnsafeMutableRawPointer?) {
    let address = UInt(bitPattern: pointer)
    switch cacheFreeFast(address, spanMap: SpanMap.process) {
    case .done:
        return
    case .notSmall(let span):
        deallocateNotSmall(address, span: span)
    case .slow:
        if address == 0 { return }
        // (With the checks, a live large object comes as .notSmall.)
        if misuseChecks { deallocateSlow(address, call: "free()") } else { deallocateLargeOrSlow(address) }
    }
}

/// free's path for an address whose span `span` holds no small object starting there:
/// a large object into the calling thread's large cache (ThreadCache.freeLarge), anything
/// else (misuse included) to deallocateSlow.
@inline(never) func deallocateNotSmall(_ address: UInt, span: UnsafeMutablePointer<Span>) {
    if let slot = sh_tls_get(), UnsafeMutablePointer<ThreadCache>(slot: slot).freeLarge(span, at: address) { return }
    deallocateSlow(address, call: "free()")
}

/// free's path past the thread cache's fast path in the build without the misuse checks,
/// where large objects come as .slow: a large object into the calling thread's large
/// cache (ThreadCache.freeLarge, after a span lookup of its own), anything else to
/// deallocateSlow. (A thread has a cache only once the heap is initialised.)
@inline(never) func deallocateLargeOrSlow(_ address: UInt) {
    if let slot = sh_tls_get(), let span = heap.pointee.pageHeap.spanMap.span(containing: address),
       UnsafeMutablePointer<ThreadCache>(slot: slot).freeLarge(span, at: address) { return }
    deallocateSlow(address, call: "free()")
}

@inline(never) func deallocateSlow(_ address: UInt, call: StaticString) {
    let savedErrno = sh_errno_get()
    defer { sh_errno_set(savedErrno) }
    let span = liveObjectSpan(address, call: call)
    if span.pointee.state == .large {
        // (Its callers offered a large object to the thread's large cache already.)
        if span.pointee.profiled { profileFree(address) }  // a heap-profile sample (Profile.swift)
        processPageHeap.freeLarge(span, address: address, call: call, mayRelease: processScavenger.releasesAtFree)
    } else if let cache = processCaches.currentCache() {
        cacheFree(cache, span, address)
    } else {
        // No cache can be made (out of memory): straight back to the span.
        var single = address
        (heap.pointee.centrals + Int(span.pointee.sizeClass)).release(&single, count: 1)
    }
    afterSlowPath(allocating: false)
}

/// The span of the live object at `address` passed to `call` (free, realloc), or a
/// one-line diagnostic and abort if `address` is not the start of an object SwiftHeap
/// handed out. Objects found free already (see looksFreed) are reported as double frees;
/// so is an address that no span holds and that looks like an object freed before
/// (PageHeap.looksLikeFreedObject).
func liveObjectSpan(_ address: UInt, call: StaticString) -> UnsafeMutablePointer<Span> {
    guard heapIsReady(), let span = heap.pointee.pageHeap.spanMap.span(containing: address) else {
        let freed = heapIsReady() && processPageHeap.looksLikeFreedObject(address)
        fatalMisuse(call, freed ? "double free of" : "invalid pointer", address: address)
    }
    switch span.pointee.state {
    case .large:
        if address != span.pointee.base { fatalMisuse(call, "invalid pointer", address: address) }
    case .small:
        let index = span.objectIndex(of: address)
        if !span.isObjectStart(address, index: index) { fatalMisuse(call, "invalid pointer", address: address) }
        if misuseChecks {
            let cache = sh_tls_get().map { UnsafeMutablePointer<ThreadCache>(slot: $0) }
            if looksFreed(address, index: index, span: span, cache: cache) {
                fatalMisuse(call, "double free of", address: address)
            }
        }
    case .cached:
        // A large object freed already, waiting in a thread's large cache.
        fatalMisuse(call, address == span.pointee.base ? "double free of" : "invalid pointer", address: address)
    case .free:
        fatalMisuse(call, "invalid pointer", address: address)
    }
    return span
}

/// After a slow path, holding no lock: if pages moved between spans and the page heap,
/// the scavenger's runner may have work (ScavengerRunner.swift).
@inline(__always) func afterSlowPath(allocating: Bool) {
    if sh_load32_relaxed(heap.pointer(to: \.events)!.pagesMovedWord) != 0 {
        processScavenger.poke(allocating: allocating)
    }
}

/// The thread-exit destructor's last step (CacheRegistry.afterThreadExit), holding no
/// lock, with `cachesLeft` live thread caches: the exiting thread's flush may have
/// emptied spans, and with no scavenger thread (a burst of threads over before one
/// started) no later call might release them; once at most one cache is left, the
/// scavenger finishes what the threads let go of (Scavenger.finishAfterThreadsExited).
func afterThreadExitHook(_ cachesLeft: UInt) {
    afterSlowPath(allocating: false)
    if cachesLeft <= 1 { processScavenger.finishAfterThreadsExited() }
}

// MARK: - The rest of the family

/// An object of at least `size` bytes aligned to `alignment` (a power of two).
@inline(never) func allocateAligned(_ size: UInt, alignment: UInt) -> UnsafeMutableRawPointer? {
    if alignment <= minAlignment { return allocate(size) }
    if !ensureHeapInitialized() {
        sh_errno_set(ENOMEM)
        return nil
    }
    if profilingOn, let sampled = profileSample(size, alignment: alignment, zeroed: false) { return sampled }
    if size <= maxSmallSize && alignment <= pageSize {
        // A class whose size is a multiple of the alignment has every object aligned,
        // because spans start on a page boundary; its bin's top object, if it has one,
        // as malloc's fast path takes it. A loop of aligned_alloc(64, 64..192) and free
        // took 209 instructions a pair through allocateSmall and a search of the classes,
        // 133 this way (callgrind; mimalloc 2.0 105).
        let cls = heap.pointee.classes.alignedClass(of: size, alignment: alignment)
        if cls != 0 {
            if let bin = callingThreadNonEmptyBin(atOffset: cacheBinOffset(ofClass: cls)) { return bin.popNonEmpty() }
            return allocateSmall(cls)
        }
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
        if !ensureHeapInitialized() {
            sh_errno_set(ENOMEM)
            return nil
        }
        // (A small calloc is counted by malloc's slow path.)
        if profilingOn, let sampled = profileSample(total, alignment: pageSize, zeroed: true) { return sampled }
        return allocateLarge(total, alignment: pageSize, zeroed: true)
    }
    guard let memory = allocate(total) else { return nil }
    memset(memory, 0, Int(bitPattern: total))
    return memory
}

/// The usable size of a live object; 0 for nil or a pointer SwiftHeap does not know.
func usableSize(_ pointer: UnsafeMutableRawPointer?) -> UInt {
    guard let pointer, heapIsReady(),
          let span = heap.pointee.pageHeap.spanMap.span(containing: UInt(bitPattern: pointer)) else { return 0 }
    switch span.pointee.state {
    case .small: return UInt(span.pointee.objectSize)
    case .large: return span.pointee.pages &<< pageShift
    case .free, .cached: return 0
    }
}

/// realloc without the C conventions. Keeps the contents; grows and shrinks in place
/// where the class or the following pages allow. A heap-profile sample keeps its span
/// whatever its new size (a page at least), so that a growing buffer that was sampled
/// is not copied by every realloc; the profiler records its new size (Profile.swift).
func reallocate(_ pointer: UnsafeMutableRawPointer?, _ size: UInt) -> UnsafeMutableRawPointer? {
    guard let pointer else { return allocate(size) }
    if size == 0 {
        deallocate(pointer)
        return nil
    }
    let address = UInt(bitPattern: pointer)
    // A small object, found and checked from its page's span-map entry as free's fast
    // path does; its old copy goes on this thread's bin without a second lookup. Under
    // callgrind, a perl script's string growth took 214 instructions a realloc this way,
    // against 310 through liveObjectSpan (about 90 of them) and a free of the old copy
    // (47), with PERL_HASH_SEED=0.
    if let (entry, span) = liveSmallObjectFast(address, spanMap: SpanMap.process) {
        let oldUsable = UInt(span.pointee.objectSize)
        if staysInPlace(size, smallObject: oldUsable) { return pointer }
        guard let moved = moveObject(pointer, oldUsable: oldUsable, to: size) else { return nil }
        if !cacheFreeChecked(address, entry: entry) { deallocate(pointer) }
        return moved
    }
    let span = liveObjectSpan(address, call: "realloc()")

    let oldUsable: UInt
    if span.pointee.state == .small {
        oldUsable = UInt(span.pointee.objectSize)
        if staysInPlace(size, smallObject: oldUsable) { return pointer }
    } else {
        oldUsable = span.pointee.pages &<< pageShift
        // Keep the headroom a growing move left (moveObject): a size at most a quarter under
        // the object's stays in place (a sampled object's profile takes the new size).
        if size <= oldUsable && size >= oldUsable - oldUsable / 4 {
            if profilingOn && span.pointee.profiled {
                profileResized(span, from: address, to: address, oldBytes: oldUsable, size: size)
            }
            return pointer
        }
        if size > maxSmallSize || span.pointee.profiled, let resized = processPageHeap.resizeLarge(span, size) {
            if profilingOn { profileResized(span, from: address, to: UInt(bitPattern: resized), oldBytes: oldUsable, size: size) }
            afterSlowPath(allocating: true)
            return resized
        }
    }
    guard let moved = moveObject(pointer, oldUsable: oldUsable, to: size) else { return nil }
    // A moved object's old pages go back to the OS now if it is of releaseAtMoveBytes or
    // more (glibc would have moved its pages with mremap, leaving no copy), and are
    // otherwise kept for the next allocations (not released at free); the program's last
    // large call stays an allocation (PageHeap.swift: Releasing at free; nothing to note
    // while the scavenger's thread runs).
    let large = span.pointee.state == .large
    if large && oldUsable >= releaseAtMoveBytes {
        if span.pointee.profiled { profileFree(address) }  // a heap-profile sample (Profile.swift)
        processPageHeap.freeLarge(span, address: address, call: "realloc()", releasing: true)
        afterSlowPath(allocating: false)
    } else {
        if large { span.pointee.releaseOnFree = false }
        deallocate(pointer)
    }
    if large && processScavenger.releasesAtFree { processPageHeap.noteLargeAllocation() }
    return moved
}

/// Whether realloc to `size` keeps a small object of `usable` bytes where it is: unless
/// it would waste more than half its class.
@inline(__always) func staysInPlace(_ size: UInt, smallObject usable: UInt) -> Bool {
    size <= usable && (size > usable / 2 || usable <= 16)
}

/// realloc's move of the object at `pointer`, of `oldUsable` bytes, to a new one for
/// `size` bytes, its contents copied; nil (with ENOMEM) if there is no memory. The old
/// object is the caller's to free. Growing, it takes a quarter more than asked (as
/// tcmalloc does), so that a buffer grown by small steps moves, and is copied, once per
/// 25% of growth rather than at every size class (8 per doubling); the exact size if
/// that fails.
@inline(__always) func moveObject(_ pointer: UnsafeMutableRawPointer, oldUsable: UInt, to size: UInt) -> UnsafeMutableRawPointer? {
    let grown = size > oldUsable ? max(size, oldUsable + oldUsable / 4) : size
    guard let moved = allocate(grown) ?? (grown > size ? allocate(size) : nil) else { return nil }
    memcpy(moved, pointer, Int(bitPattern: min(size, oldUsable)))
    return moved
}

/// malloc_trim: every thread's cached large spans go back to the page heap
/// (LargeCache.swift), then see Scavenger.trim. Returns whether anything was released.
func trimHeap() -> Bool {
    if !heapIsReady() { return false }
    processCaches.drainParkedCaches(all: true)
    processCaches.drainLargeCaches()
    return processScavenger.trim()
}
