/* Run a process as if its x86-64 CPU had AVX2 and nothing newer (a Haswell's instruction set),
 * natively, at full speed: loaded with LD_PRELOAD by bench/as_avx2.py.
 *
 * Libraries pick their kernels from what the CPUID instruction reports (onnxruntime's MLAS, numpy,
 * PyTorch, ggml). Linux can make CPUID fault in a process (arch_prctl ARCH_SET_CPUID, on CPUs and
 * hypervisors with CPUID faulting, /proc/cpuinfo flag "cpuid_fault"); the SIGSEGV handler here runs
 * the real instruction and clears the AVX-512, AVX-VNNI and AMX bits before the program sees
 * them. /proc/cpuinfo is answered with the same flags removed, so the process reads one CPU. The
 * setting is inherited by threads and forked children and reset by execve, where LD_PRELOAD
 * installs it again.
 *
 * Handlers that others install for SIGSEGV (Python's faulthandler) are kept and called for every
 * fault that is not a CPUID, so crashes are still reported. glibc itself reads CPUID before any
 * library is loaded; its own string functions keep their AVX-512 variants, which change no result. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

static struct sigaction chained; /* what the program asked for SIGSEGV; SIG_DFL until it asks */
static int active;
static char cpuinfo_path[256];

static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static FILE *(*real_fopen)(const char *, const char *);

static void allow_cpuid(int on) { syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }

#define BIT(n) (1u << (n))

/* Clear what a Haswell does not have. Leaf 7: AVX-512 (F DQ IFMA PF ER CD BW VL, VBMI VBMI2
 * VNNI BITALG VPOPCNTDQ, 4VNNIW 4FMAPS VP2INTERSECT FP16), AMX (BF16 TILE INT8), GFNI, VAES and
 * VPCLMULQDQ; subleaf 1: AVX-VNNI, AVX512-BF16, AMX-FP16, AVX-IFMA, AVX-VNNI-INT8/INT16,
 * AVX-NE-CONVERT, AMX-COMPLEX, AVX10. Leaf 0xD: the AVX-512 and AMX state components. */
static void mask(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    if (leaf == 7 && sub == 0) {
        *b &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        *c &= ~(BIT(1) | BIT(6) | BIT(8) | BIT(9) | BIT(10) | BIT(11) | BIT(12) | BIT(14));
        *d &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && sub == 1) {
        *a &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23));
        *d &= ~(BIT(4) | BIT(5) | BIT(8) | BIT(10) | BIT(19));
    } else if (leaf == 0xD && sub == 0) {
        *a &= ~(BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18));
    } else if (leaf == 0x1D || leaf == 0x1E || leaf == 0x24) { /* AMX tiles, TMUL, AVX10 */
        *a = *b = *c = *d = 0;
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0F && ip[1] == 0xA2) {
        uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
        allow_cpuid(1);
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
        allow_cpuid(0);
        mask(leaf, sub, &a, &b, &c, &d);
        r[REG_RAX] = a, r[REG_RBX] = b, r[REG_RCX] = c, r[REG_RDX] = d; /* zero-extended, as CPUID */
        r[REG_RIP] += 2;
        return;
    }
    if (chained.sa_flags & SA_SIGINFO) {
        chained.sa_sigaction(sig, info, context);
    } else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN) {
        chained.sa_handler(sig);
    } else { /* a real crash: die of it as the program would have */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        real_sigaction(SIGSEGV, &dfl, NULL);
    }
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV || !active) return real_sigaction(sig, act, old);
    if (old) *old = chained;
    if (act) chained = *act;
    return 0;
}

/* /proc/cpuinfo with the masked flags removed, written once per process tree. */
static const char *const hidden_flags[] = {
    "avx512f", "avx512dq", "avx512ifma", "avx512pf", "avx512er", "avx512cd", "avx512bw",
    "avx512vl", "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg",
    "avx512_vpopcntdq", "avx512_4vnniw", "avx512_4fmaps", "avx512_vp2intersect", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "avx_vnni_int8", "avx_vnni_int16", "avx_ifma", "avx_ne_convert",
    "amx_bf16", "amx_tile", "amx_int8", "amx_fp16", "amx_complex", "gfni", "vaes", "vpclmulqdq",
    "avx10", NULL};

static int hidden(const char *word, size_t n) {
    for (const char *const *f = hidden_flags; *f; f++)
        if (strlen(*f) == n && strncmp(*f, word, n) == 0) return 1;
    return 0;
}

static void write_masked_cpuinfo(void) {
    const char *dir = getenv("AS_AVX2_DIR");
    if (!dir) return;
    snprintf(cpuinfo_path, sizeof cpuinfo_path, "%s/cpuinfo.%d", dir, (int)getpid());
    FILE *in = real_fopen("/proc/cpuinfo", "r");
    FILE *out = in ? real_fopen(cpuinfo_path, "w") : NULL;
    char line[8192];
    while (out && fgets(line, sizeof line, in)) {
        if (strncmp(line, "flags", 5) != 0) {
            fputs(line, out);
            continue;
        }
        char *colon = strchr(line, ':');
        fwrite(line, 1, colon - line + 1, out);
        for (char *w = colon + 1; *w;) {
            size_t n = strcspn(w, " \n");
            if (n && !hidden(w, n)) fprintf(out, " %.*s", (int)n, w);
            w += n;
            w += strspn(w, " \n");
        }
        fputc('\n', out);
    }
    if (out) fclose(out);
    if (in) fclose(in);
    if (!out) cpuinfo_path[0] = 0;
}

static const char *redirect(const char *path) {
    return (active && cpuinfo_path[0] && path && strcmp(path, "/proc/cpuinfo") == 0) ? cpuinfo_path : path;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int mode = va_arg(ap, int);
    va_end(ap);
    if (!real_open) real_open = dlsym(RTLD_NEXT, "open");
    return real_open(redirect(path), flags, mode);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int mode = va_arg(ap, int);
    va_end(ap);
    if (!real_open64) real_open64 = dlsym(RTLD_NEXT, "open64");
    return real_open64(redirect(path), flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int mode = va_arg(ap, int);
    va_end(ap);
    if (!real_openat) real_openat = dlsym(RTLD_NEXT, "openat");
    return real_openat(dirfd, redirect(path), flags, mode);
}

FILE *fopen(const char *path, const char *mode) {
    if (!real_fopen) real_fopen = dlsym(RTLD_NEXT, "fopen");
    return real_fopen(redirect(path), mode);
}

__attribute__((constructor)) static void start(void) {
    real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    real_fopen = dlsym(RTLD_NEXT, "fopen");
    struct sigaction sa = {.sa_sigaction = on_segv, .sa_flags = SA_SIGINFO | SA_NODEFER};
    sigemptyset(&sa.sa_mask);
    if (real_sigaction(SIGSEGV, &sa, NULL) != 0) return;
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        /* no CPUID faulting here: stop rather than run with the real CPU's kernels unannounced */
        static const char msg[] = "as_avx2: this CPU or kernel cannot make CPUID fault (no cpuid_fault)\n";
        if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
        _exit(3);
    }
    active = 1;
    write_masked_cpuinfo();
}
