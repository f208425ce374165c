import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import CShim
@testable import SwiftHeap

/// Reads everything from `descriptor` until end of file.
private func readAll(_ descriptor: Int32) -> String {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let got = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if got <= 0 { break }
        bytes += chunk[0..<got]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Formats a report of this process's SwiftHeap heap with `format` and returns the text
/// (through a temporary file: a report can be longer than a pipe's buffer).
private func formatted(_ format: (HeapReport, inout ReportWriter) -> Void) -> String {
    var template = Array("/tmp/swiftheap-report-XXXXXX".utf8CString)
    let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    #expect(descriptor >= 0)
    unlink(template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
    defer { close(descriptor) }
    #expect(withHeapReport({ ReportWriter(buffer: $0, capacity: $1, descriptor: descriptor) }, format) == true)
    lseek(descriptor, 0, SEEK_SET)
    return readAll(descriptor)
}

/// Reports: the writer, mallopt, and the JSON and XML forms of a report.
@Suite struct ReportTests {
    init() { #expect(ensureHeapInitialized()) }

    @Test func writerDrainsWhenFullAndKeepsEveryByte() {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 5, alignment: 8)
        defer { memory.deallocate() }
        var writer = ReportWriter(buffer: memory, capacity: 5, descriptor: fds[1])
        writer.put("abcdefghij")
        writer.put(number: 0)
        writer.put(number: UInt.max)
        writer.field("x_y", 42)
        writer.field("on", flag: true)
        writer.json = true
        writer.openObject()
        writer.field("y", 7)
        writer.field("z", text: "s")
        writer.openArray("a")
        writer.openObject()
        writer.closeObject()
        writer.openObject()
        writer.field("f", flag: false)
        writer.closeObject()
        writer.closeArray()
        writer.closeObject()
        writer.put(byte: 10)
        writer.flush()
        #expect(!writer.failed)
        close(fds[1])
        #expect(readAll(fds[0]) == "abcdefghij018446744073709551615 x-y=\"42\" on=\"1\"{\"y\":7,\"z\":\"s\",\"a\":[{},{\"f\":false}]}\n")
        close(fds[0])
    }

    @Test func writerFailsOnAClosedDescriptor() {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        close(fds[0])
        close(fds[1])
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
        defer { memory.deallocate() }
        var writer = ReportWriter(buffer: memory, capacity: 64, descriptor: fds[1])
        writer.put("lost")
        writer.flush()
        #expect(writer.failed)
    }

    /// glibc 2.36's answers for its documented parameters (checked against glibc by
    /// Tests/c/mallopt.c), and 0 for anything else.
    @Test func malloptAnswersGlibcsParameters() {
        let values: [Int32] = [-1, 0, 1, 64, 160, 161, 1 << 20, 32 << 20, Int32.max, Int32.min]
        for value in values {
            #expect(swiftheap_mallopt(1, value) == (value >= 0 && value <= 160 ? 1 : 0), "M_MXFAST \(value)")
            for parameter: Int32 in -8 ... -1 {
                #expect(swiftheap_mallopt(parameter, value) == 1, "parameter \(parameter) value \(value)")
            }
            for parameter: Int32 in [0, 2, 3, 4, -9, 100, Int32.min, Int32.max] {
                #expect(swiftheap_mallopt(parameter, value) == 0, "unknown parameter \(parameter)")
            }
        }
    }

    @Test func jsonSummaryParsesAndAddsUp() throws {
        let blocks = (0..<200).map { allocate(UInt(16 + $0 * 40))! }
        let large = allocate(1 << 20)!
        defer {
            for block in blocks { deallocate(block) }
            deallocate(large)
        }
        let text = formatted(formatJSONStats)
        #expect(text.hasSuffix("}\n"))
        #expect(text.filter { $0 == "\n" }.count == 1, "one line")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["allocator"] as? String == "swiftheap")
        #expect(object["version"] as? String == String(cString: sh_version()))
        let mapped = try #require(object["mapped_bytes"] as? Int)
        let inUse = try #require(object["in_use_bytes"] as? Int)
        let free = try #require(object["free_bytes"] as? Int)
        #expect(mapped > 0 && inUse > 1 << 20)
        #expect(inUse + free == mapped)
        #expect(try #require(object["large_objects"] as? Int) >= 1)
        let classes = try #require(object["classes"] as? [[String: Int]])
        #expect(!classes.isEmpty)
        // In-use bytes are the classes' allocated objects plus the large objects, in the same report.
        let small = classes.reduce(0) { $0 + $1["allocated"]! * $1["size"]! }
        #expect(small + (object["large_bytes"] as! Int) == inUse)
        #expect(classes.reduce(0) { $0 + $1["cached"]! } == object["cached_objects"] as! Int)
        #expect(classes.reduce(0) { $0 + $1["free"]! } == object["free_objects"] as! Int)
        for cls in classes {
            #expect(cls["cached"]! <= cls["allocated"]!)
            #expect(cls["allocated"]! + cls["free"]! <= cls["spans"]! * cls["objects_per_span"]!)
        }
    }

    @Test func textSummaryListsTheFigures() {
        let text = formatted(formatTextStats)
        #expect(text.hasPrefix("swiftheap stats\n"))
        for label in ["mapped (arenas):", "in use (live objects):", "cached in threads:", "scavenge generations:", "class  size  spans"] {
            #expect(text.contains(label), "\(label)")
        }
    }

    #if canImport(FoundationXML)
    @Test func mallocInfoIsWellFormedXMLThatAddsUp() throws {
        let blocks = (0..<300).map { allocate(UInt(8 + $0 * 24))! }
        for block in blocks.enumerated() where block.offset % 3 == 0 { deallocate(block.element) }
        defer { for block in blocks.enumerated() where block.offset % 3 != 0 { deallocate(block.element) } }
        let text = formatted(formatMallocInfo)
        final class Collector: NSObject, XMLParserDelegate {
            var elements: [(String, [String: String])] = []
            func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?,
                        qualifiedName: String?, attributes: [String: String]) {
                elements.append((name, attributes))
            }
        }
        let collector = Collector()
        let parser = XMLParser(data: Data(text.utf8))
        parser.delegate = collector
        #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        let elements = collector.elements
        #expect(elements.first?.0 == "malloc" && elements.first?.1["version"] == "1")
        let sizes = elements.filter { $0.0 == "size" }
        #expect(!sizes.isEmpty)
        let sizeCount = sizes.reduce(0) { $0 + Int($1.1["count"]!)! }
        let sizeTotal = sizes.reduce(0) { $0 + Int($1.1["total"]!)! }
        let totals = elements.filter { $0.0 == "total" }
        func total(_ type: String, _ key: String) -> Int { Int(totals.first { $0.1["type"] == type }!.1[key]!)! }
        #expect(total("fast", "count") + total("rest", "count") == sizeCount)
        #expect(total("fast", "size") + total("rest", "size") == sizeTotal)
        let memory = try #require(elements.first { $0.0 == "memory" }?.1)
        let system = try #require(elements.first { $0.0 == "system" && $0.1["type"] == "current" }?.1)
        #expect(memory["mapped"] == system["size"])
        #expect(Int(memory["in-use"]!)! + Int(memory["free"]!)! == Int(memory["mapped"]!)!)
        #expect(elements.contains { $0.0 == "scavenger" })
        #expect(elements.filter { $0.0 == "class" }.count >= sizes.count)
    }
    #endif
}
