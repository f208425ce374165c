// Helpers shared by the test suites: the heap lock, threads, shared memory between them.
import Foundation
@testable import SwiftHeap

/// A page heap, central lists and scavenger of their own, wired as the root wires the
/// process's (Heap.swift), so that a test sees exactly what it did: no other suite
/// allocates from them. The size-class table is the process's (read-only).
final class PrivateHeap {
    let classes: SizeClassTable
    let events: UnsafeMutablePointer<HeapEvents>
    let pageHeap: UnsafeMutablePointer<PageHeap>
    let centrals: UnsafeMutablePointer<Central>
    let scavenger: UnsafeMutablePointer<Scavenger>

    init(config: Config = Config()) {
        precondition(ensureHeapInitialized())
        classes = heap.pointee.classes
        events = .allocate(capacity: 1)
        events.initialize(to: HeapEvents())
        pageHeap = .allocate(capacity: 1)
        precondition(PageHeap.initialize(pageHeap, events: events))
        centrals = Central.makeAll(classes: classes, pageHeap: pageHeap)!
        scavenger = .allocate(capacity: 1)
        Scavenger.initialize(scavenger, pageHeap: pageHeap, centrals: centrals, classCount: classes.count, events: events)
        scavenger.pointee.config = config
    }

    deinit {
        pageHeap.destroy()
        pageHeap.deallocate()
        events.deallocate()
        scavenger.deallocate()
    }

    /// Runs `body` holding this page heap's lock.
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        pageHeap.lockPointer.lock()
        defer { pageHeap.lockPointer.unlock() }
        return try body()
    }

    /// The class of `size` and its central list.
    func central(forSize size: UInt) -> (sizeClass: Int, central: UnsafeMutablePointer<Central>) {
        let cls = classes.sizeClass(of: size)
        return (cls, centrals + cls)
    }
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
