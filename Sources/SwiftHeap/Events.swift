// Heap events: what the page heap and the central lists publish for the scavenger, which
// sits above them and reads this record; nothing below the scavenger calls it.
//
//   freedSinceEpoch  page bytes returned to the page heap since the scavenger last ended
//                    a sweep epoch (the page heap adds, the scavenger resets; heap lock)
//   epochThreshold   freedSinceEpoch that makes an epoch due (the scavenger sets it when
//                    it ends an epoch; heap lock)
//   netFreedSinceEpoch  page bytes returned less page bytes taken since the epoch ended:
//                    how much the heap shrank (heap lock). A heap that keeps churning at
//                    one size frees a lot and shrinks by nothing; one that drops a phase
//                    shrinks by what it frees.
//   shrinkThreshold  netFreedSinceEpoch that makes an epoch due too (the scavenger sets it
//                    when it ends an epoch, from the live bytes then: a heap that lost a
//                    share of its live bytes gets a new goal at once; heap lock)
//   epochDue         raised (atomic) when freedSinceEpoch reaches its threshold (bit
//                    epochDueByFrees) or netFreedSinceEpoch its own (epochDueByShrinking):
//                    an epoch's worth of work; the scavenger clears it
//   peakSpanBytes    the most bytes in spans since the epoch ended (the page heap raises
//                    it, the scavenger resets it to what is in spans when it ends an
//                    epoch; heap lock), and when it was reached (peakSpanNanos): what the
//                    program needed at its peak, for the goal
//   releasedTaken    bytes of released pages (not resident: scavenged, or fresh from the
//                    kernel) that spans took from the page heap, ever (the page heap adds;
//                    heap lock): the scavenger compares it with what it released lately
//                    to see the program fault back in what it just gave away; and when
//                    spans first took some since the scavenger last looked
//                    (releasedTakenNanos, 0 if not since; the scavenger resets it)
//   retainedGoal     the bytes the scavenger works retained memory down to (it sets it
//                    when it ends an epoch; 0 before the first): a page heap that grows
//                    above it releases as much as it grew (PageHeap.scavengeOnGrowthLocked;
//                    heap lock)
//   pagesMoved       raised (atomic, relaxed) whenever pages move between spans and the
//                    page heap: the C ABI's slow paths then give the scavenger's runner a
//                    chance to run (ScavengerRunner.swift); the runner clears it
//   inSpanReleased   bytes of OS pages released inside small spans and not yet reclaimed
//                    (atomic; the central lists add and subtract, under their own locks)
//   droppingPhase    raised (atomic) by the scavenger while the program drops a phase (a
//                    shrink credit lasts: ScavengerPacing.swift), lowered after: threads
//                    keep no freed large spans for themselves meanwhile (LargeCache.swift),
//                    so that what the program frees goes back to the page heap and out
//
// The flags are words read with one load on the slow paths; raising them never wakes
// anybody (waking may block or allocate).

import CShim

/// epochDue's bits: an epoch's worth of pages freed; the heap shrank by the threshold.
let epochDueByFrees: UInt32 = 1
let epochDueByShrinking: UInt32 = 2

struct HeapEvents {
    var freedSinceEpoch: UInt = 0
    var epochThreshold: UInt = 1 << 20
    var netFreedSinceEpoch: Int = 0
    var shrinkThreshold: UInt = 1 << 20
    var retainedGoal: UInt = 0
    var peakSpanBytes: UInt = 0
    var peakSpanNanos: Int64 = 0
    var releasedTaken: UInt = 0
    var releasedTakenNanos: Int64 = 0
    var epochDue: UInt32 = 0
    var pagesMoved: UInt32 = 0
    var droppingPhase: UInt32 = 0
    var inSpanReleased: UInt64 = 0
}

extension UnsafeMutablePointer where Pointee == HeapEvents {
    @inline(__always) var epochDueWord: UnsafeMutablePointer<UInt32> { pointer(to: \.epochDue)! }
    @inline(__always) var pagesMovedWord: UnsafeMutablePointer<UInt32> { pointer(to: \.pagesMoved)! }
    @inline(__always) var droppingPhaseWord: UnsafeMutablePointer<UInt32> { pointer(to: \.droppingPhase)! }
    @inline(__always) var inSpanReleasedWord: UnsafeMutablePointer<UInt64> { pointer(to: \.inSpanReleased)! }

    /// Pages moved between spans and the page heap (a span made, given back or resized).
    @inline(__always) func notePagesMoved() {
        if sh_load32_relaxed(pagesMovedWord) == 0 { sh_store32(pagesMovedWord, 1) }
    }

    /// `bytes` of pages were returned to the page heap. Must hold the page heap's lock.
    func noteFreedLocked(_ bytes: UInt) {
        pointee.freedSinceEpoch &+= bytes
        pointee.netFreedSinceEpoch &+= Int(bitPattern: bytes)
        var due = sh_load32_relaxed(epochDueWord)
        if pointee.freedSinceEpoch >= pointee.epochThreshold { due |= epochDueByFrees }
        if pointee.netFreedSinceEpoch >= Int(bitPattern: pointee.shrinkThreshold) { due |= epochDueByShrinking }
        if due != sh_load32_relaxed(epochDueWord) { sh_store32(epochDueWord, due) }
        notePagesMoved()
    }

    /// `bytes` of pages were taken from the page heap, `releasedBytes` of them released
    /// (they fault in when touched), which now has `spanBytes` in spans.
    /// Must hold the page heap's lock.
    func noteTakenLocked(_ bytes: UInt, releasedBytes: UInt, spanBytes: UInt) {
        pointee.netFreedSinceEpoch &-= Int(bitPattern: bytes)
        if releasedBytes != 0 {
            pointee.releasedTaken &+= releasedBytes
            // (A clock read only where the pages taken will fault in: microseconds each.)
            if pointee.releasedTakenNanos == 0 { pointee.releasedTakenNanos = sh_monotonic_nanos() }
        }
        if spanBytes > pointee.peakSpanBytes {
            pointee.peakSpanBytes = spanBytes
            pointee.peakSpanNanos = sh_monotonic_nanos()
        }
        notePagesMoved()
    }

    /// Adjusts the bytes of OS pages released inside small spans (from the central lists).
    func noteInSpanReleased(_ delta: Int64) {
        _ = sh_add64(inSpanReleasedWord, UInt64(bitPattern: delta))
    }

    /// Bytes of OS pages released inside small spans now.
    var inSpanReleasedBytes: UInt { UInt(sh_load64_relaxed(inSpanReleasedWord)) }
}
