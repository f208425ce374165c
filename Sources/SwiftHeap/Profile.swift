// The sampling heap profiler: which call stacks hold the live heap, at a cost low
// enough to leave on (tcmalloc's and jemalloc's heap profiles, Go's MemProfileRate).
// It sits at the top, beside the C ABI: Entry.swift's slow paths call the hooks below,
// which use the layers under them (the thread caches' per-thread countdown, the page
// heap's large spans) and the profiler's own tables (ProfileTable.swift, ProfileStack.swift).
//
// On/off. SWIFTHEAP_PROFILE=PATH turns it on, from the library constructor. Off, the
// allocator runs exactly as without it: malloc's fast path compares the size against
// a limit in the shim (sh_small_limit) instead of an immediate, no more instructions,
// and free's fast path is untouched. On, the limit is 0, so every malloc takes the
// slow path (allocateSlow → allocateProfiled), which counts the bytes toward this
// thread's next sample (ProfileSampler.swift) and, unless it is due, serves the
// request as the fast path would. calloc of a large size and the aligned allocations
// count their bytes the same way (profileSample).
//
// A sample. A sampled allocation gets a large span of its own, whatever its size,
// flagged `profiled` in its span record (as tcmalloc does): its free then takes the
// slow path because its span has no size class, and there drops the sample: nothing
// on the free fast path. A sampled 16-byte object costs a page, once per RATE bytes
// allocated on average. The sample records the program's call stack (ProfileStack.swift)
// and the requested size in the profile table (ProfileTable.swift). realloc keeps a
// sampled object in its span whatever its new size (Entry.swift) and the table moves
// it to its new size (profileResized); a realloc that grows an unsampled large object
// in place counts the bytes it adds toward the next sample. Allocations made while a
// thread records a sample (by the unwinder, or a signal handler) are not sampled.
//
// Memory. Everything the profiler keeps comes from SwiftHeap's metadata or from mmap
// (ProfileTable.swift), never from malloc.
//
// Output. The profile is written at exit to PATH, on demand by
// swiftheap_profile_dump(path), and every SWIFTHEAP_PROFILE_INTERVAL seconds to
// PATH.1, PATH.2, ... from the sampling slow paths, so that a program with one thread
// gains none (ProfileDump.swift).
//
// Locking. The profile lock (rank profile, LockRanks.swift) guards the table. It is
// taken holding no allocator lock (a sample is recorded after its span is allocated
// and the page heap's lock released; its free drops the sample before the span goes
// back), and under it only the metadata lock is taken (persistentAlloc, FixAlloc).
// The fork handlers take it in its rank (Fork.swift).

import CShim

/// The profiler's root state, in the shim's zeroed profile area.
struct ProfileState {
    /// Guards `table`.
    var lock = Mutex(rank: .profile)
    /// Set once, when profiling starts (before sh_small_limit becomes 0).
    var rate: UInt = 0
    var intervalNanos: UInt64 = 0
    /// Monotonic time of the next interval dump (atomic).
    var nextDumpNanos: UInt64 = 0
    /// The N of the last PATH.N written (atomic).
    var sequence: UInt64 = 0
    /// SWIFTHEAP_PROFILE, in metadata memory (Config).
    var pathTemplate: UnsafePointer<CChar>? = nil
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

/// Starts the profiler if SWIFTHEAP_PROFILE is set: opens the unwinder, registers the
/// exit dump, then diverts malloc's fast path. Writes one line on stderr and leaves
/// profiling off if it cannot start.
///
/// Runs from the library constructor: calls dlopen and atexit; holds no lock.
func startProfilingIfConfigured(_ config: Config) {
    guard let path = config.profilePath, config.profileRate > 0 else { return }
    if MemoryLayout<ProfileState>.size > sh_profile_area_bytes() { fatalInternal("profile state does not fit its area") }
    if sh_small_limit() != maxSmallSize { fatalInternal("the shim's small-size limit is not maxSmallSize") }
    guard let unwinder = Unwinder.load() else {
        writeDiagnostic("swiftheap: heap profiling off: cannot load the unwinder from libgcc_s.so.1\n")
        return
    }
    let state = profile
    state.initialize(to: ProfileState())
    state.pointee.rate = config.profileRate
    state.pointee.table = ProfileTable(rate: config.profileRate)
    state.pointee.pathTemplate = path
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

// MARK: - Hooks on the C ABI's slow paths (Entry.swift)

/// malloc's slow path while profiling: counts `size` toward this thread's next sample
/// and, short of it, serves the request as the fast path and the slow path below the
/// profiler would; otherwise the allocation may be sampled. Inlined into allocateSlow,
/// so that the common case (counted, served from the thread's bin) is one function
/// with one prologue.
///
/// Holds no lock in the common case; see allocateUnsampled and allocateSampling.
@inline(__always) func allocateProfiled(_ size: UInt) -> UnsafeMutableRawPointer? {
    guard let slot = sh_tls_get(),
          UnsafeMutablePointer<ThreadCache>(slot: slot).profileState.pointee.countIfShort(size) else {
        return allocateSampling(size)
    }
    if let object = cacheAllocateFast(size, limit: maxSmallSize, binOffsets: sh_bin_offsets()) { return object }
    return allocateUnsampled(size)
}

/// malloc of `size` bytes that reached this thread's sample point (or made by a thread
/// with no cache yet): sampled, or made as without the profiler.
///
/// See profileSample and allocateUnsampled.
@inline(never) func allocateSampling(_ size: UInt) -> UnsafeMutableRawPointer? {
    if let sampled = profileSample(size, alignment: minAlignment, zeroed: false) { return sampled }
    return allocateUnsampled(size)
}

/// Counts an allocation of `size` bytes aligned to `alignment` (zeroed for calloc)
/// toward this thread's next sample; if it reaches it, makes the allocation as a sample
/// and returns it. Nil: not sampled (or no memory for a sample), and the caller makes
/// the allocation its own way. Only with profiling on; the heap is initialised.
///
/// Takes the registry lock if the thread has no cache yet; a sample takes the page
/// heap's lock, runs the unwinder and takes the profile lock. Must hold no allocator lock.
@inline(never) func profileSample(_ size: UInt, alignment: UInt, zeroed: Bool) -> UnsafeMutableRawPointer? {
    guard let cache = processCaches.currentCache() else { return nil }
    let state = cache.profileState
    if state.pointee.countIfShort(size) || !profileCrossed(cache, size: size) { return nil }
    state.pointee.busy = true
    defer { state.pointee.busy = false }
    guard let memory = allocateLarge(max(size, 1), alignment: max(alignment, pageSize), zeroed: zeroed) else { return nil }
    let address = UInt(bitPattern: memory)
    // The object is the caller's alone until it returns: its span's flag is ours to set.
    heap.pointee.pageHeap.spanMap.span(containing: address).unsafelyUnwrapped.pointee.profiled = true
    recordSample(address: address, size: size)
    maybeDumpOnInterval()
    return memory
}

/// This thread's allocation of `size` bytes reached its sample point: whether it is sampled (see
/// ProfileThreadState.crossed). The shared no-cache record (threads past their last
/// destructor round) is never written: those threads are not sampled.
@inline(never) private func profileCrossed(_ cache: UnsafeMutablePointer<ThreadCache>, size: UInt) -> Bool {
    if cache.header.pointee.isNoCache { return false }
    return cache.profileState.pointee.crossed(size: size, rate: profile.pointee.rate, seed: UInt64(UInt(bitPattern: cache)))
}

/// Captures the stack and records a sample of `size` bytes at `address`; errno is kept.
///
/// Runs the unwinder, then takes the profile lock; must hold no allocator lock.
private func recordSample(address: UInt, size: UInt) {
    let savedErrno = sh_errno_get()
    var frames = FrameBuffer()
    let depth = frames.withFrames { profile.pointee.unwinder.capture(into: $0) }
    profileLock.lock()
    _ = frames.withFrames { profile.pointee.table.recordAllocation(address: address, size: size, frames: $0, depth: depth) }
    profileLock.unlock()
    sh_errno_set(savedErrno)
}

/// The sampled object at `address` is being freed (its span is still allocated):
/// drops its sample.
///
/// Takes the profile lock; must hold no allocator lock.
@inline(never) func profileFree(_ address: UInt) {
    profileLock.lock()
    _ = profile.pointee.table.recordFree(address: address)
    profileLock.unlock()
    maybeDumpOnInterval()
}

/// realloc resized the large object at `old` in place (or, for an object mapped on its
/// own, by mremap) to `size` bytes, now at `new`; its span held `oldBytes` before. A
/// sampled object is recorded at its new address and size, with the stack it was
/// sampled at (no unwinding). Otherwise the bytes the span gained count toward this
/// thread's next sample, so that an object grown in place to s bytes has been sampled
/// with probability 1 - exp(-s / rate), as if allocated at that size.
///
/// Takes the profile lock, or see profileSample; must hold no allocator lock.
@inline(never) func profileResized(_ span: UnsafeMutablePointer<Span>, from old: UInt, to new: UInt, oldBytes: UInt, size: UInt) {
    if span.pointee.profiled {
        profileLock.lock()
        _ = profile.pointee.table.recordResize(address: old, to: new, size: size)
        profileLock.unlock()
        return
    }
    let newBytes = span.pointee.pages &<< pageShift
    guard newBytes > oldBytes, let cache = processCaches.currentCache() else { return }
    let state = cache.profileState
    if state.pointee.countIfShort(newBytes &- oldBytes) || !profileCrossed(cache, size: newBytes &- oldBytes) { return }
    state.pointee.busy = true
    recordSample(address: new, size: size)
    span.pointee.profiled = true
    state.pointee.busy = false
}

extension UnsafeMutablePointer where Pointee == ThreadCache {
    /// This thread's sampling state (its cache record's).
    @inline(__always) var profileState: UnsafeMutablePointer<ProfileThreadState> { header.pointer(to: \.profile)! }
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
