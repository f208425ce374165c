// Report output: the memory a report is formatted in, and a writer that formats text
// into it and drains it to a sink: a file descriptor (write(2)) or a stdio FILE *
// (fwrite, for malloc_info).
//
// Design. Reports (malloc_stats, the summary at exit, malloc_info) are formatted in
// Swift with no allocation: each report maps its own memory (osMap) and unmaps it at
// the end, so two threads reporting at once share nothing and a fork in the middle of
// a report leaves the child no state to repair. The figures are taken first, under
// the locks that guard them, into the start of that memory (Stats.swift); the text is
// formatted after, with no lock held, into the rest.
//
// Invariants:
//   * A writer exists only while its caller holds no allocator lock: it drains to its
//     sink whenever its buffer fills and at the end, and fwrite may call malloc (and
//     fork takes stdio's list lock).
//   * Output is never silently cut: a full buffer is drained, not truncated; a sink
//     that fails (EPIPE, a closed descriptor) marks the writer failed and drops the rest.

import CShim

/// Bytes mapped for one report: its figures, then its text buffer.
let reportMemoryBytes: UInt = 64 << 10

/// Runs `body` with `reportMemoryBytes` of zeroed memory of its own, or returns nil if
/// the kernel refuses it. Holds no lock.
func withReportMemory<Result>(_ body: (UnsafeMutableRawPointer) -> Result) -> Result? {
    let base = osMap(reportMemoryBytes)
    if base == 0 { return nil }
    let result = body(UnsafeMutableRawPointer(bitPattern: base)!)
    osUnmap(base, reportMemoryBytes)
    return result
}

struct ReportWriter {
    private let buffer: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    private var length = 0
    /// The sink: a descriptor if `stream` is nil.
    private let descriptor: Int32
    private let stream: UnsafeMutableRawPointer?
    /// Set when the sink refused bytes; what follows is dropped.
    private(set) var failed = false

    /// A writer over `capacity` bytes at `buffer` draining to file descriptor `descriptor`.
    init(buffer: UnsafeMutableRawPointer, capacity: Int, descriptor: Int32) {
        self.buffer = buffer.assumingMemoryBound(to: UInt8.self)
        self.capacity = capacity
        self.descriptor = descriptor
        self.stream = nil
    }

    /// A writer over `capacity` bytes at `buffer` draining to the stdio stream `stream` (a FILE *).
    init(buffer: UnsafeMutableRawPointer, capacity: Int, stream: UnsafeMutableRawPointer) {
        self.buffer = buffer.assumingMemoryBound(to: UInt8.self)
        self.capacity = capacity
        self.descriptor = -1
        self.stream = stream
    }

    mutating func put(byte: UInt8) {
        if length == capacity { flush() }
        buffer[length] = byte
        length &+= 1
    }

    mutating func put(_ text: StaticString) {
        put(bytes: text.utf8Start, count: text.utf8CodeUnitCount)
    }

    /// A NUL-terminated string of SwiftHeap's own (the version): written as is, unescaped.
    mutating func put(cString text: UnsafePointer<CChar>) {
        put(bytes: UnsafeRawPointer(text).assumingMemoryBound(to: UInt8.self), count: strlen(text))
    }

    mutating func put(bytes: UnsafePointer<UInt8>, count: Int) {
        var index = 0
        while index < count {
            if length == capacity { flush() }
            let chunk = min(count &- index, capacity &- length)
            memcpy(buffer + length, bytes + index, chunk)
            length &+= chunk
            index &+= chunk
        }
    }

    /// `value` in decimal.
    mutating func put(number value: UInt) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: UInt.max has 20 digits
        withUnsafeMutableBytes(of: &digits) { raw in
            var position = raw.count
            var remaining = value
            repeat {
                position &-= 1
                raw[position] = 48 &+ UInt8(truncatingIfNeeded: remaining % 10)
                remaining /= 10
            } while remaining != 0
            put(bytes: raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + position, count: raw.count &- position)
        }
    }

    /// ` name="value"`: an XML attribute.
    mutating func attribute(_ name: StaticString, _ value: UInt) {
        put(" ")
        put(name)
        put("=\"")
        put(number: value)
        put("\"")
    }

    /// `,"name":value` (without the comma if `first`): a JSON member.
    mutating func member(_ name: StaticString, _ value: UInt, first: Bool = false) {
        put(first ? "\"" : ",\"")
        put(name)
        put("\":")
        put(number: value)
    }

    /// Drains the buffer to the sink. Must hold no allocator lock (fwrite may call malloc).
    mutating func flush() {
        defer { length = 0 }
        if failed || length == 0 { return }
        if let stream {
            if sh_fwrite(buffer, length, stream) != length { failed = true }
            return
        }
        var written = 0
        while written < length {
            let result = write(descriptor, buffer + written, length &- written)
            if result > 0 {
                written &+= result
            } else if result < 0 && sh_errno_get() == EINTR {
                continue
            } else {
                failed = true
                return
            }
        }
    }
}
