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
// The heap grows by regions mapped from the OS as it needs them: chunk-aligned, from 4 MiB
// (a small program maps little) doubling up to 64 MiB (a big one maps rarely), or the
// request rounded up to whole chunks. Objects of directThreshold bytes or more are mapped
// on their own and unmapped when freed (their page-allocator metadata would otherwise
// grow with their size). The page→span map is kept per 1 GiB slot of address space,
// found through a flat table indexed by address >> spanMapSlotShift.

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

/// The first growth of the heap, and the smallest.
let heapGrowthMinBytes: UInt = chunkBytes
/// Growths double up to this.
let heapGrowthMaxBytes: UInt = 64 << 20

/// Objects this large or larger are mapped on their own (Heap.swift, allocDirectSpan).
let directThreshold: UInt = 64 << 20

/// log2 of the address space one span-map slot covers (1 GiB).
let spanMapSlotShift: UInt = 30
/// Pages per span-map slot: entries of one slot's table (2^17; 1 MiB of pointers).
let spanMapSlotPages: UInt = 1 << (spanMapSlotShift - pageShift)
/// Span-map slots over the address space (2^18; a 2 MiB table).
let spanMapSlotCount: UInt = 1 << (heapAddressBits - spanMapSlotShift)

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
