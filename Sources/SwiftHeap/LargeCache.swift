// The large cache: per thread, a few free large spans by page count, so that a program
// that allocates and frees objects a little above maxSmallSize (up to 512 KiB: I/O
// buffers, arrays, a string builder's next size) takes no lock and leaves the page
// allocator alone (tcmalloc's thread caches serve the same sizes; Go's per-P page
// cache serves allocations of this size without the heap lock too).
//
// Without it, every such malloc and free takes the page heap's lock and walks the page
// allocator's summaries up and back: about 150 ns a pair in one thread (most of it
// PageAlloc.update), and threads doing it at once wait on the lock (four threads
// replacing 33-257 KiB objects, 4 live each, ran 12 times longer than under tcmalloc).
//
// Design:
//   * Large objects of up to largeCacheMaxPages pages are rounded up to a page class:
//     every page count up to 16, then even counts (at most 1/16 of the object more);
//     a span of a class's page count can serve any request of its class.
//   * A thread's record (ThreadCache) holds four slots per class. free of a large span
//     of a class's page count puts it in an empty slot of its class if the thread caches
//     at most its budget with it (its share of an eighth of the heap's spans, from 2
//     to 8 MiB: largeCacheBudget), the span is at most an eighth of the budget and its
//     class holds fewer spans than the budget holds 2 MiB (at 2 MiB: one span of each
//     class up to 256 KiB, one slot per class as this cache had first); malloc takes the
//     span put last of its class, or else of the lowest class above it with at most a quarter more
//     pages (the next class whatever its count: a page more up to 16 pages, two above),
//     so an object may get up to a quarter more pages than it asked for, as from
//     jemalloc's size classes. In a loop of random sizes of 32-256 KiB, 4 live (the
//     bench's mt-mid), that sends 3 of 100 requests to the page heap, against 7 with
//     the next class only (callgrind: 6.1k and 14.4k of 200k in one thread) and 1 in 4
//     with the class's slot alone (simulated); 4 threads doing it ran 0.76x as long.
//     With 256 live 32-288 KiB blocks, one span per class and 2 MiB sent 38 of 100
//     requests to the page heap (1,950 instructions each: PageAlloc's find and
//     summaries), a list per class and 8 MiB 15 (12.5 of them above 256 KiB, which the
//     cache did not serve then), and the loop ran in 0.6 of the time (0.45 s against
//     glibc's 0.24 s before, 0.27 s after). Lists cost an atomic exchange at each free
//     (to push on a list a drainer may take), which waits for the program's pending
//     stores: 16% of that loop's time under perf; slots do not.
//     A cached span keeps its pages and its place in the span map; its state is
//     .cached, so that a second free of it is a double free.
//   * The memory stays the thread's only until the scavenger's next tick (at most one
//     per scavengerTickNanos: ScavengerPacing.swift), which drains every thread's slots
//     back to the page heap, where its pages are free and the scavenger releases them like
//     any others; so does malloc_trim, the thread's exit, and a fork's child for the
//     threads that do not exist there. A busy thread fills its slots again at once.
//     While the program drops a phase (the scavenger raises events.droppingPhase), the
//     tick that sees it drains the slots at once and threads cache nothing: the memory
//     of a phase the program let go of goes back to the OS whole, as without the cache
//     (make rss's phases: without this the cache kept 1.2 MiB more resident 1 s after
//     each free-all).
//   * A slot is one word, taken with an atomic exchange: by its thread (malloc) and by a
//     drainer (another thread). The owner puts a span only into an empty slot, which no
//     other thread fills, with a release store. No lock: a large malloc that the cache
//     serves costs one exchange and a free none, not a lock and a walk of the page
//     allocator.
//   * Nor anything else the slow paths do: malloc's slow path asks the cache first
//     (Entry.swift: allocateLargeCached), and free's fast path hands the span it found to
//     freeLarge (Free.swift: FastFree.notSmall), so neither saves errno (no system call
//     on these paths), looks the span up again or checks it twice, and put reads the
//     dropping-phase word through a pointer in the cache's header: a malloc and free of
//     100 KiB in a loop took 283 instructions a pair before this (tcmalloc 70) and 109
//     after (valgrind --tool=cachegrind), 0.60 of the time.
//   * The owner counts the pages it cached (`pages`): a drain does not tell it, so the
//     count is at least the true one (the budget is never exceeded), and it is recounted
//     from the slots when a drainer has raised `drained`.
//
// Misuse: a free of a cached span (a double free) finds its state .cached and is
// reported. Two threads freeing one large object at once may both see it live (as
// without the cache, where the second is caught under the page heap's lock only if the
// first has finished).
//
// Locking: none for the owner's take and put; a drain takes the page heap's lock to free
// what it took, and the registry's lock to walk the caches (CacheRegistry.drainLargeCaches).

import CShim

/// The most pages of an object the large cache serves (512 KiB).
let largeCacheMaxPages: UInt = 64
/// The fewest: a large object has more than maxSmallSize bytes.
let largeCacheMinPages: UInt = (maxSmallSize >> pageShift) &+ 1
/// Page classes: every page count up to largeCacheExactPages, then even counts.
let largeCacheExactPages: UInt = 16
let largeCacheClasses = 36
/// The most pages one thread keeps in its large cache (8 MiB), and the fewest it may
/// always keep (2 MiB): in between, its share of an eighth of the heap's spans
/// (largeCacheBudget).
let largeCacheBudgetPages: UInt = 1024
let largeCacheMinBudgetPages: UInt = 256

/// The pages a thread's large cache may hold while the page heap's spans (live, cached
/// and on the centrals) cover `heapSpanBytes` and `caches` thread caches are live: an
/// eighth of the spans shared among the caches, from largeCacheMinBudgetPages up to
/// largeCacheBudgetPages, so that what the caches keep out of the page heap stays small
/// against the heap (peak RSS) and a heap of many big objects finds the ones it frees
/// in its cache.
@inline(__always) func largeCacheBudget(heapSpanBytes: UInt, caches: UInt) -> UInt {
    let share = (heapSpanBytes >> (pageShift &+ 3)) / max(caches, 1)
    return min(largeCacheBudgetPages, max(largeCacheMinBudgetPages, share))
}

/// The page count a large object of `pages` pages is given: its page class's, for the
/// sizes the large cache serves; `pages` itself for the others.
@inline(__always) func largeObjectPages(_ pages: UInt) -> UInt {
    if pages <= largeCacheExactPages || pages > largeCacheMaxPages { return pages }
    return (pages &+ 1) & ~1
}

/// The page class's page count for a request of `size` bytes that the large cache serves
/// (above maxSmallSize, up to largeCacheMaxPages pages), or nil for any other size.
@inline(__always) func largeCachePages(forSize size: UInt) -> UInt? {
    guard size > maxSmallSize && size <= largeCacheMaxPages &<< pageShift else { return nil }
    return largeObjectPages((size &+ pageSize &- 1) >> pageShift)
}

/// The slot of a page class's page count (largeObjectPages of itself), or nil for page
/// counts that are not a class's.
@inline(__always) func largeCacheSlot(pages: UInt) -> Int? {
    if pages < largeCacheMinPages || pages > largeCacheMaxPages { return nil }
    if pages <= largeCacheExactPages { return Int(pages &- largeCacheMinPages) }
    if pages & 1 != 0 { return nil }
    return Int(largeCacheExactPages &- largeCacheMinPages &+ 1) &+ Int((pages &- largeCacheExactPages) >> 1) &- 1
}

/// The page count of the page class in slot `index` (below largeCacheClasses): the
/// inverse of largeCacheSlot.
@inline(__always) func largeCacheClassPages(slot index: Int) -> UInt {
    let exactSlots = Int(largeCacheExactPages &- largeCacheMinPages &+ 1)
    if index < exactSlots { return largeCacheMinPages &+ UInt(index) }
    return largeCacheExactPages &+ UInt(index &- exactSlots &+ 1) &* 2
}

/// A thread's large cache (see the file comment), in its cache record.
struct LargeCache {
    /// largeCacheWays slots per page class (class i's are slots i·ways ..< (i + 1)·ways),
    /// each one span or nil: atomic words.
    var slots: InlineArray<144, UnsafeMutablePointer<Span>?>
    /// The pages this thread has put in its slots and not taken out (at least the pages
    /// in them: a drain does not lower it). The owner's alone.
    var pages: UInt
    /// Raised by a drainer that took spans, lowered by the owner when it recounts.
    var drained: UInt32
    /// The pages the owner may keep (largeCacheBudget), read again from the heap's words
    /// every largeCacheBudgetPuts puts and after every drain (`putsToBudget` 0), not at
    /// each put: those words sit on lines other threads write. The owner's alone; zero in
    /// a fresh record.
    var budget: UInt = 0
    var putsToBudget: UInt32 = 0
}

/// The most spans of one page class a large cache holds (its slots per class).
let largeCacheWays = 4
/// The slots of a large cache: LargeCache.slots' count.
let largeCacheSlots = largeCacheClasses * largeCacheWays
/// How many puts a large cache's budget serves before it is read again.
let largeCacheBudgetPuts: UInt32 = 64

extension UnsafeMutablePointer where Pointee == LargeCache {
    /// Slot `way` of page class `index`.
    @inline(__always) func slot(_ index: Int, way: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        slot(index &* largeCacheWays &+ way)
    }

    /// Every slot word, `slot(i)` for i below largeCacheSlots.
    @inline(__always) func slot(_ i: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        (UnsafeMutableRawPointer(self) + MemoryLayout<LargeCache>.offset(of: \.slots)!)
            .assumingMemoryBound(to: UnsafeMutableRawPointer?.self) + i
    }

    /// Takes a cached span for an object of `pages` pages (a page class's count): of its
    /// class, or else of the nearest class up of at most a quarter more pages (always the
    /// next class: a page or two more), live again (state .large); nil if there is none.
    /// The owner only. No lock.
    @inline(__always) func take(pages: UInt) -> UnsafeMutablePointer<Span>? {
        guard let index = largeCacheSlot(pages: pages) else { return nil }
        if let span = take(slot: index) { return span }
        return take(above: index, pages: pages)
    }

    /// take's fallback: the span of the lowest class above slot `index` (the class of
    /// `pages` pages) with at most a quarter more pages than `pages`, or of the next class
    /// whatever its count. The owner only.
    private func take(above index: Int, pages: UInt) -> UnsafeMutablePointer<Span>? {
        let most = pages &+ pages >> 2
        var i = index &+ 1
        while i < largeCacheClasses && (i == index &+ 1 || largeCacheClassPages(slot: i) <= most) {
            if let span = take(slot: i) { return span }
            i &+= 1
        }
        return nil
    }

    /// Takes a span of class `index`, live again, or nil: from its last filled slot, so
    /// that the span put last (put fills the first empty slot) goes out first. The owner
    /// only.
    @inline(__always) private func take(slot index: Int) -> UnsafeMutablePointer<Span>? {
        var way = largeCacheWays &- 1
        while way >= 0 {
            let word = slot(index, way: way)
            // nil: a drainer took it. No drainer runs while the process is single-threaded
            // (the scavenger's tick runs on this thread then): no exchange.
            if sh_load_ptr_relaxed(word) != nil,
               let raw = sh_libc_single_threaded() != 0 ? sh_take_ptr_unshared(word) : sh_xchg_ptr(word, nil) {
                let span = raw.assumingMemoryBound(to: Span.self)
                pointee.pages &-= min(pointee.pages, span.pointee.pages)
                span.pointee.state = .large
                return span
            }
            way &-= 1
        }
        return nil
    }

    /// Caches live large span `span`, freed by the program, in an empty slot of its class
    /// if its page count is a class's, the cache then holds at most its budget
    /// (largeCacheBudget of the words `heapSpanBytes`, the page heap's span bytes, and
    /// `liveCaches`, the live thread caches, read racily now and then: `budget`) in the
    /// shape the budget allows, and the program is not dropping a phase: `droppingPhase`
    /// (the page heap's events.droppingPhase word; nil: cache nothing) is lowered. Returns
    /// whether it did. The owner only: only it fills a slot, with a release store, so an
    /// empty slot stays empty until it does. No lock, no atomic read-modify-write.
    @inline(__always) func put(_ span: UnsafeMutablePointer<Span>, droppingPhase: UnsafeMutablePointer<UInt32>?,
                               heapSpanBytes: UnsafeMutablePointer<UInt64>, liveCaches: UnsafeMutablePointer<UInt64>) -> Bool {
        guard let droppingPhase, sh_load32_relaxed(droppingPhase) == 0 else { return false }
        let spanPages = span.pointee.pages
        guard !span.pointee.direct, let index = largeCacheSlot(pages: spanPages) else { return false }
        if sh_load32_relaxed(pointer(to: \.drained)!) != 0 { recount() }
        if pointee.putsToBudget == 0 {
            pointee.budget = largeCacheBudget(heapSpanBytes: UInt(sh_load64_relaxed(heapSpanBytes)),
                                              caches: UInt(sh_load64_relaxed(liveCaches)))
            pointee.putsToBudget = largeCacheBudgetPuts
        }
        pointee.putsToBudget &-= 1
        // The budget's shape: spans of at most an eighth of it, and as many of a class as
        // it holds 2 MiB. At the smallest budget that is one span of each class up to
        // 256 KiB, so that a small heap's few big objects do not crowd the other classes
        // out of 2 MiB (mt-mid ran 1.17x as long with lists of any length).
        let budget = pointee.budget
        if spanPages > budget >> 3 || pointee.pages &+ spanPages > budget { return false }
        let ways = Swift.min(largeCacheWays, Int(budget / largeCacheMinBudgetPages))
        var way = 0
        while way < ways {
            let word = slot(index, way: way)
            if sh_load_ptr_relaxed(word) == nil {
                span.pointee.state = .cached
                sh_store_ptr(word, UnsafeMutableRawPointer(span))
                pointee.pages &+= spanPages
                return true
            }
            way &+= 1
        }
        return false
    }

    /// Counts the pages in the slots again, after a drain. The owner only.
    @inline(__always) private func recount() {
        sh_store32(pointer(to: \.drained)!, 0)
        pointee.putsToBudget = 0
        var total: UInt = 0
        for i in 0..<largeCacheSlots {
            if let raw = sh_load_ptr(slot(i)) { total &+= raw.assumingMemoryBound(to: Span.self).pointee.pages }
        }
        pointee.pages = total
    }

    /// Takes every span out of the slots and returns them to `pageHeap`; by the owner
    /// (`byOwner`: its count starts again from zero) or by a drainer. Returns the pages
    /// returned.
    ///
    /// Takes the page heap's lock when there is something to return; must not hold it.
    func drain(to pageHeap: UnsafeMutablePointer<PageHeap>, byOwner: Bool) -> UInt {
        var returned: UInt = 0
        var locked = false
        for i in 0..<largeCacheSlots {
            let word = slot(i)
            if sh_load_ptr_relaxed(word) == nil { continue }
            guard let raw = sh_xchg_ptr(word, nil) else { continue }
            let span = raw.assumingMemoryBound(to: Span.self)
            if !locked {
                pageHeap.lockPointer.lock()
                locked = true
            }
            returned &+= span.pointee.pages
            pageHeap.freeCachedLargeLocked(span)
        }
        if locked { pageHeap.lockPointer.unlock() }
        if byOwner {
            pointee.pages = 0
            pointee.putsToBudget = 0
            sh_store32(pointer(to: \.drained)!, 0)
        } else if returned > 0 {
            sh_store32(pointer(to: \.drained)!, 1)
        }
        return returned
    }

    /// The spans and pages in the slots now (racy reads, for reports: exact in a quiet
    /// heap; span records are never unmapped, so a stale pointer reads harmlessly).
    func cachedFigures() -> (spans: UInt, pages: UInt) {
        var spans: UInt = 0, total: UInt = 0
        for i in 0..<largeCacheSlots {
            if let raw = sh_load_ptr(slot(i)) {
                spans &+= 1
                total &+= raw.assumingMemoryBound(to: Span.self).pointee.pages
            }
        }
        return (spans, total)
    }
}

extension UnsafeMutablePointer where Pointee == ThreadCache {
    /// This thread's large cache. The no-cache record's slots stay empty: its thread puts
    /// nothing in them (ThreadCache.swift: exited threads).
    @inline(__always) var largeCache: UnsafeMutablePointer<LargeCache> { pointer(to: \.large)! }

    /// A live large span of `pages` pages (a page class's count, largeObjectPages) from
    /// this thread's large cache, or nil. No lock.
    @inline(__always) func takeLarge(pages: UInt) -> UnsafeMutablePointer<Span>? {
        largeCache.take(pages: pages)
    }

    /// free of `address`, whose span is `span` (Free.swift: FastFree.notSmall): keeps it in
    /// this thread's large cache if it is a live large object at its span's base that the
    /// heap profiler did not sample and the cache takes it (put: not while the program
    /// drops a phase, never in the no-cache record); returns whether it did. Anything else
    /// (misuse, a sampled object, what the cache refuses) returns false, for the C ABI's
    /// slow path. No lock.
    @inline(__always) func freeLarge(_ span: UnsafeMutablePointer<Span>, at address: UInt) -> Bool {
        span.pointee.state == .large && span.pointee.base == address && !span.pointee.profiled
            && largeCache.put(span, droppingPhase: header.pointee.droppingPhase,
                              heapSpanBytes: header.pointee.heapSpanBytes, liveCaches: header.pointee.registry.liveCountWord)
    }
}

extension UnsafeMutablePointer where Pointee == CacheRegistry {
    /// Returns every live thread's cached large spans to the page heap (the scavenger's
    /// tick, malloc_trim). Returns the pages returned.
    ///
    /// Takes the registry's lock, and the page heap's when there is something to return;
    /// must hold neither.
    @discardableResult func drainLargeCaches() -> UInt {
        let caller = sh_tls_get()
        lockPointer.lock()
        var returned: UInt = 0
        var cache = pointee.live
        while let current = cache {
            returned &+= current.largeCache.drain(to: pointee.pageHeap, byOwner: UnsafeMutableRawPointer(current) == caller)
            cache = current.header.pointee.next
        }
        lockPointer.unlock()
        return returned
    }

    /// The large spans cached in live threads and their pages (racy reads: see
    /// LargeCache.cachedFigures).
    ///
    /// Takes the registry's lock; must hold no lock of a higher rank.
    func cachedLargeFigures() -> (spans: UInt, pages: UInt) {
        lockPointer.lock()
        var spans: UInt = 0, pages: UInt = 0
        var cache = pointee.live
        while let current = cache {
            let figures = current.largeCache.cachedFigures()
            spans &+= figures.spans
            pages &+= figures.pages
            cache = current.header.pointee.next
        }
        lockPointer.unlock()
        return (spans, pages)
    }
}
