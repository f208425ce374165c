// bad.c: misuse of the API ("Bad input" in DESIGN.md). Each case runs in a child.
// Pointers never returned by malloc (static, stack, mmap'd, interior, misaligned) and
// an immediate double free must abort (SIGABRT) with a short message on stderr naming
// the call (free/realloc) - glibc does so too. Under SwiftHeap the message must also
// name the pointer. A double free with other frees in between may go undetected, but
// then the heap must not hand the same block out twice (no silent corruption).
#include "testutil.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

static char static_buf[256] __attribute__((aligned(64)));
static int strict;

enum { ABORTS, NO_DUPLICATES };

struct result { int signaled, sig, status; char err[512]; };

static struct result run_child(void (*fn)(void)) {
    struct result r;
    memset(&r, 0, sizeof r);
    int pfd[2];
    REQUIRE(pipe(pfd) == 0, "pipe failed");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) {
        alarm(10);
        dup2(pfd[1], 2);
        close(pfd[0]);
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    size_t n = 0;
    ssize_t k;
    while ((k = read(pfd[0], r.err + n, sizeof r.err - 1 - n)) > 0) n += (size_t)k;
    r.err[n] = 0;
    close(pfd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    r.signaled = WIFSIGNALED(st);
    r.sig = r.signaled ? WTERMSIG(st) : 0;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

static char *hex_of(const void *p, char *buf) {
    sprintf(buf, "%p", p);
    return buf;
}

// The pointer each case passes, recorded before forking where it is deterministic.
static void *bad_pointer;

static void c_static(void) { bad_pointer = static_buf + 64; free(bad_pointer); }
static void c_stack(void) {
    char local[128] __attribute__((aligned(16)));
    memset(local, 0, sizeof local);
    bad_pointer = local + 32;
    free(bad_pointer);
}
static void c_mmap(void) {
    char *p = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bad_pointer = p + 4096;
    free(bad_pointer);
}
static void c_interior(void) {
    char *p = malloc(64);
    memset(p, 0, 64);
    bad_pointer = p + 16;
    free(bad_pointer);
}
static void c_misaligned(void) {
    char *p = malloc(64);
    bad_pointer = p + 8;
    free(bad_pointer);
}
static void c_double_small(void) {
    char *p = malloc(64);
    free(p);
    bad_pointer = p;
    free(p);
}
static void c_realloc_static(void) { bad_pointer = static_buf + 64; realloc(bad_pointer, 100); }
static void c_realloc_interior(void) {
    char *p = malloc(200);
    memset(p, 0, 200);
    bad_pointer = p + 48;
    realloc(bad_pointer, 1000);
}

// Double frees with other frees in between: detected (abort), or else the heap must
// never hand out one block twice. Exit status 1 = duplicates seen.
static void dup_check(char *a, size_t n) {
    enum { M = 64 };
    void *got[M];
    for (int i = 0; i < M; i++) got[i] = malloc(n);
    for (int i = 0; i < M; i++)
        for (int j = i + 1; j < M; j++)
            if (got[i] == got[j]) {
                fprintf(stderr, "the same block %p handed out twice after a double free of %p\n", got[i], (void *)a);
                _exit(1);
            }
}
static void c_double_later_small(void) {
    char *a = malloc(48), *b = malloc(48), *c = malloc(48);
    free(a);
    free(b);
    free(c);
    bad_pointer = a;
    free(a);
    dup_check(a, 48);
}
static void c_double_large(void) {
    char *a = malloc(3 << 20), *b = malloc(3 << 20);
    memset(a, 1, 3 << 20);
    free(a);
    free(b);
    bad_pointer = a;
    free(a);
    dup_check(a, 3 << 20);
}

struct bcase { const char *name, *call; void (*fn)(void); int expect; int glibc_may_segv; };

int main(void) {
    check_preload();
    const char *e = getenv("SWIFTHEAP_EXPECT");
    strict = e && strcmp(e, "1") == 0;
    static const struct bcase cases[] = {
        {"free of a static buffer", "free", c_static, ABORTS, 0},
        {"free of a stack address", "free", c_stack, ABORTS, 0},
        {"free of mmap'd memory", "free", c_mmap, ABORTS, 0},
        {"free of an interior pointer", "free", c_interior, ABORTS, 0},
        {"free of a misaligned pointer", "free", c_misaligned, ABORTS, 0},
        {"immediate double free", "free", c_double_small, ABORTS, 0},
        {"realloc of a static buffer", "realloc", c_realloc_static, ABORTS, 0},
        {"realloc of an interior pointer", "realloc", c_realloc_interior, ABORTS, 0},
        {"double free after other frees", "free", c_double_later_small, NO_DUPLICATES, 0},
        {"double free of a large block", "free", c_double_large, NO_DUPLICATES, 1},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bcase *c = &cases[i];
        struct result r = run_child(c->fn);
        size_t len = strlen(r.err);
        int lines = 0;
        for (size_t k = 0; k < len; k++) lines += r.err[k] == '\n';
        char *nl = strchr(r.err, '\n');
        if (nl) *nl = 0; // first line only, for messages
        if (r.signaled && r.sig == SIGABRT) {
            CHECK(len > 0, "%s: aborted without a message on stderr", c->name);
            CHECK(lines <= 2, "%s: abort message is %d lines long (want one line)", c->name, lines);
            CHECK(strstr(r.err, c->call) != NULL, "%s: abort message does not name %s(): \"%s\"", c->name, c->call, r.err);
            if (strict) CHECK(strstr(r.err, "0x") != NULL, "%s: abort message does not name the pointer: \"%s\"", c->name, r.err);
            printf("bad: %-32s -> abort: %s\n", c->name, r.err);
            if (c->fn == c_static || c->fn == c_realloc_static) {
                char buf[32];
                if (strict) CHECK(strstr(r.err, hex_of(static_buf + 64, buf)) != NULL,
                                  "%s: message does not name %p: \"%s\"", c->name, (void *)(static_buf + 64), r.err);
            }
        } else if (c->expect == NO_DUPLICATES && !r.signaled && r.status == 0) {
            printf("bad: %-32s -> not detected, no block handed out twice\n", c->name);
        } else if (c->glibc_may_segv && !strict && r.signaled && r.sig == SIGSEGV) {
            printf("bad: %-32s -> SIGSEGV (glibc)\n", c->name);
        } else if (r.signaled) {
            CHECK(0, "%s: killed by signal %d (%s), want SIGABRT with a message; stderr: \"%s\"", c->name, r.sig,
                  strsignal(r.sig), r.err);
        } else {
            CHECK(0, "%s: %s (exit status %d); stderr: \"%s\"", c->name,
                  c->expect == ABORTS ? "not detected, the program went on" : "the same block was handed out twice",
                  r.status, r.err);
        }
    }
    return test_exit("bad");
}
