// Whether threads of the process besides the caller are still alive, and how many.
//
// The scavenger is a thread the program did not create. glibc ends a process when its
// last thread exits (a main that calls pthread_exit, a forked child whose only thread
// returns), and the kernel refuses unshare(CLONE_NEWUSER) and setns to a process of
// more than one thread, so the scavenger must not outlive the program's threads: it asks
// this question when it wakes and exits when none of the program's threads is alive
// (the process then exits with status 0, as it would without us), or one is and its
// work is done (the process is one thread again).
//
// /proc/self/stat's thread count answers it in one read. A thread group leader that
// called pthread_exit stays a zombie and is still counted, so a count of other threads
// no higher than the number asked about is checked thread by thread in /proc/self/task.
// Everything is read into stack buffers with raw system calls: nothing here allocates.
//
// Where /proc cannot be read (a chroot without it, a seccomp or Landlock sandbox that
// denies open, no file descriptor left) the answer is "cannot tell" (nil), never a
// guess: guessing "yes" started a thread in a sandboxed single-threaded child, which its
// filter killed, and kept a process alive after its last thread ended. The caller then
// asks the thread caches (ScavengerRunner.swift: otherThreadsRun).

import CShim

/// A 512-byte stack buffer.
private typealias Buffer512 = (
    UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
    UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
    UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
    UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

private func zeroBuffer() -> Buffer512 {
    (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

/// A static string's bytes as a C string (static strings are NUL-terminated).
func cString(_ text: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Copies `text` into `bytes` at `offset`; returns the offset after it.
private func append(_ text: StaticString, to bytes: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
    var length = offset
    for i in 0..<text.utf8CodeUnitCount {
        bytes[length] = text.utf8Start[i]
        length &+= 1
    }
    return length
}

/// Reads up to 511 bytes of the file at the NUL-terminated `path` into `bytes`
/// (NUL-terminated); returns the byte count, or -1.
private func readSmallFile(_ path: UnsafePointer<CChar>, into bytes: UnsafeMutableRawBufferPointer) -> Int {
    let fd = sh_open_readonly(path)
    if fd < 0 { return -1 }
    let count = read(fd, bytes.baseAddress, bytes.count &- 1)
    close(fd)
    if count < 0 { return -1 }
    bytes[count] = 0
    return count
}

/// The byte after the last ')' of a /proc stat line (the command name may hold spaces
/// and parentheses), or -1.
private func afterCommand(_ bytes: UnsafeMutableRawBufferPointer, count: Int) -> Int {
    var index = count &- 1
    while index >= 0 && bytes[index] != 41 { index &-= 1 }  // ')'
    return index < 0 ? -1 : index &+ 1
}

/// Field `field` (1-based, as in proc(5); field 3 is the state) of a stat line, as a
/// position in `bytes`, or -1.
private func statField(_ bytes: UnsafeMutableRawBufferPointer, count: Int, _ field: Int) -> Int {
    var index = afterCommand(bytes, count: count)
    if index < 0 { return -1 }
    var current = 2  // the ')' ends field 2
    while index < count {
        if bytes[index] == 32 {
            current &+= 1
            index &+= 1
            if current == field { return index }
        } else {
            index &+= 1
        }
    }
    return -1
}

/// How many threads of this process other than the caller are alive (not zombies),
/// counted up to `cap` (a count of `cap` means at least that many); nil where /proc
/// cannot be read.
func otherThreadsAlive(upTo cap: Int) -> Int? {
    var storage = zeroBuffer()
    return withUnsafeMutableBytes(of: &storage) { bytes -> Int? in
        let count = readSmallFile(cString("/proc/self/stat"), into: bytes)
        if count <= 0 { return nil }
        var position = statField(bytes, count: count, 20)  // num_threads
        if position < 0 { return nil }
        var threads = 0
        while position < count, bytes[position] >= 48, bytes[position] <= 57 {
            threads = threads &* 10 &+ Int(bytes[position] &- 48)
            position &+= 1
        }
        // Only the thread group leader lingers as a zombie (a main that called
        // pthread_exit) while other threads run: at most one of the others is not alive.
        let others = threads &- 1
        if others <= 0 { return 0 }
        if others > cap { return cap }
        return otherTasksAlive(upTo: others)
    }
}

/// Walks /proc/self/task: how many tasks other than the caller are not zombies, counted
/// up to `cap`; nil if the directory cannot be read.
private func otherTasksAlive(upTo cap: Int) -> Int? {
    let directory = sh_open_readonly(cString("/proc/self/task"))
    if directory < 0 { return nil }
    defer { close(directory) }
    let me = sh_gettid()
    var entries = zeroBuffer()
    var pathStorage = zeroBuffer()
    var statStorage = zeroBuffer()
    var found = 0
    return withUnsafeMutableBytes(of: &entries) { buffer -> Int? in
        while true {
            let read = sh_getdents64(directory, buffer.baseAddress, buffer.count)
            if read < 0 { return nil }
            if read == 0 { return found }
            var offset = 0
            while offset < read {
                // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
                let recordLength = Int(buffer.load(fromByteOffset: offset &+ 16, as: UInt16.self))
                let name = offset &+ 19
                var tid = 0
                var index = name
                while buffer[index] >= 48 && buffer[index] <= 57 {
                    tid = tid &* 10 &+ Int(buffer[index] &- 48)
                    index &+= 1
                }
                if index > name && tid != me {
                    let alive = withUnsafeMutableBytes(of: &pathStorage) { path -> Bool in
                        // "/proc/self/task/<tid>/stat"
                        var length = 0
                        length = append("/proc/self/task/", to: path, at: length)
                        var cursor = name
                        while cursor < index { path[length] = buffer[cursor]; length &+= 1; cursor &+= 1 }
                        length = append("/stat", to: path, at: length)
                        path[length] = 0
                        return withUnsafeMutableBytes(of: &statStorage) { stat -> Bool in
                            let count = readSmallFile(path.baseAddress!.assumingMemoryBound(to: CChar.self), into: stat)
                            if count <= 0 { return false }  // gone meanwhile
                            let state = statField(stat, count: count, 3)
                            if state < 0 { return true }
                            return stat[state] != 90 && stat[state] != 88  // 'Z', 'X'
                        }
                    }
                    if alive {
                        found &+= 1
                        if found >= cap { return found }
                    }
                }
                offset &+= recordLength
            }
        }
    }
}
