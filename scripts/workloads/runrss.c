/* runrss: the suite's launcher (not a workload).
 *
 *   runrss RESULT_FILE PRELOAD RSS_LIMIT_MIB PROGRAM [ARGS...]
 *
 * Forks, sets LD_PRELOAD=PRELOAD in the child (removes it when PRELOAD is
 * empty), execs PROGRAM and waits for it with wait4. Writes
 * "<wait status> <ru_maxrss KiB> <wall ns> <user us> <sys us> <rss killed 0|1>"
 * to RESULT_FILE.
 * Why not from python directly: Linux carries the peak RSS of the forking
 * process over into the child's ru_maxrss across exec, so a child forked from
 * the python runner reports at least the runner's RSS. Forked from this small
 * program, the floor is about a MiB. The launcher itself never runs under the
 * allocator being measured.
 * A watchdog process polls the child's resident set every 20 ms and kills it
 * with SIGKILL above RSS_LIMIT_MIB (0: no limit), so that an allocator that
 * never returns memory cannot take the shared machine down with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void watchdog(pid_t pid, long limit_pages) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    for (;;) {
        FILE *f = fopen(path, "r");
        if (!f) _exit(0);
        long size = 0, resident = 0;
        int n = fscanf(f, "%ld %ld", &size, &resident);
        fclose(f);
        if (n == 2 && resident > limit_pages) {
            kill(pid, SIGKILL);
            _exit(3);
        }
        usleep(20000);
    }
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: runrss RESULT_FILE PRELOAD RSS_LIMIT_MIB PROGRAM [ARGS...]\n"); return 2; }
    long limit_mib = atol(argv[3]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) { perror("runrss: fork"); return 2; }
    if (pid == 0) {
        if (argv[2][0]) setenv("LD_PRELOAD", argv[2], 1);
        else unsetenv("LD_PRELOAD");
        execvp(argv[4], argv + 4);
        fprintf(stderr, "runrss: exec %s: %s\n", argv[4], strerror(errno));
        _exit(127);
    }
    pid_t dog = -1;
    if (limit_mib > 0) {
        dog = fork();
        if (dog == 0) watchdog(pid, limit_mib * (1024 * 1024 / sysconf(_SC_PAGESIZE)));
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR) { perror("runrss: wait4"); return 2; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int rss_killed = 0;
    if (dog > 0) {
        int ds;
        kill(dog, SIGKILL);
        while (waitpid(dog, &ds, 0) < 0 && errno == EINTR) {}
        rss_killed = WIFEXITED(ds) && WEXITSTATUS(ds) == 3;
    }
    FILE *f = fopen(argv[1], "w");
    if (!f) { perror("runrss: result file"); return 2; }
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    fprintf(f, "%d %ld %lld %lld %lld %d\n", status, ru.ru_maxrss, ns,
            (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec, rss_killed);
    fclose(f);
    return 0;
}
