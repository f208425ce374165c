import Testing
@testable import SwiftHeap

@Suite struct SizeClassesTests {
    let table = SizeClassTable.make()!

    @Test func classSizesAreAlignedIncreasingAndEndAtMaxSmallSize() {
        #expect(table.count > 40 && table.count < maxSizeClasses)
        var previous: UInt32 = 0
        for cls in 1..<table.count {
            let size = table.info[cls].size
            #expect(size % 16 == 0, "class \(cls) size \(size) not 16-byte aligned")
            #expect(size > previous)
            previous = size
        }
        #expect(UInt(previous) == maxSmallSize)
    }

    /// The stated bound: above 128 bytes a request wastes less than 1/8 of its object;
    /// at or below 128 bytes less than 16 bytes.
    @Test func worstCaseInternalWasteIsBounded() {
        var worst = 0.0
        for cls in 2..<table.count {
            let size = UInt(table.info[cls].size)
            let smallestRequest = UInt(table.info[cls - 1].size) + 1
            let waste = size - smallestRequest
            if smallestRequest > 128 {
                let fraction = Double(waste) / Double(size)
                worst = max(worst, fraction)
                #expect(fraction < 0.125, "class \(cls) (\(size) B) wastes \(fraction) for a \(smallestRequest) B request")
            } else {
                #expect(waste < 16)
            }
        }
        #expect(worst > 0.1, "the bound should be tight, not vacuous")
    }

    @Test func spanTailWasteIsAtMostAnEighthAndObjectsFitTheBitmap() {
        for cls in 1..<table.count {
            let info = table.info[cls]
            let spanBytes = UInt(info.pages) * pageSize
            #expect(UInt(info.objects) == spanBytes / UInt(info.size))
            #expect((spanBytes - UInt(info.objects) * UInt(info.size)) * 8 <= spanBytes)
            #expect(UInt(info.objects) <= maxObjectsPerSpan)
            #expect(UInt(info.objects) >= minObjectsPerSpan || spanBytes >= 64 << 10)
        }
    }

    /// Classes up to wideSpanMaxObjectSize: no wider span within wideSpanBytes and
    /// hotBitmapObjects objects keeps the tail at most 1/8, and their spans are wider
    /// than a page where a page holds few objects (the rule is not vacuous).
    @Test func smallClassesHaveTheWidestSpanWhoseBitmapSharesTheRecordsFirstLine() {
        var wide = 0
        for cls in 1..<table.count where UInt(table.info[cls].size) <= wideSpanMaxObjectSize {
            let info = table.info[cls]
            let size = UInt(info.size)
            #expect(UInt(info.pages) * pageSize <= wideSpanBytes)
            #expect(UInt(info.objects) <= hotBitmapObjects || info.pages == 1, "class \(cls) (\(size) B)")
            var pages = UInt(info.pages) + 1
            while pages * pageSize <= wideSpanBytes && pages * pageSize / size <= hotBitmapObjects {
                let bytes = pages * pageSize
                #expect((bytes - bytes / size * size) * 8 > bytes, "class \(cls) (\(size) B) could have \(pages) pages")
                pages += 1
            }
            if info.pages > 1 { wide += 1 }
        }
        #expect(wide >= 12)
    }

    /// Classes above wideSpanMaxObjectSize keep the fewest pages that satisfy the tail
    /// and batch rules.
    @Test func biggerClassesHaveTheFewestPagesThatHoldABatch() {
        for cls in 1..<table.count where UInt(table.info[cls].size) > wideSpanMaxObjectSize {
            let info = table.info[cls]
            let size = UInt(info.size)
            var pages: UInt = 1
            while pages < UInt(info.pages) {
                let bytes = pages * pageSize
                let objects = bytes / size
                let fits = objects > 0 && (bytes - objects * size) * 8 <= bytes
                #expect(!(fits && (objects >= minObjectsPerSpan || bytes >= 64 << 10)), "class \(cls) (\(size) B) fits \(pages) pages")
                pages += 1
            }
        }
    }

    @Test func lookupGivesTheSmallestClassThatFits() {
        var wrong: [UInt] = []
        for size in UInt(0)...maxSmallSize {
            let cls = table.sizeClass(of: size)
            let fits = cls >= 1 && cls < table.count && UInt(table.info[cls].size) >= size
            let smallest = cls <= 1 || UInt(table.info[cls - 1].size) < max(size, 1)
            if !fits || !smallest { wrong.append(size) }
        }
        #expect(wrong.isEmpty, "sizes mapped to the wrong class: \(wrong.prefix(10))")
    }

    /// Aligned allocation's class, for every alignment from 32 bytes to a page and every
    /// small size: the smallest class holding max(size, alignment) bytes whose size is a
    /// multiple of the alignment (so that each of its objects is aligned), or 0 if none.
    @Test(arguments: (0..<SizeClassTable.alignedClassAlignments).map { UInt(32) << UInt($0) })
    func alignedLookupGivesTheSmallestClassOfAMultipleOfTheAlignment(alignment: UInt) {
        var wrong: [UInt] = []
        for size in stride(from: UInt(0), through: maxSmallSize, by: 8) {
            let need = max(size, alignment)
            let expected = (1..<table.count).first {
                UInt(table.info[$0].size) >= need && UInt(table.info[$0].size) % alignment == 0
            } ?? 0
            if table.alignedClass(of: size, alignment: alignment) != expected { wrong.append(size) }
        }
        #expect(wrong.isEmpty, "alignment \(alignment): sizes mapped to the wrong class: \(wrong.prefix(10))")
    }

    @Test func reciprocalDivisionIsExactForEveryOffsetInASpan() {
        for cls in 1..<table.count {
            let info = table.info[cls]
            let spanBytes = UInt(info.pages) * pageSize
            var offset: UInt = 0
            var mismatches = 0
            while offset < spanBytes {
                if (offset * UInt(info.reciprocal)) >> 32 != offset / UInt(info.size) { mismatches += 1 }
                offset += 1
            }
            #expect(mismatches == 0, "class \(cls)")
        }
    }
}
