// A small NFSv4.0 client of our own, over libnfs's raw RPC layer (libnfs-dev,
// rpc_nfs4_compound_async driven synchronously), for tests that must hold
// file and directory handles across steps: look a file up, restart the FUSE
// daemon under the NFS server, then read through the SAME handle.
//
// Handles are the server's raw bytes (Fh): a test can keep them, compare
// them, or re-address one to another export (ganesha_readdress) and send it
// back. Nothing is
// cached: every call is one COMPOUND on the wire, so every answer is the
// server's answer now.
//
// Reads use the anonymous stateid (all zeros): no OPEN state, no clientid,
// no lease to renew, which is also how an NFSv3 client reads. The server
// keeps its own descriptors open behind such reads (ganesha's "global fd").
//
// Every call returns an nfsstat4 (0 = NFS4_OK, e.g. 70 = NFS4ERR_STALE,
// 10008 = NFS4ERR_DELAY), or -1 when the RPC itself failed (error() says
// why: connection refused, timeout, ...). Not thread-safe: one client per
// thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

struct rpc_context;

namespace sendense::test::reexport {

// NFSv4 file types (nfs_ftype4).
enum class NfsType : uint32_t { none = 0, reg = 1, dir = 2, blk = 3, chr = 4, lnk = 5, sock = 6, fifo = 7 };

struct Fh {
  std::string bytes;  // the server's opaque handle
  bool empty() const { return bytes.empty(); }
  bool operator==(const Fh& o) const { return bytes == o.bytes; }
  std::string hex() const;
};

struct NfsAttr {
  NfsType type = NfsType::none;
  uint64_t size = 0;
  uint64_t fsid_major = 0, fsid_minor = 0;
  uint64_t fileid = 0;
  uint32_t mode = 0;
};

// NFS-Ganesha's NFSv4 handles (file_handle_v4_t, src/include/nfs_file_handle.h):
// version byte, flags byte, the export id (16 bits, network order), the
// FSAL's handle length and bytes. The export id this handle names, or -1.
int ganesha_export_id(const Fh& fh);
// The same handle naming export `export_id` instead: what a client of one
// export would send to reach another export's file.
Fh ganesha_readdress(const Fh& fh, uint16_t export_id);

struct NfsDirEntry {
  std::string name;
  NfsAttr attr;
};

// "NFS4ERR_STALE (70)" and the like.
std::string nfs4_status_name(int status);

class Nfs4Client {
 public:
  Nfs4Client();
  ~Nfs4Client();
  Nfs4Client(const Nfs4Client&) = delete;
  Nfs4Client& operator=(const Nfs4Client&) = delete;

  // TCP to host:port (NFS program 100003, version 4; no portmapper).
  // Returns "" or why not.
  std::string connect(const std::string& host, int port,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  const std::string& error() const { return error_; }

  // Each RPC waits at most this long (default 30 s) before failing with -1.
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

  // PUTROOTFH, LOOKUP of each component of `path` ("/tenants/a/x"), GETFH.
  int lookup_path(const std::string& path, Fh* out);
  int lookup(const Fh& dir, const std::string& name, Fh* out);
  // LOOKUPP: the parent of `dir` ("..").
  int lookup_parent(const Fh& dir, Fh* out);
  int getattr(const Fh& fh, NfsAttr* out);
  // One READ of at most `count` bytes at `offset`.
  int read(const Fh& fh, uint64_t offset, uint32_t count, std::string* data, bool* eof = nullptr);
  // READs from `offset` to the end of the file, `chunk` bytes a call.
  int read_all(const Fh& fh, std::string* data, uint32_t chunk = 1 << 20);
  // Every entry of a folder (READDIR until eof, "." and ".." not included).
  int readdir(const Fh& dir, std::vector<NfsDirEntry>* out);
  int readlink(const Fh& fh, std::string* target);

  // Copies the tree under `dir` into the host folder `local`: folders,
  // regular files (their bytes), symlinks (their targets, never followed);
  // other types become empty files named NAME.<type> so a listing shows
  // them. Returns 0 or the first failing status; `failures` gets one line
  // per path that failed (the copy goes on). Counts what it did.
  struct CopyStats {
    uint64_t dirs = 0, files = 0, links = 0, other = 0, bytes = 0;
  };
  int copy_tree(const Fh& dir, const std::string& local, CopyStats* stats, std::vector<std::string>* failures);

  // Walks the tree under `dir` (READDIR of every folder, no READ): the
  // number of entries seen. For the listing-time benchmark.
  int walk(const Fh& dir, uint64_t* entries, std::vector<std::string>* failures);

  // Internal: one operation of a COMPOUND and what came back (nfs4_client.cpp).
  struct Op;
  struct Reply;

 private:
  int compound(std::vector<Op>& ops, Reply* reply);
  bool wait(bool* done, std::chrono::milliseconds timeout);

  rpc_context* rpc_ = nullptr;
  std::string error_;
  std::chrono::milliseconds timeout_{30000};
};

}  // namespace sendense::test::reexport
