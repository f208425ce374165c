// The scavenger's pacing and decay: the tick that both runners run (ScavengerRunner.swift).
//
// Pacing. CPU time spent scavenging is charged to a token bucket filled at
// scavengeCPUPercent of one core (default 1%), holding at most scavengeBurstMillis
// (default 200 ms), starting empty: over any long run the scavenger uses at most its share. A heap that
// shrinks earns more: when an epoch ends with a goal below a quarter of the highest goal
// of the last 5 s, the drop from that peak is credited, once, at shrinkCreditNanosPerMiB (up to shrinkCreditCapNanos in the bucket), so a
// program that drops a phase again and again gets its memory back each time, paid for
// by what it let go of; a heap that churns at one size earns nothing, and stays at 1%.
// A credit buys the release of the peak's bytes and no more: releasing costs less than
// the credit's rate on most machines, and a heap that swings far and back (a loop of big
// objects) would otherwise have every swing released and faulted in again while the
// credit lasts (a credit for 25 MiB released 200 MiB there); once the peak's bytes are
// released, the credit's unspent time is withdrawn (RunnerState.creditNanos).
//
// Decay. Reaching the goal leaves up to retainPercent of the heap in free, resident
// pages, and in a heap that keeps churning more: allocations land on other free runs
// than the ones just freed (first fit) while those stay resident. So once the goal is
// met the scavenger keeps watching the free, resident bytes of the page heap: every tick
// (100 ms) it samples them, and what stayed free for the whole decay window (the
// minimum of the samples over decayMillis, default 200 ms) was not needed in that time
// and is released (jemalloc's dirty decay, by amount rather than page age). A generation
// that runs out of work meanwhile is ended and a new one started. The in-span pass runs
// in decay too, every two windows, and releases only the pages it found all free at its
// previous pass as well (Span.freeOSPagesSeen), so that pages of objects that keep being
// handed out and freed are not faulted in again and again.
//
// Sparing chunks in use. Each tick sets the page allocator's allocation stamp (the tick
// period's number), which page allocations write into the chunks they take pages of
// (PageAlloc.swift). The tick's releases, toward the goal and for decay, skip the chunks
// allocated from since the last tick or within the last spareTickPeriods tick periods
// (PageAllocScavenge.swift), as does the release on growth (PageHeap.swift): first fit
// lands the program's next allocations on their free pages. A loop of big objects
// (`large` in scripts/bench) had a quarter of its page faults from such releases; sqlite,
// which grows through the holes its frees leave, a third of its own. Decay releases a
// spared chunk's free pages once it has gone that long without an allocation. A phase
// being dropped (a shrink credit lasts) and malloc_trim spare nothing.
//
// Refaults. Releasing a page costs the scavenger a fraction of what the program pays to
// fault it in again (a fault, the zeroing of a page: a few microseconds). So a page
// that the program takes back soon after its release is charged to the budget at
// refaultNanosPerOSPage: each tick compares the released bytes that spans took from the
// page heap since the last tick (events.releasedTaken) with what the scavenger released
// lately (within refaultWindowNanos of each other) and charges the smaller, to a shrink
// credit first, down to a debt of one bucket at most. A program whose heap swings (a
// loop of big objects: a goal set in a trough is faulted back at the next crest) then
// pays for its releases within the same 1% of the CPU; one that drops a phase and
// rebuilds it after a pause, or grows into fresh memory, pays nothing. A credit whose
// release is taken back by an eighth of its bytes soon after ends, and the next credit
// waits for a pause (2 s, doubling up to 32 s while credits keep being taken back); a
// credit forgives the debt.
//
// Large caches. A tick takes the large spans the threads keep for themselves back to the
// page heap (LargeCache.swift) at most once per scavengerTickNanos, so that memory a
// thread stopped using is free pages by the next tick and goes the same way; and at once
// when a shrink credit starts, after which events.droppingPhase keeps the threads from
// caching any until the credit is over.
//
// Locking: the tick runs holding the runner lock (its state is RunnerState) and takes the
// registry's, the page heap's and the central locks as it goes.

import CShim

/// Slots of the decay sample ring: a window of up to 1.6 s at 100 ms ticks.
let decaySampleSlots = 16

struct DecaySamples {
    var slots = InlineArray<16, UInt>(repeating: 0)

    /// Records `value` at `index` (mod the ring) and returns the minimum of the last
    /// `count` samples including this one.
    mutating func record(_ value: UInt, at index: Int, window count: Int) -> UInt {
        slots[index & (decaySampleSlots &- 1)] = value
        var minimum = value
        var k = 1
        while k < count {
            minimum = min(minimum, slots[(index &- k) & (decaySampleSlots &- 1)])
            k &+= 1
        }
        return minimum
    }

    /// Takes `bytes` (released meanwhile) off every sample: they are no longer free and resident.
    mutating func subtract(_ bytes: UInt) {
        var i = 0
        while i < decaySampleSlots {
            slots[i] = slots[i] &- min(slots[i], bytes)
            i &+= 1
        }
    }
}

/// The scavenger's tick period.
let scavengerTickNanos: Int64 = 100_000_000
/// Free-page releases smaller than this wait for the next tick (a madvise per few pages
/// costs more than the memory is worth).
let decayMinimumBytes: UInt = 256 << 10
/// An epoch ends after this long with pages freed and no epoch ended (the heap went idle).
let idleEpochNanos: Int64 = 1_000_000_000
/// Bytes one release step of the thread asks for (the budget is checked between steps).
let threadStepBytes: UInt = 4 << 20
/// CPU time credited per MiB the goal drops when an epoch ends on a shrinking heap: about
/// what releasing a MiB of resident pages costs (madvise and the in-span pass).
let shrinkCreditNanosPerMiB: Int64 = 500_000
/// A shrink credit fills the budget up to this, at most (beyond the time-filled bucket).
let shrinkCreditCapNanos: Int64 = 1_000_000_000
/// At most one shrink credit per this long.
let creditIntervalNanos: Int64 = 500_000_000
/// What the program pays to fault in a released OS page again: the fault and zeroing the
/// page, and its TLB shootdown (2-3 µs a page measured on a 2-core VM, in a loop of big
/// objects against the same loop with the scavenger off).
let refaultNanosPerOSPage: Int64 = 2_000
/// Released pages taken back by spans within this long of the scavenger's last release
/// count as faulted back in: longer than a loop's swings (milliseconds), shorter than the
/// pause of a program that drops its heap and builds it again (a third of a second in
/// Tests/c/single_thread.c, a second in scripts/rss's phases).
let refaultWindowNanos: Int64 = 100_000_000
/// A shrink credit ends when the program takes back more than its bytes / this soon after.
let refaultCreditDivisor: UInt = 8
/// The pause before the next credit after one so ended: the first, and the most it doubles to.
let creditPauseMinNanos: Int64 = 2_000_000_000
let creditPauseMaxNanos: Int64 = 32_000_000_000

extension UnsafeMutablePointer where Pointee == Scavenger {
    /// Releases up to `bytes` of free pages for decay, sparing chunks stamped
    /// spareAllocatedSince or later (0: none; PageAllocScavenge.swift): continues this
    /// generation, and if it runs out of work (pages freed since it started lie in memory
    /// it has searched already) ends it and starts a new one. If it spared chunks, the
    /// pages it did not find may lie in them: the new generation starts without ending
    /// the epoch (its goal stays), and searches them again if they are no longer spared.
    /// Returns the bytes released and the trace of a generation that ended, if any.
    ///
    /// Takes the page heap's lock; must hold none.
    func releaseDecayed(_ bytes: UInt, spareAllocatedSince spare: UInt32 = 0) -> (released: UInt, trace: ScavengeTrace?) {
        heapLock.lock()
        var released = PageAlloc.scavenge(pages, bytes, mayUnlock: true, spareAllocatedSince: spare)
        var trace: ScavengeTrace? = nil
        if released < bytes {
            trace = pages.pointee.scav.sparedChunks != 0 ? restartGenerationLocked() : endEpochLocked(now: sh_monotonic_nanos())
            released &+= PageAlloc.scavenge(pages, bytes &- released, mayUnlock: true, spareAllocatedSince: spare)
        }
        heapLock.unlock()
        return (released, trace)
    }

    /// One step of the scavenger: drains the threads' large caches and the centrals' idle
    /// kept empty spans if a tick period has passed, ends the sweep epoch if one is due,
    /// records decay's sample, and spends up to
    /// the runner's slice of the CPU budget releasing memory toward the goal, or, once it
    /// is met, what stayed free for the decay window. `inline`: run from an allocation
    /// slow path, at most inlineSliceNanos and inlineStepBytes per release step.
    /// `finishing`: the thread's last tick before it leaves a program back to one thread
    /// (ScavengerRunner.swift: finishWork): at least a burst of budget, no chunk
    /// spared for being allocated from lately (the threads that did are gone), and an
    /// epoch ended if any page was freed since the last one.
    /// Returns the CPU time spent and whether there was anything to do.
    ///
    /// Must hold the runner lock and no other allocator lock; takes the registry's, the
    /// page heap's and the central locks.
    func tick(now: Int64, inline: Bool, finishing: Bool = false) -> (spentNanos: Int64, busy: Bool) {
        let state = pointer(to: \.runner)!
        let config = pointee.config
        let rate = Int64(config.scavengeCPUPercent)  // ns of CPU per 100 ns of wall time
        let bucket = Int64(config.scavengeBurstMillis) &* 1_000_000
        let decayTicks = config.decayMillis == 0 ? 0 : Int(min(max(config.decayMillis / 100, 1), UInt(decaySampleSlots)))
        if !state.pointee.started {
            // The bucket starts empty: a program's first epochs (it is still building its
            // heap) earn no release; time fills it, and a phase dropped earns its credit.
            state.pointee.started = true
            state.pointee.tokensNanos = 0
            state.pointee.lastRefillNanos = now
            state.pointee.lastTickNanos = now &- scavengerTickNanos
        }
        // Time fills the bucket up to its size; a shrink credit may have left more in it.
        if state.pointee.tokensNanos < bucket {
            state.pointee.tokensNanos = min(bucket, state.pointee.tokensNanos &+ (now &- state.pointee.lastRefillNanos) &* rate / 100)
        }
        state.pointee.lastRefillNanos = now
        if finishing { state.pointee.tokensNanos = max(state.pointee.tokensNanos, bucket) }
        // Ticks since the last one: at least one; more when the inline runner had no call.
        let elapsedTicks = Int(min(max((now &- state.pointee.lastTickNanos) / scavengerTickNanos, 1), Int64(decaySampleSlots)))
        state.pointee.lastTickNanos = now

        heapLock.lock()
        // Chunks the program allocated from since the last tick, or within the last
        // spareTickPeriods tick periods, are spared by this tick's releases
        // (PageAllocScavenge.swift), unless a phase is being dropped (below).
        let stamp = UInt32(truncatingIfNeeded: now / scavengerTickNanos) &+ 2
        let lastStamp = pages.pointee.allocStamp
        pages.pointee.allocStamp = max(stamp, lastStamp)
        let spareSinceStamp = min(pages.pointee.recentAllocStamp, lastStamp)
        var endedTrace: ScavengeTrace? = nil
        let events = pointee.events
        let releasedTaken = (bytes: events.pointee.releasedTaken, firstNanos: events.pointee.releasedTakenNanos)
        events.pointee.releasedTakenNanos = 0
        let freed = events.pointee.freedSinceEpoch
        let idle = freed > 0 && (finishing || now &- pointee.lastEpochNanos > idleEpochNanos)
        // (At most one epoch per inlineFlaggedTickNanos, however often ticks come, unless
        // the heap just fell below a quarter of its peak: see phaseDropped.)
        let dropped = phaseDropped(now)
        let epochEnded = (sh_load32(events.epochDueWord) != 0
                          && (now &- pointee.lastEpochNanos >= inlineFlaggedTickNanos || dropped)) || idle
        if epochEnded && dropped { state.pointee.lastPhaseProbeNanos = now }
        if epochEnded {
            endedTrace = endEpochLocked(now: now)
            // The program dropped a phase (its goal fell below a quarter of the most it held
            // in spans in the last seconds, since the last credit): releasing what it let
            // go of is paid for by the shrinking, a credit for the whole peak (the frees may
            // go on), at most once per creditIntervalNanos. A heap that churns big objects
            // swings by less, and earns nothing: releasing its free pages would only have
            // them faulted in again at the next allocation.
            let peak = creditPeakBytes, goal = pointee.goalBytes
            if goal < peak / 4 && mayCredit(now) {
                pointee.lastCreditNanos = now
                let spans = pointee.pageHeap.pointee.stats.spanBytes
                pointee.troughSinceCreditSpanBytes = spans
                pointee.risenSinceCredit = false
                pointee.peakSinceCreditSpanBytes = spans
                if !state.pointee.lastCreditRefaulted { state.pointee.creditPauseNanos = 0 }
                state.pointee.lastCreditRefaulted = false
                state.pointee.lastCreditBytes = peak
                state.pointee.refaultedAfterCredit = 0
                let credit = Int64(peak >> 20) &* shrinkCreditNanosPerMiB
                // A debt of refaults is forgiven: the pause above keeps a swinging heap's
                // credits rare, and a phase dropped is released now.
                state.pointee.tokensNanos = max(state.pointee.tokensNanos, 0)
                let before = state.pointee.tokensNanos
                state.pointee.tokensNanos = min(before &+ credit, max(before, shrinkCreditCapNanos))
                state.pointee.creditNanos &+= state.pointee.tokensNanos &- before
                state.pointee.creditBytes &+= peak
            }
        }
        let goal = max(pointee.goalBytes, liveBytesEstimate() / 100 &* (100 &+ config.retainPercent))
        let goalPending = !pointee.goalReached
        var freeResident = freeResidentBytesLocked()
        heapLock.unlock()
        chargeRefaults(releasedTaken: releasedTaken.bytes, since: releasedTaken.firstNanos, now: now, debtLimitNanos: bucket)
        // Large spans the threads keep (LargeCache.swift) go back to the page heap once a
        // tick period, and at once when the program starts dropping a phase, after which
        // they keep none until it is over; so do the centrals' kept empty spans that no
        // refill took since the last drain, and all of them when a phase starts being
        // dropped (Central.freeEmptySpans). The rest of this tick sees their pages as free.
        let dropping = creditLasts(now)
        let spare = dropping || finishing ? 0 : spareSinceStamp
        let droppingWord = events.droppingPhaseWord
        let startsDropping = dropping && sh_load32_relaxed(droppingWord) == 0
        if dropping != (sh_load32_relaxed(droppingWord) != 0) { sh_store32(droppingWord, dropping ? 1 : 0) }
        var drainedLarge = false
        if startsDropping || now &- state.pointee.lastLargeDrainNanos >= scavengerTickNanos {
            state.pointee.lastLargeDrainNanos = now
            pointee.caches?.drainParkedCaches(all: startsDropping)
            let pages = (pointee.caches?.drainLargeCaches() ?? 0) &+ freeEmptySpans(all: startsDropping)
            freeResident &+= pages &<< pageShift
            drainedLarge = pages > 0
        }
        var busy = epochEnded || goalPending || drainedLarge || freed != state.pointee.lastFreedSinceEpoch
        state.pointee.lastFreedSinceEpoch = epochEnded ? 0 : freed

        // What stayed free and resident over the whole window. Ticks without a call (inline)
        // saw the value of the last sample.
        var unneeded: UInt = 0
        if decayTicks > 0 {
            let samples = state.pointer(to: \.freeSamples)!
            var k = 1
            while k < elapsedTicks {
                _ = samples.pointee.record(state.pointee.lastSample, at: state.pointee.sampleIndex, window: decayTicks)
                state.pointee.sampleIndex &+= 1
                k &+= 1
            }
            unneeded = samples.pointee.record(freeResident, at: state.pointee.sampleIndex, window: decayTicks)
            state.pointee.sampleIndex &+= 1
            state.pointee.lastSample = freeResident
        }
        if let endedTrace, config.scavengeTrace { printTrace(endedTrace) }
        if state.pointee.tokensNanos <= 0 { return (0, busy) }

        // Inline, a slice at a time; a longer one for a while after a shrink credit (a
        // phase is being dropped: its release should keep up with its frees).
        let inlineSlice = creditLasts(now) ? inlineCreditSliceNanos : inlineSliceNanos
        let slice = inline ? min(state.pointee.tokensNanos, inlineSlice) : state.pointee.tokensNanos
        let cpuBefore = sh_thread_cpu_nanos()
        var releasedBytes: UInt = 0
        if goalPending {
            let (released, finished) = scavengeTowardGoal(goal, budgetNanos: slice,
                                                          stepBytes: inline ? inlineStepBytes : threadStepBytes,
                                                          spareAllocatedSince: spare)
            releasedBytes &+= released
            state.pointee.freeSamples.subtract(released)
            state.pointee.lastSample &-= min(state.pointee.lastSample, released)
            if finished {
                heapLock.lock()
                setGoalReachedLocked(true)
                let trace = untracedWorkLocked(forced: false)
                heapLock.unlock()
                if let trace, config.scavengeTrace { printTrace(trace) }
            }
        } else if decayTicks > 0 {
            if unneeded >= decayMinimumBytes {
                let (released, trace) = releaseDecayed(inline ? min(unneeded, inlineStepBytes) : unneeded,
                                                       spareAllocatedSince: spare)
                releasedBytes &+= released
                state.pointee.freeSamples.subtract(released)
                state.pointee.lastSample &-= min(state.pointee.lastSample, released)
                if released > 0 { busy = true }
                if let trace, config.scavengeTrace { printTrace(trace) }
            }
            // Pages of free objects in partly used spans that stayed free from one pass
            // to the next: a pass every two windows.
            if now &- state.pointee.lastInSpanPassNanos >= Int64(decayTicks) &* 2 &* scavengerTickNanos {
                state.pointee.lastInSpanPassNanos = now
                let released = releaseFreeObjectPages(confirmed: true)
                releasedBytes &+= released
                if released > 0 { busy = true }
            }
        }
        // The span map's entries of the megabytes now all free go too, at most once per
        // idleEpochNanos (a scan of the heap and a madvise per run of free megabytes).
        if releasedBytes >= SpanMap.bytesPerTablePage && now &- state.pointee.lastSpanMapReleaseNanos >= idleEpochNanos {
            state.pointee.lastSpanMapReleaseNanos = now
            heapLock.lock()
            _ = pointee.pageHeap.releaseIdleSpanMapLocked()
            heapLock.unlock()
        }
        let spent = sh_thread_cpu_nanos() &- cpuBefore
        state.pointee.tokensNanos &-= spent
        chargeCredit(spentNanos: spent, releasedBytes: releasedBytes)
        if releasedBytes > 0 {
            forgetReleases(before: now)
            state.pointee.recentReleasedBytes &+= releasedBytes
            state.pointee.lastReleaseNanos = now
        }
        return (spent, busy)
    }

    /// Charges the budget for released pages the program took back lately (see the file
    /// comment): `releasedTaken` is events.releasedTaken now, and spans first took some
    /// since the last tick at `firstTake` (events.releasedTakenNanos; the take counts
    /// as soon as that: a tick may come long after it). The balance goes no lower than
    /// -debtLimitNanos.
    ///
    /// Must hold the runner lock.
    func chargeRefaults(releasedTaken: UInt, since firstTake: Int64, now: Int64, debtLimitNanos: Int64) {
        let state = pointer(to: \.runner)!
        let taken = releasedTaken &- state.pointee.lastReleasedTaken
        state.pointee.lastReleasedTaken = releasedTaken
        if taken == 0 { return }
        forgetReleases(before: firstTake)
        let refaulted = min(taken, state.pointee.recentReleasedBytes)
        if refaulted == 0 { return }
        state.pointee.recentReleasedBytes &-= refaulted
        let charge = Int64(refaulted / osPageSize) &* refaultNanosPerOSPage
        // A program that soon takes back a good part of what a shrink credit let go did not
        // drop a phase: its heap swings. The credit ends, and the next waits for a pause
        // that doubles each time (until a credit goes by without that).
        if firstTake &- pointee.lastCreditNanos < refaultWindowNanos && !state.pointee.lastCreditRefaulted {
            state.pointee.refaultedAfterCredit &+= refaulted
            if state.pointee.refaultedAfterCredit &* refaultCreditDivisor >= state.pointee.lastCreditBytes {
                state.pointee.lastCreditRefaulted = true
                let pause = state.pointee.creditPauseNanos
                state.pointee.creditPauseNanos = pause == 0 ? creditPauseMinNanos : min(pause &* 2, creditPauseMaxNanos)
                state.pointee.creditPausedUntilNanos = now &+ state.pointee.creditPauseNanos
                endCredit()
            }
        }
        chargeCredit(spentNanos: charge, releasedBytes: 0)
        state.pointee.tokensNanos = max(state.pointee.tokensNanos &- charge, -debtLimitNanos)
    }

    /// Forgets the recent releases if the last was more than refaultWindowNanos before
    /// `time` (a release or a take then): a page taken back that late was not faulted
    /// back in by the scavenger's doing, and a new release starts a new count.
    ///
    /// Must hold the runner lock.
    @inline(__always) func forgetReleases(before time: Int64) {
        let state = pointer(to: \.runner)!
        if time &- state.pointee.lastReleaseNanos > refaultWindowNanos { state.pointee.recentReleasedBytes = 0 }
    }

    /// Charges a tick's work to the shrink credit first: `spentNanos` off its time and
    /// `releasedBytes` off its bytes; once its bytes are all released, its time left is
    /// withdrawn from the bucket (see the file comment). A credit whose time runs out
    /// first ends as well.
    ///
    /// Must hold the runner lock.
    func chargeCredit(spentNanos: Int64, releasedBytes: UInt) {
        let state = pointer(to: \.runner)!
        if state.pointee.creditBytes == 0 { return }
        state.pointee.creditNanos = max(0, state.pointee.creditNanos &- spentNanos)
        state.pointee.creditBytes &-= min(state.pointee.creditBytes, releasedBytes)
        if state.pointee.creditBytes == 0 || state.pointee.creditNanos == 0 { endCredit() }
    }

    /// Ends a shrink credit: its time not yet spent is withdrawn from the bucket.
    ///
    /// Must hold the runner lock.
    func endCredit() {
        let state = pointer(to: \.runner)!
        state.pointee.tokensNanos &-= state.pointee.creditNanos
        state.pointee.creditNanos = 0
        state.pointee.creditBytes = 0
    }

    /// Whether a shrink credit is being spent: credited within creditIntervalNanos and its
    /// bytes not all released. (Read by the inline runner without the runner lock, as its
    /// other timing fields: a stale value only moves a tick.)
    func creditLasts(_ now: Int64) -> Bool {
        now &- pointee.lastCreditNanos < creditIntervalNanos && pointee.runner.creditBytes != 0
    }

    /// Whether the heap's bytes in spans, as a goal (plus retainPercent), are below a
    /// quarter of its recent peak and a shrink credit could be granted now: the program
    /// is dropping a phase, and the epoch that credits it should end at once, not a
    /// millisecond later: a program with one thread may make its last free within that
    /// millisecond and then no call for a long while (it sleeps, or rebuilds the heap,
    /// when a release would only be faulted back in). (Read without the locks, as
    /// creditLasts: a stale value only moves a tick.) At most once per
    /// inlineFlaggedTickNanos: the epoch it ends may still credit nothing (its goal's
    /// basis can count what was freed a moment ago), and a heap that stays that low must
    /// not end an epoch at every call.
    func phaseDropped(_ now: Int64) -> Bool {
        let spans = pointee.pageHeap.pointee.stats.spanBytes
        return spans / 100 &* (100 &+ pointee.config.retainPercent) < creditPeakBytes / 4 && mayCredit(now)
            && now &- pointee.runner.lastPhaseProbeNanos >= inlineFlaggedTickNanos
    }

    /// The peak a drop is measured from for a shrink credit: the most the heap held in
    /// spans lately (peakLifetimeNanos), and since the trough that followed the last
    /// credit (ScavengerEpochs.swift: endEpochLocked). After a credit the heap's trough,
    /// and the start of its next build-up, lie far below the peak just credited: without
    /// the second bound, the first epoch after a pause (idle) credited that peak again,
    /// released free pages the build-up faulted straight back in, and that refault paused
    /// every later credit (the phases of scripts/rss stayed at 98% of their peak from then
    /// on). None until the heap has risen from that trough. (Read without the locks by
    /// phaseDropped.)
    var creditPeakBytes: UInt {
        pointee.risenSinceCredit ? min(pointee.recentPeakSpanBytes, pointee.peakSinceCreditSpanBytes) : 0
    }

    /// Whether a shrink credit may be granted now: none in the last creditIntervalNanos,
    /// and no pause after one the program took back (see the file comment).
    func mayCredit(_ now: Int64) -> Bool {
        now &- pointee.lastCreditNanos >= creditIntervalNanos && now &- pointee.runner.creditPausedUntilNanos >= 0
    }
}
