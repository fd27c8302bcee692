/* slimtvm's parallel launch: a thread pool whose tasks any thread may claim.
 *
 * Linked into every artifact (runtime/claiming_pool.py); slimtvm's loader points the artifact's
 * `__TVMBackendParallelLaunch` at `slimtvm_parallel_launch` (`slimtvm_use_claiming_pool`).
 *
 * TVM's kernels split each parallel loop into `num_task` equal ranges, one per task. TVM's own
 * pool gives task i to thread i and waits for every thread: when another process holds a core,
 * each of a model's parallel loops waits for the operating system to run that core's worker
 * again, and a model runs several times slower at 2 threads than at 1 (ResNet-18 on a 2-core
 * VM with a busy process on one core: 18 ms at 1 thread, 130-160 ms at 2). Here task i is
 * still thread i's first choice (so each thread reads what it wrote in the kernel before, as
 * with TVM's pool), but each task is claimed with a compare-and-swap, and a thread that has
 * run its own task claims the others' that no thread has started: the caller never waits for a
 * worker that has not woken up, only for tasks already running.
 *
 * Workers spin on the job word for `spin_ns` after their last task, then sleep on a futex.
 * One caller at a time: a second thread calling in while a job runs (or a kernel launching from
 * inside a task) runs its loop alone on the calling thread. After fork() the child has no
 * workers and runs every task on the calling thread until it starts its own. Workers are
 * stopped and joined when the library is unloaded.
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

typedef struct {
  FTVMParallelLambda lambda;
  void* cdata;
  int tasks;
  int threads; /* workers 1 … threads − 1 take part */
  _Atomic int claimed;
  _Atomic int done;
  _Atomic int failed;
} Job;

typedef struct {
  _Atomic uint64_t word; /* (job number << 1) | claimed */
  char pad[64 - sizeof(uint64_t)];
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

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int claim(Job* job, int task, uint64_t number) {
  uint64_t expected = number << 1;
  if (!atomic_compare_exchange_strong(&claims[task].word, &expected, (number << 1) | 1)) return 0;
  atomic_fetch_add(&job->claimed, 1);
  return 1;
}

static void run_task(Job* job, int task) {
  TVMParallelGroupEnv env = {NULL, job->tasks};
  inside_task = 1;
  if (job->lambda(task, &env, job->cdata) != 0) atomic_store(&job->failed, 1);
  inside_task = 0;
  atomic_fetch_add_explicit(&job->done, 1, memory_order_release);
}

/* thread `self` runs its own task, then every task no thread has claimed yet (none, when every
 * thread has come: the count of claims, one cache line, says so without a look at each task's) */
static void take_part(Job* job, uint64_t number, int self) {
  if (self < job->tasks && claim(job, self, number)) run_task(job, self);
  for (int k = 1; k < job->tasks && atomic_load(&job->claimed) < job->tasks; k++) {
    int task = (self + k) % job->tasks;
    if (claim(job, task, number)) run_task(job, task);
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
      if (self < job->threads) take_part(job, number, self);
      continue;
    }
    long until = now_ns() + spin_ns;
    int news = 0;
    while (!news && now_ns() < until) {
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

/* TVMBackendParallelLaunch's contract: run lambda(task, env, cdata) for task = 0 … tasks − 1
 * (`num_task`, 0: one per thread) and return 0, or −1 if any task failed. */
int slimtvm_parallel_launch(FTVMParallelLambda lambda, void* cdata, int num_task) {
  int threads = slimtvm_pool_threads();
  int tasks = num_task > 0 ? num_task : threads;
  if (tasks > MAX_THREADS) tasks = MAX_THREADS;
  if (threads <= 1 || tasks <= 1 || inside_task || pthread_mutex_trylock(&caller_lock) != 0) {
    TVMParallelGroupEnv env = {NULL, tasks};
    for (int task = 0; task < tasks; task++)
      if (lambda(task, &env, cdata) != 0) return -1;
    return 0;
  }
  threads = start_workers(threads);
  if (num_task <= 0) tasks = threads;
  uint64_t number = atomic_load(&job_number) + 1;
  Job* job = &jobs[number % JOB_SLOTS];
  job->lambda = lambda;
  job->cdata = cdata;
  job->tasks = tasks;
  job->threads = threads;
  atomic_store(&job->claimed, 0);
  atomic_store(&job->done, 0);
  atomic_store(&job->failed, 0);
  for (int task = 0; task < tasks; task++) atomic_store_explicit(&claims[task].word, number << 1, memory_order_relaxed);
  atomic_store(&job_number, number); /* publishes the job and its claims */
  wake_workers();
  take_part(job, number, 0);
  while (atomic_load_explicit(&job->done, memory_order_acquire) < tasks) CPU_RELAX(); /* tasks still running */
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
