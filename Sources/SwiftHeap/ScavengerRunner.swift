// Who runs the scavenger's work: a background thread in programs that run threads of
// their own, and the allocator's own slow paths in programs that do not.
//
// A process with one thread must stay one thread (DESIGN.md): the kernel refuses
// unshare(CLONE_NEWUSER) and setns to a multithreaded process, and sandboxes rely on
// them; and a pthread_create from inside free would allocate on the pages just freed.
// So the work has two runners that share one tick (ScavengerPacing.swift) and one CPU
// budget:
//
//   * inline: the C ABI's slow paths end with poke() when pages moved between spans and
//     the page heap (events.pagesMoved: a span made or given back, a large object
//     allocated or freed), holding no lock. It runs a tick when work is flagged (an epoch
//     due, a generation's goal not yet met) and a millisecond has passed since the last
//     tick — at every such call for half a second after a phase dropped (a shrink credit),
//     until the credit's bytes are released — or when a tick period (100 ms) has, with at most inlineSliceNanos of CPU
//     (inlineCreditSliceNanos while a shrink credit lasts: ScavengerPacing.swift,
//     creditLasts) and inlineStepBytes per release step: no call of malloc or free stalls for long, and a burst of frees
//     releases its memory as it goes. Between ticks the free, resident bytes of the page
//     heap change only at such events, so decay's samples for the ticks that had no call
//     repeat the last value.
//   * thread: once the program runs other threads (glibc's __libc_single_threaded, then
//     /proc/self/stat, checked at most once a second; where /proc cannot be read, another
//     thread's cache in the registry), an allocation slow path that finds
//     work flagged, or a heap of threadStartHeapBytes or more, starts the thread (never a
//     free: pthread_create would reuse the block just freed). It ticks every 100 ms with
//     the whole budget and blocks every signal. After quietTicksBeforePark ticks with
//     nothing to do it parks: it sleeps until a slow path that moved pages wakes it (a
//     futex wake, which allocates nothing and takes no lock, so a free may do it), or
//     parkedCheckNanos pass, when it looks for work it was not woken for. It does not
//     exit while the program runs threads: a program that frees memory and then sits
//     idle, making no allocator call (a server between requests), has no other runner to
//     release it. It exits when the program's threads are gone, and when the program is
//     back to one thread, once it has done the work flagged (finishWork),
//     checked at every wake (ThreadCount.swift): within a second of the program's last
//     join, a process that unshares its user namespace can (the kernel wants one
//     thread). It is started again when needed, and in a forked child (where it does not
//     exist) only once that child runs threads.
//
// Locking: the runner lock (rank scavengerRunner) guards RunnerState and serialises the
// runners (the thread takes it for each tick; the inline runner only tries it and skips
// when busy). fork does not take it (a tick may be long); the child reinitialises it:
// RunnerState holds only pacing figures, which a fork can at worst leave stale.

import CShim

/// The runners' state, guarded by the runner lock.
struct RunnerState {
    var lock = Mutex(rank: .scavengerRunner)
    /// Free, resident bytes of the page heap sampled each tick (a ring of
    /// decaySampleSlots; the latest decayTicks count), less what was released since.
    var freeSamples = DecaySamples()
    var sampleIndex: Int = 0
    var lastSample: UInt = 0
    var lastTickNanos: Int64 = 0
    var lastInSpanPassNanos: Int64 = 0
    /// When the tick last drained the threads' large caches and the centrals' kept empty
    /// spans (ScavengerPacing.swift).
    var lastLargeDrainNanos: Int64 = 0
    /// When the tick last released the span map's idle table memory (ScavengerPacing.swift).
    var lastSpanMapReleaseNanos: Int64 = 0
    var tokensNanos: Int64 = 0
    var lastRefillNanos: Int64 = 0
    /// What is left of the shrink credits in tokensNanos (ScavengerPacing.swift): CPU time
    /// not yet spent, and the bytes they may still release. Once the bytes are released
    /// the time left is withdrawn, and the credit's longer inline slices end.
    var creditNanos: Int64 = 0
    var creditBytes: UInt = 0
    /// Refaults (ScavengerPacing.swift): events.releasedTaken at the last tick; bytes
    /// released within refaultWindowNanos of each other and not taken back since, and
    /// when the last of them was released.
    var lastReleasedTaken: UInt = 0
    var recentReleasedBytes: UInt = 0
    var lastReleaseNanos: Int64 = 0
    /// The last shrink credit's bytes, what the program took back of released pages
    /// within refaultWindowNanos after it, and whether that ended it; no credit is granted
    /// before creditPausedUntilNanos, a pause that doubles with each credit so ended.
    var lastCreditBytes: UInt = 0
    var refaultedAfterCredit: UInt = 0
    var lastCreditRefaulted: Bool = false
    var creditPauseNanos: Int64 = 0
    var creditPausedUntilNanos: Int64 = 0
    /// When an epoch last ended early because the heap looked like it dropped a phase
    /// (ScavengerPacing.swift: phaseDropped), credited or not.
    var lastPhaseProbeNanos: Int64 = 0
    var started: Bool = false
    /// Consecutive thread ticks with nothing to do.
    var quietTicks: Int = 0
    /// freedSinceEpoch seen by the last tick (new frees make a tick not quiet).
    var lastFreedSinceEpoch: UInt = 0
    /// When the program's thread count was last read, what it said, and how long that
    /// answer holds (threadCheckHoldNanos).
    var threadCheckNanos: Int64 = 0
    var programHasThreads: Bool = false
    var threadCheckHoldNanos: Int64 = 0
    /// When the last thread exit that left one cache did the finishing work
    /// (finishAfterThreadsExited).
    var lastExitFinishNanos: Int64 = 0
}

/// Inline ticks with work flagged come at most this often (a heap that frees big objects
/// fast would otherwise end an epoch at nearly every free).
let inlineFlaggedTickNanos: Int64 = 1_000_000
/// CPU time one inline tick may spend; while a shrink credit lasts (ScavengerPacing.swift).
let inlineSliceNanos: Int64 = 500_000
let inlineCreditSliceNanos: Int64 = 2_000_000
/// Bytes one inline release step asks for (the slice is checked between steps).
let inlineStepBytes: UInt = 1 << 20
/// Thread ticks with nothing to do before the thread parks (5 s).
let quietTicksBeforePark = 50
/// How long the parked thread sleeps before it checks, unwoken, whether the program's
/// other threads are gone and whether there is work (a poke can come just before it
/// parks and find it not parked yet).
let parkedCheckNanos: Int64 = 1_000_000_000
/// An allocation slow path starts the thread in a program that runs threads once the heap
/// maps this much, even with no work flagged: the frees that flag work may be the
/// program's last calls for a long while, and a free never starts it.
let threadStartHeapBytes: UInt = 16 << 20
/// How often the program's thread count is read from /proc (once the libc says it has run
/// threads), at most: an answer of "other threads" holds this long, and so does one of
/// "none" after a run of them (threadCheckHoldNanos).
let threadCheckIntervalNanos: Int64 = 1_000_000_000
/// How long a first answer of "no other thread" holds; each one after it holds twice as
/// long as the last, up to threadCheckIntervalNanos.
let threadRecheckMinNanos: Int64 = 10_000_000

/// How long an answer of the program's thread count holds (programRunsThreads), given
/// the answer, `hasThreads`, and how long the last one held, `lastHold` (0 before the
/// first). "Other threads" holds threadCheckIntervalNanos; "none" holds
/// threadRecheckMinNanos after a "yes" or first, then twice the last "none", up to
/// threadCheckIntervalNanos. The C library says a program runs threads from its first
/// pthread_create on, and /proc may then still count one: the read came from an
/// allocation inside that pthread_create, or the program's threads have exited. Held for
/// a second, such a "none" kept a program that started a thread, allocated, freed and
/// went idle within that second from getting the scavenger's thread, and its memory
/// stayed resident (Tests/c/late_thread.c; idle_release.c one run in ten); backing off
/// from 10 ms, the thread starts at the next big allocation, and a program back to one
/// thread reads /proc some eight times more, then once a second as before.
func threadCheckHold(hasThreads: Bool, lastHold: Int64, lastHadThreads: Bool) -> Int64 {
    if hasThreads { return threadCheckIntervalNanos }
    if lastHold == 0 || lastHadThreads { return threadRecheckMinNanos }
    return min(lastHold &* 2, threadCheckIntervalNanos)
}
/// The thread's stack: it calls nothing deep.
let scavengerStackBytes = 64 << 10

extension UnsafeMutablePointer where Pointee == Scavenger {
    @inline(__always) private var runnerLock: UnsafeMutablePointer<Mutex> { pointer(to: \.runner.lock)! }
    @inline(__always) private var threadStateWord: UnsafeMutablePointer<UInt32> { pointer(to: \.threadState)! }
    @inline(__always) private var parkedWord: UnsafeMutablePointer<UInt32> { pointer(to: \.parked)! }
    @inline(__always) private var startAllowedWord: UnsafeMutablePointer<UInt32> { pointer(to: \.startAllowed)! }
    @inline(__always) private var cpuNanosWord: UnsafeMutablePointer<UInt64> { pointer(to: \.cpuNanos)! }

    /// Allows the scavenger to run (from the library constructor, once the config is set).
    func allowToRun() { sh_store32(startAllowedWord, 1) }

    /// In a forked child: no scavenger thread exists there, the runner lock may have been
    /// held by it, and the child has one thread whatever the parent's last look at its
    /// threads said (glibc's __libc_single_threaded stays false in the child).
    func resetAfterFork() {
        sh_store32(threadStateWord, 0)
        sh_store32(parkedWord, 0)
        runnerLock.reinitialize()
        pointee.runner.threadCheckNanos = 0
        pointee.runner.programHasThreads = false
        pointee.runner.threadCheckHoldNanos = 0
    }

    /// Whether the scavenger thread is running (for tests and stats).
    var threadRunning: Bool { sh_load32(threadStateWord) != 0 }

    /// CPU time the scavenger used so far.
    var cpuNanos: UInt64 { sh_load64_relaxed(cpuNanosWord) }

    // MARK: - The inline runner

    /// Called at the end of the C ABI's slow paths, holding no lock, when pages moved:
    /// runs a bounded tick inline, starts the thread, or wakes it if it is parked (see the
    /// file comment). `allocating`: called from an allocation, where the thread may be
    /// started.
    @inline(__always) func poke(allocating: Bool) {
        sh_store32(pointee.events.pagesMovedWord, 0)
        if sh_load32_relaxed(threadStateWord) != 0 {
            if sh_load32_relaxed(parkedWord) != 0 { wakeParked() }
            return
        }
        pokeSlow(allocating: allocating)
    }

    /// Whether a large object's free may release it at once (PageHeap.swift: Releasing at
    /// free): the scavenger is on (SWIFTHEAP_SCAVENGER=0 releases nothing but
    /// malloc_trim's) and its thread does not run, so that only the program's own calls
    /// release what it frees. Read without a lock: at worst a moment stale.
    var releasesAtFree: Bool { pointee.config.scavengerEnabled && sh_load32_relaxed(threadStateWord) == 0 }

    /// Wakes the parked thread (one waker does: the one that clears `parked`).
    @inline(never) private func wakeParked() {
        if sh_xchg32(parkedWord, 0) == 0 { return }
        let sleepWord = pointer(to: \.sleepWord)!
        // Only the waker that cleared `parked` writes the word: no read-modify-write race.
        sh_store32(sleepWord, sh_load32(sleepWord) &+ 1)
        sh_futex_wake(sleepWord, 1)
    }

    @inline(never) private func pokeSlow(allocating: Bool) {
        if sh_load32(startAllowedWord) == 0 || !pointee.config.scavengerEnabled { return }
        // Inside fork's window (a fork handler that allocates, Fork.swift) the forking
        // thread's locking is nested, which holds only for the locks fork took: not this
        // runner lock. No tick and no thread start there.
        if sh_fork_owner() != 0 { return }
        let flagged = workFlagged()
        let now = sh_monotonic_nanos()
        // A heap dropping a phase (credited lately, or to be credited now) is followed at every call; other
        // flagged work at most every inlineFlaggedTickNanos; the rest at the tick period.
        let urgent = flagged && (creditLasts(now) || phaseDropped(now))
        let interval = urgent ? 0 : flagged ? inlineFlaggedTickNanos : scavengerTickNanos
        let tickDue = now &- pointee.runner.lastTickNanos >= interval
        // The thread's start is weighed at every such allocation, not only when a tick is
        // due: a program that built its heap within a tick period of the last tick, and
        // then freed most of it and went idle, never had it weighed, and kept what it freed
        // resident while idle (Tests/c/burst_after_tick.c; idle_release.c one run in ten).
        // programRunsThreads holds its answers (threadCheckHold): a read of /proc at most
        // every 10 ms, then less often.
        let mayStart = allocating && sh_libc_single_threaded() == 0
            && (flagged || pointee.pageHeap.pointee.stats.mappedBytes >= threadStartHeapBytes)
        if !tickDue && !mayStart { return }
        if !runnerLock.tryLock() { return }
        if mayStart && programRunsThreads(now) {
            runnerLock.unlock()
            startThread()
            return
        }
        if !tickDue {
            runnerLock.unlock()
            return
        }
        let spent = tick(now: now, inline: true).spentNanos
        runnerLock.unlock()
        _ = sh_add64(cpuNanosWord, UInt64(spent))
    }

    /// Whether the program runs threads besides the caller (a stale answer is at most a
    /// second old, a "none" at first 10 ms: threadCheckHold). Must hold the runner lock.
    private func programRunsThreads(_ now: Int64) -> Bool {
        if sh_libc_single_threaded() != 0 { return false }
        let state = pointer(to: \.runner)!
        if state.pointee.threadCheckNanos == 0 || now &- state.pointee.threadCheckNanos >= state.pointee.threadCheckHoldNanos {
            let hasThreads = otherThreadsRun(upTo: 1) >= 1
            state.pointee.threadCheckHoldNanos = threadCheckHold(hasThreads: hasThreads, lastHold: state.pointee.threadCheckHoldNanos,
                                                                 lastHadThreads: state.pointee.programHasThreads)
            state.pointee.threadCheckNanos = now
            state.pointee.programHasThreads = hasThreads
        }
        return state.pointee.programHasThreads
    }

    /// How many threads besides the caller run, counted up to `cap`: /proc's answer
    /// (ThreadCount.swift), or where /proc cannot be read, how many other threads hold a
    /// thread cache (a thread that never allocates goes unseen there: the inline runner
    /// does the work then). Takes the registry lock in the second case, so the caller may
    /// hold the runner lock but no lock of a higher rank.
    private func otherThreadsRun(upTo cap: Int) -> Int {
        if let count = otherThreadsAlive(upTo: cap) { return count }
        return min(pointee.caches?.cachesOfOtherThreads() ?? 0, cap)
    }

    // MARK: - The thread

    @inline(never) private func startThread() {
        if !sh_cas32(threadStateWord, 0, 1).toBool { return }
        var allSignals = sigset_t()
        var previous = sigset_t()
        sigfillset(&allSignals)
        pthread_sigmask(SIG_SETMASK, &allSignals, &previous)
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attributes, scavengerStackBytes)
        var thread = pthread_t()
        let result = pthread_create(&thread, &attributes, scavengerThreadMain, UnsafeMutableRawPointer(self))
        pthread_attr_destroy(&attributes)
        pthread_sigmask(SIG_SETMASK, &previous, nil)
        // On failure the inline runner carries on; threadState stays set only while a
        // thread exists.
        if result != 0 { sh_store32(threadStateWord, 0) }
    }

    /// The thread's loop: a tick every 100 ms, parked after quietTicksBeforePark ticks
    /// with nothing to do (see the file comment), until the program's threads are gone or
    /// it is back to one thread.
    fileprivate func runThread() {
        runnerLock.lock()
        pointee.runner.quietTicks = 0
        runnerLock.unlock()
        let sleepWord = pointer(to: \.sleepWord)!
        var seen = sh_load32(sleepWord)
        while true {
            let parked = sh_load32(parkedWord) != 0
            sh_futex_wait_timeout(sleepWord, seen, parked ? parkedCheckNanos : scavengerTickNanos)
            seen = sh_load32(sleepWord)
            // The program's threads are gone (a main that called pthread_exit): leave, so
            // that the process ends as it would without us. It is back to one thread (its
            // others joined): finish the flagged work and leave, so that the process is one
            // thread again, as unshare(CLONE_NEWUSER) and setns require; the inline runner
            // does the rest, as in any program of one thread (ThreadCount.swift).
            let programThreads = otherThreadsRun(upTo: 2)
            if programThreads == 0 { break }
            if programThreads == 1 {
                runnerLock.lock()
                let spent = finishWork(now: sh_monotonic_nanos())
                runnerLock.unlock()
                _ = sh_add64(cpuNanosWord, UInt64(spent))
                break
            }
            // Still parked: nobody woke it. Unpark if there is work all the same (a poke
            // just before it parked), else sleep on.
            if parked && sh_load32(parkedWord) != 0 {
                if !hasUnseenWork() { continue }
                sh_store32(parkedWord, 0)
            }
            runnerLock.lock()
            let (spent, busy) = tick(now: sh_monotonic_nanos(), inline: false)
            let state = pointer(to: \.runner)!
            state.pointee.quietTicks = busy ? 0 : state.pointee.quietTicks &+ 1
            let quiet = state.pointee.quietTicks >= quietTicksBeforePark
            if quiet { state.pointee.quietTicks = 0 }
            runnerLock.unlock()
            _ = sh_add64(cpuNanosWord, UInt64(spent))
            if quiet { sh_store32(parkedWord, 1) }
        }
        sh_store32(parkedWord, 0)
        sh_store32(threadStateWord, 0)
    }

    /// Whether the thread has work its last tick did not see: an epoch due, a goal not
    /// met, or pages freed since. Read without the locks: a stale answer costs one
    /// parkedCheckNanos.
    private func hasUnseenWork() -> Bool {
        workFlagged() || freedSinceEpochRacy != pointee.runner.lastFreedSinceEpoch
    }

    /// The page heap's events.freedSinceEpoch, read without its lock (a moment stale).
    private var freedSinceEpochRacy: UInt {
        let word = UnsafeMutableRawPointer(pointee.events.pointer(to: \.freedSinceEpoch)!).assumingMemoryBound(to: UInt64.self)
        return UInt(sh_load64_relaxed(word))
    }

    /// The thread leaves a program that is back to one thread: flagged work (an epoch due,
    /// a goal not met: what the program's threads let go of) is done now, in one tick with
    /// a burst of budget (SWIFTHEAP_SCAVENGE_BURST_MS) that spares no chunk (tick:
    /// finishing), rather than at the thread's pace over the next seconds, which would
    /// keep the process from being one thread all that time. Pages freed since the last
    /// sweep epoch, too few to make one due (a tenth of the heap), end the epoch there as
    /// they would after idleEpochNanos: the program, alone and perhaps idle, may make no
    /// allocator call that would. The thread starts at most once a second
    /// (threadCheckIntervalNanos), so a program that keeps joining and starting threads
    /// gets at most a burst a second; so does finishAfterThreadsExited. Returns the CPU
    /// time spent. Must hold the runner lock.
    private func finishWork(now: Int64) -> Int64 {
        pointee.caches?.drainParkedCaches(all: true)
        if !workFlagged() && freedSinceEpochRacy == 0 { return 0 }
        return tick(now: now, inline: false, finishing: true).spentNanos
    }

    /// A thread's exit left at most one thread cache (the C ABI's thread-exit hook): with
    /// no scavenger thread running, what the program's threads let go of is done now, as
    /// the thread does before it leaves (finishWork), at most once a second. The thread
    /// starts on allocations only, and a burst of threads can be over before it has: the
    /// exits' inline ticks then release part of what their flushes freed, and the program,
    /// alone again and perhaps idle, may never call the allocator again (1000 threads of
    /// 20 sizes left 27-54 MB of their 264 MB heap resident for good in about one run in
    /// three: Tests/c/thread_burst.c). The exiting thread pays for it, as the last one of
    /// a burst (some milliseconds for tens of megabytes).
    ///
    /// Takes the runner lock; must hold no allocator lock.
    func finishAfterThreadsExited() {
        if sh_load32(startAllowedWord) == 0 || !pointee.config.scavengerEnabled || threadRunning { return }
        let now = sh_monotonic_nanos()
        // Read first without the lock, which a thread per task would otherwise take (and
        // move between cores) at every exit, to find it was done within the second.
        let lastWord = UnsafeMutableRawPointer(pointer(to: \.runner.lastExitFinishNanos)!).assumingMemoryBound(to: UInt64.self)
        let last = Int64(bitPattern: sh_load64_relaxed(lastWord))
        if last != 0 && now &- last < threadCheckIntervalNanos { return }
        runnerLock.lock()
        let state = pointer(to: \.runner)!
        var spent: Int64 = 0
        if state.pointee.lastExitFinishNanos == 0 || now &- state.pointee.lastExitFinishNanos >= threadCheckIntervalNanos {
            sh_store64(lastWord, UInt64(bitPattern: now))
            spent = finishWork(now: now)
        }
        runnerLock.unlock()
        _ = sh_add64(cpuNanosWord, UInt64(spent))
    }

    /// Whether work is flagged: a sweep epoch due, or a generation's goal not yet met.
    /// Read without the locks.
    private func workFlagged() -> Bool {
        sh_load32_relaxed(pointee.events.epochDueWord) != 0 || sh_load32_relaxed(goalPendingWord) != 0
    }
}

private func scavengerThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    argument.unsafelyUnwrapped.assumingMemoryBound(to: Scavenger.self).runThread()
    return nil
}
