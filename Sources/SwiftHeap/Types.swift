// The constants of the whole allocator, in one place.
//
// Memory is managed in pages of 8 KiB (Go's choice): two OS pages, so that the
// metadata that scales with the heap (allocation and scavenged bitmaps, the radix
// tree of summaries, the page→span map) is half what 4 KiB pages would need, while a
// span of the smallest class still wastes at most one page. Release to the OS is at
// page granularity, which is a multiple of the 4 KiB OS page.
//
// A chunk is 512 pages (4 MiB): the unit of the page allocator's bitmaps and the
// leaves of its summary tree. A chunk is two 2 MiB huge pages, so huge-page-aware
// scavenging works on aligned halves of a chunk.
//
// Arenas are 64 MiB, 64 MiB-aligned reservations from mmap. The page→span map is
// kept per arena, found through a flat table indexed by address >> arenaShift.

/// log2 of the allocator's page size.
let pageShift: UInt = 13
/// The allocator's page: the unit of spans and of the page allocator.
let pageSize: UInt = 1 << pageShift
/// The operating system's page (x86-64 Linux).
let osPageSize: UInt = 4096

/// Pages per chunk (Go's pallocChunkPages).
let chunkPages: UInt = 512
/// log2 of chunkBytes.
let chunkShift: UInt = 22
/// Bytes per chunk (Go's pallocChunkBytes): 4 MiB.
let chunkBytes: UInt = chunkPages * pageSize
/// Pages in a transparent huge page (2 MiB).
let hugePagePages: UInt = (2 << 20) / pageSize

/// Bits of address the heap can span (x86-64 user space is 47 bits; 48 covers it).
let heapAddressBits: UInt = 48
/// Number of chunk indices in the address space.
let chunkCount: UInt = 1 << (heapAddressBits - chunkShift)

/// log2 of the arena size.
let arenaShift: UInt = 26
/// Bytes per arena: the granule of growth from mmap, and of the page→span map.
let arenaBytes: UInt = 1 << arenaShift
/// Pages per arena.
let arenaPages: UInt = arenaBytes / pageSize
/// Number of arena slots in the address space.
let arenaSlotCount: UInt = 1 << (heapAddressBits - arenaShift)

/// Whether free checks for misuse on its fast path (the object-start check and the
/// double-free checks, see Free.swift). Always on in the library; a build with
/// SWIFTHEAP_UNCHECKED=1 turns it off, only to measure what the checks cost.
#if SWIFTHEAP_UNCHECKED
let misuseChecks = false
#else
let misuseChecks = true
#endif

/// Every pointer SwiftHeap returns is aligned to this.
let minAlignment: UInt = 16

@inline(__always) func alignUp(_ value: UInt, _ alignment: UInt) -> UInt {
    (value &+ alignment &- 1) & ~(alignment &- 1)
}
@inline(__always) func alignDown(_ value: UInt, _ alignment: UInt) -> UInt {
    value & ~(alignment &- 1)
}

/// Chunk index of an address (Go's chunkIndex).
@inline(__always) func chunkIndex(_ address: UInt) -> UInt { address >> chunkShift }
/// First address of a chunk (Go's chunkBase).
@inline(__always) func chunkBase(_ index: UInt) -> UInt { index << chunkShift }
/// Page index of an address within its chunk (Go's chunkPageIndex).
@inline(__always) func chunkPageIndex(_ address: UInt) -> UInt { (address >> pageShift) & (chunkPages &- 1) }
