// Who runs the scavenger's work: a background thread in programs that run threads of
// their own, and the allocator's own slow paths in programs that do not.
//
// A process with one thread must stay one thread (DESIGN.md): the kernel refuses
// unshare(CLONE_NEWUSER) and setns to a multithreaded process, and sandboxes rely on
// them; and a pthread_create from inside free would allocate on the pages just freed.
// So the work has two runners that share one step (scavengerTick) and one CPU budget:
//
//   * inline: the slow paths that move pages — a span taken from or given back to the
//     page heap, a large object allocated or freed — end with scavengerPoke(), holding no
//     lock. It runs a tick when work is flagged (an epoch's worth freed, a generation's
//     goal not yet met) or a tick period (100 ms) has passed since the last one, with at
//     most inlineSliceNanos of CPU and inlineStepBytes per release step: no call of
//     malloc or free stalls for long, and a burst of frees releases its memory as it goes.
//     Between ticks the free, resident bytes of the page heap change only at such events,
//     so decay's samples for the ticks that had no call repeat the last value.
//   * thread: once the program runs other threads (glibc's __libc_single_threaded, then
//     /proc/self/stat, checked at most once a second), an allocation slow path that finds
//     work flagged starts the thread (never a free: pthread_create would reuse the block
//     just freed). It ticks every 100 ms with the whole budget, blocks every signal, and
//     exits when the program's other threads are gone (ThreadCount.swift) or after
//     quietTicksBeforeExit ticks with nothing to do; it is started again when needed, and
//     in a forked child (where it does not exist) only once that child runs threads.
//
// Pacing: CPU time is charged to a token bucket filled at scavengeCPUPercent of one core
// (default 1%), holding at most scavengeBurstMillis (default 200 ms), whichever runner
// spends it.
//
// Locking: the runner lock guards RunnerState and serialises the runners (the thread
// takes it for each tick; the inline runner only tries it and skips when busy). It is
// taken before, and never while holding, any other allocator lock. fork does not take it
// (a tick may be long); the child reinitialises it: RunnerState holds only pacing figures,
// which a fork can at worst leave stale.

import CShim

/// The runners' state, guarded by the runner lock.
struct RunnerState {
    var lock = Mutex()
    /// Free, resident bytes of the page heap sampled each tick (a ring of
    /// decaySampleSlots; the latest decayTicks count), less what was released since.
    var freeSamples = DecaySamples()
    var sampleIndex: Int = 0
    var lastSample: UInt = 0
    var lastTickNanos: Int64 = 0
    var lastInSpanPassNanos: Int64 = 0
    var tokensNanos: Int64 = 0
    var lastRefillNanos: Int64 = 0
    var started: Bool = false
    /// Consecutive thread ticks with nothing to do.
    var quietTicks: Int = 0
    /// freedSinceEpoch seen by the last tick (new frees make a tick not quiet).
    var lastFreedSinceEpoch: UInt = 0
    /// When the program's thread count was last read, and what it said.
    var threadCheckNanos: Int64 = 0
    var programHasThreads: Bool = false
}

/// The scavenger's tick period.
let scavengerTickNanos: Int64 = 100_000_000
/// CPU time one inline tick may spend.
let inlineSliceNanos: Int64 = 500_000
/// Bytes one inline release step asks for (the slice is checked between steps).
let inlineStepBytes: UInt = 1 << 20
/// Thread ticks with nothing to do before the thread exits (5 s).
let quietTicksBeforeExit = 50
/// How often the program's thread count is read from /proc (once the libc says it has run threads).
let threadCheckIntervalNanos: Int64 = 1_000_000_000

/// Free-page releases smaller than this wait for the next tick (a madvise per few pages
/// costs more than the memory is worth).
let decayMinimumBytes: UInt = 256 << 10

@inline(__always) private var runner: UnsafeMutablePointer<RunnerState> { scavenger.pointer(to: \.runner)! }
@inline(__always) private var runnerLock: UnsafeMutablePointer<Mutex> { runner.pointer(to: \.lock)! }
@inline(__always) private var threadStateWord: UnsafeMutablePointer<UInt32> { scavenger.pointer(to: \.threadState)! }
@inline(__always) private var startAllowedWord: UnsafeMutablePointer<UInt32> { scavenger.pointer(to: \.startAllowed)! }
@inline(__always) private var sleepWord: UnsafeMutablePointer<UInt32> { scavenger.pointer(to: \.sleepWord)! }
@inline(__always) private var cpuNanosWord: UnsafeMutablePointer<UInt64> { scavenger.pointer(to: \.cpuNanos)! }

/// Allows the scavenger to run (from the library constructor, once the config is read).
func allowScavengerThread() { sh_store32(startAllowedWord, 1) }

/// In a forked child: no scavenger thread exists there, and the runner lock may have
/// been held by it.
func resetScavengerAfterFork() {
    sh_store32(threadStateWord, 0)
    runnerLock.reinitialize()
}

/// Whether the scavenger thread is running (for tests and stats).
func scavengerThreadRunning() -> Bool { sh_load32(threadStateWord) != 0 }

// MARK: - The inline runner

/// Called at the end of the slow paths that move pages, holding no lock: runs a bounded
/// tick inline, or starts the thread (see the file comment). `allocating`: called from an
/// allocation, where the thread may be started.
@inline(__always) func scavengerPoke(allocating: Bool) {
    if sh_load32_relaxed(threadStateWord) != 0 { return }
    scavengerPokeSlow(allocating: allocating)
}

@inline(never) private func scavengerPokeSlow(allocating: Bool) {
    if sh_load32(startAllowedWord) == 0 || !heap.pointee.config.scavengerEnabled { return }
    let flagged = sh_load32_relaxed(workFlagWord) != 0 || sh_load32_relaxed(goalPendingWord) != 0
    let now = sh_monotonic_nanos()
    if !flagged && now &- runner.pointee.lastTickNanos < scavengerTickNanos { return }
    if !runnerLock.tryLock() { return }
    if allocating && flagged && programRunsThreads(now) {
        runnerLock.unlock()
        startScavengerThread()
        return
    }
    let spent = scavengerTick(now: now, inline: true).spentNanos
    runnerLock.unlock()
    _ = sh_add64(cpuNanosWord, UInt64(spent))
}

/// Whether the program runs threads besides the caller (a stale answer is at most a
/// second old). Must hold the runner lock.
private func programRunsThreads(_ now: Int64) -> Bool {
    if sh_libc_single_threaded() != 0 { return false }
    let state = runner
    if state.pointee.threadCheckNanos == 0 || now &- state.pointee.threadCheckNanos >= threadCheckIntervalNanos {
        state.pointee.threadCheckNanos = now
        state.pointee.programHasThreads = otherThreadsAlive()
    }
    return state.pointee.programHasThreads
}

// MARK: - The thread

@inline(never) private func startScavengerThread() {
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
    // On failure the inline runner carries on; leave threadState set only while a
    // thread exists.
    if result != 0 { sh_store32(threadStateWord, 0) }
}

private func scavengerThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    runnerLock.lock()
    runner.pointee.quietTicks = 0
    runnerLock.unlock()
    while true {
        sh_futex_wait_timeout(sleepWord, sh_load32(sleepWord), scavengerTickNanos)
        // The program's threads are gone (a main that called pthread_exit): leave, so
        // that the process ends as it would without us (ThreadCount.swift).
        if !otherThreadsAlive() { break }
        runnerLock.lock()
        let (spent, busy) = scavengerTick(now: sh_monotonic_nanos(), inline: false)
        let state = runner
        state.pointee.quietTicks = busy ? 0 : state.pointee.quietTicks &+ 1
        let quiet = state.pointee.quietTicks >= quietTicksBeforeExit
        runnerLock.unlock()
        _ = sh_add64(cpuNanosWord, UInt64(spent))
        if quiet { break }
    }
    sh_store32(threadStateWord, 0)
    return nil
}

// MARK: - The tick

/// One step of the scavenger: ends the sweep epoch if one is due, records decay's
/// sample, and spends up to the runner's slice of the CPU budget releasing memory toward
/// the goal, or, once it is met, what stayed free for the decay window. Returns the CPU
/// time spent and whether there was anything to do.
///
/// Must hold the runner lock and no other allocator lock; takes the heap and central locks.
func scavengerTick(now: Int64, inline: Bool) -> (spentNanos: Int64, busy: Bool) {
    let state = runner
    let config = heap.pointee.config
    let rate = Int64(config.scavengeCPUPercent)  // ns of CPU per 100 ns of wall time
    let bucket = Int64(config.scavengeBurstMillis) &* 1_000_000
    let decayTicks = config.decayMillis == 0 ? 0 : Int(min(max(config.decayMillis / 100, 1), UInt(decaySampleSlots)))
    if !state.pointee.started {
        state.pointee.started = true
        state.pointee.tokensNanos = bucket
        state.pointee.lastRefillNanos = now
        state.pointee.lastTickNanos = now &- scavengerTickNanos
    }
    state.pointee.tokensNanos = min(bucket, state.pointee.tokensNanos &+ (now &- state.pointee.lastRefillNanos) &* rate / 100)
    state.pointee.lastRefillNanos = now
    // Ticks since the last one: at least one; more when the inline runner had no call.
    let elapsedTicks = Int(min(max((now &- state.pointee.lastTickNanos) / scavengerTickNanos, 1), Int64(decaySampleSlots)))
    state.pointee.lastTickNanos = now

    heapLock.lock()
    var endedTrace: ScavengeTrace? = nil
    let scav = scavenger
    let freed = scav.pointee.freedSinceEpoch
    let idle = freed > 0 && now &- scav.pointee.lastEpochNanos > 1_000_000_000
    let epochEnded = sh_load32(workFlagWord) != 0 || idle
    if epochEnded {
        sh_store32(workFlagWord, 0)
        endedTrace = endEpochLocked(now: now)
    }
    let goal = max(scav.pointee.goalBytes, liveBytesEstimate() / 100 &* (100 &+ config.retainPercent))
    let goalPending = !scav.pointee.goalReached
    let freeResident = freeResidentBytesLocked()
    heapLock.unlock()
    var busy = epochEnded || goalPending || freed != state.pointee.lastFreedSinceEpoch
    state.pointee.lastFreedSinceEpoch = epochEnded ? 0 : freed

    // What stayed free and resident over the whole window. Ticks without a call (inline)
    // saw the value of the last sample.
    var unneeded: UInt = 0
    if decayTicks > 0 {
        var k = 1
        while k < elapsedTicks {
            _ = state.pointee.freeSamples.record(state.pointee.lastSample, at: state.pointee.sampleIndex, window: decayTicks)
            state.pointee.sampleIndex &+= 1
            k &+= 1
        }
        unneeded = state.pointee.freeSamples.record(freeResident, at: state.pointee.sampleIndex, window: decayTicks)
        state.pointee.sampleIndex &+= 1
        state.pointee.lastSample = freeResident
    }
    if let endedTrace, config.scavengeTrace { printScavengeTrace(endedTrace) }
    if state.pointee.tokensNanos <= 0 { return (0, busy) }

    let slice = inline ? min(state.pointee.tokensNanos, inlineSliceNanos) : state.pointee.tokensNanos
    let cpuBefore = sh_thread_cpu_nanos()
    if goalPending {
        let (released, finished) = scavengeTowardGoal(goal, budgetNanos: slice,
                                                      stepBytes: inline ? inlineStepBytes : 4 << 20)
        state.pointee.freeSamples.subtract(released)
        state.pointee.lastSample &-= min(state.pointee.lastSample, released)
        if finished {
            heapLock.lock()
            setGoalReachedLocked(true)
            let trace = untracedWorkLocked(forced: false)
            heapLock.unlock()
            if let trace, config.scavengeTrace { printScavengeTrace(trace) }
        }
    } else if decayTicks > 0 {
        if unneeded >= decayMinimumBytes {
            let (released, trace) = releaseDecayed(inline ? min(unneeded, inlineStepBytes) : unneeded)
            state.pointee.freeSamples.subtract(released)
            state.pointee.lastSample &-= min(state.pointee.lastSample, released)
            if released > 0 { busy = true }
            if let trace, config.scavengeTrace { printScavengeTrace(trace) }
        }
        // Pages of free objects in partly used spans that stayed free from one pass
        // to the next: a pass every two windows.
        if now &- state.pointee.lastInSpanPassNanos >= Int64(decayTicks) &* 2 &* scavengerTickNanos {
            state.pointee.lastInSpanPassNanos = now
            if releaseFreeObjectPages(confirmed: true) > 0 { busy = true }
        }
    }
    let spent = sh_thread_cpu_nanos() &- cpuBefore
    state.pointee.tokensNanos &-= spent
    return (spent, busy)
}
