/* runrss: the suite's launcher (not a workload).
 *
 *   runrss RESULT_FILE PRELOAD PROGRAM [ARGS...]
 *
 * Forks, sets LD_PRELOAD=PRELOAD in the child (removes it when PRELOAD is
 * empty), execs PROGRAM and waits for it with wait4. Writes
 * "<wait status> <ru_maxrss KiB> <wall ns> <user us> <sys us>" to RESULT_FILE.
 * Why not from python directly: Linux carries the peak RSS of the forking
 * process over into the child's ru_maxrss across exec, so a child forked from
 * the python runner reports at least the runner's RSS. Forked from this small
 * program, the floor is about a MiB. The launcher itself never runs under the
 * allocator being measured.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: runrss RESULT_FILE PRELOAD PROGRAM [ARGS...]\n"); return 2; }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) { perror("runrss: fork"); return 2; }
    if (pid == 0) {
        if (argv[2][0]) setenv("LD_PRELOAD", argv[2], 1);
        else unsetenv("LD_PRELOAD");
        execvp(argv[3], argv + 3);
        fprintf(stderr, "runrss: exec %s: %s\n", argv[3], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR) { perror("runrss: wait4"); return 2; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *f = fopen(argv[1], "w");
    if (!f) { perror("runrss: result file"); return 2; }
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    fprintf(f, "%d %ld %lld %lld %lld\n", status, ru.ru_maxrss, ns,
            (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec);
    fclose(f);
    return 0;
}
