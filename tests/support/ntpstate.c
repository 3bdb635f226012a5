/* The kernel's NTP discipline state as a test sets it, for the process
 * this library is preloaded into (tests/support/fakeclock.rs).
 *
 * adjtimex(2), ntp_adjtime(3) and clock_adjtime(2) on CLOCK_REALTIME are
 * answered by the kernel as usual, then, if the file named by
 * SARGS_NTP_STATE_FILE reads "synchronised", as TIME_OK with STA_UNSYNC
 * cleared, and if it reads "unsynchronised", as TIME_ERROR with STA_UNSYNC
 * set: what a time daemon's discipline (or its absence) makes the kernel
 * say. Any other content, or no file, leaves the kernel's answer as it is.
 * Only reads are rewritten: a call that sets something is passed through. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>

static int wanted(void) {
    const char *path = getenv("SARGS_NTP_STATE_FILE");
    if (!path) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[32] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (strncmp(buf, "synchronised", 12) == 0) return TIME_OK;
    if (strncmp(buf, "unsynchronised", 14) == 0) return TIME_ERROR;
    return -1;
}

static int rewrite(struct timex *tx, int state) {
    if (state < 0 || tx->modes != 0) return state;
    int w = wanted();
    if (w < 0) return state;
    if (w == TIME_OK) tx->status &= ~STA_UNSYNC;
    else tx->status |= STA_UNSYNC;
    return w;
}

int adjtimex(struct timex *tx) {
    int (*real)(struct timex *) = (int (*)(struct timex *))dlsym(RTLD_NEXT, "adjtimex");
    if (!real) return -1;
    return rewrite(tx, real(tx));
}

int ntp_adjtime(struct timex *tx) {
    int (*real)(struct timex *) = (int (*)(struct timex *))dlsym(RTLD_NEXT, "ntp_adjtime");
    if (!real) return -1;
    return rewrite(tx, real(tx));
}

int clock_adjtime(clockid_t clock, struct timex *tx) {
    int (*real)(clockid_t, struct timex *) =
        (int (*)(clockid_t, struct timex *))dlsym(RTLD_NEXT, "clock_adjtime");
    if (!real) return -1;
    int state = real(clock, tx);
    return clock == CLOCK_REALTIME ? rewrite(tx, state) : state;
}
