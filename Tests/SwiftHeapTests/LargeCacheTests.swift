import Testing
import Foundation
@testable import SwiftHeap

/// The large cache (LargeCache.swift), over a private page heap: spans go in and out of
/// one cache's slots, by its owner and by drainers, and every span ends up in exactly one
/// place.
@Suite struct LargeCacheTests {
    /// A fresh, empty large cache in memory of its own.
    private func makeCache() -> UnsafeMutablePointer<LargeCache> {
        let cache = UnsafeMutablePointer<LargeCache>.allocate(capacity: 1)
        cache.initialize(to: LargeCache(slots: InlineArray(repeating: nil), pages: 0, drained: 0))
        return cache
    }

    /// A word of its own holding `value`, for the words put reads (deallocate it).
    private func makeWord<T>(_ value: T) -> UnsafeMutablePointer<T> {
        let word = UnsafeMutablePointer<T>.allocate(capacity: 1)
        word.initialize(to: value)
        return word
    }

    /// A live large span of `pages` pages from `h`'s page heap.
    private func largeSpan(_ h: PrivateHeap, pages: UInt) throws -> UnsafeMutablePointer<Span> {
        let memory = try #require(h.pageHeap.allocateLarge(pages << pageShift, alignment: pageSize, zeroed: false))
        let span = try #require(h.pageHeap.pointee.spanMap.span(containing: UInt(bitPattern: memory)))
        #expect(span.pointee.state == .large && span.pointee.pages == pages)
        return span
    }

    /// Every page count the cache serves rounds up to a page class by at most a page in
    /// sixteen (none up to 16 pages); the classes' page counts and the slots match one to
    /// one, and other page counts have no slot.
    @Test func pageClassesMapOneToOneOntoTheSlots() {
        var slotsSeen = Set<Int>()
        for pages in largeCacheMinPages...largeCacheMaxPages {
            let rounded = largeObjectPages(pages)
            #expect(rounded >= pages && rounded <= pages + pages / 16, "\(pages) pages -> \(rounded)")
            if pages <= largeCacheExactPages { #expect(rounded == pages) }
            #expect(largeObjectPages(rounded) == rounded)
            let slot = largeCacheSlot(pages: rounded)
            #expect(slot != nil && slot! < largeCacheClasses)
            if let slot {
                slotsSeen.insert(slot)
                #expect(largeCacheClassPages(slot: slot) == rounded)
            }
            if rounded != pages { #expect(largeCacheSlot(pages: pages) == nil) }
        }
        #expect(slotsSeen == Set(0..<largeCacheClasses))
        #expect(InlineArray<36, Int>.count == largeCacheClasses && InlineArray<144, Int>.count == largeCacheSlots)
        for pages: UInt in [0, 1, largeCacheMinPages - 1, largeCacheMaxPages + 1, largeCacheMaxPages + 2, 1000] {
            #expect(largeCacheSlot(pages: pages) == nil)
            if pages > largeCacheMaxPages { #expect(largeObjectPages(pages) == pages) }
        }
    }

    /// A freed span goes into its class's slot (no longer live), and the next request of
    /// its class gets that very span back, live, with the page heap untouched meanwhile.
    @Test func aFreedSpanServesTheNextRequestOfItsClass() throws {
        let h = PrivateHeap()
        let cache = makeCache()
        defer { cache.deallocate() }
        let span = try largeSpan(h, pages: 13)
        let spanBytes = h.locked { h.pageHeap.stats.pointee.spanBytes }
        #expect(cache.put(span))
        #expect(span.pointee.state == .cached)
        #expect(cache.cachedFigures().spans == 1 && cache.cachedFigures().pages == 13)
        #expect(cache.take(pages: 10) == nil, "13 pages is more than a quarter above 10")
        #expect(cache.take(pages: 14) == nil, "a bigger class's request takes nothing")
        #expect(cache.take(pages: 13) == span)
        #expect(span.pointee.state == .large)
        #expect(cache.take(pages: 13) == nil)
        #expect(h.locked { h.pageHeap.stats.pointee.spanBytes } == spanBytes)
        h.pageHeap.freeLarge(span, address: span.pointee.base, call: "free()")
    }

    /// A request whose class's slot is empty takes a span of the lowest class above it
    /// with at most a quarter more pages, or of the next class (a page or two more)
    /// whatever its count; never one further up.
    @Test(arguments: [
        // (cached page counts, request, the count the request gets or nil)
        ([6], 5, 6),            // the next class: a fifth more
        ([7], 5, nil),          // two classes up and 40% more
        ([10], 8, 10),          // two classes up, a quarter more
        ([9, 10], 8, 9),        // the lowest of those that qualify
        ([11], 8, nil),         // three up, more than a quarter
        ([20], 16, 20),         // two classes up (18, 20): a quarter more
        ([22], 16, nil),
        ([20], 18, 20),         // the next class
        ([24], 18, nil),        // two up: a third more
        ([30], 24, 30),         // three up (26, 28, 30): a quarter more
        ([32], 24, nil),
        ([30], 32, nil),        // never below
        ([40], 32, 40),         // four classes up (34..40): a quarter more
        ([42], 32, nil),
        ([64], 62, 64),         // the last class
        ([62], 64, nil),        // nothing above the last class, nor below
    ] as [([UInt], UInt, UInt?)])
    func aRequestFallsBackToTheNearestClassOfAtMostAQuarterMorePages(cached: [UInt], request: UInt, gets: UInt?) throws {
        let h = PrivateHeap()
        let cache = makeCache()
        defer { cache.deallocate() }
        for pages in cached { #expect(cache.put(try largeSpan(h, pages: pages))) }
        let got = cache.take(pages: request)
        #expect(got.map { $0.pointee.pages } == gets, "\(request) pages with \(cached) cached")
        if let got { #expect(got.pointee.state == .large) }
        #expect(cache.cachedFigures().spans == UInt(cached.count) - (got == nil ? 0 : 1))
        _ = cache.drain(to: h.pageHeap, byOwner: true)
        if let got { h.pageHeap.freeLarge(got, address: got.pointee.base, call: "free()") }
    }

    /// The cache refuses a span whose page count is no class's and what would take it
    /// over its budget (the refused spans stay live); a class holds as many spans as the
    /// budget allows, and gives the last one put back first.
    @Test func putRefusesWhatTheCacheDoesNotHold() throws {
        let h = PrivateHeap()
        let cache = makeCache()
        defer { cache.deallocate() }
        var spans: [UnsafeMutablePointer<Span>] = []
        let odd = try largeSpan(h, pages: 17), huge = try largeSpan(h, pages: largeCacheMaxPages + 1)
        #expect(!cache.put(odd) && !cache.put(huge))
        #expect(odd.pointee.state == .large && huge.pointee.state == .large)
        spans += [odd, huge]
        let first = try largeSpan(h, pages: 8), second = try largeSpan(h, pages: 8)
        #expect(cache.put(first) && cache.put(second), "a class holds several spans")
        #expect(cache.cachedFigures().spans == 2 && cache.cachedFigures().pages == 16)
        #expect(cache.take(pages: 8) == second && cache.take(pages: 8) == first, "the last put goes out first")
        #expect(cache.take(pages: 8) == nil && cache.pointee.pages == 0)
        // Fill up to the budget with a span of each class, the biggest first.
        var cached: UInt = 0, count: UInt = 0
        var slot = largeCacheClasses - 1
        while true {
            let pages = largeCacheClassPages(slot: slot)
            let span = try largeSpan(h, pages: pages)
            if !cache.put(span) {
                #expect(cached + pages > largeCacheBudgetPages, "refused \(pages) pages with \(cached) cached")
                spans.append(span)
                break
            }
            cached += pages
            count += 1
            #expect(cached <= largeCacheBudgetPages)
            slot -= 1
        }
        #expect(!cache.put(spans.last!), "still over budget")
        spans += [first, second]
        #expect(cache.cachedFigures().spans == count && cache.cachedFigures().pages == cached)
        #expect(cache.drain(to: h.pageHeap, byOwner: true) == cached)
        for span in spans { h.pageHeap.freeLarge(span, address: span.pointee.base, call: "free()") }
        #expect(h.locked { h.pageHeap.stats.pointee.largeCount == 0 && h.pageHeap.stats.pointee.spanBytes == 0 })
    }

    /// A thread's budget is its share of an eighth of the heap's spans, never under 2 MiB
    /// nor over 8 MiB.
    @Test(arguments: [
        // (the heap's spans in MiB, live caches, the budget in pages)
        (0, 1, 256), (16, 1, 256), (17, 1, 272), (40, 1, 640), (64, 1, 1024), (1 << 20, 1, 1024),
        (40, 0, 640),           // no cache counted yet: as one
        (80, 2, 640), (64, 4, 256), (1 << 20, 64, 1024),
    ] as [(UInt, UInt, UInt)])
    func theBudgetIsAShareOfAnEighthOfTheHeapWithinItsBounds(heapMiB: UInt, caches: UInt, budgetPages: UInt) {
        #expect(largeCacheBudget(heapSpanBytes: heapMiB << 20, caches: caches) == budgetPages)
    }

    /// put keeps to the budget of the heap it reads: in a small heap, 2 MiB, the span
    /// that would take it over refused and live. The budget is read again every
    /// largeCacheBudgetPuts puts and after a drain, not at each put: a heap grown
    /// meanwhile lets the cache keep more only then.
    @Test func putKeepsToTheBudgetOfTheHeapItReads() throws {
        let h = PrivateHeap()
        let cache = makeCache()
        defer { cache.deallocate() }
        let heapWord = makeWord(UInt64(16 << 20))
        defer { heapWord.deallocate() }
        // A span of each class from 256 KiB down, until one is refused.
        var cached: UInt = 0, puts: UInt32 = 0
        var slot = try #require(largeCacheSlot(pages: 32))
        var refused: UnsafeMutablePointer<Span>? = nil
        while refused == nil {
            let pages = largeCacheClassPages(slot: slot)
            let span = try largeSpan(h, pages: pages)
            puts += 1
            if cache.put(span, heapSpanBytes: heapWord) {
                cached += pages
                slot -= 1
            } else {
                #expect(cached + pages > largeCacheMinBudgetPages, "refused \(pages) pages with \(cached) cached")
                refused = span
            }
        }
        let span = try #require(refused)
        #expect(span.pointee.state == .large)
        heapWord.pointee = 1 << 30
        while puts < largeCacheBudgetPuts {
            #expect(!cache.put(span, heapSpanBytes: heapWord), "the budget read at the first put holds")
            puts += 1
        }
        #expect(cache.put(span, heapSpanBytes: heapWord), "read again after \(largeCacheBudgetPuts) puts")
        cached += span.pointee.pages
        // A drain by the owner has it read again at the next put.
        #expect(cache.drain(to: h.pageHeap, byOwner: true) == cached)
        heapWord.pointee = 16 << 20
        let big = try largeSpan(h, pages: 34)
        #expect(!cache.put(big, heapSpanBytes: heapWord), "the small heap's budget again: no span over 256 KiB")
        h.pageHeap.freeLarge(big, address: big.pointee.base, call: "free()")
        #expect(h.locked { h.pageHeap.stats.pointee.largeCount == 0 && h.pageHeap.stats.pointee.spanBytes == 0 })
    }

    /// The budget shapes what a cache holds: spans of at most an eighth of it, and as
    /// many spans of a class as it holds 2 MiB. At 2 MiB that is one span of each class
    /// up to 256 KiB; at 4 MiB two, up to 512 KiB.
    @Test(arguments: [
        // (the heap's spans in MiB, a class's page count, how many of it the cache keeps)
        (16, 34, 0), (16, 32, 1), (16, 5, 1),
        (32, 64, 2), (32, 5, 2),
        (1024, 64, 4), (1024, 30, 4),
    ] as [(UInt64, UInt, Int)])
    func theBudgetShapesWhatACacheHolds(heapMiB: UInt64, pages: UInt, kept: Int) throws {
        let h = PrivateHeap()
        let cache = makeCache()
        defer { cache.deallocate() }
        let heapWord = makeWord(UInt64(heapMiB << 20))
        defer { heapWord.deallocate() }
        var taken = 0
        let spans = try (0..<kept + 1).map { _ in try largeSpan(h, pages: pages) }
        for span in spans where cache.put(span, heapSpanBytes: heapWord) { taken += 1 }
        #expect(taken == kept)
        _ = cache.drain(to: h.pageHeap, byOwner: true)
        for span in spans.dropFirst(kept) { h.pageHeap.freeLarge(span, address: span.pointee.base, call: "free()") }
        #expect(h.locked { h.pageHeap.stats.pointee.largeCount == 0 && h.pageHeap.stats.pointee.spanBytes == 0 })
    }

    /// While the program drops a phase (the page heap's droppingPhase word raised) the
    /// cache takes nothing, and without the word (the no-cache record's header has none)
    /// it never does; the refused span stays live, and the cache takes it once the word
    /// is lowered.
    @Test func putWhileAPhaseIsDroppedOrWithoutThePhaseWordIsRefused() throws {
        let h = PrivateHeap()
        let cache = makeCache()
        defer { cache.deallocate() }
        let word = makeWord(UInt32(1))
        defer { word.deallocate() }
        let span = try largeSpan(h, pages: 9)
        #expect(!cache.put(span, droppingPhase: word, heapSpanBytes: bigHeapWord, liveCaches: oneCacheWord) && span.pointee.state == .large)
        #expect(!cache.put(span, droppingPhase: nil, heapSpanBytes: bigHeapWord, liveCaches: oneCacheWord) && span.pointee.state == .large)
        word.pointee = 0
        #expect(cache.put(span, droppingPhase: word, heapSpanBytes: bigHeapWord, liveCaches: oneCacheWord) && span.pointee.state == .cached)
        #expect(cache.take(pages: 9) == span)
        h.pageHeap.freeLarge(span, address: span.pointee.base, call: "free()")
    }

    /// A drain by another thread empties the slots into the page heap (which counts the
    /// spans free again) and tells the owner, whose next put counts from what is left:
    /// the budget the drained spans held is the owner's again.
    @Test func aDrainReturnsTheSpansAndTheOwnerRecountsItsBudget() throws {
        let h = PrivateHeap()
        let cache = makeCache()
        defer { cache.deallocate() }
        // Fill the budget with spans of every class from the biggest down, several of
        // some, then the smallest while they fit.
        var total: UInt = 0
        var slot = largeCacheClasses - 1
        while total + largeCacheClassPages(slot: slot) <= largeCacheBudgetPages {
            let pages = largeCacheClassPages(slot: slot)
            #expect(cache.put(try largeSpan(h, pages: pages)))
            total += pages
            slot = slot == 0 ? largeCacheClasses - 1 : slot - 1
        }
        let pages = largeCacheClassPages(slot: slot)
        let spare = try largeSpan(h, pages: pages)
        #expect(!cache.put(spare), "over budget")
        #expect(cache.drain(to: h.pageHeap, byOwner: false) == total)
        #expect(cache.pointee.drained != 0 && cache.cachedFigures().spans == 0)
        #expect(h.locked { h.pageHeap.stats.pointee.largeCount } == 1, "only the spare is live")
        #expect(cache.put(spare), "the drained spans' budget is free again")
        #expect(cache.pointee.drained == 0 && cache.pointee.pages == pages)
        #expect(cache.drain(to: h.pageHeap, byOwner: true) == pages)
        #expect(cache.pointee.pages == 0)
        #expect(h.locked { h.pageHeap.stats.pointee.largeCount == 0 && h.pageHeap.stats.pointee.spanBytes == 0 })
    }

    /// The owner puts and takes spans as fast as it can while another thread drains the
    /// cache again and again: no span is lost or handed out twice. Each span the owner
    /// holds carries a token of its own in its first word, which must still be there when
    /// the owner lets it go (a span handed out twice would carry the later token), and at
    /// the end the page heap has every span back.
    @Test func ownerAndDrainerNeverShareASpan() throws {
        let h = PrivateHeap()
        let cache = makeCache()
        defer { cache.deallocate() }
        let cacheAddress = UInt(bitPattern: cache)
        let heapAddress = UInt(bitPattern: h.pageHeap)
        let ownerDone = SharedCounter(), drained = SharedCounter(), failures = SharedCounter()
        onThreads(2) { thread in
            let cache = UnsafeMutablePointer<LargeCache>(bitPattern: cacheAddress)!
            let pageHeap = UnsafeMutablePointer<PageHeap>(bitPattern: heapAddress)!
            if thread == 1 {
                while ownerDone.value == 0 { drained.add(Int(cache.drain(to: pageHeap, byOwner: false))) }
                return
            }
            var held = [UnsafeMutablePointer<Span>?](repeating: nil, count: 24)
            var tokens = [UInt](repeating: 0, count: 24)
            var seed: UInt64 = 0x243F_6A88_85A3_08D3
            for round in 1...40_000 {
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
                let k = Int(seed % 24)
                if let span = held[k] {
                    let first = UnsafeMutablePointer<UInt>(bitPattern: span.pointee.base)!
                    if first.pointee != tokens[k] || span.pointee.state != .large { failures.add(1) }
                    if !cache.put(span) { pageHeap.freeLarge(span, address: span.pointee.base, call: "free()") }
                    held[k] = nil
                }
                let pages = largeObjectPages(largeCacheMinPages + UInt(seed >> 40) % (largeCacheMaxPages - largeCacheMinPages + 1))
                var span = cache.take(pages: pages)
                if span == nil, let memory = pageHeap.allocateLarge(pages << pageShift, alignment: pageSize, zeroed: false) {
                    span = pageHeap.pointee.spanMap.span(containing: UInt(bitPattern: memory))
                }
                guard let span, span.pointee.state == .large, span.pointee.pages >= pages else { failures.add(1); continue }
                tokens[k] = UInt(round)
                UnsafeMutablePointer<UInt>(bitPattern: span.pointee.base)!.pointee = tokens[k]
                held[k] = span
            }
            for span in held.compactMap({ $0 }) { pageHeap.freeLarge(span, address: span.pointee.base, call: "free()") }
            ownerDone.add(1)
        }
        _ = cache.drain(to: h.pageHeap, byOwner: true)
        #expect(failures.value == 0)
        #expect(drained.value > 0, "the drainer took spans while the owner ran")
        #expect(h.locked { h.pageHeap.stats.pointee.largeCount == 0 && h.pageHeap.stats.pointee.spanBytes == 0 })
    }
}

/// A heap's span bytes that give a cache the largest budget, and a count of one live cache.
private let bigHeapWord: UnsafeMutablePointer<UInt64> = {
    let word = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    word.initialize(to: 1 << 40)
    return word
}()
private let oneCacheWord: UnsafeMutablePointer<UInt64> = {
    let word = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    word.initialize(to: 1)
    return word
}()

/// The dropping-phase word of the tests that do not raise it.
private let loweredPhaseWord: UnsafeMutablePointer<UInt32> = {
    let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    word.initialize(to: 0)
    return word
}()

extension UnsafeMutablePointer where Pointee == LargeCache {
    /// put while no phase is being dropped, in a heap whose span bytes are the word
    /// `heapSpanBytes` (by default a heap big enough for the largest budget) and with
    /// one live cache.
    fileprivate func put(_ span: UnsafeMutablePointer<Span>, heapSpanBytes: UnsafeMutablePointer<UInt64> = bigHeapWord) -> Bool {
        put(span, droppingPhase: loweredPhaseWord, heapSpanBytes: heapSpanBytes, liveCaches: oneCacheWord)
    }
}
