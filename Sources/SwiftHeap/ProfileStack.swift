// Stack capture for the heap profiler: the allocator's own frames by their frame
// pointers, the program's with the system unwinder.
//
// Debian's programs and libraries are built without frame pointers, so their stacks
// are walked with the DWARF unwind tables every x86-64 object carries, through
// libgcc_s's _Unwind_Backtrace. The library must depend on libc alone, so libgcc_s is
// opened with dlopen, only when profiling is on, from the library constructor
// (dlopen calls malloc: never from an allocation path or under a lock). One warm-up
// walk there lets the unwinder make its lazy, possibly allocating, setup before any
// sample is taken; allocations it makes later, while a sample is being taken, are
// not sampled (ProfileThreadState.busy).
//
// Embedded Swift emits no unwind tables (.eh_frame), so the unwinder stops at the
// first Swift frame. Every Swift function of the library keeps a frame pointer
// (SwiftPM builds with -fno-omit-frame-pointer; a function without one leaves the
// frame pointer register alone and is merely skipped), so the walk starts with the
// frame-pointer chain from the capturing function: [fp] is the caller's fp, [fp+8]
// the return address. It stops at the first return address that has unwind tables
// (_Unwind_Find_FDE: one of the shim's C wrappers such as operator new, or the
// program) or lies outside this library, and hands that frame to the unwinder through
// sh_unwind_from (Shim/CShim/shim.c), whose own unwind table names it as its caller.
//
// Frames inside this library (the C wrappers the unwinder walks first) are skipped;
// up to maxProfileFrames return addresses are recorded, innermost first, starting
// with the program's call into the allocator.
//
// libgcc 12 finds unwind tables with glibc's _dl_find_object, which takes no lock, so
// a walk cannot deadlock against a thread inside dlopen.

import CShim

/// The unwinder's entry points and this library's address range.
struct Unwinder {
    var backtrace: sh_unwind_backtrace_fn? = nil
    var getIP: sh_unwind_get_ip_fn? = nil
    var findFDE: sh_unwind_find_fde_fn? = nil
    /// This library's image (from its ELF header to its last byte): frames inside it
    /// are the allocator's own.
    var ownStart: UInt = 0
    var ownEnd: UInt = 0

    /// Opens libgcc_s. Returns nil if the unwinder is not there.
    ///
    /// Calls dlopen: must hold no allocator lock, and not run on an allocation path.
    static func load() -> Unwinder? {
        guard let handle = dlopen(cString("libgcc_s.so.1"), RTLD_NOW),
              let backtrace = dlsym(handle, cString("_Unwind_Backtrace")),
              let getIP = dlsym(handle, cString("_Unwind_GetIP")),
              let findFDE = dlsym(handle, cString("_Unwind_Find_FDE"))
        else { return nil }
        var unwinder = Unwinder()
        unwinder.backtrace = unsafeBitCast(backtrace, to: sh_unwind_backtrace_fn.self)
        unwinder.getIP = unsafeBitCast(getIP, to: sh_unwind_get_ip_fn.self)
        unwinder.findFDE = unsafeBitCast(findFDE, to: sh_unwind_find_fde_fn.self)
        unwinder.ownStart = sh_own_image_start()
        unwinder.ownEnd = sh_own_image_end()
        return unwinder
    }

    @inline(__always) func isOwn(_ address: UInt) -> Bool { address >= ownStart && address < ownEnd }

    /// Writes the calling thread's stack, below the allocator's frames, into `frames`
    /// (room for maxProfileFrames); returns how many were written.
    ///
    /// Runs the unwinder: must hold no allocator lock. Never inlined, so that its frame
    /// (where the walk starts) is below every frame it reports.
    @inline(never) func capture(into frames: UnsafeMutablePointer<UInt>) -> Int {
        guard let backtrace, let getIP, let findFDE else { return 0 }
        // Up the frame-pointer chain to the first frame the unwinder can take.
        var fp = UInt(bitPattern: sh_frame_address())
        var start: (sp: UInt, ra: UInt, fp: UInt)? = nil
        var bases: (UInt, UInt, UInt) = (0, 0, 0)
        for _ in 0..<maxProfileFrames {
            if fp == 0 || fp & 7 != 0 { break }
            guard let slots = UnsafePointer<UInt>(bitPattern: fp) else { break }
            let callerFP = slots[0]
            let ra = slots[1]
            if ra == 0 { break }
            let hasTables = withUnsafeMutableBytes(of: &bases) { findFDE(UnsafeMutableRawPointer(bitPattern: ra &- 1), $0.baseAddress) != nil }
            if hasTables || !isOwn(ra) {
                start = (fp &+ 16, ra, callerFP)
                break
            }
            // A Swift frame of the allocator: its caller's frame is above it.
            if callerFP <= fp || callerFP &- fp > 1 << 24 { break }
            fp = callerFP
        }
        guard let start else { return 0 }
        var walk = UnwindWalk(frames: frames, depth: 0, getIP: getIP, ownStart: ownStart, ownEnd: ownEnd)
        _ = withUnsafeMutablePointer(to: &walk) { walkPointer in
            sh_unwind_from(start.sp, start.ra, start.fp, backtrace, { context, argument in
                let walk = argument!.assumingMemoryBound(to: UnwindWalk.self)
                let ip = UInt(walk.pointee.getIP(context))
                if ip == 0 { return 5 }  // _URC_END_OF_STACK
                if walk.pointee.depth == 0 && ip >= walk.pointee.ownStart && ip < walk.pointee.ownEnd {
                    return 0  // _URC_NO_REASON: the trampoline, or a C wrapper of the allocator
                }
                walk.pointee.frames[walk.pointee.depth] = ip
                walk.pointee.depth &+= 1
                return walk.pointee.depth < maxProfileFrames ? 0 : 4  // _URC_NORMAL_STOP when full
            }, walkPointer)
        }
        return walk.depth
    }
}

/// The unwinder callback's state.
private struct UnwindWalk {
    var frames: UnsafeMutablePointer<UInt>
    var depth: Int
    var getIP: sh_unwind_get_ip_fn
    var ownStart: UInt
    var ownEnd: UInt
}
