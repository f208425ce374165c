// A wrapper like a shell running one command: forks, execs argv[1..], waits, exits
// with its status. It allocates nothing, so under the preload it takes no sample and
// must leave the profile of the program it ran alone.
//
//   wrapper /abs/path/program ARGS...
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
        execv(argv[1], argv + 1);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 2;
    return WEXITSTATUS(status);
}
