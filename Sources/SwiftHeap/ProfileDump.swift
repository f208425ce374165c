// Writing heap profiles to files: at exit, every SWIFTHEAP_PROFILE_INTERVAL seconds,
// and through swiftheap_profile_dump(path).
//
// Names. SWIFTHEAP_PROFILE=PATH names the exit profile; interval dumps and
// swiftheap_profile_dump(NULL) write PATH.1, PATH.2, ...; "%p" in PATH is replaced by
// the process id, "%%" by "%". A forked child inherits the profile (its heap is a copy of its
// parent's) but writes its own files only if PATH holds %p: otherwise it would
// replace its parent's profile with one made mostly of the parent's samples. A program
// started by exec inherits SWIFTHEAP_PROFILE too and writes PATH like any other: to
// profile a tree of processes, name the files with %p. At exit, a process that took no
// sample at all leaves PATH alone (shells and wrappers that ran the program).
//
// A file is written whole under a temporary name beside it (PATH.tmp.<tid>), then
// renamed over PATH, so that a reader never sees half a profile and two dumps at once
// do not mix. The text is formatted (ReportWriter.swift) into memory mapped for the
// dump, under the profile lock; the file is written after the lock is released (PATH
// may be slow, or a pipe), then /proc/self/maps is copied after it. Only open, read,
// write, rename and mmap: no stdio, no malloc.
//
// Interval dumps run on the allocation and free slow paths that take or drop a
// sample: a thread that reaches one after the interval expired claims the dump with a
// compare-and-swap of the due time and writes it, holding no lock. A program that
// stops allocating stops dumping (its heap no longer changes much); a program with one
// thread gains no thread for it.

import CShim

/// Writes the profile to `path` (NUL-terminated). Returns 0, or an errno value.
///
/// Takes the profile lock; must hold no allocator lock.
func writeProfile(to path: UnsafePointer<CChar>) -> Int32 {
    let savedErrno = sh_errno_get()
    defer { sh_errno_set(savedErrno) }
    // Report memory: PATH.tmp.<tid> in its first half, the copy of the maps in the other.
    let half = Int(reportMemoryBytes / 2)
    if strlen(path) &+ 32 > half { return ENAMETOOLONG }
    let result: Int32? = withReportMemory { memory in
        var name = ReportWriter(buffer: memory, capacity: half, descriptor: -1)
        name.put(cString: path)
        name.put(".tmp.")
        name.put(number: UInt(bitPattern: sh_gettid()))
        name.put(byte: 0)
        let temporary = UnsafeRawPointer(memory).assumingMemoryBound(to: CChar.self)
        let fd = sh_open_create(temporary)
        if fd < 0 { return sh_errno_get() }
        var error = writeProfileText(to: fd, scratch: (memory + half).assumingMemoryBound(to: UInt8.self), scratchBytes: half)
        if close(fd) != 0 && error == 0 { error = sh_errno_get() }
        if error == 0 && rename(temporary, path) != 0 { error = sh_errno_get() }
        if error != 0 { _ = unlink(temporary) }
        return error
    }
    return result ?? ENOMEM
}

/// Writes the profile's text, then /proc/self/maps (read through `scratch`), to `fd`.
/// Returns 0 or errno.
///
/// Takes the profile lock; must hold no allocator lock. The text is formatted under the
/// lock into memory mapped to hold all of it, and written to `fd` after the lock is
/// released (the file may be slow, or a pipe).
private func writeProfileText(to fd: Int32, scratch: UnsafeMutablePointer<UInt8>, scratchBytes: Int) -> Int32 {
    profileLock.lock()
    let capacity = UInt(max(profile.pointee.table.textBound, 64 << 10))
    let mapped = osMap(capacity)
    if mapped == 0 {
        profileLock.unlock()
        return ENOMEM
    }
    defer { osUnmap(mapped, capacity) }
    var out = ReportWriter(buffer: UnsafeMutableRawPointer(bitPattern: mapped)!, capacity: Int(capacity), descriptor: fd)
    profile.pointee.table.format(into: &out)
    profileLock.unlock()
    let maps = sh_open_readonly(cString("/proc/self/maps"))
    if maps < 0 { return sh_errno_get() }
    defer { close(maps) }
    while true {
        let count = read(maps, scratch, scratchBytes)
        if count < 0 {
            if sh_errno_get() == EINTR { continue }
            return sh_errno_get()
        }
        if count == 0 { break }
        out.put(bytes: scratch, count: count)
    }
    out.flush()
    return out.failed ? (sh_errno_get() != 0 ? sh_errno_get() : EIO) : 0
}

/// Whether this process writes the profiles PATH names (see the file comment).
private func ownsProfilePath() -> Bool {
    if getpid() == profile.pointee.ownerPid { return true }
    guard let template = profile.pointee.pathTemplate else { return false }
    return strstr(template, cString("%p")) != nil
}

/// Writes the profile to PATH (sequence 0) or PATH.<sequence>. Returns 0 or errno.
/// `announce` writes a line naming the file on stderr.
///
/// Takes the profile lock; must hold no allocator lock.
private func writeNamedProfile(sequence: UInt64, announce: Bool) -> Int32 {
    guard let template = profile.pointee.pathTemplate else { return EOPNOTSUPP }
    // The template is shorter than 4096 bytes (Config) and %p grows 2 bytes to at most
    // 20: the name fits report memory, so the writer never drains (it has no sink).
    let result: Int32? = withReportMemory { memory in
        var name = ReportWriter(buffer: memory, capacity: Int(reportMemoryBytes), descriptor: -1)
        name.put(expanding: template)
        if sequence != 0 {
            name.put(".")
            name.put(number: UInt(sequence))
        }
        name.put(byte: 0)
        let path = UnsafeRawPointer(memory).assumingMemoryBound(to: CChar.self)
        let error = writeProfile(to: path)
        if announce { announceProfile(path, error: error) }
        return error
    }
    return result ?? ENOMEM
}

/// `swiftheap: heap profile PATH: N samples live, about X KiB in use` on stderr.
///
/// Takes the profile lock; must hold no allocator lock.
private func announceProfile(_ path: UnsafePointer<CChar>, error: Int32) {
    writeDiagnostic("swiftheap: heap profile ")
    _ = write(2, path, strlen(path))
    if error != 0 {
        writeDiagnostic(": not written, errno ")
        writeDiagnostic(number: UInt(error))
        writeDiagnostic("\n")
        return
    }
    profileLock.lock()
    let live = profile.pointee.table.totals().liveCount
    let estimate = profile.pointee.table.estimatedBytes()
    profileLock.unlock()
    writeDiagnostic(": ")
    writeDiagnostic(number: live)
    writeDiagnostic(" samples live, about ")
    writeDiagnostic(number: UInt(estimate.live / 1024))
    writeDiagnostic(" KiB in use, ")
    writeDiagnostic(number: UInt(estimate.allocated / 1024))
    writeDiagnostic(" KiB allocated in all\n")
}

/// The next N of PATH.N.
private func nextProfileSequence() -> UInt64 {
    sh_add64(profile.pointer(to: \.sequence)!, 1)
}

/// Writes PATH.N if the interval has passed since the last one.
///
/// Takes the profile lock; must hold no allocator lock.
@inline(never) func maybeDumpOnInterval() {
    let interval = profile.pointee.intervalNanos
    if interval == 0 { return }
    let dueWord = profile.pointer(to: \.nextDumpNanos)!
    let due = sh_load64_relaxed(dueWord)
    let now = UInt64(sh_monotonic_nanos())
    if now < due || sh_cas64(dueWord, due, now &+ interval) == 0 { return }
    if !ownsProfilePath() || !anySampleTaken() { return }
    _ = writeNamedProfile(sequence: nextProfileSequence(), announce: true)
}

/// Whether any allocation was sampled.
///
/// Takes the profile lock; must hold no allocator lock.
private func anySampleTaken() -> Bool {
    profileLock.lock()
    let taken = profile.pointee.table.firstBucket != nil
    profileLock.unlock()
    return taken
}

/// atexit handler: the profile at exit, to PATH. A process that never took a sample
/// (a shell, a wrapper such as timeout or env, started with the same environment)
/// leaves PATH alone and says so on stderr: its empty profile would replace the one of
/// the program it ran.
func profileDumpAtExit() {
    if !profilingOn || !ownsProfilePath() { return }
    let savedErrno = sh_errno_get()
    if anySampleTaken() {
        _ = writeNamedProfile(sequence: 0, announce: true)
    } else {
        writeDiagnostic("swiftheap: heap profile not written: no allocation was sampled (SWIFTHEAP_PROFILE_RATE=")
        writeDiagnostic(number: profile.pointee.rate)
        writeDiagnostic(")\n")
    }
    sh_errno_set(savedErrno)
}

/// swiftheap_profile_dump(path): writes the heap profile to `path`, or to the next
/// PATH.N if `path` is NULL. Returns 0, or -1 with errno set (EOPNOTSUPP if profiling
/// is off). Exported by Shim/CExports.
///
/// Takes the profile lock; must hold no allocator lock.
@_cdecl("swiftheap_profile_write")
public func swiftheap_profile_write(_ path: UnsafePointer<CChar>?) -> Int32 {
    let savedErrno = sh_errno_get()
    var error: Int32 = EOPNOTSUPP
    if profilingOn {
        error = path.map { writeProfile(to: $0) } ?? writeNamedProfile(sequence: nextProfileSequence(), announce: false)
    }
    sh_errno_set(error == 0 ? savedErrno : error)
    return error == 0 ? 0 : -1
}
