/* A power cut for `vouchnet run`, preloaded (LD_PRELOAD) by node/tests/power_cut.rs.
 *
 * A power cut loses whatever the disk had not been told to keep. Only fsync and fdatasync
 * tell it: sync_file_range persists neither a file's size nor the disk's write cache, and a
 * plain write persists nothing. So this library keeps, for every regular file under
 * $VOUCHNET_POWER_CUT_WATCH, a "durable image": a copy of the file taken each time an
 * fsync or fdatasync of it returns successfully, stored in $VOUCHNET_POWER_CUT_IMAGES
 * under the file's path below the watched directory, with '/' written as '%'.
 *
 * The test cuts the power by killing the process (SIGKILL) and putting every watched file
 * back to its image; a file that was never synced is removed. Renaming and removing files
 * count as durable at once (the model covers file contents, not directory entries), so a
 * rename carries the file's image along.
 *
 * The copy is made to a temporary name and renamed into place, so a kill in the middle of
 * it leaves the previous image: the fsync had not returned either.
 *
 * With $VOUCHNET_SYNC_LOG set, every successful fsync or fdatasync, of any file or
 * directory, also appends the synced path and a newline to that file: a test can check
 * that a directory was synced after a rename in it, which the images do not model.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The image name of `path`, if it is under the watched directory. */
static int image_of(const char *path, char *out, size_t len) {
    const char *watch = getenv("VOUCHNET_POWER_CUT_WATCH");
    const char *images = getenv("VOUCHNET_POWER_CUT_IMAGES");
    if (!watch || !images) return 0;
    size_t wl = strlen(watch);
    if (strncmp(path, watch, wl) != 0 || path[wl] != '/') return 0;
    char name[PATH_MAX];
    size_t i = 0;
    for (const char *p = path + wl + 1; *p && i + 1 < sizeof name; p++) name[i++] = *p == '/' ? '%' : *p;
    name[i] = 0;
    return snprintf(out, len, "%s/%s", images, name) < (int)len;
}

/* Copies `from` to `to` through a temporary file renamed into place. */
static void copy_file(const char *from, const char *to) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.partial", to) >= (int)sizeof tmp) return;
    int src = open(from, O_RDONLY | O_CLOEXEC);
    if (src < 0) return; /* renamed or removed meanwhile: its next sync will tell */
    int dst = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (dst < 0) {
        close(src);
        return;
    }
    char buf[65536];
    ssize_t n;
    int ok = 1;
    while ((n = read(src, buf, sizeof buf)) > 0) {
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(dst, buf + done, (size_t)(n - done));
            if (w <= 0) {
                ok = 0;
                break;
            }
            done += w;
        }
        if (!ok) break;
    }
    if (n < 0) ok = 0;
    close(src);
    close(dst);
    if (ok) rename(tmp, to);
    else unlink(tmp);
}

/* Appends `path` to the sync log, if one is asked for. */
static void log_sync(const char *path) {
    const char *log = getenv("VOUCHNET_SYNC_LOG");
    if (!log) return;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return;
    char line[PATH_MAX + 1];
    int len = snprintf(line, sizeof line, "%s\n", path);
    if (len > 0 && len < (int)sizeof line && write(fd, line, (size_t)len) != len) {
        /* A test reading the log finds the line missing. */
    }
    close(fd);
}

/* Records the image of the file open as `fd`, after a successful sync of it. */
static void synced(int fd) {
    char link[64], path[PATH_MAX], image[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return;
    path[n] = 0;
    log_sync(path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    if (image_of(path, image, sizeof image)) copy_file(path, image);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int r = real(fd);
    if (r == 0) synced(fd);
    return r;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int r = real(fd);
    if (r == 0) synced(fd);
    return r;
}

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int r = real(from, to);
    char old_image[PATH_MAX], new_image[PATH_MAX];
    if (r == 0 && image_of(to, new_image, sizeof new_image)) {
        /* The file now at `to` was never synced unless `from` had an image. */
        if (!image_of(from, old_image, sizeof old_image) || real(old_image, new_image) != 0) unlink(new_image);
    }
    return r;
}
