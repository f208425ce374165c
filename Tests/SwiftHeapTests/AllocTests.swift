import Testing
import Glibc
@testable import SwiftHeap

/// The allocation API in process: malloc, calloc, realloc, aligned forms, usable size,
/// and the C conventions for bad input (through the swiftheap_* entry points).
@Suite struct AllocTests {
    @Test(arguments: [0, 1, 15, 16, 17, 100, 1000, 1024, 1025, 5000, 32768, 32769, 100_000, 3 << 20] as [UInt])
    func mallocGivesAlignedWritableUsableMemory(size: UInt) throws {
        let p = try #require(allocate(size))
        #expect(UInt(bitPattern: p) % 16 == 0)
        let usable = usableSize(p)
        #expect(usable >= size)
        memset(p, 0xA5, Int(usable))
        deallocate(p)
    }

    @Test func distinctLiveObjectsDoNotOverlap() {
        var objects: [(UInt, UInt)] = []
        for i in 0..<3000 {
            let size = UInt((i * 7919) % 3000 + 1)
            objects.append((UInt(bitPattern: allocate(size)!), size))
        }
        let sorted = objects.sorted { $0.0 < $1.0 }
        for i in 1..<sorted.count { #expect(sorted[i - 1].0 + sorted[i - 1].1 <= sorted[i].0) }
        for (address, _) in objects { deallocate(UnsafeMutableRawPointer(bitPattern: address)) }
    }

    @Test(arguments: [1, 100, 4096, 40_000, 1 << 20, 9 << 20] as [UInt])
    func callocIsZeroEvenOverDirtyMemory(size: UInt) throws {
        // Dirty memory of the same size first, so calloc may get it back.
        for _ in 0..<4 {
            let dirty = try #require(allocate(size))
            memset(dirty, 0xFF, Int(size))
            deallocate(dirty)
        }
        let p = try #require(allocateZeroed(count: 1, size: size))
        let bytes = UnsafeBufferPointer(start: p.assumingMemoryBound(to: UInt8.self), count: Int(size))
        #expect(bytes.allSatisfy { $0 == 0 })
        deallocate(p)
    }

    @Test func impossibleSizesFailWithENOMEM() {
        errno = 0
        #expect(swiftheap_malloc(-1) == nil)
        #expect(errno == ENOMEM)
        errno = 0
        #expect(swiftheap_malloc(Int.max) == nil)
        #expect(errno == ENOMEM)
        errno = 0
        #expect(swiftheap_calloc(Int.max / 2, 3) == nil)
        #expect(errno == ENOMEM)
        errno = 0
        #expect(swiftheap_reallocarray(nil, Int.max / 2, 3) == nil)
        #expect(errno == ENOMEM)
        errno = 0
        #expect(swiftheap_aligned_alloc(4096, -100) == nil)
        #expect(errno == ENOMEM)
        #expect(swiftheap_malloc(100) != nil, "the allocator stays usable")
    }

    @Test func badAlignmentsGetEINVAL() {
        var out: UnsafeMutableRawPointer? = nil
        for alignment in [0, 3, 4, 24, 48, 100] {
            #expect(swiftheap_posix_memalign(&out, alignment, 10) == EINVAL)
        }
        errno = 0
        #expect(swiftheap_aligned_alloc(24, 100) == nil)
        #expect(errno == EINVAL)
        // memalign keeps glibc's rules: rounds 3000 up to 4096, and only refuses
        // alignments above 2^63.
        let rounded = swiftheap_memalign(3000, 100)
        #expect(rounded != nil && UInt(bitPattern: rounded) % 4096 == 0)
        deallocate(rounded)
        errno = 0
        #expect(swiftheap_memalign(Int(bitPattern: (UInt(1) << 63) + 1), 100) == nil)
        #expect(errno == EINVAL)
    }

    @Test(arguments: [32, 64, 256, 4096, 8192, 16384, 65536, 1 << 20, 4 << 20] as [UInt])
    func alignedAllocationsAreAligned(alignment: UInt) {
        for size: UInt in [1, 17, 100, 1000, 5000, 40_000, 300_000] {
            var out: UnsafeMutableRawPointer? = nil
            #expect(swiftheap_posix_memalign(&out, Int(alignment), Int(size)) == 0)
            #expect(UInt(bitPattern: out) % alignment == 0, "size \(size) alignment \(alignment)")
            #expect(usableSize(out) >= size)
            memset(out!, 1, Int(size))
            deallocate(out)
        }
    }

    @Test func freeOfNilAndReallocOfNil() throws {
        deallocate(nil)
        let p = try #require(reallocate(nil, 40))
        #expect(usableSize(p) >= 40)
        #expect(reallocate(p, 0) == nil, "realloc(p, 0) frees and returns NULL as glibc does")
    }

    @Test func freePreservesErrno() throws {
        var objects: [UnsafeMutableRawPointer] = []
        for i in 0..<2000 { objects.append(allocate(UInt(i % 300 + 1))!) }
        errno = 1234
        for p in objects { swiftheap_free(p) }
        #expect(errno == 1234, "small frees (fast and slow paths) keep errno")
        let big = try #require(allocate(1 << 20))
        errno = 4321
        swiftheap_free(big)
        #expect(errno == 4321)
    }

    @Test func reallocKeepsContentsAcrossClassesAndIntoLargeSizes() throws {
        var p = try #require(allocate(1))
        var size: UInt = 1
        UnsafeMutablePointer<UInt8>(OpaquePointer(p)).pointee = 0
        func fill(_ p: UnsafeMutableRawPointer, from: UInt, to: UInt) {
            for i in from..<to { p.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31), toByteOffset: Int(i), as: UInt8.self) }
        }
        func check(_ p: UnsafeMutableRawPointer, _ n: UInt) -> Bool {
            (0..<n).allSatisfy { p.load(fromByteOffset: Int($0), as: UInt8.self) == UInt8(truncatingIfNeeded: $0 &* 31) }
        }
        fill(p, from: 0, to: 1)
        let sizes: [UInt] = [2, 17, 100, 1000, 1025, 8000, 32768, 32769, 70_000, 1 << 20, 5 << 20, 600_000, 40_000, 3000, 10]
        for newSize in sizes {
            p = try #require(reallocate(p, newSize))
            #expect(check(p, min(size, newSize)), "contents lost resizing \(size) → \(newSize)")
            fill(p, from: 0, to: newSize)
            size = newSize
        }
        deallocate(p)
    }

    /// realloc of a small object stays in place while the new size fits its class and
    /// wastes at most half of it; a move leaves the old object on top of the calling
    /// thread's bin (realloc's path from the span map, Entry.swift: reallocate), where
    /// the next malloc of its class finds it.
    @Test func smallReallocStaysInItsClassAndAMoveFreesTheOldObjectOntoTheBin() throws {
        let p = try #require(allocate(100))  // the 112-byte class
        #expect(usableSize(p) == 112)
        #expect(reallocate(p, 112) == p && reallocate(p, 57) == p, "sizes 57...112 keep the object")
        p.storeBytes(of: 0x5eed, as: UInt.self)
        let q = try #require(reallocate(p, 56), "at most half the class: a move")
        #expect(q != p && q.load(as: UInt.self) == 0x5eed)
        #expect(allocate(100) == p, "the old object is its bin's top")
        let r = try #require(reallocate(q, 1000))
        #expect(r != q && r.load(as: UInt.self) == 0x5eed)
        deallocate(r)
        deallocate(p)
    }

    /// (Growing in place into free pages is checked exactly on a private page heap:
    /// PageHeapTests.largeObjectsCountAndResizeInPlace.)
    @Test func largeReallocShrinksInPlace() throws {
        let p = try #require(allocate(200_000))
        let q = try #require(reallocate(p, 260_000))
        let r = try #require(reallocate(q, 100_000))
        #expect(r == q, "shrinking a large object stays in place")
        deallocate(r)
    }
}
