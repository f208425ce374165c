// Writing heap profiles to files: at exit, every SWIFTHEAP_PROFILE_INTERVAL seconds,
// and through swiftheap_profile_dump(path).
//
// Names. SWIFTHEAP_PROFILE=PATH names the exit profile; interval dumps and
// swiftheap_profile_dump(NULL) write PATH.1, PATH.2, ...; "%p" in PATH is replaced by
// the process id. A forked child inherits the profile (its heap is a copy of its
// parent's) but writes its own files only if PATH holds %p: otherwise it would
// replace its parent's profile with one made mostly of the parent's samples. A program
// started by exec inherits SWIFTHEAP_PROFILE too and writes PATH like any other: to
// profile a tree of processes, name the files with %p. At exit, a process that took no
// sample at all leaves PATH alone (shells and wrappers that ran the program).
//
// A file is written whole under a temporary name beside it (PATH.tmp.<tid>), then
// renamed over PATH, so that a reader never sees half a profile and two dumps at once
// do not mix. The text is formatted into memory mapped for the dump, under the profile
// lock; the file is written after the lock is released (PATH may be slow, or a pipe),
// then /proc/self/maps is copied after it. Only open, read, write, rename and mmap:
// no stdio, no malloc.
//
// Interval dumps run on the allocation and free slow paths that take or drop a
// sample: a thread that reaches one after the interval expired claims the dump with a
// compare-and-swap of the due time and writes it, holding no lock. A program that
// stops allocating stops dumping (its heap no longer changes much); a program with one
// thread gains no thread for it.

import CShim

/// Bytes mapped for a file name (with %p expanded and the temporary suffix).
private let profilePathBytes = 16 << 10

/// Writes the profile to `path` (NUL-terminated). Returns 0, or an errno value.
///
/// Takes the profile lock; must hold no allocator lock.
func writeProfile(to path: UnsafePointer<CChar>) -> Int32 {
    let pathLength = strlen(path)
    if pathLength &+ 32 > profilePathBytes { return ENAMETOOLONG }
    let savedErrno = sh_errno_get()
    defer { sh_errno_set(savedErrno) }

    // Format under the lock into a mapping big enough for any line the table holds.
    profileLock.lock()
    let textCapacity = max(profile.pointee.table.textBound, 64 << 10)
    let mappedBytes = UInt(textCapacity &+ profilePathBytes)
    let mapped = osMap(mappedBytes)
    if mapped == 0 {
        profileLock.unlock()
        return ENOMEM
    }
    let memory = UnsafeMutablePointer<UInt8>(bitPattern: mapped)!
    defer { osUnmap(mapped, mappedBytes) }
    var text = TextBuffer(base: memory + profilePathBytes, capacity: textCapacity)
    profile.pointee.table.format(into: &text)
    profileLock.unlock()
    if text.overflowed { return ENOMEM }

    // PATH.tmp.<tid>
    var temporary = TextBuffer(base: memory, capacity: profilePathBytes)
    temporary.append(cString: path)
    temporary.append(".tmp.")
    temporary.append(decimal: UInt(bitPattern: sh_gettid()))
    temporary.append(byte: 0)
    let temporaryPath = UnsafeRawPointer(memory).assumingMemoryBound(to: CChar.self)

    let fd = sh_open_create(temporaryPath)
    if fd < 0 { return sh_errno_get() }
    var error = writeAll(fd, text.base, text.length)
    if error == 0 {
        // The mapped text is written: reuse its memory to copy /proc/self/maps.
        error = copyMaps(to: fd, buffer: text.base, capacity: textCapacity)
    }
    if close(fd) != 0 && error == 0 { error = sh_errno_get() }
    if error == 0 && sh_rename(temporaryPath, path) != 0 { error = sh_errno_get() }
    if error != 0 { _ = unlink(temporaryPath) }
    return error
}

/// Writes all `count` bytes, retrying short writes and EINTR. Returns 0 or errno.
private func writeAll(_ fd: Int32, _ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    var offset = 0
    while offset < count {
        let written = write(fd, bytes + offset, count &- offset)
        if written < 0 {
            if sh_errno_get() == EINTR { continue }
            return sh_errno_get()
        }
        offset &+= written
    }
    return 0
}

/// Appends the contents of /proc/self/maps to `fd`. Returns 0 or errno.
private func copyMaps(to fd: Int32, buffer: UnsafeMutablePointer<UInt8>, capacity: Int) -> Int32 {
    let maps = sh_open_readonly(staticCString("/proc/self/maps"))
    if maps < 0 { return sh_errno_get() }
    defer { close(maps) }
    while true {
        let count = read(maps, buffer, capacity)
        if count < 0 {
            if sh_errno_get() == EINTR { continue }
            return sh_errno_get()
        }
        if count == 0 { return 0 }
        let error = writeAll(fd, buffer, count)
        if error != 0 { return error }
    }
}

/// Whether this process writes the profiles PATH names (see the file comment).
private func ownsProfilePath() -> Bool {
    if getpid() == profile.pointee.ownerPid { return true }
    guard let template = profile.pointee.pathTemplate else { return false }
    return strstr(template, staticCString("%p")) != nil
}

/// Writes the profile to PATH (sequence 0) or PATH.<sequence>. Returns 0 or errno.
/// `announce` writes a line naming the file on stderr.
///
/// Takes the profile lock; must hold no allocator lock.
private func writeNamedProfile(sequence: UInt64, announce: Bool) -> Int32 {
    guard let template = profile.pointee.pathTemplate else { return EOPNOTSUPP }
    let mapped = osMap(UInt(profilePathBytes))
    if mapped == 0 { return ENOMEM }
    defer { osUnmap(mapped, UInt(profilePathBytes)) }
    var name = TextBuffer(base: UnsafeMutablePointer<UInt8>(bitPattern: mapped)!, capacity: profilePathBytes &- 40)
    var i = 0
    while template[i] != 0 {
        if template[i] == 37 && template[i &+ 1] == 112 {  // "%p"
            name.append(decimal: UInt(getpid()))
            i &+= 2
        } else {
            name.append(byte: UInt8(bitPattern: template[i]))
            i &+= 1
        }
    }
    if sequence != 0 {
        name.append(".")
        name.append(decimal: UInt(sequence))
    }
    if name.overflowed { return ENAMETOOLONG }
    name.append(byte: 0)
    let path = UnsafeRawPointer(name.base).assumingMemoryBound(to: CChar.self)
    let error = writeProfile(to: path)
    if announce { announceProfile(path, error: error) }
    return error
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
