/* A static probe run inside containers by tests/test_containers.py (built there with
 * `cc -static`): it reports what the container lets a model see and do.
 *   probe env                  print the environment, one NAME=value a line
 *   probe exists PATH...       print "yes PATH" or "no PATH" for each path
 *   probe write FILE TEXT      write TEXT to FILE (exit 1 if it cannot)
 *   probe read FILE            copy FILE to stdout (exit 1 if it cannot)
 *   probe spawn TOKEN          fork a child; both sleep until killed (TOKEN marks them) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "env")) {
        for (char **e = environ; *e; e++) printf("%s\n", *e);
        return 0;
    }
    if (!strcmp(argv[1], "exists")) {
        struct stat st;
        for (int i = 2; i < argc; i++) printf("%s %s\n", stat(argv[i], &st) == 0 ? "yes" : "no", argv[i]);
        return 0;
    }
    if (!strcmp(argv[1], "write") && argc == 4) {
        FILE *f = fopen(argv[2], "w");
        if (!f) { perror(argv[2]); return 1; }
        fputs(argv[3], f);
        return fclose(f) == 0 ? 0 : 1;
    }
    if (!strcmp(argv[1], "read") && argc == 3) {
        FILE *f = fopen(argv[2], "r");
        if (!f) { perror(argv[2]); return 1; }
        int c;
        while ((c = fgetc(f)) != EOF) putchar(c);
        return 0;
    }
    if (!strcmp(argv[1], "spawn")) {
        if (fork() < 0) return 1;
        printf("%d\n", (int)getpid());
        fflush(stdout);
        for (;;) pause();
    }
    return 2;
}
