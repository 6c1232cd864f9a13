// The daemon's side of a sandboxed worker (issue 10; worker/ is the other).
//
// Worker::start validates every disk's image chain exactly as an
// in-process attach does (confined to the image's folder), opens every
// file of it O_RDONLY itself, and starts `sendense-restore-worker
// BACKUP_ID` as its child with only the control socket and those
// descriptors (or takes a spare started ahead and sends it the descriptors
// with the setup: SpareWorkers below); the worker sandboxes itself, opens the backup and answers
// with its volumes (Hello). Each volume is then served through a
// WorkerFilesystem, a Filesystem whose every call is one request.
//
// Concurrency: any number of threads call at once; each request has an id
// and waits for its own reply; one of the waiting callers at a time
// receives every reply (leader/follower: a lone request is answered with
// no thread hand-off); one watchdog thread kills a worker whose oldest
// request is older than the timeout, and reaps one that ends while no
// request is in flight. Failure: when the worker dies (any signal, any exit) or the
// watchdog kills it, every request in flight and every later one gets EIO
// at once, one `worker_failed` line is logged, and failed() turns true (the
// AttachManager then drops the attach; the next access after the backoff
// starts a new worker). The destructor kills the worker if it still runs,
// reaps it, joins the watchdog and closes every descriptor.
//
// Lock order: mutex_ is a leaf (held around the map of requests in flight,
// and while the receiving caller receives a read's data into another
// caller's buffer, so that caller cannot return meanwhile).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "readers/block/image_file.h"
#include "readers/common/unique_fd.h"
#include "readers/engine/open_backup.h"
#include "readers/fs/filesystem.h"
#include "worker/protocol.h"

namespace sendense {

class SpareWorkers;

struct WorkerOptions {
  std::string binary;                      // "": find_worker_binary()
  std::chrono::seconds timeout{30};        // --worker-timeout: a request older than this kills the worker
  uint64_t memory_limit = 1ull << 30;      // --worker-memory: RLIMIT_AS (not in sanitizer builds)
  uint32_t id_base = 2147000000;           // the worker of backup #N runs as uid/gid id_base + N
  unsigned threads = 8;                    // request threads in the worker
  // sandbox-check: a worker ended by its probe is the expected outcome: no
  // worker_failed line, and the worker's stderr goes to /dev/null.
  bool quiet = false;
  // Workers started ahead (the daemon's AttachManager makes them); null:
  // each worker is started by the attach that needs it.
  std::shared_ptr<SpareWorkers> spares;
};

// A worker process just started: its pid, the daemon's end of its socket,
// the namespaces it got, the largest read one reply can carry.
struct StartedWorker {
  pid_t pid = -1;
  UniqueFd sock;
  uint64_t namespaces = 0;
  size_t max_read = 64 * 1024;
};

// One worker started ahead of the next attach (worker/protocol.h,
// kSpareFlag). Isolation's cost on the first listing of a backup was
// mostly the worker's clone, exec and dynamic linking (about 8 ms of
// 11-15); a spare has done them before the attach comes. It holds nothing
// but its socket and is not yet sandboxed: it has read no byte of any
// image. The attach that takes it passes the image descriptors with the
// setup (SCM_RIGHTS); the worker takes the backup's id as its command
// line, then sandboxes itself as any worker does. A new spare is started
// kRefillDelay after one is taken; one that ends while it waits is reaped
// (within 5 s) and replaced. One that ends before it is ready is retried
// a second later (a `spare_worker_failed` line); three in a row (a binary
// that cannot start, a kernel without PR_SET_MM_MAP) turn spares off for
// the daemon's life, with one `spare_workers_off` line. The destructor
// kills and reaps the spare.
class SpareWorkers {
 public:
  static constexpr std::chrono::milliseconds kRefillDelay{200};
  explicit SpareWorkers(WorkerOptions options);
  ~SpareWorkers();
  SpareWorkers(const SpareWorkers&) = delete;
  SpareWorkers& operator=(const SpareWorkers&) = delete;
  // The spare, if one is ready and still runs; a new one is started.
  std::optional<StartedWorker> take();
  bool ready() const;

 private:
  void make_loop();
  WorkerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<StartedWorker> spare_;
  bool stopping_ = false;
  std::thread maker_;
};

// `sendense-restore-worker` next to the running program (the build folder),
// else the installed one (SENDENSE_WORKER_PATH).
std::string find_worker_binary();

class Worker {
 public:
  // See above. `num` is the backup's catalog number (its worker's ids);
  // 0, never a backup's, is sandbox-check's. Returns nullptr when a disk needs qemu-nbd (VMDK, VHDX):
  // workers do not serve those yet (the caller attaches in-process).
  // Throws Error: the chain's error (naming the image), or the worker's
  // (EIO and its message; a sandbox failure, a damaged image).
  static std::shared_ptr<Worker> start(const std::string& backup_id, int64_t num, const std::vector<DiskSpec>& disks,
                                       const FsOpenOptions& fs_open, const WorkerOptions& options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  const worker::Hello& hello() const { return hello_; }
  pid_t pid() const { return pid_; }
  const std::string& backup_id() const { return backup_id_; }
  // The daemon's own descriptors of the images (image change checks).
  const std::vector<ImageFilePtr>& images() const { return images_; }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::chrono::steady_clock::time_point failed_at() const;
  std::string failure() const;

  // One request; returns the reply's payload. Throws Error with the
  // worker's errno and message, or EIO once the worker failed.
  std::vector<std::byte> call(worker::Op op, uint32_t volume, std::span<const std::byte> args);
  // A read of the file the daemon numbered `handle` (inode `ino`, opened by
  // the worker on its first read), its data received straight into `into`
  // (cut to max_read()).
  size_t read(uint32_t volume, uint64_t handle, uint64_t ino, uint64_t offset, std::span<std::byte> into);
  // A request that wants no reply (worker::kNoReply): sent, not waited for.
  void post(worker::Op op, uint32_t volume, std::span<const std::byte> args);
  size_t max_read() const { return max_read_; }

  // The proxy of volume `index` of the Hello (keeps this worker alive).
  static FilesystemPtr filesystem(const std::shared_ptr<Worker>& worker, uint32_t index);

  // After an EIO: fstat the images, so a changed image is seen (and
  // logged) as on the in-process path.
  void check_images() const;

  struct Pending;

 private:
  Worker(std::string backup_id, WorkerOptions options);
  // Starts the worker with `fds` as its images (a fresh process).
  void spawn(const std::vector<int>& fds);
  // Takes a started process (fresh or spare) and watches it.
  void adopt(StartedWorker started);
  // Registers `p` under a new request id, sends it with `args`, waits for
  // its reply (call() and read() differ only in how the reply is taken).
  std::vector<std::byte> submit(Pending& p, uint32_t volume, std::span<const std::byte> args);
  // Waits for p's reply, receiving replies for every caller while no other
  // caller does (leader/follower).
  std::vector<std::byte> wait(Pending& p);
  // mutex_ held, nobody receiving: wakes one waiting caller to receive.
  void hand_off_locked();
  // Blocks until a reply is there: its header and size, or -1 when the
  // socket ended.
  ssize_t peek_reply(worker::Header& h);
  // mutex_ held: takes the reply peek_reply() saw and completes its request;
  // false when the socket ended or the worker broke the protocol.
  bool take_reply_locked(worker::Header h, size_t size);
  // mutex_ held (released meanwhile): the worker ended or must: reap it and
  // fail every request (once).
  void ended_locked(std::unique_lock<std::mutex>& lock);
  void watchdog_loop();
  // mutex_ held: marks the worker failed, kills it, completes every request.
  void fail_locked(const std::string& why, const std::string& op);

  std::string backup_id_;
  WorkerOptions options_;
  worker::Hello hello_;
  std::vector<ImageFilePtr> images_;
  UniqueFd sock_;
  pid_t pid_ = -1;
  uint64_t namespaces_ = 0;
  size_t max_read_ = 64 * 1024;

  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, Pending*> pending_;
  uint64_t next_id_ = 1;
  bool exited_ = false;          // the child is a zombie or reaped: never signal its pid again
  bool stopping_ = false;        // the destructor runs: the end is no failure
  bool serving_ = false;         // the Hello came: an end from now on is logged as worker_failed
  bool receiving_ = false;       // a waiting caller receives replies (see wait())
  bool reaped_ = false;          // the worker was reaped: nothing more to receive
  std::atomic<bool> failed_{false};
  std::string failure_;
  std::chrono::steady_clock::time_point failed_at_{};
  std::condition_variable watchdog_cv_;
  std::thread watchdog_;
};

}  // namespace sendense
