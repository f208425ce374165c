import Testing
@testable import SwiftHeap
@Test func probe() { #expect(swiftheap_malloc(10) != nil) }
