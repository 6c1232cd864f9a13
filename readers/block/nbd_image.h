// An image read through qemu's own block layer: a private qemu-nbd child
// serves the validated chain on a unix socket in a 0700 folder, and we read
// it over NBD with libnbd, in userspace (no kernel nbd module).
//
// For what our own qcow2 reader does not read: VMDK, VHDX, and qcow2 chains
// over a VMDK or VHDX base (open_image decides, see block_device.h). qemu never resolves a name or probes a format itself: the
// chain our code validated (image_chain.h) is pinned as one json: filename
// giving driver and file for every link and "backing": null at the base.
//
// Lifetime: the qemu-nbd process belongs to the device. The destructor
// closes the connections, terminates and reaps qemu-nbd and removes the
// folder; a daemon that dies takes qemu-nbd with it (PR_SET_PDEATHSIG, see
// child_process.h), and the next daemon removes the folders of dead daemons
// when it starts its first qemu-nbd.
//
// Threading: a libnbd handle runs one synchronous command at a time, so
// read_at borrows one of up to kConnections connections (qemu-nbd
// --shared=kConnections) from a pool; parallel reads do not serialise.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "readers/block/block_device.h"

namespace sendense::nbd {

inline constexpr size_t kConnections = 4;
inline constexpr std::chrono::seconds kStartTimeout{30};    // qemu-nbd up and serving
inline constexpr std::chrono::seconds kBorrowTimeout{60};   // every connection busy
inline constexpr size_t kMaxRequestBytes = 8u << 20;        // below qemu-nbd's 32 MiB limit
inline constexpr std::chrono::seconds kRequestTimeout{60};  // one connect or read answered

// How long one NBD connect or read may wait for qemu-nbd before the
// connection is dropped and the read fails with EIO: a server that stops
// answering (stopped, or its storage hung) must not hold reading threads,
// and with them the device, forever. kRequestTimeout unless set (tests).
std::chrono::milliseconds request_timeout();
void set_request_timeout(std::chrono::milliseconds timeout);

// The qemu block options pinning `chain` (top first): "json:{...}".
std::string qemu_json_filename(const std::vector<ChainLink>& chain);

// Where private socket folders are made: $RUNTIME_DIRECTORY (systemd), else
// /run/sendense-restore for root, else $TMPDIR or /tmp. Folders are named
// "qemu-nbd-<daemon pid>-XXXXXX".
std::string runtime_base_dir();

}  // namespace sendense::nbd
