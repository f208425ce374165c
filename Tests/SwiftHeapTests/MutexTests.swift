import Testing
import CShim
@testable import SwiftHeap

/// The futex mutex (Platform.swift) and the plain-store forms its lock and unlock take
/// while the process is single-threaded (the shim's sh_lock_unshared and
/// sh_unlock_unshared). The test process runs threads, so its Mutex calls take the
/// atomic forms; the single-threaded ones are checked on the word directly, and end to
/// end by Tests/c/first_thread.c.
@Suite struct MutexTests {
    /// Word before, then what sh_lock_unshared returns and leaves.
    @Test(arguments: [
        (UInt32(0), Int32(1), UInt32(1)),  // free: taken
        (1, 0, 1),  // held: refused, unchanged (a signal handler's lock attempt goes to lockSlow)
        (2, 0, 2),  // held with a waiter: refused, unchanged
    ])
    func unsharedLockTakesOnlyAFreeWord(before: UInt32, taken: Int32, after: UInt32) {
        var word = before
        #expect(sh_lock_unshared(&word) == taken)
        #expect(word == after)
    }

    /// Word before, then what sh_unlock_unshared returns and leaves: a word with a waiter
    /// is left for the atomic release, which wakes it.
    @Test(arguments: [
        (UInt32(1), Int32(1), UInt32(0)),  // held, no waiter: released
        (2, 0, 2),  // a waiter: refused, unchanged
        (0, 0, 0),  // not held: refused (the atomic release then stores 0 too)
    ])
    func unsharedUnlockReleasesOnlyAWordWithNoWaiter(before: UInt32, released: Int32, after: UInt32) {
        var word = before
        #expect(sh_unlock_unshared(&word) == released)
        #expect(word == after)
    }

    @Test func unsharedTakeEmptiesASlot() {
        var marker = 0
        var slot: UnsafeMutableRawPointer? = UnsafeMutableRawPointer(&marker)
        let held = slot
        #expect(sh_take_ptr_unshared(&slot) == held)
        #expect(slot == nil)
        #expect(sh_take_ptr_unshared(&slot) == nil)
    }

    /// In a process with threads, lock and unlock are the atomic ones: two threads adding
    /// under the lock lose no increment.
    @Test func aLockedCounterLosesNoIncrementAcrossThreads() async {
        #expect(sh_libc_single_threaded() == 0, "the test process runs threads")
        let lock = UnsafeMutablePointer<Mutex>.allocate(capacity: 1)
        lock.initialize(to: Mutex())
        let counter = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        counter.initialize(to: 0)
        defer {
            lock.deallocate()
            counter.deallocate()
        }
        let lockBits = UInt(bitPattern: lock), counterBits = UInt(bitPattern: counter)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let l = UnsafeMutablePointer<Mutex>(bitPattern: lockBits)!
                    let c = UnsafeMutablePointer<Int>(bitPattern: counterBits)!
                    for _ in 0..<100_000 {
                        l.lock()
                        c.pointee += 1
                        l.unlock()
                    }
                }
            }
        }
        #expect(counter.pointee == 400_000)
        #expect(lock.pointee.state == 0)
    }
}
