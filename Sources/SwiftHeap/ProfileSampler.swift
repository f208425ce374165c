// The heap profiler's sampler: which allocations are sampled, and what each stands for.
//
// Sampling is a Poisson process on the bytes a thread allocates (Go's MemProfileRate,
// tcmalloc's sampler): points fall on the byte line at a mean distance of `rate`, and
// an allocation is sampled when a point falls inside it. Each thread keeps the
// distance to its next point (bytesUntilSample); an allocation of `size` bytes below
// it just subtracts, one at or above it is sampled and a fresh distance is drawn,
// exponentially distributed with mean `rate` (by memorylessness, that is the distance
// from the end of the sampled allocation to the next point). So an allocation of size
// s is sampled with probability 1 - exp(-s / rate), independently of the others, and
// a sample of size s stands for 1 / (1 - exp(-s / rate)) allocations of that size:
// Go's scaling, which pprof applies to heap_v2 profiles, exact here because every
// profile line holds allocations of one size (ProfileTable.swift).
//
// The library depends on libc alone, so log and exp (libm) are computed here; the
// precision needed (1e-12 relative) is far beyond what sampling noise can show.
//
// Per-thread state lives in the thread's cache record (CacheHeader.profile) and is
// touched by its own thread only: no lock, no atomic.

import CShim

/// A thread's sampling state. Zero is "not started": the first allocation the thread
/// makes with profiling on seeds the generator and draws the first distance (crossed).
struct ProfileThreadState {
    /// Bytes this thread may still allocate before the next sample point.
    var bytesUntilSample: UInt = 0
    /// xorshift64* state; 0 until seeded.
    var random: UInt64 = 0
    /// Set while this thread records a sample: allocations made meanwhile (by the
    /// unwinder, by a signal handler) are not sampled.
    var busy: Bool = false

    /// Counts an allocation of `size` bytes if it stays short of the sample point, and
    /// returns whether it did; if not, the caller calls crossed. Only the thread itself
    /// calls these.
    @inline(__always) mutating func countIfShort(_ size: UInt) -> Bool {
        let left = bytesUntilSample
        if size < left {
            bytesUntilSample = left &- size
            return true
        }
        return false
    }

    /// The allocation of `size` bytes reached the sample point (countIfShort returned
    /// false): draws the next distance, and returns whether the allocation is to be
    /// sampled. A thread's first call seeds its generator (from `seed` and the clock)
    /// and draws its first distance, from the start of this allocation: the allocation
    /// is sampled if that distance falls inside it, as any other (a thread's first
    /// allocation is not left out, so a thread that allocates once is seen too).
    @inline(never) mutating func crossed(size: UInt, rate: UInt, seed: UInt64) -> Bool {
        if random == 0 {
            random = splitMix64(seed ^ UInt64(bitPattern: sh_monotonic_nanos())) | 1
            let first = nextSampleDistance(rate: rate, random: &random)
            if size < first {
                bytesUntilSample = first &- size
                return false
            }
        }
        bytesUntilSample = nextSampleDistance(rate: rate, random: &random)
        return !busy
    }
}

/// A distance to the next sample point: exponential with mean `rate`, at least 1.
func nextSampleDistance(rate: UInt, random: inout UInt64) -> UInt {
    // A uniform in (0, 1] from 53 random bits.
    let uniform = Double((nextRandom(&random) >> 11) &+ 1) * (1.0 / 9007199254740992.0)
    let distance = -naturalLog(uniform) * Double(rate)
    if !(distance < 1.8e19) { return UInt.max / 2 }
    return max(UInt(distance), 1)
}

/// What one sample of an allocation of `size` bytes stands for, in allocations:
/// 1 / (1 - exp(-size / rate)).
func sampleWeight(size: UInt, rate: UInt) -> Double {
    if rate <= 1 { return 1 }
    let x = Double(size) / Double(rate)
    if x > 40 { return 1 }
    let probability = -expMinusOne(-x)
    return probability > 0 ? 1 / probability : Double(rate)
}

/// xorshift64* (Vigna): a full-period generator over nonzero states.
@inline(__always) func nextRandom(_ state: inout UInt64) -> UInt64 {
    var x = state
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    state = x
    return x &* 0x2545F4914F6CDD1D
}

/// splitmix64's finaliser: spreads a weak seed (an address, a clock) over all bits.
func splitMix64(_ value: UInt64) -> UInt64 {
    var z = value &+ 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
    return z ^ (z >> 31)
}

let ln2: Double = 0.693147180559945309417232121458176568

/// ln(x) for finite x > 0: x = m·2^e with m in [1/√2, √2), ln m = 2·atanh(s) with
/// s = (m-1)/(m+1), |s| < 0.172, by its series (s^2 < 0.0295: 11 terms reach 1e-17).
func naturalLog(_ x: Double) -> Double {
    var bits = x.bitPattern
    var exponent = Int((bits >> 52) & 0x7FF)
    if exponent == 0 {
        // Subnormal: scale into the normal range first.
        bits = (x * 18014398509481984.0).bitPattern  // 2^54
        exponent = Int((bits >> 52) & 0x7FF) &- 54
    }
    exponent &-= 1023
    var mantissa = Double(bitPattern: (bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000)
    if mantissa > 1.4142135623730951 {
        mantissa *= 0.5
        exponent &+= 1
    }
    let s = (mantissa - 1) / (mantissa + 1)
    let s2 = s * s
    var term = s
    var sum = 0.0
    var k = 1.0
    for _ in 0..<11 {
        sum += term / k
        term *= s2
        k += 2
    }
    return 2 * sum + Double(exponent) * ln2
}

/// exp(x) - 1, accurate for small |x| too: x = k·ln2 + r with |r| <= ln2/2,
/// expm1(r) by its Taylor series (18 terms reach 1e-17), then scaled by 2^k.
func expMinusOne(_ x: Double) -> Double {
    if x > 700 { return Double.infinity }
    if x < -40 { return -1 }
    // Round to nearest by truncation (Double.rounded() may lower to libm's round).
    let k = Double(Int(x / ln2 + (x < 0 ? -0.5 : 0.5)))
    let r = x - k * ln2
    var term = r
    var sum = 0.0
    var n = 1.0
    for _ in 0..<18 {
        sum += term
        n += 1
        term *= r / n
    }
    if k == 0 { return sum }
    // 2^k · (1 + sum) - 1, with 2^k built from its bits (-58 <= k <= 1010 here).
    let scale = Double(bitPattern: UInt64(1023 &+ Int(k)) << 52)
    return scale * (1 + sum) - 1
}
