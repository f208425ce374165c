// The sampling heap profiler: which call stacks hold the live heap, at a cost low
// enough to leave on (tcmalloc's and jemalloc's heap profiles, Go's MemProfileRate).
//
// On/off. SWIFTHEAP_PROFILE=PATH turns it on, from the library constructor. Off, the
// allocator runs exactly as without it: malloc's fast path compares the size against
// a limit in the shim (sh_small_limit) instead of an immediate, no more instructions,
// and free's fast path is untouched. On, the limit is 0, so every malloc takes the
// slow path (allocateSlow), which counts the bytes toward this thread's next sample
// (ProfileSampler.swift) and, unless it is due, pops the thread's cache as the fast
// path would. The aligned and calloc paths count their bytes the same way.
//
// A sample. A sampled allocation gets a large span of its own, whatever its size,
// flagged `profiled` in its span record (as tcmalloc does): its free then takes the
// slow path because its span has no size class, and there drops the sample: nothing
// on the free fast path. A sampled 16-byte object costs a page, once per RATE bytes
// allocated on average. The sample records the program's call stack (ProfileStack.swift)
// and the requested size in the profile table (ProfileTable.swift). A realloc that
// resizes a large object in place counts the bytes it adds toward the next sample,
// and a sampled object resized in place is recorded again at its new size (see
// profileReallocatedInPlace). Allocations made while a thread records a sample are
// not sampled.
//
// Memory. Everything the profiler keeps comes from SwiftHeap's metadata or from mmap
// (ProfileTable.swift), never from malloc.
//
// Output. The profile is written at exit to PATH, on demand by
// swiftheap_profile_dump(path), and every SWIFTHEAP_PROFILE_INTERVAL seconds to
// PATH.1, PATH.2, ... from the sampling slow paths, so that a program with one thread
// gains none (ProfileDump.swift).
//
// Locking. The profile lock guards the table. It is taken holding no allocator lock
// (samples are recorded after the span is allocated and the heap lock released), and
// under it only the metadata lock is taken (persistentAlloc, FixAlloc): it comes first
// in the lock order, and the fork handlers take it first (Fork.swift).

import CShim

/// The profiler's root state, in the shim's zeroed profile area.
struct ProfileState {
    /// Guards `table`.
    var lock = Mutex()
    /// Set once, when profiling starts (before sh_small_limit becomes 0).
    var rate: UInt = 0
    var intervalNanos: UInt64 = 0
    /// Monotonic time of the next interval dump (atomic).
    var nextDumpNanos: UInt64 = 0
    /// The N of the last PATH.N written (atomic).
    var sequence: UInt64 = 0
    /// A copy of SWIFTHEAP_PROFILE (metadata memory).
    var pathTemplate: UnsafeMutablePointer<CChar>? = nil
    /// The process that started profiling: a forked child writes its own profiles only
    /// if PATH names them by process id (%p).
    var ownerPid: Int32 = 0
    var unwinder = Unwinder()
    var table = ProfileTable(rate: 0)
}

@inline(__always) var profile: UnsafeMutablePointer<ProfileState> {
    sh_profile_area().assumingMemoryBound(to: ProfileState.self)
}

/// The profile lock (ProfileState.lock).
@inline(__always) var profileLock: UnsafeMutablePointer<Mutex> {
    profile.pointer(to: \.lock)!
}

/// Whether the heap profiler is on (malloc's fast path is then diverted).
@inline(__always) var profilingOn: Bool { sh_small_limit() == 0 }

@inline(__always) func profileThreadState(_ cache: UnsafeMutableRawPointer) -> UnsafeMutablePointer<ProfileThreadState> {
    cacheHeader(cache).pointer(to: \.profile)!
}

/// Starts the profiler if SWIFTHEAP_PROFILE is set: opens the unwinder, copies the
/// path, registers the exit dump, then diverts malloc's fast path. Writes one line on
/// stderr and leaves profiling off if it cannot start.
///
/// Runs from the library constructor: calls dlopen and atexit; holds no lock.
func startProfilingIfConfigured(_ config: Config) {
    guard let path = config.profilePath, path[0] != 0, config.profileRate > 0 else { return }
    if MemoryLayout<ProfileState>.size > sh_profile_area_bytes() { fatalInternal("profile state does not fit its area") }
    if sh_small_limit() != maxSmallSize { fatalInternal("the shim's small-size limit is not maxSmallSize") }
    let length = strlen(path)
    guard length < 4096, let copy = persistentAlloc(UInt(length) &+ 1) else {
        writeDiagnostic("swiftheap: heap profiling off: SWIFTHEAP_PROFILE is too long\n")
        return
    }
    guard let unwinder = Unwinder.load() else {
        writeDiagnostic("swiftheap: heap profiling off: cannot load the unwinder from libgcc_s.so.1\n")
        return
    }
    memcpy(copy, path, length &+ 1)
    let state = profile
    state.initialize(to: ProfileState())
    state.pointee.rate = config.profileRate
    state.pointee.table = ProfileTable(rate: config.profileRate)
    state.pointee.pathTemplate = copy.assumingMemoryBound(to: CChar.self)
    state.pointee.ownerPid = getpid()
    state.pointee.unwinder = unwinder
    let interval = UInt64(min(config.profileIntervalSeconds, 1 << 30)) &* 1_000_000_000
    state.pointee.intervalNanos = interval
    sh_store64(state.pointer(to: \.nextDumpNanos)!, UInt64(sh_monotonic_nanos()) &+ interval)
    // The unwinder's first walk sets it up (and may allocate): before any sample.
    var frames = FrameBuffer()
    _ = frames.withFrames { unwinder.capture(into: $0) }
    _ = atexit(profileDumpAtExit)
    sh_set_small_limit(0)
}

// MARK: - Hooks on the allocation and free slow paths

/// Counts an allocation of `size` bytes toward this thread's next sample: whether it
/// is to be sampled. Only with profiling on.
///
/// Takes the registry lock if the thread has no cache yet; must hold no allocator lock.
@inline(__always) func profileShouldSample(_ size: UInt) -> Bool {
    guard let cache = sh_tls_get() ?? currentCacheSlow() else { return false }
    let state = profileThreadState(cache)
    if state.pointee.countIfShort(size) { return false }
    return profileCrossed(cache)
}

/// profileShouldSample for a thread that has no cache yet or whose countdown
/// `size` reached (allocateProfiled checked the common case inline).
@inline(never) func profileCrossedSlow(_ size: UInt) -> Bool {
    guard let cache = sh_tls_get() ?? currentCacheSlow() else { return false }
    if profileThreadState(cache).pointee.countIfShort(size) { return false }
    return profileCrossed(cache)
}

/// This thread reached its sample point. The shared no-cache record (threads past
/// their last destructor round) is never written: its threads are not sampled.
@inline(never) private func profileCrossed(_ cache: UnsafeMutableRawPointer) -> Bool {
    if cacheHeader(cache).pointee.isNoCache { return false }
    return profileThreadState(cache).pointee.crossed(rate: profile.pointee.rate, seed: UInt64(UInt(bitPattern: cache)))
}

/// A sampled allocation: a large span of its own, recorded in the profile. Nil if
/// memory is exhausted (the caller then tries its ordinary path).
///
/// Takes the heap lock, then the profile lock; must hold no allocator lock.
@inline(never) func allocateSampled(_ size: UInt, alignment: UInt, zeroed: Bool) -> UnsafeMutableRawPointer? {
    guard let cache = sh_tls_get() else { return nil }
    let savedErrno = sh_errno_get()
    let state = profileThreadState(cache)
    state.pointee.busy = true
    guard let memory = allocateLarge(max(size, 1), alignment: max(alignment, pageSize), zeroed: zeroed, profiled: true) else {
        state.pointee.busy = false
        return nil
    }
    recordSample(address: UInt(bitPattern: memory), size: size)
    state.pointee.busy = false
    sh_errno_set(savedErrno)
    maybeDumpOnInterval()
    return memory
}

/// Captures the stack and records a sample of `size` bytes at `address`.
///
/// Runs the unwinder, then takes the profile lock; must hold no allocator lock.
private func recordSample(address: UInt, size: UInt) {
    var frames = FrameBuffer()
    let depth = frames.withFrames { profile.pointee.unwinder.capture(into: $0) }
    profileLock.lock()
    _ = frames.withFrames { profile.pointee.table.recordAllocation(address: address, size: size, frames: $0, depth: depth) }
    profileLock.unlock()
}

/// A sampled object at `address` is being freed: drops its sample.
///
/// Takes the profile lock; must hold no allocator lock.
@inline(never) func profileRecordFree(_ address: UInt) {
    profileLock.lock()
    _ = profile.pointee.table.recordFree(address: address)
    profileLock.unlock()
    maybeDumpOnInterval()
}

/// realloc resized the large object at `address` in place to `size` bytes; its span
/// held `oldBytes` before. The bytes it gained count toward this thread's next sample
/// (so an object grown in place to s bytes has been sampled with probability
/// 1 - exp(-s / rate), as if allocated at that size); a sampled object is recorded
/// again at its new size, with the stack it was sampled at (no unwinding).
///
/// Takes the profile lock; must hold no allocator lock.
@inline(never) func profileReallocatedInPlace(_ span: UnsafeMutablePointer<Span>, address: UInt, oldBytes: UInt, size: UInt) {
    if span.pointee.profiled {
        profileLock.lock()
        _ = profile.pointee.table.recordResize(address: address, size: size)
        profileLock.unlock()
        return
    }
    let newBytes = span.pointee.pages &<< pageShift
    if newBytes <= oldBytes || !profileShouldSample(newBytes &- oldBytes) { return }
    guard let cache = sh_tls_get() else { return }
    let state = profileThreadState(cache)
    state.pointee.busy = true
    recordSample(address: address, size: size)
    span.pointee.profiled = true
    state.pointee.busy = false
}

/// Room for maxProfileFrames return addresses, on the stack.
struct FrameBuffer {
    var words: (UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt,
                UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt,
                UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt,
                UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
         0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    mutating func withFrames<T>(_ body: (UnsafeMutablePointer<UInt>) -> T) -> T {
        withUnsafeMutableBytes(of: &words) { body($0.baseAddress!.assumingMemoryBound(to: UInt.self)) }
    }
}
