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
// This file only formats, into a ReportWriter whose buffer holds the whole text
// (textBound), so that nothing is written under the profile lock; ProfileDump.swift
// writes the file.

import CShim

/// Bytes of the header line, a bucket line without frames, and one frame, at most.
let profileHeaderBound = 160
let profileLineBound = 4 * 20 + 16
let profileFrameBound = 19

extension ProfileTable {
    /// The most bytes format(into:) can write for this table.
    var textBound: Int {
        profileHeaderBound &+ Int(bitPattern: buckets.count) &* profileLineBound &+ Int(bitPattern: frameCount) &* profileFrameBound
    }

    /// Writes the profile's header, one line per bucket and the MAPPED_LIBRARIES line
    /// (the caller appends /proc/self/maps).
    func format(into text: inout ReportWriter) {
        let totals = totals()
        text.put("heap profile: ")
        appendCounts(&text, totals.liveCount, totals.liveBytes, totals.allCount, totals.allBytes)
        text.put(" @ heap_v2/")
        text.put(number: rate)
        text.put("\n")
        var bucket = firstBucket
        while let current = bucket {
            if current.pointee.allocations == 0 {  // its one object was resized into another bucket
                bucket = current.pointee.nextBucket
                continue
            }
            let liveCount = current.pointee.allocations &- current.pointee.frees
            let size = current.pointee.size
            appendCounts(&text, liveCount, liveCount &* size, current.pointee.allocations, current.pointee.allocations &* size)
            text.put(" @")
            let frames = ProfileBucket.frames(current)
            for i in 0..<Int(bitPattern: current.pointee.depth) {
                text.put(" ")
                text.put(hex: i == 0 ? frames[i] &- 1 : frames[i])
            }
            // A line needs an address: a stack the unwinder could not walk is "0x0".
            if current.pointee.depth == 0 { text.put(" 0x0") }
            text.put("\n")
            bucket = current.pointee.nextBucket
        }
        text.put("\nMAPPED_LIBRARIES:\n")
    }

    /// `<count>: <bytes> [<count>: <bytes>]`
    private func appendCounts(_ text: inout ReportWriter, _ liveCount: UInt, _ liveBytes: UInt, _ allCount: UInt, _ allBytes: UInt) {
        text.put(number: liveCount)
        text.put(": ")
        text.put(number: liveBytes)
        text.put(" [")
        text.put(number: allCount)
        text.put(": ")
        text.put(number: allBytes)
        text.put("]")
    }
}
