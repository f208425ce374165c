// The scavenger's trace lines (SWIFTHEAP_SCAVTRACE) and malloc_trim.
//
// A `scav` line reports the work since the previous line of its generation — free pages
// released by the page allocator and OS pages released inside spans — one when the
// generation reaches its goal, one when it ends if decay released more meanwhile, and
// malloc_trim's forced one:
//
//   scav <gen> <KiB> KiB work, <KiB> KiB total, <N>% util[ (forced)]
//
// Lines are written with write(2), never under a lock (stderr may be a pipe).

import CShim

/// What a generation's trace line reports.
struct ScavengeTrace {
    var generation: UInt32
    var releasedBytes: UInt
    var forced: Bool
}

extension UnsafeMutablePointer where Pointee == Scavenger {
    /// The work of the current generation not yet reported by a trace line, if any, and
    /// marks it reported.
    ///
    /// Must hold the page heap's lock.
    func untracedWorkLocked(forced: Bool) -> ScavengeTrace? {
        let scav = pages.pointee.scav
        let done = scav.pagesReleased &+ pointee.inSpanReleasedThisGen
        if done <= pointee.tracedBytes { return nil }
        let work = done &- pointee.tracedBytes
        pointee.tracedBytes = done
        return ScavengeTrace(generation: scav.gen, releasedBytes: work, forced: forced)
    }

    /// Prints the trace line. Takes the page heap's lock briefly for the totals; must
    /// not hold it.
    func printTrace(_ trace: ScavengeTrace) {
        heapLock.lock()
        let retained = retainedBytesLocked()
        let released = pointee.pageHeap.pointee.stats.mappedBytes &- retained
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

    /// malloc_trim: a forced full generation (Go's scavengeAll) releasing every free
    /// page, and the free-object pages inside spans. Returns whether anything was released.
    ///
    /// Takes the page heap's lock and the central locks; must hold none.
    func trim() -> Bool {
        _ = freeEmptySpans(all: true)
        heapLock.lock()
        let ended = endEpochLocked(now: sh_monotonic_nanos())
        var released = PageAlloc.scavenge(pages, UInt.max, mayUnlock: true)
        pointee.inSpanPassDone = true
        setGoalReachedLocked(true)
        _ = pointee.pageHeap.releaseIdleSpanMapLocked()
        heapLock.unlock()
        released &+= releaseFreeObjectPages()
        if pointee.config.scavengeTrace {
            if let ended { printTrace(ended) }
            heapLock.lock()
            let generation = pages.pointee.scav.gen
            pointee.tracedBytes = pages.pointee.scav.pagesReleased &+ pointee.inSpanReleasedThisGen
            heapLock.unlock()
            printTrace(ScavengeTrace(generation: generation, releasedBytes: released, forced: true))
        }
        return released > 0
    }
}
