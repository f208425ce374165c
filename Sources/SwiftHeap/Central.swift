// Central lists: per size class, the spans that have free objects, and the batch
// moves between them and the thread caches (Go's mcentral, tcmalloc's central
// free list).
//
// A refill takes free objects out of partial spans' bitmaps into a thread cache's
// slot array; a release puts objects back, bit by bit, into their spans' bitmaps.
// Objects move in batches, so each lock acquisition is paid for by many malloc or
// free calls on the fast path. A span whose objects are all free again stays for the
// class's next refills while the class keeps fewer than emptySpansKept such spans (up
// to keptEmptyBytes of them, at least one: its empty list); past that it goes back to
// the page heap at once, and the scavenger's tick gives back the kept ones that no
// refill took for a whole tick period (freeEmptySpans), so that their pages can be
// reused by any class or scavenged. A span's trip through the page heap costs about
// 1750 instructions (the page allocator's summaries, updated on alloc and free), about
// 20 per operation of a producer/consumer loop whose consumers empty spans in bursts
// (prodcons); a program running a thread per task would also hand each thread's spans
// to the page heap at its exit and take new ones for the next.
//
// A Central is an instance made with its class and the page heap it takes spans from;
// it depends on nothing above it and publishes the OS pages it releases or reclaims
// inside spans into the page heap's HeapEvents (the scavenger reads them).
//
// Spans belong to the thread cache that draws from them (their owner). A refill takes
// from the owner's own partial spans first, then from spans nobody owns, and only then
// from a fresh span: never from a span another live cache draws from, whose other
// objects are in that thread's hands. Handing one span's objects to two threads puts
// both threads' objects on the same cache lines, and every write by one then steals the
// line from the other's core (active false sharing: a churn loop in 2 threads ran at
// 1.5x the time of one whose spans stay private, with 7% of its objects' cache lines
// shared between the threads). So a partial span is on two lists: the class's partial
// list (every partial span, for the scavenger's in-span pass) and exactly one span list,
// its owner's (in the owner's OwnedSpans, which the owner's record holds and never
// touches) or the class's unowned list. Objects returned to a span, by its owner or by
// any other thread (remote frees), put it on its owner's list; a span whose owner has
// gone goes on the unowned list, where whichever cache refills first takes it over, and
// so does a span to which other threads return objects while its owner is idle for the
// class (it has not refilled while the others refilled it some times per owner), or
// which they leave at most a quarter allocated: its free memory would otherwise wait
// for an owner that may never allocate it again, and the owner holds few of its
// objects or is not writing new ones (larson's main thread fills the array, then only
// waits: its spans, drained by the workers, kept the run at twice the peak RSS). A
// cache that goes away (thread exit; in a fork child, the threads that do not exist
// there) hands its lists over to the unowned lists and closes them (disown: those of
// the classes it refilled; the others hold no span); a reused record opens each class's
// list again at its first refill of that class.
//
// Shared spans serve a cache's first refills of a class (starter refills: ThreadCache's
// refillBin), so that a thread that allocates a few objects of many sizes does not take
// a span of its own, an OS page or two, for each (1000 threads of 20 sizes: 76 MB of
// spans where the objects fill 12). A starter refill takes one line group: the fewest
// objects that fill whole cache lines from a line boundary (objectsPerLineGroup: 1, 2 or
// 4), of which every object is free, so two threads' objects still never share a line.
// A shared span's owner is sharedSpanOwner, which no cache is: every free of its objects
// is a remote free, back through a remote bin; it stays shared as they come back (on the
// class's shared list, which only starter refills take from: a private refill handing
// out its free objects would put them on lines beside other threads' live ones), and the
// class's last one stays when all its objects are back (isLastShared), for the next
// thread's starter refills.
//
// Invariants, under the class's lock: a span is on the partial list iff it is partial
// or kept empty (onPartialList); then it is on exactly one span list (listHead): its
// owner's, the unowned list, for a shared span (owner sharedSpanOwner, no ownedSpans)
// the shared list, or for a span with every object free and no owner the empty list,
// which holds emptySpans <= emptySpansKept spans; a span on an owner's list has that
// owner (owner, ownedSpans), and only the empty list and the class's last shared span
// hold a span with no object allocated. A closed list is empty. An
// OwnedSpans list head is written only under its class's lock (its record is never
// zeroed on reuse: ThreadCache.swift), so that a thread returning objects to a span of
// a cache that is going away sees the list either open (and the cache's disown then
// moves the span on) or closed.
//
// Each class has its own lock (rank central(class)); records are padded to a cache line
// so that classes do not share lines. A central's lock is taken before the page heap's.

import CShim

/// A refilling owner's partial spans (see the file comment): per class, the head of the
/// list of spans it draws from that have free objects, or closedSpanList. Lives in the
/// owner's record, zeroed when the record is first made (every list empty and open);
/// each class's list is guarded by that class's central lock, and the owner never
/// touches it itself.
struct OwnedSpans {
    var heads: InlineArray<80, UnsafeMutablePointer<Span>?>
    /// Per class, the class's refill clock (Central.refills) at the owner's last refill;
    /// 0 if it has not refilled the class (or has gone). Written under the class's lock
    /// by the owner's refills and its disown, both on the owner's thread, which may
    /// therefore read it without the lock (ThreadCache.refillBin, Central.disown).
    var lastRefill: InlineArray<80, UInt>
}

/// The head of one span list (a class of an OwnedSpans, or a central's unowned list).
typealias SpanListHead = UnsafeMutablePointer<UnsafeMutablePointer<Span>?>

/// The head of a closed list: its owner has gone (never a span record's address).
let closedSpanList = UnsafeMutablePointer<Span>(bitPattern: 1)

/// The owner of a shared span (see the file comment): never a cache record's address, so
/// that every free of its objects goes to the freeing thread's remote bin.
let sharedSpanOwner = UnsafeMutableRawPointer(bitPattern: 2)!

/// The spans of the shared list a starter refill looks at for a whole free line group
/// before it takes a fresh span.
let sharedSpansScanned = 8

extension UnsafeMutablePointer where Pointee == Span {
    /// The span lists of the span's owner (Span.ownerLists, typed).
    @inline(__always) var ownedSpans: UnsafeMutablePointer<OwnedSpans>? {
        get { pointee.ownerLists?.assumingMemoryBound(to: OwnedSpans.self) }
        nonmutating set { pointee.ownerLists = newValue.map { UnsafeMutableRawPointer($0) } }
    }
}

extension UnsafeMutablePointer where Pointee == OwnedSpans {
    /// The head of the list of class `sizeClass`.
    @inline(__always) func head(_ sizeClass: Int) -> SpanListHead {
        UnsafeMutableRawPointer(self).assumingMemoryBound(to: UnsafeMutablePointer<Span>?.self) + sizeClass
    }

    /// The class's refill clock at the owner's last refill of class `sizeClass`.
    @inline(__always) func lastRefill(_ sizeClass: Int) -> UnsafeMutablePointer<UInt> {
        (UnsafeMutableRawPointer(self) + MemoryLayout<OwnedSpans>.offset(of: \.lastRefill)!)
            .assumingMemoryBound(to: UInt.self) + sizeClass
    }
}

struct Central {
    // Layout: the fields a refill or release writes fill the first cache line; the
    // second holds what they only read (info, pageHeap), so that two threads' visits to
    // one class move one line between their cores, not two.

    /// Guards the partial list, the counters, and the free bitmaps and counts of this
    /// class's spans.
    var lock: Mutex
    var sizeClass: UInt32
    /// Spans of this class in use (partial or full).
    var spanCount: UInt32 = 0
    /// Spans of this class with at least one free object, most recently freed into first.
    var partial: UnsafeMutablePointer<Span>? = nil
    /// The partial spans no live cache owns (a span list: see the file comment).
    var unowned: UnsafeMutablePointer<Span>? = nil
    /// Objects handed out of this class's spans, net of those returned (for stats).
    var allocatedObjects: UInt = 0
    /// Refills of this class so far, by any cache: the clock by which an owner counts as
    /// idle (see the file comment).
    var refills: UInt = 0
    /// Owners that have refilled this class and not gone (disown): the idle threshold
    /// grows with them.
    var owners: UInt = 0
    /// The spans with every object free that stay for the next refills (a span list: see
    /// the file comment; closeRun), taken after the unowned list's.
    var empty: UnsafeMutablePointer<Span>? = nil
    /// The partial shared spans (a span list: see the file comment). Ends the first line.
    var shared: UnsafeMutablePointer<Span>? = nil
    /// The class's object size, span pages and objects (a copy of its SizeClassInfo).
    var info: SizeClassInfo
    /// The page heap this central's spans come from and go back to.
    var pageHeap: UnsafeMutablePointer<PageHeap>
    /// Spans on the empty list (written when a span empties or a refill takes one: on
    /// this read-mostly line, as those are rare beside the batches).
    var emptySpans: UInt32 = 0
    /// The most spans the empty list holds: keptEmptyBytes of them, at least one (none
    /// when the central keeps none). Set at init.
    var emptySpansKept: UInt32
    /// The spans at the end of the empty list that were on it at the last
    /// freeEmptySpans: those the next one gives back.
    var agedEmptySpans: UInt32 = 0
    /// Pads the record to two whole cache lines (a test checks the stride).
    var padding: (UInt32, UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0, 0)

    /// A central for class `sizeClass` that keeps up to `keptEmptyBytes` of emptied spans
    /// for its next refills (at least one span when not 0: see the file comment).
    init(sizeClass: Int, info: SizeClassInfo, pageHeap: UnsafeMutablePointer<PageHeap>, keptEmptyBytes: UInt) {
        self.lock = Mutex(rank: .central(sizeClass))
        self.sizeClass = UInt32(sizeClass)
        self.info = info
        self.pageHeap = pageHeap
        let spanBytes = max(UInt(info.pages), 1) << pageShift
        self.emptySpansKept = keptEmptyBytes == 0 ? 0 : UInt32(min(max(keptEmptyBytes / spanBytes, 1), UInt(UInt32.max)))
    }

    /// Makes the centrals of every class of `classes` (class 0, "not small", included so
    /// that they are indexed by class), taking spans from `pageHeap` and keeping up to
    /// `keptEmptyBytes` of emptied spans each. Nil if metadata memory is exhausted.
    static func makeAll(classes: SizeClassTable, pageHeap: UnsafeMutablePointer<PageHeap>,
                        keptEmptyBytes: UInt) -> UnsafeMutablePointer<Central>? {
        guard let memory = persistentAlloc(UInt(maxSizeClasses * MemoryLayout<Central>.stride), alignment: 64) else { return nil }
        let centrals = memory.bindMemory(to: Central.self, capacity: maxSizeClasses)
        for cls in 0..<maxSizeClasses {
            (centrals + cls).initialize(to: Central(sizeClass: cls, info: classes.info[cls < classes.count ? cls : 0],
                                                    pageHeap: pageHeap, keptEmptyBytes: keptEmptyBytes))
        }
        return centrals
    }
}

/// The emptied spans a process's central keeps for its class's next refills, in bytes (at
/// least one span: see Central.swift's file comment). On prodcons, 128 KiB took the page
/// heap's part from about 22 to 2 instructions per operation (the spans' trips: 25.5k
/// for 2M operations, about 1750 instructions each); the scavenger's tick returns them
/// to the page heap once a tick period, so they cost at most this much a class for that
/// long.
let defaultKeptEmptyBytes: UInt = 128 << 10

extension Central {
    /// An owner that has not refilled a class while others refilled it
    /// idleRefillsPerOwner times per owner of the class, plus idleRefillsMinimum, counts as
    /// idle for it. An active owner among n refills about once in n refills of the class:
    /// a gap of 4n + 16 happens to one in a few hundred of them (it then loses a span to
    /// another thread: as before spans had owners, not worse); larson's main thread, which
    /// filled the array and then waits, is idle after a few thousand of the workers'
    /// objects of each class.
    static let idleRefillsPerOwner: UInt = 4
    static let idleRefillsMinimum: UInt = 16
}

extension UnsafeMutablePointer where Pointee == Central {
    @inline(__always) var lockPointer: UnsafeMutablePointer<Mutex> { pointer(to: \.lock)! }
    @inline(__always) private var events: UnsafeMutablePointer<HeapEvents> { pointee.pageHeap.pointee.events }

    @inline(__always) private var unownedHead: SpanListHead { pointer(to: \.unowned)! }
    @inline(__always) private var sharedHead: SpanListHead { pointer(to: \.shared)! }
    @inline(__always) private var emptyHead: SpanListHead { pointer(to: \.empty)! }

    /// Puts a span that has just become partial on the partial list and on the span list
    /// `list`. Must hold this central's lock.
    private func pushPartial(_ span: UnsafeMutablePointer<Span>, on list: SpanListHead) {
        span.pointee.previous = nil
        span.pointee.next = pointee.partial
        if let head = pointee.partial { head.pointee.previous = span }
        pointee.partial = span
        span.pointee.onPartialList = true
        link(span, on: list)
    }

    /// Puts `span` (on no span list) first on `list`. Must hold this central's lock.
    private func link(_ span: UnsafeMutablePointer<Span>, on list: SpanListHead) {
        span.pointee.listPrevious = nil
        span.pointee.listNext = list.pointee
        if let first = list.pointee { first.pointee.listPrevious = span }
        list.pointee = span
        span.pointee.listHead = list
    }

    /// Takes `span` off its span list. Must hold this central's lock.
    private func unlink(_ span: UnsafeMutablePointer<Span>) {
        if let previous = span.pointee.listPrevious {
            previous.pointee.listNext = span.pointee.listNext
        } else {
            span.pointee.listHead.unsafelyUnwrapped.pointee = span.pointee.listNext
        }
        if let next = span.pointee.listNext { next.pointee.listPrevious = span.pointee.listPrevious }
        span.pointee.listNext = nil
        span.pointee.listPrevious = nil
        span.pointee.listHead = nil
    }

    /// Makes `owner` (nil: none) `span`'s owner, in its record and in its pages' entries
    /// of the span map, which free's fast path reads (Span.swift: SpanMapEntry). Must
    /// hold this central's lock.
    private func setOwner(_ span: UnsafeMutablePointer<Span>, _ owner: UnsafeMutableRawPointer?) {
        span.pointee.owner = owner
        pointee.pageHeap.pointee.spanMap.publishOwner(span)
    }

    /// Moves `span` from the unowned list to the list of `owned` and makes it `owner`'s.
    /// Must hold this central's lock.
    private func adopt(_ span: UnsafeMutablePointer<Span>, owner: UnsafeMutableRawPointer, owned: UnsafeMutablePointer<OwnedSpans>) {
        setOwner(span, owner)
        span.ownedSpans = owned
        unlink(span)
        link(span, on: owned.head(Int(pointee.sizeClass)))
    }

    /// Whether the objects just returned to `span`, by `releaser`, leave it to the unowned
    /// list rather than its owner's: returned by a cache other than the owner, and the
    /// span is at most a quarter allocated or its owner idle for this class (see the file
    /// comment). `active` is an owner already found not idle in this batch, or nil: the
    /// lock is held across the batch, and an owner's idleness changes only by refills of
    /// the class, under the lock, so it is read once per owner and batch (a remote batch
    /// holds the objects of one owner, mostly), not once per object. Must hold this
    /// central's lock.
    @inline(__always) private func leavesOwner(_ span: UnsafeMutablePointer<Span>, releaser: UnsafeMutableRawPointer?,
                             active: inout UnsafeMutableRawPointer?) -> Bool {
        let owner = span.pointee.owner
        // An unowned span: no owner lists; a shared span stays shared.
        guard owner != releaser, owner != nil, owner != sharedSpanOwner else { return false }
        if span.pointee.allocatedCount &<< 2 <= span.pointee.objectCount { return true }
        if owner == active { return false }
        guard let theirs = span.ownedSpans else { return false }
        let idleAfter = pointee.owners &* Central.idleRefillsPerOwner &+ Central.idleRefillsMinimum
        if pointee.refills &- theirs.lastRefill(Int(pointee.sizeClass)).pointee > idleAfter { return true }
        active = owner
        return false
    }

    /// Moves partial `span` from its span list to the unowned list, or to `list` (the
    /// empty list: keepEmpty), with no owner. Must hold this central's lock.
    private func makeUnowned(_ span: UnsafeMutablePointer<Span>, onto list: SpanListHead? = nil) {
        unlink(span)
        setOwner(span, nil)
        span.ownedSpans = nil
        link(span, on: list ?? unownedHead)
    }

    /// The span list a span that has just become partial, by objects `releaser` returned,
    /// goes on: its owner's, or the unowned list if its owner has gone or the span leaves
    /// it (leavesOwner; then it has no owner). Must hold this central's lock.
    private func listForNewlyPartial(_ span: UnsafeMutablePointer<Span>, releaser: UnsafeMutableRawPointer?,
                                     active: inout UnsafeMutableRawPointer?) -> SpanListHead {
        if span.pointee.owner == sharedSpanOwner { return sharedHead }
        if let theirs = span.ownedSpans {
            let head = theirs.head(Int(pointee.sizeClass))
            if head.pointee != closedSpanList && !leavesOwner(span, releaser: releaser, active: &active) { return head }
        }
        setOwner(span, nil)
        span.ownedSpans = nil
        return unownedHead
    }

    /// Must hold this central's lock.
    private func removePartial(_ span: UnsafeMutablePointer<Span>) {
        if let previous = span.pointee.previous {
            previous.pointee.next = span.pointee.next
        } else {
            pointee.partial = span.pointee.next
        }
        if let next = span.pointee.next { next.pointee.previous = span.pointee.previous }
        span.pointee.next = nil
        span.pointee.previous = nil
        span.pointee.onPartialList = false
        unlink(span)
    }

    /// Moves up to `want` free objects of this class into `slots`; returns how many
    /// (0 only if the heap is out of memory). The objects come from `owner`'s own partial
    /// spans (in `owned`), then from unowned ones, then from kept empty ones (both become
    /// `owner`'s), then from fresh spans (see the file comment): frees into them from
    /// other threads go to remote bins (see ThreadCache.swift).
    ///
    /// Takes this central's lock, and the page heap's lock when it needs a new span.
    func refill(into slots: UnsafeMutablePointer<UInt>, want: Int, owner: UnsafeMutableRawPointer,
                owned: UnsafeMutablePointer<OwnedSpans>) -> Int {
        lockPointer.lock()
        let mine = owned.head(Int(pointee.sizeClass))
        if mine.pointee == closedSpanList { mine.pointee = nil }  // a reused record
        pointee.refills &+= 1
        let stamp = owned.lastRefill(Int(pointee.sizeClass))
        if stamp.pointee == 0 { pointee.owners &+= 1 }
        stamp.pointee = pointee.refills
        var got = 0
        while got < want {
            let span: UnsafeMutablePointer<Span>
            if let own = mine.pointee {
                span = own
            } else if let spare = pointee.unowned {
                adopt(spare, owner: owner, owned: owned)
                span = spare
            } else if let kept = pointee.empty {
                pointee.emptySpans &-= 1
                pointee.agedEmptySpans = min(pointee.agedEmptySpans, pointee.emptySpans)
                adopt(kept, owner: owner, owned: owned)
                span = kept
            } else {
                guard let fresh = newSpan(owner: owner) else { break }
                fresh.ownedSpans = owned
                pushPartial(fresh, on: mine)
                span = fresh
            }
            got = take(from: span, into: slots, already: got, want: want)
            if span.pointee.allocatedCount == span.pointee.objectCount { removePartial(span) }
        }
        pointee.allocatedObjects &+= UInt(got)
        lockPointer.unlock()
        return got
    }

    /// Moves one whole line group of free objects (objectsPerLineGroup) from a shared
    /// span into `slots` and returns how many (0 only if the heap is out of memory): a
    /// starter refill (see the file comment). Takes the first whole free group of the
    /// first of the shared list's spans that has one (looking at sharedSpansScanned of
    /// them), else of a fresh span, which joins the list.
    ///
    /// Takes this central's lock, and the page heap's lock when it needs a new span.
    func refillStarter(into slots: UnsafeMutablePointer<UInt>) -> Int {
        lockPointer.lock()
        let group = Int(objectsPerLineGroup(objectSize: UInt(pointee.info.size)))
        var found: UnsafeMutablePointer<Span>? = nil
        var candidate = pointee.shared
        var scanned = 0
        while let span = candidate, scanned < sharedSpansScanned {
            if takeLineGroup(from: span, objects: group, into: slots) {
                found = span
                break
            }
            candidate = span.pointee.listNext
            scanned &+= 1
        }
        if found == nil, let fresh = newSpan(owner: sharedSpanOwner) {
            pushPartial(fresh, on: sharedHead)
            if takeLineGroup(from: fresh, objects: group, into: slots) { found = fresh }
        }
        guard let span = found else {
            lockPointer.unlock()
            return 0
        }
        if span.pointee.allocatedCount == span.pointee.objectCount { removePartial(span) }
        pointee.allocatedObjects &+= UInt(group)
        lockPointer.unlock()
        return group
    }

    /// Takes the lowest whole line group of `objects` free objects of `span` (objects
    /// whose lines hold no other object of the span: they start at a multiple of
    /// `objects` objects from its base, which lies on a page) into `slots`; false if
    /// every group holds an allocated object (or the tail). Must hold this central's lock.
    private func takeLineGroup(from span: UnsafeMutablePointer<Span>, objects: Int, into slots: UnsafeMutablePointer<UInt>) -> Bool {
        // A group's bits lie in one word (objects, a power of two, divides 64);
        // groupStarts has the bit of each group's first object.
        let width = UInt64(objects)
        let groupStarts: UInt64
        switch width {
        case 1: groupStarts = ~0
        case 2: groupStarts = 0x5555_5555_5555_5555
        case 4: groupStarts = 0x1111_1111_1111_1111
        default: groupStarts = ~UInt64(0) / ((UInt64(1) << width) &- 1)  // no class of a multiple of 16
        }
        let words = span.freeWords
        for wordIndex in 0..<spanBitmapWords {
            let valid = span.objectBits(ofWord: wordIndex)
            if valid == 0 { break }
            // Bit i of `whole`: objects i..<i+width are all free (halving steps: width is
            // a power of two), for i the first object of a group.
            var whole = words[wordIndex] & valid
            var shift: UInt64 = 1
            while shift < width {
                whole &= whole >> shift
                shift &<<= 1
            }
            whole &= groupStarts
            if whole == 0 { continue }
            let first = UInt64(whole.trailingZeroBitCount)
            words[wordIndex] &= ~(((UInt64(1) << width) &- 1) << first)
            let base = span.pointee.base
            let size = UInt(span.pointee.objectSize)
            for k in 0..<objects {
                slots[k] = base &+ (UInt(wordIndex) &<< 6 &+ UInt(first) &+ UInt(k)) &* size
            }
            span.pointee.countAllocated(UInt16(truncatingIfNeeded: objects))
            if span.pointee.releasedOSPages != 0 {
                reclaimReleasedPages(span, from: slots[0] &- base, bytes: UInt(objects) &* size)
            }
            return true
        }
        return false
    }

    /// Hands the partial spans of `owned` (an owner that goes away) to the unowned list,
    /// and closes its list. An owner that never refilled the class has no span of it
    /// (spans join an owner's list at its refills only) and nothing to close: that takes
    /// no lock (only the owner's own refills and disown write its stamp, from its thread).
    ///
    /// Takes this central's lock; with `locked`, the caller holds it (or is the only
    /// thread: a fork child).
    func disown(_ owned: UnsafeMutablePointer<OwnedSpans>, locked: Bool = false) {
        if owned.lastRefill(Int(pointee.sizeClass)).pointee == 0 { return }
        if !locked { lockPointer.lock() }
        let list = owned.head(Int(pointee.sizeClass))
        while let span = list.pointee, span != closedSpanList { makeUnowned(span) }
        list.pointee = closedSpanList
        let stamp = owned.lastRefill(Int(pointee.sizeClass))
        if stamp.pointee != 0 { pointee.owners &-= 1 }
        stamp.pointee = 0
        if !locked { lockPointer.unlock() }
    }

    /// Takes free objects from `span` (lowest addresses first) until `want` are in
    /// `slots`; never the tail's sentinel bits (Span.objectStart). Must hold this
    /// central's lock.
    func take(from span: UnsafeMutablePointer<Span>, into slots: UnsafeMutablePointer<UInt>,
                      already: Int, want: Int) -> Int {
        var got = already
        let words = span.freeWords
        let base = span.pointee.base
        let size = UInt(span.pointee.objectSize)
        var wordIndex = 0
        while wordIndex < spanBitmapWords && got < want {
            let objects = span.objectBits(ofWord: wordIndex)
            if objects == 0 { break }
            let word = words[wordIndex]
            var bits = word & objects
            while bits != 0 && got < want {
                let bit = UInt(bits.trailingZeroBitCount)
                bits &= bits &- 1
                slots[got] = base &+ (UInt(wordIndex) &<< 6 &+ bit) &* size
                got &+= 1
            }
            words[wordIndex] = bits | word & ~objects
            wordIndex &+= 1
        }
        span.pointee.countAllocated(UInt16(truncatingIfNeeded: got &- already))
        if span.pointee.releasedOSPages != 0 { reclaimReleasedPages(span, slots + already, count: got &- already) }
        return got
    }

    /// The objects just taken from `span` may lie on OS pages released while they were
    /// free: those pages are resident again once written, so stop counting them.
    /// `objects` are in ascending order (take hands them out so): an object that ends on
    /// a page already cleared costs a compare, and the walk stops when no page is left
    /// counted. Must hold this central's lock.
    private func reclaimReleasedPages(_ span: UnsafeMutablePointer<Span>, _ objects: UnsafeMutablePointer<UInt>, count: Int) {
        var released = span.pointee.releasedOSPages
        let size = UInt(span.pointee.objectSize)
        let base = span.pointee.base
        // The objects lie between the first's start and the last's end: if none of those
        // pages is counted, there is nothing to walk (a span reused by the next thread
        // of a thread per task, whose fresh span's later pages are still untouched: 94
        // instructions a refill before this test).
        if count == 0 { return }
        let firstPage = (objects[0] &- base) / osPageSize
        let lastPage = (objects[count &- 1] &- base &+ size &- 1) / osPageSize  // below 64
        if released & (((UInt64(2) << UInt64(lastPage &- firstPage)) &- 1) << UInt64(firstPage)) == 0 { return }
        let before = released.nonzeroBitCount
        var cleared: UInt = 0  // the OS pages below this one are cleared
        var i = 0
        while i < count && released != 0 {
            let offset = objects[i] &- base
            let end = (offset &+ size &- 1) / osPageSize &+ 1  // past the object's last OS page (at most 64)
            if end > cleared {
                let first = max(offset / osPageSize, cleared)
                let upTo = end == 64 ? ~UInt64(0) : (UInt64(1) << UInt64(end)) &- 1
                released &= ~(upTo & ~((UInt64(1) << UInt64(first)) &- 1))
                cleared = end
            }
            i &+= 1
        }
        span.pointee.releasedOSPages = released
        let reclaimed = before &- released.nonzeroBitCount
        if reclaimed > 0 { events.noteInSpanReleased(-Int64(reclaimed) &* Int64(osPageSize)) }
    }

    /// reclaimReleasedPages for the objects of `bytes` bytes in a row at `offset` from
    /// `span`'s base (a line group): one mask of their OS pages. Must hold this central's
    /// lock.
    private func reclaimReleasedPages(_ span: UnsafeMutablePointer<Span>, from offset: UInt, bytes: UInt) {
        let first = offset / osPageSize
        let last = (offset &+ bytes &- 1) / osPageSize  // below 64: a span has at most 64 OS pages
        let pages = ((UInt64(2) << UInt64(last &- first)) &- 1) << UInt64(first)
        let reclaimed = span.pointee.releasedOSPages & pages
        if reclaimed == 0 { return }
        span.pointee.releasedOSPages &= ~reclaimed
        events.noteInSpanReleased(-Int64(reclaimed.nonzeroBitCount) &* Int64(osPageSize))
    }

    /// Releases the OS pages of this class's partly used spans on which every object
    /// is free. With `confirmed` (decay), only pages that were found all free by the
    /// previous confirmed pass too: a page whose objects are handed out and freed again
    /// between passes is not released just to be faulted back in. Returns bytes released.
    ///
    /// Takes this central's lock (held across the madvise calls: refills of this class
    /// wait, which is what keeps a page from being handed out while it is released).
    func releaseFreePages(confirmed: Bool = false) -> UInt {
        lockPointer.lock()
        var released: UInt = 0
        var span = pointee.partial
        while let current = span {
            released &+= releaseFreePages(of: current, confirmed: confirmed)
            span = current.pointee.next
        }
        lockPointer.unlock()
        return released
    }

    /// Releases the OS pages of `span` (of this class) on which every object is free
    /// (if `confirmed`, and was at the previous confirmed pass). Returns the bytes
    /// released, which it adds to the in-span count.
    ///
    /// Must hold this central's lock.
    func releaseFreePages(of span: UnsafeMutablePointer<Span>, confirmed: Bool = false) -> UInt {
        let size = UInt(span.pointee.objectSize)
        let objectCount = UInt(span.pointee.objectCount)
        let osPages = min((span.pointee.pages &<< pageShift) / osPageSize, 64)
        var releasable: UInt64 = 0
        for page in 0..<osPages {
            let bit = UInt64(1) << UInt64(page)
            if span.pointee.releasedOSPages & bit != 0 { continue }
            let first = page &* osPageSize / size
            if first >= objectCount { continue }  // only the span's unused tail: never touched
            let last = min(((page &+ 1) &* osPageSize &- 1) / size, objectCount &- 1)
            if span.allFree(from: first, through: last) { releasable |= bit }
        }
        if confirmed {
            let seen = span.pointee.freeOSPagesSeen
            span.pointee.freeOSPagesSeen = releasable & ~seen
            releasable &= seen
        } else {
            span.pointee.freeOSPagesSeen = 0
        }
        if releasable == 0 { return 0 }
        // Release maximal runs of consecutive pages with one call each.
        var remaining = releasable
        while remaining != 0 {
            let start = UInt(remaining.trailingZeroBitCount)
            let run = UInt((~(remaining >> UInt64(start))).trailingZeroBitCount)
            osRelease(span.pointee.base &+ start &* osPageSize, run &* osPageSize)
            remaining &= run == 64 ? 0 : ~(((UInt64(1) << UInt64(run)) &- 1) << UInt64(start))
        }
        span.pointee.releasedOSPages |= releasable
        let bytes = UInt(releasable.nonzeroBitCount) &* osPageSize
        events.noteInSpanReleased(Int64(bytes))
        return bytes
    }

    /// A fresh span of this class with every object free, `owner`'s, or nil if out of
    /// memory. Must hold this central's lock; takes the page heap's lock.
    private func newSpan(owner: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Span>? {
        let pages = UInt(pointee.info.pages)
        let pageHeap = pointee.pageHeap
        pageHeap.lockPointer.lock()
        let result = pageHeap.allocSpanLocked(pageCount: pages, state: .small)
        pageHeap.lockPointer.unlock()
        guard let (span, scavengedBytes) = result else { return nil }
        setUpSpan(span, zeroed: scavengedBytes == pages &<< pageShift, owner: owner)
        pointee.spanCount &+= 1
        return span
    }

    /// Makes `span` (fresh from the page heap) a span of this class with every object
    /// free. Pages known to be zero (fresh from mmap or released) are not resident
    /// until an object on them is handed out: they are counted as released inside the
    /// span, as if the in-span pass had released them, and take() reclaims them object
    /// by object, so that retained memory does not count pages never touched. `owner`
    /// (nil: none) owns it, in its record and in the span map's copies (setOwner).
    ///
    /// Must hold this central's lock (or own the span alone).
    func setUpSpan(_ span: UnsafeMutablePointer<Span>, zeroed: Bool, owner: UnsafeMutableRawPointer? = nil) {
        span.initializeSmall(sizeClass: pointee.sizeClass, info: pointee.info)
        span.pointee.owner = owner
        pointee.pageHeap.pointee.spanMap.publishSmall(span)
        if zeroed {
            let untouched = span.objectOSPages
            span.pointee.releasedOSPages = untouched
            events.noteInSpanReleased(Int64(untouched.nonzeroBitCount) &* Int64(osPageSize))
        }
    }

    /// Returns `count` objects of this class to their spans, for `releaser` (the cache
    /// returning them; nil: none in particular). A span left with no allocated object goes
    /// back to the page heap; one that becomes partial goes on its owner's list, or the
    /// unowned list if its owner has gone; one that a releaser other than its owner
    /// leaves at most a quarter allocated, or whose owner is idle, goes to the unowned
    /// list (leavesOwner; see the file comment).
    /// A pointer whose bit is already free was freed twice: reported as heap misuse. A
    /// batch that seems to come in runs (batchComesInRuns) goes as releaseInRuns's.
    ///
    /// Takes this central's lock, and the page heap's lock when a span empties.
    func release(_ objects: UnsafeMutablePointer<UInt>, count: Int, by releaser: UnsafeMutableRawPointer? = nil) {
        if batchComesInRuns(objects, count: count) { return releaseInRuns(objects, count: count, by: releaser) }
        putBack(objects, count: count, releaser: releaser, inRuns: false)
    }

    /// release, for a batch whose objects come mostly in runs of one span, as a remote
    /// bin's do (their owner handed them out in the order of its span's bitmap, and a
    /// producer's consumer frees them in that order): the objects of a run (objects in a
    /// row that lie in the first one's span, in any order) share one span lookup and one
    /// update of the span's count and lists (closeRun), which leaves the
    /// span where returning them one by one would (its count only falls, and every list
    /// decision depends on the count and on state the lock keeps still). In a batch of
    /// objects in random order (a churning program's flushed bin), each run ends after
    /// one object, and the test costs the loop a few instructions an object: release
    /// takes this path only for batches that seem to come in runs (batchComesInRuns).
    ///
    /// Takes this central's lock, and the page heap's lock when a span empties.
    func releaseInRuns(_ objects: UnsafeMutablePointer<UInt>, count: Int, by releaser: UnsafeMutableRawPointer?) {
        putBack(objects, count: count, releaser: releaser, inRuns: true)
    }

    /// release's and releaseInRuns's body (inRuns: whether a run may go on past its first
    /// object). Takes this central's lock, and the page heap's lock when a span empties.
    @inline(__always) private func putBack(_ objects: UnsafeMutablePointer<UInt>, count: Int,
                                           releaser: UnsafeMutableRawPointer?, inRuns: Bool) {
        lockPointer.lock()
        let spanMap = pointee.pageHeap.pointee.spanMap
        var active: UnsafeMutableRawPointer? = nil  // leavesOwner's memo
        var i = 0
        while i < count {
            // A run: objects[i] and, inRuns, the objects after it that lie in its span's
            // objects (a wide span's pages in any order; its tail holds no object).
            let first = objects[i]
            guard let span = spanMap.span(containing: first), UInt32(span.pointee.sizeClass) == pointee.sizeClass else {
                fatalMisuse("free()", "invalid pointer", address: first)
            }
            let base = span.pointee.base
            let reciprocal = UInt(span.pointee.reciprocal)
            let objectBytes = UInt(span.pointee.objectCount) &* UInt(span.pointee.objectSize)
            let words = span.freeWords
            let runStart = i
            // The object's index is the high half of offset·reciprocal (Span.objectStart),
            // its bitmap word the index over 64. The run's current word stays in a
            // register while the run's objects lie in it and is stored when the run
            // leaves it, rather than loaded and stored for each object: releaseInRuns
            // ran 8% fewer instructions on xthread (callgrind).
            var product = (first &- base) &* reciprocal
            var wordIndex = Int(bitPattern: product >> 38)
            var word = words[wordIndex]
            while true {
                let set = word | UInt64(1) << UInt64((product >> 32) & 63)
                if set == word { fatalMisuse("free()", "double free of", address: objects[i]) }
                word = set
                i &+= 1
                if !inRuns || i == count { break }
                let offset = objects[i] &- base
                if offset >= objectBytes { break }
                product = offset &* reciprocal
                let next = Int(bitPattern: product >> 38)
                if next != wordIndex {
                    words[wordIndex] = word
                    wordIndex = next
                    word = words[next]
                }
            }
            words[wordIndex] = word
            // At most the span's allocated count: each bit was clear.
            closeRun(span, freed: UInt16(truncatingIfNeeded: i &- runStart), releaser: releaser, active: &active)
        }
        pointee.allocatedObjects &-= UInt(count)
        lockPointer.unlock()
    }

    /// Whether shared span `span` is the class's only one with a free object (the shared
    /// list holds no other): emptied, it stays for the next starter refill rather than
    /// going back to the page heap (a thread per task would otherwise take a fresh one
    /// from the page heap for each thread). Must hold this central's lock.
    @inline(__always) private func isLastShared(_ span: UnsafeMutablePointer<Span>) -> Bool {
        guard let first = pointee.shared else { return true }
        return first == span && span.pointee.listNext == nil
    }

    /// Counts the `freed` objects just returned to `span` (their bits set) and moves the
    /// span: if none is left allocated, onto the empty list while it has room, else to the
    /// page heap (the class's last shared span stays shared: isLastShared); onto a span
    /// list if it has just become partial; to the unowned list if leavesOwner says so.
    /// A kept span's free pages are released like those of any partial span
    /// (releaseFreePages) until the scavenger's tick gives it back (freeEmptySpans).
    /// Must hold this central's lock; takes the page heap's lock when the span goes back.
    @inline(__always) private func closeRun(_ span: UnsafeMutablePointer<Span>, freed: UInt16, releaser: UnsafeMutableRawPointer?,
                          active: inout UnsafeMutableRawPointer?) {
        span.pointee.countFreed(freed)
        if span.pointee.allocatedCount == 0 {
            if span.pointee.owner == sharedSpanOwner && isLastShared(span) {
                if !span.pointee.onPartialList { pushPartial(span, on: sharedHead) }
            } else if pointee.emptySpans < pointee.emptySpansKept {
                keepEmpty(span)
            } else {
                if span.pointee.onPartialList { removePartial(span) }
                freeToPageHeap(span)
            }
        } else if !span.pointee.onPartialList {
            pushPartial(span, on: listForNewlyPartial(span, releaser: releaser, active: &active))
        } else if leavesOwner(span, releaser: releaser, active: &active) {
            makeUnowned(span)
        }
    }

    /// Puts `span`, whose objects are all free, on the empty list, with no owner. Must
    /// hold this central's lock.
    private func keepEmpty(_ span: UnsafeMutablePointer<Span>) {
        if span.pointee.onPartialList {
            makeUnowned(span, onto: emptyHead)
        } else {
            setOwner(span, nil)
            span.ownedSpans = nil
            pushPartial(span, on: emptyHead)
        }
        pointee.emptySpans &+= 1
    }

    /// Gives `span` (on no list, every object free) back to the page heap. Must hold this
    /// central's lock; takes the page heap's.
    private func freeToPageHeap(_ span: UnsafeMutablePointer<Span>) {
        let released = span.pointee.releasedOSPages
        if released != 0 {
            events.noteInSpanReleased(-Int64(released.nonzeroBitCount) &* Int64(osPageSize))
        }
        pointee.spanCount &-= 1
        let pageHeap = pointee.pageHeap
        pageHeap.lockPointer.lock()
        pageHeap.freeSpanLocked(span, releasedOSPages: released)
        pageHeap.lockPointer.unlock()
    }

    /// Gives the spans of the empty list that have sat there since the previous call
    /// (agedEmptySpans: the scavenger's tick), or with `all` every one of them
    /// (malloc_trim, an allocation that found no memory, a phase being dropped), back to
    /// the page heap; returns their pages. The list is last in, first out, so the spans
    /// that sat there are its last agedEmptySpans.
    ///
    /// Takes this central's lock, and the page heap's for each span.
    func freeEmptySpans(all: Bool) -> UInt {
        lockPointer.lock()
        let kept = all ? 0 : pointee.emptySpans &- min(pointee.agedEmptySpans, pointee.emptySpans)
        var span = pointee.empty
        var k: UInt32 = 0
        while k < kept, let current = span {
            span = current.pointee.listNext
            k &+= 1
        }
        var pages: UInt = 0
        while let current = span {
            span = current.pointee.listNext
            removePartial(current)
            pages &+= current.pointee.pages
            freeToPageHeap(current)
        }
        pointee.emptySpans = kept
        pointee.agedEmptySpans = kept
        lockPointer.unlock()
        return pages
    }
}

/// Whether a batch seems to come in runs of one span, so that release takes it as
/// releaseInRuns does: two of four neighbouring pairs, sampled across it, lie on one
/// page. A flushed bin's older half holds the objects a refill took, in address order,
/// and those the program freed, in its own order: random in a churning program, where
/// the run test would cost some 4 instructions an object for nothing, and the order they
/// were handed out in where a program frees what it built. Under callgrind, a perl
/// script's flushes (PERL_HASH_SEED=0) ran release in 31.3 M instructions this way
/// against 51.1 M without runs, `larson` 74.5 allocator instructions a pair against 78.8, and `st-churn`'s
/// teardown (its 100k objects freed) 21.1 M against 24.1 M, with its loop level. The
/// result is the same either way.
@inline(__always) func batchComesInRuns(_ objects: UnsafeMutablePointer<UInt>, count: Int) -> Bool {
    if count < 8 { return false }
    var onOnePage = 0
    for k in 0..<4 {
        let i = k &* (count &- 1) / 4
        if objects[i] ^ objects[i &+ 1] < pageSize { onOnePage &+= 1 }
    }
    return onOnePage >= 2
}
