// Small files read ahead into the kernel's page cache.
//
// A walk (tar, cp -r, an NFS or SMB client copying a folder) reads file
// after file of one folder, each a FUSE round trip, and through a worker a
// second one; the kernel's own readahead never crosses from one file to the
// next. So when the kernel reads a small file from its start, the files
// listed after it in its folder are read here too, on a thread of their own
// (the reader does not wait for them), and handed to the kernel with
// FUSE_NOTIFY_STORE: the walk then finds them in the page cache and sends
// no READ. A folder's files are read ahead at most once while it is
// remembered; the window wraps around the folder (rsync reads in name
// order, not the listing's). A READ of a file not read ahead reads ahead
// the next files (at most kAheadFiles); while a walk goes on (a READ came
// lately), a folder is read ahead as soon as it is listed.
//
// Only what the kernel was shown: the small regular files of folders
// listed with attributes (readdirplus) on this mount, so a tenant's view
// reads ahead only its own files (its own NodeFiles and tree). Best effort:
// a file that cannot be read, a node the kernel forgot (ENOENT from the
// store), a backup no longer attached are skipped, never retried, never an
// error anyone sees. A READ that comes for a file of a window being read
// waits for that window instead of reading the file a second time; one
// that comes for a file of a window still queued reads that window itself
// (one request for all its files) and leaves storing the rest to the
// threads. Either way the window answers it and the store skips it (a
// store would wait for the page that READ holds locked). A file the kernel
// would not take (the store's ENOENT: it has no inode for it yet, as for
// the entries of a large folder it listed without attributes and looks up
// one by one as a walk reaches them) is kept for a while for its READ,
// which then needs no reader (through a worker: no request, no second
// decompression). It never attaches a backup (RestoreTree::read_ahead),
// and a window of files costs a sandboxed worker one request (read_files).
// The kernel keeps the pages because reads without an open keep the cache
// (fuse_ops.cpp, FUSE_CAP_NO_OPEN_SUPPORT): with OPEN kept (--attach
// kernel) there is no read ahead.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "fuse/metrics.h"
#include "fuse/node_files.h"

namespace sendense {

class Prefetcher {
 public:
  static constexpr uint64_t kMaxFileSize = 128 * 1024;  // one READ of the kernel's default readahead
  // One READ that finds its file not read ahead reads ahead at most this
  // far, in windows of kFirstWindowFiles doubling up to kWindowFiles (one
  // read_files request each through a worker).
  static constexpr size_t kAheadFiles = 128;
  static constexpr uint64_t kAheadBytes = 4 << 20;
  static constexpr size_t kFirstWindowFiles = 4;
  static constexpr size_t kWindowFiles = 32;
  static constexpr size_t kMaxFolders = 64;             // folders remembered, each its first kMaxFolderFiles
  static constexpr size_t kMaxFolderFiles = 2048;       // small files (about 40 bytes each)
  // A folder listed within this of a READ of a listed small file is read
  // ahead at once (a walk: tar, cp -r), not at its first READ.
  static constexpr std::chrono::milliseconds kWalking{1000};
  static constexpr size_t kMaxQueued = 16;              // windows waiting; the oldest past it are dropped
  static constexpr std::chrono::milliseconds kWaitForWindow{1000};
  // Windows read at once: a walk waits on the window its next file is in,
  // and the next window is read meanwhile (a worker serves requests on
  // several threads).
  static constexpr size_t kThreads = 2;
  static constexpr size_t kWaitsForInodes = 3;          // of 1 ms per window (prefetch())
  // Files the kernel would not take, kept for their READ: at most this
  // much, each at most kKeepLeft (a walk reaches them within seconds).
  static constexpr uint64_t kMaxLeftBytes = 16 << 20;
  static constexpr std::chrono::seconds kKeepLeft{10};

  Prefetcher(RestoreTree& tree, NodeFiles& files);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Starts the thread that reads ahead into `se`'s page cache (counted in
  // `metrics` when given).
  void start(fuse_session* se, Metrics* metrics);
  // Ends it (before the session is destroyed or the backups detached).
  void stop();

  struct File {
    uint64_t node = 0;
    uint64_t size = 0;
  };
  // A page of folder `dir` listed with attributes, from cookie `from` (0
  // starts the folder afresh): its small regular files, in listing order.
  void listed(uint64_t dir, uint64_t from, const std::vector<File>& files);
  // The kernel read `node` from its start.
  void read_started(uint64_t node);
  // A READ of `node` whose window is being read ahead right now: waits for
  // it (at most kWaitForWindow) and answers from it, so the file is not
  // read twice; one of a file read ahead that the kernel would not take
  // answers from what was kept. nullopt: read it as usual.
  std::optional<size_t> read_from_window(uint64_t node, uint64_t offset, std::span<std::byte> buf);

 private:
  struct Folder {
    uint64_t dir = 0;
    std::vector<File> files;
    std::vector<bool> taken;  // read ahead already, or read by the kernel
  };
  // Queues windows of the untaken files among `steps` from index `first`
  // on (wrapping); true when it queued any.
  bool queue_ahead_locked(Folder& folder, size_t first, size_t steps);
  // Files read ahead together (one read_files request through a worker).
  struct Window {
    std::vector<File> files;
    bool started = false;                       // taken from the queue to be read (guarded by mutex_)
    bool ready = false;                         // `data` is there (guarded by mutex_)
    std::vector<std::vector<std::byte>> data;   // per file: its bytes, or empty
    std::vector<bool> served;                   // a READ took it from here: not stored
    NodeFiles::Mark mark;
  };
  using WindowPtr = std::shared_ptr<Window>;
  void loop();
  // Reads the window's files and makes them ready for READs waiting.
  void read_window(const WindowPtr& window);
  // Hands the files no READ took to the kernel's page cache.
  void store_window(const WindowPtr& window);
  void forget_window_locked(const WindowPtr& window);
  // Keeps a file the kernel would not take (its bytes moved from `data`).
  void keep_left(uint64_t node, std::vector<std::byte>& data, const NodeFiles::Mark& mark);
  std::optional<size_t> read_left(uint64_t node, uint64_t offset, std::span<std::byte> buf);
  struct Left;
  // Takes out the kept files past the budget or kKeepLeft (to be freed
  // after the lock).
  std::vector<Left> drop_left_locked(std::chrono::steady_clock::time_point now);
  void forget_locked(const std::shared_ptr<Folder>& folder);

  RestoreTree& tree_;
  NodeFiles& files_;
  Metrics* metrics_ = nullptr;
  fuse_session* se_ = nullptr;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Folder>> folders_;  // oldest first
  std::unordered_map<uint64_t, std::pair<std::shared_ptr<Folder>, size_t>> where_;  // node -> its folder, index
  std::deque<WindowPtr> queue_;
  std::unordered_map<uint64_t, WindowPtr> windows_;  // node -> the window (queued or being read) it is in
  std::condition_variable ready_cv_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point last_read_{};  // the last READ of a listed small file
  struct Left {
    std::shared_ptr<const std::vector<std::byte>> data;
    NodeFiles::Mark mark;
    uint64_t seq = 0;
  };
  std::unordered_map<uint64_t, Left> left_;  // node -> its bytes the kernel would not take
  std::deque<std::tuple<uint64_t, uint64_t, std::chrono::steady_clock::time_point>> left_order_;  // node, seq, kept at
  uint64_t left_bytes_ = 0;
  uint64_t left_seq_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace sendense
