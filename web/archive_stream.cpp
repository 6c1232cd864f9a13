#include "web/archive_stream.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "web/api_error.h"

namespace sendense::web {
namespace {

constexpr size_t kChunk = 256 * 1024;
constexpr size_t kMaxMembers = 2'000'000;

struct ArchiveFree {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

void walk(const TreeAccess& tree, int folder_fd, const std::string& top, const std::string& inner, ArchivePlan& plan) {
  UniqueFd dir = tree.open_beneath(folder_fd, inner, O_PATH | O_DIRECTORY);
  for (auto& e : list_folder(dir.get())) {
    if (plan.members.size() >= kMaxMembers) throw ApiError(400, "bad_request", "the folder holds too many entries");
    ArchiveMember m;
    m.inner = inner.empty() ? e.name : inner + "/" + e.name;
    m.name = top + "/" + m.inner;
    m.st = e.st;
    m.target = e.target;
    const bool is_dir = S_ISDIR(m.st.st_mode);
    if (S_ISREG(m.st.st_mode)) {
      ++plan.files;
      plan.bytes += static_cast<uint64_t>(m.st.st_size);
    }
    std::string child = m.inner;
    plan.members.push_back(std::move(m));
    if (is_dir) walk(tree, folder_fd, top, child, plan);
  }
}

// State shared with libarchive's write callback.
struct Sink {
  const std::function<bool(const char*, size_t)>* write;
  const std::function<void(uint64_t)>* throttle;
  bool closed = false;
  uint64_t sent = 0;
};

la_ssize_t write_cb(struct archive*, void* ctx, const void* buf, size_t n) {
  auto* s = static_cast<Sink*>(ctx);
  if (s->closed) return -1;
  const char* p = static_cast<const char*>(buf);
  size_t left = n;
  while (left > 0) {
    size_t piece = std::min(left, kChunk);
    (*s->throttle)(piece);
    if (!(*s->write)(p, piece)) {
      s->closed = true;
      return -1;
    }
    s->sent += piece;
    p += piece;
    left -= piece;
  }
  return static_cast<la_ssize_t>(n);
}

void add_xattrs(archive_entry* entry, int fd) {
  char names[65536];
  ssize_t len = ::flistxattr(fd, names, sizeof names);
  if (len <= 0) return;
  std::string value(65536, '\0');
  for (ssize_t i = 0; i < len;) {
    const char* name = names + i;
    i += static_cast<ssize_t>(std::strlen(name)) + 1;
    ssize_t v = ::fgetxattr(fd, name, value.data(), value.size());
    if (v >= 0) archive_entry_xattr_add_entry(entry, name, value.data(), static_cast<size_t>(v));
  }
}

}  // namespace

bool valid_archive_format(const std::string& f) { return f == "zip" || f == "tar" || f == "tar.zst"; }

std::string archive_content_type(const std::string& f) {
  if (f == "zip") return "application/zip";
  if (f == "tar") return "application/x-tar";
  return "application/zstd";
}

ArchivePlan plan_archive(const TreeAccess& tree, int folder_fd, const std::string& top) {
  ArchivePlan plan;
  ArchiveMember root;
  root.name = top;
  if (::fstatat(folder_fd, "", &root.st, AT_EMPTY_PATH) != 0) throw not_found();
  plan.members.push_back(root);
  walk(tree, folder_fd, top, "", plan);
  return plan;
}

StreamOutcome stream_archive(const TreeAccess& tree, int folder_fd, const ArchivePlan& plan, const std::string& format,
                             Job& job, const std::function<bool(const char*, size_t)>& write,
                             const std::function<void(uint64_t)>& throttle) {
  StreamOutcome out;
  Sink sink{&write, &throttle};
  std::unique_ptr<struct archive, ArchiveFree> a(archive_write_new());
  const bool zip = format == "zip";
  int r = zip ? archive_write_set_format_zip(a.get()) : archive_write_set_format_pax_restricted(a.get());
  if (r == ARCHIVE_OK && format == "tar.zst") r = archive_write_add_filter_zstd(a.get());
  if (r == ARCHIVE_OK && zip) r = archive_write_set_options(a.get(), "zip:hdrcharset=UTF-8");
  // Deflate level 1: libarchive's default (6) held a zip of random files to
  // 20 MB/s on one core; level 1 keeps most of the gain on text at several
  // times the speed (README, Customers' downloads: figures).
  if (r == ARCHIVE_OK && zip) r = archive_write_set_options(a.get(), "zip:compression-level=1");
  // Large blocks, no padding of the last one beyond the format's own.
  if (r == ARCHIVE_OK) r = archive_write_set_bytes_per_block(a.get(), static_cast<int>(kChunk));
  if (r == ARCHIVE_OK) r = archive_write_set_bytes_in_last_block(a.get(), 1);
  if (r == ARCHIVE_OK) r = archive_write_open(a.get(), &sink, nullptr, write_cb, nullptr);
  if (r != ARCHIVE_OK) {
    out.result = StreamResult::error;
    out.error = archive_error_string(a.get()) ? archive_error_string(a.get()) : "libarchive setup failed";
    return out;
  }
  auto fail = [&](const std::string& why) {
    out.result = sink.closed ? StreamResult::client_closed : StreamResult::error;
    out.error = why;
    out.bytes_sent = sink.sent;
    return out;
  };
  std::string buf(kChunk, '\0');
  for (const auto& m : plan.members) {
    const mode_t type = m.st.st_mode & S_IFMT;
    if (zip && type != S_IFREG && type != S_IFDIR && type != S_IFLNK) continue;  // zip has no FIFOs or devices
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_set_pathname_utf8(e.get(), m.name.c_str());
    archive_entry_set_mode(e.get(), m.st.st_mode);
    archive_entry_set_uid(e.get(), m.st.st_uid);
    archive_entry_set_gid(e.get(), m.st.st_gid);
    archive_entry_set_mtime(e.get(), m.st.st_mtim.tv_sec, m.st.st_mtim.tv_nsec);
    archive_entry_set_size(e.get(), type == S_IFREG ? m.st.st_size : 0);
    if (type == S_IFLNK) archive_entry_set_symlink_utf8(e.get(), m.target.c_str());
    if (type == S_IFCHR || type == S_IFBLK) archive_entry_set_rdev(e.get(), m.st.st_rdev);
    UniqueFd fd;
    if (type == S_IFREG || type == S_IFDIR) {
      try {
        fd = tree.open_beneath(folder_fd, m.inner, type == S_IFDIR ? O_RDONLY | O_DIRECTORY : O_RDONLY);
      } catch (const ApiError&) {
        return fail("cannot open " + m.name);
      }
      if (!zip) add_xattrs(e.get(), fd.get());
    }
    if (archive_write_header(a.get(), e.get()) < ARCHIVE_WARN) return fail(archive_error_string(a.get()));
    if (type != S_IFREG) continue;
    uint64_t offset = 0;
    const uint64_t size = static_cast<uint64_t>(m.st.st_size);
    while (offset < size) {
      ssize_t n = ::pread(fd.get(), buf.data(), std::min<uint64_t>(kChunk, size - offset), static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return fail("read failed: " + m.name);
      if (archive_write_data(a.get(), buf.data(), static_cast<size_t>(n)) < 0)
        return fail(archive_error_string(a.get()) ? archive_error_string(a.get()) : "archive write failed");
      offset += static_cast<uint64_t>(n);
      job.bytes_done += static_cast<uint64_t>(n);
    }
    ++job.files_done;
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) return fail("closing the archive failed");
  out.bytes_sent = sink.sent;
  return out;
}

}  // namespace sendense::web
