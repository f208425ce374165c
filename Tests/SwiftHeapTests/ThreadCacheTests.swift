import Testing
import Foundation
import CShim
@testable import SwiftHeap

@Suite(.serialized) struct ThreadCacheTests {
    init() {
        swiftheap_library_init()
    }

    /// A bin's count, capacity, start and its empty and full tests come from its top and
    /// the low halves of its end addresses, also when the slot array straddles a 4 GiB
    /// boundary (where the low halves wrap). Computed only: the addresses are never read.
    @Test(arguments: [UInt(0x7f00_0000_1000), 0x1_0000_0000 - 24, 0xffff_fff8, 0x2_0000_0000 - 8 * 64])
    func binFiguresComeFromTopAndMarks(start: UInt) throws {
        let slots = try #require(UnsafeMutablePointer<UInt>(bitPattern: start))
        for (capacity, count) in [(0, 0), (1, 0), (1, 1), (8, 0), (8, 3), (8, 8), (128, 127)] as [(UInt32, UInt32)] {
            var bin = CacheBin(slots: slots, capacity: capacity, count: count)
            #expect(bin.count == count && bin.capacity == capacity && bin.slots == slots)
            #expect(bin.top == slots + Int(count))
            #expect(bin.isEmpty == (count == 0) && bin.isFull == (count == capacity))
            if count > 0 {
                bin.count = count - 1
                #expect(bin.top == slots + Int(count) - 1 && bin.slots == slots && !bin.isFull)
            }
        }
    }

    /// A thread's slot holds the shim's read-only zeros until the thread has a cache: the
    /// bins malloc's and free's fast paths read there are empty and full at once, so both
    /// send the thread to their slow paths, which make its cache, with no test of the
    /// slot of their own; and before the heap exists, malloc's size lookup and free's span
    /// map read zeros too (Tests/misuse: free-first-stack).
    @Test func aThreadWithNoCacheYetTakesTheSlowPaths() throws {
        #expect(MemoryLayout<ThreadCache>.offset(of: \.header)! <= sh_no_cache_yet_bytes(),
                "the fast paths read only bins, inside the zeros")
        #expect(SizeClassTable.binOffsetEntries == sh_bin_offset_entries())
        #expect(heap.pointee.pageHeap.spanMap.slots == SpanMap.process.slots,
                "the process's span map is the shim's static table, which free reads before the heap exists")
        #expect(UInt(sh_span_slot_count()) == spanMapSlotCount)
        let object = try #require(allocate(48))
        let address = UInt(bitPattern: object)
        onThreads(1) { _ in
            #expect(sh_tls_get() == nil)
            #expect(cacheAllocateFast(48, limit: maxSmallSize, binOffsets: sh_bin_offsets()) == nil)
            var zeros = [UInt16](repeating: 0, count: SizeClassTable.binOffsetEntries)
            #expect(zeros.withUnsafeMutableBufferPointer { cacheAllocateFast(48, limit: maxSmallSize, binOffsets: $0.baseAddress!) } == nil,
                    "a malloc before the heap exists")
            #expect(!cacheFreeFast(address, spanMap: heap.pointee.pageHeap.spanMap).isDone)
            #expect(sh_tls_get() == nil, "the fast paths leave the slot alone")
            let mine = allocate(48)
            #expect(mine != nil && sh_tls_get() != nil, "the slow path makes the thread's cache")
            deallocate(mine)
            deallocate(UnsafeMutableRawPointer(bitPattern: address))
        }
    }

    /// After warming up, malloc/free pairs of one size stay on the fast path: the
    /// thread's slow-path counters do not move.
    @Test func steadyStateMallocFreeTakesNoSlowPath() throws {
        // A size no other test uses (tests run in parallel and could share spans).
        let size: UInt = 6_500
        for _ in 0..<100 {
            let a = allocate(size), b = allocate(size)
            deallocate(b)
            deallocate(a)
        }
        let cache = try #require(processCaches.currentCache())
        let refills = cache.header.pointee.refills
        let flushes = cache.header.pointee.flushes
        for _ in 0..<100_000 {
            let a = allocate(size), b = allocate(size)
            deallocate(b)
            deallocate(a)
        }
        #expect(cache.header.pointee.refills == refills)
        #expect(cache.header.pointee.flushes == flushes)
    }

    /// A bin refills and flushes in batches: many objects per slow-path entry.
    @Test func refillsAndFlushesAreBatched() throws {
        let p = try #require(allocate(64))
        deallocate(p)
        let cache = try #require(processCaches.currentCache())
        let before = cache.header.pointee.refills + cache.header.pointee.flushes
        var objects: [UnsafeMutableRawPointer] = []
        for _ in 0..<10_000 { objects.append(allocate(64)!) }
        for object in objects { deallocate(object) }
        let slowPaths = cache.header.pointee.refills + cache.header.pointee.flushes - before
        #expect(slowPaths > 0)
        #expect(slowPaths * 32 <= 20_000, "\(slowPaths) slow-path entries for 20000 operations")
    }

    /// A cache's refills of a class go from small to big: its first starterRefillsPerClass
    /// take a line group each from a shared span (Central.refillStarter), the next takes a
    /// few objects (firstRefillObjects) of a span of its own into the bin's start array,
    /// the one after moves the bin to its full array at twice the start array's capacity,
    /// and each later one doubles it again, up to the class's capacity, taking half of it.
    /// A thread that allocates a few objects of many sizes and exits touches a few lines
    /// of each class and of its record, not pages (Tests/c/thread_burst.c), and moves a
    /// few objects of each class to its bin and back (the bench's `tasks`).
    @Test func aCachesRefillsOfAClassGoFromLineGroupsToAFewObjectsThenDoubleUpToTheClasssCapacity() throws {
        let size: UInt = 208  // a class no other test of this suite uses in this thread
        let cls = heap.pointee.classes.sizeClass(of: size)
        let group = Int(objectsPerLineGroup(objectSize: size))
        let spanMap = heap.pointee.pageHeap.spanMap
        processCaches.pointee.starterMinCaches = 0  // starter refills whatever the live caches
        defer { processCaches.pointee.starterMinCaches = defaultStarterMinCaches }
        onThreads(1) { _ in
            var objects = [allocate(size)]
            let cache = processCaches.currentCache()!
            let bin = cache.bin(cls)
            let arrays = processCaches.pointee.binArrays[cls]
            #expect(bin.pointee.capacity == startBinCapacity && bin.pointee.slots == cache.slotArray(at: arrays.binStart))
            for starter in 0..<Int(starterRefillsPerClass) {
                if starter > 0 { for _ in 0..<group { objects.append(allocate(size)) } }
                #expect(Int(bin.pointee.count) == group - 1, "starter refill \(starter) took \(bin.pointee.count + 1)")
                let newest = UInt(bitPattern: objects.last!)
                #expect(spanMap.span(containing: newest)!.pointee.owner == sharedSpanOwner)
            }
            for _ in 0..<group { objects.append(allocate(size)) }  // empties the bin, refills it
            #expect(Int(bin.pointee.count) == firstRefillObjects - 1, "the first private refill took \(bin.pointee.count + 1)")
            #expect(spanMap.span(containing: UInt(bitPattern: objects.last!))!.pointee.owner == UnsafeMutableRawPointer(cache))
            #expect(bin.pointee.slots == cache.slotArray(at: arrays.binStart), "still in the start array")
            for _ in 0..<firstRefillObjects { objects.append(allocate(size)) }  // empties the bin, refills it
            var capacity = startBinCapacity
            #expect(arrays.binCapacity >= 4 * startBinCapacity, "a class with room for two doublings")
            while capacity < arrays.binCapacity {
                capacity = min(capacity * 2, arrays.binCapacity)
                #expect(bin.pointee.slots == cache.slotArray(at: arrays.binFull) && bin.pointee.capacity == capacity,
                        "a refill of a bin of \(capacity / 2) slots made it \(bin.pointee.capacity)")
                #expect(Int(bin.pointee.count) == Int(capacity) / 2 - 1, "the refill into \(capacity) slots took \(bin.pointee.count + 1)")
                for _ in 0..<Int(capacity) / 2 { objects.append(allocate(size)) }  // empties the bin, refills it
            }
            #expect(bin.pointee.capacity == arrays.binCapacity, "at the class's capacity the bin stays")
            #expect(Int(bin.pointee.count) == Int(arrays.binCapacity) / 2 - 1)
            for object in objects { deallocate(object) }
        }
    }

    /// A cache made while fewer than starterMinCaches caches are live (a program with a
    /// few threads) makes no starter refills: its first refill of a class takes a few
    /// objects of a span of its own.
    @Test func aCacheMadeAmongFewThreadsTakesSpansOfItsOwnFromTheStart() throws {
        let size: UInt = 224  // a class no other test of this suite uses
        let cls = heap.pointee.classes.sizeClass(of: size)
        let spanMap = heap.pointee.pageHeap.spanMap
        processCaches.pointee.starterMinCaches = .max
        defer { processCaches.pointee.starterMinCaches = defaultStarterMinCaches }
        onThreads(1) { _ in
            let first = allocate(size)
            let cache = processCaches.currentCache()!
            #expect(spanMap.span(containing: UInt(bitPattern: first))!.pointee.owner == UnsafeMutableRawPointer(cache))
            #expect(Int(cache.bin(cls).pointee.count) == firstRefillObjects - 1)
            deallocate(first)
        }
    }

    /// Objects above starterMaxObjectSize never come from shared spans, whatever the live
    /// caches: a thread's first object of such a class comes from a span of its own.
    @Test func bigObjectsTakeNoStarterRefills() throws {
        let size: UInt = 2_304  // a class no other test of this suite uses
        #expect(size > starterMaxObjectSize)
        let spanMap = heap.pointee.pageHeap.spanMap
        processCaches.pointee.starterMinCaches = 0
        defer { processCaches.pointee.starterMinCaches = defaultStarterMinCaches }
        onThreads(1) { _ in
            let first = allocate(size)
            let small = allocate(48)
            let cache = processCaches.currentCache()!
            #expect(spanMap.span(containing: UInt(bitPattern: first))!.pointee.owner == UnsafeMutableRawPointer(cache))
            #expect(spanMap.span(containing: UInt(bitPattern: small))!.pointee.owner == sharedSpanOwner,
                    "a small class of the same cache does")
            deallocate(first)
            deallocate(small)
        }
    }

    /// A bin that fills up in its start array moves to its full array with its objects,
    /// rather than flushing half of them (a thread frees more objects of a class than it
    /// took of it: another thread's, or those of its own it allocated before); so does a
    /// remote bin.
    @Test func aFullStartArrayMovesToTheFullOneWithItsObjects() throws {
        let size: UInt = 464  // a class no other test of this suite uses
        let cls = heap.pointee.classes.sizeClass(of: size)
        let count = Int(startBinCapacity) + 4
        let objects = UnsafeMutablePointer<UInt>.allocate(capacity: count)
        defer { objects.deallocate() }
        for i in 0..<count { objects[i] = UInt(bitPattern: try #require(allocate(size))) }
        let pointers = UInt(bitPattern: objects)
        let moved = SharedCounter()
        onThreads(1) { _ in
            let objects = UnsafeMutablePointer<UInt>(bitPattern: pointers)!
            deallocate(allocate(16))  // the thread's cache, with empty bins of the class
            let cache = processCaches.currentCache()!
            let remote = cache.remoteBin(cls)
            let arrays = processCaches.pointee.binArrays[cls]
            let flushes = cache.header.pointee.flushes
            for i in 0..<count { deallocate(UnsafeMutableRawPointer(bitPattern: objects[i])) }
            let kept = (0..<count).allSatisfy { i in (0..<Int(remote.pointee.count)).contains { remote.pointee.slots[$0] == objects[i] } }
            moved.add(remote.pointee.slots == cache.slotArray(at: arrays.remoteFull) && Int(remote.pointee.count) == count
                      && kept && cache.header.pointee.flushes == flushes ? 1 : 0)
        }
        #expect(moved.value == 1)
    }

    /// A free from another thread than the one whose cache draws from the object's span
    /// (a remote free) takes the fast path into that thread's remote bin of the class,
    /// until the bin is full. (A size no other test uses: tests run in parallel.)
    @Test func remoteFreesTakeTheFastPathIntoTheRemoteBin() throws {
        let size: UInt = 368
        let cls = heap.pointee.classes.sizeClass(of: size)
        let objects = UnsafeMutablePointer<UInt>.allocate(capacity: 40)
        defer { objects.deallocate() }
        for i in 0..<40 { objects[i] = UInt(bitPattern: try #require(allocate(size))) }
        let results = SharedCounter()
        let pointers = UInt(bitPattern: objects)
        onThreads(1) { _ in
            let objects = UnsafeMutablePointer<UInt>(bitPattern: pointers)!
            let cache = processCaches.currentCache()!
            let remote = cache.remoteBin(cls)
            let capacity = Int(remote.pointee.capacity)
            var fast = 0
            for i in 0..<min(40, capacity) where cacheFreeFast(objects[i], spanMap: heap.pointee.pageHeap.spanMap).isDone { fast += 1 }
            results.add(fast == min(40, capacity) && Int(remote.pointee.count) == fast ? 1 : 0)
            for i in fast..<40 { deallocate(UnsafeMutableRawPointer(bitPattern: objects[i])) }
        }
        #expect(results.value == 1)
    }

    /// A thread that frees another thread's objects and then allocates objects of the
    /// same class: `size`'s class, whether its objects can share a cache line, and the
    /// objects the freeing thread's first `count` mallocs return, as indices into the
    /// freed ones in free order (-1: not one of them). The thread has a cache and an
    /// empty bin of the class before it frees, so its frees are remote, and has drawn
    /// from a span of its own (its first private refill: before, its remote bin does not
    /// refill its bin; refillBin), whose objects it holds until the end.
    private func reuseAfterRemoteFrees(size: UInt, count: Int) throws -> (sharesLines: Bool, got: [Int]) {
        let classes = heap.pointee.classes
        let cls = classes.sizeClass(of: size)
        let sharesLines = !classes.objectsShareNoCacheLine(cls)
        let objects = UnsafeMutablePointer<UInt>.allocate(capacity: 2 * count)
        defer { objects.deallocate() }
        for i in 0..<count { objects[i] = UInt(bitPattern: try #require(allocate(size))) }
        let pointers = UInt(bitPattern: objects)
        onThreads(1) { _ in
            let objects = UnsafeMutablePointer<UInt>(bitPattern: pointers)!
            var warm = [allocate(size)]
            let cache = processCaches.currentCache()!
            while cache.spans.lastRefill(cls).pointee == 0 || !cache.bin(cls).pointee.isEmpty { warm.append(allocate(size)) }
            precondition(cache.bin(cls).pointee.isEmpty && cache.remoteBin(cls).pointee.isEmpty)
            for i in 0..<count { deallocate(UnsafeMutableRawPointer(bitPattern: objects[i])) }
            for i in 0..<count { objects[count + i] = UInt(bitPattern: allocate(size)) }
            for object in warm { deallocate(object) }
        }
        var got: [Int] = []
        for i in 0..<count {
            var index = -1
            for j in 0..<count where objects[count + i] == objects[j] { index = j }
            got.append(index)
        }
        for i in 0..<count { deallocate(UnsafeMutableRawPointer(bitPattern: objects[count + i])) }
        return (sharesLines, got)
    }

    /// Objects whose size is a multiple of a cache line never share one, so a thread
    /// that frees other threads' objects of such a class takes them back itself, newest
    /// first, when its bin runs empty, while their lines are still in its caches.
    @Test func remoteFreedObjectsThatShareNoLineRefillTheFreeingThreadsBin() throws {
        let (sharesLines, got) = try reuseAfterRemoteFrees(size: 1_500, count: 20)
        #expect(!sharesLines)
        #expect(got == Array((0..<20).reversed()))
    }

    /// Objects that can share a cache line with their neighbours are never reused by the
    /// thread that freed them remotely (passive false sharing): they go back to their span.
    @Test func remoteFreedObjectsThatShareLinesAreNotReusedByTheFreeingThread() throws {
        let (sharesLines, got) = try reuseAfterRemoteFrees(size: 170, count: 20)
        #expect(sharesLines)
        #expect(got == Array(repeating: -1, count: 20))
    }

    /// Every bin's and remote bin's guard words are zero when a thread's cache is made,
    /// whether its record is new (whose guard words are left unwritten, so that its slot
    /// pages stay untouched) or reused from an exited thread after every bin of that
    /// thread was filled and flushed: free's double-free check reads them as the four
    /// latest pushes of an empty bin, and must never find an object there.
    @Test func binGuardWordsAreZeroInNewAndReusedCaches() {
        let dirty = SharedCounter()
        for _ in 0..<3 {
            onThreads(2) { _ in
                let cache = processCaches.currentCache()!
                let classes = heap.pointee.classes
                var nonzero = 0
                for cls in 1..<classes.count {
                    for bin in [cache.bin(cls), cache.remoteBin(cls)] {
                        let slots = bin.pointee.slots
                        for k in 1...binGuardWords where slots[-k] != 0 { nonzero += 1 }
                    }
                }
                dirty.add(nonzero)
                // Fill every class's bins past their capacity (flushes), so that a later
                // reuse of this record finds written slot arrays.
                for cls in 1..<classes.count {
                    let size = UInt(classes.info[cls].size)
                    var kept: [UnsafeMutableRawPointer] = []
                    for _ in 0..<(Int(cacheCapacity(objectSize: size)) + 2) { kept.append(allocate(size)!) }
                    for p in kept { deallocate(p) }
                }
            }
        }
        #expect(dirty.value == 0)
    }

    /// Thousands of short-lived threads: each exit flushes and retires its cache, so
    /// the number of live caches and of cache records does not grow.
    @Test func exitedThreadsLeaveNoCachesBehind() { threadCensus.exclusive {
        spawnAndJoin(1) { _ in deallocate(allocate(10)) }  // warm the pool
        let liveBefore = processCaches.pointee.liveCount
        let recordsBefore = processCaches.pointee.pool.inUse
        let objectsBefore = (heap.pointee.centrals + heap.pointee.classes.sizeClass(of: 200)).pointee.allocatedObjects
        for _ in 0..<50 {
            spawnAndJoin(20) { _ in
                var kept: [UnsafeMutableRawPointer] = []
                for i in 0..<300 { kept.append(allocate(UInt(200 - i % 8))!) }
                for p in kept { deallocate(p) }
            }
        }
        #expect(processCaches.pointee.liveCount <= liveBefore + 2)
        #expect(processCaches.pointee.pool.inUse <= recordsBefore + 2)
        let objectsAfter = (heap.pointee.centrals + heap.pointee.classes.sizeClass(of: 200)).pointee.allocatedObjects
        #expect(objectsAfter <= objectsBefore + 256, "objects of exited threads went back to the central list")
    } }

    /// Runs `body` with the process's caches parked on exit, at most `limit` of them (the
    /// test process parks none otherwise: parkingOffInTests), holding the census
    /// exclusively; none is parked before or after. Two more threads with caches live
    /// meanwhile: an exit that leaves at most one cache live (the program back to one
    /// thread) flushes every parked cache (Scavenger.finishAfterThreadsExited). It holds
    /// the process scavenger's runner lock, so that no tick drains the parked caches
    /// meanwhile (the tests make the drains), and the threads' caches it parks read a
    /// dropping-phase word of their own (parkable): the process's is raised whenever the
    /// other suites' frees look like a phase dropped, and a cache is not parked then.
    func withParking(limit: UInt, _ body: () throws -> Void) rethrows {
        try threadCensus.exclusive { try whileThreadsLive(2) {
            parkingOffInTests
            let runnerLock = processScavenger.pointer(to: \.runner.lock)!
            runnerLock.lock()
            defer { runnerLock.unlock() }
            processCaches.drainParkedCaches(all: true)
            processCaches.pointee.parkLimit = limit
            defer {
                processCaches.pointee.parkLimit = 0
                processCaches.drainParkedCaches(all: true)
            }
            try body()
        } }
    }

    /// A thread that exits parks its cache whole, objects, spans and grown bins, and the
    /// next thread to allocate takes it as it is, with no refill (a thread per task
    /// costed each thread a refill and a flush per class it used, under the class's
    /// central lock: 36% of `tasks`' time was SwiftHeap's, most of it there).
    @Test func anExitingThreadParksItsCacheWholeAndTheNextThreadTakesIt() { withParking(limit: 2) {
        let size: UInt = 304  // a class no other test uses
        let cls = heap.pointee.classes.sizeClass(of: size)
        let central = heap.pointee.centrals + cls
        let objectsBefore = central.pointee.allocatedObjects
        let first = SharedSlots(capacity: 3)
        defer { first.slots.deallocate() }
        spawnAndJoin(1) { _ in
            var kept: [UnsafeMutableRawPointer] = []
            for _ in 0..<10 { kept.append(allocate(size)!) }
            for p in kept { deallocate(p) }
            let cache = parkable()
            first.slots[0] = UnsafeMutableRawPointer(cache)
            first.slots[1] = UnsafeMutableRawPointer(bitPattern: UInt(cache.bin(cls).pointee.count))
            first.slots[2] = UnsafeMutableRawPointer(bitPattern: cache.header.pointee.refills)
        }
        let parked = processCaches.pointee.parked
        #expect(processCaches.pointee.parkedCount == 1)
        #expect(parked.map(UnsafeMutableRawPointer.init) == first.slots[0])
        let cachedAtExit = UInt(bitPattern: first.slots[1])
        #expect(cachedAtExit >= 10, "the thread's frees stayed in its bin")
        #expect(central.pointee.allocatedObjects >= objectsBefore + cachedAtExit, "a parked cache keeps its objects")
        spawnAndJoin(1) { _ in
            let p = allocate(size)!
            let cache = processCaches.currentCache()!
            #expect(UnsafeMutableRawPointer(cache) == first.slots[0], "the next thread took the parked cache")
            #expect(UInt(cache.bin(cls).pointee.count) == cachedAtExit - 1, "and its first malloc popped its bin")
            #expect(cache.header.pointee.refills == UInt(bitPattern: first.slots[2]), "with no refill")
            deallocate(p)
        }
        #expect(processCaches.pointee.parkedCount == 1)
        #expect(processCaches.drainParkedCaches(all: true) == 1)
        #expect(processCaches.pointee.parkedCount == 0 && processCaches.pointee.parked == nil)
        #expect(central.pointee.allocatedObjects <= objectsBefore, "the drain flushed the parked cache's objects")
    } }

    /// The calling thread's cache, which reads a lowered dropping-phase word from now on
    /// (withParking).
    @discardableResult func parkable() -> UnsafeMutablePointer<ThreadCache> {
        let cache = processCaches.currentCache()!
        cache.header.pointee.droppingPhase = ThreadCacheTests.loweredPhaseWord
        return cache
    }
    static let loweredPhaseWord: UnsafeMutablePointer<UInt32> = {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        word.initialize(to: 0)
        return word
    }()

    /// Starts `count` threads that each allocate and free an object of 304 bytes while all
    /// of them hold a cache, and joins them: `count` caches exit at once.
    func exitTogether(_ count: Int) {
        let allocated = SharedCounter()
        spawnAndJoin(count) { _ in
            let p = allocate(304)
            parkable()
            allocated.add(1)
            while allocated.value < count { usleep(100) }
            deallocate(p)
        }
    }

    /// A new thread takes the cache parked last by a thread that exited on its CPU, if
    /// any: its lines are likelier in that CPU's caches (`tasks` ran in 0.96x the CPU time
    /// of taking the last parked, 15 paired runs). Threads pinned to CPUs 0 and then 1
    /// park theirs; a thread on CPU 0 takes the first, not the last parked.
    @Test(.enabled(if: sh_current_cpu() >= 0 && ThreadCacheTests.onlineCPUs() >= 2 && ThreadCacheTests.pinToCPU != nil))
    func aNewThreadTakesTheCacheParkedOnItsCPU() { withParking(limit: 4) {
        let caches = SharedSlots(capacity: 3)
        defer { caches.slots.deallocate() }
        let pin = { (cpu: Int) in
            var mask: UInt64 = 1 << UInt64(cpu)
            precondition(ThreadCacheTests.pinToCPU!(0, MemoryLayout<UInt64>.size, &mask) == 0)
            precondition(sh_current_cpu() == Int32(cpu))
        }
        let allocated = SharedCounter()
        spawnAndJoin(2) { cpu in
            pin(cpu)
            deallocate(allocate(304))
            caches.slots[cpu] = UnsafeMutableRawPointer(parkable())
            allocated.add(1)
            while allocated.value < 2 { usleep(100) }
            if cpu == 1 {  // exits once the thread on CPU 0 has parked its cache
                var waited = 0
                while processCaches.pointee.parkedCount == 0 && waited < 5_000 { usleep(1000); waited += 1 }
            }
        }
        #expect(processCaches.pointee.parkedCount == 2)
        #expect(processCaches.pointee.parked.map(UnsafeMutableRawPointer.init) == caches.slots[1], "CPU 1's parked last")
        spawnAndJoin(1) { _ in
            pin(0)
            deallocate(allocate(304))
            caches.slots[2] = UnsafeMutableRawPointer(processCaches.currentCache()!)
        }
        #expect(caches.slots[2] == caches.slots[0], "the thread on CPU 0 took the cache parked there")
    } }
    static func onlineCPUs() -> Int { sysconf(Int32(_SC_NPROCESSORS_ONLN)) }
    /// sched_setaffinity (a GNU name, which Swift's Glibc does not show): pid 0 is the caller.
    static let pinToCPU: (@convention(c) (Int32, Int, UnsafeRawPointer) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int, UnsafeRawPointer) -> Int32).self)
    }()

    /// A cache parked waits for at most two scavenger ticks: a drain (the tick's) keeps
    /// the caches parked since the previous drain and flushes the ones parked before it.
    @Test func aDrainFlushesTheCachesParkedBeforeThePreviousDrain() { withParking(limit: 4) {
        let exitOne = { spawnAndJoin(1) { _ in
            deallocate(allocate(304))
            parkable()
        } }
        exitOne()
        #expect(processCaches.pointee.parkedCount == 1)
        #expect(processCaches.drainParkedCaches(all: false) == 0, "parked since the last drain: kept")
        exitOne()  // takes the parked cache and parks it again, after the drain
        exitOne()
        #expect(processCaches.pointee.parkedCount == 1)
        exitTogether(2)  // one takes it, the other makes one
        #expect(processCaches.pointee.parkedCount == 2)
        #expect(processCaches.drainParkedCaches(all: false) == 0)
        #expect(processCaches.drainParkedCaches(all: false) == 2, "parked before the previous drain: flushed")
        #expect(processCaches.pointee.parkedCount == 0)
    } }

    /// At most parkLimit caches are parked; the others flush at exit, as does a cache
    /// that holds more than parkMaxCachedBytes of objects.
    @Test func parkingIsBoundedInCachesAndInTheBytesEachHolds() { withParking(limit: 2) {
        exitTogether(5)
        #expect(processCaches.pointee.parkedCount == 2)
        processCaches.drainParkedCaches(all: true)
        spawnAndJoin(1) { _ in
            parkable()
            // Full bins of big classes: 32 KiB of objects each, past the limit in all.
            var size: UInt = 2048
            var cached: UInt = 0
            while cached <= parkMaxCachedBytes && size <= maxSmallSize {
                let count = Int(cacheCapacity(objectSize: size))
                var kept: [UnsafeMutableRawPointer] = []
                for _ in 0..<count { kept.append(allocate(size)!) }
                for p in kept { deallocate(p) }
                cached = processCaches.currentCache()!.cachedBytes()
                size += 1024
            }
            #expect(cached > parkMaxCachedBytes)
        }
        #expect(processCaches.pointee.parkedCount == 0, "a cache holding \(parkMaxCachedBytes) bytes or more flushed")
    } }

    /// The premise of the count above: `onThreads` returns only once its threads have
    /// run their key destructors (where a cache is retired), even slow ones. (It used to
    /// wait for the bodies only, and the count failed on a loaded machine.)
    @Test func onThreadsReturnsAfterTheThreadsKeyDestructorsRan() {
        let exited = SharedCounter()
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, { counter in
            usleep(20_000)
            Unmanaged<SharedCounter>.fromOpaque(counter!).takeUnretainedValue().add(1)
        }) == 0)
        defer { pthread_key_delete(key) }
        let counter = UInt(bitPattern: Unmanaged.passUnretained(exited).toOpaque())
        let threadKey = key
        onThreads(4) { _ in _ = pthread_setspecific(threadKey, UnsafeRawPointer(bitPattern: counter)) }
        #expect(exited.value == 4)
    }

    /// Producer/consumer: one thread allocates, another frees. The consumer's frees go
    /// back to the spans in batches, so the class's spans do not grow with the number of
    /// objects passed. (A size no other test uses: tests run in parallel.)
    @Test func producerConsumerMemoryIsBounded() {
        let size: UInt = 12_000
        let rounds = 30, perRound = 2_000
        let central = heap.pointee.centrals + heap.pointee.classes.sizeClass(of: size)
        func runRounds(_ n: Int) {
            for _ in 0..<n {
                let box = SharedSlots(capacity: perRound)
                defer { box.slots.deallocate() }
                onThreads(1) { _ in for i in 0..<perRound { box.slots[i] = allocate(size) } }
                onThreads(1) { _ in for i in 0..<perRound { deallocate(box.slots[i]) } }
            }
        }
        runRounds(2)
        let spansBefore = central.pointee.spanCount
        runRounds(rounds)
        let spansAfter = central.pointee.spanCount
        let perSpan = Int(heap.pointee.classes.info[heap.pointee.classes.sizeClass(of: size)].objects)
        #expect(Int(spansAfter) <= Int(spansBefore) + 256 / perSpan + 2,
                "\(spansBefore) spans before, \(spansAfter) after passing \(rounds * perRound) objects")
    }
}
