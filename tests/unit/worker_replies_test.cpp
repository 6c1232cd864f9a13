// The daemon's checks of a worker's replies (worker/replies.h): replies
// made with the worker's own encoders (worker/protocol.h) are taken as
// they are, and each lie a worker taken over by its image could tell is
// refused with an error saying what was wrong.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "readers/common/error.h"
#include "worker/replies.h"

namespace sendense::worker {
namespace {

// The daemon's image files in these tests: 1 MiB and 4 KiB.
const std::vector<uint64_t> kImages{1 << 20, 4096};

Attr file_attr(uint64_t ino, uint64_t size, mode_t mode = S_IFREG | 0644) {
  Attr a;
  a.ino = ino;
  a.mode = mode;
  a.nlink = 1;
  a.size = size;
  return a;
}

struct PageEntryIn {
  DirEntry e;
  std::optional<Attr> attr;
  std::vector<MappedExtent> map;
};

std::vector<std::byte> page(const std::vector<PageEntryIn>& entries) {
  Writer w;
  w.u32(static_cast<uint32_t>(entries.size()));
  for (const auto& in : entries) {
    put_entry(w, in.e);
    w.u32(in.attr ? 1 : 0);
    if (in.attr) {
      put_attr(w, *in.attr);
      put_map(w, in.map);
    }
  }
  return w.buf;
}

PageEntryIn entry(std::string name, uint64_t ino, uint32_t type, uint64_t next, std::optional<Attr> attr = {},
                  std::vector<MappedExtent> map = {}) {
  PageEntryIn in;
  in.e.name = std::move(name);
  in.e.ino = ino;
  in.e.type = type;
  in.e.next = next;
  in.attr = attr;
  in.map = std::move(map);
  return in;
}

std::vector<PageEntryIn> honest_page() {
  std::vector<PageEntryIn> out;
  out.push_back(entry(".", 2, S_IFDIR, 1, file_attr(2, 4096, S_IFDIR | 0755)));
  out.push_back(entry("..", 2, S_IFDIR, 2));
  out.push_back(entry("hello.txt", 12, S_IFREG, 3, file_attr(12, 6000), {{0, 8192, 4096}, {kZeros, 0, 1000}, {1, 0, 904}}));
  out.push_back(entry("caf\xc3\xa9", 13, S_IFLNK, 4, file_attr(13, 9, S_IFLNK | 0777)));
  out.push_back(entry("sub", 14, S_IFDIR, 5));
  return out;
}

// The message of the Error `f` throws ("" if none).
template <typename F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(WorkerReplies, AnHonestPageIsTakenAsItIs) {
  const auto in = honest_page();
  const auto out = decode_page(page(in), 0, 100, kImages);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].entry.name, in[i].e.name);
    EXPECT_EQ(out[i].entry.ino, in[i].e.ino);
    EXPECT_EQ(out[i].entry.type, in[i].e.type);
    EXPECT_EQ(out[i].entry.next, in[i].e.next);
    ASSERT_EQ(out[i].attr.has_value(), in[i].attr.has_value()) << i;
    if (!in[i].attr) continue;
    EXPECT_EQ(out[i].attr->attr.size, in[i].attr->size);
    ASSERT_EQ(out[i].attr->map.size(), in[i].map.size());
    for (size_t k = 0; k < in[i].map.size(); ++k) EXPECT_EQ(out[i].attr->map[k].offset, in[i].map[k].offset);
  }
  // The next page goes on from the last cookie.
  EXPECT_EQ(decode_page(page({entry("more", 15, S_IFREG, 6)}), 5, 100, kImages).size(), 1u);
}

TEST(WorkerReplies, APageWithANameTheTreeWouldNotShowIsRefused) {
  for (const std::string& bad : {std::string("a/b"), std::string(), std::string("nul\0in", 6), std::string(1025, 'x')}) {
    auto in = honest_page();
    in[4].e.name = bad;
    EXPECT_NE(refusal([&] { decode_page(page(in), 0, 100, kImages); }).find("entry name"), std::string::npos)
        << bad.size();
  }
}

TEST(WorkerReplies, APageThatListsForeverOrOverflowsIsRefused) {
  auto in = honest_page();
  in[3].e.next = 2;  // back
  EXPECT_NE(refusal([&] { decode_page(page(in), 0, 100, kImages); }).find("cookies do not advance"), std::string::npos);
  // From cookie 3, a page starting at cookie 1.
  EXPECT_NE(refusal([&] { decode_page(page(honest_page()), 3, 100, kImages); }).find("cookies"), std::string::npos);
  EXPECT_NE(refusal([&] { decode_page(page(honest_page()), 0, 4, kImages); }).find("at most 4 were asked"),
            std::string::npos);
  auto bytes = page(honest_page());
  bytes.push_back(std::byte{0});
  EXPECT_NE(refusal([&] { decode_page(bytes, 0, 100, kImages); }).find("bytes after"), std::string::npos);
  bytes.resize(bytes.size() - 20);
  EXPECT_NE(refusal([&] { decode_page(bytes, 0, 100, kImages); }), "");
  // A count the message cannot hold: refused before anything is allocated for it.
  Writer w;
  w.u32(0xffffffff);
  EXPECT_NE(refusal([&] { decode_page(w.buf, 0, 100, kImages); }).find("count"), std::string::npos);
}

TEST(WorkerReplies, AMapOutsideTheImageFilesOrNotCoveringItsFileIsRefused) {
  const std::vector<std::vector<MappedExtent>> lies{
      {{1, 4000, 6000}},                       // past the end of image 1
      {{2, 0, 6000}},                          // an image file the daemon has not
      {{0, 0, 5999}},                          // short of the file
      {{0, 0, 6000}, {kZeros, 0, 1}},          // past the file
      {{0, 0, 0}, {0, 0, 6000}},               // an empty extent
      {{0, UINT64_MAX - 10, 6000}},            // wrapping around
  };
  for (size_t i = 0; i < lies.size(); ++i) {
    auto in = honest_page();
    in[2].map = lies[i];
    EXPECT_NE(refusal([&] { decode_page(page(in), 0, 100, kImages); }).find("does not cover the file"),
              std::string::npos)
        << i;
  }
  // A small file's map past kMapMaxExtents, and a map for a file too large to be mapped with its attributes.
  auto in = honest_page();
  in[2].attr->size = kMapMaxExtents + 1;
  in[2].map.assign(kMapMaxExtents + 1, MappedExtent{kZeros, 0, 1});
  EXPECT_NE(refusal([&] { decode_page(page(in), 0, 100, kImages); }), "");
  in[2].attr->size = kMapMaxSize + 1;
  in[2].map = {{kZeros, 0, kMapMaxSize + 1}};
  EXPECT_NE(refusal([&] { decode_page(page(in), 0, 100, kImages); }), "");
  // Asked for (kMap), a larger file's map may be longer.
  EXPECT_EQ(refusal([&] { check_map(file_attr(20, kMapMaxSize + 1), in[2].map, kImages, kMapMaxExtentsAsked, UINT64_MAX); }),
            "");
}

TEST(WorkerReplies, TimesNoReaderGivesAreRefused) {
  for (int lie = 0; lie < 3; ++lie) {
    auto in = honest_page();
    Attr& a = *in[3].attr;
    if (lie == 0) a.mtime.tv_nsec = 1'000'000'000;
    if (lie == 1) a.atime.tv_nsec = -1;
    if (lie == 2) a.ctime.tv_nsec = 2'000'000'000;
    EXPECT_NE(refusal([&] { decode_page(page(in), 0, 100, kImages); }).find("no reader gives"), std::string::npos)
        << lie;
  }
  auto in = honest_page();
  in[3].attr->mtime.tv_nsec = 999'999'999;
  EXPECT_EQ(refusal([&] { decode_page(page(in), 0, 100, kImages); }), "");
}

TEST(WorkerReplies, AHelloNamingAVolumeOutsideTheEnginesNamesIsRefused) {
  Hello h;
  h.readers = "qcow2";
  h.volumes.push_back(HelloVolume{"part1", "partition", "ext4", 1 << 20, 8 << 20, 2, {}});
  h.problems.push_back(HelloProblem{"lvm-vg0-root", "lvm", false, "", 0, 0, 0, 0, false});
  EXPECT_EQ(decode_checked_hello(encode(h), "b1").volumes.at(0).name, "part1");
  auto longer = encode(h);
  longer.push_back(std::byte{0});
  EXPECT_NE(refusal([&] { decode_checked_hello(longer, "b1"); }).find("bytes after"), std::string::npos);
  for (const std::string bad : {"..", ".", "", "a/b", "../../etc", "x y"}) {
    Hello lie = h;
    lie.volumes[0].name = bad;
    const std::string why = refusal([&] { decode_checked_hello(encode(lie), "b1"); });
    EXPECT_NE(why.find("named a volume"), std::string::npos) << bad;
    EXPECT_NE(why.find("b1"), std::string::npos) << why;
    lie = h;
    lie.problems[0].name = bad;
    EXPECT_NE(refusal([&] { decode_checked_hello(encode(lie), "b1"); }), "") << bad;
  }
}

TEST(WorkerReplies, ReadFilesMustAnswerExactlyWhatWasAsked) {
  const std::vector<uint64_t> sizes{10, 300, 4096};
  auto reply = [&](uint32_t second_flag, size_t extra) {
    Writer w;
    w.u32(1);
    w.raw(std::string(10, 'a').data(), 10);
    w.u32(second_flag);
    w.u32(1);
    w.raw(std::string(4096, 'c').data(), 4096);
    for (size_t i = 0; i < extra; ++i) w.u32(0);
    return w.buf;
  };
  const auto got = decode_read_files(reply(0, 0), sizes);
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(got[0] && got[2]);
  EXPECT_FALSE(got[1]);
  EXPECT_EQ(got[0]->size(), 10u);
  EXPECT_EQ(static_cast<char>(got[2]->back()), 'c');
  EXPECT_NE(refusal([&] { decode_read_files(reply(0, 1), sizes); }).find("more than was asked"), std::string::npos);
  EXPECT_NE(refusal([&] { decode_read_files(reply(2, 0), sizes); }).find("flagged"), std::string::npos);
  auto short_reply = reply(0, 0);
  short_reply.pop_back();
  EXPECT_NE(refusal([&] { decode_read_files(short_reply, sizes); }).find("too short"), std::string::npos);
}

TEST(WorkerReplies, XattrNamesTheKernelCouldNotListAreRefused) {
  auto names = [](const std::vector<std::string>& list) {
    Writer w;
    w.u32(static_cast<uint32_t>(list.size()));
    for (const auto& n : list) w.str(n);
    return w.buf;
  };
  const auto ok = names({"user.color", "security.selinux", "trusted." + std::string(255, 't')});
  Reader r(ok);
  EXPECT_EQ(get_xattr_names(r).size(), 3u);
  for (const std::string& bad : {std::string(), std::string("user.a\0b", 8)}) {
    const auto lie = names({"user.color", bad});
    Reader lr(lie);
    EXPECT_NE(refusal([&] { get_xattr_names(lr); }).find("extended attribute name"), std::string::npos) << bad.size();
  }
}

}  // namespace
}  // namespace sendense::worker
