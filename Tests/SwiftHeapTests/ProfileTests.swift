import Testing
import Foundation
@testable import SwiftHeap

/// The heap profiler's pieces in process: its math, the sampler's statistics, the
/// tables and the profile text. (Sampling real allocations, stack capture and the
/// files google-pprof reads are tested under LD_PRELOAD: scripts/test-profile.)
@Suite struct ProfileMathTests {
    @Test func naturalLogMatchesLibm() {
        var worst = 0.0
        for x in [1e-300, 4.9e-324, 1e-17, 1.1102230246251565e-16, 0.001, 0.3, 0.5, 0.7071, 0.99999, 1, 1.0000001,
                  1.4142, 1.5, 2, 2.718281828459045, 10, 12345.678, 9007199254740992, 1.7e308] {
            let error = abs(naturalLog(x) - log(x)) / max(abs(log(x)), 1e-300)
            worst = max(worst, x == 1 ? abs(naturalLog(x)) : error)
        }
        #expect(worst < 1e-14)
    }

    @Test func expMinusOneMatchesLibm() {
        var worst = 0.0
        for x in [-40.0, -30, -10, -2.5, -1, -0.5, -0.01, -1e-5, -1e-12, 0, 1e-12, 1e-5, 0.3, 1, 5, 20, 300] {
            let expected = expm1(x)
            let error = expected == 0 ? abs(expMinusOne(x)) : abs(expMinusOne(x) - expected) / abs(expected)
            worst = max(worst, error)
        }
        #expect(worst < 1e-13)  // a few ulps: far below what sampling noise could show
    }

    @Test func sampleWeightIsGoScaling() {
        let rate: UInt = 512 << 10
        for size: UInt in [1, 16, 1000, 4096, 100_000, 512 << 10, 4 << 20, 64 << 20] {
            let x = Double(size) / Double(rate)
            let expected = -1 / expm1(-x)  // (1 - exp(-x) would lose digits for small x)
            #expect(abs(sampleWeight(size: size, rate: rate) - expected) / expected < 1e-12)
        }
        // Every allocation is sampled at rate 1: weight 1.
        #expect(sampleWeight(size: 1, rate: 1) == 1)
    }
}

@Suite struct ProfileSamplerTests {
    /// Whether the sampler samples an allocation of `size`, as the hooks ask it.
    func sample(_ state: inout ProfileThreadState, _ size: UInt, rate: UInt, seed: UInt64 = 0) -> Bool {
        state.countIfShort(size) ? false : state.crossed(size: size, rate: rate, seed: seed)
    }

    @Test func distancesAreExponentialWithTheRateAsMean() {
        let rate: UInt = 4096
        var random: UInt64 = 0x9E3779B97F4A7C15
        let draws = 200_000
        var sum = 0.0
        var beyondMean = 0
        for _ in 0..<draws {
            let distance = nextSampleDistance(rate: rate, random: &random)
            #expect(distance >= 1)
            sum += Double(distance)
            if distance > rate { beyondMean += 1 }
        }
        // Mean rate (standard error 0.22%); P(distance > mean) = 1/e (standard error 0.11 points).
        #expect(abs(sum / Double(draws) / Double(rate) - 1) < 0.015)
        #expect(abs(Double(beyondMean) / Double(draws) - exp(-1)) < 0.006)
    }

    @Test(arguments: [512, 4096, 16384] as [UInt])
    func anAllocationIsSampledWithProbabilityOneMinusExpOfSizeOverRate(size: UInt) {
        let rate: UInt = 4096
        var state = ProfileThreadState()
        let allocations = 100_000
        var sampled = 0
        for _ in 0..<allocations where sample(&state, size, rate: rate) { sampled += 1 }
        let expected = 1 - exp(-Double(size) / Double(rate))
        // Standard error at most 0.16 points.
        #expect(abs(Double(sampled) / Double(allocations) - expected) < 0.008)
    }

    @Test func weightedSamplesEstimateTheBytesAllocatedWithoutBias() {
        // Many small allocations and a few large ones, as a program makes them; the
        // estimate of each group is within 3% (about 4 standard errors).
        let rate: UInt = 8192
        var state = ProfileThreadState()
        var lcg: UInt64 = 42
        var truth = (small: 0.0, large: 0.0)
        var estimate = (small: 0.0, large: 0.0)
        for i in 0..<2_000_000 {
            lcg = lcg &* 6364136223846793005 &+ 1442695040888963407
            let large = i % 50 == 0
            let size = large ? 1024 + UInt((lcg >> 33) % 65536) : 16 + UInt((lcg >> 33) % 113)
            let weighted = sample(&state, size, rate: rate) ? Double(size) * sampleWeight(size: size, rate: rate) : 0
            if large { truth.large += Double(size); estimate.large += weighted } else { truth.small += Double(size); estimate.small += weighted }
        }
        #expect(abs(estimate.small / truth.small - 1) < 0.03)
        #expect(abs(estimate.large / truth.large - 1) < 0.03)
    }

    @Test func aBusyThreadIsNotSampled() {
        var state = ProfileThreadState()
        state.busy = true
        var sampled = 0
        for _ in 0..<10_000 where sample(&state, 1000, rate: 100) { sampled += 1 }
        #expect(sampled == 0)
        #expect(state.random != 0 && state.bytesUntilSample >= 1)
        state.busy = false
        for _ in 0..<10_000 where sample(&state, 1000, rate: 100) { sampled += 1 }
        #expect(sampled > 9_900)
    }

    @Test(arguments: [4096, 65536] as [UInt])
    func aThreadsFirstAllocationIsSampledAsAnyOther(size: UInt) {
        // A thread that allocates once must be seen with probability 1 - exp(-size/rate)
        // (it was never sampled when the first crossing only seeded the generator).
        let rate: UInt = 16384
        let threads = 20_000
        var sampled = 0
        for thread in 0..<threads {
            var state = ProfileThreadState()
            if sample(&state, size, rate: rate, seed: UInt64(thread)) { sampled += 1 }
        }
        let expected = 1 - exp(-Double(size) / Double(rate))
        #expect(abs(Double(sampled) / Double(threads) - expected) < 0.015)  // 4 standard errors
    }
}

@Suite struct ProfileTableTests {
    /// A table in this process's metadata memory (never freed, as the profiler's).
    func makeTable(rate: UInt) -> UnsafeMutablePointer<ProfileTable> {
        let table = UnsafeMutablePointer<ProfileTable>.allocate(capacity: 1)
        table.initialize(to: ProfileTable(rate: rate))
        return table
    }

    @Test func bucketsAreKeyedByStackAndSizeAndFreesLeaveTheirTotals() throws {
        let table = makeTable(rate: 1024)
        let stackA: [UInt] = [0x1000, 0x2000, 0x3000]
        let stackB: [UInt] = [0x1000, 0x2000, 0x3001]
        var address: UInt = 0x7000_0000
        func record(_ stack: [UInt], _ size: UInt) -> UInt {
            address += 0x2000
            let at = address
            let recorded = stack.withUnsafeBufferPointer { table.pointee.recordAllocation(address: at, size: size, frames: $0.baseAddress!, depth: $0.count) }
            #expect(recorded)
            return address
        }
        let a1 = record(stackA, 100)
        _ = record(stackA, 100)
        let a3 = record(stackA, 200)
        let b1 = record(stackB, 100)
        #expect(table.pointee.isLive(a1) && table.pointee.isLive(b1))
        let freed = [table.pointee.recordFree(address: a1), table.pointee.recordFree(address: b1),
                     table.pointee.recordFree(address: b1), table.pointee.recordFree(address: 0x1234)]
        #expect(freed == [true, true, false, false])  // b1 is not live any more; 0x1234 never was
        #expect(!table.pointee.isLive(a1) && table.pointee.isLive(a3))

        var buckets: [(size: UInt, frames: [UInt], allocations: UInt, frees: UInt)] = []
        var bucket = table.pointee.firstBucket
        while let current = bucket {
            let frames = Array(UnsafeBufferPointer(start: ProfileBucket.frames(current), count: Int(current.pointee.depth)))
            buckets.append((current.pointee.size, frames, current.pointee.allocations, current.pointee.frees))
            bucket = current.pointee.nextBucket
        }
        #expect(buckets.count == 3)
        let sorted = buckets.sorted { ($0.frames.last!, $0.size) < ($1.frames.last!, $1.size) }
        #expect(sorted[0].size == 100 && sorted[0].frames == stackA && sorted[0].allocations == 2 && sorted[0].frees == 1)
        #expect(sorted[1].size == 200 && sorted[1].frames == stackA && sorted[1].allocations == 1 && sorted[1].frees == 0)
        #expect(sorted[2].size == 100 && sorted[2].frames == stackB && sorted[2].allocations == 1 && sorted[2].frees == 1)
        let totals = table.pointee.totals()
        #expect(totals.liveCount == 2 && totals.liveBytes == 300 && totals.allCount == 4 && totals.allBytes == 500)
        let weight100 = sampleWeight(size: 100, rate: 1024)
        let weight200 = sampleWeight(size: 200, rate: 1024)
        let estimate = table.pointee.estimatedBytes()
        #expect(abs(estimate.live - (100 * weight100 + 200 * weight200)) < 1e-6)
        #expect(abs(estimate.allocated - (300 * weight100 + 200 * weight200)) < 1e-6)
    }

    @Test func aResizedSampleMovesWithItsOneAllocationToItsNewSize() {
        let table = makeTable(rate: 4096)
        let stack: [UInt] = [0x4000, 0x5000]
        let recorded = stack.withUnsafeBufferPointer { table.pointee.recordAllocation(address: 0x10000, size: 1000, frames: $0.baseAddress!, depth: 2) }
        #expect(recorded)
        for size: UInt in [2000, 2999, 50000, 3000] {
            let resized = table.pointee.recordResize(address: 0x10000, to: 0x10000, size: size)
            #expect(resized)
        }
        let unknown = table.pointee.recordResize(address: 0x20000, to: 0x20000, size: 10)
        #expect(!unknown)
        // One allocation, live, of 3000 bytes (on the grid: 3008), from the same stack;
        // the emptied buckets (1000, 2000, 50176) hold nothing, and 2999 and 3000 share
        // one.
        let totals = table.pointee.totals()
        #expect(totals.liveCount == 1 && totals.liveBytes == 3008 && totals.allCount == 1 && totals.allBytes == 3008)
        var bucket = table.pointee.firstBucket
        var buckets = 0
        var framePointers = Set<UInt>()
        while let current = bucket {
            buckets += 1
            #expect(current.pointee.allocations == (current.pointee.size == 3008 ? 1 : 0))
            #expect(Array(UnsafeBufferPointer(start: ProfileBucket.frames(current), count: Int(current.pointee.depth))) == stack)
            framePointers.insert(UInt(bitPattern: ProfileBucket.frames(current)))
            bucket = current.pointee.nextBucket
        }
        #expect(buckets == 4)
        #expect(framePointers.count == 1)  // the stack is stored once: resized buckets share it
        let freed = table.pointee.recordFree(address: 0x10000)
        #expect(freed)
        #expect(table.pointee.totals().liveCount == 0 && table.pointee.totals().allCount == 1)
    }

    @Test func aSampleMovedByItsResizeIsFoundAtItsNewAddress() {
        // realloc of an object mapped on its own may move it (mremap): the sample must
        // follow, or its free would find nothing and it would stay in use for ever.
        let table = makeTable(rate: 4096)
        var frame: UInt = 0x4000
        let recorded = table.pointee.recordAllocation(address: 0x10000, size: 100 << 20, frames: &frame, depth: 1)
        #expect(recorded)
        let moved = table.pointee.recordResize(address: 0x10000, to: 0x90000, size: 200 << 20)
        #expect(moved)
        #expect(!table.pointee.isLive(0x10000) && table.pointee.isLive(0x90000))
        let freedOld = table.pointee.recordFree(address: 0x10000)
        let freedNew = table.pointee.recordFree(address: 0x90000)
        #expect(!freedOld && freedNew)
        #expect(table.pointee.totals().liveCount == 0 && table.pointee.live.count == 0)
    }

    @Test func aBufferGrownByteByByteMakesABoundedNumberOfBuckets() {
        // One sampled buffer grown in place from 1 byte to 64 KiB, a byte at a time.
        let table = makeTable(rate: 4096)
        var frame: UInt = 0x4000
        _ = table.pointee.recordAllocation(address: 0x10000, size: 1, frames: &frame, depth: 1)
        for size: UInt in 2...(64 << 10) { _ = table.pointee.recordResize(address: 0x10000, to: 0x10000, size: size) }
        // 127 exact sizes below 128, then 64 per doubling from 128 to 64 KiB (9 doublings).
        #expect(table.pointee.buckets.count <= 127 + 64 * 9 + 1)
        #expect(table.pointee.totals().liveCount == 1 && table.pointee.totals().liveBytes == 64 << 10)
    }

    @Test func resizedSizesAreRoundedUpToAFinerThanTwoPercentGrid() {
        var distinct = Set<UInt>()
        for size: UInt in 1...(1 << 20) {
            let rounded = resizedSizeGrid(size)
            #expect(rounded >= size && Double(rounded - size) <= Double(size) / 64)
            distinct.insert(rounded)
        }
        // 127 exact sizes, then 64 per power of two from 128 to 1 MiB.
        #expect(distinct.count <= 127 + 64 * 13 + 1)
        #expect(resizedSizeGrid(UInt.max) == UInt.max)
    }

    @Test func tablesGrowAndFindEveryRecord() {
        let table = makeTable(rate: 1)
        let count = 40_000
        var frames: [UInt] = [0xABC, 0]
        for i in 0..<count {
            frames[1] = UInt(i % 5000)  // 5000 stacks: the bucket table grows too
            let recorded = frames.withUnsafeBufferPointer { table.pointee.recordAllocation(address: UInt(0x1_0000_0000 + i * 16), size: 16, frames: $0.baseAddress!, depth: 2) }
            #expect(recorded)
        }
        #expect(table.pointee.live.count == UInt(count) && table.pointee.live.headCount >= UInt(count))
        #expect(table.pointee.buckets.count == 5000 && table.pointee.buckets.headCount >= 5000)
        var missing = 0
        for i in stride(from: count - 1, through: 0, by: -1) where !table.pointee.recordFree(address: UInt(0x1_0000_0000 + i * 16)) {
            missing += 1
        }
        #expect(missing == 0)
        #expect(table.pointee.live.count == 0)
        #expect(table.pointee.totals().allCount == UInt(count) && table.pointee.totals().liveCount == 0)
    }
}

@Suite struct ProfileTextTests {
    /// The table's text, and whether it fit textBound (a writer with no sink fails
    /// when it must drain).
    func text(of table: UnsafeMutablePointer<ProfileTable>) -> (String, Bool) {
        let capacity = table.pointee.textBound
        let memory = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        defer { memory.deallocate() }
        var writer = ReportWriter(buffer: memory, capacity: capacity, descriptor: -1)
        table.pointee.format(into: &writer)
        return (String(decoding: writer.text, as: UTF8.self), writer.failed)
    }

    @Test func theProfileIsGperftoolsHeapV2Text() {
        let table = UnsafeMutablePointer<ProfileTable>.allocate(capacity: 1)
        table.initialize(to: ProfileTable(rate: 524288))
        let stack: [UInt] = [0x55_0000_1235, 0x55_0000_2000, 0x7f_0000_0042]
        for (i, size) in [48, 48, 16].enumerated() {
            _ = stack.withUnsafeBufferPointer { table.pointee.recordAllocation(address: UInt(0x1000 * (i + 1)), size: UInt(size), frames: $0.baseAddress!, depth: 3) }
        }
        _ = table.pointee.recordFree(address: 0x1000)
        var none: UInt = 0
        _ = table.pointee.recordAllocation(address: 0x9000, size: UInt.max / 2, frames: &none, depth: 0)
        let (profile, overflowed) = text(of: table)
        #expect(!overflowed)
        // Newest bucket first; the first frame is written less 1 (readers take it as a PC).
        #expect(profile == """
            heap profile: 3: \(UInt.max / 2 + 64) [4: \(UInt.max / 2 + 112)] @ heap_v2/524288
            1: \(UInt.max / 2) [1: \(UInt.max / 2)] @ 0x0
            1: 16 [1: 16] @ 0x5500001234 0x5500002000 0x7f00000042
            1: 48 [2: 96] @ 0x5500001234 0x5500002000 0x7f00000042

            MAPPED_LIBRARIES:

            """)
    }

    @Test func hexNumbersAndFileNameTemplates() {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 8)
        defer { memory.deallocate() }
        var writer = ReportWriter(buffer: memory, capacity: 256, descriptor: -1)
        writer.put(hex: 0xDEAD)
        writer.put(" ")
        writer.put(hex: 0)
        writer.put(" ")
        writer.put(hex: UInt.max)
        writer.put(" ")
        "/tmp/heap.%p.%%p.%q".withCString { writer.put(expanding: $0) }
        #expect(String(decoding: writer.text, as: UTF8.self) == "0xdead 0x0 0xffffffffffffffff /tmp/heap.\(getpid()).%p.%q")
    }

}
