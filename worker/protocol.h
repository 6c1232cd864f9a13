// The daemon <-> worker protocol (issue 10): one SOCK_SEQPACKET socketpair
// per worker, one datagram per message, both sides built from this file.
//
// Every message starts with a 16-byte header:
//   request: id (u64), op (u32), volume index (u32), then the op's arguments
//   reply:   id (u64), errno (i32, 0 = ok), flags (u32), then the result, or
//            on error the message (a string)
// A reply larger than one datagram (a page of long names with attributes) comes in parts with
// kMore set on all but the last; a read's data is the whole payload of its
// reply (never split: reads are cut to fit one datagram by the caller).
// Requests carry ids so many can be in flight at once; replies come in any
// order. A request with id 0 (kNoReply; only kSetup, the first message,
// has id 0 and is answered) wants no reply: a release, which nobody waits
// for. Values are little-endian host order (both ends are one host).
//
// Round trips are what a small-file walk pays for (tar of 10,000 files is
// about 3 requests per file), so the protocol saves them where it can:
//   - a file is opened by its first read: kRead carries the daemon's handle
//     number and the inode, and the worker opens the inode the first time
//     it sees the handle (an open costs no request; an error opening it
//     is the read's error);
//   - kRelease wants no reply, and names up to kReleaseBatch handles;
//   - a folder comes a page at a time (at most kMaxPageEntries entries,
//     from a cookie), and a page asked for readdirplus carries every
//     entry's attributes, so listing a folder with attributes (ls -l) is
//     one request per page, not one per entry. Whatever a folder's size,
//     no reply holds more than a page of it;
//   - every attribute reply (getattr, lookup, a readdirplus page's entries)
//     is followed by a file map: for a regular file of at most kMapMaxSize
//     bytes stored as is (not compressed), where its bytes lie in the image
//     files the daemon passed in. The daemon then reads that file itself,
//     with no request: a small-file walk's every read. The daemon checks a
//     map against its own descriptors, so a worker can point it at nothing
//     but the bytes of its backup's image files, which the worker reads
//     anyway. A larger file's map is asked for once, by its first read
//     (kMap): its reads then cost no request either;
//   - small files read ahead (fuse/prefetch.h) come a window of up to
//     kReadFilesMax files per request (read_files).
//
// The first exchange: the daemon sends kSetup (id 0) with everything the
// worker needs (the backup, the passed descriptors, the sandbox); the
// worker sandboxes itself, opens the backup through the engine and answers
// with a Hello (the volumes), or an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "readers/fs/filesystem.h"

namespace sendense::worker {

// The descriptor numbers a worker starts with.
inline constexpr int kControlFd = 3;      // the SOCK_SEQPACKET socket to the daemon
inline constexpr int kFirstImageFd = 4;   // image files, in the order of Setup::files

// A spare worker (started ahead of any backup: fuse/worker_client.h) runs as
// `sendense-restore-worker --spare PAD`, PAD being kSpareRoom spaces: the
// room in which it writes the id of the backup it is given, so that its
// command line names that backup like any worker's. It says it is ready
// with one empty reply of id 0, then waits for a Setup that brings the
// image descriptors with it (SCM_RIGHTS, in the order of Setup::files).
inline constexpr const char* kSpareFlag = "--spare";
inline constexpr size_t kSpareRoom = 255;       // the longest backup id a spare takes
inline constexpr size_t kMaxSpareFiles = 253;   // SCM_MAX_FD: one message's descriptors

// A worker's RLIMIT_NOFILE with `images` image files: set by the daemon
// before exec, or by a spare once its images come.
inline constexpr size_t descriptor_limit(size_t images) { return 2 * images + 64; }

enum class Op : uint32_t {
  setup = 1,
  getattr,
  lookup,
  readdir,   // folder, cookie, max entries, with attributes (0/1) -> a page (Filesystem::readdir_page)
  readlink,
  read,      // handle (the daemon's number), inode, offset, size -> the data

  release,  // count, then that many handles (kNoReply)
  listxattr,
  getxattr,
  statfs,
  probe,     // sandbox-check only: try one forbidden action (worker/probes.h)
  map,       // inode -> its file map (at most kMapMaxExtentsAsked extents; empty: none)
  // count, that many inodes (at most kMaxXattrBatch) -> for each: 1 and its
  // xattr names (Filesystem::listxattr), or 0 where listing failed
  xattr_names,
  // count, that many (inode, size) pairs (at most kReadFilesMax, each size at
  // most kReadFilesMaxSize, together at most kReadFilesMaxBytes) -> for each:
  // 1 and exactly `size` bytes (the file from its start), or 0
  read_files,
};
const char* op_name(Op op);

// Reply flag: more parts of this reply follow.
inline constexpr uint32_t kMore = 1;

// The request id of a request that wants no reply.
inline constexpr uint64_t kNoReply = 0;

// The daemon tells released files in batches of this many.
inline constexpr size_t kReleaseBatch = 64;

// The most entries one kReaddir reply holds.
inline constexpr size_t kMaxPageEntries = 4096;

// The most inodes one xattr_names request asks for (a folder's first page
// with attributes is at most 1,024 entries: fuse/fuse_ops.cpp).
inline constexpr size_t kMaxXattrBatch = 4096;

// One read_files request (reading small files ahead: fuse/prefetch.h).
inline constexpr size_t kReadFilesMax = 64;
inline constexpr uint64_t kReadFilesMaxSize = 128 * 1024;
inline constexpr uint64_t kReadFilesMaxBytes = 1 << 20;

// Attributes the daemon keeps per volume (those pages and lookups brought).
inline constexpr size_t kListingAttrsMax = 32768;

// The largest reply part (and read) a socket with this SO_SNDBUF (as
// getsockopt reports it) carries in one datagram; both ends use it.
inline size_t max_part_for(int sndbuf) {
  if (sndbuf <= 256 * 1024) return 64 * 1024;
  const size_t n = static_cast<size_t>(sndbuf) / 2 - 64 * 1024;
  return n < 8u * 1024 * 1024 ? n : 8u * 1024 * 1024;
}

struct Header {
  uint64_t id = 0;
  uint32_t a = 0;  // request: op; reply: errno
  uint32_t b = 0;  // request: volume; reply: flags
};
static_assert(sizeof(Header) == 16);

// Appends values to a byte buffer.
class Writer {
 public:
  void u32(uint32_t v) { raw(&v, sizeof v); }
  void u64(uint64_t v) { raw(&v, sizeof v); }
  void i64(int64_t v) { raw(&v, sizeof v); }
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    raw(s.data(), s.size());
  }
  void raw(const void* p, size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    buf.insert(buf.end(), b, b + n);
  }
  std::vector<std::byte> buf;
};

// Reads values back; throws Error(EPROTO) past the end.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> data) : data_(data) {}
  uint32_t u32() { return pod<uint32_t>(); }
  uint64_t u64() { return pod<uint64_t>(); }
  int64_t i64() { return pod<int64_t>(); }
  std::string str();
  void raw(void* p, size_t n) {
    need(n);
    if (n == 0) return;  // (p may be an empty vector's null data(): memcpy must not see it)
    std::memcpy(p, data_.data() + pos_, n);
    pos_ += n;
  }
  // A count of items each at least `min_size` bytes long: a count the rest
  // of the message cannot hold is refused (a hostile worker must not make
  // the daemon allocate for billions of entries).
  uint32_t count(size_t min_size) {
    const uint32_t n = u32();
    if (n > (data_.size() - pos_) / (min_size ? min_size : 1)) throw_bad_count();
    return n;
  }
  bool done() const { return pos_ == data_.size(); }

 private:
  template <typename T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  void need(size_t n) const;
  [[noreturn]] static void throw_bad_count();
  std::span<const std::byte> data_;
  size_t pos_ = 0;
};

void put_attr(Writer& w, const Attr& a);
Attr get_attr(Reader& r);

// A kReaddir reply: a count, then per entry put_entry and a flag (1: its
// attributes and map follow, put_attr and put_map). Read by decode_page
// (worker/replies.h).
void put_entry(Writer& w, const DirEntry& e);
DirEntry get_entry(Reader& r);

// A file map (see above): extents in file order covering [0, size).
inline constexpr uint64_t kMapMaxSize = 1u << 20;
inline constexpr size_t kMapMaxExtents = 16;
inline constexpr size_t kMapMaxExtentsAsked = 256;  // kMap
inline constexpr uint32_t kZeros = 0xffffffff;  // MappedExtent::file of a hole
struct MappedExtent {
  uint32_t file = kZeros;  // index in Setup::files (descriptor kFirstImageFd + file)
  uint64_t offset = 0;
  uint64_t length = 0;
};
// No map: an empty vector.
void put_map(Writer& w, const std::vector<MappedExtent>& map);
std::vector<MappedExtent> get_map(Reader& r);

// kSetup: everything a worker is told.
struct PassedFile {
  std::string name;      // what ImageFile::open is given
  int fd = -1;           // in the worker: kFirstImageFd + its index
};
struct Setup {
  std::string backup_id;
  FsOpenOptions fs_open;
  std::vector<std::pair<std::string, uint32_t>> disks;        // image path, ImageFormat
  std::vector<PassedFile> files;
  std::vector<std::pair<std::string, std::string>> canonical;  // name as requested -> canonical
  uint32_t uid = 0, gid = 0;    // 0: do not change (tests without root)
  uint64_t memory_limit = 0;    // RLIMIT_AS bytes; 0: none
  uint32_t threads = 8;
  uint64_t namespaces = 0;      // CLONE_NEW* flags the worker was started with
};
std::vector<std::byte> encode(const Setup& s);
Setup decode_setup(Reader& r);

// The worker's answer to kSetup.
struct HelloVolume {
  std::string name;
  std::string type;      // the layout's type (to_string(VolumeType))
  std::string fs_type;   // Filesystem::type_name()
  uint64_t offset = 0, length = 0;
  uint64_t root_ino = 0;
  JournalReport journal;
};
struct HelloProblem {
  std::string name, type;
  bool failed = false;
  std::string reason;
  // Where it lies, for the daemon's kernel backend (--attach auto serves
  // a volume no userspace reader reads, btrfs, with the kernel).
  uint32_t fs = 0;         // FsType
  uint32_t disk = 0;
  uint64_t offset = 0, length = 0;
  bool readable = false;   // the layout has a device for it
};
struct Hello {
  std::string readers;                  // OpenedDisks::readers
  std::vector<std::string> warnings;    // layout warnings
  std::vector<HelloVolume> volumes;     // volume index = position here
  std::vector<HelloProblem> problems;
};
std::vector<std::byte> encode(const Hello& h);
Hello decode_hello(Reader& r);

}  // namespace sendense::worker
