// LD_PRELOAD probe for tests/egl_thread_exit_test.ts. It wraps the thread-exit
// destructors of the pthread keys that glvnd's libEGL and libGLdispatch create,
// and prints one line each time such a destructor runs: a thread that ends while
// still holding EGL state. (glvnd's own library destructor frees every thread's
// state at process exit; a thread running its destructor then races it.)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef void (*destructor_fn)(void *);

#define SLOTS 4
static destructor_fn wrapped[SLOTS];
static int used;

static void report(int slot, void *value) {
  fprintf(stderr, "egl-exit-probe: EGL key destructor ran at thread exit (tid %d)\n", gettid());
  wrapped[slot](value);
}
static void slot0(void *v) { report(0, v); }
static void slot1(void *v) { report(1, v); }
static void slot2(void *v) { report(2, v); }
static void slot3(void *v) { report(3, v); }
static destructor_fn slots[SLOTS] = {slot0, slot1, slot2, slot3};

int pthread_key_create(pthread_key_t *key, destructor_fn destructor) {
  static int (*real)(pthread_key_t *, destructor_fn);
  if (!real) real = (int (*)(pthread_key_t *, destructor_fn))dlsym(RTLD_NEXT, "pthread_key_create");
  Dl_info info;
  if (destructor && used < SLOTS && dladdr((void *)destructor, &info) && info.dli_fname &&
      (strstr(info.dli_fname, "libEGL") || strstr(info.dli_fname, "libGLdispatch"))) {
    wrapped[used] = destructor;
    destructor = slots[used++];
  }
  return real(key, destructor);
}
