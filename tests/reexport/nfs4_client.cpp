#include "tests/reexport/nfs4_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

// libnfs's headers are C; the raw NFSv4 XDR types come from libnfs-raw-nfs4.h.
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-nfs4.h>

#include <cstring>
#include <fstream>

namespace sendense::test::reexport {

namespace {

// The attributes every GETATTR and READDIR asks for, decoded by decode_attrs.
constexpr uint32_t kAttrWord0 = (1u << FATTR4_TYPE) | (1u << FATTR4_SIZE) | (1u << FATTR4_FSID) | (1u << FATTR4_FILEID);
constexpr uint32_t kAttrWord1 = 1u << (FATTR4_MODE - 32);

struct XdrReader {
  const unsigned char* p;
  size_t left;
  bool ok = true;
  uint32_t u32() {
    if (left < 4) return ok = false, 0;
    uint32_t v = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    p += 4, left -= 4;
    return v;
  }
  uint64_t u64() {
    uint64_t hi = u32();
    return (hi << 32) | u32();
  }
};

// fattr4 values come in the order of their bit numbers; we only ask for
// fixed-size ones, so the first unknown bit ends decoding.
NfsAttr decode_attrs(const fattr4& a) {
  NfsAttr out;
  auto has = [&](unsigned bit) {
    unsigned word = bit / 32;
    return word < a.attrmask.bitmap4_len && (a.attrmask.bitmap4_val[word] & (1u << (bit % 32)));
  };
  XdrReader r{reinterpret_cast<const unsigned char*>(a.attr_vals.attrlist4_val), a.attr_vals.attrlist4_len};
  for (unsigned bit = 0; bit < 64 && r.ok; ++bit) {
    if (!has(bit)) continue;
    switch (bit) {
      case FATTR4_TYPE: out.type = static_cast<NfsType>(r.u32()); break;
      case FATTR4_SIZE: out.size = r.u64(); break;
      case FATTR4_FSID: out.fsid_major = r.u64(); out.fsid_minor = r.u64(); break;
      case FATTR4_FILEID: out.fileid = r.u64(); break;
      case FATTR4_MODE: out.mode = r.u32(); break;
      default: return out;  // not asked for: cannot skip it
    }
  }
  return out;
}

const char* type_suffix(NfsType t) {
  switch (t) {
    case NfsType::blk: return "blockdev";
    case NfsType::chr: return "chardev";
    case NfsType::sock: return "socket";
    case NfsType::fifo: return "fifo";
    default: return "unknown";
  }
}

}  // namespace

std::string Fh::hex() const {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) out += digits[c >> 4], out += digits[c & 15];
  return out;
}

int ganesha_export_id(const Fh& fh) {
  if (fh.bytes.size() < 5) return -1;
  return (static_cast<unsigned char>(fh.bytes[2]) << 8) | static_cast<unsigned char>(fh.bytes[3]);
}

Fh ganesha_readdress(const Fh& fh, uint16_t export_id) {
  Fh out = fh;
  if (out.bytes.size() >= 5) {
    out.bytes[2] = static_cast<char>(export_id >> 8);
    out.bytes[3] = static_cast<char>(export_id & 0xff);
  }
  return out;
}

std::string nfs4_status_name(int status) {
  switch (status) {
    case -1: return "RPC failure (-1)";
    case NFS4_OK: return "NFS4_OK (0)";
    case NFS4ERR_PERM: return "NFS4ERR_PERM (1)";
    case NFS4ERR_NOENT: return "NFS4ERR_NOENT (2)";
    case NFS4ERR_IO: return "NFS4ERR_IO (5)";
    case NFS4ERR_ACCESS: return "NFS4ERR_ACCESS (13)";
    case NFS4ERR_NOTDIR: return "NFS4ERR_NOTDIR (20)";
    case NFS4ERR_INVAL: return "NFS4ERR_INVAL (22)";
    case NFS4ERR_STALE: return "NFS4ERR_STALE (70)";
    case NFS4ERR_BADHANDLE: return "NFS4ERR_BADHANDLE (10001)";
    case NFS4ERR_SERVERFAULT: return "NFS4ERR_SERVERFAULT (10006)";
    case NFS4ERR_DELAY: return "NFS4ERR_DELAY (10008)";
    case NFS4ERR_GRACE: return "NFS4ERR_GRACE (10013)";
    case NFS4ERR_FHEXPIRED: return "NFS4ERR_FHEXPIRED (10014)";
    case NFS4ERR_WRONGSEC: return "NFS4ERR_WRONGSEC (10016)";
    case NFS4ERR_MOVED: return "NFS4ERR_MOVED (10019)";
    case NFS4ERR_NOFILEHANDLE: return "NFS4ERR_NOFILEHANDLE (10020)";
    case NFS4ERR_SYMLINK: return "NFS4ERR_SYMLINK (10029)";
    default: return "nfsstat4 " + std::to_string(status);
  }
}

// One operation and the storage its arguments point into.
struct Nfs4Client::Op {
  Op(nfs_opnum4 o) : op(o) {}  // NOLINT: implicit, so {OP_GETFH} reads as an op
  nfs_opnum4 op;
  std::string fh;         // PUTFH
  std::string name;       // LOOKUP
  uint64_t offset = 0;    // READ
  uint32_t count = 0;     // READ
  uint64_t cookie = 0;    // READDIR
  char verifier[NFS4_VERIFIER_SIZE] = {};
  uint32_t bitmap[2] = {kAttrWord0, kAttrWord1};
};

struct Nfs4Client::Reply {
  int status = -1;     // the COMPOUND's status (its last op's)
  std::string fh;      // GETFH
  NfsAttr attr;        // GETATTR
  std::string data;    // READ, READLINK
  bool eof = false;    // READ, READDIR
  std::vector<std::pair<uint64_t, NfsDirEntry>> entries;  // READDIR: cookie, entry
  char verifier[NFS4_VERIFIER_SIZE] = {};
  bool done = false;
  std::string rpc_error;
};

namespace {

void copy_results(const void* res, void* reply_ptr);

}  // namespace

Nfs4Client::Nfs4Client() : rpc_(rpc_init_context()) {}

Nfs4Client::~Nfs4Client() {
  if (rpc_) rpc_destroy_context(rpc_);
}

bool Nfs4Client::wait(bool* done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!*done) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      error_ = "no answer within " + std::to_string(timeout.count()) + " ms";
      return false;
    }
    pollfd pfd{rpc_get_fd(rpc_), static_cast<short>(rpc_which_events(rpc_)), 0};
    if (pfd.fd < 0) {
      error_ = "not connected";
      return false;
    }
    int n = ::poll(&pfd, 1, static_cast<int>(std::min<long>(left.count(), 100)));
    if (n < 0 && errno != EINTR) {
      error_ = std::string("poll: ") + std::strerror(errno);
      return false;
    }
    if (rpc_service(rpc_, n > 0 ? pfd.revents : 0) < 0) {
      error_ = std::string("rpc_service: ") + rpc_get_error(rpc_);
      if (!*done) return false;
    }
  }
  return true;
}

std::string Nfs4Client::connect(const std::string& host, int port, std::chrono::milliseconds timeout) {
  struct State {
    bool done = false;
    int status = -1;
    std::string error;
  } st;
  auto cb = [](rpc_context* rpc, int status, void* data, void* priv) {
    auto* s = static_cast<State*>(priv);
    s->status = status;
    if (status != RPC_STATUS_SUCCESS) s->error = data ? static_cast<const char*>(data) : rpc_get_error(rpc);
    s->done = true;
  };
  if (rpc_connect_port_async(rpc_, host.c_str(), port, NFS4_PROGRAM, NFS_V4, cb, &st) != 0)
    return error_ = std::string("rpc_connect_port_async: ") + rpc_get_error(rpc_);
  if (!wait(&st.done, timeout)) return "connecting to " + host + ":" + std::to_string(port) + ": " + error_;
  if (st.status != RPC_STATUS_SUCCESS)
    return error_ = "connecting to " + host + ":" + std::to_string(port) + ": " + st.error;
  return {};
}

namespace {

// libnfs 4.0's XDR decoder places structures at 4-byte alignment (its zdr
// allocator), where nfs_resop4 and entry4 need 8 (UBSan: "misaligned
// address"): every structure is copied out with memcpy before use.
template <typename T>
T aligned_copy(const void* p) {
  T out;
  std::memcpy(static_cast<void*>(&out), p, sizeof out);
  return out;
}

void copy_results(const void* res_ptr, void* reply_ptr) {
  auto* r = static_cast<Nfs4Client::Reply*>(reply_ptr);
  const auto res = aligned_copy<COMPOUND4res>(res_ptr);
  r->status = res.status;
  for (u_int i = 0; i < res.resarray.resarray_len; ++i) {
    const auto op = aligned_copy<nfs_resop4>(reinterpret_cast<const char*>(res.resarray.resarray_val) + i * sizeof(nfs_resop4));
    switch (op.resop) {
      case OP_GETFH:
        if (op.nfs_resop4_u.opgetfh.status == NFS4_OK) {
          const nfs_fh4& fh = op.nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object;
          r->fh.assign(fh.nfs_fh4_val, fh.nfs_fh4_len);
        }
        break;
      case OP_GETATTR:
        if (op.nfs_resop4_u.opgetattr.status == NFS4_OK)
          r->attr = decode_attrs(op.nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes);
        break;
      case OP_READ:
        if (op.nfs_resop4_u.opread.status == NFS4_OK) {
          const READ4resok& ok = op.nfs_resop4_u.opread.READ4res_u.resok4;
          r->data.assign(ok.data.data_val, ok.data.data_len);
          r->eof = ok.eof;
        }
        break;
      case OP_READLINK:
        if (op.nfs_resop4_u.opreadlink.status == NFS4_OK) {
          const linktext4& l = op.nfs_resop4_u.opreadlink.READLINK4res_u.resok4.link;
          r->data.assign(l.utf8string_val, l.utf8string_len);
        }
        break;
      case OP_READDIR:
        if (op.nfs_resop4_u.opreaddir.status == NFS4_OK) {
          const READDIR4resok& ok = op.nfs_resop4_u.opreaddir.READDIR4res_u.resok4;
          std::memcpy(r->verifier, ok.cookieverf, NFS4_VERIFIER_SIZE);
          for (const entry4* p = ok.reply.entries; p;) {
            const auto e = aligned_copy<entry4>(p);
            NfsDirEntry de;
            de.name.assign(e.name.utf8string_val, e.name.utf8string_len);
            de.attr = decode_attrs(e.attrs);
            r->entries.emplace_back(e.cookie, std::move(de));
            p = e.nextentry;
          }
          r->eof = ok.reply.eof;
        }
        break;
      default:
        break;
    }
  }
}

}  // namespace

int Nfs4Client::compound(std::vector<Op>& ops, Reply* reply) {
  std::vector<nfs_argop4> args(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    Op& o = ops[i];
    nfs_argop4& a = args[i];
    std::memset(&a, 0, sizeof a);
    a.argop = o.op;
    switch (o.op) {
      case OP_PUTFH:
        a.nfs_argop4_u.opputfh.object.nfs_fh4_len = static_cast<u_int>(o.fh.size());
        a.nfs_argop4_u.opputfh.object.nfs_fh4_val = o.fh.data();
        break;
      case OP_LOOKUP:
        a.nfs_argop4_u.oplookup.objname.utf8string_len = static_cast<u_int>(o.name.size());
        a.nfs_argop4_u.oplookup.objname.utf8string_val = o.name.data();
        break;
      case OP_GETATTR:
        a.nfs_argop4_u.opgetattr.attr_request.bitmap4_len = 2;
        a.nfs_argop4_u.opgetattr.attr_request.bitmap4_val = o.bitmap;
        break;
      case OP_READ:
        // stateid left all zeros: the anonymous stateid.
        a.nfs_argop4_u.opread.offset = o.offset;
        a.nfs_argop4_u.opread.count = o.count;
        break;
      case OP_READDIR:
        a.nfs_argop4_u.opreaddir.cookie = o.cookie;
        std::memcpy(a.nfs_argop4_u.opreaddir.cookieverf, o.verifier, NFS4_VERIFIER_SIZE);
        a.nfs_argop4_u.opreaddir.dircount = 16384;
        a.nfs_argop4_u.opreaddir.maxcount = 65536;
        a.nfs_argop4_u.opreaddir.attr_request.bitmap4_len = 2;
        a.nfs_argop4_u.opreaddir.attr_request.bitmap4_val = o.bitmap;
        break;
      default:  // PUTROOTFH, LOOKUPP, GETFH, READLINK: no arguments
        break;
    }
  }
  COMPOUND4args c{};
  c.minorversion = 0;
  c.argarray.argarray_len = static_cast<u_int>(args.size());
  c.argarray.argarray_val = args.data();
  auto cb = [](rpc_context* rpc, int status, void* data, void* priv) {
    auto* r = static_cast<Reply*>(priv);
    if (status == RPC_STATUS_SUCCESS && data) {
      copy_results(data, r);
    } else {
      r->status = -1;
      r->rpc_error = status == RPC_STATUS_TIMEOUT ? "rpc timeout"
                     : data                       ? static_cast<const char*>(data)
                                                  : rpc_get_error(rpc);
    }
    r->done = true;
  };
  if (rpc_nfs4_compound_async(rpc_, cb, &c, reply) != 0) {
    error_ = std::string("rpc_nfs4_compound_async: ") + rpc_get_error(rpc_);
    return -1;
  }
  if (!wait(&reply->done, timeout_)) {
    // The reply may still come: the callback must not write into a dead
    // Reply. Without an API to cancel one call, drop the connection.
    rpc_destroy_context(rpc_);
    rpc_ = rpc_init_context();
    return -1;
  }
  if (reply->status == -1) error_ = reply->rpc_error;
  return reply->status;
}

int Nfs4Client::lookup_path(const std::string& path, Fh* out) {
  std::vector<Op> ops{{OP_PUTROOTFH}};
  size_t pos = 0;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    if (end > pos) {
      Op o{OP_LOOKUP};
      o.name = path.substr(pos, end - pos);
      ops.push_back(o);
    }
    pos = end + 1;
  }
  ops.push_back({OP_GETFH});
  Reply r;
  int st = compound(ops, &r);
  if (st == NFS4_OK) out->bytes = r.fh;
  return st;
}

int Nfs4Client::lookup(const Fh& dir, const std::string& name, Fh* out) {
  std::vector<Op> ops{{OP_PUTFH}, {OP_LOOKUP}, {OP_GETFH}};
  ops[0].fh = dir.bytes;
  ops[1].name = name;
  Reply r;
  int st = compound(ops, &r);
  if (st == NFS4_OK) out->bytes = r.fh;
  return st;
}

int Nfs4Client::lookup_parent(const Fh& dir, Fh* out) {
  std::vector<Op> ops{{OP_PUTFH}, {OP_LOOKUPP}, {OP_GETFH}};
  ops[0].fh = dir.bytes;
  Reply r;
  int st = compound(ops, &r);
  if (st == NFS4_OK) out->bytes = r.fh;
  return st;
}

int Nfs4Client::getattr(const Fh& fh, NfsAttr* out) {
  std::vector<Op> ops{{OP_PUTFH}, {OP_GETATTR}};
  ops[0].fh = fh.bytes;
  Reply r;
  int st = compound(ops, &r);
  if (st == NFS4_OK) *out = r.attr;
  return st;
}

int Nfs4Client::read(const Fh& fh, uint64_t offset, uint32_t count, std::string* data, bool* eof) {
  std::vector<Op> ops{{OP_PUTFH}, {OP_READ}};
  ops[0].fh = fh.bytes;
  ops[1].offset = offset;
  ops[1].count = count;
  Reply r;
  int st = compound(ops, &r);
  if (st == NFS4_OK) {
    *data = std::move(r.data);
    if (eof) *eof = r.eof;
  }
  return st;
}

int Nfs4Client::read_all(const Fh& fh, std::string* data, uint32_t chunk) {
  data->clear();
  while (true) {
    std::string part;
    bool eof = false;
    int st = read(fh, data->size(), chunk, &part, &eof);
    if (st != NFS4_OK) return st;
    data->append(part);
    if (eof || part.empty()) return NFS4_OK;
  }
}

int Nfs4Client::readdir(const Fh& dir, std::vector<NfsDirEntry>* out) {
  out->clear();
  uint64_t cookie = 0;
  char verifier[NFS4_VERIFIER_SIZE] = {};
  while (true) {
    std::vector<Op> ops{{OP_PUTFH}, {OP_READDIR}};
    ops[0].fh = dir.bytes;
    ops[1].cookie = cookie;
    std::memcpy(ops[1].verifier, verifier, sizeof verifier);
    Reply r;
    int st = compound(ops, &r);
    if (st != NFS4_OK) return st;
    for (auto& [c, e] : r.entries) {
      cookie = c;
      out->push_back(std::move(e));
    }
    std::memcpy(verifier, r.verifier, sizeof verifier);
    if (r.eof) return NFS4_OK;
    if (r.entries.empty()) {
      error_ = "READDIR returned no entries and no eof";
      return NFS4ERR_SERVERFAULT;
    }
  }
}

int Nfs4Client::readlink(const Fh& fh, std::string* target) {
  std::vector<Op> ops{{OP_PUTFH}, {OP_READLINK}};
  ops[0].fh = fh.bytes;
  Reply r;
  int st = compound(ops, &r);
  if (st == NFS4_OK) *target = r.data;
  return st;
}

int Nfs4Client::copy_tree(const Fh& dir, const std::string& local, CopyStats* stats,
                          std::vector<std::string>* failures) {
  int first = NFS4_OK;
  auto fail = [&](const std::string& what, int st) {
    if (first == NFS4_OK) first = st;
    failures->push_back(what + ": " + nfs4_status_name(st) + (st == -1 ? " " + error_ : ""));
  };
  if (::mkdir(local.c_str(), 0755) != 0 && errno != EEXIST) {
    failures->push_back("mkdir " + local + ": " + std::strerror(errno));
    return NFS4ERR_IO;
  }
  ++stats->dirs;
  std::vector<NfsDirEntry> entries;
  int st = readdir(dir, &entries);
  if (st != NFS4_OK) {
    fail("readdir " + local, st);
    return st;
  }
  for (const auto& e : entries) {
    const std::string path = local + "/" + e.name;
    Fh fh;
    if ((st = lookup(dir, e.name, &fh)) != NFS4_OK) {
      fail("lookup " + path, st);
      continue;
    }
    switch (e.attr.type) {
      case NfsType::dir:
        copy_tree(fh, path, stats, failures);
        if (first == NFS4_OK && !failures->empty()) first = NFS4ERR_IO;
        break;
      case NfsType::reg: {
        std::string data;
        if ((st = read_all(fh, &data)) != NFS4_OK) {
          fail("read " + path, st);
          break;
        }
        std::ofstream f(path, std::ios::binary);
        f.write(data.data(), static_cast<std::streamsize>(data.size()));
        ++stats->files;
        stats->bytes += data.size();
        break;
      }
      case NfsType::lnk: {
        std::string target;
        if ((st = readlink(fh, &target)) != NFS4_OK) {
          fail("readlink " + path, st);
          break;
        }
        if (::symlink(target.c_str(), path.c_str()) != 0) failures->push_back("symlink " + path + ": " + std::strerror(errno));
        ++stats->links;
        break;
      }
      default: {
        std::ofstream f(path + "." + type_suffix(e.attr.type));
        ++stats->other;
        break;
      }
    }
  }
  return first;
}

int Nfs4Client::walk(const Fh& dir, uint64_t* entries, std::vector<std::string>* failures) {
  std::vector<NfsDirEntry> list;
  int st = readdir(dir, &list);
  if (st != NFS4_OK) {
    failures->push_back("readdir: " + nfs4_status_name(st));
    return st;
  }
  int first = NFS4_OK;
  for (const auto& e : list) {
    ++*entries;
    if (e.attr.type != NfsType::dir) continue;
    Fh fh;
    if ((st = lookup(dir, e.name, &fh)) != NFS4_OK) {
      failures->push_back("lookup " + e.name + ": " + nfs4_status_name(st));
      if (first == NFS4_OK) first = st;
      continue;
    }
    st = walk(fh, entries, failures);
    if (first == NFS4_OK) first = st;
  }
  return first;
}

}  // namespace sendense::test::reexport
