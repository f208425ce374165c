// The heap profile's text: gperftools' heap-profile format, which google-pprof and
// Go's pprof both read.
//
//   heap profile: <live samples>: <live bytes> [<samples>: <bytes>] @ heap_v2/<rate>
//   <live samples>: <live bytes> [<samples>: <bytes>] @ 0x<pc> 0x<return address> ...
//   ...
//
//   MAPPED_LIBRARIES:
//   <the contents of /proc/self/maps>
//
// One line per bucket (stack and size), in sampled (unscaled) counts and bytes:
// `heap_v2/RATE` tells the reader that allocations were sampled at a mean distance of
// RATE bytes, and it scales each line by 1 / (1 - exp(-average size / RATE)), Go's
// unbiasing. Frames are innermost first. Readers take the first address as a program
// counter and subtract 1 from the others (return addresses) to land inside the call;
// the first frame is a return address too, so it is written less 1 here.
//
// This file only formats into memory; Profile.swift writes the file.

import CShim

/// Bytes appended into a fixed buffer; past its capacity, appends are dropped and
/// `overflowed` is set (the caller sizes the buffer with textBound, so that does not
/// happen).
struct TextBuffer {
    var base: UnsafeMutablePointer<UInt8>
    var capacity: Int
    var length: Int = 0
    var overflowed = false

    init(base: UnsafeMutablePointer<UInt8>, capacity: Int) {
        self.base = base
        self.capacity = capacity
    }

    @inline(__always) mutating func append(byte: UInt8) {
        if length < capacity {
            base[length] = byte
            length &+= 1
        } else {
            overflowed = true
        }
    }

    mutating func append(_ text: StaticString) {
        for i in 0..<text.utf8CodeUnitCount { append(byte: text.utf8Start[i]) }
    }

    /// Appends the NUL-terminated string `text`.
    mutating func append(cString text: UnsafePointer<CChar>) {
        var i = 0
        while text[i] != 0 {
            append(byte: UInt8(bitPattern: text[i]))
            i &+= 1
        }
    }

    mutating func append(decimal value: UInt) { append(value, radix: 10) }

    /// Appends 0x and lowercase hexadecimal digits.
    mutating func append(hex value: UInt) {
        append("0x")
        append(value, radix: 16)
    }

    private mutating func append(_ value: UInt, radix: UInt) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: 20 decimal or 16 hex digits
        withUnsafeMutableBytes(of: &digits) { bytes in
            var position = bytes.count
            var remaining = value
            repeat {
                let digit = UInt8(truncatingIfNeeded: remaining % radix)
                position &-= 1
                bytes[position] = digit < 10 ? 48 &+ digit : 87 &+ digit
                remaining /= radix
            } while remaining != 0
            while position < bytes.count {
                append(byte: bytes[position])
                position &+= 1
            }
        }
    }
}

/// Bytes of the header line, a bucket line without frames, and one frame, at most.
let profileHeaderBound = 160
let profileLineBound = 4 * 20 + 16
let profileFrameBound = 19

extension ProfileTable {
    /// The most bytes formatProfile can write for this table.
    var textBound: Int {
        var buckets = 0
        var bucket = firstBucket
        while let current = bucket {
            buckets &+= 1
            bucket = current.pointee.nextBucket
        }
        return profileHeaderBound &+ buckets &* profileLineBound &+ Int(bitPattern: frameCount) &* profileFrameBound
    }

    /// Writes the profile's header, one line per bucket and the MAPPED_LIBRARIES line
    /// (the caller appends /proc/self/maps).
    func format(into text: inout TextBuffer) {
        let totals = totals()
        text.append("heap profile: ")
        appendCounts(&text, totals.liveCount, totals.liveBytes, totals.allCount, totals.allBytes)
        text.append(" @ heap_v2/")
        text.append(decimal: rate)
        text.append("\n")
        var bucket = firstBucket
        while let current = bucket {
            if current.pointee.allocations == 0 {  // its one object was resized into another bucket
                bucket = current.pointee.nextBucket
                continue
            }
            let liveCount = current.pointee.allocations &- current.pointee.frees
            let size = current.pointee.size
            appendCounts(&text, liveCount, liveCount &* size, current.pointee.allocations, current.pointee.allocations &* size)
            text.append(" @")
            let frames = ProfileBucket.frames(current)
            for i in 0..<Int(bitPattern: current.pointee.depth) {
                text.append(" ")
                text.append(hex: i == 0 ? frames[i] &- 1 : frames[i])
            }
            // A line needs an address: a stack the unwinder could not walk is "0x0".
            if current.pointee.depth == 0 { text.append(" 0x0") }
            text.append("\n")
            bucket = current.pointee.nextBucket
        }
        text.append("\nMAPPED_LIBRARIES:\n")
    }

    /// `<count>: <bytes> [<count>: <bytes>]`
    private func appendCounts(_ text: inout TextBuffer, _ liveCount: UInt, _ liveBytes: UInt, _ allCount: UInt, _ allBytes: UInt) {
        text.append(decimal: liveCount)
        text.append(": ")
        text.append(decimal: liveBytes)
        text.append(" [")
        text.append(decimal: allCount)
        text.append(": ")
        text.append(decimal: allBytes)
        text.append("]")
    }
}
