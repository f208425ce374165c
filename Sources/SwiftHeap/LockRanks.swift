// The lock order: the one list of SwiftHeap's locks, outermost first. A thread holding a
// lock may take only locks of a higher rank (tryLock excepted: it cannot deadlock).
// Fork.swift takes them all in this order; every "Must hold / Takes" contract in the
// other files follows from it.
//
//   initialization   Heap.initLock: serialises the heap's bootstrap (Heap.swift)
//   scavengerRunner  Scavenger's runner lock: one tick at a time (ScavengerRunner.swift);
//                    fork does not take it (the child reinitialises it)
//   cacheRegistry    the thread caches' registry: records, the live list (ThreadCache.swift)
//   profile          the heap profiler's table: buckets and live samples (Profile.swift)
//   central + class  each size class's central list, in class order (Central.swift)
//   pageHeap         the page heap: page allocator, span records, span map writes (PageHeap.swift)
//   metadata         persistentAlloc's cursor (Metadata.swift)
//
// In the `swift test` build (SWIFTHEAP_LOCK_RANKS) every lock() checks the order against
// the ranks the calling thread holds and traps with the two ranks named when it is
// broken; the library itself compiles the checks away.

import CShim

/// A lock's place in the lock order (see the file comment).
struct LockRank: RawRepresentable, Equatable {
    var rawValue: UInt32
    init(rawValue: UInt32) { self.rawValue = rawValue }

    static let initialization = LockRank(rawValue: 1)
    static let scavengerRunner = LockRank(rawValue: 2)
    static let cacheRegistry = LockRank(rawValue: 3)
    static let profile = LockRank(rawValue: 4)
    /// Central lists take central(class): 16 + class.
    static func central(_ sizeClass: Int) -> LockRank { LockRank(rawValue: 16 &+ UInt32(truncatingIfNeeded: sizeClass)) }
    static let pageHeap = LockRank(rawValue: 200)
    static let metadata = LockRank(rawValue: 201)
}

#if SWIFTHEAP_LOCK_RANKS
/// The ranks this thread holds, in the order taken (test build only; a thread-specific
/// array from the test process's own malloc, since the test build is ordinary Swift).
private var heldRanksKey: pthread_key_t = 0
private var heldRanksKeyState: UInt32 = 0  // 0 none, 1 creating, 2 ready

private func heldRanks() -> UnsafeMutablePointer<UInt32> {
    withUnsafeMutablePointer(to: &heldRanksKeyState) { state in
        if sh_load32(state) != 2 {
            if sh_cas32(state, 0, 1) != 0 {
                withUnsafeMutablePointer(to: &heldRanksKey) { _ = pthread_key_create($0, nil) }
                sh_store32(state, 2)
            }
            while sh_load32(state) != 2 { sh_cpu_relax() }
        }
    }
    if let existing = pthread_getspecific(heldRanksKey) { return existing.assumingMemoryBound(to: UInt32.self) }
    // [0]: count, then up to 127 ranks.
    let fresh = UnsafeMutablePointer<UInt32>.allocate(capacity: 128)
    fresh.initialize(repeating: 0, count: 128)
    _ = pthread_setspecific(heldRanksKey, fresh)
    return fresh
}

@inline(never) func checkLockOrder(_ rank: UInt32) {
    if rank == 0 { return }
    let held = heldRanks()
    let count = Int(held[0])
    if count > 0 && held[count] >= rank {
        writeDiagnostic("swiftheap: lock order violated: taking rank ")
        writeDiagnostic(number: UInt(rank))
        writeDiagnostic(" while holding rank ")
        writeDiagnostic(number: UInt(held[count]))
        writeDiagnostic("\n")
        abort()
    }
    noteLockTaken(rank)
}

@inline(never) func noteLockTaken(_ rank: UInt32) {
    if rank == 0 { return }
    let held = heldRanks()
    let count = Int(held[0])
    if count >= 127 { fatalInternal("lock ranks: too many locks held") }
    // Kept sorted, so that a tryLock taken out of order still leaves the highest last.
    var i = count &+ 1
    while i > 1 && held[i &- 1] > rank {
        held[i] = held[i &- 1]
        i &-= 1
    }
    held[i] = rank
    held[0] = UInt32(count &+ 1)
}

@inline(never) func noteLockReleased(_ rank: UInt32) {
    if rank == 0 { return }
    let held = heldRanks()
    let count = Int(held[0])
    var i = count
    while i >= 1 && held[i] != rank { i &-= 1 }
    if i < 1 { fatalInternal("lock ranks: unlock of a lock this thread does not hold") }
    while i < count {
        held[i] = held[i &+ 1]
        i &+= 1
    }
    held[0] = UInt32(count &- 1)
}

/// The ranks the calling thread holds (tests).
func heldLockRanks() -> [UInt32] {
    let held = heldRanks()
    return (0..<Int(held[0])).map { held[$0 &+ 1] }
}
#else
@inline(__always) func checkLockOrder(_ rank: UInt32) {}
@inline(__always) func noteLockTaken(_ rank: UInt32) {}
@inline(__always) func noteLockReleased(_ rank: UInt32) {}
#endif
