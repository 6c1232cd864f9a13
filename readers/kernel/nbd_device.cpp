#include "readers/kernel/nbd_device.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "readers/block/child_process.h"
#include "readers/block/nbd_image.h"
#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense::kernel {

namespace {

constexpr auto kSizeWait = std::chrono::seconds(30);
constexpr auto kPoll = std::chrono::milliseconds(50);
constexpr int kMaxDevice = 1023;

uint64_t sysfs_number(const std::string& path) {
  std::ifstream in(path);
  uint64_t v = 0;
  in >> v;
  return in ? v : 0;
}

}  // namespace

void disconnect_stale_nbd(const std::string& device) {
  const std::string program = find_program("qemu-nbd");
  if (program.empty()) return;
  ChildSpec spec;
  spec.program = program;
  spec.argv = {"qemu-nbd", "--disconnect", device};
  spec.output_path = "/dev/null";
  try {
    ChildProcess child(spec);
    for (int i = 0; i < 100 && child.running(); ++i) std::this_thread::sleep_for(kPoll);
    child.terminate();
    log::info("reconciled_nbd", {{"device", device}});
  } catch (const std::exception& e) {
    log::error("reconcile_nbd_failed", {{"device", device}, {"error", e.what()}});
  }
}

NbdRange parse_nbd_range(const std::string& text) {
  NbdRange r;
  const size_t dash = text.find('-');
  try {
    size_t used = 0;
    r.first = std::stoi(text.substr(0, dash), &used);
    if (used != (dash == std::string::npos ? text.size() : dash)) throw std::invalid_argument("junk");
    if (dash == std::string::npos) {
      r.last = r.first;
    } else {
      const std::string tail = text.substr(dash + 1);
      r.last = std::stoi(tail, &used);
      if (used != tail.size()) throw std::invalid_argument("junk");
    }
  } catch (const std::exception&) {
    throw Error(EINVAL, "--nbd-devices needs FIRST-LAST (e.g. 0-7), got '" + text + "'");
  }
  if (r.first < 0 || r.last < r.first || r.last > kMaxDevice)
    throw Error(EINVAL, "--nbd-devices range out of bounds: '" + text + "'");
  return r;
}

bool nbd_available() {
  struct stat st {};
  return ::stat("/sys/block/nbd0", &st) == 0;
}

bool nbd_in_use(int n) {
  struct stat st {};
  return ::stat(("/sys/block/nbd" + std::to_string(n) + "/pid").c_str(), &st) == 0;
}

NbdDevice::NbdDevice(const std::vector<ChainLink>& chain, uint64_t offset, uint64_t size, NbdRange range,
                     const std::string& pid_folder, Claim claim, Release release)
    : release_(std::move(release)) {
  const std::string program = find_program("qemu-nbd");
  if (program.empty()) throw Error(ENOENT, "qemu-nbd not found (package qemu-utils)");
  std::string json = nbd::qemu_json_filename(chain).substr(5);  // drop "json:"
  const std::string window = "json:{\"driver\":\"raw\",\"offset\":" + std::to_string(offset) +
                             ",\"size\":" + std::to_string(size) + ",\"file\":" + json + "}";
  for (int n = range.first; n <= range.last && path_.empty(); ++n) {
    const std::string dev = "/dev/nbd" + std::to_string(n);
    if (nbd_in_use(n)) continue;  // someone's (ours or not): never touched
    if (!claim(dev)) continue;
    ChildSpec spec;
    spec.program = program;
    // No --fork: the helper stays our child (PR_SET_PDEATHSIG ends it with us).
    spec.argv = {"qemu-nbd", "--read-only", "--format=raw", "--connect=" + dev,
                 "--pid-file=" + pid_folder + "/nbd" + std::to_string(n) + ".pid", window};
    spec.output_path = pid_folder + "/nbd" + std::to_string(n) + ".log";
    try {
      helper_ = std::make_unique<ChildProcess>(spec);
      const auto deadline = std::chrono::steady_clock::now() + kSizeWait;
      const std::string size_path = "/sys/block/nbd" + std::to_string(n) + "/size";
      while (sysfs_number(size_path) * 512 != size) {
        if (!helper_->running())
          throw Error(EIO, "qemu-nbd " + helper_->exit_description() + ": " + helper_->output(), dev);
        if (std::chrono::steady_clock::now() > deadline)
          throw Error(ETIMEDOUT, "device has no size after 30 s", dev);
        std::this_thread::sleep_for(kPoll);
      }
    } catch (...) {
      if (helper_) helper_->terminate();
      helper_.reset();
      release_(dev);
      throw;
    }
    path_ = dev;
    log_path_ = spec.output_path + ".disconnect";
  }
  if (path_.empty()) {
    log::warn("nbd_pool_exhausted", {{"range", std::to_string(range.first) + "-" + std::to_string(range.last)}});
    throw Error(EBUSY, "every nbd device of the restore pool is in use");
  }
  log::info("nbd_connect", {{"device", path_}, {"pid", std::to_string(helper_->pid())}});
}

pid_t NbdDevice::helper_pid() const { return helper_ ? helper_->pid() : -1; }

NbdDevice::~NbdDevice() {
  if (path_.empty()) return;
  try {
    ChildSpec spec;
    spec.program = find_program("qemu-nbd");
    spec.argv = {"qemu-nbd", "--disconnect", path_};
    spec.output_path = log_path_;
    ChildProcess disconnect(spec);
    for (int i = 0; i < 100 && disconnect.running(); ++i) std::this_thread::sleep_for(kPoll);
    disconnect.terminate();
  } catch (const std::exception& e) {
    log::error("nbd_disconnect_failed", {{"device", path_}, {"error", e.what()}});
  }
  try {
    if (helper_) helper_->terminate();
  } catch (const std::exception& e) {
    log::error("nbd_helper_stop_failed", {{"device", path_}, {"error", e.what()}});
  }
  try {
    release_(path_);
  } catch (const std::exception& e) {
    log::error("nbd_release_failed", {{"device", path_}, {"error", e.what()}});
  }
  log::info("nbd_disconnect", {{"device", path_}});
}

}  // namespace sendense::kernel
