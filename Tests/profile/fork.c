// fork() while another thread allocates and takes samples: the fork handlers take the
// profile lock with the allocator's, so the child can sample and write its own
// profile. Each child allocates from child_site and exits; the parent's profile
// (SWIFTHEAP_PROFILE without %p: only the parent writes it) must not be a child's.
//
//   fork CHILDREN
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include "profutil.h"

static volatile int stop;

NOINLINE void *parent_site(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 1); return p; }
NOINLINE void *child_site(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 2); return p; }

static void *churn(void *argument) {
    (void)argument;
    uint64_t rng = 99;
    static void *ring[4096];
    unsigned i = 0;
    while (!stop) {
        free(ring[i & 4095]);
        ring[i & 4095] = parent_site(16 + (size_t)(next_random(&rng) % 8192));
        i++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    require_swiftheap();
    int children = argc > 1 ? atoi(argv[1]) : 20;
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, churn, NULL) == 0);
    printf("parent %d\n", (int)getpid());
    for (int c = 0; c < children; c++) {
        fflush(stdout);  // or each child prints the parent's buffered lines again at exit
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            uint64_t rng = 5 + (uint64_t)c;
            size_t total = 0;
            while (total < (16u << 20)) { size_t n = site_size(&rng); child_site(n); total += n; }
            exit(0);  // atexit handlers run: the child writes a profile only if PATH has %p
        }
        printf("child %d\n", (int)pid);
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop = 1;
    CHECK(pthread_join(thread, NULL) == 0);
    return 0;
}
