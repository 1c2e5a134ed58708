// LD_PRELOAD probe for tests/egl_thread_exit_test.ts: does any thread other
// than the one calling exit() still hold EGL state when the process exits, or
// end holding it? glvnd's libEGL frees a thread's state in the thread's exit
// destructor and, at process exit, frees every thread's state in its own
// library destructor: a thread that ends as the process exits runs both at once.
//
// It wraps the thread-exit destructors of the pthread keys that glvnd's libEGL
// and libGLdispatch create, counts per thread which of those keys hold a value
// (pthread_setspecific), and prints:
//   "egl-exit-probe: EGL key destructor ran at thread exit (tid N)"  each time
//     a thread ends holding such a value;
//   "egl-exit-probe: at exit: K EGL keys, H values held by other threads"  when
//     the process exits (an atexit handler, before any library destructor).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*destructor_fn)(void *);

#define SLOTS 4
static destructor_fn wrapped[SLOTS];
static pthread_key_t keys[SLOTS];
static int used;
static int held_total; // values held, all threads (atomic)
static __thread int held[SLOTS];

static int slot_of(pthread_key_t key) {
  for (int i = 0; i < used; i++) if (keys[i] == key) return i;
  return -1;
}

static void release(int slot) {
  if (held[slot]) {
    held[slot] = 0;
    __atomic_sub_fetch(&held_total, 1, __ATOMIC_SEQ_CST);
  }
}

static void report(int slot, void *value) {
  release(slot);
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
  int slot = -1;
  if (destructor && used < SLOTS && dladdr((void *)destructor, &info) && info.dli_fname &&
      (strstr(info.dli_fname, "libEGL") || strstr(info.dli_fname, "libGLdispatch"))) {
    slot = used;
    wrapped[slot] = destructor;
    destructor = slots[slot];
  }
  int r = real(key, destructor);
  if (slot >= 0 && r == 0) keys[used++] = *key;
  return r;
}

int pthread_setspecific(pthread_key_t key, const void *value) {
  static int (*real)(pthread_key_t, const void *);
  if (!real) real = (int (*)(pthread_key_t, const void *))dlsym(RTLD_NEXT, "pthread_setspecific");
  int slot = slot_of(key);
  if (slot >= 0) {
    if (value && !held[slot]) {
      held[slot] = 1;
      __atomic_add_fetch(&held_total, 1, __ATOMIC_SEQ_CST);
    } else if (!value) {
      release(slot);
    }
  }
  return real(key, value);
}

static void at_exit(void) {
  int own = 0;
  for (int i = 0; i < used; i++) own += held[i];
  int others = __atomic_load_n(&held_total, __ATOMIC_SEQ_CST) - own;
  fprintf(stderr, "egl-exit-probe: at exit: %d EGL keys, %d values held by other threads\n", used,
          others);
}

__attribute__((constructor)) static void install(void) { atexit(at_exit); }
