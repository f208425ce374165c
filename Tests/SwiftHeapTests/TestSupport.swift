// Helpers shared by the test suites: the heap lock, threads, shared memory between them.
import Foundation
@testable import SwiftHeap

/// A page heap, central lists and scavenger of their own, wired as the root wires the
/// process's (Heap.swift), so that a test sees exactly what it did: no other suite
/// allocates from them. The size-class table is the process's (read-only). Its centrals
/// keep no emptied span unless `keptEmptyBytes` says (the process's keep
/// defaultKeptEmptyBytes), so that a span that empties goes back to the page heap at once.
final class PrivateHeap {
    let classes: SizeClassTable
    let events: UnsafeMutablePointer<HeapEvents>
    let pageHeap: UnsafeMutablePointer<PageHeap>
    let centrals: UnsafeMutablePointer<Central>
    let scavenger: UnsafeMutablePointer<Scavenger>

    init(config: Config = Config(), keptEmptyBytes: UInt = 0) {
        precondition(ensureHeapInitialized())
        classes = heap.pointee.classes
        events = .allocate(capacity: 1)
        events.initialize(to: HeapEvents())
        pageHeap = .allocate(capacity: 1)
        precondition(PageHeap.initialize(pageHeap, events: events))
        centrals = Central.makeAll(classes: classes, pageHeap: pageHeap, keptEmptyBytes: keptEmptyBytes)!
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

/// Runs `body` on `count` threads at once and joins them: when it returns, every thread
/// has exited, its key destructors (the cache flush and retire) included. (Waiting for
/// the bodies alone would race with the exits: a thread leaves the body before it
/// retires its cache.) Holds the thread census shared: a test that counts the
/// process's thread caches runs while no other test's threads do.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    threadCensus.shared { spawnAndJoin(count, body) }
}

/// Runs `body` while `count` more threads live that have allocated (their caches are
/// live), then lets them free and exit and joins them.
func whileThreadsLive<T>(_ count: Int, _ body: () throws -> T) rethrows -> T {
    let ready = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
    var threads: [Thread] = []
    let finished = DispatchGroup()
    for _ in 0..<count {
        finished.enter()
        let thread = Thread {
            let p = allocate(16)
            ready.signal()
            done.wait()
            deallocate(p)
            finished.leave()
        }
        thread.start()
        threads.append(thread)
    }
    for _ in 0..<count { ready.wait() }
    defer {
        for _ in 0..<count { done.signal() }
        finished.wait()
    }
    return try body()
}

/// The test process parks no thread's cache (CacheRegistry.park): the tests that start
/// threads expect each to make a fresh cache and to flush it as it exits, but for the
/// tests of parking, which turn it on while they hold the census exclusively.
let parkingOffInTests: Void = {
    precondition(ensureHeapInitialized())
    processCaches.pointee.parkLimit = 0
}()

/// `onThreads` inside `threadCensus.exclusive`, where the census is already held.
func spawnAndJoin(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    parkingOffInTests
    final class Start {
        let body: @Sendable (Int) -> Void
        let index: Int
        init(_ body: @escaping @Sendable (Int) -> Void, _ index: Int) { self.body = body; self.index = index }
    }
    var threads: [pthread_t] = []
    for index in 0..<count {
        var thread = pthread_t()
        let start = Unmanaged.passRetained(Start(body, index)).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
            start.body(start.index)
            return nil
        }, start)
        precondition(rc == 0, "pthread_create: \(rc)")
        threads.append(thread)
    }
    for thread in threads { precondition(pthread_join(thread, nil) == 0) }
}

/// Tests run in parallel. One that counts live thread caches holds this exclusively;
/// every test that starts threads holds it shared (through `onThreads`).
final class ThreadCensus: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t> = {
        let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
        precondition(pthread_rwlock_init(lock, nil) == 0)
        return lock
    }()
    func shared<T>(_ body: () throws -> T) rethrows -> T {
        precondition(pthread_rwlock_rdlock(lock) == 0)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
    func exclusive<T>(_ body: () throws -> T) rethrows -> T {
        precondition(pthread_rwlock_wrlock(lock) == 0)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
let threadCensus = ThreadCensus()

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
