import Testing
@testable import SwiftHeap
// The malloc entry points (swiftheap_malloc) are not on this branch yet (branch `pages`
// only has the page allocator); the probe is kept for when they are.
#if SWIFTHEAP_HAS_MALLOC
@Test func probe() { #expect(swiftheap_malloc(10) != nil) }
#endif
