// The heap profiler's tables: the buckets (one per call stack and allocation size,
// with the totals of its samples) and the live samples (address → bucket).
//
// A bucket is keyed by its stack and by the requested size, as Go's memory-profile
// buckets are, so that every line of the profile holds allocations of one size and
// the reader's scaling (1 / (1 - exp(-size / rate)), from the line's average size) is
// exact for it. Buckets are never freed (a site that allocated once stays in the
// --alloc_space view); a bucket is one record from metadata memory, its frames right
// after it, or, for a bucket made by a resize, those of the bucket its sample came
// from (a stack is stored once however often its samples are resized). Live samples
// are small pool records, freed when their object is.
//
// Resizes. A sampled object that realloc resizes in place moves, with its one
// allocation, to the bucket of its stack and new size, rounded up to a grid of 1/64 of
// a power of two (resizedSizeGrid: at most 1.6% high): a buffer grown a byte at a time
// makes at most 64 buckets per doubling, not one per size, and most of its resizes
// leave it in the bucket it is in (no lookup, no record).
//
// Both tables are hash tables chained through the records' first two words
// (ChainLink); their head arrays are mapped from the OS and doubled when the records
// outnumber the heads, so a lookup stays O(1) whatever the sampling rate.
//
// Nothing here allocates through malloc: records come from persistentAlloc and
// FixAlloc, head arrays from mmap.
//
// Locking: a ProfileTable is guarded by its owner's lock (the profile lock,
// Profile.swift); every method must be called holding it. Lock order: the profile
// lock, then the metadata lock (taken inside persistentAlloc).

import CShim

/// The first words of every record of a ChainedTable.
struct ChainLink {
    var next: UnsafeMutableRawPointer?
    var key: UInt
}

/// Records chained through their ChainLink, found by key.
struct ChainedTable {
    var heads: UnsafeMutablePointer<UnsafeMutableRawPointer?>? = nil
    /// Length of heads (a power of two, or 0 before the first insert).
    var headCount: UInt = 0
    /// Records in the table.
    var count: UInt = 0

    static let initialHeads: UInt = 1024

    @inline(__always) private static func index(_ key: UInt, _ headCount: UInt) -> Int {
        Int(bitPattern: UInt(truncatingIfNeeded: splitMix64(UInt64(key))) & (headCount &- 1))
    }

    @inline(__always) static func link(_ record: UnsafeMutableRawPointer) -> UnsafeMutablePointer<ChainLink> {
        record.assumingMemoryBound(to: ChainLink.self)
    }

    /// The first record with `key` for which `matches` holds, or nil.
    func find(_ key: UInt, where matches: (UnsafeMutableRawPointer) -> Bool) -> UnsafeMutableRawPointer? {
        guard let heads else { return nil }
        var record = heads[ChainedTable.index(key, headCount)]
        while let current = record {
            if ChainedTable.link(current).pointee.key == key && matches(current) { return current }
            record = ChainedTable.link(current).pointee.next
        }
        return nil
    }

    /// Adds `record` (its link's key set). Returns false only if the table has no head
    /// array and none can be mapped; a failed growth just leaves longer chains.
    mutating func insert(_ record: UnsafeMutableRawPointer) -> Bool {
        if heads == nil || count >= headCount { grow() }
        guard let heads else { return false }
        let slot = ChainedTable.index(ChainedTable.link(record).pointee.key, headCount)
        ChainedTable.link(record).pointee.next = heads[slot]
        heads[slot] = record
        count &+= 1
        return true
    }

    /// Unlinks and returns the first record with `key` for which `matches` holds.
    mutating func remove(_ key: UInt, where matches: (UnsafeMutableRawPointer) -> Bool) -> UnsafeMutableRawPointer? {
        guard let heads else { return nil }
        var previous: UnsafeMutableRawPointer? = nil
        let slot = ChainedTable.index(key, headCount)
        var record = heads[slot]
        while let current = record {
            let link = ChainedTable.link(current)
            if link.pointee.key == key && matches(current) {
                if let previous { ChainedTable.link(previous).pointee.next = link.pointee.next } else { heads[slot] = link.pointee.next }
                count &-= 1
                return current
            }
            previous = current
            record = link.pointee.next
        }
        return nil
    }

    /// Doubles the head array (or maps the first one) and rehashes every record.
    private mutating func grow() {
        let newCount = headCount == 0 ? ChainedTable.initialHeads : headCount &* 2
        let bytes = newCount &* UInt(MemoryLayout<UnsafeMutableRawPointer?>.stride)
        let mapped = osMap(bytes)
        if mapped == 0 { return }
        let newHeads = UnsafeMutablePointer<UnsafeMutableRawPointer?>(bitPattern: mapped)!
        if let heads {
            for i in 0..<Int(bitPattern: headCount) {
                var record = heads[i]
                while let current = record {
                    let link = ChainedTable.link(current)
                    record = link.pointee.next
                    let slot = ChainedTable.index(link.pointee.key, newCount)
                    link.pointee.next = newHeads[slot]
                    newHeads[slot] = current
                }
            }
            osUnmap(UInt(bitPattern: heads), headCount &* UInt(MemoryLayout<UnsafeMutableRawPointer?>.stride))
        }
        heads = newHeads
        headCount = newCount
    }
}

/// The samples of one call stack and allocation size. Its frames (return addresses,
/// innermost first) follow the record, or are another bucket's (see the file comment).
struct ProfileBucket {
    /// Chain link; the key is the hash of the frames and the size.
    var link: ChainLink
    /// The next bucket in the list of all buckets (newest first).
    var nextBucket: UnsafeMutablePointer<ProfileBucket>?
    /// Bytes the program asked for in each of these allocations.
    var size: UInt
    var depth: UInt
    /// Samples taken, and how many of them were freed since.
    var allocations: UInt
    var frees: UInt
    /// How many allocations one of these samples stands for (sampleWeight).
    var weight: Double
    /// depth return addresses, innermost first.
    var frames: UnsafePointer<UInt>

    @inline(__always) static func frames(_ bucket: UnsafeMutablePointer<ProfileBucket>) -> UnsafePointer<UInt> {
        bucket.pointee.frames
    }
}

/// A sampled object that is still allocated.
struct LiveSample {
    /// Chain link; the key is the object's address.
    var link: ChainLink
    var bucket: UnsafeMutablePointer<ProfileBucket>
}

/// The size a sampled object resized in place is recorded at: rounded up to a step of
/// 1/64 of its power of two (at most 1.6% more), exact below 128 bytes.
func resizedSizeGrid(_ size: UInt) -> UInt {
    if size < 128 { return size }
    let step = UInt(1) << UInt(UInt.bitWidth &- 1 &- size.leadingZeroBitCount &- 6)
    let (rounded, overflow) = size.addingReportingOverflow(step &- 1)
    return overflow ? size : rounded & ~(step &- 1)
}

/// Most frames recorded per stack.
let maxProfileFrames = 64

/// The buckets and live samples of a profile. Guarded by its owner's lock.
struct ProfileTable {
    var buckets = ChainedTable()
    var live = ChainedTable()
    var liveRecords = FixAlloc(recordBytes: UInt(MemoryLayout<LiveSample>.stride))
    /// The list of all buckets, newest first.
    var firstBucket: UnsafeMutablePointer<ProfileBucket>? = nil
    /// Frames in all buckets (the text writer's buffer bound).
    var frameCount: UInt = 0
    /// Mean bytes between samples.
    var rate: UInt

    init(rate: UInt) { self.rate = rate }

    /// Records a sample: the object at `address`, of `size` requested bytes, allocated
    /// from the stack `frames[0..<depth]` (innermost first). Returns false if metadata
    /// memory is exhausted (the sample is then not recorded).
    mutating func recordAllocation(address: UInt, size: UInt, frames: UnsafePointer<UInt>, depth: Int) -> Bool {
        let depth = min(max(depth, 0), maxProfileFrames)
        guard let bucket = bucket(size: size, frames: frames, depth: depth), let record = liveRecords.alloc() else { return false }
        let sample = record.bindMemory(to: LiveSample.self, capacity: 1)
        sample.initialize(to: LiveSample(link: ChainLink(next: nil, key: address), bucket: bucket))
        if !live.insert(record) {
            liveRecords.free(record)
            return false
        }
        bucket.pointee.allocations &+= 1
        return true
    }

    /// Records the free of the sampled object at `address`. Returns false if no live
    /// sample is at that address.
    mutating func recordFree(address: UInt) -> Bool {
        guard let record = live.remove(address, where: { _ in true }) else { return false }
        let bucket = record.assumingMemoryBound(to: LiveSample.self).pointee.bucket
        bucket.pointee.frees &+= 1
        liveRecords.free(record)
        return true
    }

    /// Records that the sampled object at `address` is now at `newAddress` (realloc of
    /// an object mapped on its own may move it) with `size` requested bytes: it moves,
    /// with its one allocation, to the bucket of its stack and new size on the grid (see
    /// the file comment), so that a buffer grown a thousand times in place is still one
    /// allocation, at its last size. Returns false if no live sample is at `address`; if
    /// metadata is exhausted, the sample stays in its bucket.
    mutating func recordResize(address: UInt, to newAddress: UInt, size requested: UInt) -> Bool {
        guard var record = live.find(address, where: { _ in true }) else { return false }
        if newAddress != address {
            record = live.remove(address, where: { _ in true }).unsafelyUnwrapped
            ChainedTable.link(record).pointee.key = newAddress
            _ = live.insert(record)  // (its head array exists: it held the record)
        }
        let sample = record.assumingMemoryBound(to: LiveSample.self)
        let old = sample.pointee.bucket
        let size = resizedSizeGrid(requested)
        if old.pointee.size == size { return true }
        guard let bucket = bucket(size: size, frames: ProfileBucket.frames(old), depth: Int(bitPattern: old.pointee.depth),
                                  sharing: true)
        else { return true }
        old.pointee.allocations &-= 1  // it was live there: allocations > frees
        bucket.pointee.allocations &+= 1
        sample.pointee.bucket = bucket
        return true
    }

    /// Whether a live sample is recorded at `address`.
    func isLive(_ address: UInt) -> Bool {
        live.find(address) { _ in true } != nil
    }

    /// The bucket of `size` and the stack `frames[0..<depth]`, made if new; nil if
    /// metadata memory is exhausted. `sharing`: `frames` belong to a bucket (which is
    /// never freed), and a new bucket uses them instead of a copy.
    private mutating func bucket(size: UInt, frames: UnsafePointer<UInt>, depth: Int,
                                 sharing: Bool = false) -> UnsafeMutablePointer<ProfileBucket>? {
        let key = ProfileTable.stackKey(size: size, frames: frames, depth: depth)
        if let found = buckets.find(key, where: { ProfileTable.bucketMatches($0, size: size, frames: frames, depth: depth) }) {
            return found.assumingMemoryBound(to: ProfileBucket.self)
        }
        return makeBucket(key: key, size: size, frames: frames, depth: depth, sharing: sharing)
    }

    private mutating func makeBucket(key: UInt, size: UInt, frames: UnsafePointer<UInt>, depth: Int,
                                     sharing: Bool) -> UnsafeMutablePointer<ProfileBucket>? {
        let frameBytes = sharing ? 0 : depth &* MemoryLayout<UInt>.stride
        guard let memory = persistentAlloc(UInt(MemoryLayout<ProfileBucket>.stride &+ frameBytes)) else { return nil }
        let bucket = memory.bindMemory(to: ProfileBucket.self, capacity: 1)
        var stored = frames
        if !sharing {
            let copy = (memory + MemoryLayout<ProfileBucket>.stride).bindMemory(to: UInt.self, capacity: depth)
            memcpy(copy, frames, frameBytes)  // update(from:count:) calls per element in Embedded Swift
            stored = UnsafePointer(copy)
        }
        bucket.initialize(to: ProfileBucket(link: ChainLink(next: nil, key: key), nextBucket: firstBucket, size: size,
                                            depth: UInt(depth), allocations: 0, frees: 0,
                                            weight: sampleWeight(size: size, rate: rate), frames: stored))
        if !buckets.insert(memory) { return nil }  // (its memory stays with the metadata)
        firstBucket = bucket
        frameCount &+= UInt(depth)
        return bucket
    }

    private static func bucketMatches(_ record: UnsafeMutableRawPointer, size: UInt, frames: UnsafePointer<UInt>, depth: Int) -> Bool {
        let bucket = record.assumingMemoryBound(to: ProfileBucket.self)
        if bucket.pointee.size != size || bucket.pointee.depth != UInt(depth) { return false }
        let stored = ProfileBucket.frames(bucket)
        var i = 0
        while i < depth {
            if stored[i] != frames[i] { return false }
            i &+= 1
        }
        return true
    }

    /// A hash of the size and the frames (FNV-1a over words, then mixed).
    static func stackKey(size: UInt, frames: UnsafePointer<UInt>, depth: Int) -> UInt {
        var hash: UInt64 = 0xCBF29CE484222325 ^ UInt64(size)
        var i = 0
        while i < depth {
            hash = (hash ^ UInt64(frames[i])) &* 0x100000001B3
            i &+= 1
        }
        return UInt(truncatingIfNeeded: splitMix64(hash))
    }

    /// Totals over every bucket, in samples and sampled bytes: (live samples, live
    /// bytes, all samples, all bytes).
    func totals() -> (liveCount: UInt, liveBytes: UInt, allCount: UInt, allBytes: UInt) {
        var result: (liveCount: UInt, liveBytes: UInt, allCount: UInt, allBytes: UInt) = (0, 0, 0, 0)
        var bucket = firstBucket
        while let current = bucket {
            let liveCount = current.pointee.allocations &- current.pointee.frees
            result.liveCount &+= liveCount
            result.liveBytes &+= liveCount &* current.pointee.size
            result.allCount &+= current.pointee.allocations
            result.allBytes &+= current.pointee.allocations &* current.pointee.size
            bucket = current.pointee.nextBucket
        }
        return result
    }

    /// The estimate the samples give of the live heap and of all allocations, in bytes
    /// (every sample counted with its weight).
    func estimatedBytes() -> (live: Double, allocated: Double) {
        var live = 0.0
        var allocated = 0.0
        var bucket = firstBucket
        while let current = bucket {
            let bytes = Double(current.pointee.size) * current.pointee.weight
            live += Double(current.pointee.allocations &- current.pointee.frees) * bytes
            allocated += Double(current.pointee.allocations) * bytes
            bucket = current.pointee.nextBucket
        }
        return (live, allocated)
    }
}
