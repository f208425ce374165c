// no_proc.c: programs that cannot read /proc (a chroot, a seccomp or Landlock sandbox,
// no file descriptor left) behave as under glibc.
//
// The allocator asks /proc whether the program runs threads (to start its scavenger
// thread, and to stop it once the program's own threads are gone). Where /proc cannot
// be read it must not guess "yes":
//
//   * sandboxed_child: a program that runs threads forks a child, and the child sandboxes
//     itself as OpenSSH's pre-authentication child does (RLIMIT_NOFILE and RLIMIT_NPROC 0,
//     then a seccomp filter that allows memory and time system calls, denies open with
//     EACCES, and kills the process at anything else, thread creation included). The
//     child has one thread, and churns a heap of tens of MiB: it must exit normally, not
//     be killed for starting a thread of ours.
//   * exits_after_pthread_exit: a program whose open() fails (a filter denying it, as in
//     a chroot without /proc) runs a thread, builds and frees a big heap, then its thread
//     ends and main calls pthread_exit. glibc ends the process there; a scavenger thread
//     that cannot tell that the program's threads are gone would keep it alive for ever
//     (and, blocking every signal, deaf to SIGTERM). The process must end, with status 0,
//     within 5 s. Under SwiftHeap the scavenger thread must have run meanwhile (the
//     process had 3 threads while its own two were alive), so that a chrooted server still
//     gets its idle memory released.
//
// Both run in a forked child, the parent watching with a deadline. Skipped with a message
// where the kernel has no seccomp filters.
#define _GNU_SOURCE
#include "testutil.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define DENY(nr, e) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (e))

// OpenSSH's preauth allow list (sandbox-seccomp-filter.c), x86-64: everything else kills.
static int sandbox_like_openssh(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        DENY(SYS_open, EACCES), DENY(SYS_openat, EACCES), DENY(SYS_stat, EACCES), DENY(SYS_fstat, EACCES),
        DENY(SYS_newfstatat, EACCES),
        ALLOW(SYS_brk), ALLOW(SYS_clock_gettime), ALLOW(SYS_close), ALLOW(SYS_exit), ALLOW(SYS_exit_group),
        ALLOW(SYS_futex), ALLOW(SYS_getpid), ALLOW(SYS_getrandom), ALLOW(SYS_gettimeofday), ALLOW(SYS_madvise),
        ALLOW(SYS_mmap), ALLOW(SYS_mprotect), ALLOW(SYS_mremap), ALLOW(SYS_munmap), ALLOW(SYS_nanosleep),
        ALLOW(SYS_clock_nanosleep), ALLOW(SYS_poll), ALLOW(SYS_read), ALLOW(SYS_rt_sigprocmask),
        ALLOW(SYS_write), ALLOW(SYS_rt_sigreturn),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog program = {sizeof filter / sizeof filter[0], filter};
    struct rlimit zero = {0, 0};
    if (setrlimit(RLIMIT_NOFILE, &zero) || setrlimit(RLIMIT_NPROC, &zero)) return -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program);
}

// Denies open and openat with EACCES (no /proc, as in a chroot); allows the rest.
static int deny_open(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        DENY(SYS_open, EACCES), DENY(SYS_openat, EACCES),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program);
}

static int seccomp_available(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(deny_open() == 0 ? 0 : 1);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// A heap of `count` blocks of 2000 bytes (tens of MiB: past the size at which a program
// that runs threads gets a scavenger thread), written, then freed; `rounds` times, with
// a pause of `pause_ms` after each.
static int churn(char **blocks, int count, int rounds, int pause_ms) {
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < count; i++) {
            blocks[i] = malloc(2000);
            if (!blocks[i]) return 0;
            memset(blocks[i], i, 2000);
        }
        for (int i = 0; i < count; i++) free(blocks[i]);
        struct timespec pause = {0, pause_ms * 1000L * 1000};
        nanosleep(&pause, NULL);
    }
    return 1;
}

#define BLOCKS 20000
static char *blocks[BLOCKS];

// Waits up to `seconds` for `pid`; kills it after that. Returns its wait status, or -1
// when it had to be killed.
static int wait_with_deadline(pid_t pid, int seconds) {
    int status = 0;
    for (int waited = 0; waited < seconds * 100; waited++) {
        if (waitpid(pid, &status, WNOHANG) == pid) return status;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static volatile int worker_may_end;
static void *worker(void *argument) {
    (void)argument;
    free(malloc(100));  // this thread allocates, as a server's threads do
    while (!worker_may_end) usleep(1000);
    return NULL;
}

static void sandboxed_child(void) {
    pthread_t thread;
    worker_may_end = 0;
    REQUIRE(pthread_create(&thread, NULL, worker, NULL) == 0, "pthread_create");
    REQUIRE(churn(blocks, BLOCKS, 1, 100), "malloc");
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        if (sandbox_like_openssh() != 0) _exit(2);
        _exit(churn(blocks, BLOCKS, 4, 400) ? 0 : 3);
    }
    int status = wait_with_deadline(pid, 20);
    worker_may_end = 1;
    pthread_join(thread, NULL);
    CHECK(status != -1, "sandboxed_child: the sandboxed child did not end within 20 s");
    if (status == -1) return;
    CHECK(!WIFSIGNALED(status), "sandboxed_child: the sandboxed child was killed by signal %d (%s)%s",
          WTERMSIG(status), strsignal(WTERMSIG(status)),
          WTERMSIG(status) == SIGSYS ? ": it made a system call its sandbox forbids" : "");
    CHECK(!WIFEXITED(status) || WEXITSTATUS(status) == 0, "sandboxed_child: exit status %d%s",
          WEXITSTATUS(status), WEXITSTATUS(status) == 2 ? " (sandbox setup failed)" : "");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) printf("sandboxed_child: ok\n");
}

static void exits_after_pthread_exit(void) {
    int ready[2], proceed[2];
    REQUIRE(pipe(ready) == 0 && pipe(proceed) == 0, "pipe");
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        // pthread_exit loads libgcc_s on first use: load it before open is denied.
        if (!dlopen("libgcc_s.so.1", RTLD_NOW)) _exit(4);
        if (deny_open() != 0) _exit(2);
        pthread_t thread;
        worker_may_end = 0;
        if (pthread_create(&thread, NULL, worker, NULL) != 0) _exit(5);
        if (!churn(blocks, BLOCKS, 4, 400)) _exit(3);  // past the allocator's 1 s between looks at /proc
        char byte = 1;
        if (write(ready[1], &byte, 1) != 1 || read(proceed[0], &byte, 1) != 1) _exit(6);
        worker_may_end = 1;
        pthread_join(thread, NULL);
        pthread_exit(NULL);
    }
    char byte = 0;
    long threads = -1;
    if (read(ready[0], &byte, 1) == 1) {
        // The child's two threads are alive; give a scavenger thread time to start.
        for (int i = 0; i < 100 && (threads = proc_status_field(pid, "Threads")) < 3; i++) usleep(20000);
    }
    byte = 1;
    if (write(proceed[1], &byte, 1) != 1) CHECK(0, "exits_after_pthread_exit: the child went away early");
    int status = wait_with_deadline(pid, 5);
    close(ready[0]); close(ready[1]); close(proceed[0]); close(proceed[1]);
    const char *expect = getenv("SWIFTHEAP_EXPECT");
    if (expect && strcmp(expect, "1") == 0)
        CHECK(threads >= 3, "exits_after_pthread_exit: %ld threads while the program's two ran: no scavenger "
              "thread started where /proc cannot be read", threads);
    CHECK(status != -1, "exits_after_pthread_exit: the process did not end within 5 s of main's pthread_exit "
          "(%ld threads before): a thread the program did not create kept it alive", threads);
    if (status == -1) return;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exits_after_pthread_exit: wait status 0x%x", status);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        printf("exits_after_pthread_exit: ok (%ld threads while the program's two ran)\n", threads);
}

int main(void) {
    check_preload();
    if (!seccomp_available()) {
        printf("no_proc: skipped: no seccomp filters here\n");
        return 0;
    }
    fflush(stdout);
    sandboxed_child();
    fflush(stdout);
    exits_after_pthread_exit();
    return test_exit("no_proc");
}
