#include "fuse/prefetch.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "readers/common/log.h"

namespace sendense {

Prefetcher::Prefetcher(RestoreTree& tree, NodeFiles& files) : tree_(tree), files_(files) {}

Prefetcher::~Prefetcher() { stop(); }

void Prefetcher::start(fuse_session* se, Metrics* metrics) {
  se_ = se;
  metrics_ = metrics;
  for (size_t i = 0; i < kThreads; ++i) threads_.emplace_back([this] { loop(); });
}

void Prefetcher::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
    windows_.clear();
    left_.clear();
    left_order_.clear();
    left_bytes_ = 0;
  }
  cv_.notify_all();
  ready_cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void Prefetcher::forget_locked(const std::shared_ptr<Folder>& folder) {
  for (const File& f : folder->files)
    if (auto it = where_.find(f.node); it != where_.end() && it->second.first == folder) where_.erase(it);
}

void Prefetcher::listed(uint64_t dir, uint64_t from, const std::vector<File>& files) {
  std::unique_lock lock(mutex_);
  if (stopping_) return;
  std::shared_ptr<Folder> folder;
  for (auto it = folders_.begin(); it != folders_.end(); ++it) {
    if ((*it)->dir != dir) continue;
    folder = *it;
    if (from == 0) {  // listed again from its start: a new walk may come
      forget_locked(folder);
      folders_.erase(it);
      folder.reset();
    }
    break;
  }
  if (!folder) {
    if (files.empty()) return;
    if (folders_.size() >= kMaxFolders) {
      forget_locked(folders_.front());
      folders_.pop_front();
    }
    folder = std::make_shared<Folder>();
    folder->dir = dir;
    folders_.push_back(folder);
  }
  const size_t listed_before = folder->files.size();
  for (const File& f : files) {
    if (folder->files.size() >= kMaxFolderFiles) break;
    auto [it, added] = where_.try_emplace(f.node, folder, folder->files.size());
    if (!added) {
      if (it->second.first == folder) continue;  // listed again (a seek back)
      it->second = {folder, folder->files.size()};  // a hard link seen in another folder: the newest wins
    }
    folder->files.push_back(f);
    folder->taken.push_back(false);
  }
  // A walk is reading files (a READ came lately): it reads this folder's
  // next, so start now rather than at its first READ (a folder of a few
  // files would otherwise be read before its window lands).
  if (std::chrono::steady_clock::now() - last_read_ < kWalking &&
      queue_ahead_locked(*folder, listed_before, folder->files.size() - listed_before)) {
    lock.unlock();
    cv_.notify_one();
  }
}

void Prefetcher::read_started(uint64_t node) {
  std::unique_lock lock(mutex_);
  auto it = where_.find(node);
  if (it == where_.end() || stopping_) return;
  Folder& folder = *it->second.first;
  const size_t at = it->second.second;
  folder.taken[at] = true;
  last_read_ = std::chrono::steady_clock::now();
  if (queue_ahead_locked(folder, at + 1, folder.files.size() - 1)) {
    lock.unlock();
    cv_.notify_one();
  }
}

bool Prefetcher::queue_ahead_locked(Folder& folder, size_t first, size_t steps) {
  // Windows that grow (4, 8, 16, 32 files): the first lands before the
  // reader gets far; the reader meanwhile reads on through READ.
  std::vector<WindowPtr> windows;
  auto window = std::make_shared<Window>();
  size_t files = 0, window_files = kFirstWindowFiles;
  uint64_t bytes = 0;
  const size_t n = folder.files.size();
  for (size_t step = 0; step < steps && files < kAheadFiles && bytes < kAheadBytes; ++step) {
    const size_t i = (first + step) % n;
    if (folder.taken[i]) continue;
    folder.taken[i] = true;
    window->files.push_back(folder.files[i]);
    ++files;
    bytes += folder.files[i].size;
    if (window->files.size() == window_files) {
      windows.push_back(std::move(window));
      window = std::make_shared<Window>();
      window_files = std::min(window_files * 2, kWindowFiles);
    }
  }
  if (!window->files.empty()) windows.push_back(std::move(window));
  if (windows.empty()) return false;
  // Where the reader is now goes first: a walk that went down into a
  // folder reads it before the rest of the one above. The oldest windows
  // past kMaxQueued are dropped, their files left to be asked again.
  for (const WindowPtr& w : windows)
    for (const File& f : w->files) windows_[f.node] = w;
  queue_.insert(queue_.begin(), std::make_move_iterator(windows.begin()), std::make_move_iterator(windows.end()));
  while (queue_.size() > kMaxQueued) {
    const WindowPtr& dropped = queue_.back();
    for (const File& f : dropped->files)
      if (auto it = where_.find(f.node); it != where_.end()) it->second.first->taken[it->second.second] = false;
    forget_window_locked(dropped);
    queue_.pop_back();
  }
  return true;
}

void Prefetcher::forget_window_locked(const WindowPtr& window) {
  for (const File& f : window->files)
    if (auto it = windows_.find(f.node); it != windows_.end() && it->second == window) windows_.erase(it);
}

void Prefetcher::loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    // Kept files the walk never read go when they expire, also once it
    // has ended (each view holds up to kMaxLeftBytes).
    if (!cv_.wait_for(lock, kKeepLeft, [&] { return stopping_ || !queue_.empty(); })) {
      std::vector<Left> dropped = drop_left_locked(std::chrono::steady_clock::now());
      lock.unlock();
      dropped.clear();  // freed outside the lock
      lock.lock();
      continue;
    }
    if (stopping_) return;
    WindowPtr window = std::move(queue_.front());
    queue_.pop_front();
    const bool read = window->started;  // by a READ that took it (read_from_window)
    window->started = true;
    lock.unlock();
    if (!read) read_window(window);
    store_window(window);
    lock.lock();
    forget_window_locked(window);
  }
}

std::optional<size_t> Prefetcher::read_from_window(uint64_t node, uint64_t offset, std::span<std::byte> buf) {
  std::unique_lock lock(mutex_);
  if (stopping_) return std::nullopt;
  auto it = windows_.find(node);
  if (it == windows_.end()) {
    if (left_.empty()) return std::nullopt;
    lock.unlock();
    return read_left(node, offset, buf);
  }
  WindowPtr window = it->second;
  auto index = [&]() -> size_t {
    size_t i = 0;
    while (i < window->files.size() && window->files[i].node != node) ++i;
    return i;
  };
  if (!window->started) {
    // The walk got here before the window's turn: this READ reads the
    // window itself (one request for its files, not one for this file
    // and another for the window later), and leaves the storing of the
    // others to the threads.
    window->started = true;
    if (auto q = std::find(queue_.begin(), queue_.end(), window); q != queue_.end()) queue_.erase(q);
    lock.unlock();
    read_window(window);
    lock.lock();
    if (stopping_) return std::nullopt;
    // Its own file is not stored: a store would wait for the page this READ holds.
    if (const size_t i = index(); i < window->files.size() && !window->data[i].empty()) window->served[i] = true;
    queue_.push_front(window);
    lock.unlock();
    cv_.notify_one();
    lock.lock();
  }
  // Bounded: a worker that hangs is the watchdog's, and this READ then
  // reads on its own (and fails as the worker's reads do).
  if (!ready_cv_.wait_for(lock, kWaitForWindow, [&] { return window->ready || stopping_; }) || !window->ready)
    return std::nullopt;
  const size_t i = index();
  if (i == window->files.size()) return std::nullopt;
  if (window->data[i].empty()) {  // not read, or kept for this READ by the store (keep_left)
    lock.unlock();
    return read_left(node, offset, buf);
  }
  const auto& data = window->data[i];
  if (!files_.read_through(node, window->mark)) return std::nullopt;  // read() refuses it too, with its message
  window->served[i] = true;
  if (offset >= data.size()) return 0;
  const size_t n = std::min<size_t>(buf.size(), data.size() - offset);
  std::memcpy(buf.data(), data.data() + offset, n);
  return n;
}

void Prefetcher::read_window(const WindowPtr& window) {
  std::vector<std::pair<uint64_t, uint64_t>> asked;
  for (const File& f : window->files) asked.emplace_back(f.node, f.size);
  NodeFiles::Mark mark;
  std::vector<std::vector<std::byte>> got;
  try {
    got = tree_.read_ahead(asked, &mark);
  } catch (const std::exception& e) {
    log::debug("prefetch_skipped", {{"node", std::to_string(window->files.front().node)}, {"error", e.what()}});
  }
  got.resize(window->files.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i].size() != window->files[i].size) got[i].clear();  // not the size the kernel was told: left to READ
  {
    std::lock_guard lock(mutex_);
    window->data = std::move(got);
    window->served.assign(window->files.size(), false);
    window->mark = mark;
    window->ready = true;
  }
  ready_cv_.notify_all();
}

void Prefetcher::store_window(const WindowPtr& window) {
  const NodeFiles::Mark& mark = window->mark;
  size_t stored = 0, served = 0, waits = 0;
  for (size_t i = 0; i < window->files.size(); ++i) {
    const File& f = window->files[i];
    {
      std::lock_guard lock(mutex_);
      if (window->served[i]) ++served;
      if (window->data[i].empty() || window->served[i] || stopping_) continue;
    }
    // Bytes a READ would refuse (node_files.h) are not stored either.
    if (!files_.read_through(f.node, mark)) continue;
    fuse_bufvec bv = FUSE_BUFVEC_INIT(window->data[i].size());
    bv.buf[0].mem = window->data[i].data();
    int rc = fuse_lowlevel_notify_store(se_, f.node, 0, &bv, FUSE_BUF_NO_SPLICE);
    // A window made when its folder was listed can be ready before the
    // kernel made the listed inodes (it does when the lister wakes up):
    // wait a little for them, a few times per window.
    while (rc == -ENOENT && waits < kWaitsForInodes) {
      ++waits;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      rc = fuse_lowlevel_notify_store(se_, f.node, 0, &bv, FUSE_BUF_NO_SPLICE);
    }
    if (rc == -ENOENT) {
      // The kernel has no inode for it (yet, or no more): its READ, when
      // a lookup brings one, takes the bytes from here. Moved out under
      // the lock: a READ that came meanwhile (the lookup came during the
      // waits) may be copying them from the window right now, and one
      // that took them needs them kept no more.
      std::vector<std::byte> bytes;
      {
        std::lock_guard lock(mutex_);
        if (window->served[i]) continue;
        bytes = std::move(window->data[i]);
        window->data[i].clear();
      }
      keep_left(f.node, bytes, mark);
      continue;
    }
    if (rc != 0) {
      if (rc != -ENOENT)
        log::debug("prefetch_store_failed", {{"node", std::to_string(f.node)}, {"error", std::strerror(-rc)}});
      continue;
    }
    ++stored;
    if (metrics_) {
      metrics_->fuse_request("prefetch");
      metrics_->fuse_bytes("prefetch", f.size);
    }
  }
  if (log::enabled(log::Level::debug))
    log::debug("prefetched", {{"files", std::to_string(window->files.size())},
                              {"stored", std::to_string(stored)},
                              {"to_reads", std::to_string(served)}});
}

void Prefetcher::keep_left(uint64_t node, std::vector<std::byte>& data, const NodeFiles::Mark& mark) {
  std::vector<Left> dropped;  // freed after the lock
  auto bytes = std::make_shared<const std::vector<std::byte>>(std::move(data));
  std::lock_guard lock(mutex_);
  if (stopping_ || bytes->size() > kMaxLeftBytes) return;
  const auto now = std::chrono::steady_clock::now();
  Left& left = left_[node];
  if (left.data) {
    left_bytes_ -= left.data->size();
    dropped.push_back(std::move(left));
  }
  left = Left{std::move(bytes), mark, ++left_seq_};
  left_bytes_ += left.data->size();
  left_order_.emplace_back(node, left.seq, now);
  for (Left& l : drop_left_locked(now)) dropped.push_back(std::move(l));
}

std::vector<Prefetcher::Left> Prefetcher::drop_left_locked(std::chrono::steady_clock::time_point now) {
  // Oldest first: past the budget, or kept too long (a file the walk
  // skipped: a pattern, an error before it).
  std::vector<Left> dropped;
  while (!left_order_.empty()) {
    const auto& [old, seq, at] = left_order_.front();
    auto it = left_.find(old);
    const bool current = it != left_.end() && it->second.seq == seq;
    if (current && left_bytes_ <= kMaxLeftBytes && now - at < kKeepLeft) break;
    if (current) {
      left_bytes_ -= it->second.data->size();
      dropped.push_back(std::move(it->second));
      left_.erase(it);
    }
    left_order_.pop_front();
  }
  return dropped;
}

std::optional<size_t> Prefetcher::read_left(uint64_t node, uint64_t offset, std::span<std::byte> buf) {
  Left left;
  {
    std::lock_guard lock(mutex_);
    auto it = left_.find(node);
    if (it == left_.end()) return std::nullopt;
    left = it->second;
    // Kept until a READ reaches its end: its pages are the kernel's then.
    if (offset + buf.size() >= left.data->size()) {
      left_bytes_ -= left.data->size();
      left_.erase(it);
    }
  }
  // Kept for seconds: the view may have lost the backup meanwhile, or the
  // backup its attach (read() would refuse or read the new one).
  if (!tree_.reads_ahead(node) || !files_.read_through(node, left.mark)) return std::nullopt;
  const auto& data = *left.data;
  if (offset >= data.size()) return 0;
  const size_t n = std::min<size_t>(buf.size(), data.size() - offset);
  std::memcpy(buf.data(), data.data() + offset, n);
  return n;
}

}  // namespace sendense
