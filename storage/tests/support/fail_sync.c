/*
 * A failing disk, for tests: preloaded into a `vouchnet run` process (LD_PRELOAD), it makes
 * every call that asks the kernel to make written data durable (fsync, fdatasync,
 * sync_file_range) fail with EIO once the file named by $VOUCHNET_FAIL_SYNC_WHEN exists,
 * as a disk whose writes stopped reaching the platter would. Writes themselves still
 * succeed, so what the process wrote before may or may not be on disk afterwards; only what
 * it reported durable must be. Until the file exists, each call goes to the C library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *when = getenv("VOUCHNET_FAIL_SYNC_WHEN");
    return when != NULL && access(when, F_OK) == 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing()) {
        errno = EIO;
        return -1;
    }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (failing()) {
        errno = EIO;
        return -1;
    }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags) {
    static int (*real)(int, off_t, off_t, unsigned int);
    if (failing()) {
        errno = EIO;
        return -1;
    }
    if (!real) real = (int (*)(int, off_t, off_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
    return real(fd, offset, nbytes, flags);
}
