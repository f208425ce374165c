// Address ranges: a sorted, coalesced set of [base, limit) regions of address space
// with a running byte total (Go's addrRange / addrRanges, mranges.go).
//
// The page allocator records in `inUse` every region it was grown with; the scavenger
// clones that set at the start of each generation and carves reservations off its top
// (removeLast / removeGreaterEqual), handing back what it did not search (add).
//
// Invariants of AddressRanges:
//   - ranges[0..<count] are sorted by base, pairwise disjoint, and no two are adjacent
//     (add coalesces a range with the neighbours it touches), and none is empty;
//   - totalBytes == sum of ranges[i].size over i < count, after every operation.
// Storage comes from persistentAlloc (metadata memory, never freed). Growing allocates
// a block twice as large and copies; the old block is leaked, as in Go: at worst 2x
// waste, and the set is tiny (one range per discontiguous heap region).
//
// Not synchronised: the owner's lock (the heap lock) guards every call.

/// The region of address space [base, limit). Empty when limit <= base.
struct AddressRange: Equatable {
    var base: UInt
    var limit: UInt

    init(base: UInt, limit: UInt) {
        self.base = base
        self.limit = limit
    }

    /// The empty range.
    static var empty: AddressRange { AddressRange(base: 0, limit: 0) }

    /// Bytes covered; 0 for an empty or inverted range.
    @inline(__always) var size: UInt { limit > base ? limit &- base : 0 }

    /// Whether addr lies in [base, limit).
    @inline(__always) func contains(_ addr: UInt) -> Bool { addr >= base && addr < limit }

    /// This range with any overlap with `other` cut out. The two must not overlap, overlap
    /// on one side only, or `self` must lie inside `other`: a cut that would split `self`
    /// in two is a caller bug and aborts (Go's "bad prune").
    func subtract(_ other: AddressRange) -> AddressRange {
        var r = self
        if r.base >= other.base && r.limit <= other.limit {
            return .empty
        } else if r.base < other.base && r.limit > other.limit {
            fatalInternal("AddressRange.subtract: range would be split")
        } else if r.limit > other.limit && r.base < other.limit {
            r.base = other.limit
        } else if r.base < other.base && r.limit > other.base {
            r.limit = other.base
        }
        return r
    }
}

/// A sorted, coalesced set of address ranges over metadata memory. The zero value is
/// an empty set with no storage; `initialize` gives it its first block.
struct AddressRanges {
    private(set) var storage: UnsafeMutablePointer<AddressRange>? = nil
    /// Number of ranges.
    private(set) var count: Int = 0
    /// Ranges the storage can hold.
    private(set) var capacity: Int = 0
    /// Total bytes covered by all ranges.
    private(set) var totalBytes: UInt = 0

    static let initialCapacity = 16

    init() {}

    /// Gives the set its first block of storage and empties it. Returns false if
    /// metadata memory is exhausted. Takes the metadata lock (not the heap lock).
    mutating func initialize() -> Bool {
        count = 0
        totalBytes = 0
        if storage == nil {
            guard let block = Self.allocateBlock(Self.initialCapacity) else { return false }
            storage = block
            capacity = Self.initialCapacity
        }
        return true
    }

    private static func allocateBlock(_ capacity: Int) -> UnsafeMutablePointer<AddressRange>? {
        let bytes = UInt(capacity) &* UInt(MemoryLayout<AddressRange>.stride)
        guard let raw = persistentAlloc(bytes, alignment: 16) else { return nil }
        return raw.bindMemory(to: AddressRange.self, capacity: capacity)
    }

    /// The range at index i (0 <= i < count).
    subscript(i: Int) -> AddressRange {
        get { storage![i] }
    }

    var isEmpty: Bool { count == 0 }

    /// The first index i such that addr < self[i].base (count if none): the ranges
    /// before it start at or below addr. Binary search.
    func findSucc(_ addr: UInt) -> Int {
        guard let r = storage else { return 0 }
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = lo &+ (hi &- lo) / 2
            if addr < r[mid].base {
                hi = mid
            } else {
                lo = mid &+ 1
            }
        }
        return lo
    }

    /// Whether some range contains addr.
    func contains(_ addr: UInt) -> Bool {
        let i = findSucc(addr)
        return i > 0 && storage![i &- 1].contains(addr)
    }

    /// The smallest address >= addr covered by the set, or nil if every range lies below
    /// addr (Go's findAddrGreaterEqual). The page allocator uses it to keep its search
    /// hint inside memory it knows.
    func findAddrGreaterEqual(_ addr: UInt) -> UInt? {
        guard count > 0, let r = storage else { return nil }
        let i = findSucc(addr)
        if i == 0 { return r[0].base }
        if r[i &- 1].contains(addr) { return addr }
        if i < count { return r[i].base }
        return nil
    }

    /// Inserts r, which must not overlap any range of the set, coalescing it with the
    /// neighbours it borders on either side. Empty ranges are ignored. Returns false
    /// (and changes nothing) if a new range needed more storage and metadata memory is
    /// exhausted.
    @discardableResult
    mutating func add(_ r: AddressRange) -> Bool {
        let size = r.size
        if size == 0 { return true }
        let i = findSucc(r.base)
        let down = i > 0 && storage![i &- 1].limit == r.base
        let up = i < count && storage![i].base == r.limit
        if down && up {
            // [i-1] r [i] become one range in [i-1]; delete [i].
            let s = storage!
            s[i &- 1].limit = s[i].limit
            var k = i
            while k &+ 1 < count {
                s[k] = s[k &+ 1]
                k &+= 1
            }
            count &-= 1
        } else if down {
            storage![i &- 1].limit = r.limit
        } else if up {
            storage![i].base = r.base
        } else {
            if count == capacity || storage == nil {
                let newCapacity = capacity == 0 ? Self.initialCapacity : capacity &* 2
                guard let block = Self.allocateBlock(newCapacity) else { return false }
                if let old = storage {
                    if i > 0 { block.update(from: old, count: i) }
                    if i < count { (block + (i &+ 1)).update(from: old + i, count: count &- i) }
                }
                storage = block
                capacity = newCapacity
            } else if i < count {
                let s = storage!
                // Shift [i, count) up by one, from the end (the regions overlap).
                var k = count
                while k > i {
                    s[k] = s[k &- 1]
                    k &-= 1
                }
            }
            storage![i] = r
            count &+= 1
        }
        totalBytes &+= size
        return true
    }

    /// Removes and returns the highest-addressed range, or only its last nBytes if the
    /// range is larger than that. Returns the empty range if the set is empty.
    mutating func removeLast(_ nBytes: UInt) -> AddressRange {
        guard count > 0, let s = storage else { return .empty }
        let r = s[count &- 1]
        let size = r.size
        if size > nBytes {
            let newLimit = r.limit &- nBytes
            s[count &- 1].limit = newLimit
            totalBytes &-= nBytes
            return AddressRange(base: newLimit, limit: r.limit)
        }
        count &-= 1
        totalBytes &-= size
        return r
    }

    /// Removes every address >= addr: the ranges above it, and the top part of a range
    /// containing it (the range is cut at addr).
    mutating func removeGreaterEqual(_ addr: UInt) {
        var pivot = findSucc(addr)
        if pivot == 0 {
            // addr is below every range.
            count = 0
            totalBytes = 0
            return
        }
        let s = storage!
        var removed: UInt = 0
        var k = pivot
        while k < count {
            removed &+= s[k].size
            k &+= 1
        }
        let r = s[pivot &- 1]
        if r.contains(addr) {
            let kept = r.subtract(AddressRange(base: addr, limit: UInt.max))
            removed &+= r.size &- kept.size
            if kept.size == 0 {
                pivot &-= 1
            } else {
                s[pivot &- 1] = kept
            }
        }
        count = pivot
        totalBytes &-= removed
    }

    /// Makes `other` an exact copy of this set, reusing other's storage if it is large
    /// enough. Returns false (other unchanged) if metadata memory is exhausted.
    @discardableResult
    func cloneInto(_ other: inout AddressRanges) -> Bool {
        if count > other.capacity || other.storage == nil {
            let newCapacity = capacity > Self.initialCapacity ? capacity : Self.initialCapacity
            guard let block = Self.allocateBlock(newCapacity) else { return false }
            other.storage = block
            other.capacity = newCapacity
        }
        if count > 0 {
            other.storage!.update(from: storage!, count: count)
        }
        other.count = count
        other.totalBytes = totalBytes
        return true
    }

    /// Empties the set, keeping its storage.
    mutating func removeAll() {
        count = 0
        totalBytes = 0
    }
}
