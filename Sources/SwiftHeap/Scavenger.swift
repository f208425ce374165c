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
    /// 0: no thread; 1: started.
    var threadState: UInt32 = 0
    /// Set once the library constructor has run: threads may be started.
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
    /// Whether the current generation's in-span pass ran, and its trace was printed.
    var inSpanPassDone: Bool = false
    var tracePrinted: Bool = true

    // The scavenger thread's own:
    var tokensNanos: Int64 = 0
    var lastRefillNanos: Int64 = 0
    /// CPU time the scavenger thread used (atomic, for stats).
    var cpuNanos: UInt64 = 0
}

@inline(__always) private var scavenger: UnsafeMutablePointer<ScavengerState> {
    withUnsafeMutablePointer(to: &heap.pointee.scavenger) { $0 }
}

@inline(__always) private var heapLock: UnsafeMutablePointer<Mutex> {
    withUnsafeMutablePointer(to: &heap.pointee.lock) { $0 }
}

private var workFlagWord: UnsafeMutablePointer<UInt32> { withUnsafeMutablePointer(to: &heap.pointee.scavenger.workFlag) { $0 } }
private var threadStateWord: UnsafeMutablePointer<UInt32> { withUnsafeMutablePointer(to: &heap.pointee.scavenger.threadState) { $0 } }
private var startAllowedWord: UnsafeMutablePointer<UInt32> { withUnsafeMutablePointer(to: &heap.pointee.scavenger.startAllowed) { $0 } }
private var sleepWord: UnsafeMutablePointer<UInt32> { withUnsafeMutablePointer(to: &heap.pointee.scavenger.sleepWord) { $0 } }
private var inSpanReleasedWord: UnsafeMutablePointer<UInt64> { withUnsafeMutablePointer(to: &heap.pointee.scavenger.inSpanReleasedBytes) { $0 } }
private var cpuNanosWord: UnsafeMutablePointer<UInt64> { withUnsafeMutablePointer(to: &heap.pointee.scavenger.cpuNanos) { $0 } }

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
    var trace: ScavengeTrace? = nil
    if !state.pointee.tracePrinted && root.pointee.pages.pointee.scav.released > 0 {
        trace = ScavengeTrace(generation: root.pointee.pages.pointee.scav.gen,
                              releasedBytes: root.pointee.pages.pointee.scav.released, forced: false)
    }
    _ = root.pointee.pages.pointee.scavengeStartGen()
    let live = liveBytesEstimate()
    state.pointee.goalBytes = live &+ live / 100 &* root.pointee.config.retainPercent
    let threshold = root.pointee.stats.mappedBytes / 100 &* root.pointee.config.epochPercent
    state.pointee.epochThreshold = max(threshold, 1 << 20)
    state.pointee.freedSinceEpoch = 0
    state.pointee.lastEpochNanos = now
    state.pointee.inSpanPassDone = false
    state.pointee.tracePrinted = false
    return trace
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
/// of this thread's CPU time (unlimited if negative). Returns bytes released and
/// whether the generation ran out of work or reached the goal.
///
/// Takes the heap lock and the central locks; must hold none.
func scavengeTowardGoal(_ goal: UInt, budgetNanos: Int64) -> (released: UInt, finished: Bool) {
    let start = sh_thread_cpu_nanos()
    var released: UInt = 0
    while budgetNanos < 0 || sh_thread_cpu_nanos() - start < budgetNanos {
        heapLock.lock()
        let retained = retainedBytesLocked()
        if retained <= goal {
            heapLock.unlock()
            return (released, true)
        }
        let want = min(retained &- goal, 4 << 20)
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
/// objects. Returns bytes released.
///
/// Takes each central lock in turn; must hold none.
func releaseFreeObjectPages() -> UInt {
    var released: UInt = 0
    let root = heap
    for cls in 1..<root.pointee.classes.count {
        released &+= (root.pointee.centrals + cls).releaseFreePages()
    }
    if released > 0 {
        heapLock.lock()
        heap.pointee.pages.pointee.scav.released &+= released
        heapLock.unlock()
    }
    return released
}

// MARK: - The thread

/// Starts the scavenger thread if an epoch's work is waiting and none runs. Called
/// at the end of free slow paths, holding no lock.
@inline(__always) func maybeStartScavenger() {
    if sh_load32_relaxed(workFlagWord) != 0 && sh_load32_relaxed(threadStateWord) == 0 {
        startScavengerThread()
    }
}

@inline(never) private func startScavengerThread() {
    if sh_load32(startAllowedWord) == 0 || !heap.pointee.config.scavengerEnabled { return }
    if !sh_cas32(threadStateWord, 0, 1).toBool { return }
    var allSignals = sigset_t()
    var previous = sigset_t()
    sigfillset(&allSignals)
    pthread_sigmask(SIG_SETMASK, &allSignals, &previous)
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attributes, 64 << 10)
    var thread = pthread_t()
    let result = pthread_create(&thread, &attributes, scavengerThreadMain, nil)
    pthread_attr_destroy(&attributes)
    pthread_sigmask(SIG_SETMASK, &previous, nil)
    if result != 0 {
        // Leave threadState set: no retry storm. malloc_trim still scavenges.
        return
    }
}

/// Allows the scavenger thread to start (from the library constructor) and resets it
/// in a forked child (the thread does not exist there).
func allowScavengerThread() { sh_store32(startAllowedWord, 1) }
func resetScavengerAfterFork() { sh_store32(threadStateWord, 0) }

private func scavengerThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let state = scavenger
    let config = heap.pointee.config
    let rate = Int64(config.scavengeCPUPercent)  // ns of CPU per 100 ns of wall time
    let bucket = Int64(config.scavengeBurstMillis) &* 1_000_000
    state.pointee.tokensNanos = bucket
    state.pointee.lastRefillNanos = sh_monotonic_nanos()
    while true {
        sh_futex_wait_timeout(sleepWord, sh_load32(sleepWord), 100_000_000)
        // The program's threads are gone (a main that called pthread_exit): leave, so
        // that the process ends as it would without us (ThreadCount.swift).
        if !otherThreadsAlive() {
            sh_store32(threadStateWord, 0)
            return nil
        }
        let now = sh_monotonic_nanos()
        state.pointee.tokensNanos = min(bucket, state.pointee.tokensNanos &+ (now &- state.pointee.lastRefillNanos) &* rate / 100)
        state.pointee.lastRefillNanos = now

        heapLock.lock()
        var endedTrace: ScavengeTrace? = nil
        let idle = state.pointee.freedSinceEpoch > 0 && now &- state.pointee.lastEpochNanos > 1_000_000_000
        if sh_load32(workFlagWord) != 0 || idle {
            sh_store32(workFlagWord, 0)
            endedTrace = endEpochLocked(now: now)
        }
        let goal = max(state.pointee.goalBytes, liveBytesEstimate() / 100 &* (100 &+ config.retainPercent))
        let tracePending = !state.pointee.tracePrinted
        heapLock.unlock()
        if let endedTrace, config.scavengeTrace { printScavengeTrace(endedTrace) }
        if !tracePending || state.pointee.tokensNanos <= 0 { continue }

        let cpuBefore = sh_thread_cpu_nanos()
        let (_, finished) = scavengeTowardGoal(goal, budgetNanos: state.pointee.tokensNanos)
        let spent = sh_thread_cpu_nanos() &- cpuBefore
        state.pointee.tokensNanos &-= spent
        _ = sh_add64(cpuNanosWord, UInt64(spent))
        if finished {
            heapLock.lock()
            state.pointee.tracePrinted = true
            let trace = ScavengeTrace(generation: heap.pointee.pages.pointee.scav.gen,
                                      releasedBytes: heap.pointee.pages.pointee.scav.released, forced: false)
            heapLock.unlock()
            if config.scavengeTrace && trace.releasedBytes > 0 { printScavengeTrace(trace) }
        }
    }
}

/// malloc_trim: a forced full generation (Go's scavengeAll) releasing every free
/// page, and the free-object pages inside spans. Returns whether anything was released.
///
/// Takes the heap lock and the central locks; must hold none.
func trimHeap() -> Bool {
    if !heapIsReady() { return false }
    heapLock.lock()
    _ = endEpochLocked(now: sh_monotonic_nanos())
    var released = PageAlloc.scavenge(heap.pointee.pages, UInt.max, mayUnlock: true)
    scavenger.pointee.inSpanPassDone = true
    scavenger.pointee.tracePrinted = true
    heapLock.unlock()
    released &+= releaseFreeObjectPages()
    if heap.pointee.config.scavengeTrace {
        heapLock.lock()
        let generation = heap.pointee.pages.pointee.scav.gen
        heapLock.unlock()
        printScavengeTrace(ScavengeTrace(generation: generation, releasedBytes: released, forced: true))
    }
    return released > 0
}

extension Int32 {
    @inline(__always) var toBool: Bool { self != 0 }
}
