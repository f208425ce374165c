import Testing
@testable import SwiftHeap

/// Central lists on a private page heap: refill takes objects out of span bitmaps,
/// release puts them back, an emptied span goes back to the page heap, and the counters
/// say exactly that. The tests that release run twice: through release (object by
/// object) and through releaseInRuns (a page's objects in a row at once), which must
/// leave every span, list and count where release does; their batches hold runs
/// (refills hand out a span's objects in order) across spans that empty, become partial
/// or leave their owner.
@Suite struct CentralTests {
    /// A refilling owner: an identity and its (zeroed, so empty) span lists; it returns
    /// objects through releaseInRuns if `inRuns`, else through release.
    final class Owner {
        let id: UnsafeMutableRawPointer
        let spans = UnsafeMutablePointer<OwnedSpans>.allocate(capacity: 1)
        let inRuns: Bool
        init(_ id: UInt, inRuns: Bool = false) {
            self.id = UnsafeMutableRawPointer(bitPattern: id)!
            self.inRuns = inRuns
            UnsafeMutableRawPointer(spans).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<OwnedSpans>.size)
        }
        deinit { spans.deallocate() }
        func refill(_ central: UnsafeMutablePointer<Central>, _ want: Int) -> [UInt] {
            var slots = [UInt](repeating: 0, count: want)
            let got = slots.withUnsafeMutableBufferPointer {
                central.refill(into: $0.baseAddress!, want: want, owner: id, owned: spans)
            }
            return Array(slots.prefix(got))
        }
        func release(_ central: UnsafeMutablePointer<Central>, _ objects: [UInt]) {
            var copy = objects
            copy.withUnsafeMutableBufferPointer {
                if inRuns {
                    central.releaseInRuns($0.baseAddress!, count: $0.count, by: id)
                } else {
                    central.release($0.baseAddress!, count: $0.count, by: id)
                }
            }
        }
    }

    /// Whether every page's entry of small span `span` in `map` names it and carries its
    /// base, reciprocal, binOffset and present owner: what free's fast path reads instead
    /// of the record (Span.swift: SpanMapEntry).
    static func entriesAgree(_ map: SpanMap, _ span: UnsafeMutablePointer<Span>) -> Bool {
        (0..<span.pointee.pages).allSatisfy { page in
            let entry = map.entry(containingMapped: span.pointee.base + page * pageSize)!.pointee
            return entry.span == span && entry.base == span.pointee.base && entry.owner == span.pointee.owner
                && entry.reciprocal == span.pointee.reciprocal && entry.binOffset == span.pointee.binOffset
        }
    }

    /// Two owners of the 64-byte class on a private heap; a holds every object of one span.
    struct OneFullSpan {
        let h = PrivateHeap()
        let cls: Int
        let central: UnsafeMutablePointer<Central>
        let objects: Int
        let map: SpanMap
        let a: Owner, b: Owner
        let own: [UInt]
        let span: UnsafeMutablePointer<Span>
        init(inRuns: Bool) {
            (a, b) = (Owner(0x10, inRuns: inRuns), Owner(0x20, inRuns: inRuns))
            (cls, central) = h.central(forSize: 64)
            objects = Int(h.classes.info[cls].objects)
            map = h.pageHeap.pointee.spanMap
            own = a.refill(central, objects)
            span = map.span(containing: own[0])!
        }
    }

    @Test func recordsFillWholeCacheLines() {
        #expect(MemoryLayout<Central>.stride == 128)
        // What refill and release write is on the first line, what they only read on the second.
        for offset in [MemoryLayout<Central>.offset(of: \.lock)!, MemoryLayout<Central>.offset(of: \.partial)!,
                       MemoryLayout<Central>.offset(of: \.unowned)!, MemoryLayout<Central>.offset(of: \.allocatedObjects)!,
                       MemoryLayout<Central>.offset(of: \.refills)!, MemoryLayout<Central>.offset(of: \.owners)!] {
            #expect(offset + 8 <= 64)
        }
        #expect(MemoryLayout<Central>.offset(of: \.info)! >= 64 && MemoryLayout<Central>.offset(of: \.pageHeap)! >= 64)
    }

    @Test(arguments: [false, true]) func refillAndReleaseRoundTrip(inRuns: Bool) {
        let h = PrivateHeap()
        let (cls, central) = h.central(forSize: 4000)
        let info = h.classes.info[cls]
        let spanBytes = UInt(info.pages) * pageSize
        let want = Int(info.objects) * 3 + 1  // crosses four spans
        let owner = Owner(0x10, inRuns: inRuns)
        let slots = owner.refill(central, want)
        #expect(slots.count == want)
        #expect(Set(slots).count == want, "no object handed out twice")
        #expect(central.pointee.spanCount == 4 && central.pointee.allocatedObjects == UInt(want))
        #expect(h.pageHeap.pointee.stats.spanBytes == 4 * spanBytes)
        let map = h.pageHeap.pointee.spanMap
        for address in slots {
            let span = map.span(containing: address)
            #expect(span != nil && Int(span!.pointee.sizeClass) == cls && span!.pointee.owner == owner.id)
            #expect((address - span!.pointee.base) % UInt(info.size) == 0)
            UnsafeMutableRawPointer(bitPattern: address)!.storeBytes(of: address, as: UInt.self)
        }
        // Give back all but the last object: three spans empty and go back to the page heap.
        let firstSpanBase = map.span(containing: slots[0])!.pointee.base
        owner.release(central, Array(slots.prefix(want - 1)))
        #expect(central.pointee.spanCount == 1 && central.pointee.allocatedObjects == 1)
        #expect(map.span(containing: firstSpanBase) == nil)
        #expect(h.pageHeap.pointee.stats.spanBytes == spanBytes)
        #expect(h.events.pointee.freedSinceEpoch == 3 * spanBytes)
        // The last span is on the partial list with every object but one free: the next
        // refill takes from it before making a new span.
        var more = owner.refill(central, 2)
        #expect(more.count == 2)
        #expect(central.pointee.spanCount == 1 && map.span(containing: more[0]) == map.span(containing: slots[want - 1]))
        more.append(slots[want - 1])
        owner.release(central, more)
        #expect(central.pointee.spanCount == 0 && central.pointee.allocatedObjects == 0)
        #expect(h.pageHeap.pointee.stats.spanBytes == 0)
    }

    /// Spans that empty stay for the next refills, with no owner, on the class's empty
    /// list, up to its budget (here two spans); one more goes back to the page heap.
    /// Refills take unowned partial spans before kept empty ones, and a kept one, once
    /// taken, is the refilling owner's; the scavenger's freeEmptySpans gives the rest
    /// back. Every span the lists move keeps its span-map entries in step.
    @Test(arguments: [false, true])
    func emptiedSpansStayForTheNextRefillsUpToTheBudget(inRuns: Bool) throws {
        let probe = PrivateHeap()
        let info = probe.classes.info[probe.classes.sizeClass(of: 64)]
        let spanBytes = UInt(info.pages) * pageSize
        let h = PrivateHeap(keptEmptyBytes: 2 * spanBytes)
        let (_, central) = h.central(forSize: 64)
        #expect(central.pointee.emptySpansKept == 2)
        let objects = Int(info.objects)
        let map = h.pageHeap.pointee.spanMap
        let a = Owner(0x10, inRuns: inRuns), b = Owner(0x20, inRuns: inRuns)
        let three = a.refill(central, 3 * objects)  // three full spans
        let spans = (0..<3).map { map.span(containing: three[$0 * objects])! }
        #expect(Set(spans).count == 3 && central.pointee.spanCount == 3)
        a.release(central, three)
        #expect(central.pointee.spanCount == 2 && central.pointee.emptySpans == 2 && central.pointee.allocatedObjects == 0,
                "two emptied spans kept, the third back to the page heap")
        #expect(h.pageHeap.pointee.stats.spanBytes == 2 * spanBytes && h.events.pointee.freedSinceEpoch == spanBytes)
        var kept: [UnsafeMutablePointer<Span>] = []
        var next = central.pointee.empty
        while let span = next { kept.append(span); next = span.pointee.listNext }
        #expect(kept.count == 2 && kept.allSatisfy { spans.contains($0) })
        for span in kept {
            #expect(span.pointee.owner == nil && span.ownedSpans == nil && span.pointee.allocatedCount == 0
                    && span.pointee.onPartialList && span.pointee.listHead == central.pointer(to: \.empty)
                    && Self.entriesAgree(map, span))
        }
        #expect(a.spans.head(Int(central.pointee.sizeClass)).pointee == nil && central.pointee.unowned == nil)
        // An unowned partial span goes first: b's refill takes c's span that c left behind.
        let c = Owner(0x30, inRuns: inRuns)
        let theirs = c.refill(central, 2)
        let cSpan = map.span(containing: theirs[0])!
        #expect(kept.contains(cSpan) && central.pointee.emptySpans == 1, "c's refill takes a kept span")
        central.disown(c.spans)
        #expect(cSpan.pointee.owner == nil && cSpan.pointee.listHead == central.pointer(to: \.unowned))
        let first = b.refill(central, 1)
        #expect(map.span(containing: first[0]) == cSpan && cSpan.pointee.owner == b.id, "the unowned partial span first")
        let other = kept.first { $0 != cSpan }!
        let rest = b.refill(central, objects)  // the rest of c's span, then the kept span
        #expect(rest.contains { map.span(containing: $0) == other } && other.pointee.owner == b.id
                && central.pointee.emptySpans == 0 && central.pointee.empty == nil && Self.entriesAgree(map, other))
        // Given back, both spans empty into the list again; the scavenger's call frees them.
        b.release(central, first + rest)
        c.release(central, theirs)
        #expect(central.pointee.emptySpans == 2 && central.pointee.spanCount == 2)
        #expect(h.scavenger.freeEmptySpans(all: true) == 2 * UInt(info.pages))
        #expect(central.pointee.emptySpans == 0 && central.pointee.empty == nil && central.pointee.spanCount == 0
                && central.pointee.partial == nil && h.pageHeap.pointee.stats.spanBytes == 0)
    }

    /// The scavenger's tick gives back the kept empty spans that no refill took since the
    /// tick before (once a tick period), where their pages are free like any others: a
    /// span kept or taken again since stays until the tick after.
    @Test func theScavengersTickGivesBackKeptSpansThatSatUnusedForATickPeriod() {
        let probe = PrivateHeap()
        let info = probe.classes.info[probe.classes.sizeClass(of: 64)]
        let h = PrivateHeap(keptEmptyBytes: 4 * UInt(info.pages) * pageSize)
        let (_, central) = h.central(forSize: 64)
        let map = h.pageHeap.pointee.spanMap
        let a = Owner(0x10), b = Owner(0x20)
        a.release(central, a.refill(central, 2 * Int(info.objects)))
        #expect(central.pointee.emptySpans == 2 && central.pointee.spanCount == 2)
        func tick(_ periods: Int64) {
            let runner = h.scavenger.pointer(to: \.runner.lock)!
            runner.lock()
            _ = h.scavenger.tick(now: scavengerTickNanos * periods, inline: true)
            runner.unlock()
        }
        tick(10)
        #expect(central.pointee.emptySpans == 2 && central.pointee.spanCount == 2, "kept less than a tick period: they stay")
        let used = b.refill(central, 1)
        let usedSpan = map.span(containing: used[0])!
        b.release(central, used)  // empty again: kept, first on the list
        #expect(central.pointee.emptySpans == 2 && central.pointee.empty == usedSpan)
        tick(12)
        #expect(central.pointee.emptySpans == 1 && central.pointee.spanCount == 1 && central.pointee.empty == usedSpan,
                "the span that sat unused a whole period goes back; the one used since stays")
        tick(14)
        #expect(central.pointee.emptySpans == 0 && central.pointee.spanCount == 0 && h.pageHeap.pointee.stats.spanBytes == 0)
    }

    /// Starter refills (refillStarter) hand out whole line groups of a shared span: for
    /// sizes whose groups are 4, 2 and 1 objects, every group starts on a line, its lines
    /// hold no object of another group, and the groups of many refills come from one span
    /// until it is used up. A shared span's objects are every cache's remote frees: the
    /// span stays shared (neither an owner's nor unowned, which private refills would take)
    /// when its objects come back, and a private refill takes a fresh span. The class's
    /// last shared span stays when its objects are all back, for the next starter refill.
    @Test(arguments: [UInt(48), 96, 128]) func starterRefillsTakeWholeLineGroupsOfASharedSpan(size: UInt) {
        let h = PrivateHeap()
        let (cls, central) = h.central(forSize: size)
        let map = h.pageHeap.pointee.spanMap
        let group = Int(objectsPerLineGroup(objectSize: size))
        #expect(group == [48: 4, 96: 2, 128: 1][size])
        let a = Owner(0x10), b = Owner(0x20)
        var groups: [[UInt]] = []
        var slots = [UInt](repeating: 0, count: 4)
        for _ in 0..<6 {
            let got = slots.withUnsafeMutableBufferPointer { central.refillStarter(into: $0.baseAddress!) }
            #expect(got == group)
            groups.append(Array(slots.prefix(got)))
        }
        let shared = map.span(containing: groups[0][0])!
        #expect(shared.pointee.owner == sharedSpanOwner && Self.entriesAgree(map, shared))
        #expect(shared.pointee.listHead == central.pointer(to: \.shared) && central.pointee.spanCount == 1)
        var lines: [UInt: Int] = [:]
        for (index, objects) in groups.enumerated() {
            #expect(objects.allSatisfy { map.span(containing: $0) == shared })
            #expect(objects[0] % cacheLineBytes == 0 && objects == (0..<group).map { objects[0] + UInt($0) * size })
            for object in objects {
                for line in stride(from: object / cacheLineBytes, through: (object + size - 1) / cacheLineBytes, by: 1) {
                    #expect(lines[line, default: index] == index, "a line of two groups")
                    lines[line] = index
                }
            }
        }
        let own = a.refill(central, 4)
        #expect(!own.contains { map.span(containing: $0) == shared } && central.pointee.spanCount == 2,
                "a private refill does not take the shared span's free objects")
        // Another cache returns a group (a remote free): the span stays shared, and the
        // next starter refill takes that group again.
        b.release(central, groups[2])
        #expect(shared.pointee.owner == sharedSpanOwner && shared.pointee.listHead == central.pointer(to: \.shared))
        let again = slots.withUnsafeMutableBufferPointer { central.refillStarter(into: $0.baseAddress!) }
        #expect(again == group && Array(slots.prefix(again)) == groups[2])
        // Every group back: the class's only shared span stays, empty, on the shared list
        // for the next starter refill.
        b.release(central, groups.flatMap { $0 })
        #expect(central.pointee.shared == shared && shared.pointee.allocatedCount == 0 && central.pointee.spanCount == 2)
        let next = slots.withUnsafeMutableBufferPointer { central.refillStarter(into: $0.baseAddress!) }
        #expect(next == group && map.span(containing: slots[0]) == shared)
        // A second shared span (the first one used up): when both are empty again, one
        // stays and the other goes back to the page heap.
        var more: [UInt] = Array(slots.prefix(next))
        while central.pointee.spanCount < 3 {
            let got = slots.withUnsafeMutableBufferPointer { central.refillStarter(into: $0.baseAddress!) }
            #expect(got == group)
            more += slots.prefix(got)
        }
        b.release(central, more)
        #expect(central.pointee.spanCount == 2 && central.pointee.shared != nil
                && central.pointee.shared!.pointee.listNext == nil && central.pointee.shared!.pointee.allocatedCount == 0)
        a.release(central, own)
        central.disown(a.spans)
        _ = cls
    }

    /// Spans stay with the cache that draws from them: another owner's refill takes a
    /// fresh span rather than free objects of a span whose other objects the first owner
    /// holds (they would share cache lines), whether the owner or another thread freed
    /// them, and takes the span over once the first owner has gone (disown).
    @Test(arguments: [false, true]) func refillsTakeOwnSpansThenUnownedOnesThenFreshOnes(inRuns: Bool) {
        let h = PrivateHeap()
        let (cls, central) = h.central(forSize: 64)
        let objects = Int(h.classes.info[cls].objects)
        let map = h.pageHeap.pointee.spanMap
        let a = Owner(0x10, inRuns: inRuns), b = Owner(0x20, inRuns: inRuns), c = Owner(0x30, inRuns: inRuns)
        let first = a.refill(central, objects)  // all of one fresh span
        let spanA = map.span(containing: first[0])!
        #expect(first.allSatisfy { map.span(containing: $0) == spanA } && spanA.pointee.owner == a.id)
        #expect(Self.entriesAgree(map, spanA), "a fresh span's entries carry its owner")
        a.release(central, Array(first.prefix(objects / 2)))  // partial, on a's list
        let fromB = b.refill(central, objects)
        let spanB = map.span(containing: fromB[0])!
        #expect(spanB != spanA && fromB.allSatisfy { map.span(containing: $0) == spanB },
                "b takes a fresh span, not the free half of a's")
        #expect(central.pointee.spanCount == 2)
        let again = a.refill(central, 4)
        #expect(again.count == 4 && again.allSatisfy { map.span(containing: $0) == spanA },
                "a draws from its own partial span first")
        // a goes away: its partial span is nobody's, and b's next refill takes it over.
        a.release(central, again)
        central.disown(a.spans)
        #expect(spanA.pointee.owner == nil && Self.entriesAgree(map, spanA), "a disowned span's entries have no owner")
        let later = b.refill(central, 4)
        #expect(later.allSatisfy { map.span(containing: $0) == spanA } && spanA.pointee.owner == b.id)
        #expect(Self.entriesAgree(map, spanA), "an adopted span's entries carry its new owner")
        // Objects of b's full span freed by another thread: the span goes back on b's list,
        // and another owner's refill takes a fresh span.
        c.release(central, Array(fromB.prefix(4)))
        #expect(spanB.pointee.owner == b.id && spanB.pointee.listHead == b.spans.head(cls))
        let fromC = c.refill(central, 2)
        let spanC = map.span(containing: fromC[0])!
        #expect(spanC != spanA && spanC != spanB && central.pointee.spanCount == 3)
        // b goes away: both its partial spans are nobody's; a record reused for a new
        // cache opens its list again, and its refill takes them over.
        central.disown(b.spans)
        #expect(b.spans.head(cls).pointee == closedSpanList)
        #expect(spanA.pointee.owner == nil && spanB.pointee.owner == nil && spanA.pointee.listHead == central.pointer(to: \.unowned))
        #expect(Self.entriesAgree(map, spanA) && Self.entriesAgree(map, spanB))
        let reused = b.refill(central, 2)
        let taken = map.span(containing: reused[0])!
        #expect((taken == spanA || taken == spanB) && taken.pointee.owner == b.id && central.pointee.spanCount == 3)
        b.release(central, Array(first.suffix(objects - objects / 2)) + later + Array(fromB.dropFirst(4)) + reused)
        c.release(central, fromC)
        #expect(central.pointee.spanCount == 0 && central.pointee.allocatedObjects == 0)
        #expect(central.pointee.partial == nil && central.pointee.unowned == nil)
        #expect(b.spans.head(cls).pointee == nil && c.spans.head(cls).pointee == nil)
    }

    /// A span that other threads' frees leave at most a quarter allocated goes to the
    /// unowned list (its owner may never allocate again); the owner's own frees keep it.
    @Test(arguments: [false, true]) func spansMostlyFreedByOtherThreadsBecomeUnowned(inRuns: Bool) {
        let f = OneFullSpan(inRuns: inRuns)
        let (cls, central, objects, map, a, b, own, span) = (f.cls, f.central, f.objects, f.map, f.a, f.b, f.own, f.span)
        let quarter = objects / 4
        a.release(central, Array(own.prefix(objects - quarter)))  // a's own frees: stays a's
        #expect(span.pointee.owner == a.id && span.pointee.listHead == a.spans.head(cls))
        let more = a.refill(central, objects - quarter)  // full again
        #expect(more.allSatisfy { map.span(containing: $0) == span })
        let all = Array(own.suffix(quarter)) + more
        b.release(central, Array(all.prefix(objects - quarter - 1)))  // quarter + 1 left
        #expect(span.pointee.owner == a.id && span.pointee.listHead == a.spans.head(cls))
        b.release(central, [all[objects - quarter - 1]])  // a quarter left
        #expect(span.pointee.owner == nil && span.pointee.listHead == central.pointer(to: \.unowned))
        #expect(CentralTests.entriesAgree(map, span), "a span left to the unowned list has no owner in its entries")
        let taken = b.refill(central, 1)
        #expect(map.span(containing: taken[0]) == span && span.pointee.owner == b.id)
        b.release(central, Array(all.suffix(quarter)) + taken)
        #expect(central.pointee.spanCount == 0 && central.pointee.allocatedObjects == 0)
    }

    /// Objects another thread returns to the span of an owner that has stopped refilling
    /// the class (while the others refilled it 4 times per owner, plus 16) put the span on
    /// the unowned list; before that, on the owner's.
    @Test(arguments: [false, true]) func idleOwnersLoseSpansOthersFreeInto(inRuns: Bool) {
        let f = OneFullSpan(inRuns: inRuns)
        let (cls, central, map, a, b, own, span) = (f.cls, f.central, f.map, f.a, f.b, f.own, f.span)
        b.release(central, [own[0]])
        #expect(span.pointee.owner == a.id && span.pointee.listHead == a.spans.head(cls))
        var fromB: [UInt] = []
        #expect(Central.idleRefillsPerOwner == 4 && Central.idleRefillsMinimum == 16)
        for _ in 0..<(2 * 4 + 16) { fromB += b.refill(central, 1) }  // two owners: a, b
        #expect(central.pointee.owners == 2)
        #expect(!fromB.contains { map.span(containing: $0) == span })
        b.release(central, [own[1]])
        #expect(span.pointee.owner == a.id, "not idle yet: a refilled within the last 2 * 4 + 16 refills")
        fromB += b.refill(central, 1)
        b.release(central, [own[2]])
        #expect(span.pointee.owner == nil && span.pointee.listHead == central.pointer(to: \.unowned))
        b.release(central, Array(own.dropFirst(3)) + fromB)
        #expect(central.pointee.spanCount == 0 && central.pointee.allocatedObjects == 0)
        central.disown(a.spans)
        central.disown(b.spans)
        #expect(central.pointee.owners == 0)
    }

    /// One batch from another thread holding objects of an idle owner's span and of an
    /// active owner's span, in either order: the idle owner's span goes to the unowned
    /// list and the active owner's stays (release reads each owner's idleness once per
    /// batch and must not carry one owner's answer over to another).
    @Test(arguments: [false, true]) func aBatchDecidesIdlenessPerOwner(inRuns: Bool) {
        for idleFirst in [true, false] {
            let f = OneFullSpan(inRuns: inRuns)  // a: the idle owner, with one full span
            let (cls, central, map, a, b, own, idleSpan) = (f.cls, f.central, f.map, f.a, f.b, f.own, f.span)
            let c = Owner(0x30, inRuns: inRuns)
            let busy = c.refill(central, f.objects)  // c: the active owner, one full span
            let busySpan = map.span(containing: busy[0])!
            #expect(busySpan != idleSpan && busySpan.pointee.owner == c.id)
            var fromB: [UInt] = []
            for _ in 0..<(3 * 4 + 16) { fromB += b.refill(central, 1) }  // three owners: a, b, c
            #expect(central.pointee.owners == 3)
            let fromC = c.refill(central, 1)  // c refills now and then: not idle
            let batch = idleFirst ? [own[0], busy[0]] : [busy[0], own[0]]
            b.release(central, batch)
            #expect(idleSpan.pointee.owner == nil && idleSpan.pointee.listHead == central.pointer(to: \.unowned),
                    "idle owner's span, idle first: \(idleFirst)")
            #expect(busySpan.pointee.owner == c.id && busySpan.pointee.listHead == c.spans.head(cls),
                    "active owner's span, idle first: \(idleFirst)")
            b.release(central, Array(own.dropFirst()) + Array(busy.dropFirst()) + fromB + fromC)
            #expect(central.pointee.spanCount == 0 && central.pointee.allocatedObjects == 0)
            for owner in [a, b, c] { central.disown(owner.spans) }
        }
    }

    /// A run of releaseInRuns goes on across a wide span's pages, in any order, and ends at
    /// an object of another span: a batch that walks a four-page span's pages back and
    /// forth, with an object of a second span in the middle, leaves both spans' counts,
    /// owners and lists where release does.
    @Test(arguments: [false, true]) func runsCrossAWideSpansPagesInAnyOrder(inRuns: Bool) {
        let h = PrivateHeap()
        let (cls, central) = h.central(forSize: 128)
        let info = h.classes.info[cls]
        #expect(info.pages == 4)
        let objects = Int(info.objects), perPage = Int(pageSize) / 128
        let a = Owner(0x10, inRuns: inRuns), b = Owner(0x20, inRuns: inRuns)
        let own = a.refill(central, 2 * objects)  // two full spans
        let map = h.pageHeap.pointee.spanMap
        let first = map.span(containing: own[0])!, second = map.span(containing: own[objects])!
        #expect(first != second && own.prefix(objects).allSatisfy { map.span(containing: $0) == first })
        // The first span's objects by page, last page first, alternating with the first
        // page: 3/4 of them minus one, then one of the second span, then the rest.
        var order: [UInt] = []
        for k in 0..<perPage { order += [own[3 * perPage + k], own[k]] }
        for k in 0..<perPage { order += [own[2 * perPage + k], own[perPage + k]] }
        let split = objects - objects / 4 - 1
        b.release(central, Array(order.prefix(split)) + [own[objects]])
        #expect(first.pointee.allocatedCount == UInt32(objects / 4 + 1) && first.pointee.owner == a.id)
        #expect(second.pointee.allocatedCount == UInt32(objects - 1) && second.pointee.owner == a.id)
        #expect(central.pointee.allocatedObjects == UInt(2 * objects - split - 1))
        b.release(central, [order[split]] + [own[objects + 1]] + Array(order.suffix(from: split + 1).reversed()))
        #expect(central.pointee.spanCount == 1 && map.span(containing: own[0]) == nil)
        #expect(second.pointee.allocatedCount == UInt32(objects - 2))
        a.release(central, Array(own.suffix(objects - 2)))
        #expect(central.pointee.spanCount == 0 && central.pointee.allocatedObjects == 0)
    }

    /// Which batches release takes in runs (batchComesInRuns): those where two of four
    /// neighbouring pairs sampled across the batch lie on one page.
    @Test(arguments: [
        ("seven in a row: too few to sample", (0..<7).map { 0x7000_0000_0000 + UInt($0) * 64 }, false),
        ("64 in a row", (0..<64).map { 0x7000_0000_0000 + UInt($0) * 64 }, true),
        ("64 in a row, descending", (0..<64).reversed().map { 0x7000_0000_0000 + UInt($0) * 64 }, true),
        ("64 each on a page of its own", (0..<64).map { 0x7000_0000_0000 + UInt($0) * pageSize }, false),
        ("32 in a row, then 32 each on a page of its own",
         (0..<32).map { 0x7000_0000_0000 + UInt($0) * 64 } + (0..<32).map { 0x7000_1000_0000 + UInt($0) * pageSize }, true),
        ("16 each on a page of its own, then 48 in a row",
         (0..<16).map { 0x7000_1000_0000 + UInt($0) * pageSize } + (0..<48).map { 0x7000_0000_0000 + UInt($0) * 64 }, true),
        ("48 each on a page of its own, then 16 in a row",
         (0..<48).map { 0x7000_1000_0000 + UInt($0) * pageSize } + (0..<16).map { 0x7000_0000_0000 + UInt($0) * 64 }, false),
    ] as [(String, [UInt], Bool)])
    func batchesThatSeemToComeInRunsAreSampledFromFourPairs(_ row: (String, [UInt], Bool)) {
        var objects = row.1
        #expect(batchComesInRuns(&objects, count: objects.count) == row.2, "\(row.0)")
    }

    /// A double free in a flushed batch that comes in runs (release takes it as
    /// releaseInRuns does) is reported, its second copy in the same run as the first.
    @Test func aDoubleFreeInABatchInRunsTraps() async {
        await #expect(processExitsWith: .failure) {
            let f = OneFullSpan(inRuns: false)
            f.b.release(f.central, Array(f.own[0..<10]) + [f.own[3]])
        }
    }

    /// An object twice in one run of a batch (a double free whose two copies reached the
    /// same remote bin) is reported, not counted free twice.
    @Test func aDoubleFreeInsideARunTraps() async {
        await #expect(processExitsWith: .failure) {
            let f = OneFullSpan(inRuns: true)
            f.b.release(f.central, [f.own[0], f.own[1], f.own[0]])
        }
    }
}
