/* Clocks, sleeps and backoff (clock.h). */
#include "clock.h"

#include <errno.h>
#include <sodium.h>
#include <time.h>

int64_t cachet_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cachet_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double cachet_mono_ms_precise(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void cachet_sleep_until(int64_t ms, int64_t deadline_ms) {
  int64_t now = cachet_mono_ms();
  int64_t until = ms > deadline_ms - now ? deadline_ms : now + ms;
  while (now < until) {
    int64_t left = until - now;
    struct timespec ts = {(time_t)(left / 1000),
                          (long)(left % 1000) * 1000000L};
    if (nanosleep(&ts, NULL) == 0 || errno != EINTR)
      break;
    now = cachet_mono_ms();
  }
}

int64_t cachet_jitter_ms(int64_t step) {
  if (step < 2)
    return 1;
  if (step > (int64_t)UINT32_MAX)
    step = (int64_t)UINT32_MAX;
  int64_t half = step / 2;
  return half + (int64_t)randombytes_uniform((uint32_t)(step - half + 1));
}

void cachet_deadline_ts(int64_t ms, struct timespec *ts) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t)(ms / 1000);
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}
