/* slimtvm's parallel launch: a thread pool whose tasks any thread may claim.
 *
 * Linked into every artifact (runtime/claiming_pool.py); slimtvm's loader points the artifact's
 * `__TVMBackendParallelLaunch` at the `slimtvm_parallel_launch` of the first artifact it loaded
 * (one pool per process). A program on TVM's C++ runtime calls `slimtvm_use_claiming_pool()`.
 *
 * TVM's kernels split each parallel loop into `num_task` equal ranges, one per task. TVM's own
 * pool gives task i to thread i and waits for every thread: when another process holds a core,
 * each of a model's parallel loops waits for the operating system to run that core's worker
 * again (ResNet-18 on a 2-core VM with a process spinning on one core: 18 ms at 1 thread,
 * 124-144 ms at 2; benchmarks/busy_core.py). Here:
 * - task i is still thread i's first choice (each thread reads what it wrote in the kernel
 *   before, as with TVM's pool), but each task is claimed with a compare-and-swap, and a thread
 *   that has run its own claims the others' that no thread has started: the caller never waits
 *   for a worker that has not woken up, only for tasks already running;
 * - a worker whose task kept the caller waiting, longer than the caller's own share took and
 *   over 200 µs since the worker claimed it, twice within 100 ms, sits out (asleep) for 20 ms,
 *   twice as long each time it is benched again (up to 640 ms), and the other threads split the
 *   loops meanwhile;
 * - idle workers spin on the job word for 2 ms, yielding their core every ~30 µs to any thread
 *   that waits for it (on a busy core, the caller), then sleep on a futex.
 * One caller at a time: a second thread calling in while a job runs (or a kernel launching from
 * inside a task) runs its loop alone on the calling thread. After fork() the child has no
 * workers and starts its own. Workers are stopped and joined when the library is unloaded.
 *
 * Written by hand: OpenMP's and TVM's pools both wait at the end of a parallel region for
 * every thread of the team, which is the behaviour this replaces.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

/* TVM's ABI (tvm/runtime/c_backend_api.h) */
typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

#define MAX_THREADS 256
#define JOB_SLOTS 4 /* a late worker may still read the job before last while the next is set up */
#define DEFAULT_SPIN_NS 2000000L
#define YIELD_EVERY 16 /* rounds of 64 looks at the job word: ~20-40 µs */
#define STALL_MIN_NS 200000L        /* a wait this long, and longer than the caller's own share, */
                                    /* for a worker's task: that worker's core is held */
#define STALL_AGAIN_NS 100000000L   /* a worker that stalls twice within this long */
#define BENCH_MIN_NS 20000000L      /* sits out this long first (one stall alone: a hiccup), */
#define BENCH_MAX_NS 640000000L     /* twice as long each time it is benched again, up to this, */
#define BENCH_FORGIVE_NS 1000000000L /* and back to the minimum after this long without a bench */
#define BENCHED_MAX 64              /* workers 1 … 63 can sit out (a bit each in a 64-bit mask) */

typedef struct {
  FTVMParallelLambda lambda;
  void* cdata;
  int tasks;
  int threads;            /* workers 1 … threads − 1 may take part … */
  uint64_t participants;  /* … those whose bit is set (all, from worker 64 on) */
  _Atomic int claimed;
  _Atomic int done;
  _Atomic int failed;
} Job;

typedef struct {
  _Atomic uint64_t word; /* (job number << 1) | claimed */
  _Atomic int runner;    /* the thread that claimed it, */
  _Atomic int finished;
  _Atomic long claimed_at; /* and when */
  char pad[64 - sizeof(uint64_t) - 2 * sizeof(int) - sizeof(long)];
} Claim;

static Job jobs[JOB_SLOTS];
static Claim claims[MAX_THREADS];
static _Atomic uint64_t job_number; /* the job published last; workers watch it */
static _Atomic uint32_t wake_word;  /* futex word the sleeping workers wait on */
static _Atomic int sleepers;
static _Atomic int stopping;
static _Atomic int threads_wanted; /* 0: not set yet (TVM_NUM_THREADS, else the CPUs we may use) */
static long spin_ns = DEFAULT_SPIN_NS;
static pthread_t workers[MAX_THREADS];
static int worker_count;
static pthread_mutex_t caller_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;
static __thread int inside_task;
/* the caller's record of stalls (read and written under caller_lock) */
static long bench_ns[BENCHED_MAX], last_stall[BENCHED_MAX], last_bench[BENCHED_MAX];
static _Atomic long benches; /* workers benched so far */
static _Atomic long benched_until[BENCHED_MAX]; /* read by the benched worker too */

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int claim(Job* job, int task, uint64_t number, int self) {
  uint64_t expected = number << 1;
  if (!atomic_compare_exchange_strong(&claims[task].word, &expected, (number << 1) | 1)) return 0;
  atomic_store_explicit(&claims[task].claimed_at, now_ns(), memory_order_relaxed);
  atomic_store_explicit(&claims[task].runner, self, memory_order_relaxed);
  atomic_fetch_add(&job->claimed, 1);
  return 1;
}

static void run_task(Job* job, int task) {
  TVMParallelGroupEnv env = {NULL, job->tasks};
  inside_task = 1;
  if (job->lambda(task, &env, job->cdata) != 0) atomic_store(&job->failed, 1);
  inside_task = 0;
  atomic_store_explicit(&claims[task].finished, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&job->done, 1, memory_order_release);
}

/* thread `self` (the `rank`-th of the job's threads) runs task `rank`, then every task no thread
 * has claimed yet (none, when every thread has come: the count of claims, one cache line, says
 * so without a look at each task's) */
static void take_part(Job* job, uint64_t number, int self, int rank) {
  if (rank < job->tasks && claim(job, rank, number, self)) run_task(job, rank);
  for (int k = 1; k < job->tasks && atomic_load(&job->claimed) < job->tasks; k++) {
    int task = (rank + k) % job->tasks;
    if (claim(job, task, number, self)) run_task(job, task);
  }
}

static int rank_of(const Job* job, int self) {
  if (self >= BENCHED_MAX) return self - BENCHED_MAX + __builtin_popcountll(job->participants);
  return __builtin_popcountll(job->participants & ((1ULL << self) - 1));
}

/* A worker that stalled the caller sleeps until it may take part again (in short naps, so that
 * unloading the library is not held up): spinning, it would take time from the other threads. */
static void sit_out(int self) {
  for (;;) {
    long left = atomic_load_explicit(&benched_until[self], memory_order_relaxed) - now_ns();
    if (left <= 0 || atomic_load(&stopping)) return;
    if (left > 20000000L) left = 20000000L;
    struct timespec nap = {0, left};
    nanosleep(&nap, NULL);
  }
}

static void* worker_main(void* arg) {
  int self = (int)(intptr_t)arg;
  uint64_t seen = atomic_load(&job_number);
  while (!atomic_load(&stopping)) {
    uint64_t number = atomic_load_explicit(&job_number, memory_order_acquire);
    if (number != seen) {
      seen = number;
      Job* job = &jobs[number % JOB_SLOTS];
      if (self >= job->threads) continue;
      if (self >= BENCHED_MAX || (job->participants >> self) & 1) take_part(job, number, self, rank_of(job, self));
      else sit_out(self);
      continue;
    }
    long until = now_ns() + spin_ns;
    int news = 0, looks = 0;
    while (!news && now_ns() < until) {
      /* now and then give the core to a thread waiting for it (the caller, where more threads
       * than cores are runnable): a busy core's worker otherwise spins the caller's time away */
      if (++looks % YIELD_EVERY == 0) sched_yield();
      for (int i = 0; i < 64 && !news; i++) { /* the clock every 64 looks; the job word at every one */
        CPU_RELAX();
        news = atomic_load_explicit(&job_number, memory_order_acquire) != seen;
      }
      news = news || atomic_load(&stopping);
    }
    if (news) continue;
    atomic_fetch_add(&sleepers, 1);
    uint32_t word = atomic_load(&wake_word);
    if (atomic_load(&job_number) == seen && !atomic_load(&stopping))
      syscall(SYS_futex, &wake_word, FUTEX_WAIT_PRIVATE, word, NULL, NULL, 0);
    atomic_fetch_sub(&sleepers, 1);
  }
  return NULL;
}

static void wake_workers(void) {
  if (atomic_load(&sleepers) > 0) {
    atomic_fetch_add(&wake_word, 1);
    syscall(SYS_futex, &wake_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
  }
}

static void forget_workers_after_fork(void) {
  worker_count = 0; /* the child has only the forking thread */
  atomic_store(&sleepers, 0);
  for (int w = 0; w < BENCHED_MAX; w++) {
    atomic_store(&benched_until[w], 0);
    bench_ns[w] = last_stall[w] = last_bench[w] = 0;
  }
  pthread_mutex_init(&caller_lock, NULL);
}

static void install_fork_handler(void) { pthread_atfork(NULL, NULL, forget_workers_after_fork); }

static int default_threads(void) {
  const char* text = getenv("TVM_NUM_THREADS");
  int threads = text ? atoi(text) : 0;
  if (threads < 1) {
    cpu_set_t set;
    threads = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  return threads;
}

/* Use `threads` threads (the caller and threads − 1 workers) from the next launch on. */
void slimtvm_pool_set_threads(int threads) {
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  atomic_store(&threads_wanted, threads);
}

int slimtvm_pool_threads(void) {
  int threads = atomic_load(&threads_wanted);
  if (threads == 0) {
    int unset = 0;
    atomic_compare_exchange_strong(&threads_wanted, &unset, default_threads());
    threads = atomic_load(&threads_wanted);
  }
  return threads;
}

/* How many times a worker has been benched for stalling the caller, since the library loaded. */
long slimtvm_pool_benches(void) { return atomic_load(&benches); }

/* Workers still spin this long (µs) after their last task before they sleep (default 2000). */
void slimtvm_pool_set_spin_us(long microseconds) { spin_ns = microseconds < 0 ? 0 : microseconds * 1000L; }

static int start_workers(int wanted) {
  pthread_once(&fork_handler_once, install_fork_handler);
  while (worker_count < wanted - 1 && worker_count < MAX_THREADS - 1) {
    if (pthread_create(&workers[worker_count], NULL, worker_main, (void*)(intptr_t)(worker_count + 1)) != 0) break;
    worker_count++;
  }
  return worker_count + 1 < wanted ? worker_count + 1 : wanted;
}

static int run_alone(FTVMParallelLambda lambda, void* cdata, int tasks) {
  TVMParallelGroupEnv env = {NULL, tasks};
  for (int task = 0; task < tasks; task++)
    if (lambda(task, &env, cdata) != 0) return -1;
  return 0;
}

/* The workers that take part now: all but those sitting out after a stall. */
static uint64_t participants_at(long now, int threads, int* count) {
  uint64_t participants = 1; /* the caller */
  *count = 1;
  for (int w = 1; w < threads; w++) {
    if (w >= BENCHED_MAX || atomic_load_explicit(&benched_until[w], memory_order_relaxed) <= now) {
      if (w < BENCHED_MAX) participants |= 1ULL << w;
      ++*count;
    }
  }
  return participants;
}

/* The caller has run its share and still waits, longer than STALL_MIN_NS and than its own share
 * took: the workers whose tasks are unfinished then, and were claimed that long before (not by
 * a worker that woke late), were held off their cores (by another process, or the hypervisor). A worker that stalls twice within STALL_AGAIN_NS sits out for a
 * while (longer each time), and the threads left split the next loops. */
static void wait_and_bench_stalls(Job* job, long started, long mine_done) {
  long stall_after = mine_done - started > STALL_MIN_NS ? mine_done - started : STALL_MIN_NS;
  uint64_t stalled = 0;
  int looked = 0;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(&job->done, memory_order_acquire) >= job->tasks) goto finished;
      CPU_RELAX();
    }
    long now = now_ns();
    if (!looked && now - mine_done > stall_after) {
      looked = 1;
      for (int task = 0; task < job->tasks; task++) {
        int runner = atomic_load_explicit(&claims[task].runner, memory_order_relaxed);
        if (runner <= 0 || runner >= BENCHED_MAX || atomic_load_explicit(&claims[task].finished, memory_order_relaxed)) continue;
        /* running that long since its claim (not a worker that woke late and claimed late) */
        if (now - atomic_load_explicit(&claims[task].claimed_at, memory_order_relaxed) > stall_after) stalled |= 1ULL << runner;
      }
    }
  }
finished:
  if (stalled) {
    long now = now_ns();
    for (int w = 1; w < BENCHED_MAX; w++) {
      if (!((stalled >> w) & 1)) continue;
      int again = last_stall[w] != 0 && now - last_stall[w] < STALL_AGAIN_NS;
      last_stall[w] = now;
      if (!again) continue;
      if (bench_ns[w] == 0 || now - last_bench[w] > BENCH_FORGIVE_NS) bench_ns[w] = BENCH_MIN_NS;
      else if (bench_ns[w] < BENCH_MAX_NS) bench_ns[w] *= 2;
      atomic_store_explicit(&benched_until[w], now + bench_ns[w], memory_order_relaxed);
      last_bench[w] = now;
      atomic_fetch_add(&benches, 1);
    }
  }
}

/* TVMBackendParallelLaunch's contract: run lambda(task, env, cdata) for task = 0 … tasks − 1
 * (`num_task`, 0: one per thread) and return 0, or −1 if any task failed. */
int slimtvm_parallel_launch(FTVMParallelLambda lambda, void* cdata, int num_task) {
  int threads = slimtvm_pool_threads();
  if (threads <= 1 || inside_task) return run_alone(lambda, cdata, num_task > 0 ? num_task : 1);
  if (pthread_mutex_trylock(&caller_lock) != 0) return run_alone(lambda, cdata, num_task > 0 ? num_task : 1);
  threads = start_workers(threads);
  long started = now_ns();
  int count;
  uint64_t participants = participants_at(started, threads, &count);
  int tasks = num_task > 0 ? (num_task < MAX_THREADS ? num_task : MAX_THREADS) : count;
  if (count <= 1 || tasks <= 1) {
    pthread_mutex_unlock(&caller_lock);
    return run_alone(lambda, cdata, num_task > 0 ? num_task : 1);
  }
  uint64_t number = atomic_load(&job_number) + 1;
  Job* job = &jobs[number % JOB_SLOTS];
  job->lambda = lambda;
  job->cdata = cdata;
  job->tasks = tasks;
  job->threads = threads;
  job->participants = participants;
  atomic_store(&job->claimed, 0);
  atomic_store(&job->done, 0);
  atomic_store(&job->failed, 0);
  for (int task = 0; task < tasks; task++) {
    atomic_store_explicit(&claims[task].runner, -1, memory_order_relaxed);
    atomic_store_explicit(&claims[task].finished, 0, memory_order_relaxed);
    atomic_store_explicit(&claims[task].word, number << 1, memory_order_relaxed);
  }
  atomic_store(&job_number, number); /* publishes the job and its claims */
  wake_workers();
  take_part(job, number, 0, 0);
  if (atomic_load_explicit(&job->done, memory_order_acquire) < tasks) wait_and_bench_stalls(job, started, now_ns());
  int failed = atomic_load(&job->failed);
  pthread_mutex_unlock(&caller_lock);
  return failed ? -1 : 0;
}

__attribute__((destructor)) static void stop_workers(void) {
  atomic_store(&stopping, 1);
  atomic_fetch_add(&wake_word, 1);
  syscall(SYS_futex, &wake_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
  for (int i = 0; i < worker_count; i++) pthread_join(workers[i], NULL);
  worker_count = 0;
}

extern int (*__TVMBackendParallelLaunch)(FTVMParallelLambda, void*, int) __attribute__((weak));

/* Point this library's kernels at slimtvm_parallel_launch (TVM's loader has set TVM's pool);
 * 1, or 0 where the library has no parallel kernel. */
int slimtvm_use_claiming_pool(void) {
  if (&__TVMBackendParallelLaunch == NULL) return 0;
  __TVMBackendParallelLaunch = slimtvm_parallel_launch;
  return 1;
}
