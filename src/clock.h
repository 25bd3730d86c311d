/* Clocks, sleeps and backoff: a leaf that everything may use. Internal. */
#ifndef CACHET_CLOCK_H
#define CACHET_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Unix time in milliseconds (CLOCK_REALTIME), for envelope timestamps. */
int64_t cachet_now_ms(void);
/* Monotonic milliseconds, for deadlines: a clock step cannot stretch them. */
int64_t cachet_mono_ms(void);
/* The same with a fraction, for measuring a round trip. */
double cachet_mono_ms_precise(void);
/* Sleep for `ms` milliseconds (resuming after signals), but never past the
 * monotonic `deadline_ms`. */
void cachet_sleep_until(int64_t ms, int64_t deadline_ms);
/* The CLOCK_MONOTONIC time `ms` from now, for a condition variable's wait
 * (one made with pthread_condattr_setclock(CLOCK_MONOTONIC)). */
void cachet_deadline_ts(int64_t ms, struct timespec *ts);
/* A jittered backoff: a uniformly random delay in [step/2, step] ms, at
 * least 1, so that waiters that started together do not retry together. */
int64_t cachet_jitter_ms(int64_t step);

#endif
