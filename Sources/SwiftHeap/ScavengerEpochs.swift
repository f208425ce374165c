// The scavenger: sweep epochs and the retained-memory goal (Go's bgscavenge and
// scavengeAll, over the page allocator's generations of PageAllocScavenge.swift).
//
// The scavenger is an instance made with the page heap and the central lists it
// releases memory from and the HeapEvents record they publish into; it sits above them
// and they never call it. Its other parts: pacing and decay (ScavengerPacing.swift), who
// runs it (ScavengerRunner.swift), trace lines and malloc_trim (ScavengerTrace.swift).
//
// Sweep epochs. Pages return to the page heap as spans empty (Central.release, large
// frees), and the page heap counts them (events.freedSinceEpoch); when the pages freed
// since the last epoch reach epochPercent of the heap, or the heap shrank (pages freed
// less pages taken) by a quarter of the live bytes at the last epoch, it raises
// events.epochDue — it never wakes the scavenger (waking may block). The second rule lets
// the goal follow a heap that drops a phase: each epoch's goal is lower, and the last
// one comes close to the end of the frees, not a tenth of the heap before it. The next
// tick sees it and ends the epoch: scavengeStartGen clones inUse into the generation's ranges, and the
// retained-memory goal is reset to the live bytes now plus retainPercent. An epoch also
// ends when a tick finds pages were freed but no epoch ended for a second (the heap went
// idle), and on malloc_trim. The goal's basis is the live bytes plus what the heap gave
// back since its peak in the epoch (events.peakSpanBytes): what the program needed lately.
//
// Work. While retained memory (mapped, less free pages already released, less pages
// released inside spans) is above the goal, the scavenger reserves address ranges from
// the top of the heap and releases free pages with MADV_DONTNEED without the page heap's
// lock (the pages are held as allocated while it runs). When free pages run out and
// retained is still above the goal, it releases the OS pages inside partly used spans
// that hold only free objects (once per generation). Pages of a small span made from
// zero pages count as released inside it until an object on them is handed out
// (Central.setUpSpan), so retained memory does not count pages the program never touched.
//
// Locking: the fields marked so are guarded by the page heap's lock; the words are
// atomics; the runner's state is guarded by the runner lock (ScavengerRunner.swift).

import CShim

struct Scavenger {
    // What it works on.
    var pageHeap: UnsafeMutablePointer<PageHeap>
    var centrals: UnsafeMutablePointer<Central>
    /// Size classes (centrals 1..<classCount are in use).
    var classCount: Int
    var events: UnsafeMutablePointer<HeapEvents>
    /// The thread caches whose large caches each tick drains (LargeCache.swift); nil for
    /// a scavenger of a page heap no thread caches use (tests).
    var caches: UnsafeMutablePointer<CacheRegistry>? = nil
    /// The knobs (Config.swift), set by the library constructor before startAllowed.
    var config = Config()

    // Atomic words:
    /// Futex word the thread sleeps on.
    var sleepWord: UInt32 = 0
    /// Raised while a generation's goal is not met: the inline runner keeps working
    /// toward it on the next slow paths (ScavengerRunner.swift).
    var goalPendingFlag: UInt32 = 0
    /// 0: no thread; 1: started.
    var threadState: UInt32 = 0
    /// 1 while the thread is parked (ScavengerRunner.swift): a poke wakes it.
    var parked: UInt32 = 0
    /// Set once the library constructor has run: the scavenger may run (the config is read).
    var startAllowed: UInt32 = 0
    /// CPU time the scavenger used, in its thread and inline (for stats).
    var cpuNanos: UInt64 = 0

    // Guarded by the page heap's lock:
    /// Retained bytes the scavenger works down to.
    var goalBytes: UInt = 0
    /// Monotonic time the last epoch ended.
    var lastEpochNanos: Int64 = 0
    /// Whether the current generation's in-span pass ran, and whether it reached its
    /// goal (from then on only decay releases more).
    var inSpanPassDone: Bool = false
    var goalReached: Bool = true
    /// Bytes released inside spans in the current generation (the page allocator counts
    /// the free pages it released).
    var inSpanReleasedThisGen: UInt = 0
    /// Bytes of the current generation's work already reported by a trace line.
    var tracedBytes: UInt = 0
    /// The most bytes the heap held in spans in the last peakLifetimeNanos (as the epochs
    /// saw it: events.peakSpanBytes; a later peak within an eighth of it renews it), and
    /// when: a goal far below it means the program dropped a phase (ScavengerPacing.swift's
    /// credit).
    var recentPeakSpanBytes: UInt = 0
    var recentPeakNanos: Int64 = 0
    /// Since the last shrink credit, as the epochs saw the bytes in spans: the trough of
    /// the drop it paid for, whether the heap has risen from it since (to twice the
    /// trough), and the most it held since it rose (UInt.max before the first credit). A
    /// credit is for a drop from a peak the program built up after the last one's trough
    /// (ScavengerPacing.swift: creditPeakBytes).
    var troughSinceCreditSpanBytes: UInt = 0
    var risenSinceCredit: Bool = true
    var peakSinceCreditSpanBytes: UInt = UInt.max
    /// When the budget was last credited for a dropped phase (ScavengerPacing.swift).
    var lastCreditNanos: Int64 = 0

    /// The runners' own (ScavengerRunner.swift), guarded by the runner lock.
    var runner = RunnerState()

    /// Makes the scavenger at `p` (stable memory) of `pageHeap` and `centrals` (classes
    /// 1..<classCount), which publish into `events`.
    static func initialize(_ p: UnsafeMutablePointer<Scavenger>, pageHeap: UnsafeMutablePointer<PageHeap>,
                           centrals: UnsafeMutablePointer<Central>, classCount: Int,
                           events: UnsafeMutablePointer<HeapEvents>, caches: UnsafeMutablePointer<CacheRegistry>? = nil) {
        p.initialize(to: Scavenger(pageHeap: pageHeap, centrals: centrals, classCount: classCount, events: events,
                                   caches: caches))
    }
}

/// A peak of the bytes in spans this recent counts in the next goal's basis.
let recentPeakNanos: Int64 = 1_000_000

/// How long a peak of the bytes in spans stays the recent peak (unless a higher one comes).
let peakLifetimeNanos: Int64 = 5_000_000_000

/// The smallest freedSinceEpoch that ends an epoch.
let minimumEpochBytes: UInt = 1 << 20
/// An epoch is due when the heap shrank by the live bytes at the last epoch / this: a
/// quarter, more than a churning heap's swing between frees and the allocations that
/// replace them, and a handful of epochs down to the end of a program's phase.
let shrinkEpochDivisor: UInt = 4

extension UnsafeMutablePointer where Pointee == Scavenger {
    @inline(__always) var goalPendingWord: UnsafeMutablePointer<UInt32> { pointer(to: \.goalPendingFlag)! }
    @inline(__always) var heapLock: UnsafeMutablePointer<Mutex> { pointee.pageHeap.lockPointer }
    @inline(__always) var pages: UnsafeMutablePointer<PageAlloc> { pointee.pageHeap.pointee.pages }

    /// Records whether the current generation met its goal (and tells the inline runner).
    /// Must hold the page heap's lock.
    func setGoalReachedLocked(_ reached: Bool) {
        pointee.goalReached = reached
        sh_store32(goalPendingWord, reached ? 0 : 1)
    }

    /// Bytes of live objects: small objects handed out of the central lists (including
    /// those sitting in thread caches) and large objects of the page heap. Read without
    /// the central locks: an estimate, as Go's heapLive is between GCs.
    func liveBytesEstimate() -> UInt {
        var live = pointee.pageHeap.pointee.stats.largeBytes
        var cls = 1
        while cls < pointee.classCount {
            let central = pointee.centrals + cls
            live &+= central.pointee.allocatedObjects &* UInt(central.pointee.info.size)
            cls &+= 1
        }
        return live
    }

    /// Memory the process holds from the OS for the page heap, by the allocator's count.
    ///
    /// Must hold the page heap's lock.
    func retainedBytesLocked() -> UInt {
        let released = pages.pointee.scavengedBytes &+ pointee.events.inSpanReleasedBytes
        let mapped = pointee.pageHeap.pointee.stats.mappedBytes
        return mapped > released ? mapped &- released : 0
    }

    /// Free pages of the page heap that are still resident, by its count.
    ///
    /// Must hold the page heap's lock.
    func freeResidentBytesLocked() -> UInt {
        let p = pages.pointee
        return p.freeBytes &- min(p.freeBytes, p.scavengedBytes)
    }

    /// Ends the sweep epoch: starts a scavenge generation and resets the goal. Returns
    /// the trace of the generation that ended, if it released anything and was not
    /// traced yet (the caller prints it after dropping the lock: stderr may be a pipe).
    ///
    /// Must hold the page heap's lock.
    func endEpochLocked(now: Int64) -> ScavengeTrace? {
        let trace = untracedWorkLocked(forced: false)
        _ = pages.pointee.scavengeStartGen()
        let live = liveBytesEstimate()
        let config = pointee.config
        // The goal's basis is what the program held at its peak since the last epoch, if
        // that peak is a moment ago, not the live bytes at this instant: an epoch ends
        // right after a free crosses a threshold, when the object a churning program is
        // about to replace is missing from the live bytes. An older peak is not counted:
        // the heap dropped a phase, and its goal should follow it down at once.
        let events = pointee.events
        let inSpans = pointee.pageHeap.pointee.stats.spanBytes
        let peakSpans = max(events.pointee.peakSpanBytes, inSpans)
        let recent = now &- events.pointee.peakSpanNanos < recentPeakNanos
        let basis = live &+ (recent ? peakSpans &- inSpans : 0)
        events.pointee.peakSpanBytes = inSpans
        if peakSpans >= pointee.recentPeakSpanBytes || now &- pointee.recentPeakNanos > peakLifetimeNanos {
            pointee.recentPeakSpanBytes = peakSpans
            pointee.recentPeakNanos = now
        } else if peakSpans >= pointee.recentPeakSpanBytes &- pointee.recentPeakSpanBytes / 8 {
            // A peak within an eighth of the recorded one renews it: a heap whose peaks
            // recur a little lower must not have it expire into what an epoch in the
            // middle of a drop saw.
            pointee.recentPeakNanos = now
        }
        if !pointee.risenSinceCredit {
            // The drop the last credit paid for may go on (a lower trough), and the heap
            // has risen from it once it holds twice the trough at an epoch's end (not at
            // the epoch's peak, which in a drop is its start): the trough of a heap whose
            // spans hold many free objects is far above its live bytes, and a small rise
            // from it must not look like a new peak to drop from.
            pointee.troughSinceCreditSpanBytes = min(pointee.troughSinceCreditSpanBytes, inSpans)
            if inSpans / 2 >= pointee.troughSinceCreditSpanBytes {
                pointee.risenSinceCredit = true
                pointee.peakSinceCreditSpanBytes = peakSpans
            }
        } else {
            pointee.peakSinceCreditSpanBytes = max(pointee.peakSinceCreditSpanBytes, peakSpans)
        }
        pointee.goalBytes = basis &+ basis / 100 &* config.retainPercent

        let threshold = pointee.pageHeap.pointee.stats.mappedBytes / 100 &* config.epochPercent
        events.pointee.epochThreshold = max(threshold, minimumEpochBytes)
        events.pointee.shrinkThreshold = max(live / shrinkEpochDivisor, minimumEpochBytes)
        events.pointee.freedSinceEpoch = 0
        events.pointee.netFreedSinceEpoch = 0
        events.pointee.retainedGoal = max(pointee.goalBytes, 1)
        sh_store32(events.epochDueWord, 0)
        pointee.lastEpochNanos = now
        pointee.inSpanPassDone = false
        setGoalReachedLocked(false)
        pointee.inSpanReleasedThisGen = 0
        pointee.tracedBytes = 0
        return trace
    }

    /// Starts a new scavenge generation without ending the epoch (the goal stays): decay's
    /// search ran out of work having spared chunks in use, which a later tick may find
    /// unused. Returns the trace of the generation that ended, as endEpochLocked.
    ///
    /// Must hold the page heap's lock.
    func restartGenerationLocked() -> ScavengeTrace? {
        let trace = untracedWorkLocked(forced: false)
        _ = pages.pointee.scavengeStartGen()
        pointee.inSpanReleasedThisGen = 0
        pointee.tracedBytes = 0
        return trace
    }

    /// Releases memory until retained bytes reach `goal`, spending at most `budgetNanos`
    /// of this thread's CPU time (unlimited if negative), `stepBytes` at a time (the
    /// budget is checked between steps), sparing the free pages of chunks stamped
    /// spareAllocatedSince or later (0: none; PageAllocScavenge.swift). Returns bytes
    /// released and whether the generation ran out of work or reached the goal.
    ///
    /// Takes the page heap's lock and the central locks; must hold none.
    func scavengeTowardGoal(_ goal: UInt, budgetNanos: Int64, stepBytes: UInt,
                            spareAllocatedSince: UInt32 = 0) -> (released: UInt, finished: Bool) {
        let start = sh_thread_cpu_nanos()
        var released: UInt = 0
        while budgetNanos < 0 || sh_thread_cpu_nanos() &- start < budgetNanos {
            heapLock.lock()
            let retained = retainedBytesLocked()
            if retained <= goal {
                heapLock.unlock()
                return (released, true)
            }
            let want = min(retained &- goal, stepBytes)
            let pagesReleased = PageAlloc.scavenge(pages, want, mayUnlock: true, spareAllocatedSince: spareAllocatedSince)
            let inSpanDone = pointee.inSpanPassDone
            if pagesReleased == 0 { pointee.inSpanPassDone = true }
            heapLock.unlock()
            released &+= pagesReleased
            if pagesReleased == 0 {
                if inSpanDone { return (released, true) }
                released &+= releaseFreeObjectPages()
            }
        }
        return (released, false)
    }

    /// Gives every class's kept empty spans that sat unused since the last call, or with
    /// `all` every one, back to the page heap (Central.freeEmptySpans); returns their pages.
    ///
    /// Takes each central lock in turn, and the page heap's under it; must hold none.
    func freeEmptySpans(all: Bool) -> UInt {
        var pages: UInt = 0
        var cls = 1
        while cls < pointee.classCount {
            pages &+= (pointee.centrals + cls).freeEmptySpans(all: all)
            cls &+= 1
        }
        return pages
    }

    /// Releases, in every class, the OS pages of partly used spans that hold only free
    /// objects (if `confirmed`, that did at the previous confirmed pass too). Returns
    /// bytes released.
    ///
    /// Takes each central lock in turn, then the page heap's; must hold none.
    func releaseFreeObjectPages(confirmed: Bool = false) -> UInt {
        var released: UInt = 0
        var cls = 1
        while cls < pointee.classCount {
            released &+= (pointee.centrals + cls).releaseFreePages(confirmed: confirmed)
            cls &+= 1
        }
        if released > 0 {
            heapLock.lock()
            pointee.inSpanReleasedThisGen &+= released
            heapLock.unlock()
        }
        return released
    }
}

extension Int32 {
    @inline(__always) var toBool: Bool { self != 0 }
}
