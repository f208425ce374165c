// Thread caches: per thread, per size class, a stack of free objects (Go's mcache,
// tcmalloc's thread cache), reached through the shim's one-pointer initial-exec
// thread-local slot.
//
// malloc and free of a small object touch only the calling thread's cache: no lock,
// no atomic. A bin is an array of object addresses and a pointer to its top, kept in
// the cache record, not a list linked through the objects: the fast path reads and
// writes no user memory, and a use-after-free write cannot redirect it. When a bin is
// empty, a refill moves half a bin's worth of objects from the class's central list;
// when it is full, a flush moves the older half back. A thread's first objects of a
// class come in smaller batches, so that a thread that allocates a few objects of many
// sizes costs a few cache lines per size, not pages: where many threads run, its first
// refills of the class (starterRefillsPerClass) take one line group each from a span
// the threads share (Central.swift), the next a few objects (firstRefillObjects) of a
// span of its own, and its bins start in small slot arrays that lie together in the
// record (startBinCapacity, BinArrays), moving to their full arrays once the thread
// uses the class more, where each refill (or full bin) doubles them up to the class's
// capacity (grow). Objects freed by a thread other than the one that allocated
// them simply land in the freeing thread's cache and travel back through the central
// lists in batches, so cross-thread frees take no lock per object, and a
// producer/consumer pattern is bounded by the bins' capacity.
//
// Frees of objects from a span another thread's cache is drawing from go to a small
// per-class remote bin instead, which is flushed to the central list in batches. Where
// objects can share a cache line, the freeing thread never reuses them: that would
// interleave two threads' objects on the same lines (passive false sharing, as in
// Hoard's tests). Where they cannot (a class whose size is a multiple of a line), an
// empty bin refills from the remote bin's newest objects first: their lines are still
// in the freeing thread's caches, and they skip the central list both ways (larson and
// xthread, whose threads free each other's objects, ran 5% faster: medians of the
// paired ratios of 15 interleaved runs). A span's owner is the cache that last refilled
// from it; the check is one compare on a cache line the free path reads anyway.
// Adopting more would be faster and break the rule: refilling from the remote bin for
// every class of a line or more (whose objects share only their end lines) ran larson
// in 0.85x the time, for every class 0.79x (tcmalloc, which reuses every object where
// it is freed, 0.70x), and xthread, whose objects are mostly under a line, in 0.97x
// (CPU time, medians of 10 paired runs). Adopting only whole groups of objects that
// share lines among themselves (lcm(size, 64) bytes from the span's base) would keep
// the lines private, but a duplicate of an adopted object left in the remote bin (a
// double free deeper than the recent compares reach) would then be released as free
// while in use, where today its release finds its bit set and reports it.
//
// When a thread exits (a pthread key destructor), its cache is parked whole, bins, spans
// and all, for the next thread that makes a cache, which takes it as it is (LIFO); or,
// if parkLimit caches are parked already, if it holds more than parkMaxCachedBytes of
// objects, or while the program drops a phase, flushed and retired. A program that
// starts a thread per task used to pay a refill per class its thread used and a flush
// of each at its exit, under the class's central lock, which the two cores' threads
// took in turn (`tasks`: 36% of its time was SwiftHeap's, its lock's cache line moving
// between the cores most of it): parked, the next thread starts where the last left
// off, with no lock per class (`tasks` in 0.89x the CPU time, 15 paired runs). A parked
// cache is no thread's, and waits at most two scavenger ticks: each tick flushes the
// caches parked before the previous one (drainParkedCaches), and all go when the
// program is back to one thread (Scavenger.finishWork), at malloc_trim, when an
// allocation finds no memory, and when a phase starts being dropped. Parked caches
// count as no thread (liveCount: starter refills, the scavenger's thread census).
//
// From its exit on, the thread's slot points at the no-cache record, whose bins
// all have capacity 0, so every malloc and free of that thread (other destructors', in
// this round or later ones, and glibc's own after them) takes the locked path straight
// to the central lists — without a test on the fast path. (The key used to be re-armed
// for every destructor round, to cache those few calls: three more flushes of every bin,
// and three more rounds of glibc's walk of every key, cost a thread per task a sixth of
// its allocator instructions.) Before its first malloc, a thread's slot holds the shim's
// read-only zeros (swiftheap_no_cache_yet), where every bin reads as empty and full: the
// fast paths send it to the slow path, which takes a parked cache or makes one, again
// without a test of their own (the slow paths see no cache: sh_tls_get). Records of
// retired caches are reused.
//
// The record (ThreadCache) is typed: its bins come first, so that the fast path finds a
// class's bin at a constant offset from the record's address; the slot arrays follow the
// record in the same allocation. The registry (CacheRegistry) is an instance made with
// the size classes and the central lists it moves objects to and from; each record
// points back at its registry, so that the thread-exit destructor needs nothing global.
//
// Locking: the registry's lock (rank cacheRegistry) guards the record pool, the live list
// and the parked list; a record's bins belong to its thread alone (the destructor runs
// on that thread), a parked record's to no one until a thread takes it off the list, or
// a drain does and flushes it.

import CShim

struct CacheBin {
    /// The slot the next push writes: the bin's objects are the words from the start of
    /// its slot array up to here (`slots[0..<count]`). The fast paths move it and read
    /// or write the word next to it, and nothing else of the bin.
    var top: UnsafeMutablePointer<UInt>
    /// The low 32 bits of `top`'s address when the bin is empty (the slot array's
    /// start) and when it is full (its end). The fast paths compare the low half of
    /// `top` with one of them: a slot array is far smaller than 4 GiB, so the low halves
    /// of two of its addresses are equal only if the addresses are. A bin of capacity 0
    /// is empty and full at once, so that both fast paths send it to the slow path.
    var emptyMark: UInt32
    var fullMark: UInt32

    /// A bin of `capacity` slots at `slots`, holding `count` objects.
    init(slots: UnsafeMutablePointer<UInt>, capacity: UInt32, count: UInt32 = 0) {
        top = slots + Int(count)
        emptyMark = CacheBin.mark(slots)
        fullMark = CacheBin.mark(slots + Int(capacity))
    }

    /// The low half of a slot address, as the marks hold it.
    @inline(__always) static func mark(_ slot: UnsafeMutablePointer<UInt>) -> UInt32 {
        UInt32(truncatingIfNeeded: UInt(bitPattern: slot))
    }

    @inline(__always) var isEmpty: Bool { CacheBin.mark(top) == emptyMark }
    @inline(__always) var isFull: Bool { CacheBin.mark(top) == fullMark }

    /// Objects in the bin. Setting it moves `top`.
    var count: UInt32 {
        @inline(__always) get { (CacheBin.mark(top) &- emptyMark) / UInt32(MemoryLayout<UInt>.stride) }
        @inline(__always) set { top = slots + Int(newValue) }
    }

    /// Slots in the bin.
    var capacity: UInt32 { (fullMark &- emptyMark) / UInt32(MemoryLayout<UInt>.stride) }

    /// The start of the slot array.
    var slots: UnsafeMutablePointer<UInt> {
        @inline(__always) get { top - Int(count) }
    }
}

/// Zero words in front of every bin's slot array (CacheBin.slots), never written, so
/// that free's double-free check reads the four words below `top` without a test of
/// the count (Free.swift: looksFreed).
let binGuardWords = 4

/// Per-thread fields that follow the bins.
struct CacheHeader {
    /// The registry this cache belongs to.
    var registry: UnsafeMutablePointer<CacheRegistry>
    /// Links in the registry's list of live caches (registry lock).
    var next: UnsafeMutablePointer<ThreadCache>?
    var previous: UnsafeMutablePointer<ThreadCache>?
    /// True for the shared no-cache record.
    var isNoCache: Bool
    /// The page heap's events.droppingPhase word, which the large cache reads before it
    /// keeps a span (LargeCache.swift: put); nil in the no-cache record, which keeps none.
    var droppingPhase: UnsafeMutablePointer<UInt32>?
    /// The page heap's stats.spanBytes, written under its lock and read racily by the
    /// large cache for its budget (LargeCache.swift: largeCacheBudget); in the no-cache
    /// record too, which keeps nothing whatever it reads.
    var heapSpanBytes: UnsafeMutablePointer<UInt64>
    /// Refills and flushes this thread has made: the slow-path entries of the thread
    /// cache. Tests use them to see that the fast path takes no slow path.
    var refills: UInt
    var flushes: UInt
    /// This thread's countdown to its next heap-profile sample (ProfileSampler.swift);
    /// its thread alone reads and writes it, and never in the no-cache record.
    var profile: ProfileThreadState
    /// Per class, the starter refills this cache has made (refillBin; at most
    /// starterRefillsPerClass; a cache made while fewer than the registry's
    /// starterMinCaches were live starts at the most, and makes none, as do the classes
    /// of objects above starterMaxObjectSize). Its thread alone reads and writes them.
    var starterRefills: InlineArray<80, UInt8>
    /// While the cache is parked (CacheRegistry.park): the registry's parkDrains when it
    /// was parked, and the CPU its thread exited on. Registry lock.
    var parkedAt: UInt = 0
    var parkedCPU: Int32 = -1
}

/// A thread's cache record (see the file comment). Never constructed as a value: it is
/// laid out in memory from the registry's pool and its fields initialised in place.
struct ThreadCache {
    var bins: InlineArray<80, CacheBin>
    var remoteBins: InlineArray<80, CacheBin>
    var header: CacheHeader
    /// The partial spans this cache draws from, per class (the central lists' business:
    /// Central.swift). Zero in a fresh record; a retired record's lists of the classes it
    /// refilled are closed (disownSpans; the others are empty) and stay so in the pool,
    /// which does not zero reused records: the central lists open them again under their
    /// locks.
    var spans: OwnedSpans
    /// Free large spans kept for this thread (LargeCache.swift). Zero in a fresh record,
    /// empty in a retired one (its exit drained it).
    var large: LargeCache
}

/// The most objects a cache's first refill of a class takes (a thread that has just
/// started, or has not used the class before); later refills take what they ask. A
/// thread that allocates a few objects of many sizes, and exits (a thread per task),
/// then moves a few objects of each class to its bin and back to its spans at its exit,
/// not half a bin of each: 2000 threads of 40 sizes took 148k instructions each in the
/// allocator, 47k of them moving objects there and back (callgrind). Four rather than
/// eight: 3.5k fewer instructions a thread there (68.6M against 75.7M for the 2000); a
/// thread that goes on to use the class refills once more, and its bin then moves to its
/// full array, at twice the start array's capacity (grow).
let firstRefillObjects = 4

/// A cache's first refills of a class are starter refills (Central.refillStarter): each
/// takes one line group of objects from a span the class's caches share, rather than
/// objects of a span of the cache's own. A thread that allocates a few objects of many
/// sizes then adds a few lines per size to the heap, not an OS page or two of a span of
/// its own per size: 1000 threads of 20 sizes each took 76 MB of spans, against glibc's
/// 19 MB for the whole process (Tests/c/thread_burst.c). The lines of a group hold no
/// other object, so two threads' objects still never share a line.
///
/// A process that uses them has a shared span per class besides its threads' own, which
/// a program with a few threads pays for and does not gain from (sqlite, one thread:
/// 0.3 MB more peak RSS of its 58): a cache makes them only if starterMinCaches caches
/// were live when it was made, so that programs with fewer threads allocate as before.
let starterRefillsPerClass: UInt8 = 2

/// The live caches (threads that have allocated) from which a new cache makes starter
/// refills (CacheRegistry.starterMinCaches).
let defaultStarterMinCaches: UInt = 8

/// The biggest objects starter refills serve. A thread's first objects of a bigger class
/// come from a span of its own: each such object fills OS pages of its own anyway, and
/// starter objects, freed into the remote bin (a shared span has no owner), left the
/// thread caching a second batch of big objects beside its bin's (a Python thread pool
/// of 64 threads peaked at 78 MB against 62 without starter refills, 30 MB of it cached
/// in the threads against 18).
let starterMaxObjectSize: UInt = 1024

/// The capacity of a bin in its start array (BinArrays): a cache's bins of every class
/// start there, in a few pages of the record shared by all classes, and move to their
/// full arrays (cacheCapacity) when the thread uses the class beyond a first batch (a
/// second refill, or a full bin: grow, growRemoteToFull). The full arrays of a class
/// (two arrays of up to 128 words, some 2 KiB) lie pages apart from the next class's, so
/// a thread that took a few objects of 20 sizes touched 13 pages of them (1000 such
/// threads: 53 MB of records resident, Tests/c/thread_burst.c); their start arrays fit
/// in 2.
let startBinCapacity: UInt32 = 8

/// The capacity of a bin: 32 KiB of objects, between 2 and 128 objects. Bins of big
/// classes stay small so that an idle thread's cache holds little memory (every class
/// full is about 2.5 MiB); their objects are big enough that a lock per object or two
/// is cheap next to what the program does with them.
func cacheCapacity(objectSize: UInt) -> UInt32 {
    let byBytes = (32 << 10) / objectSize
    return UInt32(min(128, max(2, byBytes)))
}

/// The capacity of a remote bin: a batch for the central list, as many objects as the
/// class's bin holds. Each flush of a remote bin moves the class's central lock, its
/// record and the span records of the batch between the freeing thread's core and the
/// owner's, so a bigger batch pays for them over more objects: with half a bin's
/// capacity, xthread (90% remote frees) took 7% longer in wall time (medians of 15
/// interleaved runs; its times are bimodal on two shared cores, so fewer runs can
/// say either way), larson 2%, while cachegrind counts only 2-4 more instructions per
/// operation; twice a bin saved a little more on xthread but cost prodcons 6% and
/// more peak RSS.
func remoteCapacity(objectSize: UInt) -> UInt32 {
    cacheCapacity(objectSize: objectSize)
}

/// Pooled cache records that keep their slot arrays resident (CacheRegistry.freeRecord).
let residentIdleRecords: UInt = 16

/// The most caches of exited threads kept whole for new threads (CacheRegistry.park).
let defaultParkLimit: UInt = 4

/// The most bytes of objects a cache may hold in its bins to be parked: parkLimit of
/// them hold at most 1 MiB for at most two tick periods. A thread that used more flushes
/// as it exits; its exit is no longer what it costs.
let parkMaxCachedBytes: UInt = 256 << 10

extension UnsafeMutablePointer where Pointee == ThreadCache {
    /// The record the thread-local slot holds.
    @inline(__always) init(slot: UnsafeMutableRawPointer) { self = slot.assumingMemoryBound(to: ThreadCache.self) }

    /// The bin of class `sizeClass`.
    @inline(__always) func bin(_ sizeClass: Int) -> UnsafeMutablePointer<CacheBin> {
        bin(atOffset: cacheBinOffset(ofClass: sizeClass))
    }

    /// The remote bin of class `sizeClass`.
    @inline(__always) func remoteBin(_ sizeClass: Int) -> UnsafeMutablePointer<CacheBin> {
        remoteBin(atOffset: cacheBinOffset(ofClass: sizeClass))
    }

    /// The bin at `offset` (cacheBinOffset(ofClass:) of its class): what the fast paths use,
    /// with the offset read from the size-class table (malloc) or the span (free).
    @inline(__always) func bin(atOffset offset: Int) -> UnsafeMutablePointer<CacheBin> {
        (UnsafeMutableRawPointer(self) + offset).assumingMemoryBound(to: CacheBin.self)
    }

    /// The remote bin at `offset` (cacheBinOffset(ofClass:) of its class).
    @inline(__always) func remoteBin(atOffset offset: Int) -> UnsafeMutablePointer<CacheBin> {
        (UnsafeMutableRawPointer(self) + MemoryLayout<ThreadCache>.offset(of: \.remoteBins)! + offset)
            .assumingMemoryBound(to: CacheBin.self)
    }

    /// The slot array at `offset` from the record's address (BinArrays).
    @inline(__always) func slotArray(at offset: UInt32) -> UnsafeMutablePointer<UInt> {
        (UnsafeMutableRawPointer(self) + Int(offset)).assumingMemoryBound(to: UInt.self)
    }

    @inline(__always) var header: UnsafeMutablePointer<CacheHeader> { pointer(to: \.header)! }
    @inline(__always) var spans: UnsafeMutablePointer<OwnedSpans> { pointer(to: \.spans)! }

    /// The central list of class `sizeClass` of this cache's registry.
    @inline(__always) func central(_ sizeClass: Int) -> UnsafeMutablePointer<Central> {
        header.pointee.registry.pointee.centrals + sizeClass
    }
}

/// Where a class's bins keep their objects in every cache record: the offsets from the
/// record's address of the bin's and the remote bin's start arrays and full arrays, each
/// behind binGuardWords zero words, and the full arrays' capacities. A class whose full
/// capacity is startBinCapacity or less has no start array: its start offsets are its
/// full ones. Class 0 and the classes past the table have none (their bins have
/// capacity 0).
struct BinArrays {
    var binStart: UInt32 = 0
    var binFull: UInt32 = 0
    var remoteStart: UInt32 = 0
    var remoteFull: UInt32 = 0
    var binCapacity: UInt32 = 0
    var remoteCapacity: UInt32 = 0

    /// Lays out the slot arrays of every class of `classes` after a record: the bins'
    /// start arrays, then the remote bins', then the full arrays class by class. Returns
    /// the record's size with its arrays.
    static func layOut(_ arrays: inout InlineArray<80, BinArrays>, classes: SizeClassTable) -> UInt {
        let word = UInt32(MemoryLayout<UInt>.stride)
        let guardBytes = UInt32(binGuardWords) &* word
        var offset = UInt32(MemoryLayout<ThreadCache>.stride)
        for cls in 1..<classes.count {
            let size = UInt(classes.info[cls].size)
            arrays[cls].binCapacity = cacheCapacity(objectSize: size)
            arrays[cls].remoteCapacity = SwiftHeap.remoteCapacity(objectSize: size)
        }
        for cls in 1..<classes.count where arrays[cls].binCapacity > startBinCapacity {
            arrays[cls].binStart = offset &+ guardBytes
            offset &+= guardBytes &+ startBinCapacity &* word
        }
        for cls in 1..<classes.count where arrays[cls].remoteCapacity > startBinCapacity {
            arrays[cls].remoteStart = offset &+ guardBytes
            offset &+= guardBytes &+ startBinCapacity &* word
        }
        for cls in 1..<classes.count {
            arrays[cls].binFull = offset &+ guardBytes
            offset &+= guardBytes &+ arrays[cls].binCapacity &* word
            arrays[cls].remoteFull = offset &+ guardBytes
            offset &+= guardBytes &+ arrays[cls].remoteCapacity &* word
            if arrays[cls].binStart == 0 { arrays[cls].binStart = arrays[cls].binFull }
            if arrays[cls].remoteStart == 0 { arrays[cls].remoteStart = arrays[cls].remoteFull }
        }
        return UInt(offset)
    }

    /// The capacity of a bin in its start array, for a class whose full array holds `full`.
    func startCapacity(full: UInt32) -> UInt32 { min(full, startBinCapacity) }
}

/// All thread caches: the record pool, the live list, the no-cache record and the
/// thread-exit key.
struct CacheRegistry {
    /// Guards the pool and the live list.
    var lock = Mutex(rank: .cacheRegistry)
    var pool: FixAlloc
    var live: UnsafeMutablePointer<ThreadCache>? = nil
    /// Guarded by the lock; read racily by the large cache for its budget
    /// (liveCountWord).
    var liveCount: UInt = 0
    /// A cache made while at least this many were live makes starter refills
    /// (starterRefillsPerClass); tests lower it.
    var starterMinCaches: UInt = defaultStarterMinCaches
    var noCache: UnsafeMutablePointer<ThreadCache>
    var key: pthread_key_t = 0
    var keyCreated: Bool = false
    /// Records in the pool (retired, not yet reused); the first residentIdleRecords of
    /// them keep their slot arrays resident (freeRecord).
    var idleRecords: UInt = 0
    /// Caches of exited threads kept whole for the next new threads (park), the most
    /// recently parked first, linked through their headers' `next`; parkedCount of them,
    /// at most parkLimit (tests change it; 0: none are parked).
    var parked: UnsafeMutablePointer<ThreadCache>? = nil
    var parkedCount: UInt = 0
    var parkLimit: UInt = defaultParkLimit
    /// Calls of drainParkedCaches so far: a cache parked before the last of them is
    /// flushed by the next (CacheHeader.parkedAt).
    var parkDrains: UInt = 0
    /// Called by the thread-exit destructor once a cache is retired, holding no lock, with
    /// the number of live caches left: the layer above gives the scavenger its chance
    /// there, as after any slow path (set by the heap's bootstrap; nil in tests).
    var afterThreadExit: (@convention(c) (UInt) -> Void)? = nil
    /// The size classes and their central lists.
    var classes: SizeClassTable
    var centrals: UnsafeMutablePointer<Central>
    /// The page heap the large caches return spans to (LargeCache.swift).
    var pageHeap: UnsafeMutablePointer<PageHeap>
    /// Per class, where its bins' slot arrays lie in each record (BinArrays.layOut).
    var binArrays = InlineArray<80, BinArrays>(repeating: BinArrays())
    /// What a new cache's CacheHeader.starterRefills start at when it makes starter
    /// refills: 0 for the classes of at most starterMaxObjectSize bytes, else
    /// starterRefillsPerClass (none).
    var starterCounts = InlineArray<80, UInt8>(repeating: starterRefillsPerClass)

    /// Makes the registry at `p` (stable memory) for `classes`, moving objects to and
    /// from `centrals` and large spans to `pageHeap`. Returns false if metadata memory is
    /// exhausted.
    static func initialize(_ p: UnsafeMutablePointer<CacheRegistry>, classes: SizeClassTable,
                           centrals: UnsafeMutablePointer<Central>, pageHeap: UnsafeMutablePointer<PageHeap>) -> Bool {
        var binArrays = InlineArray<80, BinArrays>(repeating: BinArrays())
        let recordBytes = BinArrays.layOut(&binArrays, classes: classes)
        var starterCounts = InlineArray<80, UInt8>(repeating: starterRefillsPerClass)
        for cls in 1..<classes.count where UInt(classes.info[cls].size) <= starterMaxObjectSize { starterCounts[cls] = 0 }
        // The no-cache record: every bin has count and capacity 0, and a slot array of
        // one word, behind its guard words, that is never written (capacity 0 sends every
        // push to the slow path). persistentAlloc's memory is zeroed.
        let guardBytes = UInt(binGuardWords) &* 8
        guard let noCacheMemory = persistentAlloc(UInt(MemoryLayout<ThreadCache>.stride) &+ guardBytes &+ 8,
                                                  alignment: 64) else { return false }
        let noCache = noCacheMemory.bindMemory(to: ThreadCache.self, capacity: 1)
        let dummySlot = (noCacheMemory + Int(UInt(MemoryLayout<ThreadCache>.stride) &+ guardBytes))
            .assumingMemoryBound(to: UInt.self)
        for cls in 0..<maxSizeClasses {
            noCache.bin(cls).initialize(to: CacheBin(slots: dummySlot, capacity: 0))
            noCache.remoteBin(cls).initialize(to: CacheBin(slots: dummySlot, capacity: 0))
        }
        noCache.header.initialize(to: CacheHeader(registry: p, next: nil, previous: nil, isNoCache: true,
                                                  droppingPhase: nil,
                                                  heapSpanBytes: pageHeap.heapSpanBytesWord, refills: 0, flushes: 0,
                                                  profile: ProfileThreadState(),
                                                  starterRefills: InlineArray(repeating: starterRefillsPerClass)))
        p.initialize(to: CacheRegistry(pool: FixAlloc(recordBytes: recordBytes, zeroOnReuse: false), noCache: noCache,
                                       classes: classes, centrals: centrals, pageHeap: pageHeap,
                                       binArrays: binArrays, starterCounts: starterCounts))
        return true
    }
}

extension UnsafeMutablePointer where Pointee == CacheRegistry {
    /// liveCount as a word for racy reads (the large cache's budget).
    @inline(__always) var liveCountWord: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(pointer(to: \.liveCount)!).assumingMemoryBound(to: UInt64.self)
    }

    @inline(__always) var lockPointer: UnsafeMutablePointer<Mutex> { pointer(to: \.lock)! }

    /// The calling thread's cache, creating it if the thread has none yet. Returns nil
    /// if metadata memory is exhausted.
    ///
    /// Takes the registry lock; must not hold any allocator lock.
    @inline(never) func currentCache() -> UnsafeMutablePointer<ThreadCache>? {
        if let slot = sh_tls_get() { return UnsafeMutablePointer<ThreadCache>(slot: slot) }
        // Whether any cache is parked, read without the lock (a hint: at worst a call of
        // sched_getcpu for nothing, or a parked cache taken without regard to its CPU).
        let parkedWord = UnsafeMutableRawPointer(pointer(to: \.parked)!).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        let cpu = sh_load_ptr_relaxed(parkedWord) == nil ? -1 : sh_current_cpu()
        lockPointer.lock()
        if let cache = unparkLocked(cpu: cpu) {
            let keyCreated = pointee.keyCreated
            let key = pointee.key
            lockPointer.unlock()
            return publish(cache, keyCreated: keyCreated, key: key)
        }
        guard let (record, reused) = pointer(to: \.pool)!.pointee.allocReportingReuse() else {
            lockPointer.unlock()
            return nil
        }
        if reused { pointee.idleRecords &-= 1 }
        let cache = record.bindMemory(to: ThreadCache.self, capacity: 1)
        // Every bin starts in its start array (BinArrays), behind its guard words: zero in a
        // new record (persistentAlloc's memory), and never written since in a reused one
        // (pushes write from a slot array's start up, the pool's free-list link is the
        // record's first word, and a released record's pages read as zeros), so they are
        // not written here either: the pages of the slot arrays stay untouched until their
        // bins are used. The full arrays' guard words are zeroed when a bin moves there.
        // Bin 0 (large objects) and the classes past the table have capacity 0, so that
        // free's fast path sends them to the slow path without a test of its own.
        let classes = pointee.classes
        let firstArray = cache.slotArray(at: pointee.binArrays[1].binStart)
        for cls in 0..<maxSizeClasses {
            if cls == 0 || cls >= classes.count {
                cache.bin(cls).initialize(to: CacheBin(slots: firstArray, capacity: 0))
                cache.remoteBin(cls).initialize(to: CacheBin(slots: firstArray, capacity: 0))
                continue
            }
            let arrays = pointee.binArrays[cls]
            let bin = cache.slotArray(at: arrays.binStart)
            let remote = cache.slotArray(at: arrays.remoteStart)
            cache.bin(cls).initialize(to: CacheBin(slots: bin, capacity: arrays.startCapacity(full: arrays.binCapacity)))
            cache.remoteBin(cls).initialize(
                to: CacheBin(slots: remote, capacity: arrays.startCapacity(full: arrays.remoteCapacity)))
        }
        cache.header.initialize(to: CacheHeader(registry: self, next: nil, previous: nil, isNoCache: false,
                                                droppingPhase: pointee.pageHeap.pointee.events.droppingPhaseWord,
                                                heapSpanBytes: pointee.pageHeap.heapSpanBytesWord, refills: 0, flushes: 0,
                                                profile: ProfileThreadState(),
                                                starterRefills: pointee.liveCount >= pointee.starterMinCaches
                                                    ? pointee.starterCounts : InlineArray(repeating: starterRefillsPerClass)))
        linkLive(cache)
        let keyCreated = pointee.keyCreated
        let key = pointee.key
        lockPointer.unlock()
        return publish(cache, keyCreated: keyCreated, key: key)
    }

    /// Makes `cache` the calling thread's: its slot, and the thread-exit key's value
    /// (keyCreated, key: the registry's, read under its lock). Returns `cache`.
    ///
    /// Takes the registry lock if the key is yet to be created; must hold no allocator lock.
    private func publish(_ cache: UnsafeMutablePointer<ThreadCache>, keyCreated: Bool,
                         key: pthread_key_t) -> UnsafeMutablePointer<ThreadCache> {
        // Publish before pthread_setspecific, which may itself call calloc.
        sh_tls_set(UnsafeMutableRawPointer(cache))
        if keyCreated {
            _ = pthread_setspecific(key, UnsafeMutableRawPointer(cache))
        } else if sh_libc_single_threaded() == 0 {
            // A thread that runs before the library constructor (started by another
            // library's): pthread_create has run, so the C runtime is up, and without the
            // key this cache, and every block in it, would outlive its thread
            // (Tests/c/early_threads.c).
            ensureThreadExitKey()
        }
        return cache
    }

    /// Creates the thread-exit key if it does not exist yet, and registers the calling
    /// thread's cache with it. Called from the library constructor, once the C runtime is
    /// up, and from the first cache a thread makes before that (currentCache), never from
    /// the very first malloc's path (it may come from the loader, before the C runtime
    /// can create keys). Returns false if the key cannot be created.
    ///
    /// Takes the registry lock; must not hold any allocator lock.
    @discardableResult func ensureThreadExitKey() -> Bool {
        lockPointer.lock()
        if !pointee.keyCreated {
            var key: pthread_key_t = 0
            if pthread_key_create(&key, threadCacheDestructor) != 0 {
                lockPointer.unlock()
                return false
            }
            pointee.key = key
            pointee.keyCreated = true
        }
        let key = pointee.key
        lockPointer.unlock()
        if let cache = callersCache { _ = pthread_setspecific(key, UnsafeMutableRawPointer(cache)) }
        return true
    }

    /// In a fork child: hands the partial spans of every cache but the calling thread's
    /// (their threads do not exist in the child) to the unowned lists, so that the child's
    /// refills can use them, and their cached large spans to the page heap, and returns
    /// their records to the pool: the live list then holds the child's one thread's
    /// cache (cachesOfOtherThreads). The objects left in their bins stay allocated for good,
    /// as their threads would have used them. Takes no lock but the page heap's (the
    /// child has one thread; its locks are fresh).
    func disownOtherCachesAfterFork() {
        let current = sh_tls_get()
        var cache = pointee.live
        while let c = cache {
            cache = c.header.pointee.next
            if UnsafeMutableRawPointer(c) != current {
                c.disownSpans(locked: true)
                _ = c.largeCache.drain(to: pointee.pageHeap, byOwner: true)
                unlinkAndFree(c)
            }
        }
    }

    /// The calling thread's own cache, in the live list; nil before it has made one and
    /// after its exit (the no-cache record). Reads only the thread's slot.
    private var callersCache: UnsafeMutablePointer<ThreadCache>? {
        guard let slot = sh_tls_get() else { return nil }
        let cache = UnsafeMutablePointer<ThreadCache>(slot: slot)
        return cache.header.pointee.isNoCache ? nil : cache
    }

    /// How many threads other than the caller hold a cache: threads of the program that
    /// have allocated and not yet exited (a thread's cache goes back to the pool when it
    /// exits, and a fork child keeps only its own thread's). What the scavenger goes by
    /// where /proc cannot be read (ScavengerRunner.swift: otherThreadsRun).
    ///
    /// Takes the registry lock.
    func cachesOfOtherThreads() -> Int {
        let mine: UInt = callersCache == nil ? 0 : 1
        lockPointer.lock()
        let live = pointee.liveCount
        lockPointer.unlock()
        return live > mine ? Int(live &- mine) : 0
    }

    /// Unlinks an (already flushed) cache from the live list and returns it to the pool.
    /// Returns the number of live caches left.
    ///
    /// Takes the registry lock.
    fileprivate func retire(_ cache: UnsafeMutablePointer<ThreadCache>) -> UInt {
        lockPointer.lock()
        unlinkAndFree(cache)
        let left = pointee.liveCount
        lockPointer.unlock()
        return left
    }

    /// retire's work. Must hold the registry lock (or be a fork child's one thread).
    private func unlinkAndFree(_ cache: UnsafeMutablePointer<ThreadCache>) {
        unlinkLive(cache)
        freeRecord(cache)
    }

    /// Puts `cache` at the head of the live list. Must hold the registry lock.
    private func linkLive(_ cache: UnsafeMutablePointer<ThreadCache>) {
        cache.header.pointee.previous = nil
        cache.header.pointee.next = pointee.live
        if let first = pointee.live { first.header.pointee.previous = cache }
        pointee.live = cache
        pointee.liveCount &+= 1
    }

    /// Takes `cache` off the live list. Must hold the registry lock.
    private func unlinkLive(_ cache: UnsafeMutablePointer<ThreadCache>) {
        let header = cache.header
        if let previous = header.pointee.previous {
            previous.header.pointee.next = header.pointee.next
        } else {
            pointee.live = header.pointee.next
        }
        if let next = header.pointee.next { next.header.pointee.previous = header.pointee.previous }
        pointee.liveCount &-= 1
    }

    /// Returns the record of a flushed cache on no list to the pool. Must hold the
    /// registry lock (or be a fork child's one thread).
    ///
    /// A record beyond the first residentIdleRecords in the pool gives its slot arrays'
    /// pages back to the kernel: each thread touches a page or more of them per size class
    /// it uses, and a burst of threads left them all resident in the pool after it (1000
    /// threads of 20 sizes: some 40 MB; Tests/c/thread_burst.c). A program that starts
    /// and ends threads one at a time keeps reusing resident records. A reused record's
    /// guard words are zeroed again (currentCache), whether or not the release happened.
    /// The release happens under the registry lock, before the record is in the pool:
    /// once there, another thread may take it and fill its arrays.
    private func freeRecord(_ cache: UnsafeMutablePointer<ThreadCache>) {
        let pool = pointer(to: \.pool)!
        if pointee.idleRecords >= residentIdleRecords {
            let record = UInt(bitPattern: UnsafeMutableRawPointer(cache))
            let arrays = alignUp(record &+ UInt(MemoryLayout<ThreadCache>.stride), osPageSize)
            let end = alignDown(record &+ pool.pointee.recordBytes, osPageSize)
            if end > arrays { osRelease(arrays, end &- arrays) }
        }
        pool.pointee.free(UnsafeMutableRawPointer(cache))
        pointee.idleRecords &+= 1
    }

    /// Parks the cache of the exiting calling thread (its slot no longer points at it)
    /// instead of flushing it, if it may be (see the file comment: the program is not
    /// dropping a phase, the cache holds at most parkMaxCachedBytes of objects, and fewer
    /// than parkLimit caches are parked); its cached large
    /// spans go back to the page heap first, as at an exit that flushes. Returns the
    /// number of live caches left, or nil if the cache was not parked (nothing changed
    /// but its large cache).
    ///
    /// Takes the registry lock, and the page heap's; must hold no allocator lock.
    fileprivate func park(_ cache: UnsafeMutablePointer<ThreadCache>) -> UInt? {
        if pointee.parkLimit == 0 { return nil }
        if let dropping = cache.header.pointee.droppingPhase, sh_load32_relaxed(dropping) != 0 { return nil }
        if cache.cachedBytes() > parkMaxCachedBytes { return nil }
        _ = cache.largeCache.drain(to: pointee.pageHeap, byOwner: true)
        let cpu = sh_current_cpu()
        lockPointer.lock()
        let left = pointee.liveCount &- 1
        guard pointee.parkedCount < pointee.parkLimit else {
            lockPointer.unlock()
            return nil
        }
        unlinkLive(cache)
        cache.header.pointee.next = pointee.parked
        cache.header.pointee.previous = nil
        cache.header.pointee.parkedAt = pointee.parkDrains
        cache.header.pointee.parkedCPU = cpu
        pointee.parked = cache
        pointee.parkedCount &+= 1
        lockPointer.unlock()
        return left
    }

    /// A parked cache taken off the parked list and put on the live list, for a new
    /// thread on CPU `cpu`: the most recently parked of those whose thread exited on that
    /// CPU (their lines are likelier in its caches), else the most recently parked; nil if
    /// none is parked. Must hold the registry lock.
    private func unparkLocked(cpu: Int32) -> UnsafeMutablePointer<ThreadCache>? {
        guard var cache = pointee.parked else { return nil }
        // The first parked on `cpu` and the one before it, if any; else the first.
        var previous: UnsafeMutablePointer<ThreadCache>? = nil
        var before: UnsafeMutablePointer<ThreadCache>? = nil
        var scan = pointee.parked
        while let current = scan, current.header.pointee.parkedCPU != cpu {
            before = current
            scan = current.header.pointee.next
        }
        if let found = scan {
            cache = found
            previous = before
        }
        if let previous {
            previous.header.pointee.next = cache.header.pointee.next
        } else {
            pointee.parked = cache.header.pointee.next
        }
        pointee.parkedCount &-= 1
        linkLive(cache)
        return cache
    }

    /// Flushes the parked caches that were parked before the previous call (the
    /// scavenger's tick: a parked cache waits at most two tick periods for a new thread),
    /// or with `all` every one of them (malloc_trim, an allocation that found no memory, a
    /// phase being dropped, the program back to one cache), and returns their records to
    /// the pool. Returns how many it flushed.
    ///
    /// Takes the registry lock, then central locks and the page heap's; must hold no
    /// allocator lock.
    @discardableResult func drainParkedCaches(all: Bool) -> UInt {
        lockPointer.lock()
        let drains = pointee.parkDrains
        pointee.parkDrains = drains &+ 1
        // The list runs from the most recently parked: the ones to flush are a tail.
        var keep: UnsafeMutablePointer<ThreadCache>? = nil
        var kept: UInt = 0
        var tail = pointee.parked
        while !all, let cache = tail, cache.header.pointee.parkedAt == drains {
            keep = cache
            kept &+= 1
            tail = cache.header.pointee.next
        }
        if let keep { keep.header.pointee.next = nil } else { pointee.parked = nil }
        let flushed = pointee.parkedCount &- kept
        pointee.parkedCount = kept
        lockPointer.unlock()
        // The detached caches are no thread's and on no list: this thread alone has them.
        var cache = tail
        while let current = cache {
            cache = current.header.pointee.next
            current.flush()
            current.disownSpans()
            lockPointer.lock()
            freeRecord(current)
            lockPointer.unlock()
        }
        return flushed
    }
}

/// The pthread key destructor: parks the exiting thread's cache, or flushes and retires
/// it; the thread uses the no-cache record from then on (see the file comment).
private func threadCacheDestructor(_ argument: UnsafeMutableRawPointer?) {
    guard let argument else { return }
    let cache = UnsafeMutablePointer<ThreadCache>(slot: argument)
    let savedErrno = sh_errno_get()
    let registry = cache.header.pointee.registry
    sh_tls_set(UnsafeMutableRawPointer(registry.pointee.noCache))
    let left: UInt
    if let parkedLeaving = registry.park(cache) {
        left = parkedLeaving
    } else {
        cache.flush()
        cache.disownSpans()
        left = registry.retire(cache)
    }
    registry.pointee.afterThreadExit?(left)
    sh_errno_set(savedErrno)
}

// MARK: - Slow paths of the thread cache

extension UnsafeMutablePointer where Pointee == ThreadCache {
    /// The bytes of the objects in this cache's bins and remote bins.
    func cachedBytes() -> UInt {
        let classes = header.pointee.registry.pointee.classes
        var bytes: UInt = 0
        for cls in 1..<classes.count {
            let objects = UInt(bin(cls).pointee.count) &+ UInt(remoteBin(cls).pointee.count)
            bytes &+= objects &* UInt(classes.info[cls].size)
        }
        return bytes
    }

    /// Returns every cached object to the central lists, and the cached large spans to
    /// the page heap: the exiting thread's (spans it empties may stay for the next
    /// threads: Central.closeRun).
    ///
    /// Takes central locks and the page heap's; must not hold any allocator lock.
    func flush() {
        let registry = header.pointee.registry
        let classCount = registry.pointee.classes.count
        for cls in 1..<classCount {
            releaseAll(bin(cls), sizeClass: cls)
            releaseAll(remoteBin(cls), sizeClass: cls)
        }
        _ = largeCache.drain(to: registry.pointee.pageHeap, byOwner: true)
    }

    /// Hands this cache's partial spans to the central lists' unowned lists, for a cache
    /// that will not be used again (see Central.swift). With `locked`, the caller is the
    /// only thread (a fork child) and no lock is taken.
    ///
    /// Takes central locks (unless `locked`); must not hold any allocator lock.
    func disownSpans(locked: Bool = false) {
        let classCount = header.pointee.registry.pointee.classes.count
        for cls in 1..<classCount { central(cls).disown(spans, locked: locked) }
    }

    /// Returns every object of a bin to the class's central list (in runs: a remote
    /// bin's objects come mostly in their owner's order, Central.releaseInRuns).
    ///
    /// Takes the class's central lock.
    private func releaseAll(_ bin: UnsafeMutablePointer<CacheBin>, sizeClass: Int) {
        let count = Int(bin.pointee.count)
        if count > 0 {
            central(sizeClass).releaseInRuns(bin.pointee.slots, count: count, by: UnsafeMutableRawPointer(self))
            bin.pointee.count = 0
        }
    }

    /// Refills an empty bin and returns one object, or 0 if out of memory: from a shared
    /// span (the class's first starterRefillsPerClass refills: Central.refillStarter), from
    /// the class's remote bin where its objects share no cache line (see the file
    /// comment), else from the central list. The no-cache record (capacity 0) gets a
    /// single object straight from the central list.
    ///
    /// The remote bin refills a bin only once the cache has drawn from a span of its own
    /// (its first private refill). Before, the objects it would take are mostly the
    /// thread's own starter objects, if it made any, which it frees into the remote bin (a
    /// shared span has no owner): a thread that allocated and freed two objects of a 6.5
    /// KiB class in a loop took them back from the remote bin, freed them into it, and
    /// refilled for every pair, for good.
    ///
    /// Takes the class's central lock unless the remote bin refills it.
    @inline(never) func refillBin(_ sizeClass: Int) -> UInt {
        let bin = self.bin(sizeClass)
        let central = self.central(sizeClass)
        let capacity = Int(bin.pointee.capacity)
        let owner = UnsafeMutableRawPointer(self)
        if capacity == 0 {
            var object: UInt = 0
            return central.refill(into: &object, want: 1, owner: owner, owned: spans) == 1 ? object : 0
        }
        header.pointee.refills &+= 1
        var got = 0
        let starters = header.pointee.starterRefills[sizeClass]
        if starters < starterRefillsPerClass {
            header.pointee.starterRefills[sizeClass] = starters &+ 1
            got = central.refillStarter(into: bin.pointee.slots)
        }
        if got == 0 {
            // This cache's first refill of the class (its stamp, which this thread alone
            // writes) takes firstRefillObjects, at most half a start array; a later one
            // doubles the bin (grow: into its full array, then up to the class's capacity)
            // and takes half of it.
            let first = spans.lastRefill(sizeClass).pointee == 0
            if !first, let object = adoptRemote(sizeClass, into: bin) { return object }
            if !first { _ = grow(bin, sizeClass: sizeClass) }
            let half = Int(bin.pointee.capacity) / 2
            got = central.refill(into: bin.pointee.slots, want: first ? min(half, firstRefillObjects) : half,
                                 owner: owner, owned: spans)
            if got == 0 { return 0 }
        }
        bin.pointee.count = UInt32(got &- 1)
        return bin.pointee.slots[got &- 1]
    }

    /// Refills empty `bin` of class `sizeClass` from the newest objects of the class's
    /// remote bin, if its objects never share a cache line (their size is a multiple of
    /// a line), and returns one of them; nil if there is none to take.
    @inline(__always) private func adoptRemote(_ sizeClass: Int, into bin: UnsafeMutablePointer<CacheBin>) -> UInt? {
        let remote = remoteBin(sizeClass)
        let available = Int(remote.pointee.count)
        guard available > 0, header.pointee.registry.pointee.classes.objectsShareNoCacheLine(sizeClass) else { return nil }
        let take = min(available, Int(bin.pointee.capacity) / 2)
        let from = remote.pointee.slots + (available &- take)
        // memcpy, not update(from:count:): Embedded Swift copies a UInt buffer by a call
        // per element.
        memcpy(bin.pointee.slots, from, take &* MemoryLayout<UInt>.stride)
        remote.pointee.count = UInt32(available &- take)
        bin.pointee.count = UInt32(take &- 1)
        return bin.pointee.slots[take &- 1]
    }

    /// Makes room in a full bin, by doubling it if it is below its class's capacity
    /// (grow), else by moving its older half to the central list, then caches `object`.
    /// The no-cache record returns the object straight to its span.
    ///
    /// Takes the class's central lock.
    @inline(never) func flushBinAndPush(_ sizeClass: Int, _ object: UInt) {
        let bin = self.bin(sizeClass)
        let central = self.central(sizeClass)
        let capacity = Int(bin.pointee.capacity)
        if capacity == 0 {
            var single = object
            central.release(&single, count: 1, by: UnsafeMutableRawPointer(self))
            return
        }
        if grow(bin, sizeClass: sizeClass) {
            bin.pushNonFull(object)
            return
        }
        header.pointee.flushes &+= 1
        let flushCount = capacity / 2
        let slots = bin.pointee.slots
        central.release(slots, count: flushCount, by: UnsafeMutableRawPointer(self))
        let kept = Int(bin.pointee.count) &- flushCount
        memmove(slots, slots + flushCount, kept &* MemoryLayout<UInt>.stride)
        slots[kept] = object
        bin.pointee.count = UInt32(kept &+ 1)
    }

    /// Caches an object freed from a span another cache draws from (or a shared span), in
    /// the class's remote bin; a full remote bin moves to its full array if it is in its
    /// start array (growRemoteToFull), else goes back to the central list first. The
    /// no-cache record (capacity 0) returns the object straight to its span.
    ///
    /// Takes the class's central lock when the bin is full.
    @inline(never) func pushRemote(_ sizeClass: Int, _ object: UInt) {
        let bin = remoteBin(sizeClass)
        if bin.pointee.isFull {
            if bin.pointee.capacity == 0 {
                var single = object
                central(sizeClass).release(&single, count: 1, by: UnsafeMutableRawPointer(self))
                return
            }
            if !growRemoteToFull(bin, sizeClass: sizeClass) { releaseAll(bin, sizeClass: sizeClass) }
        }
        bin.pushNonFull(object)
    }

    /// Moves remote bin `bin` of class `sizeClass` from its start array to its full array
    /// at the class's remote capacity, objects and all; returns false if it is there
    /// already (BinArrays). A bin in a full array has a capacity other than
    /// startBinCapacity, but for a class without a start array whose full capacity is
    /// that: the test of the capacity keeps the flushes of remote bins that have grown
    /// off the registry's table.
    @inline(__always) private func growRemoteToFull(_ bin: UnsafeMutablePointer<CacheBin>, sizeClass: Int) -> Bool {
        guard bin.pointee.capacity == startBinCapacity else { return false }
        let arrays = header.pointee.registry.pointee.binArrays[sizeClass]
        return arrays.remoteCapacity != startBinCapacity && moveToFullArray(bin, sizeClass: sizeClass, remote: true,
                                                                            capacity: arrays.remoteCapacity)
    }

    /// Doubles the capacity of bin `bin` of class `sizeClass` (this cache's own, not the
    /// remote one), up to the class's (BinArrays.binCapacity): from its start array into
    /// its full array, objects and all, or in its full array. Returns false if it is at
    /// the class's capacity already. A thread's bin of a class thus takes 4 objects at
    /// its first private refill, 8 at the next, then 16, 32 and so on up to half the
    /// class's capacity, and holds as many before it flushes: a thread that makes a few
    /// objects of a class and exits (a thread per task) moves a few objects to its bin
    /// and back, not half a full bin (`tasks`: 115 allocator instructions a pair moved
    /// objects between spans and bins when the second refill took half a full bin).
    @inline(__always) private func grow(_ bin: UnsafeMutablePointer<CacheBin>, sizeClass: Int) -> Bool {
        let arrays = header.pointee.registry.pointee.binArrays[sizeClass]
        let capacity = bin.pointee.capacity
        if capacity >= arrays.binCapacity { return false }
        let grown = min(capacity &* 2, arrays.binCapacity)
        if bin.pointee.slots == slotArray(at: arrays.binFull) {
            bin.initialize(to: CacheBin(slots: bin.pointee.slots, capacity: grown, count: bin.pointee.count))
            return true
        }
        return moveToFullArray(bin, sizeClass: sizeClass, remote: false, capacity: grown)
    }

    /// Moves `bin` (class `sizeClass`'s bin, or with `remote` its remote bin) from its
    /// start array to its full array with `capacity` slots, objects and all, and zeroes
    /// the full array's guard words. Returns true.
    @inline(never) private func moveToFullArray(_ bin: UnsafeMutablePointer<CacheBin>, sizeClass: Int, remote: Bool,
                                                capacity: UInt32) -> Bool {
        let arrays = header.pointee.registry.pointee.binArrays[sizeClass]
        let full = slotArray(at: remote ? arrays.remoteFull : arrays.binFull)
        (full - binGuardWords).initialize(repeating: 0, count: binGuardWords)
        let count = bin.pointee.count
        memcpy(full, bin.pointee.slots, Int(count) &* MemoryLayout<UInt>.stride)  // as adoptRemote
        bin.initialize(to: CacheBin(slots: full, capacity: capacity, count: count))
        return true
    }
}
