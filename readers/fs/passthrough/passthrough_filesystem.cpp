#include "readers/fs/passthrough/passthrough_filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/fs/listing_cap.h"

namespace sendense {
namespace {

constexpr uint64_t kMaxIno = (uint64_t{1} << 40) - 1;   // the FUSE layer's node-id budget
constexpr size_t kMaxRemembered = size_t{1} << 21;      // (parent, name) pairs, ~100 MiB at most
constexpr size_t kMaxDepth = 4096;                      // PATH_MAX / 2: deeper is a loop
constexpr size_t kMaxXattrBytes = size_t{1} << 20;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept { std::swap(fd_, o.fd_); return *this; }
  int get() const { return fd_; }
  int release() { int f = fd_; fd_ = -1; return f; }
 private:
  int fd_ = -1;
};

// A name the FUSE layer may hand us: one component, no NUL, no slash.
bool plain_component(std::string_view name) {
  return !name.empty() && name.size() <= 255 && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

class PassthroughFilesystem final : public Filesystem {
 public:
  PassthroughFilesystem(const std::string& root, std::string type, std::string name, JournalReport journal,
                        std::shared_ptr<void> keep_alive)
      : keep_alive_(std::move(keep_alive)), type_(std::move(type)), where_(std::move(name)), journal_(std::move(journal)) {
    int fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw sys_error("open the staging mount " + root, where_);
    root_fd_ = Fd(fd);
    struct stat st {};
    if (::fstat(root_fd_.get(), &st) != 0) throw sys_error("stat the staging mount", where_);
    root_ino_ = checked_ino(st.st_ino);
    root_dev_ = st.st_dev;
  }

  uint64_t root_ino() const override { return root_ino_; }
  std::string type_name() const override { return type_; }
  JournalReport journal() const override { return journal_; }

  Attr getattr(uint64_t ino) override {
    Fd fd = open_ino(ino, O_PATH);
    return attr_of(stat_fd(fd.get(), ino));
  }

  std::optional<Attr> lookup(uint64_t dir, std::string_view name) override {
    if (name == ".") return getattr(dir);
    if (name == "..") return getattr(parent_of(dir));
    if (!plain_component(name)) return std::nullopt;
    Fd dfd = open_ino(dir, O_PATH | O_DIRECTORY);
    const std::string n(name);
    struct stat st {};
    if (::fstatat(dfd.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return std::nullopt;
      throw sys_error("stat " + n, where_ + " inode " + std::to_string(dir));
    }
    if (st.st_dev != root_dev_)
      throw Error(EIO, "entry " + n + " is another device (btrfs subvolume or mount): not served by the kernel backend",
                  where_ + " inode " + std::to_string(dir));
    Attr a = attr_of(st);
    remember(a.ino, dir, n);
    return a;
  }

  std::vector<DirEntry> readdir(uint64_t dir) override {
    Fd dfd = open_ino(dir, O_RDONLY | O_DIRECTORY);
    std::vector<DirEntry> out;
    ListingCap cap(kMaxListingBytes);
    alignas(8) char buf[64 * 1024];
    for (;;) {
      const long n = ::syscall(SYS_getdents64, dfd.get(), buf, sizeof buf);
      if (n < 0) throw sys_error("read directory", where_ + " inode " + std::to_string(dir));
      if (n == 0) break;
      for (long off = 0; off < n;) {
        auto* d = reinterpret_cast<const struct dirent64*>(buf + off);
        off += d->d_reclen;
        DirEntry e;
        e.name = d->d_name;
        if (e.name == ".") {
          e.ino = dir;
        } else if (e.name == "..") {
          e.ino = parent_of(dir);
        } else {
          e.ino = checked_ino(d->d_ino);
          remember(e.ino, dir, e.name);
        }
        e.type = type_of(d->d_type);
        cap.add(e.name, where_ + " inode " + std::to_string(dir));
        out.push_back(std::move(e));
      }
    }
    return out;
  }

  std::string readlink(uint64_t ino) override {
    Fd fd = open_ino(ino, O_PATH);
    char buf[PATH_MAX + 1];
    const ssize_t n = ::readlinkat(fd.get(), "", buf, sizeof buf);
    if (n < 0) {
      if (errno == ENOENT) throw Error(EINVAL, "not a symlink", where_ + " inode " + std::to_string(ino));
      throw sys_error("readlink", where_ + " inode " + std::to_string(ino));
    }
    if (static_cast<size_t>(n) >= sizeof buf) throw Error(EIO, "symlink target too long", where_);
    return std::string(buf, static_cast<size_t>(n));
  }

  uint64_t open(uint64_t ino) override {
    const std::string rel = path_of(ino);
    int fd = open_beneath(rel, O_RDONLY | O_NOATIME);
    if (fd < 0 && errno == EPERM) fd = open_beneath(rel, O_RDONLY);  // O_NOATIME needs ownership or CAP_FOWNER
    if (fd < 0) {
      if (errno == ELOOP) throw Error(EINVAL, "cannot open a symlink", where_ + " inode " + std::to_string(ino));
      throw sys_error("open", where_ + " inode " + std::to_string(ino));
    }
    Fd owned(fd);
    const struct stat st = stat_fd(fd, ino);
    if (S_ISDIR(st.st_mode)) throw Error(EISDIR, "is a directory", where_ + " inode " + std::to_string(ino));
    const uint64_t handle = next_handle_.fetch_add(1) + 1;
    std::unique_lock lock(handles_mutex_);
    handles_[handle] = owned.release();
    return handle;
  }

  size_t read(uint64_t handle, uint64_t offset, std::span<std::byte> buf) override {
    int fd;
    {
      std::shared_lock lock(handles_mutex_);
      auto it = handles_.find(handle);
      if (it == handles_.end()) throw Error(EBADF, "unknown file handle", where_);
      fd = it->second;
    }
    size_t done = 0;
    while (done < buf.size()) {
      const ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw sys_error("read at " + std::to_string(offset + done), where_);
      }
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }

  void release(uint64_t handle) override {
    std::unique_lock lock(handles_mutex_);
    auto it = handles_.find(handle);
    if (it == handles_.end()) return;
    ::close(it->second);
    handles_.erase(it);
  }

  std::vector<std::string> listxattr(uint64_t ino) override {
    Fd fd = open_ino(ino, O_PATH);
    const std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
    std::string names;
    // Sizes can change between the two calls only if the mount changes, which
    // it never does (read-only): still, retry a few times on ERANGE.
    for (int attempt = 0; attempt < 4; ++attempt) {
      const ssize_t want = ::listxattr(proc.c_str(), nullptr, 0);
      if (want < 0) {
        if (errno == ENOTSUP) return {};
        throw sys_error("listxattr", where_ + " inode " + std::to_string(ino));
      }
      if (static_cast<size_t>(want) > kMaxXattrBytes) throw Error(EIO, "xattr list too large", where_);
      names.resize(static_cast<size_t>(want));
      const ssize_t got = ::listxattr(proc.c_str(), names.data(), names.size());
      if (got >= 0) {
        names.resize(static_cast<size_t>(got));
        break;
      }
      if (errno != ERANGE) throw sys_error("listxattr", where_ + " inode " + std::to_string(ino));
      names.clear();
    }
    std::vector<std::string> out;
    for (size_t pos = 0; pos < names.size();) {
      const size_t end = names.find('\0', pos);
      if (end == std::string::npos) break;
      if (end > pos) out.emplace_back(names.substr(pos, end - pos));
      pos = end + 1;
    }
    return out;
  }

  std::optional<std::string> getxattr(uint64_t ino, std::string_view name) override {
    Fd fd = open_ino(ino, O_PATH);
    const std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
    const std::string n(name);
    for (int attempt = 0; attempt < 4; ++attempt) {
      const ssize_t want = ::getxattr(proc.c_str(), n.c_str(), nullptr, 0);
      if (want < 0) {
        if (errno == ENODATA || errno == ENOTSUP) return std::nullopt;
        throw sys_error("getxattr " + n, where_ + " inode " + std::to_string(ino));
      }
      if (static_cast<size_t>(want) > kMaxXattrBytes) throw Error(EIO, "xattr too large", where_);
      std::string value(static_cast<size_t>(want), '\0');
      const ssize_t got = ::getxattr(proc.c_str(), n.c_str(), value.data(), value.size());
      if (got >= 0) {
        value.resize(static_cast<size_t>(got));
        return value;
      }
      if (errno == ENODATA) return std::nullopt;
      if (errno != ERANGE) throw sys_error("getxattr " + n, where_ + " inode " + std::to_string(ino));
    }
    throw Error(EIO, "xattr " + n + " keeps changing size", where_);
  }

  FsStat statfs() override {
    struct statfs s {};
    if (::fstatfs(root_fd_.get(), &s) != 0) throw sys_error("statfs", where_);
    FsStat out;
    out.block_size = static_cast<uint64_t>(s.f_frsize ? s.f_frsize : s.f_bsize);
    out.blocks = s.f_blocks;
    out.blocks_free = s.f_bfree;
    out.files = s.f_files;
    out.files_free = s.f_ffree;
    out.name_max = static_cast<uint64_t>(s.f_namelen);
    return out;
  }

  ~PassthroughFilesystem() override {
    for (auto& [h, fd] : handles_) ::close(fd);
  }

 private:
  struct Name {
    uint64_t parent;
    std::string name;
  };

  uint64_t checked_ino(uint64_t ino) const {
    if (ino == 0 || ino > kMaxIno)
      throw Error(EIO, "inode number " + std::to_string(ino) + " does not fit the 40 bits the tree reserves",
                  where_);
    return ino;
  }

  static uint32_t type_of(unsigned char d_type) {
    switch (d_type) {
      case DT_REG: return S_IFREG;
      case DT_DIR: return S_IFDIR;
      case DT_LNK: return S_IFLNK;
      case DT_CHR: return S_IFCHR;
      case DT_BLK: return S_IFBLK;
      case DT_FIFO: return S_IFIFO;
      case DT_SOCK: return S_IFSOCK;
      default: return 0;
    }
  }

  Attr attr_of(const struct stat& st) const {
    Attr a;
    a.ino = checked_ino(st.st_ino);
    a.mode = st.st_mode;
    a.nlink = static_cast<uint32_t>(st.st_nlink);
    a.uid = st.st_uid;
    a.gid = st.st_gid;
    a.size = static_cast<uint64_t>(st.st_size);
    a.blocks = static_cast<uint64_t>(st.st_blocks);
    a.rdev = st.st_rdev;
    a.atime = st.st_atim;
    a.mtime = st.st_mtim;
    a.ctime = st.st_ctim;
    return a;
  }

  void remember(uint64_t ino, uint64_t parent, const std::string& name) {
    if (ino == root_ino_) return;
    {
      std::shared_lock lock(names_mutex_);
      if (names_.count(ino)) return;  // hard links: any one name reaches the inode
    }
    std::unique_lock lock(names_mutex_);
    if (names_.size() >= kMaxRemembered) {
      if (!full_logged_) {
        full_logged_ = true;
        log::warn("passthrough_names_full", {{"volume", where_}, {"limit", std::to_string(kMaxRemembered)}});
      }
      return;
    }
    names_.emplace(ino, Name{parent, name});
  }

  uint64_t parent_of(uint64_t ino) const {
    if (ino == root_ino_) return root_ino_;
    std::shared_lock lock(names_mutex_);
    auto it = names_.find(ino);
    if (it == names_.end()) throw Error(ESTALE, "inode not learned by lookup or readdir", where_ + " inode " + std::to_string(ino));
    return it->second.parent;
  }

  // The path of `ino` relative to the root, from the remembered names.
  std::string path_of(uint64_t ino) const {
    if (ino == root_ino_) return ".";
    std::vector<const std::string*> parts;
    std::shared_lock lock(names_mutex_);
    uint64_t cur = ino;
    while (cur != root_ino_) {
      auto it = names_.find(cur);
      if (it == names_.end())
        throw Error(ESTALE, "inode not learned by lookup or readdir", where_ + " inode " + std::to_string(ino));
      if (parts.size() >= kMaxDepth) throw Error(EIO, "path deeper than " + std::to_string(kMaxDepth), where_);
      parts.push_back(&it->second.name);
      cur = it->second.parent;
    }
    std::string path;
    for (auto p = parts.rbegin(); p != parts.rend(); ++p) {
      if (!path.empty()) path += '/';
      path += **p;
    }
    return path;
  }

  // openat2 beneath the root: no symlink is followed anywhere on the way (the
  // remembered path holds only folders), a trailing symlink is opened itself
  // (O_PATH|O_NOFOLLOW) or refused (ELOOP), no mount point is crossed.
  int open_beneath(const std::string& rel, int flags) const {
    struct open_how how {};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    long fd;
    do {
      fd = ::syscall(SYS_openat2, root_fd_.get(), rel.c_str(), &how, sizeof how);
    } while (fd < 0 && errno == EAGAIN);
    return static_cast<int>(fd);
  }

  struct stat stat_fd(int fd, uint64_t ino) const {
    struct stat st {};
    if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
      throw sys_error("stat", where_ + " inode " + std::to_string(ino));
    if (st.st_ino != ino || st.st_dev != root_dev_)
      throw Error(ESTALE, "path no longer leads to this inode", where_ + " inode " + std::to_string(ino));
    return st;
  }

  Fd open_ino(uint64_t ino, int flags) const {
    const int fd = open_beneath(path_of(ino), flags);
    if (fd < 0) {
      if (errno == ENOENT) throw Error(ESTALE, "remembered path is gone", where_ + " inode " + std::to_string(ino));
      throw sys_error("open", where_ + " inode " + std::to_string(ino));
    }
    Fd owned(fd);
    stat_fd(fd, ino);
    return owned;
  }

  std::shared_ptr<void> keep_alive_;  // first member: destroyed last, after every fd below
  std::string type_;
  std::string where_;
  JournalReport journal_;
  Fd root_fd_;
  uint64_t root_ino_ = 0;
  dev_t root_dev_ = 0;

  mutable std::shared_mutex names_mutex_;
  std::unordered_map<uint64_t, Name> names_;
  bool full_logged_ = false;

  std::shared_mutex handles_mutex_;
  std::unordered_map<uint64_t, int> handles_;
  std::atomic<uint64_t> next_handle_{0};
};

}  // namespace

FilesystemPtr open_passthrough_filesystem(const std::string& root, const std::string& type,
                                          const std::string& name, JournalReport journal,
                                          std::shared_ptr<void> keep_alive) {
  return std::make_shared<PassthroughFilesystem>(root, type, name, std::move(journal), std::move(keep_alive));
}

}  // namespace sendense
