// nfs_hold_client: the NFSv4 client of nfs4_client.h driven by commands on
// stdin, one answer line per command (flushed), so a shell script can hold
// file and folder handles across steps (restart the daemon, then read on):
//
//   nfs_hold_client HOST PORT
//   lookup PATH          -> "h1"            (PATH from the pseudo root)
//   lookupat H NAME      -> "h2"
//   parent H             -> "h3"            (LOOKUPP: "..")
//   stat H               -> "type=1 size=N fileid=N fsid=A.B mode=0644"
//   read H OFF LEN       -> "ok N sha256"   (one READ)
//   cat H                -> "ok N sha256"   (READs to the end)
//   readdir H            -> "ok N name name ..."
//   readlink H           -> "ok TARGET"
//   fh H                 -> "HEX"           (the server's handle bytes)
//   walk PATH            -> "ok ENTRIES SECONDS"             (READDIR only)
//   copy PATH DIR        -> "ok FILES BYTES SECONDS MB/s"    (tree to DIR)
//
// A failure answers "err STATUS-NAME [detail]". Exit status 0 at end of input.
#include <openssl/evp.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/reexport/nfs4_client.h"

namespace {

using sendense::test::reexport::Fh;
using sendense::test::reexport::Nfs4Client;
using sendense::test::reexport::nfs4_status_name;

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) out += digits[md[i] >> 4], out += digits[md[i] & 15];
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: nfs_hold_client HOST PORT (commands on stdin)\n";
    return 2;
  }
  Nfs4Client client;
  if (std::string err = client.connect(argv[1], std::stoi(argv[2])); !err.empty()) {
    std::cerr << "nfs_hold_client: " << err << "\n";
    return 1;
  }
  std::vector<Fh> handles;
  auto handle = [&](const std::string& word) -> const Fh* {
    if (word.size() < 2 || word[0] != 'h') return nullptr;
    size_t i = std::stoul(word.substr(1));
    return i >= 1 && i <= handles.size() ? &handles[i - 1] : nullptr;
  };
  auto keep = [&](const Fh& fh) {
    handles.push_back(fh);
    return "h" + std::to_string(handles.size());
  };
  auto err = [&](int st) { return "err " + nfs4_status_name(st) + (st == -1 ? " " + client.error() : ""); };

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd, a, b, c;
    in >> cmd >> a >> b >> c;
    std::string answer;
    try {
      if (cmd.empty() || cmd[0] == '#') continue;
      if (cmd == "lookup") {
        Fh fh;
        int st = client.lookup_path(a, &fh);
        answer = st == 0 ? keep(fh) : err(st);
      } else if (cmd == "walk" || cmd == "copy") {
        Fh fh;
        int st = client.lookup_path(a, &fh);
        if (st != 0) {
          answer = err(st);
        } else if (cmd == "walk") {
          uint64_t entries = 0;
          std::vector<std::string> failures;
          auto t0 = std::chrono::steady_clock::now();
          st = client.walk(fh, &entries, &failures);
          double s = seconds_since(t0);
          answer = st == 0 ? "ok " + std::to_string(entries) + " " + std::to_string(s)
                           : err(st) + " " + (failures.empty() ? "" : failures.front());
        } else {
          Nfs4Client::CopyStats stats;
          std::vector<std::string> failures;
          auto t0 = std::chrono::steady_clock::now();
          st = client.copy_tree(fh, b, &stats, &failures);
          double s = seconds_since(t0);
          answer = st == 0 ? "ok " + std::to_string(stats.files) + " " + std::to_string(stats.bytes) + " " +
                                 std::to_string(s) + " " + std::to_string(stats.bytes / 1e6 / s)
                           : err(st) + " " + (failures.empty() ? "" : failures.front());
        }
      } else {
        const Fh* h = handle(a);
        if (!h) {
          answer = "err no handle " + a;
        } else if (cmd == "lookupat" || cmd == "parent") {
          Fh fh;
          int st = cmd == "parent" ? client.lookup_parent(*h, &fh) : client.lookup(*h, b, &fh);
          answer = st == 0 ? keep(fh) : err(st);
        } else if (cmd == "stat") {
          sendense::test::reexport::NfsAttr at;
          int st = client.getattr(*h, &at);
          std::ostringstream o;
          o << "type=" << static_cast<unsigned>(at.type) << " size=" << at.size << " fileid=" << at.fileid
            << " fsid=" << at.fsid_major << "." << at.fsid_minor << " mode=0" << std::oct << at.mode;
          answer = st == 0 ? o.str() : err(st);
        } else if (cmd == "read" || cmd == "cat") {
          std::string data;
          int st = cmd == "cat" ? client.read_all(*h, &data)
                                : client.read(*h, std::stoull(b), static_cast<uint32_t>(std::stoul(c)), &data);
          answer = st == 0 ? "ok " + std::to_string(data.size()) + " " + sha256_hex(data) : err(st);
        } else if (cmd == "readdir") {
          std::vector<sendense::test::reexport::NfsDirEntry> entries;
          int st = client.readdir(*h, &entries);
          answer = st == 0 ? "ok " + std::to_string(entries.size()) : err(st);
          if (st == 0)
            for (const auto& e : entries) answer += " " + e.name;
        } else if (cmd == "readlink") {
          std::string target;
          int st = client.readlink(*h, &target);
          answer = st == 0 ? "ok " + target : err(st);
        } else if (cmd == "fh") {
          answer = h->hex();
        } else {
          answer = "err unknown command " + cmd;
        }
      }
    } catch (const std::exception& e) {
      answer = std::string("err ") + e.what();
    }
    std::cout << answer << std::endl;
  }
  return 0;
}
