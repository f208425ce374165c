import Testing
import Foundation
@testable import SwiftHeap

/// The scavenger's concurrency rule on real memory: threads allocate (small and large
/// objects), fill them with a pattern derived from address and size, and check it
/// before freeing, while other threads force full scavenge generations (malloc_trim's
/// path, which releases pages with MADV_DONTNEED without the heap lock). A page
/// released while allocated would read back as zero and fail the check.
@Suite struct ScavengerConcurrencyTests {
    @Test func noAllocatedPageIsEverReleased() {
        swiftheap_library_init()
        let deadline = Date().addingTimeInterval(2)
        let corrupted = SharedCounter()
        let trims = SharedCounter()
        onThreads(4) { index in
            if index == 0 {
                while Date() < deadline {
                    if trimHeap() { trims.add(1) }
                    usleep(200)
                }
                return
            }
            var seed = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 | 1
            var live: [(UnsafeMutableRawPointer, Int)] = []
            while Date() < deadline {
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
                let size = seed % 8 == 0 ? Int(seed % (600 << 10)) + 40_000 : Int(seed % 3000) + 16
                guard let p = allocate(UInt(size)) else { continue }
                fill(p, size)
                live.append((p, size))
                if live.count > 400 || seed % 3 == 0 {
                    let victim = Int(seed >> 20) % live.count
                    let (q, n) = live.remove(at: victim)
                    if !verify(q, n) { corrupted.add(1) }
                    deallocate(q)
                }
            }
            for (q, n) in live {
                if !verify(q, n) { corrupted.add(1) }
                deallocate(q)
            }
        }
        #expect(corrupted.value == 0, "\(corrupted.value) blocks lost their contents while the scavenger ran")
        #expect(trims.value > 0, "the scavenger released nothing: the test proved nothing")
    }

    private func fill(_ p: UnsafeMutableRawPointer, _ n: Int) {
        let words = p.assumingMemoryBound(to: UInt64.self)
        let base = UInt64(UInt(bitPattern: p))
        for i in stride(from: 0, to: n / 8, by: 61) { words[i] = base &+ UInt64(i) &* 0x100_0000_01B3 }
        words[n / 8 - 1] = ~base
    }

    private func verify(_ p: UnsafeMutableRawPointer, _ n: Int) -> Bool {
        let words = p.assumingMemoryBound(to: UInt64.self)
        let base = UInt64(UInt(bitPattern: p))
        for i in stride(from: 0, to: n / 8, by: 61) where words[i] != base &+ UInt64(i) &* 0x100_0000_01B3 {
            if i != n / 8 - 1 { return false }
        }
        return words[n / 8 - 1] == ~base
    }
}
