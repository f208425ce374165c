// Thread caches: per thread, per size class, a stack of free objects (Go's mcache,
// tcmalloc's thread cache), reached through the shim's one-pointer initial-exec
// thread-local slot.
//
// malloc and free of a small object touch only the calling thread's cache: no lock,
// no atomic. A bin is a count, a capacity and an array of object addresses kept in
// the cache record, not a list linked through the objects: the fast path reads and
// writes no user memory, and a use-after-free write cannot redirect it. When a bin is
// empty, a refill moves half a bin's worth of objects from the class's central list;
// when it is full, a flush moves the older half back. Objects freed by a thread other
// than the one that allocated them simply land in the freeing thread's cache and
// travel back through the central lists in batches, so cross-thread frees take no
// lock per object, and a producer/consumer pattern is bounded by the bins' capacity.
//
// Frees of objects from a span another thread's cache is drawing from go to a small
// per-class remote bin instead, which is flushed to the central list in batches and
// never reused by the freeing thread: reusing them would interleave two threads'
// objects on the same cache lines (passive false sharing, as in Hoard's tests). A
// span's owner is the cache that last refilled from it; the check is one compare on
// a cache line the free path reads anyway.
//
// A thread's cache is flushed when the thread exits (a pthread key destructor). Other
// destructors may call free after ours, so the key is re-armed until the last
// destructor round; after the last round the thread's slot points at the no-cache
// record, whose bins all have capacity 0, so every malloc and free of that thread
// takes the locked path straight to the central lists — without a test on the fast
// path. Records of exited threads are reused.

import CShim

struct CacheBin {
    var count: UInt32
    var capacity: UInt32
    var slots: UnsafeMutablePointer<UInt>
}

/// Offset of the remote bins after the bins in a cache record.
let remoteBinsOffset = maxSizeClasses * MemoryLayout<CacheBin>.stride
/// Offset of the header after the remote bins.
let cacheHeaderOffset = 2 * maxSizeClasses * MemoryLayout<CacheBin>.stride

/// Per-thread fields that follow the bins.
struct CacheHeader {
    /// Link in the registry's list of live caches.
    var next: UnsafeMutableRawPointer?
    var previous: UnsafeMutableRawPointer?
    /// Key destructor rounds this cache has been through.
    var destructorRounds: UInt32
    /// True for the shared no-cache record.
    var isNoCache: Bool
    /// Refills and flushes this thread has made: the slow-path entries of the thread
    /// cache. Tests use them to see that the fast path takes no slow path.
    var refills: UInt
    var flushes: UInt
    /// The heap profiler's sampling state of this thread (ProfileSampler.swift).
    var profile: ProfileThreadState
}

/// The capacity of a bin: 32 KiB of objects, between 2 and 128 objects. Bins of big
/// classes stay small so that an idle thread's cache holds little memory (every class
/// full is about 2.5 MiB); their objects are big enough that a lock per object or two
/// is cheap next to what the program does with them.
func cacheCapacity(objectSize: UInt) -> UInt32 {
    let byBytes = (32 << 10) / objectSize
    return UInt32(min(128, max(2, byBytes)))
}

/// The capacity of a remote bin: a batch for the central list, at least 2 objects.
func remoteCapacity(objectSize: UInt) -> UInt32 {
    max(2, cacheCapacity(objectSize: objectSize) / 2)
}

/// All thread caches: the record pool, the live list, the no-cache record and the
/// thread-exit key.
struct CacheRegistry {
    var lock = Mutex()
    var pool: FixAlloc
    var live: UnsafeMutableRawPointer? = nil
    var liveCount: UInt = 0
    var noCache: UnsafeMutableRawPointer
    var key: pthread_key_t = 0
    var keyCreated: Bool = false
    /// Bytes of a record: bins, header, slot arrays.
    var recordBytes: UInt

    /// Must be called once, during heap initialisation.
    static func make(classes: SizeClassTable) -> CacheRegistry? {
        var slotCount: UInt = 0
        for cls in 1..<classes.count {
            let size = UInt(classes.info[cls].size)
            slotCount &+= UInt(cacheCapacity(objectSize: size)) &+ UInt(remoteCapacity(objectSize: size))
        }
        let recordBytes = UInt(cacheHeaderOffset + MemoryLayout<CacheHeader>.stride) &+ slotCount &* 8
        guard let noCache = persistentAlloc(UInt(cacheHeaderOffset + MemoryLayout<CacheHeader>.stride), alignment: 64) else { return nil }
        // Zeroed memory: every bin has count 0 and capacity 0.
        noCache.advanced(by: cacheHeaderOffset).assumingMemoryBound(to: CacheHeader.self).pointee.isNoCache = true
        return CacheRegistry(pool: FixAlloc(recordBytes: recordBytes), noCache: noCache, recordBytes: recordBytes)
    }
}

/// glibc's PTHREAD_DESTRUCTOR_ITERATIONS (a macro Swift does not import).
let pthreadDestructorIterations: UInt32 = 4

@inline(__always) func cacheBin(_ cache: UnsafeMutableRawPointer, _ sizeClass: Int) -> UnsafeMutablePointer<CacheBin> {
    (cache + sizeClass &* MemoryLayout<CacheBin>.stride).assumingMemoryBound(to: CacheBin.self)
}

@inline(__always) func remoteBin(_ cache: UnsafeMutableRawPointer, _ sizeClass: Int) -> UnsafeMutablePointer<CacheBin> {
    (cache + remoteBinsOffset + sizeClass &* MemoryLayout<CacheBin>.stride).assumingMemoryBound(to: CacheBin.self)
}

@inline(__always) func cacheHeader(_ cache: UnsafeMutableRawPointer) -> UnsafeMutablePointer<CacheHeader> {
    (cache + cacheHeaderOffset).assumingMemoryBound(to: CacheHeader.self)
}

@inline(__always) var registryLock: UnsafeMutablePointer<Mutex> {
    withUnsafeMutablePointer(to: &heap.pointee.caches.lock) { $0 }
}

/// The calling thread's cache, creating it if the thread has none yet. Returns nil
/// if the heap cannot be initialised (out of memory).
///
/// Takes the init lock and the registry lock; must not hold any allocator lock.
@inline(never) func currentCacheSlow() -> UnsafeMutableRawPointer? {
    if let cache = sh_tls_get() { return cache }
    if !ensureHeapInitialized() { return nil }
    let registry = withUnsafeMutablePointer(to: &heap.pointee.caches) { $0 }
    registryLock.lock()
    let record = registry.pointee.pool.alloc()
    guard let cache = record else {
        registryLock.unlock()
        return nil
    }
    // Lay out the bins' slot arrays after the header.
    let classes = heap.pointee.classes
    var slots = (cache + cacheHeaderOffset + MemoryLayout<CacheHeader>.stride).assumingMemoryBound(to: UInt.self)
    for cls in 1..<classes.count {
        let size = UInt(classes.info[cls].size)
        let capacity = cacheCapacity(objectSize: size)
        cacheBin(cache, cls).initialize(to: CacheBin(count: 0, capacity: capacity, slots: slots))
        slots += Int(capacity)
        let remote = remoteCapacity(objectSize: size)
        remoteBin(cache, cls).initialize(to: CacheBin(count: 0, capacity: remote, slots: slots))
        slots += Int(remote)
    }
    let header = cacheHeader(cache)
    header.pointee.next = registry.pointee.live
    if let first = registry.pointee.live { cacheHeader(first).pointee.previous = cache }
    registry.pointee.live = cache
    registry.pointee.liveCount &+= 1
    let keyCreated = registry.pointee.keyCreated
    let key = registry.pointee.key
    registryLock.unlock()
    // Publish before pthread_setspecific, which may itself call calloc.
    sh_tls_set(cache)
    if keyCreated { _ = pthread_setspecific(key, cache) }
    return cache
}

/// Creates the thread-exit key (from the library constructor, once the C runtime is
/// up: pthread_key_create must not run on the first malloc's path) and registers the
/// calling thread's cache with it.
///
/// Returns false if the key already existed or cannot be created.
///
/// Takes the registry lock.
@discardableResult func createThreadExitKey() -> Bool {
    let registry = withUnsafeMutablePointer(to: &heap.pointee.caches) { $0 }
    if registry.pointee.keyCreated { return false }
    var key: pthread_key_t = 0
    if pthread_key_create(&key, threadCacheDestructor) != 0 { return false }
    registryLock.lock()
    registry.pointee.key = key
    registry.pointee.keyCreated = true
    registryLock.unlock()
    if let cache = sh_tls_get(), !cacheHeader(cache).pointee.isNoCache {
        _ = pthread_setspecific(key, cache)
    }
    return true
}

/// The pthread key destructor: flushes the exiting thread's cache. Re-arms itself
/// until the last destructor round so that frees from later destructors are cached
/// and flushed again; after it, the thread uses the no-cache record.
private func threadCacheDestructor(_ argument: UnsafeMutableRawPointer?) {
    guard let cache = argument else { return }
    let savedErrno = sh_errno_get()
    flushCache(cache)
    let header = cacheHeader(cache)
    let registry = withUnsafeMutablePointer(to: &heap.pointee.caches) { $0 }
    if header.pointee.destructorRounds &+ 1 < pthreadDestructorIterations {
        header.pointee.destructorRounds &+= 1
        _ = pthread_setspecific(registry.pointee.key, cache)
    } else {
        sh_tls_set(registry.pointee.noCache)
        retireCache(cache)
    }
    sh_errno_set(savedErrno)
}

/// Returns every cached object to the central lists.
///
/// Takes central locks; must not hold any allocator lock.
func flushCache(_ cache: UnsafeMutableRawPointer) {
    let classCount = heap.pointee.classes.count
    for cls in 1..<classCount {
        releaseAll(cacheBin(cache, cls), sizeClass: cls)
        releaseAll(remoteBin(cache, cls), sizeClass: cls)
    }
}

/// Returns every object of a bin to the class's central list.
///
/// Takes the class's central lock.
private func releaseAll(_ bin: UnsafeMutablePointer<CacheBin>, sizeClass: Int) {
    let count = Int(bin.pointee.count)
    if count > 0 {
        (heap.pointee.centrals + sizeClass).release(bin.pointee.slots, count: count)
        bin.pointee.count = 0
    }
}

/// Unlinks an (already flushed) cache from the live list and returns it to the pool.
///
/// Takes the registry lock.
private func retireCache(_ cache: UnsafeMutableRawPointer) {
    let registry = withUnsafeMutablePointer(to: &heap.pointee.caches) { $0 }
    registryLock.lock()
    let header = cacheHeader(cache)
    if let previous = header.pointee.previous {
        cacheHeader(previous).pointee.next = header.pointee.next
    } else {
        registry.pointee.live = header.pointee.next
    }
    if let next = header.pointee.next { cacheHeader(next).pointee.previous = header.pointee.previous }
    registry.pointee.liveCount &-= 1
    registry.pointee.pool.free(cache)
    registryLock.unlock()
}

// MARK: - Slow paths of the thread cache

/// Refills an empty bin and returns one object, or 0 if out of memory. The no-cache
/// record (capacity 0) gets a single object straight from the central list.
///
/// Takes the class's central lock.
@inline(never) func refillBin(_ cache: UnsafeMutableRawPointer, _ sizeClass: Int) -> UInt {
    let bin = cacheBin(cache, sizeClass)
    let central = heap.pointee.centrals + sizeClass
    let capacity = Int(bin.pointee.capacity)
    if capacity == 0 {
        var object: UInt = 0
        return central.refill(into: &object, want: 1, owner: cache) == 1 ? object : 0
    }
    cacheHeader(cache).pointee.refills &+= 1
    let got = central.refill(into: bin.pointee.slots, want: capacity / 2, owner: cache)
    if got == 0 { return 0 }
    bin.pointee.count = UInt32(got &- 1)
    return bin.pointee.slots[got &- 1]
}

/// Makes room in a full bin by moving its older half to the central list, then
/// caches `object`. The no-cache record returns the object straight to its span.
///
/// Takes the class's central lock.
@inline(never) func flushBinAndPush(_ cache: UnsafeMutableRawPointer, _ sizeClass: Int, _ object: UInt) {
    let bin = cacheBin(cache, sizeClass)
    let central = heap.pointee.centrals + sizeClass
    let capacity = Int(bin.pointee.capacity)
    if capacity == 0 {
        var single = object
        central.release(&single, count: 1)
        return
    }
    cacheHeader(cache).pointee.flushes &+= 1
    let flushCount = capacity / 2
    let slots = bin.pointee.slots
    central.release(slots, count: flushCount)
    let kept = Int(bin.pointee.count) &- flushCount
    memmove(slots, slots + flushCount, kept &* MemoryLayout<UInt>.stride)
    slots[kept] = object
    bin.pointee.count = UInt32(kept &+ 1)
}

/// The calling thread's cache record, for tests.
func sh_tls_get_for_tests() -> UnsafeMutableRawPointer? { sh_tls_get() }

/// Caches an object freed from a span another cache draws from, in the class's remote
/// bin; a full remote bin goes back to the central list first. The no-cache record
/// (capacity 0) returns the object straight to its span.
///
/// Takes the class's central lock when the bin is full.
@inline(never) func pushRemote(_ cache: UnsafeMutableRawPointer, _ sizeClass: Int, _ object: UInt) {
    let bin = remoteBin(cache, sizeClass)
    if bin.pointee.count == bin.pointee.capacity {
        if bin.pointee.capacity == 0 {
            var single = object
            (heap.pointee.centrals + sizeClass).release(&single, count: 1)
            return
        }
        releaseAll(bin, sizeClass: sizeClass)
    }
    bin.pointee.slots[Int(bin.pointee.count)] = object
    bin.pointee.count &+= 1
}
