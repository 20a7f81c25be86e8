#include "parallel.h"

// libgomp's entry point for `#pragma omp parallel` (the GCC ABI, stable since GCC 4.9); called
// directly so the C target needs no OpenMP support from the compiler that builds it.
extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

typedef struct {
    int parts;
    long count;
    void *context;
    bw_range_body body;
} job_t;

/// Each thread runs the parts p = thread, thread + team size, ...: every part runs even when
/// libgomp gives a smaller team than asked for (nested call, OMP_THREAD_LIMIT, OMP_DYNAMIC).
static void run_part(void *data) {
    job_t *job = data;
    long team = omp_get_num_threads();
    for (long part = omp_get_thread_num(); part < job->parts; part += team)
        job->body(job->context, part, part * job->count / job->parts, (part + 1) * job->count / job->parts);
}

void bw_parallel_ranges(int parts, long count, void *context, bw_range_body body) {
    if (parts <= 1) { body(context, 0, 0, count); return; }
    job_t job = {parts, count, context, body};
    GOMP_parallel(run_part, &job, (unsigned)parts, 0);
}
