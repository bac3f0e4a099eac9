/* bench_lens: seconds per tuned-lens training step on a model (the random full-size 1B checkpoint
   of `make bench`), with 1 and 2 threads, and the cost of a whole training extrapolated from it.
   Wall time and process CPU time are both printed: on a shared machine the CPU time of the
   1-thread run is the steadier figure.
     build/bench_lens MODEL [batch 8] [steps 2] [samples of a full run 44838 = 7,473 GSM8K x 6 latents]
   Samples are seeded random residual vectors (the cost does not depend on their values). */
#define _POSIX_C_SOURCE 200809L
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include <time.h>

typedef struct { int L1, D; } bench_shape;

static int bench_sample(void *user, long index, float *resid, float *target) {
    bench_shape *b = (bench_shape *)user;
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(index + 1);
    int i;
    (void)target;
    for (i = 0; i < b->L1 * b->D; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; resid[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5); }
    return 0;
}

static double bench_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + t.tv_nsec * 1e-9; }

int main(int argc, char **argv) {
    char err[512];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    bench_shape shape;
    int batch = argc > 2 ? atoi(argv[2]) : 8, steps = argc > 3 ? atoi(argv[3]) : 2, threads;
    double full = argc > 4 ? atof(argv[4]) : 44838.0, per_sample[3] = { 0, 0, 0 };
    if (argc < 2 || batch < 1 || steps < 1) { fprintf(stderr, "usage: bench_lens MODEL [batch] [steps] [samples]\n"); return 2; }
    lo.n_threads = 2;
    if (!(m = codi_load(argv[1], &lo, err, sizeof err))) { fprintf(stderr, "%s\n", err); return 1; }
    shape.L1 = m->config.n_layers + 1; shape.D = m->config.dim;
    for (threads = 1; threads <= 2; threads++) {
        codi_tuned_lens *t = codi_tuned_lens_new(m);
        codi_lens_train_opts o = codi_lens_train_library(steps, batch);
        codi_lens_trainer *tr;
        double t0, dt, cpu;
        clock_t c0;
        int s;
        o.n_threads = threads;
        if (!t || !(tr = codi_lens_trainer_new(m, t, &o, 100000, bench_sample, &shape, err, sizeof err))) { fprintf(stderr, "%s\n", err); return 1; }
        t0 = bench_now(); c0 = clock();
        for (s = 0; s < steps; s++) if (codi_lens_trainer_step(tr, NULL)) { fprintf(stderr, "%s\n", codi_lens_trainer_error(tr)); return 1; }
        dt = (bench_now() - t0) / steps;
        cpu = (double)(clock() - c0) / CLOCKS_PER_SEC / steps;
        per_sample[threads] = dt / batch;
        printf("{\"threads\": %d, \"layers\": %d, \"dim\": %d, \"vocab\": %d, \"batch\": %d, \"seconds_per_step\": %.3f, \"cpu_seconds_per_step\": %.3f, "
               "\"seconds_per_sample\": %.4f, \"full_run_samples\": %.0f, \"full_run_hours\": %.2f}\n", threads, m->config.n_layers, m->config.dim,
               m->config.vocab, batch, dt, cpu, dt / batch, full, full * dt / batch / 3600.0);
        fflush(stdout);
        codi_lens_trainer_free(tr);
        codi_tuned_lens_free(t);
    }
    printf("{\"speedup_2_threads\": %.2f}\n", per_sample[1] / per_sample[2]);
    codi_model_free(m);
    return 0;
}
