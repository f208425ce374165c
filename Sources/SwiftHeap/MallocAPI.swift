// The C ABI: the malloc family with glibc's documented semantics, as Swift functions
// with symbol names of our own (`swiftheap_*`, @_silgen_name: Swift's calling
// convention, which Shim/CExports declares as swiftcall). The libc names themselves
// (malloc, free, the C++ operators, ...) are defined in Shim/CExports, linked into the
// shared object only, as single-jump tail calls straight into these functions.
//
// Conventions kept here: NULL and errno ENOMEM for impossible sizes and exhausted
// memory; EINVAL for bad alignments; free(NULL) does nothing; realloc(NULL, n) is
// malloc(n); realloc(p, 0) frees p and returns NULL, as glibc does.

import CShim

@_silgen_name("swiftheap_malloc")
public func swiftheap_malloc(_ size: Int) -> UnsafeMutableRawPointer? {
    allocate(UInt(bitPattern: size))
}

@_silgen_name("swiftheap_free")
public func swiftheap_free(_ pointer: UnsafeMutableRawPointer?) {
    deallocate(pointer)
}

@_silgen_name("swiftheap_calloc")
public func swiftheap_calloc(_ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    allocateZeroed(count: UInt(bitPattern: count), size: UInt(bitPattern: size))
}

@_silgen_name("swiftheap_realloc")
public func swiftheap_realloc(_ pointer: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    reallocate(pointer, UInt(bitPattern: size))
}

@_silgen_name("swiftheap_reallocarray")
public func swiftheap_reallocarray(_ pointer: UnsafeMutableRawPointer?, _ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    let (total, overflow) = UInt(bitPattern: count).multipliedReportingOverflow(by: UInt(bitPattern: size))
    if overflow {
        sh_errno_set(ENOMEM)
        return nil
    }
    return reallocate(pointer, total)
}

@inline(__always) private func isPowerOfTwo(_ value: UInt) -> Bool {
    value != 0 && value & (value &- 1) == 0
}

@_silgen_name("swiftheap_posix_memalign")
public func swiftheap_posix_memalign(_ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ alignment: Int, _ size: Int) -> Int32 {
    let align = UInt(bitPattern: alignment)
    if !isPowerOfTwo(align) || align % UInt(MemoryLayout<UnsafeRawPointer>.size) != 0 { return EINVAL }
    let savedErrno = sh_errno_get()
    guard let memory = allocateAligned(UInt(bitPattern: size), alignment: align) else {
        sh_errno_set(savedErrno)
        return ENOMEM
    }
    out.pointee = memory
    return 0
}

@_silgen_name("swiftheap_aligned_alloc")
public func swiftheap_aligned_alloc(_ alignment: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    let align = UInt(bitPattern: alignment)
    if !isPowerOfTwo(align) {
        sh_errno_set(EINVAL)
        return nil
    }
    return allocateAligned(UInt(bitPattern: size), alignment: align)
}

/// memalign is glibc's own legacy function and keeps glibc's rules: an alignment that is
/// not a power of two is rounded up to the next one; above 2^63 it is EINVAL.
@_silgen_name("swiftheap_memalign")
public func swiftheap_memalign(_ alignment: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    var align = UInt(bitPattern: alignment)
    if align <= minAlignment { return allocate(UInt(bitPattern: size)) }
    if align > (UInt(1) << 63) {
        sh_errno_set(EINVAL)
        return nil
    }
    if !isPowerOfTwo(align) { align = UInt(1) << (UInt(UInt.bitWidth) &- UInt(align.leadingZeroBitCount)) }
    return allocateAligned(UInt(bitPattern: size), alignment: align)
}

@_silgen_name("swiftheap_valloc")
public func swiftheap_valloc(_ size: Int) -> UnsafeMutableRawPointer? {
    allocateAligned(UInt(bitPattern: size), alignment: osPageSize)
}

@_silgen_name("swiftheap_pvalloc")
public func swiftheap_pvalloc(_ size: Int) -> UnsafeMutableRawPointer? {
    let (rounded, overflow) = UInt(bitPattern: size).addingReportingOverflow(osPageSize &- 1)
    if overflow {
        sh_errno_set(ENOMEM)
        return nil
    }
    return allocateAligned(max(alignDown(rounded, osPageSize), osPageSize), alignment: osPageSize)
}

@_silgen_name("swiftheap_malloc_usable_size")
public func swiftheap_malloc_usable_size(_ pointer: UnsafeMutableRawPointer?) -> Int {
    Int(bitPattern: usableSize(pointer))
}

@_silgen_name("swiftheap_malloc_trim")
public func swiftheap_malloc_trim(_ pad: Int) -> Int32 {
    let savedErrno = sh_errno_get()
    let released = trimHeap()
    sh_errno_set(savedErrno)
    return released ? 1 : 0
}

/// C++ aligned operator new (the caller handles failure: new-handler, bad_alloc).
@_silgen_name("swiftheap_new_aligned")
public func swiftheap_new_aligned(_ size: Int, _ alignment: Int) -> UnsafeMutableRawPointer? {
    let align = UInt(bitPattern: alignment)
    if !isPowerOfTwo(align) { return nil }
    return allocateAligned(UInt(bitPattern: size), alignment: align)
}

/// Runs from the shared object's constructor: the parts of initialisation that need a
/// working C runtime (the thread-exit key, the fork handlers, the heap profiler).
@_silgen_name("swiftheap_library_init")
public func swiftheap_library_init() {
    if !ensureHeapInitialized() { return }
    // The key may exist already (a thread that ran before this constructor made it);
    // this thread's cache is registered with it either way. Fork safety and the rest do
    // not depend on it.
    processCaches.ensureThreadExitKey()
    let config = Config.fromEnvironment()
    heap.pointee.config = config
    processScavenger.pointee.config = config
    installForkHandlers()
    processScavenger.allowToRun()
    if config.printStats { _ = atexit(printStatsAtExit) }
    startProfilingIfConfigured(config)
}
