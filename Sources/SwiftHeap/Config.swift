// Configuration: environment variables read once, from the library constructor (the
// first malloc may run before the environment is set up; until the constructor runs,
// the defaults apply). getenv does not allocate. The strings kept (the stats file's and
// the heap profile's names) are copied into metadata memory: the program may change its
// environment later.
//
//   SWIFTHEAP_SCAVENGER=0            no scavenger, thread or inline (malloc_trim still works)
//   SWIFTHEAP_SCAVTRACE=1            a `scav ...` line on stderr per scavenge generation
//   SWIFTHEAP_STATS=1                a summary on stderr at exit (`text` too); `json`: the same figures as one JSON line
//   SWIFTHEAP_STATS_FILE=PATH        the summary is appended to PATH instead (%p: the process id, %%: a %)
//   SWIFTHEAP_RETAIN_PERCENT=10      retained-memory goal: in-use bytes at the last sweep epoch plus this percentage
//   SWIFTHEAP_SCAVENGE_CPU_PERCENT=1 the scavenger thread's CPU budget, percent of one core, on average
//   SWIFTHEAP_SCAVENGE_BURST_MS=200  CPU time the scavenger may spend at once after a large free (its budget's bucket)
//   SWIFTHEAP_EPOCH_PERCENT=10       a sweep epoch ends when pages freed since the last one reach this percentage of the heap
//   SWIFTHEAP_DECAY_MS=200           once the goal is met, free pages that stayed free this long are released too (0: never)
//   SWIFTHEAP_PROFILE=PATH           sample the heap and write a heap profile to PATH at exit (%p: the process id, %%: a %)
//   SWIFTHEAP_PROFILE_RATE=524288    mean bytes allocated between two samples (0: no profiling)
//   SWIFTHEAP_PROFILE_INTERVAL=0     also write PATH.1, PATH.2, ... every this many seconds (0: never)

import CShim

struct Config {
    var scavengerEnabled: Bool = true
    var scavengeTrace: Bool = false
    var printStats: Bool = false
    /// The summary at exit as JSON rather than text. (A Bool, not an enum: an enum's
    /// automatic Hashable conformance brings Hasher, and its swift_once, into the library.)
    var statsJSON: Bool = false
    /// SWIFTHEAP_STATS_FILE, NUL-terminated in metadata memory; nil: stderr.
    var statsPath: UnsafePointer<CChar>? = nil
    /// Without a stats file, a copy of stderr taken at start (-1 if stderr was closed):
    /// many programs close stderr before exit (gnulib's close_stdout, in ls and the
    /// other coreutils) and the summary comes after that.
    var statsDescriptor: Int32 = -1
    var retainPercent: UInt = 10
    var scavengeCPUPercent: UInt = 1
    var scavengeBurstMillis: UInt = 200
    var epochPercent: UInt = 10
    var decayMillis: UInt = 200
    /// SWIFTHEAP_PROFILE, NUL-terminated in metadata memory; nil: no heap profiling.
    var profilePath: UnsafePointer<CChar>? = nil
    var profileRate: UInt = 512 << 10
    var profileIntervalSeconds: UInt = 0

    /// Reads the environment. Must hold no allocator lock.
    static func fromEnvironment() -> Config {
        var config = Config()
        config.scavengerEnabled = number("SWIFTHEAP_SCAVENGER", default: 1) != 0
        config.scavengeTrace = number("SWIFTHEAP_SCAVTRACE", default: 0) != 0
        if let stats = string("SWIFTHEAP_STATS") {
            if equals(stats, "json") {
                config.printStats = true
                config.statsJSON = true
            } else if equals(stats, "text") {
                config.printStats = true
            } else {
                config.printStats = number("SWIFTHEAP_STATS", default: 0) != 0
            }
        }
        config.statsPath = copied(string("SWIFTHEAP_STATS_FILE"))
        if config.printStats && config.statsPath == nil { config.statsDescriptor = sh_dup_cloexec(2, 10) }
        config.retainPercent = number("SWIFTHEAP_RETAIN_PERCENT", default: config.retainPercent)
        config.scavengeCPUPercent = max(number("SWIFTHEAP_SCAVENGE_CPU_PERCENT", default: config.scavengeCPUPercent), 1)
        config.scavengeBurstMillis = number("SWIFTHEAP_SCAVENGE_BURST_MS", default: config.scavengeBurstMillis)
        config.epochPercent = max(number("SWIFTHEAP_EPOCH_PERCENT", default: config.epochPercent), 1)
        config.decayMillis = number("SWIFTHEAP_DECAY_MS", default: config.decayMillis)
        config.profilePath = copied(string("SWIFTHEAP_PROFILE"))
        config.profileRate = number("SWIFTHEAP_PROFILE_RATE", default: config.profileRate)
        config.profileIntervalSeconds = number("SWIFTHEAP_PROFILE_INTERVAL", default: config.profileIntervalSeconds)
        return config
    }

    /// The value of an environment variable, or nil if unset.
    private static func string(_ name: StaticString) -> UnsafePointer<CChar>? {
        UnsafePointer(getenv(UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self)))
    }

    /// Whether `text` is `word`.
    private static func equals(_ text: UnsafePointer<CChar>, _ word: StaticString) -> Bool {
        strcmp(text, UnsafeRawPointer(word.utf8Start).assumingMemoryBound(to: CChar.self)) == 0
    }

    /// A copy of a non-empty string shorter than PATH_MAX in metadata memory, or nil.
    /// Takes the metadata lock; must hold no other allocator lock.
    private static func copied(_ text: UnsafePointer<CChar>?) -> UnsafePointer<CChar>? {
        guard let text else { return nil }
        let length = strnlen(text, 4096)
        if length == 0 || length == 4096 { return nil }
        guard let copy = persistentAlloc(UInt(length) &+ 1) else { return nil }
        memcpy(copy, text, length &+ 1)
        return UnsafePointer(copy.assumingMemoryBound(to: CChar.self))
    }

    /// The decimal value of an environment variable, or `fallback` if unset or not a number.
    private static func number(_ name: StaticString, default fallback: UInt) -> UInt {
        guard let text = string(name) else { return fallback }
        var value: UInt = 0
        var index = 0
        while true {
            let character = UInt8(bitPattern: text[index])
            if character == 0 { break }
            if character < 48 || character > 57 { return fallback }
            let (product, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = product.addingReportingOverflow(UInt(character &- 48))
            if overflow1 || overflow2 { return fallback }
            value = sum
            index &+= 1
        }
        return index == 0 ? fallback : value
    }
}
