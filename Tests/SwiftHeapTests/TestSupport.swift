// Helpers shared by the test suites: the heap lock, threads, shared memory between them.
import Foundation
@testable import SwiftHeap

/// Runs `body` holding the heap lock.
func withHeapLock<T>(_ body: () throws -> T) rethrows -> T {
    heapLock.lock()
    defer { heapLock.unlock() }
    return try body()
}

/// Runs `body` on `count` threads at once and waits for them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            body(index)
            group.leave()
        }
        thread.start()
    }
    group.wait()
}

/// A slot array handed between test threads (they synchronise by joining).
struct SharedSlots: @unchecked Sendable {
    let slots: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    init(capacity: Int) { slots = .allocate(capacity: capacity) }
}

/// A counter shared by test threads.
final class SharedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add(_ n: Int) { lock.lock(); count += n; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
