// The platform layer: memory from the kernel (mmap, mprotect, madvise), a futex
// mutex, and diagnostics written with write(2).
//
// Nothing here allocates through malloc, and nothing here may: these are the
// primitives the allocator is built from. Addresses are passed as UInt so that the
// layers above can do address arithmetic without pointer conversions.

import CShim

// MARK: - Memory from the kernel

/// Maps `bytes` of zeroed read-write memory for the allocator's own tables. MAP_NORESERVE:
/// tables are mostly untouched, and must not count against the commit limit. Returns 0
/// on failure.
func osMap(_ bytes: UInt) -> UInt {
    guard let p = sh_mmap(nil, Int(bitPattern: bytes), PROT_READ | PROT_WRITE, MAP_NORESERVE) else { return 0 }
    return UInt(bitPattern: p)
}

/// Maps `bytes` of metadata memory (osMap) aligned to `alignment` (a power of two at
/// least the OS page), by over-mapping and trimming. Returns 0 on failure.
func osMapAligned(_ bytes: UInt, alignment: UInt) -> UInt {
    mapAligned(bytes, alignment: alignment, objectMemory: false)
}

/// `bytes` aligned to `alignment` from osMapMemory (objectMemory) or osMap: the aligned
/// part of a mapping padded by the alignment, the rest unmapped. Returns 0 on failure.
private func mapAligned(_ bytes: UInt, alignment: UInt, objectMemory: Bool) -> UInt {
    let (padded, overflow) = bytes.addingReportingOverflow(alignment &- osPageSize)
    if overflow { return 0 }
    let raw = objectMemory ? osMapMemory(padded) : osMap(padded)
    if raw == 0 { return 0 }
    let base = alignUp(raw, alignment)
    if base > raw { osUnmap(raw, base &- raw) }
    let end = base &+ bytes
    let rawEnd = raw &+ padded
    if rawEnd > end { osUnmap(end, rawEnd &- end) }
    return base
}

/// Maps `bytes` of zeroed read-write memory for objects: the heap's regions and objects
/// mapped on their own. Accounted as glibc's mappings are (no MAP_NORESERVE), so that the
/// kernel's overcommit policy refuses absurd sizes at once, as it does glibc's. With a
/// `hint`, only exactly there (MAP_FIXED_NOREPLACE: never over an existing mapping; a
/// kernel that does not know the flag treats the hint as advisory, and a mapping that
/// lands elsewhere is undone). Returns 0 on failure.
func osMapMemory(_ bytes: UInt, at hint: UInt = 0) -> UInt {
    if hint == 0 {
        guard let p = sh_mmap(nil, Int(bitPattern: bytes), PROT_READ | PROT_WRITE, 0) else { return 0 }
        return UInt(bitPattern: p)
    }
    guard let p = sh_mmap(UnsafeMutableRawPointer(bitPattern: hint), Int(bitPattern: bytes),
                          PROT_READ | PROT_WRITE, MAP_FIXED_NOREPLACE) else { return 0 }
    let address = UInt(bitPattern: p)
    if address != hint {
        osUnmap(address, bytes)
        return 0
    }
    return address
}

/// Maps `bytes` of object memory (osMapMemory) aligned to `alignment` (a power of two at
/// least the OS page), by over-mapping and trimming. Returns 0 on failure.
func osMapMemoryAligned(_ bytes: UInt, alignment: UInt) -> UInt {
    mapAligned(bytes, alignment: alignment, objectMemory: true)
}

/// Resizes the mapping [address, address+oldBytes) to newBytes, moving it if it must.
/// Returns its new address, or 0 (the old mapping unchanged) on failure.
func osRemap(_ address: UInt, _ oldBytes: UInt, _ newBytes: UInt) -> UInt {
    guard let p = sh_mremap(UnsafeMutableRawPointer(bitPattern: address), Int(bitPattern: oldBytes),
                            Int(bitPattern: newBytes)) else { return 0 }
    return UInt(bitPattern: p)
}

func osUnmap(_ address: UInt, _ bytes: UInt) {
    _ = munmap(UnsafeMutableRawPointer(bitPattern: address), Int(bitPattern: bytes))
}

/// Returns the physical memory behind [address, address+bytes) to the kernel. The
/// range stays mapped and, if this returns true, reads back as zero. It can fail: EINVAL
/// on pages locked by mlockall or mlock, EPERM under a seccomp filter that denies
/// madvise; then the pages keep what they held, and nothing may count on them being zero
/// (PageHeap.swift: zeroLarge).
@discardableResult func osRelease(_ address: UInt, _ bytes: UInt) -> Bool {
    madvise(UnsafeMutableRawPointer(bitPattern: address), Int(bitPattern: bytes), MADV_DONTNEED) == 0
}

/// The calling thread's pthread_t as a word (fork's lock owner: Fork.swift, Mutex).
@inline(__always) func currentThreadID() -> UInt {
    UInt(bitPattern: Int(bitPattern: pthread_self()))
}

// MARK: - Mutex

/// A futex mutex (Drepper's "Futexes are tricky", mutex 2): 0 unlocked, 1 locked,
/// 2 locked with waiters. The zero value is unlocked, so a Mutex in zeroed memory
/// needs no initialisation. Always used through a pointer into stable memory.
///
/// While the process is single-threaded (glibc's __libc_single_threaded: it has never
/// created a thread, and SwiftHeap's scavenger runs on the caller's thread until it has)
/// lock and unlock are a plain load and store (sh_lock_unshared): the atomic
/// read-modify-write waits for the caller's pending stores, and in a loop of big objects
/// that the program writes, the heap lock's two took a fifth of the time (perf). A lock
/// held when its holder creates the first thread is released atomically, waking any
/// waiter.
///
/// `rank` places the lock in the one lock order (LockRanks.swift); the `swift test`
/// build checks on every lock() that it is taken in that order. 0: not ranked.
struct Mutex {
    var state: UInt32 = 0
    var rank: UInt32 = 0

    init() {}
    init(rank: LockRank) { self.rank = rank.rawValue }
}

extension UnsafeMutablePointer where Pointee == Mutex {
    @inline(__always) private var word: UnsafeMutablePointer<UInt32> { pointer(to: \.state)! }

    /// Takes the lock if it is free: a plain load and store while the process is
    /// single-threaded, else a compare-and-swap. No order check.
    @inline(__always) private func acquireIfFree() -> Bool {
        (sh_libc_single_threaded() != 0 ? sh_lock_unshared(word) : sh_cas32(word, 0, 1)) != 0
    }

    @inline(__always) func lock() {
        if acquireIfFree() {
            checkLockOrder(pointee.rank)
            return
        }
        lockSlow()
    }

    @inline(never) private func lockSlow() {
        if heldByForkingThread { return }
        checkLockOrder(pointee.rank)
        // Spin briefly: critical sections are short, and a futex round trip costs more.
        var spins = 0
        while spins < 100 {
            if sh_load32_relaxed(word) == 0 && sh_cas32(word, 0, 1) != 0 { return }
            sh_cpu_relax()
            spins &+= 1
        }
        var observed = sh_xchg32(word, 2)
        while observed != 0 {
            sh_futex_wait(word, 2)
            observed = sh_xchg32(word, 2)
        }
    }

    /// Takes the lock if it is free (no order check: a try cannot deadlock).
    func tryLock() -> Bool {
        if !acquireIfFree() { return false }
        noteLockTaken(pointee.rank)
        return true
    }

    @inline(__always) func unlock() {
        if heldByForkingThread { return }
        noteLockReleased(pointee.rank)
        if sh_libc_single_threaded() != 0 && sh_unlock_unshared(word) != 0 { return }
        if sh_xchg32(word, 0) == 2 { sh_futex_wake(word, 1) }
    }

    /// Whether the caller is inside fork's window (Fork.swift), holding every allocator
    /// lock since the allocator's prepare handler: a fork handler registered before that
    /// one (a library's, whose constructor ran first) runs there and may allocate, and
    /// its lock and unlock of a lock its thread already holds are nested, no-ops. No other
    /// thread takes one of those locks in the window (they all wait). A lock fork does not
    /// take (the scavenger's runner lock) the forking thread does not take in the window
    /// (ScavengerRunner.swift: pokeSlow), or its unlock would be lost.
    private var heldByForkingThread: Bool {
        let owner = sh_fork_owner()
        return owner != 0 && owner == currentThreadID()
    }

    /// Makes the mutex unlocked without waking anyone: for the child after fork, where
    /// the thread that held it no longer exists (or, with `heldByCaller`, is the caller,
    /// which took it in fork's prepare handler).
    func reinitialize(heldByCaller: Bool = false) {
        if heldByCaller { noteLockReleased(pointee.rank) }
        sh_store32(word, 0)
    }
}

// MARK: - Diagnostics

/// Writes `text` to standard error with write(2) (stdio allocates).
func writeDiagnostic(_ text: StaticString) {
    _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
}

/// Writes `value` in decimal, or in hexadecimal with a 0x prefix, to standard error.
func writeDiagnostic(number value: UInt, hex: Bool = false) {
    var buffer: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes, enough for 0x + 16 digits or 20 digits
    withUnsafeMutableBytes(of: &buffer) { bytes in
        var position = bytes.count
        var remaining = value
        let radix: UInt = hex ? 16 : 10
        repeat {
            let digit = UInt8(truncatingIfNeeded: remaining % radix)
            position &-= 1
            bytes[position] = digit < 10 ? 48 &+ digit : 87 &+ digit
            remaining /= radix
        } while remaining != 0
        if hex {
            position &-= 1; bytes[position] = 120  // x
            position &-= 1; bytes[position] = 48   // 0
        }
        _ = write(2, bytes.baseAddress! + position, bytes.count &- position)
    }
}

/// Reports heap corruption or misuse in one line and aborts:
/// `swiftheap: <call>: <problem> 0x<address>`.
func fatalMisuse(_ call: StaticString, _ problem: StaticString, address: UInt) -> Never {
    writeDiagnostic("swiftheap: ")
    writeDiagnostic(call)
    writeDiagnostic(": ")
    writeDiagnostic(problem)
    writeDiagnostic(" ")
    writeDiagnostic(number: address, hex: true)
    writeDiagnostic("\n")
    abort()
}

/// Reports a broken internal invariant and aborts. Reaching this is a SwiftHeap bug.
func fatalInternal(_ what: StaticString) -> Never {
    writeDiagnostic("swiftheap: internal error: ")
    writeDiagnostic(what)
    writeDiagnostic("\n")
    abort()
}
