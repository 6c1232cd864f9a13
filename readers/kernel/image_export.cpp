#include "readers/kernel/image_export.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "readers/block/child_process.h"
#include "readers/block/qemu_chain_json.h"
#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/kernel/staging.h"

namespace sendense::kernel {

namespace {

constexpr auto kStartWait = std::chrono::seconds(30);
constexpr auto kPoll = std::chrono::milliseconds(20);

// Runs a short helper to completion (bounded), throwing with its output.
void run_to_end(const std::string& program, std::vector<std::string> argv, const std::string& log_path,
                const std::string& where) {
  ChildSpec spec;
  spec.program = find_program(program);
  if (spec.program.empty()) throw Error(ENOENT, program + " not found (package qemu-utils)", where);
  spec.argv = std::move(argv);
  spec.output_path = log_path;
  ChildProcess child(spec);
  const auto deadline = std::chrono::steady_clock::now() + kStartWait;
  while (child.running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      child.terminate();
      throw Error(ETIMEDOUT, program + " did not finish", where);
    }
    std::this_thread::sleep_for(kPoll);
  }
  if (child.exit_description() != "exited with status 0")
    throw Error(EIO, program + " " + child.exit_description() + ": " + child.output(), where);
}

}  // namespace

ImageExport::ImageExport(const std::string& image, ImageFormat format, const std::string& confine_root,
                         const std::string& folder, const std::string& name)
    : image_(image), export_path_(folder + "/" + name + ".export"), overlay_path_(folder + "/" + name + ".overlay.qcow2") {
  const std::vector<ChainLink> chain = read_image_chain(image, format, confine_root);
  if (chain.empty()) throw Error(EIO, "empty image chain", image);
  if (chain[0].format == ImageFormat::raw) {
    struct stat st {};
    if (::stat(chain[0].path.c_str(), &st) != 0) throw sys_error("stat", image);
    size_ = static_cast<uint64_t>(st.st_size);
  } else {
    size_ = chain[0].virtual_size;
  }
  if (size_ == 0)
    throw Error(EOPNOTSUPP, std::string("kernel backend: the size of a ") + to_string(chain[0].format) +
                                " image is known only to qemu (not supported yet)", image);

  run_to_end("qemu-img",
             {"qemu-img", "create", "-q", "-f", "qcow2", overlay_path_, std::to_string(size_)},
             folder + "/" + name + ".qemu-img.log", image);
  const int fd = ::open(export_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) throw sys_error("create the export file", export_path_);
  ::close(fd);

  ChildSpec spec;
  spec.program = find_program("qemu-storage-daemon");
  if (spec.program.empty()) throw Error(ENOENT, "qemu-storage-daemon not found (package qemu-system-common)", image);
  spec.argv = {"qemu-storage-daemon",
               "--blockdev", qemu_chain_json(chain, {.read_only = true, .top_node_name = "base"}),
               "--blockdev",
               "{\"driver\":\"qcow2\",\"node-name\":\"overlay\",\"file\":{\"driver\":\"file\",\"filename\":" +
                   json_string(overlay_path_) + "},\"backing\":\"base\"}",
               "--export", "type=fuse,id=export,node-name=overlay,mountpoint=" + export_path_ + ",writable=on"};
  spec.output_path = folder + "/" + name + ".qsd.log";
  qsd_ = std::make_unique<ChildProcess>(spec);

  // Ready when the export file is a mount point of the right size.
  struct stat folder_st {};
  ::stat(folder.c_str(), &folder_st);
  const auto deadline = std::chrono::steady_clock::now() + kStartWait;
  for (;;) {
    struct stat st {};
    if (::stat(export_path_.c_str(), &st) == 0 && st.st_dev != folder_st.st_dev &&
        static_cast<uint64_t>(st.st_size) == size_)
      break;
    if (!qsd_->running()) {
      const std::string why = qsd_->exit_description() + ": " + qsd_->output();
      qsd_.reset();
      ::unlink(export_path_.c_str());
      ::unlink(overlay_path_.c_str());
      throw Error(EIO, "qemu-storage-daemon " + why, image);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      qsd_->terminate();
      qsd_.reset();
      ::umount2(export_path_.c_str(), MNT_DETACH);
      ::unlink(export_path_.c_str());
      ::unlink(overlay_path_.c_str());
      throw Error(ETIMEDOUT, "qemu-storage-daemon export not ready after 30 s", image);
    }
    std::this_thread::sleep_for(kPoll);
  }
  log::info("kernel_export", {{"image", image}, {"export", export_path_}, {"pid", std::to_string(qsd_->pid())}});
}

ImageExport::~ImageExport() {
  try {
    if (qsd_) qsd_->terminate();  // qemu unmounts its export on SIGTERM
  } catch (const std::exception& e) {
    log::error("kernel_export_stop_failed", {{"image", image_}, {"error", e.what()}});
  }
  qsd_.reset();
  if (is_mounted(export_path_) && ::umount2(export_path_.c_str(), MNT_DETACH) != 0)
    log::error("umount_failed", {{"dir", export_path_}, {"error", std::strerror(errno)}});
  if (::unlink(export_path_.c_str()) != 0 && errno != ENOENT)
    log::error("unlink_failed", {{"path", export_path_}, {"error", std::strerror(errno)}});
  if (::unlink(overlay_path_.c_str()) != 0 && errno != ENOENT)
    log::error("unlink_failed", {{"path", overlay_path_}, {"error", std::strerror(errno)}});
}

}  // namespace sendense::kernel
