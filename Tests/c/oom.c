// oom.c: running out of memory ("Bad input" in DESIGN.md: "Running out of address
// space or memory returns NULL; the allocator stays usable"). In a child process the
// address space is limited (RLIMIT_AS = what is mapped now + 384 MiB), then:
// large and small allocations until NULL (errno ENOMEM, no crash), realloc and calloc
// failing leave the old block intact, and after freeing, allocation works again.
#include "testutil.h"

#include <sys/resource.h>
#include <sys/wait.h>

static size_t vm_size(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0;
    if (f) {
        if (fscanf(f, "%lu", &size) != 1) size = 0;
        fclose(f);
    }
    return (size_t)size * (size_t)sysconf(_SC_PAGESIZE);
}

#define MiB ((size_t)1 << 20)
#define MAXB 4096

static int child(void) {
    alarm(20);
    // Warm up every path first, so that lazy initialisation is not what fails.
    void *w1 = malloc(100), *w2 = malloc(2 * MiB), *w3 = memalign(4096, 5000);
    free(w1); free(w2); free(w3);
    struct rlimit rl;
    size_t limit = vm_size() + 384 * MiB;
    rl.rlim_cur = rl.rlim_max = limit;
    if (setrlimit(RLIMIT_AS, &rl) != 0) { fprintf(stderr, "setrlimit failed\n"); return 0; }

    static void *blk[MAXB];
    int n = 0;
    errno = 0;
    // 1. Large blocks until NULL.
    while (n < MAXB) {
        void *p = malloc(8 * MiB);
        if (!p) break;
        memset(p, 1, 4096);
        blk[n++] = p;
    }
    if (n == MAXB) { fprintf(stderr, "FAIL large allocations never failed under RLIMIT_AS\n"); return 1; }
    if (errno != ENOMEM) { fprintf(stderr, "FAIL malloc(8 MiB) = NULL with errno %d (want ENOMEM)\n", errno); return 1; }
    int large = n;
    // 2. Failing calloc and realloc: NULL, ENOMEM, old block intact.
    errno = 0;
    void *c = calloc(64, 8 * MiB);
    if (c) { fprintf(stderr, "FAIL calloc(512 MiB) succeeded under the limit\n"); return 1; }
    if (errno != ENOMEM) { fprintf(stderr, "FAIL calloc: errno %d\n", errno); return 1; }
    unsigned char *keep = malloc(1000);
    if (keep) {
        fill_seed(keep, 1000, 42);
        errno = 0;
        void *r = realloc(keep, 1024 * MiB);
        if (r) { fprintf(stderr, "FAIL realloc(1 GiB) succeeded under the limit\n"); return 1; }
        if (errno != ENOMEM) { fprintf(stderr, "FAIL realloc: errno %d\n", errno); return 1; }
        if (verify_seed(keep, 1000, 42) != 1000) { fprintf(stderr, "FAIL failed realloc changed the block\n"); return 1; }
        free(keep);
    }
    // 3. Small blocks until NULL (bounded), then everything is freed.
    static void *small[1 << 20];
    int ns = 0;
    while (ns < (1 << 20)) {
        void *p = malloc(256);
        if (!p) break;
        small[ns++] = p;
    }
    for (int i = 0; i < ns; i++) free(small[i]);
    // 4. Free half of the large blocks: large allocations work again.
    for (int i = 0; i < large; i += 2) { free(blk[i]); blk[i] = NULL; }
    int again = 0;
    for (int i = 0; i < large / 4; i++) {
        void *p = malloc(8 * MiB);
        if (!p) break;
        memset(p, 2, 8 * MiB);
        free(p);
        again++;
    }
    if (large >= 4 && again < large / 4) {
        fprintf(stderr, "FAIL after freeing %d of %d blocks of 8 MiB, only %d could be allocated again\n", (large + 1) / 2,
                large, again);
        return 1;
    }
    // 5. And small ones.
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(1 + (size_t)i % 3000);
        if (!p) { fprintf(stderr, "FAIL small malloc failed after memory was freed\n"); return 1; }
        free(p);
    }
    for (int i = 0; i < large; i++) free(blk[i]);
    printf("oom: %d large blocks (8 MiB) before NULL, %d small; %d large again after freeing half\n", large, ns, again);
    fflush(stdout);
    return 0;
}

int main(void) {
    check_preload();
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) _exit(child());
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st))
        CHECK(0, "child killed by signal %d (%s) when memory ran out", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        CHECK(WEXITSTATUS(st) == 0, "child exited with status %d", WEXITSTATUS(st));
    return test_exit("oom");
}
