// The background scavenger: sweep epochs, the retained-memory goal, pacing, and
// malloc_trim (Go's bgscavenge and scavengeAll, over the generation machinery of
// Scavenge.swift).
//
// Sweep epochs. Pages return to the page allocator as spans empty (Central.release,
// large frees). Each return is counted; when the pages freed since the last epoch
// reach epochPercent of the heap, the freeing path sets an atomic flag — it never
// wakes the scavenger itself (waking may block) — and the scavenger thread, which
// sleeps with a timeout, sees the flag and ends the epoch: scavengeStartGen clones
// inUse into the scavenger's ranges, and the retained-memory goal is reset to the
// live bytes now plus retainPercent. An epoch also ends when the thread's timer finds
// pages were freed but no epoch ended for a second (the heap went idle), and on
// malloc_trim.
//
// Work. While retained memory (mapped, less free pages already released, less pages
// released inside spans) is above the goal, the thread calls scavenge, which reserves
// address ranges from the top of the heap and releases free pages with
// MADV_DONTNEED without the heap lock (the pages are marked allocated while it
// runs). When free pages run out and retained is still above the goal, it releases the
// OS pages inside partly used spans that hold only free objects (once per generation).
// Pages of a small span made from zero pages count as released inside it until an
// object on them is handed out (Central.setUpSpan), so retained memory does not count
// pages the program never touched.
//
// Decay. Reaching the goal leaves up to retainPercent of the heap in free, resident
// pages, and in a heap that keeps churning more: allocations land on other free runs
// than the ones just freed (first fit) while those stay resident. So once the goal is
// met the thread keeps watching the free, resident bytes of the page heap: every tick
// (100 ms) it samples them, and what stayed free for the whole decay window (the
// minimum of the samples over decayMillis, default 200 ms) was not needed in that
// time and is released (jemalloc's dirty decay, by amount rather than page age). A
// generation that runs out of work meanwhile is ended and a new one started. The
// in-span pass runs in decay too, every two windows, and releases only the pages it
// found all free at its previous pass as well (Span.freeOSPagesSeen), so that pages
// of objects that keep being handed out and freed are not faulted in again and again.
//
// Tracing. A `scav` line reports the work since the previous line of its generation:
// one when the generation reaches its goal, one when it ends if decay released more
// meanwhile, and malloc_trim's forced one.
//
// Pacing. The thread's CPU time is charged to a token bucket filled at
// scavengeCPUPercent of one core (default 1%), holding at most scavengeBurstMillis
// (default 200 ms): over any long run the scavenger uses at most its share, yet the
// first second after a large free can release hundreds of MiB at once.
//
// The thread starts lazily, from a free path holding no lock, the first time there is
// an epoch's worth of work; in a forked child it starts again when needed. It blocks
// every signal, so the program's handlers never run on it, and it exits when it is the
// last thread of the process, so that it never keeps a finished program alive.

import CShim

struct ScavengerState {
    /// Futex word the thread sleeps on; malloc_trim bumps it to wake the thread.
    var sleepWord: UInt32 = 0
    /// Set by the free paths (atomic store, no wake) when an epoch's worth was freed.
    var workFlag: UInt32 = 0
    /// Set (atomic) while a generation's goal is not met: the inline runner keeps working
    /// toward it on the next slow paths (ScavengerRunner.swift).
    var goalPendingFlag: UInt32 = 0
    /// 0: no thread; 1: started.
    var threadState: UInt32 = 0
    /// Set once the library constructor has run: the scavenger may run (the config is read).
    var startAllowed: UInt32 = 0
    /// Bytes of OS pages released inside small spans (atomic; central locks guard the spans).
    var inSpanReleasedBytes: UInt64 = 0

    // Guarded by the heap lock:
    /// Page bytes freed since the last epoch ended.
    var freedSinceEpoch: UInt = 0
    /// freedSinceEpoch that ends an epoch.
    var epochThreshold: UInt = 1 << 20
    /// Retained bytes the scavenger works down to.
    var goalBytes: UInt = 0
    /// Monotonic time the last epoch ended.
    var lastEpochNanos: Int64 = 0
    /// Whether the current generation's in-span pass ran, and whether it reached its
    /// goal (from then on only decay releases more).
    var inSpanPassDone: Bool = false
    var goalReached: Bool = true

    /// Bytes of the current generation's work already reported by a trace line.
    var tracedBytes: UInt = 0

    /// The runner's own (ScavengerRunner.swift), guarded by the runner lock:
    var runner = RunnerState()
    /// CPU time the scavenger used, in its thread and inline (atomic, for stats).
    var cpuNanos: UInt64 = 0
}

/// Slots of the decay sample ring: a window of up to 1.6 s at 100 ms ticks.
let decaySampleSlots = 16

struct DecaySamples {
    var words: (UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt,
                UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    /// Records `value` at `index` (mod the ring) and returns the minimum of the last
    /// `count` samples including this one.
    mutating func record(_ value: UInt, at index: Int, window count: Int) -> UInt {
        withUnsafeMutableBytes(of: &words) { raw in
            let slots = raw.baseAddress!.assumingMemoryBound(to: UInt.self)
            slots[index & (decaySampleSlots &- 1)] = value
            var minimum = value
            var k = 1
            while k < count {
                minimum = min(minimum, slots[(index &- k) & (decaySampleSlots &- 1)])
                k &+= 1
            }
            return minimum
        }
    }

    /// Takes `bytes` (released meanwhile) off every sample: they are no longer free and resident.
    mutating func subtract(_ bytes: UInt) {
        withUnsafeMutableBytes(of: &words) { raw in
            let slots = raw.baseAddress!.assumingMemoryBound(to: UInt.self)
            for i in 0..<decaySampleSlots { slots[i] = slots[i] &- min(slots[i], bytes) }
        }
    }
}

/// The scavenger's state in the heap root.
@inline(__always) var scavenger: UnsafeMutablePointer<ScavengerState> {
    heap.pointer(to: \.scavenger)!
}

@inline(__always) var workFlagWord: UnsafeMutablePointer<UInt32> { scavenger.pointer(to: \.workFlag)! }
@inline(__always) var goalPendingWord: UnsafeMutablePointer<UInt32> { scavenger.pointer(to: \.goalPendingFlag)! }
@inline(__always) private var inSpanReleasedWord: UnsafeMutablePointer<UInt64> { scavenger.pointer(to: \.inSpanReleasedBytes)! }

/// Records whether the current generation met its goal (and tells the inline runner).
/// Must hold the heap lock.
func setGoalReachedLocked(_ reached: Bool) {
    scavenger.pointee.goalReached = reached
    sh_store32(goalPendingWord, reached ? 0 : 1)
}

/// Counts pages returned to the page allocator and flags the end of an epoch.
///
/// Must hold the heap lock.
func noteFreedLocked(_ bytes: UInt) {
    let state = scavenger
    state.pointee.freedSinceEpoch &+= bytes
    if state.pointee.freedSinceEpoch >= state.pointee.epochThreshold && sh_load32_relaxed(workFlagWord) == 0 {
        sh_store32(workFlagWord, 1)
    }
}

/// Adjusts the count of OS pages released inside spans (from the central lists).
func noteInSpanReleased(_ delta: Int64) {
    _ = sh_add64(inSpanReleasedWord, UInt64(bitPattern: delta))
}

/// A small span whose objects are all free was just returned to the page allocator:
/// marks those of its pages whose OS pages were all released inside the span (every
/// object on them free since, or never handed out: they read as zero) as scavenged,
/// so that the page heap neither counts them as resident nor releases them again.
///
/// Must hold the heap lock; the pages must be free.
func markReleasedPagesScavengedLocked(base: UInt, pages: UInt, releasedOSPages: UInt64) {
    let osPerPage = pageSize / osPageSize
    let pageMask: UInt64 = (UInt64(1) << UInt64(osPerPage)) &- 1
    let allocator = heap.pointee.pages
    var page: UInt = 0
    while page < pages && (page &+ 1) &* osPerPage <= 64 {
        if (releasedOSPages >> UInt64(page &* osPerPage)) & pageMask == pageMask {
            let address = base &+ page &<< pageShift
            let chunk = allocator.pointee.chunkOf(chunkIndex(address))
            let index = chunkPageIndex(address)
            if chunk.pointee.scavenged.popcntRange(index, 1) == 0 {
                chunk.pointee.scavenged.setRange(index, 1)
                allocator.pointee.scavengedBytes &+= pageSize
            }
        }
        page &+= 1
    }
}

/// Bytes of live objects: small objects handed out of the central lists (including
/// those sitting in thread caches) and large objects. Read without the central locks:
/// an estimate, as Go's heapLive is between GCs.
func liveBytesEstimate() -> UInt {
    let root = heap
    var live = root.pointee.stats.largeBytes
    for cls in 1..<root.pointee.classes.count {
        live &+= (root.pointee.centrals + cls).pointee.allocatedObjects &* UInt(root.pointee.classes.info[cls].size)
    }
    return live
}

/// Memory the process holds from the OS for the heap, by the allocator's count.
///
/// Must hold the heap lock.
func retainedBytesLocked() -> UInt {
    let root = heap
    let released = root.pointee.pages.pointee.scavengedBytes &+ UInt(sh_load64_relaxed(inSpanReleasedWord))
    let mapped = root.pointee.stats.mappedBytes
    return mapped > released ? mapped &- released : 0
}

/// What a generation's trace line reports.
struct ScavengeTrace {
    var generation: UInt32
    var releasedBytes: UInt
    var forced: Bool
}

/// Ends the sweep epoch: starts a scavenge generation and resets the goal. Returns
/// the trace of the generation that ended, if it released anything and was not
/// traced yet (the caller prints it after dropping the lock: stderr may be a pipe).
///
/// Must hold the heap lock.
func endEpochLocked(now: Int64) -> ScavengeTrace? {
    let root = heap
    let state = scavenger
    let trace = untracedWorkLocked(forced: false)
    _ = root.pointee.pages.pointee.scavengeStartGen()
    let live = liveBytesEstimate()
    state.pointee.goalBytes = live &+ live / 100 &* root.pointee.config.retainPercent
    let threshold = root.pointee.stats.mappedBytes / 100 &* root.pointee.config.epochPercent
    state.pointee.epochThreshold = max(threshold, 1 << 20)
    state.pointee.freedSinceEpoch = 0
    state.pointee.lastEpochNanos = now
    state.pointee.inSpanPassDone = false
    setGoalReachedLocked(false)
    state.pointee.tracedBytes = 0
    return trace
}

/// The work of the current generation not yet reported by a trace line, if any, and
/// marks it reported.
///
/// Must hold the heap lock.
func untracedWorkLocked(forced: Bool) -> ScavengeTrace? {
    let scav = heap.pointee.pages.pointee.scav
    let state = scavenger
    if scav.released <= state.pointee.tracedBytes { return nil }
    let work = scav.released &- state.pointee.tracedBytes
    state.pointee.tracedBytes = scav.released
    return ScavengeTrace(generation: scav.gen, releasedBytes: work, forced: forced)
}

/// Prints `scav <gen> <KiB> KiB work, <KiB> KiB total, <N>% util[ (forced)]`.
/// Takes the heap lock briefly for the totals; must not hold it.
func printScavengeTrace(_ trace: ScavengeTrace) {
    heapLock.lock()
    let retained = retainedBytesLocked()
    let released = heap.pointee.stats.mappedBytes &- retained
    heapLock.unlock()
    let live = liveBytesEstimate()
    writeDiagnostic("scav ")
    writeDiagnostic(number: UInt(trace.generation))
    writeDiagnostic(" ")
    writeDiagnostic(number: trace.releasedBytes >> 10)
    writeDiagnostic(" KiB work, ")
    writeDiagnostic(number: released >> 10)
    writeDiagnostic(" KiB total, ")
    writeDiagnostic(number: retained == 0 ? 100 : min(100, live &* 100 / retained))
    writeDiagnostic(trace.forced ? "% util (forced)\n" : "% util\n")
}

/// Releases memory until retained bytes reach `goal`, spending at most `budgetNanos`
/// of this thread's CPU time (unlimited if negative), `stepBytes` at a time (the budget
/// is checked between steps). Returns bytes released and whether the generation ran out
/// of work or reached the goal.
///
/// Takes the heap lock and the central locks; must hold none.
func scavengeTowardGoal(_ goal: UInt, budgetNanos: Int64, stepBytes: UInt = 4 << 20) -> (released: UInt, finished: Bool) {
    let start = sh_thread_cpu_nanos()
    var released: UInt = 0
    while budgetNanos < 0 || sh_thread_cpu_nanos() - start < budgetNanos {
        heapLock.lock()
        let retained = retainedBytesLocked()
        if retained <= goal {
            heapLock.unlock()
            return (released, true)
        }
        let want = min(retained &- goal, stepBytes)
        let pagesReleased = PageAlloc.scavenge(heap.pointee.pages, want, mayUnlock: true)
        let inSpanDone = scavenger.pointee.inSpanPassDone
        if pagesReleased == 0 { scavenger.pointee.inSpanPassDone = true }
        heapLock.unlock()
        released &+= pagesReleased
        if pagesReleased == 0 {
            if inSpanDone { return (released, true) }
            released &+= releaseFreeObjectPages()
        }
    }
    return (released, false)
}

/// Releases, in every class, the OS pages of partly used spans that hold only free
/// objects (if `confirmed`, that did at the previous confirmed pass too). Returns
/// bytes released.
///
/// Takes each central lock in turn; must hold none.
func releaseFreeObjectPages(confirmed: Bool = false) -> UInt {
    var released: UInt = 0
    let root = heap
    for cls in 1..<root.pointee.classes.count {
        released &+= (root.pointee.centrals + cls).releaseFreePages(confirmed: confirmed)
    }
    if released > 0 {
        heapLock.lock()
        heap.pointee.pages.pointee.scav.released &+= released
        heapLock.unlock()
    }
    return released
}

// MARK: - Decay

/// Releases up to `bytes` of free pages for decay: continues this generation, and if
/// it runs out of work (pages freed since it started lie in memory it has searched
/// already) ends it and starts a new one. Returns the bytes released and the trace of
/// a generation that ended, if any.
///
/// Takes the heap lock; must hold none.
func releaseDecayed(_ bytes: UInt) -> (released: UInt, trace: ScavengeTrace?) {
    heapLock.lock()
    var released = PageAlloc.scavenge(heap.pointee.pages, bytes, mayUnlock: true)
    var trace: ScavengeTrace? = nil
    if released < bytes {
        trace = endEpochLocked(now: sh_monotonic_nanos())
        released &+= PageAlloc.scavenge(heap.pointee.pages, bytes &- released, mayUnlock: true)
    }
    heapLock.unlock()
    return (released, trace)
}

/// Free pages of the page heap that are still resident, by its count.
///
/// Must hold the heap lock.
func freeResidentBytesLocked() -> UInt {
    let pages = heap.pointee.pages
    return pages.pointee.freeBytes &- min(pages.pointee.freeBytes, pages.pointee.scavengedBytes)
}

/// malloc_trim: a forced full generation (Go's scavengeAll) releasing every free
/// page, and the free-object pages inside spans. Returns whether anything was released.
///
/// Takes the heap lock and the central locks; must hold none.
func trimHeap() -> Bool {
    if !heapIsReady() { return false }
    heapLock.lock()
    let ended = endEpochLocked(now: sh_monotonic_nanos())
    var released = PageAlloc.scavenge(heap.pointee.pages, UInt.max, mayUnlock: true)
    scavenger.pointee.inSpanPassDone = true
    setGoalReachedLocked(true)
    heapLock.unlock()
    released &+= releaseFreeObjectPages()
    if heap.pointee.config.scavengeTrace {
        if let ended { printScavengeTrace(ended) }
        heapLock.lock()
        let generation = heap.pointee.pages.pointee.scav.gen
        scavenger.pointee.tracedBytes = heap.pointee.pages.pointee.scav.released
        heapLock.unlock()
        printScavengeTrace(ScavengeTrace(generation: generation, releasedBytes: released, forced: true))
    }
    return released > 0
}

extension Int32 {
    @inline(__always) var toBool: Bool { self != 0 }
}
