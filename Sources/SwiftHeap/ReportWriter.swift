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
    mutating func put(number value: UInt) { put(value, radix: 10) }

    /// `value` as 0x and lowercase hexadecimal digits.
    mutating func put(hex value: UInt) {
        put("0x")
        put(value, radix: 16)
    }

    private mutating func put(_ value: UInt, radix: UInt) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: UInt.max has 20 digits
        withUnsafeMutableBytes(of: &digits) { raw in
            var position = raw.count
            var remaining = value
            repeat {
                position &-= 1
                let digit = UInt8(truncatingIfNeeded: remaining % radix)
                raw[position] = digit < 10 ? 48 &+ digit : 87 &+ digit
                remaining /= radix
            } while remaining != 0
            put(bytes: raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + position, count: raw.count &- position)
        }
    }

    /// A file name template of the knobs (SWIFTHEAP_STATS_FILE, SWIFTHEAP_PROFILE), with
    /// %p replaced by the process id and %% by %.
    mutating func put(expanding template: UnsafePointer<CChar>) {
        let source = UnsafeRawPointer(template).assumingMemoryBound(to: UInt8.self)
        var index = 0
        while source[index] != 0 {
            if source[index] == 37 && source[index &+ 1] == 112 {         // %p
                put(number: UInt(bitPattern: Int(getpid())))
                index &+= 2
            } else if source[index] == 37 && source[index &+ 1] == 37 {  // %%
                put(byte: 37)
                index &+= 2
            } else {
                put(byte: source[index])
                index &+= 1
            }
        }
    }

    /// The bytes formatted and not yet drained (a writer used as a buffer).
    var text: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: buffer, count: length) }

    // MARK: Fields
    //
    // A report's figures are fields: JSON members (`"name":value`, comma-separated in an
    // object or array) when `json`, else XML attributes (` name="value"`, the name's
    // underscores written as hyphens). One list of fields serves both forms.

    /// Whether field() writes JSON members rather than XML attributes.
    var json = false
    /// JSON: whether the current object or array has an entry already (the next one
    /// needs a comma).
    private var needsSeparator = false

    /// Writes a field's name: `,"name":` or ` name="`.
    private mutating func fieldName(_ name: StaticString) {
        if json {
            put(needsSeparator ? ",\"" : "\"")
            put(name)
            put("\":")
            needsSeparator = true
            return
        }
        put(" ")
        var index = 0
        while index < name.utf8CodeUnitCount {
            let byte = name.utf8Start[index]
            put(byte: byte == 95 ? 45 : byte)  // _ -> -
            index &+= 1
        }
        put("=\"")
    }

    mutating func field(_ name: StaticString, _ value: UInt) {
        fieldName(name)
        put(number: value)
        if !json { put("\"") }
    }

    /// A string field; `text` is SwiftHeap's own (no escaping).
    mutating func field(_ name: StaticString, string text: UnsafePointer<CChar>) {
        fieldName(name)
        if json { put("\"") }
        put(cString: text)
        put("\"")
    }

    mutating func field(_ name: StaticString, text: StaticString) {
        fieldName(name)
        if json { put("\"") }
        put(text)
        put("\"")
    }

    /// JSON true/false, XML 1/0.
    mutating func field(_ name: StaticString, flag: Bool) {
        if json {
            fieldName(name)
            put(flag ? "true" : "false")
        } else {
            field(name, flag ? 1 : 0)
        }
    }

    /// JSON: opens an object, as the member `name` or (nil) as an array element.
    mutating func openObject(_ name: StaticString? = nil) {
        if let name { fieldName(name) } else if needsSeparator { put(",") }
        put("{")
        needsSeparator = false
    }

    mutating func closeObject() {
        put("}")
        needsSeparator = true
    }

    /// JSON: opens the array member `name`.
    mutating func openArray(_ name: StaticString) {
        fieldName(name)
        put("[")
        needsSeparator = false
    }

    mutating func closeArray() {
        put("]")
        needsSeparator = true
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
