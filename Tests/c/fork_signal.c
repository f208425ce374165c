// fork_signal.c: fork() from a signal handler that interrupts malloc or free.
//
// A single-threaded program allocates and frees in a tight loop (small batches that
// refill and flush the thread cache, so the thread is often inside an allocator lock)
// while a helper *process* (not a thread: the program must stay single-threaded) sends
// it SIGUSR1 as fast as it can. The handler calls fork(); the child _exit()s at once and
// the handler reaps it. glibc's fork takes no malloc lock in a single-threaded process,
// so this works under glibc; an allocator whose atfork handler takes its own locks
// deadlocks the first time the signal lands while the thread holds one of them.
//
// The work runs in a child with a watchdog: a hang is reported as a failure after
// TIMEOUT_S seconds instead of hanging the test run.
#include "testutil.h"

#include <signal.h>
#include <sys/wait.h>

#define FORKS_WANTED 3000
#define TIMEOUT_S 30

static volatile sig_atomic_t forks_done;
static volatile sig_atomic_t fork_failures;

static void on_usr1(int sig) {
    (void)sig;
    int saved = errno;
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0) {
        fork_failures++;
    } else {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        forks_done++;
    }
    errno = saved;
}

static int run(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");

    pid_t me = getpid();
    pid_t sender = fork();
    REQUIRE(sender >= 0, "fork of the sender");
    if (sender == 0) {
        // The sender: signal the parent until it goes away (or we are killed).
        for (;;) {
            if (kill(me, SIGUSR1) != 0) _exit(0);
            usleep(200);
        }
    }

    enum { BATCH = 300 };
    void *blocks[BATCH];
    uint64_t rng = 42;
    long rounds = 0;
    while (forks_done < FORKS_WANTED) {
        for (int i = 0; i < BATCH; i++) {
            rng = mix64(rng);
            size_t n = (rng & 7) == 0 ? 40000 + rng % 300000 : 16 + rng % 2000;
            blocks[i] = malloc(n);
            REQUIRE(blocks[i], "malloc(%zu)", n);
            memset(blocks[i], (int)(rng & 0xff), n < 64 ? n : 64);
        }
        for (int i = 0; i < BATCH; i++) free(blocks[i]);
        rounds++;
    }
    kill(sender, SIGKILL);
    waitpid(sender, NULL, 0);
    printf("fork_signal: %d forks from the handler in %ld rounds, %d fork failures\n",
           (int)forks_done, rounds, (int)fork_failures);
    CHECK(fork_failures == 0, "fork failed %d times in the handler", (int)fork_failures);
    return test_exit("fork_signal");
}

int main(void) {
    check_preload();
    setvbuf(stdout, NULL, _IONBF, 0);
    int rc = run_with_watchdog(run, TIMEOUT_S, "fork from a signal handler deadlocked against an allocator lock");
    return rc;
}
