/* The machine's peak float32 multiply-add rate, measured: the ceiling any training step
 * can reach. train.sh compiles it with the project's flags (-O2 -march=native, so the
 * widest vectors the CPU has) and runs it on BENCH_THREADS OpenMP threads.
 *
 * Each thread runs 12 independent chains of fused multiply-adds on full-width vectors
 * (enough to cover the FMA latency times the number of FMA pipes on current x86 and
 * Arm cores); an empty asm statement keeps the compiler from folding the chains.
 * Prints "peak_gflops<TAB>value" (the best of 5 runs, all threads together).
 *   cc -O2 -march=native -fopenmp scripts/bench/peak.c -o peak && OMP_NUM_THREADS=2 ./peak */
#include <omp.h>
#include <stdio.h>
#include <time.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
typedef float vf __attribute__((vector_size(VBYTES)));
#define LANES (VBYTES / 4)

#if defined(__x86_64__) || defined(__i386__)
#define KEEP(v) __asm__ volatile("" : "+v"(v))
#elif defined(__aarch64__)
#define KEEP(v) __asm__ volatile("" : "+w"(v))
#else
#define KEEP(v) __asm__ volatile("" : "+r"(v))
#endif

#define CHAINS 12 /* a0 .. a11 below */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(void) {
    const long iters = 20000000;
    double best = 0;
    float sink = 0;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        #pragma omp parallel reduction(+ : sink)
        {
            vf b, c;
            for (int l = 0; l < LANES; l++) {
                b[l] = 0.999999f;
                c[l] = 1e-7f;
            }
            /* twelve named chains, so each lives in a register */
            vf a0 = b, a1 = b + 1, a2 = b + 2, a3 = b + 3, a4 = b + 4, a5 = b + 5;
            vf a6 = b + 6, a7 = b + 7, a8 = b + 8, a9 = b + 9, a10 = b + 10, a11 = b + 11;
            for (long i = 0; i < iters; i++) {
                /* a = a * b + c on every chain: one FMA each with -march=native */
                a0 = a0 * b + c, a1 = a1 * b + c, a2 = a2 * b + c, a3 = a3 * b + c;
                a4 = a4 * b + c, a5 = a5 * b + c, a6 = a6 * b + c, a7 = a7 * b + c;
                a8 = a8 * b + c, a9 = a9 * b + c, a10 = a10 * b + c, a11 = a11 * b + c;
                KEEP(a0); KEEP(a1); KEEP(a2); KEEP(a3); KEEP(a4); KEEP(a5);
                KEEP(a6); KEEP(a7); KEEP(a8); KEEP(a9); KEEP(a10); KEEP(a11);
            }
            vf s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
            for (int l = 0; l < LANES; l++) sink += s[l];
        }
        double dt = now() - t0;
        double flops = (double)iters * CHAINS * LANES * 2 * omp_get_max_threads();
        if (flops / dt > best) best = flops / dt;
    }
    printf("peak_gflops\t%.1f\n", best / 1e9);
    return sink == 12345.0f; /* uses sink */
}
