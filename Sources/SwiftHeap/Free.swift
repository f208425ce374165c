// Deallocation into the thread cache: the free fast path, its misuse checks, and the
// slow path that caches an object in a remote bin or flushes a full bin.
//
// free(p) finds p's page's entry in the page→span map (no lock), checks from the
// entry's copies of its span's fields (Span.swift: SpanMapEntry) that p is the start of
// an object of that span, and pushes it on the calling thread's bin for the span's
// class. The check costs one compare on the multiply that finds the object's
// index (Span.swift: objectStart) and catches frees of interior pointers; a pointer
// into a span's tail (past its last whole object) passes it, and finds its index's bit
// set in the free bitmap below (the tail's sentinels), so it goes to the slow path's
// diagnosis too. Pointers SwiftHeap never returned find no span.
//
// Double frees are caught from the allocator's own metadata, without touching the
// object (writing a marker into every freed object, as glibc's tcache does, dirties a
// cold cache line per free and cost a third of the time of a churning workload here):
//   * the object's bit in its span's free bitmap is set: the object went back to its
//     span already (freed before, and flushed, or freed by another thread). Read
//     without the central lock: the bit of an object the caller owns is clear, and is
//     set only when the object is released, so a set bit is always a double free (or a
//     tail's sentinel: no object at all);
//   * the object is one of the last four pushed on the bin it would go to: the common
//     free(p); free(p), even with a few frees of other objects in between (four
//     compares on the line of the bin that the push writes anyway).
// A double free of an object that sits deeper in this thread's bin is caught later,
// when the two copies reach the span and the second finds its bit already set; if the
// object is handed out meanwhile, two owners share it until then. The same holds for a
// remote bin of a class whose objects fill whole cache lines, whose objects refill the
// freeing thread's own bin (ThreadCache.swift: adoptRemote).
//
// What the checks cost, and a layout that did not lower it: on st-churn the checks are
// 22 of the fast path's 47 (25 without them), and the bitmap read is about one simulated D1
// miss per free (cachegrind). A mirror of each page's free bits in its span map entry
// (64-byte entries: the check on the line the fast path reads anyway; take and release
// copying each word they change into the entries of the pages concerned) took the
// misses per operation from 4.81 to 3.98 (st-churn) and 5.83 to 4.92 (larson), but ran
// 1.036x as long on st-churn (40 paired runs, CPU time) and 1.12-1.16x on larson: six
// more instructions per free, and entry lines, which every free reads on its way to the
// push, written by other threads' releases. Dropping the bitmap read alone gave 0.95x,
// the recent compares alone 0.95x, every check 0.84x (the same runs): the misses
// cachegrind counts hit this machine's L2 and overlap; the instructions do not. A `bt`
// with the bitmap as its memory operand (the word found by the instruction itself: 4
// instructions for the bitmap test instead of 7) ran 1.035x as long (40 paired runs):
// that form is microcoded. So the checks cost what their instructions do, about 0.75%
// of st-churn's time each, and these three need about 19 of today's 22: the multiply
// and a compare and branch for the object start (6), the bit's word, load, test and
// branch (5), a compare and branch for each recent push (8); some 14% of st-churn.
// Under the 3-5% asked of them they would have to catch less.
//
// A free of an object whose span another thread's cache draws from (a remote free)
// takes the same fast path into this thread's remote bin of the class; the slow path
// sends a full remote bin to the central list in one batch. An address whose span holds
// no small object starting there (a large object, or a misuse) comes back with its span
// (FastFree.notSmall), and the C ABI offers it to the thread's large cache
// (LargeCache.swift: freeLarge) before its slow path; anything else the fast path does
// not finish (no cache yet, a full bin, a misuse to diagnose) goes to the C ABI's slow
// path (Entry.swift), which calls cacheFree here for small objects.

import CShim

/// Addresses below 2^fastFreeAddressBits may take free's fast path (cacheFreeFast).
let fastFreeAddressBits: UInt = 47

/// What free's fast path did with an address (cacheFreeFast).
enum FastFree {
    /// The object is in the calling thread's bin.
    case done
    /// `span` holds the address but no small object starts there: a large object (or a
    /// misuse), for the large cache or the C ABI's slow path.
    case notSmall(UnsafeMutablePointer<Span>)
    /// Anything else the fast path does not finish (null, no cache yet, no span, a full
    /// bin, a double free to diagnose); nothing changed.
    case slow

    /// Whether the object is in the calling thread's bin.
    var isDone: Bool { if case .done = self { return true } else { return false } }
}

/// Frees the small object at `address` into the calling thread's bin, if the fast path
/// can (see the file comment); otherwise changes nothing and says why (FastFree). No
/// lock, no atomic. Null and addresses from 2^47 up are `.slow` after one test (address
/// - 1 wraps for null); the span map covers 2^48 (heapAddressBits), and Linux hands user
/// space below 2^47 unless asked for more, so the test is cheaper than and as safe as
/// one against the limit.
@inline(__always) func cacheFreeFast(_ address: UInt, spanMap: SpanMap) -> FastFree {
    guard (address &- 1) >> fastFreeAddressBits == 0, let entry = spanMap.entry(containingMapped: address) else {
        return .slow
    }
    // Everything up to the push comes from the page's entry in the span map (its copies
    // of the span's fields: Span.swift, SpanMapEntry); the span record is read only for
    // the object's free bit, off the path to the push. An entry with no copies (a large
    // span's, reciprocal 0) is never an object start here: `.notSmall`, for the large
    // cache (LargeCache.swift: freeLarge, which checks it), or `.slow` with no span;
    // without the checks it falls through to bin 0, whose capacity is 0 in every cache.
    let (index, isStart) = entry.objectStart(of: address)
    if misuseChecks && !isStart {
        guard let span = entry.pointee.span else { return .slow }
        return .notSmall(span)
    }
    let bin = callingThreadFreeBin(entry)
    let top = bin.pointee.top
    if !bin.pointee.isFull
        && (!misuseChecks || !looksFreed(address, index: index, span: entry.pointee.span.unsafelyUnwrapped, top: top)) {
        bin.pushNonFull(address)
        return .done
    }
    return .slow
}

/// The calling thread's bin that a free of an object of the small span whose page entry
/// is `entry` goes to (ThreadCache.freeBin, from the entry's copies of the span's owner
/// and binOffset). A thread with no cache yet finds every bin full (the shim's
/// swiftheap_no_cache_yet).
@inline(__always) func callingThreadFreeBin(_ entry: UnsafeMutablePointer<SpanMapEntry>) -> UnsafeMutablePointer<CacheBin> {
    UnsafeMutablePointer<ThreadCache>(slot: sh_tls_slot()).freeBin(owner: entry.pointee.owner, binOffset: entry.pointee.binOffset)
}

/// The page entry and span of the small object at `address`, found and checked as free's
/// fast path does (the object's start, its free bit, the last four pushes on the bin a
/// free of it would go to), for realloc (Entry.swift: reallocate); nil where that path
/// would go slow (no small object starts there, it looks freed, or its bin is full or
/// the thread has no cache yet: the caller's slow path diagnoses). No lock, no atomic.
@inline(__always) func liveSmallObjectFast(_ address: UInt, spanMap: SpanMap)
    -> (entry: UnsafeMutablePointer<SpanMapEntry>, span: UnsafeMutablePointer<Span>)? {
    guard let entry = spanMap.entry(containing: address) else { return nil }
    let (index, isStart) = entry.objectStart(of: address)
    guard isStart, let span = entry.pointee.span else { return nil }
    let bin = callingThreadFreeBin(entry)
    // The bin's fullness first, as in cacheFreeFast: the compares read below its top.
    guard !bin.pointee.isFull, !looksFreed(address, index: index, span: span, top: bin.pointee.top) else { return nil }
    return (entry, span)
}

/// Frees the small object at `address`, whose page entry is `entry`, that
/// liveSmallObjectFast found live (nothing may have freed it since), onto the calling
/// thread's bin without its checks again; false if the bin is full (or the thread has
/// no cache yet): then nothing changed. No lock, no atomic.
@inline(__always) func cacheFreeChecked(_ address: UInt, entry: UnsafeMutablePointer<SpanMapEntry>) -> Bool {
    let bin = callingThreadFreeBin(entry)
    if bin.pointee.isFull { return false }
    bin.pushNonFull(address)
    return true
}

/// Whether object `index` of `span` (at `address`) is free already: its bit in the
/// span's free bitmap is set, or it is one of the last four objects pushed on the bin
/// whose top is `top`. See the file comment for why the unlocked read of the bitmap is
/// sound. Kept short: in a memory-bound program every instruction here delays the
/// program's next miss. With fewer than four objects in the bin the compares read its
/// guard words, which are zero (ThreadCache.swift: binGuardWords), never an object's
/// address.
@inline(__always) func looksFreed(_ address: UInt, index: UInt, span: UnsafeMutablePointer<Span>,
                                  top: UnsafeMutablePointer<UInt>) -> Bool {
    let recent = top[-1] == address || top[-2] == address || top[-3] == address || top[-4] == address
    return recent || span.isFree(index)
}

/// Whether object `index` of small span `span` (at `address`) looks freed already to the
/// calling thread: free in its span, or among the last pushes of the bin it would go to
/// in `cache` (nil: a thread with no cache yet). The slow paths' double-free check.
func looksFreed(_ address: UInt, index: UInt, span: UnsafeMutablePointer<Span>,
                cache: UnsafeMutablePointer<ThreadCache>?) -> Bool {
    if span.isFree(index) { return true }
    guard let cache else { return false }
    return looksFreed(address, index: index, span: span, top: cache.freeBin(span).pointee.top)
}

extension UnsafeMutablePointer where Pointee == ThreadCache {
    /// The bin a free of an object of small span `span` goes to: its class's bin if this
    /// cache draws from the span, else the class's remote bin (ThreadCache.swift), found
    /// from the span's binOffset. The fast path pushes on either the same way.
    @inline(__always) func freeBin(_ span: UnsafeMutablePointer<Span>) -> UnsafeMutablePointer<CacheBin> {
        freeBin(owner: span.pointee.owner, binOffset: span.pointee.binOffset)
    }

    /// freeBin for a span whose owner and binOffset are `owner` and `binOffset` (read from
    /// its record, or from its copies in the span map: the fast path). The owner is
    /// compared as a bit pattern: no test for nil, as this cache is not.
    @inline(__always) func freeBin(owner: UnsafeMutableRawPointer?, binOffset: UInt16) -> UnsafeMutablePointer<CacheBin> {
        let offset = Int(binOffset)
        return UInt(bitPattern: owner) == UInt(bitPattern: self) ? bin(atOffset: offset) : remoteBin(atOffset: offset)
    }
}

/// Caches the live small object at `address` of `span` in `cache`: in its bin (flushing
/// the older half of a full bin first), or in the remote bin if another cache draws from
/// the span.
///
/// Takes the class's central lock (and the page heap's) when a bin is flushed.
func cacheFree(_ cache: UnsafeMutablePointer<ThreadCache>, _ span: UnsafeMutablePointer<Span>, _ address: UInt) {
    let cls = Int(span.pointee.sizeClass)
    if span.pointee.owner != UnsafeMutableRawPointer(cache) {
        cache.pushRemote(cls, address)
        return
    }
    let bin = cache.bin(cls)
    if !bin.pointee.isFull {
        bin.pushNonFull(address)
    } else {
        cache.flushBinAndPush(cls, address)
    }
}
