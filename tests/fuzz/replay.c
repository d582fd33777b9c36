/*
 * replay.c: runs a fuzz target over files without libFuzzer, for `make
 * check` on any compiler: each argument is a seed file (or a directory of
 * them); each file is one TAP test that passes if the target returns
 * (a crash or a sanitizer report fails the whole program, which the TAP
 * driver reports).  Single-threaded.
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count;

static int
run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("not ok %d - %s (cannot open)\n", ++count, path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    size_t got = buf ? fread(buf, 1, (size_t)(n > 0 ? n : 0), f) : 0;
    fclose(f);
    LLVMFuzzerTestOneInput(buf, got);
    free(buf);
    const char *base = strrchr(path, '/');
    printf("ok %d - replays %s\n", ++count, base ? base + 1 : path);
    return 0;
}

static int
collect(const char *path, char ***list, size_t *n)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        *list = realloc(*list, (*n + 1) * sizeof **list);
        (*list)[(*n)++] = strdup(path);
        return 0;
    }
    DIR *d = opendir(path);
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        collect(full, list, n);
    }
    closedir(d);
    return 0;
}

static int
cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int
main(int argc, char **argv)
{
    char **files = NULL;
    size_t n = 0;
    for (int i = 1; i < argc; i++)
        collect(argv[i], &files, &n);
    qsort(files, n, sizeof *files, cmp);
    printf("1..%zu\n", n);
    for (size_t i = 0; i < n; i++) {
        run_file(files[i]);
        free(files[i]);
    }
    free(files);
    return 0;
}
