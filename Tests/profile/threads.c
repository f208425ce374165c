// The sites of sites.c, each in a thread of its own: 60/30/10% of the live heap from
// three threads, and a fourth that allocates four times as much and frees it (the
// last batch freed by the main thread, so sampled objects are also freed by a thread
// that did not allocate them). Every share is right only if samples come from every
// thread.
//
//   threads LIVE_MIB
#include <pthread.h>
#include "profutil.h"

NOINLINE void *thread_site_a(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 1); return p; }
NOINLINE void *thread_site_b(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 2); return p; }
NOINLINE void *thread_site_c(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 3); return p; }
NOINLINE void *thread_site_freed(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 4); return p; }

struct job {
    void *(*site)(size_t);
    size_t bytes;     // to allocate
    int frees;        // free in batches (the last batch is left to main)
    uint64_t rng;
    size_t done;      // allocated
    void *last[1024];
};

static void *worker(void *argument) {
    struct job *job = argument;
    while (job->done < job->bytes) {
        for (int i = 0; i < 1024; i++) {
            size_t n = job->frees ? 64 + (size_t)(next_random(&job->rng) % 65536) : site_size(&job->rng);
            void *p = job->site(n);
            job->done += n;
            if (job->frees) job->last[i] = p;
        }
        if (job->frees && job->done < job->bytes)
            for (int i = 0; i < 1024; i++) free(job->last[i]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    require_swiftheap();
    size_t live = (argc > 1 ? strtoul(argv[1], NULL, 10) : 256) << 20;
    struct job jobs[4] = {
        { thread_site_a, live / 10 * 6, 0, 1 }, { thread_site_b, live / 10 * 3, 0, 2 },
        { thread_site_c, live / 10, 0, 3 }, { thread_site_freed, live * 4, 1, 4 },
    };
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&threads[i], NULL, worker, &jobs[i]) == 0);
    for (int i = 0; i < 4; i++) CHECK(pthread_join(threads[i], NULL) == 0);
    for (int i = 0; i < 1024; i++) free(jobs[3].last[i]);
    print_truth("thread_site_a", jobs[0].done);
    print_truth("thread_site_b", jobs[1].done);
    print_truth("thread_site_c", jobs[2].done);
    print_truth("thread_site_freed", jobs[3].done);
    return 0;
}
