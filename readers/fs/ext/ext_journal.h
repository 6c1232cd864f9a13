// The ext3/ext4 journal at open: decides whether it needs recovery, finds
// the internal journal's blocks, replays it in memory (jbd2_replay.h) and
// gives the device the filesystem is then opened on (journal_overlay.h).
//
// Orphans: after replay the kernel and e2fsck also process the orphan list
// (inodes deleted while open, truncations in progress). We do not: an orphan
// with no links is reachable from no directory, so the tree is the same;
// a file caught mid-truncate shows its stored i_size (blocks past it are
// never read); only statfs free counts may differ from e2fsck's.
//
// The superblock keeps needs_recovery in the overlay: libext2fs opened
// read-only ignores it, and rewriting it would mean recomputing checksums of
// a block the journal may itself have replayed.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "readers/block/block_device.h"
#include "readers/fs/ext/jbd2_replay.h"
#include "readers/fs/filesystem.h"

namespace sendense::ext {

struct JournaledDevice {
  BlockDevicePtr device;  // the volume, or an overlay over it after replay
  JournalReport report;
  // Set once a read of the volume failed through `device` (an I/O error, a
  // truncated image): such a failure says nothing about the journal or the
  // replayed filesystem, so it must fail the open rather than turn into a
  // "shown as stored" that would last until the backup is attached again.
  std::shared_ptr<const std::atomic<bool>> read_failed;
};

// The internal journal of the ext filesystem on `volume`, replayed in
// memory (not applied). Throws Error(EIO) naming `name` when there is no
// internal journal or it cannot be read. For open_ext_journal and tests.
Jbd2Replay replay_ext_journal(const BlockDevicePtr& volume, const std::string& name);

// `volume` holds an ext superblock that passed the reader's sanity checks.
// With `replay` false a journal needing recovery is reported "skipped" and
// the volume is returned as stored. A journal that cannot be read (damaged
// superblock, unmappable inode) is reported "skipped" with the reason and
// logged: the volume is still shown as stored; a read of the volume that
// fails (not the journal's content) is rethrown instead. Logs one `journal`
// line whenever the journal needs recovery.
JournaledDevice open_ext_journal(BlockDevicePtr volume, const std::string& name, bool replay);

}  // namespace sendense::ext
