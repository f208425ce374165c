// The heap root: the process's one instance of every layer, wired together, and its lazy
// bootstrap. Only the bootstrap (here) and the C ABI files (Entry.swift, MallocAPI.swift,
// Fork.swift, Stats.swift) read the root; every layer below works on the instances it
// was made with.
//
// The root lives in the C shim's static area, zero-initialised before any code runs:
// the very first malloc of the process (possibly from the loader, before any
// constructor) finds an unlocked init mutex and initState 0 there, and initialises
// the heap without calling anything that allocates: tables come from metadata memory,
// address space from mmap. The instances are stored in the root itself, so that the fast
// paths reach the size-class table and the span map at fixed addresses.
//
// Wiring, bottom up: the page heap publishes into `events`; each central takes spans from
// the page heap; the cache registry moves objects to and from the centrals; the
// scavenger works on the page heap and the centrals and reads `events`.

import CShim

struct Heap {
    /// Serialises initialisation (rank initialization).
    var initLock = Mutex()
    /// 0: not initialised, 2: ready. Read with acquire on the slow paths.
    var initState: UInt32 = 0
    var classes: SizeClassTable
    var events = HeapEvents()
    var pageHeap: PageHeap
    var centrals: UnsafeMutablePointer<Central>
    var caches: CacheRegistry
    var scavenger: Scavenger
    var config = Config()
    /// Set by fork's prepare handler when it took the locks (Fork.swift); only the
    /// forking thread reads it, in the same fork.
    var forkTookLocks = false
}

/// The process's heap, in the shim's static area. For the bootstrap and the C ABI only.
@inline(__always) var heap: UnsafeMutablePointer<Heap> {
    (sh_static_area() + staticRootOffset).assumingMemoryBound(to: Heap.self)
}

/// The process's page heap, central lists, cache registry and scavenger.
@inline(__always) var processPageHeap: UnsafeMutablePointer<PageHeap> { heap.pointer(to: \.pageHeap)! }
@inline(__always) var processCaches: UnsafeMutablePointer<CacheRegistry> { heap.pointer(to: \.caches)! }
@inline(__always) var processScavenger: UnsafeMutablePointer<Scavenger> { heap.pointer(to: \.scavenger)! }

/// True once the heap is usable. Cheap: one acquire load.
@inline(__always) func heapIsReady() -> Bool {
    sh_load32(heap.pointer(to: \.initState)!) == 2
}

/// Makes the heap usable. Returns false if the kernel refused the memory it needs
/// (the caller fails the allocation with ENOMEM; a later call tries again).
///
/// Takes the init lock; must not hold any allocator lock.
func ensureHeapInitialized() -> Bool {
    if heapIsReady() { return true }
    return initializeHeapSlow()
}

@inline(never) private func initializeHeapSlow() -> Bool {
    let root = heap
    if MemoryLayout<Heap>.size > sh_static_area_bytes() - staticRootOffset {
        fatalInternal("heap root state does not fit the static area")
    }
    let initLock = root.pointer(to: \.initLock)!
    // (Zeroed static memory: the rank is set here, the same value by every thread.)
    initLock.pointee.rank = LockRank.initialization.rawValue
    initLock.lock()
    defer { initLock.unlock() }
    if heapIsReady() { return true }

    guard let classes = SizeClassTable.make(binOffsetStorage: sh_bin_offsets()) else { return false }
    root.pointee.classes = classes
    root.pointee.events = HeapEvents()
    let events = root.pointer(to: \.events)!
    if !PageHeap.initialize(processPageHeap, events: events, spanMap: SpanMap.process) { return false }
    guard let centrals = Central.makeAll(classes: classes, pageHeap: processPageHeap, keptEmptyBytes: defaultKeptEmptyBytes) else { return false }
    root.pointee.centrals = centrals
    if !CacheRegistry.initialize(processCaches, classes: classes, centrals: centrals, pageHeap: processPageHeap) { return false }
    processCaches.pointee.afterThreadExit = afterThreadExitHook
    Scavenger.initialize(processScavenger, pageHeap: processPageHeap, centrals: centrals,
                         classCount: classes.count, events: events, caches: processCaches)
    root.pointee.config = Config()
    sh_store32(root.pointer(to: \.initState)!, 2)
    return true
}
