#include "worker/protocol.h"

#include "readers/common/error.h"

namespace sendense::worker {

const char* op_name(Op op) {
  switch (op) {
    case Op::setup: return "setup";
    case Op::getattr: return "getattr";
    case Op::lookup: return "lookup";
    case Op::readdir: return "readdir";
    case Op::readlink: return "readlink";
    case Op::read: return "read";
    case Op::release: return "release";
    case Op::listxattr: return "listxattr";
    case Op::getxattr: return "getxattr";
    case Op::statfs: return "statfs";
    case Op::probe: return "probe";
    case Op::map: return "map";
    case Op::xattr_names: return "xattr_names";
    case Op::read_files: return "read_files";
  }
  return "unknown";
}

void Reader::need(size_t n) const {
  if (data_.size() - pos_ < n) throw Error(EPROTO, "worker protocol: message too short");
}

void Reader::throw_bad_count() { throw Error(EPROTO, "worker protocol: a count larger than the message"); }

std::string Reader::str() {
  const uint32_t n = u32();
  need(n);
  std::string s(reinterpret_cast<const char*>(data_.data() + pos_), n);
  pos_ += n;
  return s;
}

namespace {
void put_time(Writer& w, const timespec& t) {
  w.i64(t.tv_sec);
  w.i64(t.tv_nsec);
}
timespec get_time(Reader& r) {
  timespec t{};
  t.tv_sec = static_cast<time_t>(r.i64());
  t.tv_nsec = static_cast<long>(r.i64());
  return t;
}
void put_journal(Writer& w, const JournalReport& j) {
  w.str(j.state);
  w.u64(j.transactions);
  w.u64(j.blocks);
  w.str(j.note);
}
JournalReport get_journal(Reader& r) {
  JournalReport j;
  j.state = r.str();
  j.transactions = r.u64();
  j.blocks = r.u64();
  j.note = r.str();
  return j;
}
}  // namespace

void put_attr(Writer& w, const Attr& a) {
  w.u64(a.ino);
  w.u32(a.mode);
  w.u32(a.nlink);
  w.u32(a.uid);
  w.u32(a.gid);
  w.u64(a.size);
  w.u64(a.blocks);
  w.u64(a.rdev);
  w.u64(a.generation);
  put_time(w, a.atime);
  put_time(w, a.mtime);
  put_time(w, a.ctime);
}

void put_entry(Writer& w, const DirEntry& e) {
  w.str(e.name);
  w.u64(e.ino);
  w.u32(e.type);
  w.u64(e.next);
}

DirEntry get_entry(Reader& r) {
  DirEntry e;
  e.name = r.str();
  e.ino = r.u64();
  e.type = r.u32();
  e.next = r.u64();
  return e;
}

void put_map(Writer& w, const std::vector<MappedExtent>& map) {
  w.u32(static_cast<uint32_t>(map.size()));
  for (const MappedExtent& e : map) {
    w.u32(e.file);
    w.u64(e.offset);
    w.u64(e.length);
  }
}

std::vector<MappedExtent> get_map(Reader& r) {
  std::vector<MappedExtent> map(r.count(20));
  for (MappedExtent& e : map) {
    e.file = r.u32();
    e.offset = r.u64();
    e.length = r.u64();
  }
  return map;
}

Attr get_attr(Reader& r) {
  Attr a;
  a.ino = r.u64();
  a.mode = r.u32();
  a.nlink = r.u32();
  a.uid = r.u32();
  a.gid = r.u32();
  a.size = r.u64();
  a.blocks = r.u64();
  a.rdev = r.u64();
  a.generation = r.u64();
  a.atime = get_time(r);
  a.mtime = get_time(r);
  a.ctime = get_time(r);
  return a;
}

std::vector<std::byte> encode(const Setup& s) {
  Writer w;
  w.str(s.backup_id);
  w.u32(s.fs_open.replay_journal ? 1 : 0);
  w.u32(s.fs_open.ntfs_uid);
  w.u32(s.fs_open.ntfs_gid);
  w.u32(s.fs_open.ntfs_dir_mode);
  w.u32(s.fs_open.ntfs_file_mode);
  w.u64(s.fs_open.cache_budget_bytes);
  w.u64(s.fs_open.max_listing_bytes);
  w.u32(static_cast<uint32_t>(s.disks.size()));
  for (const auto& [path, format] : s.disks) {
    w.str(path);
    w.u32(format);
  }
  w.u32(static_cast<uint32_t>(s.files.size()));
  for (const auto& f : s.files) {
    w.str(f.name);
    w.u32(static_cast<uint32_t>(f.fd));
  }
  w.u32(static_cast<uint32_t>(s.canonical.size()));
  for (const auto& [from, to] : s.canonical) {
    w.str(from);
    w.str(to);
  }
  w.u32(s.uid);
  w.u32(s.gid);
  w.u64(s.memory_limit);
  w.u32(s.threads);
  w.u64(s.namespaces);
  return std::move(w.buf);
}

Setup decode_setup(Reader& r) {
  Setup s;
  s.backup_id = r.str();
  s.fs_open.replay_journal = r.u32() != 0;
  s.fs_open.ntfs_uid = r.u32();
  s.fs_open.ntfs_gid = r.u32();
  s.fs_open.ntfs_dir_mode = r.u32();
  s.fs_open.ntfs_file_mode = r.u32();
  s.fs_open.cache_budget_bytes = r.u64();
  s.fs_open.max_listing_bytes = static_cast<size_t>(r.u64());
  for (uint32_t n = r.u32(), i = 0; i < n; ++i) {
    std::string path = r.str();
    s.disks.emplace_back(std::move(path), r.u32());
  }
  for (uint32_t n = r.u32(), i = 0; i < n; ++i) {
    PassedFile f;
    f.name = r.str();
    f.fd = static_cast<int>(r.u32());
    s.files.push_back(std::move(f));
  }
  for (uint32_t n = r.u32(), i = 0; i < n; ++i) {
    std::string from = r.str();
    s.canonical.emplace_back(std::move(from), r.str());
  }
  s.uid = r.u32();
  s.gid = r.u32();
  s.memory_limit = r.u64();
  s.threads = r.u32();
  s.namespaces = r.u64();
  return s;
}

std::vector<std::byte> encode(const Hello& h) {
  Writer w;
  w.str(h.readers);
  w.u32(static_cast<uint32_t>(h.warnings.size()));
  for (const auto& s : h.warnings) w.str(s);
  w.u32(static_cast<uint32_t>(h.volumes.size()));
  for (const auto& v : h.volumes) {
    w.str(v.name);
    w.str(v.type);
    w.str(v.fs_type);
    w.u64(v.offset);
    w.u64(v.length);
    w.u64(v.root_ino);
    put_journal(w, v.journal);
  }
  w.u32(static_cast<uint32_t>(h.problems.size()));
  for (const auto& p : h.problems) {
    w.str(p.name);
    w.str(p.type);
    w.u32(p.failed ? 1 : 0);
    w.str(p.reason);
    w.u32(p.fs);
    w.u32(p.disk);
    w.u64(p.offset);
    w.u64(p.length);
    w.u32(p.readable ? 1 : 0);
  }
  return std::move(w.buf);
}

Hello decode_hello(Reader& r) {
  Hello h;
  h.readers = r.str();
  for (uint32_t n = r.count(4), i = 0; i < n; ++i) h.warnings.push_back(r.str());
  for (uint32_t n = r.count(40), i = 0; i < n; ++i) {
    HelloVolume v;
    v.name = r.str();
    v.type = r.str();
    v.fs_type = r.str();
    v.offset = r.u64();
    v.length = r.u64();
    v.root_ino = r.u64();
    v.journal = get_journal(r);
    h.volumes.push_back(std::move(v));
  }
  for (uint32_t n = r.count(44), i = 0; i < n; ++i) {
    HelloProblem p;
    p.name = r.str();
    p.type = r.str();
    p.failed = r.u32() != 0;
    p.reason = r.str();
    p.fs = r.u32();
    p.disk = r.u32();
    p.offset = r.u64();
    p.length = r.u64();
    p.readable = r.u32() != 0;
    h.problems.push_back(std::move(p));
  }
  return h;
}

}  // namespace sendense::worker
