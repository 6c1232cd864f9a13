// The pure parts of the FUSE layer: node-id encoding (stable across runs:
// NFS file handles and kernel caches depend on it) and name escaping.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "readers/fs/names.h"
#include "fuse/node_id.h"

namespace sendense {
namespace {

TEST(NodeId, VolumeNodesRoundTripAndNeverCollideWithSyntheticOnes) {
  for (int64_t vol : {int64_t{1}, int64_t{2}, int64_t{12345}, node::kMaxVolumeId}) {
    for (uint64_t ino : {uint64_t{2}, uint64_t{11}, uint64_t{4294967295}, node::kInodeMask}) {
      auto n = node::volume_node(vol, ino);
      ASSERT_TRUE(n);
      EXPECT_TRUE(node::is_volume_node(*n));
      EXPECT_FALSE(node::is_synthetic(*n));
      EXPECT_NE(*n, node::kRoot);
      EXPECT_NE(*n, node::kByVm);
      EXPECT_EQ(node::volume_of(*n), vol);
      EXPECT_EQ(node::inode_of(*n), ino);
    }
  }
  EXPECT_FALSE(node::volume_node(0, 2));
  EXPECT_FALSE(node::volume_node(node::kMaxVolumeId + 1, 2));
  EXPECT_FALSE(node::volume_node(1, node::kInodeMask + 1));
  EXPECT_FALSE(node::is_volume_node(node::kRoot));
  EXPECT_FALSE(node::is_volume_node(node::kByVm));
}

TEST(NodeId, SyntheticNodesKeepKindAndKey) {
  std::set<uint64_t> seen;
  for (auto kind : {node::Kind::backup_dir, node::Kind::vm_dir, node::Kind::dated_link, node::Kind::latest_link}) {
    for (uint64_t key : {uint64_t{1}, uint64_t{77}, node::kKeyMask}) {
      const uint64_t n = node::synthetic(kind, key);
      EXPECT_TRUE(node::is_synthetic(n));
      EXPECT_FALSE(node::is_volume_node(n));
      EXPECT_EQ(node::kind_of(n), kind);
      EXPECT_EQ(node::key_of(n), key);
      EXPECT_TRUE(seen.insert(n).second) << "two synthetic nodes share an id";
    }
  }
}

// The by-vm key is part of node ids the kernel and NFS clients keep: it must
// never change between builds. These values pin FNV-1a (56 bits).
TEST(NodeId, VmKeyIsStable) {
  EXPECT_EQ(node::vm_key(""), 0xcbf29ce484222325ULL & node::kKeyMask);   // FNV-1a 64 of ""
  EXPECT_EQ(node::vm_key("a"), 0xaf63dc4c8601ec8cULL & node::kKeyMask);  // FNV-1a 64 of "a"
  EXPECT_NE(node::vm_key("web01"), node::vm_key("web02"));
  EXPECT_LE(node::vm_key("web01"), node::kKeyMask);
}

TEST(Names, ValidNamesPassUnchanged) {
  for (const char* name : {"a", "...", "file.txt", "dir with spaces", "\xc3\xbc", "a%2Fb", "-"})
    EXPECT_TRUE(valid_entry_name(name)) << name;
  for (std::string name : {std::string(""), std::string("."), std::string(".."), std::string("a/b"),
                           std::string("a\0b", 3)})
    EXPECT_FALSE(valid_entry_name(name));
}

TEST(Names, EscapingIsStableAndYieldsValidNames) {
  EXPECT_EQ(escape_entry_name("a/b"), "a\u2215b");
  EXPECT_EQ(escape_entry_name(std::string("a\0b", 3)), "a\u2400b");
  EXPECT_EQ(escape_entry_name(""), "\ufffd");
  EXPECT_EQ(escape_entry_name("."), ".\ufffd");
  EXPECT_EQ(escape_entry_name(".."), "..\ufffd");
  for (std::string raw : {std::string("/"), std::string("//x/"), std::string("\0", 1), std::string(".."), std::string("")}) {
    const std::string shown = escape_entry_name(raw);
    EXPECT_TRUE(valid_entry_name(shown)) << shown;
    EXPECT_TRUE(may_be_escaped(shown)) << shown;
    EXPECT_EQ(escape_entry_name(raw), shown);  // the same every time
  }
  EXPECT_FALSE(may_be_escaped("plain.txt"));
}

TEST(Names, ShownNamesNeverCollideAndKeepTheFirstDots) {
  const std::vector<std::string> raw = {".", "..", "a\u2215b", "a/b", ".", "", "x", std::string("a\0b", 3), "a\u2400b"};
  const auto shown = shown_names(raw);
  ASSERT_EQ(shown.size(), raw.size());
  EXPECT_EQ(shown[0], ".");
  EXPECT_EQ(shown[1], "..");
  EXPECT_EQ(shown[2], "a\u2215b");         // a valid name keeps its name
  EXPECT_EQ(shown[3], "a\u2215b\ufffd" "3");  // the escaped one moves aside, tagged with its position
  EXPECT_EQ(shown[4], ".\ufffd");           // a second "." is escaped
  EXPECT_EQ(shown[6], "x");
  EXPECT_EQ(shown[7], "a\u2400b\ufffd" "7");
  std::set<std::string> unique(shown.begin(), shown.end());
  EXPECT_EQ(unique.size(), shown.size());
  for (size_t i = 2; i < shown.size(); ++i) EXPECT_TRUE(valid_entry_name(shown[i])) << i;
  EXPECT_EQ(shown_names(raw), shown);  // the same every time
}

// A guest can fill a directory with thousands of entries named "/": each
// gets a unique shown name of at most 255 bytes, in linear time.
TEST(Names, ManyIdenticalHostileNamesStayUniqueShortAndCheap) {
  std::vector<std::string> raw(20000, "/");
  raw.push_back(std::string(255, '/'));           // escapes to 765 bytes: must be cut
  raw.push_back("\u2215\ufffd" "5");            // a real name equal to one tag
  const auto shown = shown_names(raw);
  std::set<std::string> unique(shown.begin(), shown.end());
  EXPECT_EQ(unique.size(), raw.size());
  for (const auto& name : shown) {
    EXPECT_LE(name.size(), 255u);
    EXPECT_TRUE(valid_entry_name(name));
  }
  EXPECT_EQ(shown[5], "\u2215\ufffd" "5.1");  // the real one kept its name
}

}  // namespace
}  // namespace sendense
